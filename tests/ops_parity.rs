//! CUDA backend on the emulator vs the CPU backend, for every op.

mod common;
use common::parity;

use common::emu;

#[test]
fn fill_matches_cpu() {
    parity::fill(&emu());
}
#[test]
fn axpy_matches_cpu() {
    parity::axpy(&emu());
}
#[test]
fn row_sum_sumsq_matches_cpu() {
    parity::row_sum_sumsq(&emu());
}
#[test]
fn silu_fwd_bwd_match_cpu() {
    parity::silu(&emu());
}

#[test]
fn size_mismatches_are_errors_not_panics() {
    use ddpm::backend::{Backend, CudaBackend};
    let b = CudaBackend::new(emu());
    let x = b.upload(&[1.0; 10]).unwrap();
    let mut y = b.upload(&[1.0; 11]).unwrap();
    let err = b.axpy(2.0, &x, &mut y).unwrap_err().to_string();
    assert!(err.contains("axpy") && err.contains("11") && err.contains("10"), "{err}");
    let (mut s, mut ss) = (b.alloc(3).unwrap(), b.alloc(3).unwrap());
    let err = b.row_sum_sumsq(&x, 3, 4, &mut s, &mut ss).unwrap_err().to_string();
    assert!(err.contains("3 x 4"), "{err}");
}

/// SiLU forward and backward against PyTorch's.
fn silu_matches_torch<B: ddpm::backend::Backend>(b: &B) {
    use common::fixtures::{Fixture, f32s, worst_error};
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
