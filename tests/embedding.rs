//! The timestep embedding: diffusers' numbers on every backend, the kernel against the CPU
//! backend on the emulator, and length errors.

mod common;
use common::{embedding_checks, emu, say};
use ddpm::backend::{Backend, CudaBackend, Layers};

fn embedding_matches_diffusers<B: Layers>(b: &B) {
    let r = embedding_checks::embedding_matches_diffusers(b);
    say(&format!(
        "timestep embedding vs diffusers on CPU torch ({}): largest abs error {:e} ({:.2} x 2^-23 max(|argument|, 1)); \
         bit for bit with correctly rounded exp/sin/cos",
        b.name(),
        r.max_abs,
        r.max_arg_ulps
    ));
}

on_every_backend! {
    timestep_embedding_matches_diffusers => embedding_matches_diffusers,
}

#[test]
fn kernel_matches_cpu_on_the_emulator() {
    embedding_checks::parity(&emu());
}

#[test]
fn wrong_lengths_are_errors_not_panics() {
    let b = CudaBackend::new(emu());
    let t = b.upload(&[1.0; 9]).unwrap();
    let mut e = b.alloc(7).unwrap();
    let err = b.timestep_embedding(&t, 4, false, 1.0, &mut e).unwrap_err().to_string();
    assert!(err.contains("timestep_embedding") && err.contains("36"), "{err}");
}
