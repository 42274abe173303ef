//! The emulator's CUDA semantics, one test per feature, and the misuse it must report (as an
//! error naming the kernel, within a second) instead of hanging or corrupting memory.

mod common;
use common::semantics;
use ddpm::gpu::{Gpu, KernelArgs, LaunchConfig};
use std::time::{Duration, Instant};

use common::emu;

#[test]
fn thread_block_grid_indices_in_3d() {
    semantics::indices(&emu());
}
#[test]
fn static_shared_memory_and_syncthreads() {
    semantics::static_shared(&emu());
}
#[test]
fn dynamic_shared_memory() {
    semantics::dynamic_shared(&emu());
}
#[test]
fn dynamic_shared_memory_limit_and_optin() {
    semantics::dynamic_shared_optin(&emu());
}
#[test]
fn warp_shuffles_all_variants_and_widths() {
    semantics::shuffles(&emu());
}
#[test]
fn warp_shuffle_with_half_warp_masks() {
    semantics::shuffle_half_mask(&emu());
}
#[test]
fn warp_votes_ballot_any_all() {
    semantics::votes(&emu());
}
#[test]
fn syncthreads_count_and_or() {
    semantics::sync_reductions(&emu());
}
#[test]
fn atomics_global_and_shared() {
    semantics::atomics(&emu());
}
#[test]
fn math_functions_and_intrinsics() {
    semantics::math(&emu());
}
#[test]
fn vector_types_float2_float4_int4() {
    semantics::vector_types(&emu());
}
#[test]
fn bf16_and_half_from_cuda_headers() {
    semantics::half_bf16(&emu());
}

/// Runs a launch that must fail; returns the error, checking it names the kernel and came fast.
fn launch_error(gpu: &Gpu, kernel: &str, cfg: LaunchConfig, args: KernelArgs) -> String {
    let start = Instant::now();
    let err = gpu.launch(kernel, cfg, &args).expect_err("the launch must fail").to_string();
    assert!(start.elapsed() < Duration::from_secs(1), "{kernel}: error took {:?}", start.elapsed());
    assert!(err.contains(kernel), "error does not name the kernel: {err}");
    err
}

#[test]
fn divergent_syncthreads_is_an_error() {
    let gpu = emu();
    let out = gpu.alloc::<f32>(4 * 64).unwrap();
    let err = launch_error(&gpu, "emu_test_divergent_sync", LaunchConfig::linear(4, 64), KernelArgs::new().buf(&out));
    assert!(err.contains("divergent __syncthreads") && err.contains("emu_selftest.cu"), "{err}");
}

#[test]
fn threads_at_different_barriers_is_an_error() {
    let gpu = emu();
    let out = gpu.alloc::<f32>(64).unwrap();
    let err = launch_error(&gpu, "emu_test_split_barriers", LaunchConfig::linear(1, 64), KernelArgs::new().buf(&out));
    assert!(err.contains("different barriers"), "{err}");
}

#[test]
fn shuffle_with_exited_lanes_is_an_error() {
    let gpu = emu();
    let out = gpu.alloc::<f32>(32).unwrap();
    let err =
        launch_error(&gpu, "emu_test_shuffle_after_exit", LaunchConfig::linear(1, 32), KernelArgs::new().buf(&out));
    assert!(err.contains("__shfl_xor_sync"), "{err}");
}

#[test]
fn too_many_threads_per_block_is_an_error() {
    let gpu = emu();
    let out = gpu.alloc::<f32>(2048).unwrap();
    let args = KernelArgs::new().buf(&out).u32(2048);
    let err = launch_error(&gpu, "emu_test_iota", LaunchConfig::linear(1, 2048), args);
    assert!(err.contains("2048 threads per block") && err.contains("1024"), "{err}");
}

#[test]
fn pointer_outside_any_buffer_is_an_error() {
    let gpu = emu();
    let out = gpu.alloc::<f32>(100).unwrap();
    // Just past the end of a live buffer, and a host address the runtime never handed out.
    let past_end = out.device_ptr() + 100 * 4 + 4096;
    let err = launch_error(
        &gpu,
        "emu_test_iota",
        LaunchConfig::linear(1, 128),
        KernelArgs::new().raw_pointer(past_end).u32(100),
    );
    assert!(err.contains("not inside any live buffer"), "{err}");
    let local = [0f32; 4];
    let args = KernelArgs::new().raw_pointer(local.as_ptr() as u64).u32(4);
    launch_error(&gpu, "emu_test_iota", LaunchConfig::linear(1, 32), args);
}

#[test]
fn freed_buffer_pointer_is_an_error() {
    let gpu = emu();
    let stale = gpu.alloc::<f32>(64).unwrap();
    let address = stale.device_ptr();
    drop(stale);
    let err = launch_error(
        &gpu,
        "emu_test_iota",
        LaunchConfig::linear(1, 64),
        KernelArgs::new().raw_pointer(address).u32(64),
    );
    assert!(err.contains("not inside any live buffer"), "{err}");
}

#[test]
fn wrong_argument_count_or_type_is_an_error() {
    let gpu = emu();
    let out = gpu.alloc::<f32>(64).unwrap();
    let err = launch_error(&gpu, "emu_test_iota", LaunchConfig::linear(1, 64), KernelArgs::new().buf(&out));
    assert!(err.contains("1 arguments") && err.contains("takes 2"), "{err}");
    let err = launch_error(&gpu, "emu_test_iota", LaunchConfig::linear(1, 64), KernelArgs::new().buf(&out).u64(64));
    assert!(err.contains("argument 1"), "{err}");
}

#[test]
fn unknown_kernel_is_an_error() {
    let gpu = emu();
    let err = gpu.launch("no_such_kernel", LaunchConfig::linear(1, 32), &KernelArgs::new()).unwrap_err().to_string();
    assert!(err.contains("no_such_kernel"), "{err}");
}

#[test]
fn outputs_start_poisoned_and_iota_writes_every_element() {
    let gpu = emu();
    let n = 1000;
    let out = gpu.alloc::<f32>(n).unwrap();
    assert!(gpu.download(&out).unwrap().iter().all(|v| v.is_nan()), "fresh emulator buffers are NaN");
    gpu.launch("emu_test_iota", LaunchConfig::for_elements(n, 128), &KernelArgs::new().buf(&out).u32(n as u32))
        .unwrap();
    let want: Vec<f32> = (0..n).map(|i| i as f32).collect();
    assert_eq!(gpu.download(&out).unwrap(), want);
}

#[test]
fn barrier_bench_kernel_computes_the_right_values() {
    let gpu = emu();
    let (blocks, threads) = (3usize, 256usize);
    let out = gpu.upload(&vec![f32::NAN; blocks * threads]).unwrap();
    gpu.launch(
        "emu_test_barrier_bench",
        LaunchConfig::linear(blocks as u32, threads as u32),
        &KernelArgs::new().buf(&out),
    )
    .unwrap();
    // acc_t(r+1) = acc_t(r) + acc_{t+1}(r) + (t+1): simulate it on the host.
    let mut acc = vec![0f32; threads];
    for _ in 0..10 {
        let tile: Vec<f32> = (0..threads).map(|t| acc[t] + t as f32).collect();
        for t in 0..threads {
            acc[t] += tile[(t + 1) % threads];
        }
    }
    let want: Vec<f32> = (0..blocks).flat_map(|_| acc.iter().copied()).collect();
    assert_eq!(gpu.download(&out).unwrap(), want);
}
