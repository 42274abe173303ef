//! The fast CPU path's ops other than convolution (src/fast/{linear,group_norm,attention,
//! elementwise,optim}.rs) against their references in src/cpu: every element within
//! atol + rtol * |ref|, fresh random inputs, outputs poisoned with NaN, odd shapes (token counts
//! and pixel counts not multiples of the block, features not multiples of 16, batch 1 and 3,
//! several heads). Every op must give the same bits on repeated runs and on 1 and 2 rayon
//! threads. (Every SIMD level: tests/simd_levels.rs, which forces levels in its own process.)

mod common;

use common::elementwise_cases::{IMAGES, LENGTHS};
use ddpm::cpu::{attention as ref_attention, group_norm as ref_group_norm, linear as ref_linear, optim as ref_optim};
use ddpm::fast::{attention, elementwise, group_norm, linear, optim, silu};
use ddpm::math::adamw::AdamWStep;
use ddpm::shapes::{AttentionShape, GroupNormShape, LinearShape};
use ddpm::testing::{assert_close, random_vec, rng_for};

/// Linear outputs against the exact (f64) answer: an f32 sum of K products of terms ~1 errs by
/// about sqrt(K) * 2^-24 * |sum|, |sum| ~ sqrt(K) / 3 here; atol = 3e-6 * sqrt(K) is 3.5x the
/// worst element measured.
fn gemm_atol(k: usize) -> f32 {
    3e-6 * (k as f32).sqrt()
}
const GEMM_RTOL: f32 = 1e-5;
/// Attention against the f64 reference: outputs and gradients are averages of magnitude <= 1
/// (probabilities sum to 1), so errors stay near f32 rounding of the result: worst measured
/// 1.5e-7 absolute (out, dv), lse (~5) 1e-7 relative.
const ATTENTION_ATOL: f32 = 1e-6;
const ATTENTION_RTOL: f32 = 1e-5;
/// GroupNorm against the f64-statistics reference: the statistics agree to f64 rounding, so the
/// difference is the reference's own f32 elementwise steps plus the vectorised exp of the SiLU
/// (2 ulp): a few ulp of outputs of magnitude ~1-4.
const NORM_ATOL: f32 = 2e-6;
const NORM_RTOL: f32 = 2e-5;

fn nan(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

fn to_f32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

fn bits(outputs: &[Vec<f32>]) -> Vec<Vec<u32>> {
    outputs.iter().map(|o| o.iter().map(|v| v.to_bits()).collect()).collect()
}

/// Runs `op` twice on the default pool, then on 1-thread and 2-thread pools: all must agree bit
/// for bit.
fn assert_deterministic(what: &str, op: impl Fn() -> Vec<Vec<f32>> + Sync) {
    let first = bits(&op());
    assert_eq!(first, bits(&op()), "{what}: a second run differs");
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        assert_eq!(first, bits(&pool.install(&op)), "{what}: differs on {threads} rayon threads");
    }
}

// ---------------------------------------------------------------- elementwise

#[test]
fn vectorised_exp_is_within_two_ulp() {
    let mut worst = (0f64, 0f32);
    for i in 0..=2_000_000 {
        let x = -87.0 + 175.0 * i as f32 / 2_000_000.0;
        let (got, want) = (elementwise::exp(x) as f64, (x as f64).exp());
        let ulp = (want as f32).abs() * f32::EPSILON; // the spacing at want, within a factor 2
        let err = (got - want).abs() / ulp as f64;
        if err > worst.0 {
            worst = (err, x);
        }
    }
    assert!(worst.0 <= 2.0, "exp({}) is {:.2} ulp off", worst.1, worst.0);
    assert!(elementwise::exp(f32::NAN).is_nan());
    assert!(elementwise::exp(-1000.0) < 1e-37 && elementwise::exp(1000.0) > 1e38);
}

