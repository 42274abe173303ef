//! Every SIMD level the fast CPU path compiles, forced one at a time: the GEMM microkernel
//! families (gemm-f32's scalar, fma and avx512f kernels under gemm-common's driver), the layers
//! built on them, and the elementwise loops. Levels above this CPU's print a "skipped" line (they
//! cannot execute here). `SimdLevel::force` is process-wide and the GEMM families round
//! differently, so every test that forces a level lives in this file and holds `LEVEL`, and no
//! other test binary forces one.

mod common;

use common::elementwise_cases::{IMAGES, LENGTHS, elementwise_outputs, image_outputs};
use common::say;
use common::winograd_bounds::{RTOL, atol_for_sum, gamma2_f4, matrices_f4};
use ddpm::cpu::{attention as ref_attention, conv as ref_conv, linear as ref_linear};
use ddpm::fast::gemm::{Mat, MatMut, Threads, kernel_name, matmul};
use ddpm::fast::simd::SimdLevel;
use ddpm::fast::{attention, conv, linear};
use ddpm::shapes::{AttentionShape, Conv2dShape, LinearShape, Padding};
use ddpm::testing::{assert_close, random_vec, rng_for, tol};
use std::sync::Mutex;

static LEVEL: Mutex<()> = Mutex::new(());

/// Runs `body` at every level this CPU has (forced), saying which levels it cannot run.
fn on_every_level(what: &str, mut body: impl FnMut(SimdLevel)) {
    let _guard = LEVEL.lock().unwrap_or_else(|e| e.into_inner());
    for level in SimdLevel::ALL {
        if level > SimdLevel::detect() {
            say(&format!("skipped: {what} at {level:?} ({}): this CPU lacks it", kernel_name(level)));
            continue;
        }
        SimdLevel::force(Some(level));
        assert_eq!(SimdLevel::active(), level);
        body(level);
    }
    SimdLevel::force(None);
}

/// An f32 sum of K products of terms in [-1, 1) errs by about sqrt(K) 2^-24 |sum| with
/// |sum| ~ sqrt(K) / 3; 3e-6 sqrt(K) is several times the worst seen (as tests/fast_ops.rs).
fn gemm_atol(k: usize) -> f32 {
    3e-6 * (k as f32).sqrt()
}

/// dst (row-major, rows `row_stride` apart from `offset`) = lhs * rhs (+ dst when accumulating), in f64.
fn exact_product(lhs: &Mat, rhs: &Mat, init: &[f32], accumulate: bool, offset: usize, row_stride: usize) -> Vec<f32> {
    let mut out = init.to_vec();
    for r in 0..lhs.rows {
        for c in 0..rhs.cols {
            let mut sum = if accumulate { init[offset + r * row_stride + c] as f64 } else { 0.0 };
            for i in 0..lhs.cols {
                let a = lhs.data[lhs.offset + r * lhs.row_stride + i * lhs.col_stride] as f64;
                let b = rhs.data[rhs.offset + i * rhs.row_stride + c * rhs.col_stride] as f64;
                sum += a * b;
            }
            out[offset + r * row_stride + c] = sum as f32;
        }
    }
    out
}

#[test]
fn gemm_families_match_f64_on_every_level() {
    let mut rng = rng_for("gemm_families_match_f64");
    // Odd sizes around every family's register tiles (scalar 1, fma 8 x 3 lanes, avx512f 16 x 3),
    // a product big enough for the threaded path, vectors, and an empty sum.
    let shapes = [
        (1, 1, 1),
        (7, 13, 5),
        (33, 17, 129),
        (49, 50, 3),
        (130, 67, 300),
        (1, 97, 64),
        (97, 1, 64),
        (300, 257, 200),
        (5, 6, 0),
    ];
    on_every_level("GEMM", |level| {
        for &(m, n, k) in &shapes {
            for (transpose_lhs, transpose_rhs, accumulate) in
                [(false, false, false), (true, false, true), (false, true, false), (true, true, true)]
            {
                // lhs [m, k] stored as given or as the transpose of a [k, m] matrix, with a
                // leading offset; dst rows padded (row stride n + 3) and NaN outside the view
                // unless accumulating.
                let a = random_vec(&mut rng, m * k + 5, -1.0, 1.0);
                let b = random_vec(&mut rng, k * n + 2, -1.0, 1.0);
                let lhs = if transpose_lhs { Mat::rows(&a[5..], k, m).t() } else { Mat::rows(&a[5..], m, k) };
                let rhs = if transpose_rhs { Mat::strided(&b, 2, n, k, k).t() } else { Mat::strided(&b, 2, k, n, n) };
                let (offset, stride) = (4, n + 3);
                let mut init = vec![f32::NAN; offset + m * stride];
                if accumulate {
                    for r in 0..m {
                        init[offset + r * stride..][..n].copy_from_slice(&random_vec(&mut rng, n, -1.0, 1.0));
                    }
                }
                let want = exact_product(&lhs, &rhs, &init, accumulate, offset, stride);
                for threads in [Threads::All, Threads::One] {
                    let mut got = init.clone();
                    matmul(MatMut::strided(&mut got, offset, m, n, stride), lhs, rhs, accumulate, threads);
                    let (g, w): (Vec<f32>, Vec<f32>) = (0..m)
                        .flat_map(|r| (0..n).map(move |c| offset + r * stride + c))
                        .map(|i| (got[i], want[i]))
                        .unzip();
                    let what = format!(
                        "{level:?} [{m}x{k}]{}*[{k}x{n}]{} acc {accumulate} {threads:?}",
                        if transpose_lhs { "^T" } else { "" },
                        if transpose_rhs { "^T" } else { "" }
                    );
                    assert_close(&what, &g, &w, gemm_atol(k), 1e-5);
                    // Outside the view (the offset, each row's padding) nothing is written.
                    let inside = |i: usize| i >= offset && (i - offset) % stride < n;
                    assert!(
                        got.iter().zip(&init).enumerate().all(|(i, (g, w))| inside(i) || g.to_bits() == w.to_bits()),
                        "{what}: wrote outside the view"
                    );
                }
            }
        }
    });
}

