//! 2-D convolution: the CPU reference's gradients against finite differences, both backends
//! against PyTorch/diffusers (tests/fixtures/make_conv_fixtures.py), the kernels on the emulator
//! against the CPU backend, and length errors.

mod common;
use common::{conv_checks, emu, say};
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers};
use ddpm::cpu::conv;
use ddpm::shapes::{Conv2dShape, Padding};
use ddpm::testing::{GRAD_CHECK_STEP, assert_gradient, central_difference, random_vec, rng_for};

fn f64s(v: Vec<f32>) -> Vec<f64> {
    v.into_iter().map(f64::from).collect()
}

/// L = sum(r * (conv(x, w) + b)), in f64.
fn loss(s: &Conv2dShape, x: &[f64], w: &[f64], b: &[f64], r: &[f64]) -> f64 {
    let mut y = vec![0.0; s.y_len()];
    conv::conv2d_fwd(s, x, w, Some(b), &mut y);
    y.iter().zip(r).map(|(y, r)| y * r).sum()
}

/// Central differences of L in every element of `param` (selected by `which`) against `analytic`.
fn check_grad(s: &Conv2dShape, name: &str, which: usize, params: &[Vec<f64>; 3], r: &[f64], analytic: &[f64]) {
    let mut p = params.clone();
    for i in 0..analytic.len() {
        let numeric =
            central_difference(&mut p, GRAD_CHECK_STEP, |p| &mut p[which][i], |p| loss(s, &p[0], &p[1], &p[2], r));
        assert_gradient(format_args!("{s:?} d{name}[{i}]"), analytic[i], numeric);
    }
}

#[test]
fn backward_matches_finite_differences() {
    let mut rng = rng_for("conv_grad");
    let odd = Conv2dShape {
        batch: 2,
        in_h: 6,
        in_w: 5,
        in_c: 2,
        out_c: 3,
        kernel: 2,
        stride: 3,
        pad: Padding { top: 1, bottom: 0, left: 0, right: 2 },
    };
    for s in [
        Conv2dShape::conv3x3(2, 4, 3, 2, 3),
        Conv2dShape::conv1x1(2, 3, 2, 3, 2),
        Conv2dShape::downsample(1, 5, 4, 2, 3, 1),
        Conv2dShape::downsample(2, 5, 6, 2, 2, 0),
        odd,
    ] {
        let x = f64s(random_vec(&mut rng, s.x_len(), -1.0, 1.0));
        let w = f64s(random_vec(&mut rng, s.w_len(), -1.0, 1.0));
        let b = f64s(random_vec(&mut rng, s.out_c, -1.0, 1.0));
        let r = f64s(random_vec(&mut rng, s.y_len(), -1.0, 1.0));
        let mut dx = vec![f64::NAN; s.x_len()];
        conv::conv2d_bwd_input(&s, &r, &w, &mut dx);
        let (mut dw, mut db) = (vec![f64::NAN; s.w_len()], vec![f64::NAN; s.out_c]);
        conv::conv2d_bwd_weight(&s, &x, &r, &mut dw, Some(&mut db));
        let params = [x, w, b];
        check_grad(&s, "x", 0, &params, &r, &dx);
        check_grad(&s, "w", 1, &params, &r, &dw);
        check_grad(&s, "b", 2, &params, &r, &db);
    }
}

/// Every PyTorch conv fixture (forward and both gradients) on a backend.
fn matches_pytorch<B: Layers>(b: &B) {
    for w in conv_checks::fixtures_match(b) {
        say(&format!("{}: {}: largest abs error {:.3e}, rel {:.3e}", b.name(), w.what, w.abs, w.rel));
    }
}

on_every_backend!(conv_matches_pytorch => matches_pytorch);

#[test]
fn emulated_kernels_match_cpu() {
    conv_checks::parity(&emu());
}

#[test]
fn wrong_lengths_and_shapes_are_errors_not_panics() {
    let s = Conv2dShape::conv3x3(1, 4, 4, 2, 3);
    let b = CudaBackend::new(emu());
    let (x, w) = (b.upload(&vec![1.0; s.x_len()]).unwrap(), b.upload(&vec![1.0; s.w_len()]).unwrap());
    let mut y = b.upload(&vec![0.0; s.y_len() + 1]).unwrap();
    let err = b.conv2d_fwd(&s, &x, &w, None, &mut y).unwrap_err().to_string();
    assert!(err.contains("conv2d_fwd") && err.contains('y'), "{err}");
    let mut dw = vec![0.0; s.w_len()];
    let mut db = vec![0.0; s.out_c + 2];
    let err = CpuBackend.conv2d_bwd_weight(&s, &vec![1.0; s.x_len()], &vec![1.0; s.y_len()], &mut dw, Some(&mut db));
    assert!(err.unwrap_err().to_string().contains("db"));
    let too_small = Conv2dShape::conv1x1(1, 2, 2, 1, 1);
    let big_kernel = Conv2dShape { kernel: 3, ..too_small };
    let mut y = b.alloc(1).unwrap();
    let x = b.upload(&[1.0; 4]).unwrap();
    let w = b.upload(&[1.0; 9]).unwrap();
    assert!(b.conv2d_fwd(&big_kernel, &x, &w, None, &mut y).is_err());
}

#[test]
fn the_narrow_weight_gradient_refuses_more_than_8_output_channels() {
    let gpu = emu();
    let s = Conv2dShape::conv3x3(1, 4, 4, 8, 9);
    let (x, dy) = (gpu.upload(&vec![1.0f32; s.x_len()]).unwrap(), gpu.upload(&vec![1.0f32; s.y_len()]).unwrap());
    let mut dw = gpu.alloc::<f32>(s.w_len()).unwrap();
    let err = ddpm::cuda::conv::conv2d_bwd_weight_f32_path(&s, &x, &dy, &mut dw, None, true).unwrap_err().to_string();
    assert!(err.contains("at most 8 output channels, not 9") && !err.contains('\n'), "{err}");
}
