//! Shared test bodies. Each check takes a device, so the same expectations run on the emulator
//! (tests/emulator.rs, tests/ops_parity.rs) and on a real GPU (tests/gpu.rs).
#![allow(dead_code)]

pub mod attention_checks;
pub mod conv_checks;
pub mod diffusion_checks;
pub mod elementwise_cases;
pub mod fixtures;
pub mod norm_linear_checks;
pub mod optim_checks;
pub mod parity;
pub mod resample_checks;
pub mod sampler_checks;
pub mod semantics;

/// Prints a line the test harness does not capture (a skipped GPU suite must say so visibly).
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The CUDA emulator (built with the kernels whenever the toolchain is: scripts/test installs it).
pub fn emu() -> ddpm::gpu::Gpu {
    ddpm::gpu::Gpu::emulator().expect("the emulator is built with the kernels (scripts/test installs the toolchain)")
}
