//! What the device benches share: which backends run, how a GPU iteration is timed, and the
//! quick mode of `scripts/gpu-check --dry-run`.
//!
//! - `DDPM_BENCH_BACKENDS=cpu,emulator,cuda` (default: all three) picks the backends; on a GPU
//!   machine gpu-check runs `cuda` alone, so no device time goes to CPU or emulator runs.
//! - `DDPM_BENCH_QUICK=1` shortens every group's timing (10 samples in ~0.1 s): the dry run
//!   checks that the benches run and what they print, not what they measure.
//! - On a GPU an iteration is timed by device events around criterion's whole batch of
//!   iterations, after an L2 flush (`ddpm::gpu::DeviceTimer`); the host clock and one
//!   synchronisation per launch would time the ~10 us launch and round trip instead.
#![allow(dead_code)]

use criterion::measurement::WallTime;
use criterion::{Bencher, BenchmarkGroup};
use ddpm::gpu::DeviceTimer;
use std::time::Duration;

pub enum Timer {
    /// The CPU backends and the emulator, whose launches have finished when they return.
    Host,
    Device(DeviceTimer),
}

impl Timer {
    pub fn iter(&self, bn: &mut Bencher, mut f: impl FnMut()) {
        match self {
            Timer::Host => bn.iter(f),
            Timer::Device(t) => bn.iter_custom(|iters| {
                t.time_batch(iters, &mut || {
                    f();
                    Ok(())
                })
                .expect("timing a batch of launches on the device")
            }),
        }
    }

    pub fn is_device(&self) -> bool {
        matches!(self, Timer::Device(_))
    }
}

/// Benches `op` as `name`/`label` in `g`, reporting `moved` bytes per iteration as throughput (the
/// memory-bound layer ops: benches/elementwise.rs, benches/resample.rs).
pub fn bench_bytes(
    g: &mut BenchmarkGroup<'_, WallTime>,
    timer: &Timer,
    (name, label): (&str, &str),
    moved: u64,
    op: &mut dyn FnMut(),
) {
    g.throughput(criterion::Throughput::Bytes(moved));
    g.bench_function(criterion::BenchmarkId::new(name, label), |bn| timer.iter(bn, &mut *op));
}

/// Whether `backend` (cpu, emulator or cuda) is among DDPM_BENCH_BACKENDS. An unknown name there
/// is a one-line error, not a bench run that silently measures nothing.
pub fn wants(backend: &str) -> bool {
    let Ok(list) = std::env::var("DDPM_BENCH_BACKENDS") else { return true };
    let names: Vec<&str> = list.split(',').map(str::trim).collect();
    if let Some(bad) = names.iter().find(|n| !["cpu", "emulator", "cuda"].contains(n)) {
        eprintln!("error: DDPM_BENCH_BACKENDS={list:?}: unknown backend {bad:?} (use cpu, emulator, cuda)");
        std::process::exit(2);
    }
    names.contains(&backend)
}

/// The CUDA device and its timer, when `cuda` is wanted and a device opens (else the one
/// "skipped" line; an error under DDPM_REQUIRE_GPU=1 or when a present device does not open).
pub fn cuda() -> Option<(ddpm::gpu::Gpu, Timer)> {
    if !wants("cuda") {
        return None;
    }
    let gpu = ddpm::testing::cuda_or_skip().expect("opening the CUDA device")?;
    let timer = Timer::Device(DeviceTimer::new(&gpu).expect("the L2 flush buffer"));
    Some((gpu, timer))
}

/// A group's timing: 10 samples over `measure` after `warm_up`, or 10 iterations in ~0.1 s under
/// DDPM_BENCH_QUICK=1.
pub fn configure(group: &mut BenchmarkGroup<'_, WallTime>, measure: Duration, warm_up: Duration) {
    let quick = std::env::var("DDPM_BENCH_QUICK").is_ok_and(|v| v == "1");
    if quick {
        // Flat: 10 iterations in all, where linear sampling would run 55.
        group.sample_size(10).measurement_time(Duration::from_millis(100)).warm_up_time(Duration::from_millis(20));
        group.sampling_mode(criterion::SamplingMode::Flat);
    } else {
        group.sample_size(10).measurement_time(measure).warm_up_time(warm_up);
    }
}

/// Runs a bench body `$bench(c, label, backend, timer)` on the CPU backend, the emulator and,
/// when one opens, a CUDA device (see the module comment for the choice and the timing).
#[allow(unused_macros)]
macro_rules! bench_on_every_backend {
    ($c:expr, $bench:ident) => {{
        if common::wants("cpu") {
            $bench($c, "cpu", &ddpm::backend::CpuBackend, &common::Timer::Host);
        }
        if common::wants("emulator") {
            let emu = ddpm::backend::CudaBackend::new(ddpm::gpu::Gpu::emulator().expect("the emulator is built"));
            $bench($c, "emulator", &emu, &common::Timer::Host);
        }
        if let Some((gpu, timer)) = common::cuda() {
            $bench($c, "cuda", &ddpm::backend::CudaBackend::new(gpu), &timer);
        }
    }};
}
#[allow(unused_imports)]
pub(crate) use bench_on_every_backend;
