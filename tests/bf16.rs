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
//!
//! Contract 1 and the packed GEMM's own checks are in tests/bf16_gemm.rs.

mod common;
use common::bf16_checks::{RTOL, abs64, assert_within_bf16_bound, on_every_bf16_path, rounded, sum_atol, to64};
use common::say;
use ddpm::backend::{CpuBackend, FastCpuBackend, FastCpuBf16Backend, Layers};
use ddpm::cpu::{attention as ref_attention, conv as ref_conv, linear as ref_linear};
use ddpm::fast::bf16;
use ddpm::model::UNetConfig;
use ddpm::model::unet::UNet;
use ddpm::model::weights::HostParams;
use ddpm::shapes::{AttentionShape, Conv2dShape, LinearShape, Padding};
use ddpm::testing::{assert_close, random_vec, rng_for};

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