/// The three conv products of `s` against the reference, each poisoned first, within the budgets
/// of tests/fast_conv.rs and tests/fast_winograd.rs: the direct sum's, or for a 3x3 "same" conv
/// (which may run either Winograd transform) F(4x4)'s, the larger.
fn conv_matches_the_reference(level: SimdLevel, s: &Conv2dShape, rng: &mut rand::rngs::StdRng) {
    let (x, w) = (random_vec(rng, s.x_len(), -1.0, 1.0), random_vec(rng, s.w_len(), -1.0, 1.0));
    let (b, dy) = (random_vec(rng, s.out_c, -1.0, 1.0), random_vec(rng, s.y_len(), -1.0, 1.0));
    let (kk, pixels) = (s.kernel * s.kernel, s.batch * s.out_h() * s.out_w());
    let p = s.pad;
    let same = s.kernel == 3 && s.stride == 1 && [p.top, p.bottom, p.left, p.right] == [1; 4];
    let tiles4 = s.batch * s.in_h.div_ceil(4) * s.in_w.div_ceil(4);
    let sum = |channels: usize| {
        let direct = atol_for_sum(kk * channels);
        if same { direct.max(atol_for_sum(channels) * gamma2_f4() as f32) } else { direct }
    };
    let grad_f4 = atol_for_sum(tiles4) * matrices_f4().grad_gamma2() as f32;
    let wgrad = if same { atol_for_sum(pixels).max(grad_f4) } else { atol_for_sum(pixels) };
    let (mut y, mut ry) = (vec![f32::NAN; s.y_len()], vec![f32::NAN; s.y_len()]);
    conv::conv2d_fwd(s, &x, &w, Some(&b), &mut y);
    ref_conv::conv2d_fwd(s, &x, &w, Some(&b), &mut ry);
    assert_close(&format!("{level:?} conv fwd {s:?}"), &y, &ry, sum(s.in_c), RTOL);
    let (mut dx, mut rdx) = (vec![f32::NAN; s.x_len()], vec![f32::NAN; s.x_len()]);
    conv::conv2d_bwd_input(s, &dy, &w, &mut dx);
    ref_conv::conv2d_bwd_input(s, &dy, &w, &mut rdx);
    assert_close(&format!("{level:?} conv bwd_input {s:?}"), &dx, &rdx, sum(s.out_c), RTOL);
    let (mut dw, mut rdw) = (vec![f32::NAN; s.w_len()], vec![f32::NAN; s.w_len()]);
    conv::conv2d_bwd_weight(s, &x, &dy, &mut dw, None);
    ref_conv::conv2d_bwd_weight(s, &x, &dy, &mut rdw, None);
    assert_close(&format!("{level:?} conv bwd_weight {s:?}"), &dw, &rdw, wgrad, RTOL);
}

