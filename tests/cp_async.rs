//! cp.async in the emulator (src/emu/async_copy.cpp, kernels/selftest/cp_async_selftest.cu): the
//! destination is poisoned (NaN) at issue and written at the wait_group that covers it, so a kernel
//! that reads a stage too early reads NaN; fibers run forward and reversed to expose cross-warp
//! races; pending copies at exit and bad addresses are errors naming the kernel and the line.

mod common;
use common::emu;
use ddpm::gpu::{FiberOrder, Gpu, KernelArgs, LaunchConfig};

const ORDERS: [FiberOrder; 2] = [FiberOrder::Forward, FiberOrder::Reverse];
const SOURCE: &str = include_str!("../kernels/selftest/cp_async_selftest.cu");

/// "cp_async_selftest.cu:LINE" of the line holding `marker` in the self-test source.
fn site(marker: &str) -> String {
    let line = SOURCE.lines().position(|l| l.contains(marker)).unwrap_or_else(|| panic!("no {marker} in the source"));
    format!("cp_async_selftest.cu:{}", line + 1)
}

fn emu_with(order: FiberOrder) -> Gpu {
    let gpu = emu();
    gpu.set_fiber_order(order);
    gpu
}

/// Runs cpa_test_pipeline on `n` floats in `tiles` tiles of 256; returns (input, output).
fn pipeline(gpu: &Gpu, n: usize, tiles: usize, bug: i32) -> (Vec<f32>, Vec<f32>) {
    let x: Vec<f32> = (0..n).map(|i| (i * 7 % 1000) as f32 + 0.5).collect();
    let input = gpu.upload(&x).unwrap();
    let out = gpu.alloc::<f32>(tiles * 256).unwrap();
    let cfg = LaunchConfig::linear(1, 64).with_shared(3 * 256 * 4);
    let args = KernelArgs::new().buf(&input).buf(&out).u32(n as u32).u32(tiles as u32).i32(bug);
    gpu.launch("cpa_test_pipeline", cfg, &args).unwrap();
    (x, gpu.download(&out).unwrap())
}

/// What the pipeline must produce: each 256-float tile of the zero-padded input, reversed.
fn pipeline_expected(x: &[f32], tiles: usize) -> Vec<f32> {
    let mut padded = x.to_vec();
    padded.resize(tiles * 256, 0.0);
    padded.chunks(256).flat_map(|c| c.iter().rev().copied()).collect()
}

#[test]
fn three_stage_pipeline_with_zero_fill_is_exact_both_orders() {
    // 5 tiles, the last partly filled: one thread's copy has src-size 8 (2 floats), the rest 0.
    let (n, tiles) = (4 * 256 + 4 * 37 + 2, 5);
    for order in ORDERS {
        let (x, got) = pipeline(&emu_with(order), n, tiles, 0);
        let want = pipeline_expected(&x, tiles);
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{order:?}"
        );
        assert!(got.contains(&0.0), "the zero-filled tail is read");
    }
}

#[test]
fn pipeline_waiting_one_group_too_few_reads_nan() {
    // Each thread reads the other warp's part of the stage. The warp that runs first reads parts
    // still in flight (NaN); the other warp may run after the first one's next wait completed
    // them, so each order catches half the reads, and together they catch every one.
    let runs: Vec<Vec<f32>> = ORDERS.iter().map(|&order| pipeline(&emu_with(order), 5 * 256, 5, 1).1).collect();
    for (order, got) in ORDERS.iter().zip(&runs) {
        let nan = got.iter().filter(|v| v.is_nan()).count();
        eprintln!("{order:?}: {nan} of {} reads are NaN", got.len());
        assert!(nan > 0, "{order:?}: a stage read while its copy is in flight is NaN");
    }
    assert!(runs[0].iter().zip(&runs[1]).all(|(f, r)| f.is_nan() || r.is_nan()), "every early read is caught");
}

#[test]
fn pipeline_without_barrier_after_wait_reads_nan() {
    for order in ORDERS {
        let (x, got) = pipeline(&emu_with(order), 5 * 256, 5, 2);
        let nan = got.iter().filter(|v| v.is_nan()).count();
        assert!(nan > 0, "{order:?}: the other warp's part is read before that warp waited");
        assert_ne!(got, pipeline_expected(&x, 5));
    }
}

#[test]
fn reads_before_wait_are_nan_and_wait_group_counts_committed_groups_only() {
    let gpu = emu();
    let x: Vec<f32> = (0..384).map(|i| i as f32).collect();
    let input = gpu.upload(&x).unwrap();
    let out = gpu.alloc::<f32>(32 * 24).unwrap();
    let cfg = LaunchConfig::linear(1, 32).with_shared(384 * 4);
    gpu.launch("cpa_test_read_before_wait", cfg, &KernelArgs::new().buf(&input).buf(&out)).unwrap();
    let got = gpu.download(&out).unwrap();
    for t in 0..32 {
        let o = &got[24 * t..24 * (t + 1)];
        let data = |base: usize| &x[base + 4 * t..base + 4 * t + 4];
        // The poison is all-ones bytes: NaN with every bit set.
        let poison = |s: &[f32]| s.iter().all(|v| v.to_bits() == u32::MAX);
        assert!(poison(&o[0..4]), "thread {t}: read before any wait");
        assert_eq!(&o[4..8], data(0), "thread {t}: after wait<1>, the older group");
        assert!(poison(&o[8..12]), "thread {t}: after wait<1>, the newest group is still pending");
        assert_eq!(&o[12..16], data(128), "thread {t}: after wait<0>");
        assert!(poison(&o[16..20]), "thread {t}: an uncommitted copy is not completed by wait_group");
        assert_eq!(&o[20..24], data(256), "thread {t}: after its commit and wait<0>");
    }
}

