//! The bf16 accuracy contract of the CPU path (`--precision bf16`, src/fast/bf16.rs), written
//! once here:
//! 1. Rounding: `bf16::round` is IEEE round-to-nearest-even to bf16 (as the `half` crate's
//!    conversion), NaN kept NaN.
//! 2. Per op: each bf16 op equals the f32 reference applied to bf16-rounded operands, within the
//!    f32 op's own tolerance; and it is within (2^-8 + 2^-17) sum|a||b| of the exact product of
//!    the unrounded operands (each operand's rounding is at most 2^-9 relative), plus that f32
//!    tolerance.
//! 3. Whole UNet: a bf16 forward of the tiny-family model (random weights) is within 2% of the
//!    f32 reference's output in relative L2 norm.
//! 4. Samples: tests/training.rs samples a trained model in bf16 and f32 from the same noise;
//!    the bf16 quality score is within 10% of the f32 one.
//!
//! Contracts 2 and 3 hold on every path: portable (rounded operands, f32 GEMMs) and packed
//! (src/fast/gemm_bf16.rs) with its emulated and, where the CPU has AVX-512 BF16, native
//! microkernel (where the native kernel runs, how many of its bits differ from the emulation's
//! is printed).

use ddpm::backend::{CpuBackend, FastCpuBackend, FastCpuBf16Backend, Layers};
use ddpm::cpu::{attention as ref_attention, conv as ref_conv, linear as ref_linear};
use ddpm::fast::bf16;
use ddpm::model::UNetConfig;
use ddpm::model::unet::UNet;
use ddpm::model::weights::HostParams;
use ddpm::shapes::{AttentionShape, Conv2dShape, LinearShape, Padding};
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

/// A line the test harness does not capture (skips and measured errors must be seen).
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn rounded(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| bf16::round(v)).collect()
}
fn abs64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v.abs() as f64).collect()
}
fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Each product of two bf16-rounded operands errs by at most (1 + 2^-9)^2 - 1 relative.
const PRODUCT_REL: f64 = 1.0 / 256.0 + 1.0 / 131_072.0;

/// Checks the bound of contract 2 against the exact (f64) answer from unrounded operands:
/// |got - exact| <= PRODUCT_REL * magnitude + f32_atol, with `magnitude` = sum |a||b|.
fn assert_within_bf16_bound(what: &str, got: &[f32], exact: &[f64], magnitude: &[f64], f32_atol: f32) {
    let mut worst = 0.0f64;
    for (i, ((&g, &e), &m)) in got.iter().zip(exact).zip(magnitude).enumerate() {
        let bound = PRODUCT_REL * m + f32_atol as f64;
        let err = (g as f64 - e).abs();
        assert!(err <= bound, "{what}: element {i}: got {g}, exact {e}, error {err:e} > bound {bound:e}");
        worst = worst.max(err / bound);
    }
    // An f32 product's error is ~1e-5 of this bound; bf16's reaches a good part of it.
    assert!(worst > 1e-3, "{what}: errors at most {worst:e} of the bf16 bound: no rounding happened");
}

/// 4 eps (1/3) K: the f32 budget of a product sum of K terms of uniform [-1, 1) values (see
/// tests/fast_conv.rs).
fn sum_atol(k: usize) -> f32 {
    4.0 * f32::EPSILON * (1.0 / 3.0) * k as f32
}
const RTOL: f32 = 4.0 * f32::EPSILON;