#[test]
fn layers_match_the_reference_on_every_level() {
    let mut rng = rng_for("layers_match_the_reference_on_every_level");
    let pad1 = Padding { top: 1, bottom: 1, left: 1, right: 1 };
    let none = Padding { top: 0, bottom: 0, left: 0, right: 0 };
    let convs = [
        // Winograd F(2x2) (289 tiles) and F(4x4) (256 4x4 tiles), each for all three products,
        // im2col stride 2 with diffusers' asymmetric downsample padding, 1x1.
        Conv2dShape { batch: 1, in_h: 33, in_w: 33, in_c: 19, out_c: 21, kernel: 3, stride: 1, pad: pad1 },
        Conv2dShape { batch: 4, in_h: 32, in_w: 31, in_c: 17, out_c: 16, kernel: 3, stride: 1, pad: pad1 },
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
        Conv2dShape { batch: 3, in_h: 5, in_w: 7, in_c: 33, out_c: 17, kernel: 1, stride: 1, pad: none },
    ];
    let linears = [LinearShape { rows: 5, in_features: 37, out_features: 70 }];
    let attentions = [AttentionShape { batch: 2, tokens: 67, heads: 2, head_dim: 12 }];
    on_every_level("layers", |level| {
        for s in &convs {
            conv_matches_the_reference(level, s, &mut rng);
        }
        for s in &linears {
            let (x, w) = (
                random_vec(&mut rng, s.rows * s.in_features, -1.0, 1.0),
                random_vec(&mut rng, s.in_features * s.out_features, -1.0, 1.0),
            );
            let b = random_vec(&mut rng, s.out_features, -1.0, 1.0);
            let (mut y, mut ry) = (vec![f32::NAN; s.rows * s.out_features], vec![f32::NAN; s.rows * s.out_features]);
            linear::linear_fwd(s, &x, &w, Some(&b), &mut y);
            ref_linear::linear_fwd(s, &x, &w, Some(&b), &mut ry);
            assert_close(&format!("{level:?} linear {s:?}"), &y, &ry, gemm_atol(s.in_features), 1e-5);
        }
        for s in &attentions {
            let (q, k) = (random_vec(&mut rng, s.len(), -1.5, 1.5), random_vec(&mut rng, s.len(), -1.5, 1.5));
            let v = random_vec(&mut rng, s.len(), -1.0, 1.0);
            let (mut out, mut lse) = (vec![f32::NAN; s.len()], vec![f32::NAN; s.lse_len()]);
            let (mut rout, mut rlse) = (vec![f32::NAN; s.len()], vec![f32::NAN; s.lse_len()]);
            attention::attention_fwd(s, &q, &k, &v, &mut out, &mut lse);
            ref_attention::attention_fwd(s, &q, &k, &v, &mut rout, &mut rlse);
            // Averages of magnitude <= 1: errors near f32 rounding (tests/fast_ops.rs's budget).
            assert_close(&format!("{level:?} attention out {s:?}"), &out, &rout, 2e-6, 2e-5);
            assert_close(&format!("{level:?} attention lse {s:?}"), &lse, &rlse, 2e-6, 2e-5);
        }
    });
}

#[test]
fn elementwise_ops_match_the_reference_on_every_level() {
    let mut first_level: Option<Vec<Vec<u32>>> = None;
    on_every_level("elementwise ops", |level| {
        let mut rng = rng_for("elementwise_ops_match_the_reference");
        let mut cases: Vec<_> = LENGTHS.iter().flat_map(|&len| elementwise_outputs(&mut rng, len)).collect();
        cases.extend(IMAGES.iter().flat_map(|&s| image_outputs(&mut rng, s)));
        for (what, got, want) in &cases {
            // SiLU's exp is a polynomial (within 2 ulp), channel_sum adds f64 partials in another
            // order; the others compute the reference's bits.
            let exact = !(what.starts_with("silu") || what.starts_with("channel_sum"));
            let (atol, rtol) = if exact { (0.0, 0.0) } else { (tol::F32_ATOL, tol::F32_RTOL) };
            assert_close(&format!("{what} at {level:?}"), got, want, atol, rtol);
        }
        // Every level runs the same arithmetic (plain Rust, no reassociation), so the same bits.
        let level_bits: Vec<Vec<u32>> =
            cases.iter().map(|(_, got, _)| got.iter().map(|v| v.to_bits()).collect()).collect();
        match &first_level {
            None => first_level = Some(level_bits),
            Some(first) => assert!(first == &level_bits, "{level:?} differs from {:?}", SimdLevel::ALL[0]),
        }
    });
}

#[test]
fn the_best_level_is_dispatched_wherever_the_cpu_has_it() {
    use SimdLevel::*;
    // With AVX-512 (either unit width) the AVX-512 GEMM kernels and loops run unless capped.
    assert_eq!(SimdLevel::resolve(Avx512, None, None), Avx512);
    assert!(kernel_name(SimdLevel::resolve(Avx512, None, None)).contains("avx512f"));
    assert_eq!(SimdLevel::resolve(Avx512, Some(Avx2Fma), None), Avx2Fma);
    assert_eq!(SimdLevel::resolve(Avx512, None, Some(Portable)), Portable);
    assert_eq!(SimdLevel::resolve(Avx2Fma, None, None), Avx2Fma);
    assert!(kernel_name(Avx2Fma).contains("fma"));
    // A cap never raises the level above the CPU's.
    assert_eq!(SimdLevel::resolve(Avx2Fma, Some(Avx512), Some(Avx512)), Avx2Fma);
    // And on this CPU, unforced: the detected level, whose FMA width is measured when it is AVX-512.
    let _guard = LEVEL.lock().unwrap_or_else(|e| e.into_inner());
    let env_cap = SimdLevel::from_env().ok().copied().flatten();
    assert_eq!(SimdLevel::active(), SimdLevel::resolve(SimdLevel::detect(), env_cap, None));
    let width = ddpm::fast::simd::avx512_fma_width();
    assert_eq!(width.is_some(), SimdLevel::detect() == Avx512, "{width:?}");
    assert!(matches!(width, None | Some(256) | Some(512)));
    say(&format!("fast path here: {}", SimdLevel::describe()));
}
