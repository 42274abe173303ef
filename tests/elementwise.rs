//! The elementwise ops (fill, axpy, residual adds, channel broadcast and sums, channel
//! concatenation and its split): gradient checks of the CPU reference, fixtures from PyTorch on
//! every backend, the kernels against the CPU backend on the emulator, and length errors.

mod common;
use common::elementwise_checks;
use common::grad_checks::{check_grads, rand64};
use common::{emu, say};
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers};
use ddpm::cpu::elementwise;
use ddpm::shapes::ImageShape;
use ddpm::testing::rng_for;

// ---- gradient checks of the CPU reference, in f64 ----

const GRAD_SHAPE: ImageShape = ImageShape { batch: 2, h: 3, w: 2, c: 3 };

#[test]
fn add_scaled_backward_is_div_scalar() {
    let mut rng = rng_for("add_scaled_grad");
    let n = GRAD_SHAPE.len();
    let (a, b, r) = (rand64(&mut rng, n), rand64(&mut rng, n), rand64(&mut rng, n));
    let divisor = 1.41f32;
    let mut g = vec![f64::NAN; n];
    elementwise::div_scalar(&r, divisor, &mut g);
    let forward = |x: &[Vec<f64>]| {
        let mut y = vec![0.0; n];
        elementwise::add_scaled(&x[0], &x[1], divisor, &mut y);
        y
    };
    check_grads("add_scaled", &[a, b], forward, &r, &[g.clone(), g]);
}

#[test]
fn add_channel_bias_backward_is_identity_and_channel_sum() {
    let mut rng = rng_for("channel_bias_grad");
    let s = GRAD_SHAPE;
    let (x, v, r) = (rand64(&mut rng, s.len()), rand64(&mut rng, s.batch * s.c), rand64(&mut rng, s.len()));
    let mut dv = vec![f64::NAN; s.batch * s.c];
    elementwise::channel_sum(&s, &r, &mut dv);
    let forward = |x: &[Vec<f64>]| {
        let mut y = vec![0.0; s.len()];
        elementwise::add_channel_bias(&s, &x[0], &x[1], &mut y);
        y
    };
    check_grads("add_channel_bias", &[x, v], forward, &r, &[r.clone(), dv]);
}

#[test]
fn concat_backward_is_split() {
    let mut rng = rng_for("concat_grad");
    let (rows, c1, c2) = (5, 3, 2);
    let (a, b, r) = (rand64(&mut rng, rows * c1), rand64(&mut rng, rows * c2), rand64(&mut rng, rows * (c1 + c2)));
    let (mut da, mut db) = (vec![f64::NAN; rows * c1], vec![f64::NAN; rows * c2]);
    elementwise::split_channels(rows, c1, c2, &r, &mut da, &mut db);
    let forward = |x: &[Vec<f64>]| {
        let mut y = vec![0.0; rows * (c1 + c2)];
        elementwise::concat_channels(rows, c1, c2, &x[0], &x[1], &mut y);
        y
    };
    check_grads("concat_channels", &[a, b], forward, &r, &[da, db]);
}

// ---- PyTorch fixtures ----

fn report(backend: &str, rows: &[(String, f32, f32)]) {
    for (what, abs, rel) in rows {
        say(&format!("elementwise fixtures ({backend}): {what}: largest abs error {abs:e}, rel {rel:e}"));
    }
}

on_every_backend! {
    ops_match_pytorch => |b| report(&Backend::name(b), &elementwise_checks::ops_match_torch(b)),
}

// ---- kernels against the reference ----

#[test]
fn fill_matches_cpu() {
    elementwise_checks::fill(&emu());
}

#[test]
fn axpy_matches_cpu() {
    elementwise_checks::axpy(&emu());
}

#[test]
fn layer_kernels_match_cpu_on_the_emulator() {
    elementwise_checks::layer_parity(&emu());
}

#[test]
fn wrong_lengths_are_errors_not_panics() {
    let b = CudaBackend::new(emu());
    let x = b.upload(&[1.0; 10]).unwrap();
    let mut y = b.upload(&[1.0; 11]).unwrap();
    let err = b.axpy(2.0, &x, &mut y).unwrap_err().to_string();
    assert!(err.contains("axpy") && err.contains("11") && err.contains("10"), "{err}");

    let s = ImageShape { batch: 2, h: 3, w: 4, c: 5 };
    let x = vec![1.0; s.len()];
    let (short_v, mut y) = (vec![1.0; 9], vec![0.0; s.len()]);
    let err = CpuBackend.add_channel_bias(&s, &x, &short_v, &mut y).unwrap_err().to_string();
    assert!(err.contains("add_channel_bias") && err.contains("v has 9") && err.contains("10"), "{err}");
    let (dx, dv) = (b.upload(&x).unwrap(), b.upload(&short_v).unwrap());
    let mut dy = b.alloc(s.len()).unwrap();
    let err = b.add_channel_bias(&s, &dx, &dv, &mut dy).unwrap_err().to_string();
    assert!(err.contains("add_channel_bias") && err.contains("v has 9") && err.contains("10"), "{err}");
}