/// Run on every bf16 path by [`every_bf16_path_meets_the_contract_in_conv_linear_and_the_whole_unet`].
fn conv_is_the_f32_conv_of_rounded_operands() {
    let pad1 = Padding { top: 1, bottom: 1, left: 1, right: 1 };
    let shapes = [
        // Winograd (289 tiles), im2col with stride 2 and asymmetric padding, 1x1.
        Conv2dShape { batch: 1, in_h: 33, in_w: 33, in_c: 19, out_c: 21, kernel: 3, stride: 1, pad: pad1 },
        Conv2dShape {
            batch: 2,
            in_h: 9,
            in_w: 11,
            in_c: 13,
            out_c: 18,
            kernel: 3,
            stride: 2,
            pad: Padding { top: 0, bottom: 1, left: 0, right: 1 },
        },
        Conv2dShape {
            batch: 3,
            in_h: 5,
            in_w: 7,
            in_c: 33,
            out_c: 17,
            kernel: 1,
            stride: 1,
            pad: Padding { top: 0, bottom: 0, left: 0, right: 0 },
        },
    ];
    let mut rng = rng_for("bf16 conv");
    for s in &shapes {
        let (x, w) = (random_vec(&mut rng, s.x_len(), -1.0, 1.0), random_vec(&mut rng, s.w_len(), -1.0, 1.0));
        let (b, dy) = (random_vec(&mut rng, s.out_c, -1.0, 1.0), random_vec(&mut rng, s.y_len(), -1.0, 1.0));
        let (xr, wr, dyr) = (rounded(&x), rounded(&w), rounded(&dy));
        let kk = s.kernel * s.kernel;
        let pixels = s.batch * s.out_h() * s.out_w();

        let mut y = vec![f32::NAN; s.y_len()];
        bf16::conv::conv2d_fwd(s, &x, &w, Some(&b), &mut y);
        let mut want = vec![f32::NAN; s.y_len()];
        ref_conv::conv2d_fwd(s, &xr, &wr, Some(&b), &mut want);
        assert_close(&format!("bf16 conv fwd {s:?}"), &y, &want, sum_atol(kk * s.in_c), RTOL);
        let (mut exact, mut mag) = (vec![0.0; s.y_len()], vec![0.0; s.y_len()]);
        ref_conv::conv2d_fwd(s, &to64(&x), &to64(&w), Some(&to64(&b)), &mut exact);
        ref_conv::conv2d_fwd(s, &abs64(&x), &abs64(&w), None, &mut mag);
        assert_within_bf16_bound(&format!("bf16 conv fwd bound {s:?}"), &y, &exact, &mag, sum_atol(kk * s.in_c));

        let mut dx = vec![f32::NAN; s.x_len()];
        bf16::conv::conv2d_bwd_input(s, &dy, &w, &mut dx);
        let mut want = vec![f32::NAN; s.x_len()];
        ref_conv::conv2d_bwd_input(s, &dyr, &wr, &mut want);
        assert_close(&format!("bf16 conv bwd_input {s:?}"), &dx, &want, sum_atol(kk * s.out_c), RTOL);

        let (mut dw, mut db) = (vec![f32::NAN; s.w_len()], vec![f32::NAN; s.out_c]);
        bf16::conv::conv2d_bwd_weight(s, &x, &dy, &mut dw, Some(&mut db));
        let (mut want, mut want_db) = (vec![f32::NAN; s.w_len()], vec![f32::NAN; s.out_c]);
        ref_conv::conv2d_bwd_weight(s, &xr, &dyr, &mut want, None);
        // The bias gradient is a sum of dy, not a product: unrounded.
        ref_conv::conv2d_bwd_weight(s, &x, &dy, &mut vec![0.0; s.w_len()], Some(&mut want_db));
        assert_close(&format!("bf16 conv bwd_weight {s:?}"), &dw, &want, sum_atol(pixels), RTOL);
        assert_close(&format!("bf16 conv bias grad {s:?}"), &db, &want_db, 1.8 * sum_atol(pixels), RTOL);
    }
}

/// Run on every bf16 path by [`every_bf16_path_meets_the_contract_in_conv_linear_and_the_whole_unet`].
fn linear_is_the_f32_linear_of_rounded_operands() {
    let mut rng = rng_for("bf16 linear");
    for s in [
        LinearShape { rows: 5, in_features: 37, out_features: 70 },
        LinearShape { rows: 33, in_features: 128, out_features: 9 },
    ] {
        let (x, w) = (
            random_vec(&mut rng, s.rows * s.in_features, -1.0, 1.0),
            random_vec(&mut rng, s.in_features * s.out_features, -1.0, 1.0),
        );
        let (b, dy) =
            (random_vec(&mut rng, s.out_features, -1.0, 1.0), random_vec(&mut rng, s.rows * s.out_features, -1.0, 1.0));
        let (xr, wr, dyr) = (rounded(&x), rounded(&w), rounded(&dy));
        let mut y = vec![f32::NAN; s.rows * s.out_features];
        bf16::linear::linear_fwd(&s, &x, &w, Some(&b), &mut y);
        let mut want = vec![f32::NAN; y.len()];
        ref_linear::linear_fwd(&s, &xr, &wr, Some(&b), &mut want);
        assert_close(&format!("bf16 linear fwd {s:?}"), &y, &want, sum_atol(s.in_features), RTOL);
        let (mut exact, mut mag) = (vec![0.0; y.len()], vec![0.0; y.len()]);
        ref_linear::linear_fwd(&s, &to64(&x), &to64(&w), Some(&to64(&b)), &mut exact);
        ref_linear::linear_fwd(&s, &abs64(&x), &abs64(&w), None, &mut mag);
        assert_within_bf16_bound(&format!("bf16 linear fwd bound {s:?}"), &y, &exact, &mag, sum_atol(s.in_features));

        let mut dx = vec![f32::NAN; x.len()];
        bf16::linear::linear_bwd_input(&s, &dy, &w, &mut dx);
        let mut want = vec![f32::NAN; x.len()];
        ref_linear::linear_bwd_input(&s, &dyr, &wr, &mut want);
        assert_close(&format!("bf16 linear bwd_input {s:?}"), &dx, &want, sum_atol(s.out_features), RTOL);

        let (mut dw, mut db) = (vec![f32::NAN; w.len()], vec![f32::NAN; s.out_features]);
        bf16::linear::linear_bwd_weight(&s, &x, &dy, &mut dw, Some(&mut db));
        let (mut want, mut want_db) = (vec![f32::NAN; w.len()], vec![f32::NAN; s.out_features]);
        ref_linear::linear_bwd_weight(&s, &xr, &dyr, &mut want, None);
        ref_linear::linear_bwd_weight(&s, &x, &dy, &mut vec![0.0; w.len()], Some(&mut want_db));
        assert_close(&format!("bf16 linear bwd_weight {s:?}"), &dw, &want, sum_atol(s.rows), RTOL);
        assert_close(&format!("bf16 linear bias grad {s:?}"), &db, &want_db, 1.8 * sum_atol(s.rows), RTOL);
    }
}

