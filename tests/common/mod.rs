//! Shared test bodies. Each check takes a device, so the same expectations run on the emulator
//! (tests/emulator.rs and the per-op test files, tests/<op>.rs) and on a real GPU (tests/gpu.rs).
#![allow(dead_code)]

pub mod attention_bf16_bwd_checks;
pub mod attention_bf16_bwd_model;
pub mod attention_bf16_checks;
pub mod attention_bf16_out_checks;
pub mod attention_checks;
pub mod bf16_checks;
pub mod conv_bf16_checks;
pub mod conv_bwd_bf16_checks;
pub mod conv_checks;
pub mod cuda_bf16_checks;
pub mod diffusion_checks;
pub mod dist_checks;
pub mod elementwise_cases;
pub mod elementwise_checks;
pub mod embedding_checks;
pub mod fixtures;
pub mod grad_checks;
pub mod group_norm_bf16_checks;
pub mod group_norm_checks;
pub mod kept_weights_checks;
pub mod linear_bf16_checks;
pub mod linear_checks;
pub mod optim_checks;
pub mod parity;
pub mod resample_checks;
pub mod sample_quality;
pub mod sampler_checks;
pub mod semantics;
pub mod silu_checks;
pub mod solver_model;
pub mod stream_checks;
pub mod tensor_core_checks;
pub mod tolerance;
pub mod train_graph_checks;
pub mod unet_checks;
pub mod winograd_bounds;

/// Prints a line the test harness does not capture (a skipped GPU suite must say so visibly).
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The emulator's mma architecture and fiber order are process-wide: tensor-core tests that set
/// them hold this lock, which survives a failed test (one failure should not fail the others).
pub fn emulator_settings() -> std::sync::MutexGuard<'static, ()> {
    static SETTINGS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SETTINGS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `check` on the emulator with a block's fibers forward and then reversed (a race between
/// warps shows in one of the two); returns both results.
pub fn both_orders<T>(check: &mut dyn FnMut(&ddpm::gpu::Gpu, &str) -> T) -> [T; 2] {
    use ddpm::gpu::FiberOrder;
    let gpu = emu();
    [(FiberOrder::Forward, "forward"), (FiberOrder::Reverse, "reversed")].map(|(order, name)| {
        gpu.set_fiber_order(order);
        check(&gpu, name)
    })
}

/// Runs `check` on the emulator under each mma architecture's arithmetic (sm_90, then sm_80),
/// both fiber orders each, holding the settings lock; leaves sm_90 (the default) set.
pub fn on_both_archs(check: &mut dyn FnMut(&ddpm::gpu::Gpu, ddpm::gpu::mma_model::MmaArch, &str)) {
    use ddpm::gpu::mma_model::{MmaArch, set_emulator_mma_arch};
    let _guard = emulator_settings();
    for arch in [MmaArch::Sm90, MmaArch::Sm80] {
        set_emulator_mma_arch(arch).unwrap();
        both_orders(&mut |gpu, order| check(gpu, arch, order));
    }
    set_emulator_mma_arch(MmaArch::Sm90).unwrap();
}

/// The CUDA emulator (built with the kernels whenever the toolchain is: scripts/test installs it).
pub fn emu() -> ddpm::gpu::Gpu {
    ddpm::gpu::Gpu::emulator().expect("the emulator is built with the kernels (scripts/test installs the toolchain)")
}

/// One `#[test]` per backend for a check generic over the backend: `mod $name { cpu, fast_cpu,
/// emulator, cuda }` (cuda prints the one "skipped: no CUDA device" line where there is none).
/// Every check runs on the reference, on the fast CPU path that `--device cpu` ships, on the
/// emulated kernels and on a GPU, as separate tests, so one backend's failure hides nothing.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident => $check:expr),* $(,)?) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn cpu() {
                ($check)(&ddpm::backend::CpuBackend);
            }
            #[test]
            fn fast_cpu() {
                ($check)(&ddpm::backend::FastCpuBackend);
            }
            #[test]
            fn emulator() {
                ($check)(&ddpm::backend::CudaBackend::new($crate::common::emu()));
            }
            #[test]
            fn cuda() {
                if let Some(gpu) = ddpm::testing::cuda_or_skip().unwrap() {
                    ($check)(&ddpm::backend::CudaBackend::new(gpu));
                }
            }
        }
    )*};
}
