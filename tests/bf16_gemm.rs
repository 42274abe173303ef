//! The bf16 primitives under the contract of tests/bf16.rs: rounding to bf16 (contract 1) and the
//! packed bf16 GEMM (src/fast/gemm_bf16.rs) with its emulated and, where the CPU has AVX-512 BF16,
//! native microkernel.

mod common;
use common::bf16_checks::{RTOL, packed_kernels, rounded, sum_atol};
use common::say;
use ddpm::fast::bf16;
use ddpm::fast::gemm::{Mat, MatMut, Threads, matmul};
use ddpm::fast::gemm_bf16::{Bf16Kernel, KC, MC, MR, NR, PackedRhs, matmul_packed};
use ddpm::testing::{assert_close, random_vec, rng_for};

#[test]
fn round_is_nearest_even_as_the_half_crate() {
    let check = |bits: u32| {
        let x = f32::from_bits(bits);
        let got = bf16::round(x);
        let want = half::bf16::from_f32(x).to_f32();
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "round({x:e} = {bits:#010x}) = {:#010x}, want {:#010x}",
            got.to_bits(),
            want.to_bits()
        );
    };
    // Every 2^16-th pattern offset by each tie and near-tie, both parities, every exponent
    // (zeros, subnormals, the overflow to infinity, infinities, NaNs among them); then a sweep.
    for high in 0..=0xffffu32 {
        for low in [0, 1, 0x7fff, 0x8000, 0x8001, 0xffff] {
            check((high << 16) | low);
        }
    }
    for bits in (0..=u32::MAX).step_by(65_521) {
        check(bits);
    }
    let mut rng = rng_for("bf16 rounding");
    let mut out = vec![f32::NAN; 100_003];
    let x = random_vec(&mut rng, out.len(), -1e3, 1e3);
    bf16::round_into(&x, &mut out);
    assert!(
        x.iter().zip(&out).all(|(&x, &r)| r.to_bits() == bf16::round(x).to_bits()),
        "round_into differs from round"
    );
}

/// (m, n, k): edges of every blocking: rows around MR and MC, columns around NR, odd k, k over
/// two KC blocks of pairs, vectors, an empty sum.
const SHAPES: [(usize, usize, usize); 8] = [
    (1, 1, 1),
    (7, 31, 5),
    (MR + 1, NR + 1, 3),
    (MC + 3, 2 * NR - 1, 2 * KC + 7),
    (130, 70, 301),
    (1, 97, 64),
    (97, 1, 64),
    (5, 6, 0),
];

/// The [k, n] right operand in b: rhs[r, c] = b[r * n + c], or b[c * k + r] when `transposed`.
fn rhs_view(b: &[f32], k: usize, n: usize, transposed: bool) -> Mat<'_> {
    if transposed { Mat::rows(b, n, k).t() } else { Mat::rows(b, k, n) }
}

#[test]
fn packed_gemm_is_the_f32_product_of_rounded_operands() {
    let mut rng = rng_for("packed bf16 gemm");
    for (m, n, k) in SHAPES {
        // Each operand along k contiguous (the packing's fast path: activations, a layer's weights
        // as their transpose) and strided.
        for (transpose_lhs, transpose_rhs, accumulate, threads) in
            [(false, true, false, Threads::All), (true, false, true, Threads::One), (false, false, true, Threads::All)]
        {
            let a = random_vec(&mut rng, m * k + 3, -1.0, 1.0);
            let b = random_vec(&mut rng, k * n, -1.0, 1.0);
            let lhs = if transpose_lhs { Mat::rows(&a[3..], k, m).t() } else { Mat::rows(&a[3..], m, k) };
            let (offset, stride) = (2, n + 5);
            let mut init = vec![f32::NAN; offset + m * stride];
            for r in 0..m {
                init[offset + r * stride..][..n].copy_from_slice(&random_vec(&mut rng, n, -1.0, 1.0));
            }
            // The f32 product of the rounded operands (gemm.rs), the contract's reference.
            let (ar, br) = (rounded(&a), rounded(&b));
            let lhs_r = if transpose_lhs { Mat::rows(&ar[3..], k, m).t() } else { Mat::rows(&ar[3..], m, k) };
            let mut want = init.clone();
            matmul(
                MatMut::strided(&mut want, offset, m, n, stride),
                lhs_r,
                rhs_view(&br, k, n, transpose_rhs),
                accumulate,
                threads,
            );
            let packed = PackedRhs::new(rhs_view(&b, k, n, transpose_rhs));
            let mut first: Option<Vec<f32>> = None;
            for kernel in packed_kernels() {
                let mut got = init.clone();
                matmul_packed(
                    kernel,
                    MatMut::strided(&mut got, offset, m, n, stride),
                    lhs,
                    &packed,
                    accumulate,
                    threads,
                );
                let what = format!(
                    "{kernel:?} [{m}x{k}]{} * [{k}x{n}]{} acc {accumulate} {threads:?}",
                    if transpose_lhs { "^T" } else { "" },
                    if transpose_rhs { "^T" } else { "" }
                );
                let inside = |i: usize| i >= offset && (i - offset) % stride < n;
                let (g, w): (Vec<f32>, Vec<f32>) =
                    (0..got.len()).filter(|&i| inside(i)).map(|i| (got[i], want[i])).unzip();
                assert_close(&what, &g, &w, sum_atol(k.max(1)), RTOL);
                assert!(
                    (0..got.len()).all(|i| inside(i) || got[i].to_bits() == init[i].to_bits()),
                    "{what}: wrote outside the view"
                );
                // The emulation follows Intel's description (odd pair, then even, each add rounded;
                // no denormals here). Whether a CPU's instruction gives those exact bits (AMD's
                // included) is reported, not required: both must meet the contract (checked above).
                match &first {
                    None => first = Some(got),
                    Some(e) => {
                        let differ = e.iter().zip(&got).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                        say(&format!(
                            "{what}: native vs emulated kernel: {differ} of {} elements differ in bits",
                            got.len()
                        ));
                    }
                }
            }
        }
    }
}

#[test]
fn packed_gemm_is_deterministic_across_thread_counts() {
    let mut rng = rng_for("packed bf16 gemm threads");
    let (m, n, k) = (3 * MC + 5, 45, 2 * KC + 9);
    let (a, b) = (random_vec(&mut rng, m * k, -1.0, 1.0), random_vec(&mut rng, k * n, -1.0, 1.0));
    let packed = PackedRhs::new(Mat::rows(&b, k, n));
    let run = || {
        let mut y = vec![f32::NAN; m * n];
        matmul_packed(
            Bf16Kernel::Emulated,
            MatMut::rows(&mut y, m, n),
            Mat::rows(&a, m, k),
            &packed,
            false,
            Threads::All,
        );
        y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    let first = run();
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        assert_eq!(first, pool.install(run), "differs on {threads} threads");
    }
}
