//! The resample ops (residual adds, channel broadcast and sums, nearest 2x upsampling, channel
//! concatenation) and the timestep embedding: gradient checks of the CPU reference, fixtures from
//! PyTorch / diffusers on the CPU backend and the emulated kernels, and kernel parity.

mod common;
use common::{emu, resample_checks, say};
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers};
use ddpm::cpu::resample;
use ddpm::shapes::ImageShape;
use ddpm::testing::{GRAD_CHECK_STEP, assert_gradient, central_difference, random_vec, rng_for};

// ---- gradient checks of the CPU reference, in f64 ----

fn rand64(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f64> {
    random_vec(rng, n, -1.0, 1.0).into_iter().map(f64::from).collect()
}

/// For L = sum(r * forward(inputs)), checks `analytic[k]` = dL/d inputs[k] on every element
/// against central differences.
fn check_grads(
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

const GRAD_SHAPE: ImageShape = ImageShape { batch: 2, h: 3, w: 2, c: 3 };

#[test]
fn add_scaled_backward_is_div_scalar() {
    let mut rng = rng_for("add_scaled_grad");
    let n = GRAD_SHAPE.len();
    let (a, b, r) = (rand64(&mut rng, n), rand64(&mut rng, n), rand64(&mut rng, n));
    let divisor = 1.41f32;
    let mut g = vec![f64::NAN; n];
    resample::div_scalar(&r, divisor, &mut g);
    let forward = |x: &[Vec<f64>]| {
        let mut y = vec![0.0; n];
        resample::add_scaled(&x[0], &x[1], divisor, &mut y);
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
    resample::channel_sum(&s, &r, &mut dv);
    let forward = |x: &[Vec<f64>]| {
        let mut y = vec![0.0; s.len()];
        resample::add_channel_bias(&s, &x[0], &x[1], &mut y);
        y
    };
    check_grads("add_channel_bias", &[x, v], forward, &r, &[r.clone(), dv]);
}

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

#[test]
fn concat_backward_is_split() {
    let mut rng = rng_for("concat_grad");
    let (rows, c1, c2) = (5, 3, 2);
    let (a, b, r) = (rand64(&mut rng, rows * c1), rand64(&mut rng, rows * c2), rand64(&mut rng, rows * (c1 + c2)));
    let (mut da, mut db) = (vec![f64::NAN; rows * c1], vec![f64::NAN; rows * c2]);
    resample::split_channels(rows, c1, c2, &r, &mut da, &mut db);
    let forward = |x: &[Vec<f64>]| {
        let mut y = vec![0.0; rows * (c1 + c2)];
        resample::concat_channels(rows, c1, c2, &x[0], &x[1], &mut y);
        y
    };
    check_grads("concat_channels", &[a, b], forward, &r, &[da, db]);
}

// ---- PyTorch / diffusers fixtures ----

fn report(backend: &str, rows: &[(String, f32, f32)]) {
    for (what, abs, rel) in rows {
        say(&format!("resample fixtures ({backend}): {what}: largest abs error {abs:e}, rel {rel:e}"));
    }
}

fn embedding_matches_diffusers<B: Layers>(b: &B) {
    let r = resample_checks::embedding_matches_diffusers(b);
    say(&format!(
        "timestep embedding vs diffusers on CPU torch ({}): largest abs error {:e} ({:.2} x 2^-23 max(|argument|, 1)); \
         bit for bit with correctly rounded exp/sin/cos",
        b.name(),
        r.max_abs,
        r.max_arg_ulps
    ));
}

on_every_backend! {
    shape_ops_match_pytorch => |b| report(&Backend::name(b), &resample_checks::shape_ops_match_torch(b)),
    timestep_embedding_matches_diffusers => embedding_matches_diffusers,
}

// ---- kernels against the reference ----

#[test]
fn kernels_match_cpu_on_the_emulator() {
    resample_checks::parity(&emu());
}

#[test]
fn wrong_lengths_are_errors_not_panics() {
    let s = ImageShape { batch: 2, h: 3, w: 4, c: 5 };
    let x = vec![1.0; s.len()];
    let (short_v, mut y) = (vec![1.0; 9], vec![0.0; s.len()]);
    let err = CpuBackend.add_channel_bias(&s, &x, &short_v, &mut y).unwrap_err().to_string();
    assert!(err.contains("add_channel_bias") && err.contains("v has 9") && err.contains("10"), "{err}");

    let b = CudaBackend::new(emu());
    let (dx, dv) = (b.upload(&x).unwrap(), b.upload(&short_v).unwrap());
    let mut dy = b.alloc(s.len()).unwrap();
    let err = b.add_channel_bias(&s, &dx, &dv, &mut dy).unwrap_err().to_string();
    assert!(err.contains("add_channel_bias") && err.contains("v has 9") && err.contains("10"), "{err}");
    let mut small = b.alloc(s.len()).unwrap();
    let err = b.upsample_nearest2x_fwd(&s, &dx, &mut small).unwrap_err().to_string();
    assert!(err.contains("upsample_nearest2x_fwd") && err.contains(&format!("{}", 4 * s.len())), "{err}");
    let mut e = b.alloc(7).unwrap();
    let err = b.timestep_embedding(&dv, 4, false, 1.0, &mut e).unwrap_err().to_string();
    assert!(err.contains("timestep_embedding") && err.contains("36"), "{err}");
}
