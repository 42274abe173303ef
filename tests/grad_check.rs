//! Backward ops of the CPU reference against central finite differences computed in f64.

use ddpm::cpu::silu;
use ddpm::testing::{random_vec, rng_for};

#[test]
fn silu_backward_matches_finite_differences() {
    let mut rng = rng_for("silu_grad");
    let x = random_vec(&mut rng, 257, -6.0, 6.0);
    let dy = random_vec(&mut rng, 257, -1.0, 1.0);
    let mut dx = vec![f32::NAN; x.len()];
    silu::silu_bwd(&x, &dy, &mut dx);
    // L = sum(dy * silu(x)); dL/dx_i = dy_i * (silu(x_i + h) - silu(x_i - h)) / 2h, in f64.
    let h = 1e-5f64;
    for i in 0..x.len() {
        let xi = x[i] as f64;
        let numeric = dy[i] as f64 * (silu::silu(xi + h) - silu::silu(xi - h)) / (2.0 * h);
        let err = (dx[i] as f64 - numeric).abs();
        assert!(err <= 1e-6 + 1e-5 * numeric.abs(), "x={xi}: analytic {} numeric {numeric}", dx[i]);
    }
}
