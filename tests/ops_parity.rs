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