#[test]
fn elementwise_ops_are_deterministic() {
    let mut rng = rng_for("elementwise_ops_are_deterministic");
    let s = IMAGES[1];
    let (x, d) = (random_vec(&mut rng, s.len(), -1.0, 1.0), random_vec(&mut rng, s.len(), -1.0, 1.0));
    assert_deterministic("channel_sum, silu", || {
        let (mut sums, mut y, mut dx) = (nan(s.batch * s.c), nan(s.len()), nan(s.len()));
        elementwise::channel_sum(&s, &x, &mut sums);
        silu::silu_fwd(&x, &mut y);
        silu::silu_bwd(&x, &d, &mut dx);
        vec![sums, y, dx]
    });
}

// ---------------------------------------------------------------- optim

#[test]
fn optimizer_ops_match_the_reference() {
    let mut rng = rng_for("optimizer_ops_match_the_reference");
    for len in LENGTHS {
        let (p, g) = (random_vec(&mut rng, len, -1.0, 1.0), random_vec(&mut rng, len, -0.1, 0.1));
        let (m, v) = (random_vec(&mut rng, len, -0.01, 0.01), random_vec(&mut rng, len, 0.0, 1e-4));
        let step = AdamWStep::new(2e-4, 0.9, 0.999, 1e-8, 0.01, 7, 0.8);
        let (mut gp, mut gm, mut gv) = (p.clone(), m.clone(), v.clone());
        let (mut wp, mut wm, mut wv) = (p.clone(), m.clone(), v.clone());
        optim::adamw_step(&mut gp, &g, &mut gm, &mut gv, &step);
        ref_optim::adamw_step(&mut wp, &g, &mut wm, &mut wv, &step);
        // Elementwise in the reference's order: the same bits.
        for (what, got, want) in [("param", &gp, &wp), ("exp_avg", &gm, &wm), ("exp_avg_sq", &gv, &wv)] {
            assert_close(&format!("adamw {what} len {len}"), got, want, 0.0, 0.0);
        }
        let (mut ge, mut we) = (m.clone(), m.clone());
        optim::ema_update(&mut ge, &p, 0.9999);
        ref_optim::ema_update(&mut we, &p, 0.9999);
        assert_close(&format!("ema len {len}"), &ge, &we, 0.0, 0.0);
        let (mut gs, mut ws) = (p.clone(), p.clone());
        optim::scale(&mut gs, 0.3);
        ref_optim::scale(&mut ws, 0.3);
        assert_close(&format!("scale len {len}"), &gs, &ws, 0.0, 0.0);
        // f64 partials in another order, rounded once to f32: within an ulp.
        let (got, want) = (optim::sum_squares(&p), ref_optim::sum_squares(&p));
        assert_close(&format!("sum_squares len {len}"), &[got], &[want], 0.0, 1.2e-7);
        assert_deterministic(&format!("sum_squares len {len}"), || vec![vec![optim::sum_squares(&p)]]);
    }
}

// ---------------------------------------------------------------- linear

const LINEARS: [LinearShape; 3] = [
    LinearShape { rows: 3, in_features: 37, out_features: 29 },
    LinearShape { rows: 1, in_features: 128, out_features: 515 },
    LinearShape { rows: 131, in_features: 260, out_features: 72 },
];

/// Every linear output, fast or reference, for one shape's inputs.
fn linear_outputs(s: &LinearShape, fast: bool, x: &[f32], w: &[f32], b: &[f32], dy: &[f32]) -> Vec<Vec<f32>> {
    let (k, n) = (s.in_features, s.out_features);
    let (mut y, mut y_nobias, mut dx, mut dw, mut db) =
        (nan(s.rows * n), nan(s.rows * n), nan(s.rows * k), nan(n * k), nan(n));
    if fast {
        linear::linear_fwd(s, x, w, Some(b), &mut y);
        linear::linear_fwd(s, x, w, None, &mut y_nobias);
        linear::linear_bwd_input(s, dy, w, &mut dx);
        linear::linear_bwd_weight(s, x, dy, &mut dw, Some(&mut db));
    } else {
        ref_linear::linear_fwd(s, x, w, Some(b), &mut y);
        ref_linear::linear_fwd(s, x, w, None, &mut y_nobias);
        ref_linear::linear_bwd_input(s, dy, w, &mut dx);
        ref_linear::linear_bwd_weight(s, x, dy, &mut dw, Some(&mut db));
    }
    vec![y, y_nobias, dx, dw, db]
}

