//! Nearest 2x upsampling and its backward: a gradient check of the CPU reference, the PyTorch
//! fixture on every backend, the kernels against the CPU backend on the emulator, and length
//! errors.

mod common;
use common::grad_checks::{check_grads, rand64};
use common::{emu, resample_checks, say};
use ddpm::backend::{Backend, CudaBackend, Layers};
use ddpm::cpu::resample;
use ddpm::shapes::ImageShape;
use ddpm::testing::rng_for;

#[test]
fn upsample_backward_matches_finite_differences() {
    let mut rng = rng_for("upsample_grad");
    let s = ImageShape { batch: 2, h: 2, w: 3, c: 3 };
    let (x, r) = (rand64(&mut rng, s.len()), rand64(&mut rng, 4 * s.len()));
    let mut dx = vec![f64::NAN; s.len()];
    resample::upsample_nearest2x_bwd(&s, &r, &mut dx);
    let forward = |x: &[Vec<f64>]| {
        let mut y = vec![0.0; 4 * s.len()];
        resample::upsample_nearest2x_fwd(&s, &x[0], &mut y);
        y
    };
    check_grads("upsample_nearest2x", &[x], forward, &r, &[dx]);
}

fn report(backend: &str, rows: &[(String, f32, f32)]) {
    for (what, abs, rel) in rows {
        say(&format!("resample fixtures ({backend}): {what}: largest abs error {abs:e}, rel {rel:e}"));
    }
}

on_every_backend! {
    upsample_matches_pytorch => |b| report(&Backend::name(b), &resample_checks::upsample_matches_torch(b)),
}

#[test]
fn kernels_match_cpu_on_the_emulator() {
    resample_checks::parity(&emu());
}

#[test]
fn the_bf16_upsampling_is_the_f32_upsampling_rounded_on_the_emulator() {
    resample_checks::bf16_output(&emu());
}

#[test]
fn wrong_lengths_are_errors_not_panics() {
    let s = ImageShape { batch: 2, h: 3, w: 4, c: 5 };
    let b = CudaBackend::new(emu());
    let dx = b.upload(&vec![1.0; s.len()]).unwrap();
    let mut small = b.alloc(s.len()).unwrap();
    let err = b.upsample_nearest2x_fwd(&s, &dx, &mut small).unwrap_err().to_string();
    assert!(err.contains("upsample_nearest2x_fwd") && err.contains(&format!("{}", 4 * s.len())), "{err}");
}
