//! The emulator's tensor-core primitives (kernels/tensor_core.cuh, src/emu/warp_matrix.cpp): the
//! shared checks of tests/common/tensor_core_checks.rs (tests/gpu.rs runs them on a GPU), the
//! architecture switch, and the misuse the emulator must refuse naming the kernel.

mod common;
use common::emu;
use common::tensor_core_checks::{ldmatrix_feeds_mma, ldmatrix_layouts, mma_matches_model};
use ddpm::gpu::mma_model::{MmaArch, set_emulator_mma_arch};
use ddpm::gpu::{FiberOrder, Gpu, KernelArgs, LaunchConfig};
use std::sync::Mutex;

/// The emulator's mma architecture is process-wide: tests that set it run one at a time.
static ARCH: Mutex<()> = Mutex::new(());

#[test]
fn mma_fragments_and_arithmetic_match_the_model_on_both_architectures() {
    let _guard = ARCH.lock().unwrap();
    let gpu = emu();
    for (arch, seed) in [(MmaArch::Sm90, 0), (MmaArch::Sm90, 1), (MmaArch::Sm80, 2), (MmaArch::Sm80, 3)] {
        set_emulator_mma_arch(arch).unwrap();
        for order in [FiberOrder::Forward, FiberOrder::Reverse] {
            gpu.set_fiber_order(order);
            assert_eq!(mma_matches_model(&gpu, arch, 40, seed), 40 * 128);
        }
    }
    set_emulator_mma_arch(MmaArch::Sm90).unwrap();
}

#[test]
fn the_architectures_round_differently() {
    let _guard = ARCH.lock().unwrap();
    let gpu = emu();
    // Tiles with wide exponent spreads: sm_80's k8 halves and 24 bits must differ from sm_90
    // somewhere, or the switch is not reaching the collectives.
    set_emulator_mma_arch(MmaArch::Sm80).unwrap();
    let result = std::panic::catch_unwind(|| mma_matches_model(&emu(), MmaArch::Sm90, 40, 1));
    set_emulator_mma_arch(MmaArch::Sm90).unwrap();
    assert!(result.is_err(), "sm_80 arithmetic matched the sm_90 model on every element");
    mma_matches_model(&gpu, MmaArch::Sm90, 4, 1);
}

#[test]
fn ldmatrix_all_forms_follow_the_ptx_layouts_both_fiber_orders() {
    let gpu = emu();
    for order in [FiberOrder::Forward, FiberOrder::Reverse] {
        gpu.set_fiber_order(order);
        ldmatrix_layouts(&gpu);
    }
}

#[test]
fn ldmatrix_feeds_mma_exactly_both_fiber_orders() {
    let gpu = emu();
    for order in [FiberOrder::Forward, FiberOrder::Reverse] {
        gpu.set_fiber_order(order);
        ldmatrix_feeds_mma(&gpu);
    }
}

fn launch_error(gpu: &Gpu, kernel: &str, cfg: LaunchConfig, args: KernelArgs) -> String {
    let err = gpu.launch(kernel, cfg, &args).expect_err("the launch must fail").to_string();
    assert!(err.contains(kernel) && err.contains("mma_selftest.cu"), "names the kernel and the line: {err}");
    err
}

#[test]
fn mma_by_a_partial_or_divergent_warp_is_an_error() {
    let gpu = emu();
    let out = gpu.alloc::<f32>(64).unwrap();
    let err =
        launch_error(&gpu, "emu_test_mma_misuse", LaunchConfig::linear(1, 48), KernelArgs::new().buf(&out).u32(0));
    assert!(err.contains("needs a full warp") && err.contains("16 threads"), "{err}");
    let err =
        launch_error(&gpu, "emu_test_mma_misuse", LaunchConfig::linear(1, 32), KernelArgs::new().buf(&out).u32(1));
    assert!(err.contains("mma.sync") && err.contains("exited"), "{err}");
}

#[test]
fn ldmatrix_from_a_misaligned_or_global_address_is_an_error() {
    let gpu = emu();
    let m = gpu.upload(&[half::bf16::ONE; 64]).unwrap();
    let out = gpu.alloc::<u32>(32).unwrap();
    let cfg = LaunchConfig::linear(1, 32).with_shared(256);
    let err = launch_error(&gpu, "emu_test_ldmatrix_misuse", cfg, KernelArgs::new().buf(&m).buf(&out).u32(0));
    assert!(err.contains("not 16-byte aligned"), "{err}");
    let err = launch_error(&gpu, "emu_test_ldmatrix_misuse", cfg, KernelArgs::new().buf(&m).buf(&out).u32(1));
    assert!(err.contains("not in the block's dynamic shared memory"), "{err}");
}
