//! The arithmetic of `GbfDiv` (kernels/gemm_bf16.cuh), the convolution loaders' division by a
//! runtime divisor, replayed on the host: floor(n / d) = mulhi(n, m) >> (l - 1) with l =
//! ceil(log2 d), m = ceil(2^(31+l) / d), for every dividend below 2^31. The kernels' own use is
//! checked bit for bit by tests/conv_bf16.rs; this checks the claim behind it on divisors 1 to
//! 5,000 (every channel count, kernel size, stride and map size the UNets use) and the largest
//! ones, at the dividends where an error would show first: around multiples of d, near 2^31.

fn gbf_div(d: u32, n: u32) -> u32 {
    if d == 1 {
        return n;
    }
    let l = 32 - (d - 1).leading_zeros();
    let m = (1u64 << (31 + l)).div_ceil(d as u64);
    assert!(m < 1 << 32, "d {d}: the multiplier must fit 32 bits");
    (((n as u64 * m) >> 32) as u32) >> (l - 1)
}

#[test]
fn the_multiply_shift_division_is_exact_below_2_pow_31() {
    let top = (1u32 << 31) - 1;
    let divisors = (1..=5000u32).chain([65_535, 65_536, 1 << 20, (1 << 30) + 1, top]);
    for d in divisors {
        // Around the multiples of d nearest 0, the middle and the top of the range.
        for base in [0, top / 2, top] {
            let q0 = base / d;
            for q in q0.saturating_sub(2)..=q0.saturating_add(2) {
                for n in [q.wrapping_mul(d).wrapping_sub(1), q.wrapping_mul(d), q.wrapping_mul(d).wrapping_add(d - 1)] {
                    if n <= top {
                        assert_eq!(gbf_div(d, n), n / d, "{n} / {d}");
                    }
                }
            }
        }
    }
}
