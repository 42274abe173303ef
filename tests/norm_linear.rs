//! GroupNorm (with and without fused SiLU) and Linear: the CPU reference's backward against f64
//! finite differences, both backends against PyTorch's numbers, the kernels on the emulator
//! against the CPU reference, and length errors.

mod common;
use common::norm_linear_checks;
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers};
use ddpm::cpu::{group_norm, linear};
use ddpm::shapes::{GroupNormShape, LinearShape};
use ddpm::testing::{GRAD_CHECK_STEP, assert_gradient, central_difference, random_vec, rng_for};
use rand::rngs::StdRng;

fn random_f64(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f64> {
    random_vec(rng, n, lo, hi).into_iter().map(f64::from).collect()
}

/// Every element of `analytic` against the central difference of `loss` in `params[i]`.
fn assert_grad(what: &str, analytic: &[f64], params: &[f64], loss: impl Fn(&[f64]) -> f64) {
    assert_eq!(analytic.len(), params.len());
    let mut p = params.to_vec();
    for i in 0..p.len() {
        let numeric = central_difference(p.as_mut_slice(), GRAD_CHECK_STEP, |p| &mut p[i], &loss);
        assert_gradient(format_args!("{what}[{i}]"), analytic[i], numeric);
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// L = sum(r * GroupNorm(x)) in f64; gradients of x, gamma and beta.
fn group_norm_grad_check(s: GroupNormShape, silu: bool, affine: bool, seed: &str) {
    let mut rng = rng_for(seed);
    let x = random_f64(&mut rng, s.len(), -2.0, 3.0);
    let r = random_f64(&mut rng, s.len(), -1.0, 1.0);
    let (gamma, beta) = (random_f64(&mut rng, s.channels, -1.5, 1.5), random_f64(&mut rng, s.channels, -1.0, 1.0));
    let (g, b) = if affine { (Some(gamma.as_slice()), Some(beta.as_slice())) } else { (None, None) };
    let loss = |x: &[f64], g: Option<&[f64]>, b: Option<&[f64]>| {
        let (mut y, mut m, mut rs) = (vec![0.0; s.len()], vec![0.0; s.stats_len()], vec![0.0; s.stats_len()]);
        group_norm::group_norm_fwd(&s, x, g, b, silu, &mut y, &mut m, &mut rs);
        dot(&r, &y)
    };
    let (mut y, mut mean, mut rstd) = (vec![0.0; s.len()], vec![0.0; s.stats_len()], vec![0.0; s.stats_len()]);
    group_norm::group_norm_fwd(&s, &x, g, b, silu, &mut y, &mut mean, &mut rstd);
    let (mut dx, mut dgamma, mut dbeta) =
        (vec![f64::NAN; s.len()], vec![f64::NAN; s.channels], vec![f64::NAN; s.channels]);
    group_norm::group_norm_bwd(&s, &x, g, b, &mean, &rstd, silu, &r, &mut dx, Some(&mut dgamma), Some(&mut dbeta));
    let what = format!("group_norm {s:?} silu={silu} affine={affine}");
    assert_grad(&format!("{what} dx"), &dx, &x, |x| loss(x, g, b));
    if affine {
        assert_grad(&format!("{what} dgamma"), &dgamma, &gamma, |gm| loss(&x, Some(gm), b));
        assert_grad(&format!("{what} dbeta"), &dbeta, &beta, |bt| loss(&x, g, Some(bt)));
    }
}

#[test]
fn group_norm_backward_matches_finite_differences() {
    for (i, (batch, hw, channels, groups)) in
        [(2, 3, 4, 2), (1, 5, 6, 3), (3, 2, 3, 1), (2, 1, 4, 4)].into_iter().enumerate()
    {
        for silu in [false, true] {
            for affine in [true, false] {
                let s = GroupNormShape { batch, hw, channels, groups, eps: 1e-5 };
                group_norm_grad_check(s, silu, affine, &format!("gn_grad_{i}_{silu}_{affine}"));
            }
        }
    }
}

#[test]
fn linear_backward_matches_finite_differences() {
    for (rows, in_features, out_features) in [(3, 4, 5), (1, 1, 1), (4, 7, 2)] {
        let s = LinearShape { rows, in_features, out_features };
        let mut rng = rng_for(&format!("linear_grad_{rows}_{in_features}_{out_features}"));
        let x = random_f64(&mut rng, rows * in_features, -1.0, 1.0);
        let w = random_f64(&mut rng, out_features * in_features, -1.0, 1.0);
        let b = random_f64(&mut rng, out_features, -1.0, 1.0);
        let r = random_f64(&mut rng, rows * out_features, -1.0, 1.0);
        let loss = |x: &[f64], w: &[f64], b: &[f64]| {
            let mut y = vec![0.0; rows * out_features];
            linear::linear_fwd(&s, x, w, Some(b), &mut y);
            dot(&r, &y)
        };
        let (mut dx, mut dw, mut db) = (vec![f64::NAN; x.len()], vec![f64::NAN; w.len()], vec![f64::NAN; b.len()]);
        linear::linear_bwd_input(&s, &r, &w, &mut dx);
        linear::linear_bwd_weight(&s, &x, &r, &mut dw, Some(&mut db));
        assert_grad(&format!("linear {s:?} dx"), &dx, &x, |x| loss(x, &w, &b));
        assert_grad(&format!("linear {s:?} dw"), &dw, &w, |w| loss(&x, w, &b));
        assert_grad(&format!("linear {s:?} db"), &db, &b, |b| loss(&x, &w, b));
    }
}

on_every_backend! {
    group_norm_matches_pytorch => |b| {
        norm_linear_checks::group_norm_matches_pytorch(b).say(&format!("group_norm vs PyTorch ({}):", Backend::name(b)))
    },
    linear_matches_pytorch => |b| {
        norm_linear_checks::linear_matches_pytorch(b).say(&format!("linear vs PyTorch ({}):", Backend::name(b)))
    },
}

#[test]
fn group_norm_kernels_match_cpu_reference_on_emulator() {
    norm_linear_checks::group_norm_parity(&common::emu()).say("group_norm vs CPU reference (emulator):");
}

#[test]
fn linear_kernels_match_cpu_reference_on_emulator() {
    norm_linear_checks::linear_parity(&common::emu()).say("linear vs CPU reference (emulator):");
}

#[test]
fn wrong_buffer_lengths_are_errors_not_panics() {
    let s = GroupNormShape { batch: 2, hw: 3, channels: 4, groups: 2, eps: 1e-5 };
    let l = LinearShape { rows: 3, in_features: 4, out_features: 5 };
    let cpu = CpuBackend;
    let (x, mut y, mut stats) = (vec![0.5; s.len()], vec![0.0; s.len() - 1], vec![0.0; s.stats_len()]);
    let mut rstd = stats.clone();
    let err = cpu.group_norm_fwd(&s, &x, None, None, false, &mut y, &mut stats, &mut rstd).unwrap_err();
    assert!(format!("{err:#}").contains("y has"), "{err:#}");
    let (lx, lw, mut ly) = (vec![0.5; 12], vec![0.5; 19], vec![0.0; 15]);
    assert!(cpu.linear_fwd(&l, &lx, &lw, None, &mut ly).is_err());

    let g = CudaBackend::new(common::emu());
    let up = |v: &[f32]| g.upload(v).unwrap();
    let (gx, gamma_short, mut gy, mut gm, mut gr) =
        (up(&x), up(&[1.0; 3]), up(&vec![0.0; s.len()]), up(&stats), up(&stats));
    assert!(g.group_norm_fwd(&s, &gx, Some(&gamma_short), None, true, &mut gy, &mut gm, &mut gr).is_err());
    let (gdy, mut gdx, mut dgamma_short) = (up(&x), up(&x), up(&[0.0; 5]));
    let r = g.group_norm_bwd(&s, &gx, None, None, &gm, &gr, false, &gdy, &mut gdx, Some(&mut dgamma_short), None);
    assert!(r.is_err());
    let (glx, glw, mut gly) = (up(&lx), up(&[0.5; 20]), up(&[0.0; 14]));
    assert!(g.linear_fwd(&l, &glx, &glw, None, &mut gly).is_err());
    let mut gdw = up(&[0.0; 20]);
    let mut db_short = up(&[0.0; 4]);
    assert!(g.linear_bwd_weight(&l, &glx, &up(&[0.0; 15]), &mut gdw, Some(&mut db_short)).is_err());
}
