//! The GPU suite: the emulator's semantic checks and every op's parity test, on a real CUDA
//! device. Without one it prints a single "skipped: no CUDA device" line (visible even though the
//! harness captures output) instead of passing silently.

mod common;
use common::diffusion_checks::{self, Reference};
use common::{parity, say, semantics};
use ddpm::backend::CudaBackend;
use ddpm::gpu::Gpu;

#[test]
fn gpu_suite() {
    let gpu = match Gpu::cuda(0) {
        Ok(gpu) => gpu,
        Err(e) => {
            say(&ddpm::testing::no_device_line(&e));
            return;
        }
    };
    say(&format!("GPU suite on {}", gpu.name()));
    let checks: &[(&str, fn(&Gpu))] = &[
        ("indices", semantics::indices),
        ("static_shared", semantics::static_shared),
        ("dynamic_shared", semantics::dynamic_shared),
        ("dynamic_shared_optin", semantics::dynamic_shared_optin),
        ("shuffles", semantics::shuffles),
        ("shuffle_half_mask", semantics::shuffle_half_mask),
        ("votes", semantics::votes),
        ("sync_reductions", semantics::sync_reductions),
        ("atomics", semantics::atomics),
        ("math", semantics::math),
        ("vector_types", semantics::vector_types),
        ("half_bf16", semantics::half_bf16),
        ("fill", parity::fill),
        ("axpy", parity::axpy),
        ("row_sum_sumsq", parity::row_sum_sumsq),
        ("silu", parity::silu),
        ("conv2d", common::conv_checks::parity),
        ("group norm, linear", common::norm_linear_checks::parity),
        ("resample, concat, embedding", common::resample_checks::parity),
        ("attention", common::attention_checks::parity),
        ("optimizer", common::optim_checks::parity),
        ("philox rng", diffusion_checks::rng_parity),
        ("diffusion process", diffusion_checks::process_parity),
        ("sampler: table step kernels vs CPU", common::sampler_checks::table_ops_match_cpu),
        ("sampler: CUDA graph vs plain launches", common::sampler_checks::graph_matches_plain),
        ("sampler: capture refuses host copies", common::sampler_checks::capture_refuses_host_copies),
        ("steps vs diffusers (bit for bit)", |g| {
            let b = CudaBackend::new(g.clone());
            diffusion_checks::steps_match_diffusers(&b, Reference::DiffusersIeee, 0.0);
            diffusion_checks::add_noise_matches_diffusers(&b, Reference::DiffusersIeee, 0.0);
        }),
    ];
    for (name, check) in checks {
        check(&gpu);
        say(&format!("  gpu {name}: ok"));
    }
}