fn cross_warp(gpu: &Gpu, sync: i32) -> Vec<f32> {
    let x: Vec<f32> = (0..32).map(|i| i as f32 * 3.0).collect();
    let input = gpu.upload(&x).unwrap();
    let out = gpu.alloc::<f32>(32).unwrap();
    let cfg = LaunchConfig::linear(1, 64).with_shared(128);
    gpu.launch("cpa_test_cross_warp", cfg, &KernelArgs::new().buf(&input).buf(&out).i32(sync)).unwrap();
    gpu.download(&out).unwrap()
}

#[test]
fn cross_warp_read_without_barrier_passes_forward_and_fails_reversed() {
    let want: Vec<f32> = (0..32).rev().map(|i| i as f32 * 3.0).collect();
    assert_eq!(cross_warp(&emu_with(FiberOrder::Forward), 0), want, "forward, the writer warp runs first");
    let reversed = cross_warp(&emu_with(FiberOrder::Reverse), 0);
    assert!(reversed.iter().all(|v| v.is_nan()), "reversed, the reader runs first: {reversed:?}");
    for order in ORDERS {
        assert_eq!(cross_warp(&emu_with(order), 1), want, "{order:?} with __syncthreads");
    }
}

/// Runs a launch that must fail; returns the error, checking it names the kernel.
fn launch_error(gpu: &Gpu, kernel: &str, cfg: LaunchConfig, args: KernelArgs) -> String {
    let err = gpu.launch(kernel, cfg, &args).expect_err("the launch must fail").to_string();
    assert!(err.contains(kernel), "error does not name the kernel: {err}");
    err
}

#[test]
fn copies_pending_at_thread_exit_are_an_error() {
    let gpu = emu();
    let input = gpu.upload(&[1f32; 128]).unwrap();
    for commit in [1, 0] {
        let cfg = LaunchConfig::linear(2, 32).with_shared(512);
        let err = launch_error(&gpu, "cpa_test_pending_at_exit", cfg, KernelArgs::new().buf(&input).i32(commit));
        let want = format!(
            "cp.async group(s) still pending at thread exit, issued at kernels/selftest/{}",
            site("BAD_PENDING")
        );
        assert!(err.contains(&want), "commit {commit}: {err}");
    }
}

#[test]
fn bad_addresses_are_errors_naming_kernel_and_line() {
    let gpu = emu();
    let input = gpu.upload(&[2f32; 17]).unwrap();
    let out = gpu.alloc::<f32>(64).unwrap();
    let cases = [
        (0, "BAD_DST_ALIGN", "destination"),
        (1, "BAD_SRC_ALIGN", "source"),
        (2, "BAD_DST_GLOBAL", "not in the block's dynamic shared memory"),
        (3, "BAD_DST_STATIC", "not in the block's dynamic shared memory"),
        (4, "BAD_SRC_SHARED", "is in shared memory"),
        (5, "BAD_SRC_PAST_END", "not inside any live device buffer"),
        (6, "BAD_SRC_LOCAL", "not inside any live device buffer"),
        (7, "BAD_SRC_STRADDLE", "not inside any live device buffer"),
    ];
    for (which, marker, what) in cases {
        let cfg = LaunchConfig::linear(1, 32).with_shared(64);
        let args = KernelArgs::new().buf(&input).buf(&out).u32(17).i32(which);
        let err = launch_error(&gpu, "cpa_test_bad_address", cfg, args);
        assert!(err.contains(&site(marker)) && err.contains(what), "case {which} ({marker}): {err}");
        if marker.ends_with("ALIGN") {
            assert!(err.contains("not aligned to the copy size 16"), "{err}");
        }
    }
    // The same kernel with good addresses runs.
    let cfg = LaunchConfig::linear(1, 32).with_shared(64);
    gpu.launch("cpa_test_bad_address", cfg, &KernelArgs::new().buf(&input).buf(&out).u32(17).i32(-1)).unwrap();
}

#[test]
fn default_fiber_order_follows_ddpm_emu_reverse() {
    // Without a set_fiber_order call, DDPM_EMU_REVERSE=1 in the environment reverses the order
    // (scripts can run the whole suite that way); otherwise fibers run forward.
    let reversed = std::env::var_os("DDPM_EMU_REVERSE").is_some_and(|v| v == "1");
    let got = cross_warp(&emu(), 0);
    if reversed {
        assert!(got.iter().all(|v| v.is_nan()), "{got:?}");
    } else {
        assert_eq!(got, (0..32).rev().map(|i| i as f32 * 3.0).collect::<Vec<_>>());
    }
}