#[test]
fn linear_matches_the_reference_and_is_deterministic() {
    let mut rng = rng_for("linear_matches_the_reference");
    for s in &LINEARS {
        let (k, n) = (s.in_features, s.out_features);
        let (x, w, b) = (
            random_vec(&mut rng, s.rows * k, -1.0, 1.0),
            random_vec(&mut rng, n * k, -1.0, 1.0),
            random_vec(&mut rng, n, -1.0, 1.0),
        );
        let dy = random_vec(&mut rng, s.rows * n, -1.0, 1.0);
        let got = linear_outputs(s, true, &x, &w, &b, &dy);
        let want = linear_outputs(s, false, &x, &w, &b, &dy);
        let sums_over = [k, k, n, s.rows, s.rows];
        for ((name, (got, want)), k) in
            ["y", "y (no bias)", "dx", "dw", "db"].iter().zip(got.iter().zip(&want)).zip(sums_over)
        {
            assert_close(&format!("linear {name} {s:?}"), got, want, gemm_atol(k), GEMM_RTOL);
        }
        assert_deterministic(&format!("linear {s:?}"), || linear_outputs(s, true, &x, &w, &b, &dy));
    }
}

// ---------------------------------------------------------------- group norm

const NORMS: [GroupNormShape; 3] = [
    GroupNormShape { batch: 1, hw: 7 * 9, channels: 96, groups: 32, eps: 1e-5 },
    GroupNormShape { batch: 3, hw: 15 * 15, channels: 64, groups: 32, eps: 1e-6 },
    // cifar10's first level at batch 1 over several tasks per image, 2 channels per group
    GroupNormShape { batch: 1, hw: 32 * 31, channels: 64, groups: 32, eps: 1e-5 },
];

/// Forward then backward: y, mean, rstd, dx, dgamma, dbeta (the parameter grads only with affine).
fn group_norm_outputs(
    s: &GroupNormShape,
    fast: bool,
    silu: bool,
    affine: bool,
    x: &[f32],
    gb: (&[f32], &[f32]),
    dy: &[f32],
) -> Vec<Vec<f32>> {
    let (g, b) = if affine { (Some(gb.0), Some(gb.1)) } else { (None, None) };
    let (mut y, mut mean, mut rstd) = (nan(s.len()), nan(s.stats_len()), nan(s.stats_len()));
    let (mut dx, mut dg, mut db) = (nan(s.len()), nan(s.channels), nan(s.channels));
    if fast {
        group_norm::group_norm_fwd(s, x, g, b, silu, &mut y, &mut mean, &mut rstd);
        group_norm::group_norm_bwd(s, x, g, b, &mean, &rstd, silu, dy, &mut dx, Some(&mut dg), Some(&mut db));
    } else {
        ref_group_norm::group_norm_fwd(s, x, g, b, silu, &mut y, &mut mean, &mut rstd);
        ref_group_norm::group_norm_bwd(s, x, g, b, &mean, &rstd, silu, dy, &mut dx, Some(&mut dg), Some(&mut db));
    }
    vec![y, mean, rstd, dx, dg, db]
}

