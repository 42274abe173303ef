//! Error bounds shared by tests/fast_conv.rs and tests/fast_winograd.rs: the direct sum's
//! tolerance and the factors by which the Winograd transforms amplify it, derived from their
//! matrices. tests/simd_levels.rs reaches it through tests/common/mod.rs; the two above include
//! it by path (`#[path]`), without the rest of tests/common.
#![allow(dead_code)]

use ddpm::shapes::Conv2dShape;
use ddpm::testing::{assert_close, random_vec, rng_for};

/// Inputs, weights and output gradients are uniform in [-1, 1), so each product term has rms
/// 1/3. Recursive f32 summation of K such terms has a typical error of ~0.4 eps (1/3) K (the
/// partial sums grow like sqrt(j)); the fast and reference sums differ by about 0.6 of that in
/// rms, so 4 eps (1/3) K is about 7 standard deviations: a real bug (a dropped or doubled tap,
/// magnitude ~1/3 or more) is far above it, rounding never reaches it. rtol adds a few ulps for
/// the bias added after the sum.
pub fn atol_for_sum(k: usize) -> f32 {
    4.0 * f32::EPSILON * (1.0 / 3.0) * k as f32
}
pub const RTOL: f32 = 4.0 * f32::EPSILON;

/// Y = A^T [(G g G^T) .* (B^T d B)] A: each output mixes the 6x6 (or 4x4) GEMM results with
/// weights A_ir A_jc, and GEMM result (r, c) sums cin products of transformed values with rms
/// (1/3) P_r P_c, P_r = |row r of G| |row r of B^T| (entries of x and w independent, variance 1/3).
/// With independent rounding errors of ~0.4 eps per unit of (rms term x K), as for the direct sum
/// (see `atol_for_sum`), output (i, j) has rms error 0.4 eps (1/3) cin gamma_i gamma_j, gamma_i =
/// |A_i. * P|. So the bound is atol_for_sum(cin) * max_i gamma_i^2 (10x the typical error, as the
/// direct one): gamma^2 = 5 for F(2x2); 94.3 for F(4x4), whose A has 8s and B^T 4s and 5s.
pub fn winograd_gamma2(at: &[&[f64]], g: &[[f64; 3]], bt: &[&[f64]]) -> f64 {
    let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    let p: Vec<f64> = g.iter().zip(bt).map(|(g, b)| norm(g) * norm(b)).collect();
    at.iter().map(|a| a.iter().zip(&p).map(|(a, p)| (a * p) * (a * p)).sum::<f64>()).fold(0.0, f64::max)
}

/// The weight gradient dW = G^T [sum over tiles (A dY A^T) .* (B^T d B)] G: sum (a, b) adds T
/// (tiles) products with rms (1/3) Q_a Q_b, Q_a = |column a of A^T| |row a of B^T|, and dW (r, c)
/// mixes them with weights G_ar G_bc, so its rms error is 0.4 eps (1/3) T gamma_r gamma_c with
/// gamma_r = |G_.r .* Q|: the bound is atol_for_sum(T) * max_r gamma_r^2.
pub fn winograd_grad_gamma2(at: &[&[f64]], g: &[[f64; 3]], bt: &[&[f64]]) -> f64 {
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|a| a * a).sum::<f64>().sqrt();
    let q: Vec<f64> =
        (0..bt.len()).map(|a| norm(&mut at.iter().map(|r| r[a])) * norm(&mut bt[a].iter().copied())).collect();
    (0..3).map(|r| g.iter().zip(&q).map(|(g, q)| (g[r] * q) * (g[r] * q)).sum::<f64>()).fold(0.0, f64::max)
}

/// A transform's A^T, G and B^T, each a list of rows.
pub struct Matrices {
    pub at: Vec<Vec<f64>>,
    pub g: Vec<[f64; 3]>,
    pub bt: Vec<Vec<f64>>,
}

impl Matrices {
    fn rows<const N: usize>(rows: &[[f64; N]]) -> Vec<Vec<f64>> {
        rows.iter().map(|r| r.to_vec()).collect()
    }
    fn views(&self) -> (Vec<&[f64]>, Vec<&[f64]>) {
        (self.at.iter().map(|r| &r[..]).collect(), self.bt.iter().map(|r| &r[..]).collect())
    }
    /// The forward's (and input gradient's) factor: [`winograd_gamma2`].
    pub fn gamma2(&self) -> f64 {
        let (at, bt) = self.views();
        winograd_gamma2(&at, &self.g, &bt)
    }
    /// The weight gradient's factor: [`winograd_grad_gamma2`].
    pub fn grad_gamma2(&self) -> f64 {
        let (at, bt) = self.views();
        winograd_grad_gamma2(&at, &self.g, &bt)
    }
}

/// F(2x2)'s A^T, G and B^T.
pub fn matrices_f2() -> Matrices {
    Matrices {
        at: Matrices::rows(&[[1., 1., 1., 0.], [0., 1., -1., -1.]]),
        g: vec![[1., 0., 0.], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0., 0., 1.]],
        bt: Matrices::rows(&[[1., 0., -1., 0.], [0., 1., 1., 0.], [0., -1., 1., 0.], [0., 1., 0., -1.]]),
    }
}

pub fn gamma2_f2() -> f64 {
    matrices_f2().gamma2()
}

/// F(4x4)'s A^T, G and B^T.
pub fn matrices_f4() -> Matrices {
    let (s, t, u) = (1. / 6., 1. / 12., 1. / 24.);
    Matrices {
        at: Matrices::rows(&[
            [1., 1., 1., 1., 1., 0.],
            [0., 1., -1., 2., -2., 0.],
            [0., 1., 1., 4., 4., 0.],
            [0., 1., -1., 8., -8., 1.],
        ]),
        g: vec![[0.25, 0., 0.], [-s, -s, -s], [-s, s, -s], [u, t, s], [u, -t, s], [0., 0., 1.]],
        bt: Matrices::rows(&[
            [4., 0., -5., 0., 1., 0.],
            [0., -4., -4., 1., 1., 0.],
            [0., 4., -4., -1., 1., 0.],
            [0., -2., -1., 2., 1., 0.],
            [0., 2., -1., -2., 1., 0.],
            [0., 4., 0., -5., 0., 1.],
        ]),
    }
}

pub fn gamma2_f4() -> f64 {
    matrices_f4().gamma2()
}

/// A conv's inputs, weights, bias and output gradient.
pub struct Data {
    pub x: Vec<f32>,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub dy: Vec<f32>,
}

/// Uniform in [-1, 1): what the bounds above assume.
pub fn data(name: &str, s: &Conv2dShape) -> Data {
    let mut rng = rng_for(name);
    Data {
        x: random_vec(&mut rng, s.x_len(), -1.0, 1.0),
        w: random_vec(&mut rng, s.w_len(), -1.0, 1.0),
        b: random_vec(&mut rng, s.out_c, -1.0, 1.0),
        dy: random_vec(&mut rng, s.y_len(), -1.0, 1.0),
    }
}

/// Every element within atol + RTOL |want|; prints the worst error in units of that bound.
pub fn assert_within(what: &str, got: &[f32], want: &[f32], atol: f32) {
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs() / (atol + RTOL * b.abs())).fold(0f32, f32::max);
    eprintln!("{what}: worst error {worst:.3} of the bound");
    assert_close(what, got, want, atol, RTOL);
}