#[test]
fn attention_is_the_f32_attention_of_rounded_operands() {
    let mut rng = rng_for("bf16 attention");
    let s = AttentionShape { batch: 2, tokens: 67, heads: 2, head_dim: 12 };
    let (q, k) = (random_vec(&mut rng, s.len(), -1.5, 1.5), random_vec(&mut rng, s.len(), -1.5, 1.5));
    let (v, dout) = (random_vec(&mut rng, s.len(), -1.0, 1.0), random_vec(&mut rng, s.len(), -1.0, 1.0));
    let (out, lse) = {
        let (mut out, mut lse) = (vec![f32::NAN; s.len()], vec![f32::NAN; s.lse_len()]);
        bf16::attention::attention_fwd(&s, &q, &k, &v, &mut out, &mut lse);
        (out, lse)
    };
    let (qr, kr, vr, dr) = (rounded(&q), rounded(&k), rounded(&v), rounded(&dout));
    let (mut rout, mut rlse) = (vec![f32::NAN; s.len()], vec![f32::NAN; s.lse_len()]);
    ref_attention::attention_fwd(&s, &qr, &kr, &vr, &mut rout, &mut rlse);
    // Averages of magnitude <= 1: errors near f32 rounding (tests/fast_ops.rs's budget).
    assert_close("bf16 attention out", &out, &rout, 2e-6, 2e-5);
    assert_close("bf16 attention lse", &lse, &rlse, 2e-6, 2e-5);
    // Against the unrounded f32 reference the difference is bf16-sized: ~1e-3 here, not 1e-6.
    let (mut fout, mut flse) = (vec![f32::NAN; s.len()], vec![f32::NAN; s.lse_len()]);
    ref_attention::attention_fwd(&s, &q, &k, &v, &mut fout, &mut flse);
    assert_close("bf16 attention out vs f32", &out, &fout, 2e-2, 0.0);
    assert!(
        out.iter().zip(&fout).any(|(a, b)| (a - b).abs() > 1e-4),
        "bf16 attention equals the f32 one: no rounding happened"
    );

    let (mut dq, mut dk, mut dv) = (vec![f32::NAN; s.len()], vec![f32::NAN; s.len()], vec![f32::NAN; s.len()]);
    bf16::attention::attention_bwd(&s, &q, &k, &v, &out, &lse, &dout, &mut dq, &mut dk, &mut dv);
    let (mut wq, mut wk, mut wv) = (vec![f32::NAN; s.len()], vec![f32::NAN; s.len()], vec![f32::NAN; s.len()]);
    ref_attention::attention_bwd(&s, &qr, &kr, &vr, &rout, &rlse, &dr, &mut wq, &mut wk, &mut wv);
    assert_close("bf16 attention dq", &dq, &wq, 2e-6, 2e-5);
    assert_close("bf16 attention dk", &dk, &wk, 2e-6, 2e-5);
    assert_close("bf16 attention dv", &dv, &wv, 2e-6, 2e-5);
}