#[test]
fn group_norm_matches_the_reference_and_is_deterministic() {
    let mut rng = rng_for("group_norm_matches_the_reference");
    for s in &NORMS {
        // A mean far from zero next to the spread: the variance must not cancel away.
        let x = random_vec(&mut rng, s.len(), 2.0, 5.0);
        let (gamma, beta) = (random_vec(&mut rng, s.channels, -1.5, 1.5), random_vec(&mut rng, s.channels, -1.0, 1.0));
        let dy = random_vec(&mut rng, s.len(), -1.0, 1.0);
        for (silu, affine) in [(true, true), (false, true), (true, false)] {
            let got = group_norm_outputs(s, true, silu, affine, &x, (&gamma, &beta), &dy);
            let want = group_norm_outputs(s, false, silu, affine, &x, (&gamma, &beta), &dy);
            let names = ["y", "mean", "rstd", "dx", "dgamma", "dbeta"];
            for (i, (name, (got, want))) in names.iter().zip(got.iter().zip(&want)).enumerate() {
                // dgamma and dbeta sum over every pixel of every image, each term within a few ulp:
                // about as accurate as a GEMM over that many terms.
                let (atol, rtol) = if i >= 4 { (gemm_atol(s.batch * s.hw), GEMM_RTOL) } else { (NORM_ATOL, NORM_RTOL) };
                assert_close(&format!("group_norm {name} {s:?} silu={silu} affine={affine}"), got, want, atol, rtol);
            }
            assert_deterministic(&format!("group_norm {s:?}"), || {
                group_norm_outputs(s, true, silu, affine, &x, (&gamma, &beta), &dy)
            });
        }
    }
}

// ---------------------------------------------------------------- attention

const ATTENTIONS: [AttentionShape; 4] = [
    AttentionShape { batch: 1, tokens: 67, heads: 2, head_dim: 24 },
    AttentionShape { batch: 3, tokens: 130, heads: 1, head_dim: 40 },
    AttentionShape { batch: 1, tokens: 256, heads: 1, head_dim: 36 },
    // Enough images that the backward runs one split per image (no partial sums).
    AttentionShape { batch: 9, tokens: 65, heads: 3, head_dim: 8 },
];

/// out, lse, dq, dk, dv of the fast path.
fn attention_outputs(s: &AttentionShape, q: &[f32], k: &[f32], v: &[f32], dout: &[f32]) -> Vec<Vec<f32>> {
    let (mut out, mut lse) = (nan(s.len()), nan(s.lse_len()));
    attention::attention_fwd(s, q, k, v, &mut out, &mut lse);
    let (mut dq, mut dk, mut dv) = (nan(s.len()), nan(s.len()), nan(s.len()));
    attention::attention_bwd(s, q, k, v, &out, &lse, dout, &mut dq, &mut dk, &mut dv);
    vec![out, lse, dq, dk, dv]
}

/// The same from the reference in f64: the exact answer (the f32 reference rounds as it goes).
fn attention_exact(s: &AttentionShape, q: &[f32], k: &[f32], v: &[f32], dout: &[f32]) -> Vec<Vec<f32>> {
    let (q, k, v, dout) = (to_f64(q), to_f64(k), to_f64(v), to_f64(dout));
    let (mut out, mut lse) = (vec![0.0; s.len()], vec![0.0; s.lse_len()]);
    ref_attention::attention_fwd(s, &q, &k, &v, &mut out, &mut lse);
    let (mut dq, mut dk, mut dv) = (vec![0.0; s.len()], vec![0.0; s.len()], vec![0.0; s.len()]);
    ref_attention::attention_bwd(s, &q, &k, &v, &out, &lse, &dout, &mut dq, &mut dk, &mut dv);
    [out, lse, dq, dk, dv].iter().map(|x| to_f32(x)).collect()
}

#[test]
fn attention_matches_the_reference_and_is_deterministic() {
    let mut rng = rng_for("attention_matches_the_reference");
    for s in &ATTENTIONS {
        // Scores of a few units: softmax rows that are neither uniform nor one-hot.
        let (q, k) = (random_vec(&mut rng, s.len(), -1.5, 1.5), random_vec(&mut rng, s.len(), -1.5, 1.5));
        let (v, dout) = (random_vec(&mut rng, s.len(), -1.0, 1.0), random_vec(&mut rng, s.len(), -1.0, 1.0));
        let got = attention_outputs(s, &q, &k, &v, &dout);
        let want = attention_exact(s, &q, &k, &v, &dout);
        for (name, (got, want)) in ["out", "lse", "dq", "dk", "dv"].iter().zip(got.iter().zip(&want)) {
            assert_close(&format!("attention {name} {s:?}"), got, want, ATTENTION_ATOL, ATTENTION_RTOL);
        }
        assert_deterministic(&format!("attention {s:?}"), || attention_outputs(s, &q, &k, &v, &dout));
    }
}
