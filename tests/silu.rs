//! SiLU: the CPU reference's backward against f64 finite differences, PyTorch's numbers on every
//! backend, and the kernels against the CPU backend on the emulator.

mod common;
use common::fixtures::{Fixture, f32s, worst_error};
use common::{emu, silu_checks};
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

/// SiLU forward and backward against PyTorch's.
fn silu_matches_torch<B: ddpm::backend::Backend>(b: &B) {
    let f = Fixture::load("silu.json");
    let (x, r, y, dx) = (f32s(&f.json["x"]), f32s(&f.json["r"]), f32s(&f.json["y"]), f32s(&f.json["dx"]));
    let (dx_in, dr) = (b.upload(&x).unwrap(), b.upload(&r).unwrap());
    let (mut gy, mut gdx) = (b.upload(&vec![f32::NAN; x.len()]).unwrap(), b.upload(&vec![f32::NAN; x.len()]).unwrap());
    b.silu_fwd(&dx_in, &mut gy).unwrap();
    b.silu_bwd(&dx_in, &dr, &mut gdx).unwrap();
    let (gy, gdx) = (b.download(&gy).unwrap(), b.download(&gdx).unwrap());
    let name = b.name();
    // PyTorch's CPU SiLU uses its own vectorised exp: a few ulps, relative to |x| up to ~16.
    ddpm::testing::assert_close(&format!("silu y ({name})"), &gy, &y, 1e-6, 1e-5);
    ddpm::testing::assert_close(&format!("silu dx ({name})"), &gdx, &dx, 1e-6, 1e-5);
    common::say(&format!(
        "silu vs PyTorch ({name}): largest abs error y {:e}, dx {:e}",
        worst_error(&gy, &y),
        worst_error(&gdx, &dx)
    ));
}

on_every_backend!(silu_matches_pytorch => silu_matches_torch);

#[test]
fn kernels_match_cpu_on_the_emulator() {
    silu_checks::parity(&emu());
}
