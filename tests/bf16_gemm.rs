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
            let mut results: Vec<(Bf16Kernel, Vec<f32>)> = Vec::new();
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
                // The emulations follow Intel's descriptions (vdpbf16ps: odd pair, then even, each add
                // rounded; tdpbf16ps: even and odd chains per 16 pairs, then their sum; no denormals
                // here). Whether a CPU's instructions give those exact bits is reported, not
                // required: every kernel must meet the contract (checked above).
                let differ = |base: Bf16Kernel| {
                    let (_, e) = results.iter().find(|(k, _)| *k == base)?;
                    let n = e.iter().zip(&got).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                    Some(format!("{n} of {} elements differ in bits from {base:?}", got.len()))
                };
                let report: Vec<String> = match kernel {
                    Bf16Kernel::Native | Bf16Kernel::AmxEmulated => differ(Bf16Kernel::Emulated).into_iter().collect(),
                    Bf16Kernel::Amx => {
                        [Bf16Kernel::AmxEmulated, Bf16Kernel::Emulated].into_iter().filter_map(differ).collect()
                    }
                    _ => Vec::new(),
                };
                if !report.is_empty() {
                    say(&format!("{what}: {}", report.join("; ")));
                }
                results.push((kernel, got));
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

/// The sum AmxEmulated computes, from the unpacked rounded operands by index: per KC block of
/// pairs, per 16 pairs, the even and odd products in two chains from zero, their sum added to
/// the block's; each block's sum added to dst (copied into it for the first, unless
/// `accumulate`). Bit-equality with it checks the AMX path's packing, padding and tile walk.
fn amx_order(a: &[f32], b: &[f32], (m, n, k): (usize, usize, usize), dst: &mut [f32], accumulate: bool) {
    let at = |i: usize, kk: usize| if kk < k { a[i * k + kk] } else { 0.0 };
    let bt = |kk: usize, j: usize| if kk < k { b[kk * n + j] } else { 0.0 };
    let pairs = k.div_ceil(2);
    for i in 0..m {
        for j in 0..n {
            if pairs == 0 && !accumulate {
                dst[i * n + j] = 0.0;
            }
            for (blk, p0) in (0..pairs).step_by(KC).enumerate() {
                let mut sum = 0f32;
                for q0 in (p0..(p0 + KC).min(pairs)).step_by(16) {
                    let (mut even, mut odd) = (0f32, 0f32);
                    for p in q0..q0 + 16 {
                        even += at(i, 2 * p) * bt(2 * p, j);
                        odd += at(i, 2 * p + 1) * bt(2 * p + 1, j);
                    }
                    sum += even + odd;
                }
                let d = &mut dst[i * n + j];
                *d = if blk == 0 && !accumulate { sum } else { *d + sum };
            }
        }
    }
}

#[test]
fn amx_emulated_kernel_is_the_tile_order_bit_for_bit() {
    let mut rng = rng_for("packed bf16 gemm amx order");
    for (m, n, k) in SHAPES.into_iter().chain([(33, 33, 2 * KC + 33), (2 * MC + 31, 64, 32)]) {
        for accumulate in [false, true] {
            let (a, b) = (random_vec(&mut rng, m * k, -1.0, 1.0), random_vec(&mut rng, k * n, -1.0, 1.0));
            let init = random_vec(&mut rng, m * n, -1.0, 1.0);
            let mut want = init.clone();
            amx_order(&rounded(&a), &rounded(&b), (m, n, k), &mut want, accumulate);
            let mut got = init.clone();
            let packed = PackedRhs::new(Mat::rows(&b, k, n));
            let dst = MatMut::rows(&mut got, m, n);
            matmul_packed(Bf16Kernel::AmxEmulated, dst, Mat::rows(&a, m, k), &packed, accumulate, Threads::All);
            let differ = got.iter().zip(&want).filter(|(g, w)| g.to_bits() != w.to_bits()).count();
            assert_eq!(
                differ, 0,
                "[{m}x{k}] * [{k}x{n}] acc {accumulate}: {differ} elements differ from the tile order"
            );
        }
    }
}

