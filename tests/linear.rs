//! Linear: the CPU reference's backward against f64 finite differences, PyTorch's numbers on every
//! backend, the kernels on the emulator against the CPU reference, and length errors.

mod common;
use common::grad_checks::{assert_grad, dot, random_f64};
use common::linear_checks;
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers};
use ddpm::cpu::linear;
use ddpm::shapes::LinearShape;
use ddpm::testing::rng_for;

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
    linear_matches_pytorch => |b| {
        linear_checks::linear_matches_pytorch(b).say(&format!("linear vs PyTorch ({}):", Backend::name(b)))
    },
}

#[test]
fn linear_kernels_match_cpu_reference_on_emulator() {
    linear_checks::kernels_match(&common::emu()).say("linear vs CPU reference (emulator):");
}

#[test]
fn wrong_buffer_lengths_are_errors_not_panics() {
    let l = LinearShape { rows: 3, in_features: 4, out_features: 5 };
    let (lx, lw, mut ly) = (vec![0.5; 12], vec![0.5; 19], vec![0.0; 15]);
    assert!(CpuBackend.linear_fwd(&l, &lx, &lw, None, &mut ly).is_err());

    let g = CudaBackend::new(common::emu());
    let up = |v: &[f32]| g.upload(v).unwrap();
    let (glx, glw, mut gly) = (up(&lx), up(&[0.5; 20]), up(&[0.0; 14]));
    assert!(g.linear_fwd(&l, &glx, &glw, None, &mut gly).is_err());
    let mut gdw = up(&[0.0; 20]);
    let mut db_short = up(&[0.0; 4]);
    assert!(g.linear_bwd_weight(&l, &glx, &up(&[0.0; 15]), &mut gdw, Some(&mut db_short)).is_err());
}
