//! The diffusion kernels on the emulator against the CPU backend.

mod common;
use common::diffusion_checks;
use ddpm::gpu::Gpu;

#[test]
fn philox_timesteps_and_normals_match_cpu() {
    diffusion_checks::rng_parity(&Gpu::emulator().unwrap());
}

#[test]
fn noising_loss_and_sampler_steps_match_cpu() {
    diffusion_checks::process_parity(&Gpu::emulator().unwrap());
}
