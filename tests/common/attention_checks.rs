//! Checks of the attention ops written once over a device: CUDA backend vs CPU backend (and fixtures).
//! STUB: to be written.

use ddpm::gpu::Gpu;

/// Every attention op on `gpu` (emulated or real) against the CPU backend.
pub fn parity(_gpu: &Gpu) {}