#[test]
fn amx_tile_config_layout() {
    let cfg = ddpm::fast::amx::tile_config();
    assert_eq!((cfg[0], cfg[1]), (1, 0), "palette 1, start_row 0");
    assert!(cfg[2..16].iter().all(|&b| b == 0), "reserved bytes");
    for t in 0..16 {
        let (colsb, rows) = (u16::from_le_bytes([cfg[16 + 2 * t], cfg[17 + 2 * t]]), cfg[48 + t]);
        assert_eq!((colsb, rows), if t < 8 { (64, 16) } else { (0, 0) }, "tile {t}");
    }
    assert!(cfg[56..].iter().all(|&b| b == 0));
}

/// The default bf16 kernel follows the measured rate: vdpbf16ps only where it beats the FMA by
/// `NATIVE_MIN_GAIN` (or `DDPM_BF16_NATIVE` says so), and never for a conv the f32 path does by
/// Winograd unless forced; a forced kernel is used for every shape.
#[test]
fn the_default_bf16_kernel_follows_the_measured_gain() {
    use ddpm::shapes::Conv2dShape;
    let pays = |env, gain| bf16::native_pays_given(env, gain);
    assert!(!pays(None, Some(0.48)) && !pays(None, Some(1.49)) && pays(None, Some(1.5)) && !pays(None, None));
    assert!(pays(Some("1"), Some(0.48)) && !pays(Some("0"), Some(2.0)) && pays(Some("x"), Some(2.0)));
    // The Winograd rule, whatever this CPU chooses: vdpbf16ps only where f32 has no Winograd,
    // unless forced; every other kernel (AMX, emulated, none) as chosen.
    let (native, amx) = (Some(Bf16Kernel::Native), Some(Bf16Kernel::Amx));
    assert_eq!(bf16::conv_fwd_choice(native, false, true), None);
    assert_eq!(bf16::conv_fwd_choice(native, true, true), native);
    assert_eq!(bf16::conv_fwd_choice(native, false, false), native);
    assert_eq!(bf16::conv_fwd_choice(amx, false, true), amx);
    assert_eq!(bf16::conv_fwd_choice(None, false, true), None);

    let _guard = common::bf16_checks::KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    bf16::force_kernel(None);
    let gain = ddpm::fast::simd::vdpbf16ps_gain();
    let env = std::env::var("DDPM_BF16_NATIVE").ok();
    let native = Bf16Kernel::native().filter(|_| bf16::native_pays_given(env.as_deref(), gain));
    if !ddpm::fast::amx::opted_in() {
        assert_eq!(bf16::kernel(), native, "gain {gain:?}");
    }
    let winograd = Conv2dShape::conv3x3(16, 16, 16, 256, 256);
    let pointwise = Conv2dShape::conv1x1(16, 16, 16, 256, 256);
    assert!(ddpm::fast::conv::uses_winograd(&winograd) && !ddpm::fast::conv::uses_winograd(&pointwise));
    assert_ne!(bf16::conv_fwd_kernel(&winograd), Some(Bf16Kernel::Native));
    assert_eq!(bf16::conv_fwd_kernel(&pointwise), bf16::kernel());
    say(&format!("bf16 default here: {:?} (vdpbf16ps gain {gain:?})", bf16::kernel()));

    bf16::force_kernel(Some(Some(Bf16Kernel::Emulated)));
    assert_eq!(bf16::conv_fwd_kernel(&winograd), Some(Bf16Kernel::Emulated));
    if let Some(k) = Bf16Kernel::native() {
        bf16::force_kernel(Some(Some(k)));
        assert_eq!(bf16::conv_fwd_kernel(&winograd), Some(k));
    }
    bf16::force_kernel(None);
}