/// Relative L2 error of `got` against `want`.
fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|&w| (w as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// The UNet's output for batch x at timesteps t on backend b.
fn predict<B: Layers>(b: &B, unet: &UNet, host: &HostParams, x: &[f32], t: &[f32]) -> Vec<f32> {
    let params = host.upload(b).unwrap();
    let batch = t.len();
    b.download(&unet.predict(b, &params, &b.upload(x).unwrap(), &b.upload(t).unwrap(), batch).unwrap()).unwrap()
}

/// Run on every bf16 path by [`every_bf16_path_meets_the_contract_in_conv_linear_and_the_whole_unet`].
fn whole_unet_forward_is_within_two_percent_of_f32() {
    // The tiny family at 16x16 with attention (UNetConfig::tiny), batch 2, random weights.
    let config = UNetConfig { sample_size: 16, ..UNetConfig::tiny() };
    let unet = UNet::new(config.clone()).unwrap();
    let host = HostParams::init(&unet.table, 9);
    let mut rng = rng_for("bf16 whole unet");
    let n = 2 * config.sample_size * config.sample_size * config.in_channels;
    let x = random_vec(&mut rng, n, -1.0, 1.0);
    let t = [17.0f32, 803.0];
    let reference = predict(&CpuBackend, &unet, &host, &x, &t);
    let fast_f32 = predict(&FastCpuBackend, &unet, &host, &x, &t);
    let fast_bf16 = predict(&FastCpuBf16Backend, &unet, &host, &x, &t);
    let (e32, e16) = (rel_l2(&fast_f32, &reference), rel_l2(&fast_bf16, &reference));
    say(&format!(
        "whole UNet forward, relative L2 error against the f32 reference: fast f32 {e32:.2e}, fast bf16 {e16:.2e}"
    ));
    assert!(e32 < 1e-5, "fast f32 forward {e32}");
    // Stated bound: 2%. bf16 keeps 8 significant bits (0.4% per rounding); errors of the ~30
    // rounded products along the network's depth partly cancel.
    assert!(e16 < 2e-2, "bf16 forward relative error {e16}");
    // And it is bf16-sized, not f32-sized: the rounding happened.
    assert!(e16 > 1e-4, "bf16 forward relative error {e16}: as close as f32");
}

// ---------------------------------------------------------------- the packed bf16 GEMM

use ddpm::fast::gemm::{Mat, MatMut, Threads, matmul};
use ddpm::fast::gemm_bf16::{Bf16Kernel, KC, MC, MR, NR, PackedRhs, matmul_packed};
use std::sync::Mutex;

/// Held by every test that forces the bf16 kernel (process-wide).
static KERNEL: Mutex<()> = Mutex::new(());

/// The packed kernels this CPU can run (the native one needs AVX-512 BF16; said when skipped).
fn packed_kernels() -> Vec<Bf16Kernel> {
    let mut kernels = vec![Bf16Kernel::Emulated];
    match Bf16Kernel::native() {
        Some(k) => kernels.push(k),
        None => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                say("skipped: the native bf16 kernel (vdpbf16ps): this CPU lacks AVX-512 BF16 or runs below AVX-512")
            });
        }
    }
    kernels
}

/// Runs `f` with each bf16 path forced in turn: portable, then each packed kernel.
fn on_every_bf16_path(f: impl Fn(&str)) {
    let _guard = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    bf16::force_kernel(Some(None));
    f("portable");
    for k in packed_kernels() {
        bf16::force_kernel(Some(Some(k)));
        f(&format!("packed {k:?}"));
    }
    bf16::force_kernel(None);
}

#[test]
fn packed_gemm_is_the_f32_product_of_rounded_operands() {
    let mut rng = rng_for("packed bf16 gemm");
    // Edges of every blocking: rows around MR and MC, columns around NR, odd k, k over two KC
    // blocks of pairs, vectors, an empty sum.
    let shapes = [
        (1, 1, 1),
        (7, 31, 5),
        (MR + 1, NR + 1, 3),
        (MC + 3, 2 * NR - 1, 2 * KC + 7),
        (130, 70, 301),
        (1, 97, 64),
        (97, 1, 64),
        (5, 6, 0),
    ];
    for &(m, n, k) in &shapes {
        for (transpose_lhs, accumulate, threads) in
            [(false, false, Threads::All), (true, true, Threads::One), (false, true, Threads::All)]
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
            matmul(MatMut::strided(&mut want, offset, m, n, stride), lhs_r, Mat::rows(&br, k, n), accumulate, threads);
            let packed = PackedRhs::new(Mat::rows(&b, k, n));
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
                    "{kernel:?} [{m}x{k}]{} * [{k}x{n}] acc {accumulate} {threads:?}",
                    if transpose_lhs { "^T" } else { "" }
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

/// Contracts 2 and 3 on each path (the checks that depend on the forced path run only here, under
/// the lock, so each path is the one tested).
#[test]
fn every_bf16_path_meets_the_contract_in_conv_linear_and_the_whole_unet() {
    on_every_bf16_path(|path| {
        say(&format!("bf16 path: {path}"));
        conv_is_the_f32_conv_of_rounded_operands();
        linear_is_the_f32_linear_of_rounded_operands();
        whole_unet_forward_is_within_two_percent_of_f32();
    });
}
