//! Backward ops of the CPU reference against central finite differences computed in f64.

use ddpm::cpu::silu;
use ddpm::testing::{assert_gradient, central_difference, random_vec, rng_for};

#[test]
fn silu_backward_matches_finite_differences() {
    let mut rng = rng_for("silu_grad");
    let x = random_vec(&mut rng, 257, -6.0, 6.0);
    let dy = random_vec(&mut rng, 257, -1.0, 1.0);
    let mut dx = vec![f32::NAN; x.len()];
    silu::silu_bwd(&x, &dy, &mut dx);
    // L = sum(dy * silu(x)); dL/dx_i = dy_i * (silu(x_i + h) - silu(x_i - h)) / 2h, in f64.
    for i in 0..x.len() {
        let mut xi = x[i] as f64;
        let numeric = dy[i] as f64 * central_difference(&mut xi, 1e-5, |x| x, |&x| silu::silu(x));
        assert_gradient(format_args!("x={}", x[i]), dx[i] as f64, numeric);
    }
}
