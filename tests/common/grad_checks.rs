//! The gradient checks' scaffolding, written once: f64 inputs, and every element of an analytic
//! gradient against central differences (the step and the rule are ddpm::testing's).

use ddpm::testing::{GRAD_CHECK_STEP, assert_gradient, central_difference, random_vec};
use rand::rngs::StdRng;

/// n values uniform in [lo, hi], as f64.
pub fn random_f64(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f64> {
    random_vec(rng, n, lo, hi).into_iter().map(f64::from).collect()
}

/// Every element of `analytic` against the central difference of `loss` in `params[i]`.
pub fn assert_grad(what: &str, analytic: &[f64], params: &[f64], loss: impl Fn(&[f64]) -> f64) {
    assert_eq!(analytic.len(), params.len());
    let mut p = params.to_vec();
    for i in 0..p.len() {
        let numeric = central_difference(p.as_mut_slice(), GRAD_CHECK_STEP, |p| &mut p[i], &loss);
        assert_gradient(format_args!("{what}[{i}]"), analytic[i], numeric);
    }
}

/// The inner product.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// n values uniform in [-1, 1], as f64.
pub fn rand64(rng: &mut StdRng, n: usize) -> Vec<f64> {
    random_vec(rng, n, -1.0, 1.0).into_iter().map(f64::from).collect()
}

/// For L = sum(r * forward(inputs)), checks `analytic[k]` = dL/d inputs[k] on every element
/// against central differences.
pub fn check_grads(
    what: &str,
    inputs: &[Vec<f64>],
    forward: impl Fn(&[Vec<f64>]) -> Vec<f64>,
    r: &[f64],
    analytic: &[Vec<f64>],
) {
    let loss = |x: &[Vec<f64>]| -> f64 { forward(x).iter().zip(r).map(|(y, r)| y * r).sum() };
    let mut x = inputs.to_vec();
    for (k, grad) in analytic.iter().enumerate() {
        assert_eq!(grad.len(), inputs[k].len(), "{what}: gradient {k} has the wrong length");
        for i in 0..inputs[k].len() {
            let numeric = central_difference(x.as_mut_slice(), GRAD_CHECK_STEP, |x| &mut x[k][i], loss);
            assert_gradient(format_args!("{what}: input {k} element {i}"), grad[i], numeric);
        }
    }
}
