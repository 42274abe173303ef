//! The sampler on the emulator: its table-driven step kernels against the CPU reference, and its
//! captured-graph path (identical to plain launches, nothing allocated and nothing copied to or
//! from the host inside the loop). The GPU suite runs the same checks on a real device (a CUDA
//! graph there).

mod common;
use common::sampler_checks;
use ddpm::gpu::Gpu;

#[test]
fn graph_replay_matches_plain_launches_on_the_emulator() {
    sampler_checks::graph_matches_plain(&Gpu::emulator().unwrap());
}

#[test]
fn capture_refuses_host_copies_on_the_emulator() {
    sampler_checks::capture_refuses_host_copies(&Gpu::emulator().unwrap());
}

#[test]
fn table_step_kernels_match_the_cpu_reference_on_the_emulator() {
    sampler_checks::table_ops_match_cpu(&Gpu::emulator().unwrap());
}

#[test]
fn solver_step_kernels_match_the_cpu_reference_on_the_emulator() {
    sampler_checks::solver_ops_match_cpu(&Gpu::emulator().unwrap());
}

#[test]
fn graph_replay_matches_plain_launches_in_bf16_on_the_emulator() {
    sampler_checks::graph_matches_plain_in(&Gpu::emulator().unwrap(), ddpm::fast::bf16::Precision::Bf16);
}
