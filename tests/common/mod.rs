//! Shared test bodies. Each check takes a device, so the same expectations run on the emulator
//! (tests/emulator.rs, tests/ops_parity.rs) and on a real GPU (tests/gpu.rs).
#![allow(dead_code)]

pub mod diffusion_checks;
pub mod fixtures;
pub mod parity;
pub mod semantics;

/// Prints a line the test harness does not capture (a skipped GPU suite must say so visibly).
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
