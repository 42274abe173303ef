//! Every op on each backend available here: the CPU reference, the CUDA kernels on the emulator,
//! and on a real GPU when one is present (device events around each batch of iterations:
//! benches/common). Throughput is reported in bytes moved, so backends compare directly. The
//! size is in each bench's name ("ops/axpy/cuda-64M"): 1M elements (4 MB buffers) on the CPU and
//! the emulator, 64M (256 MB buffers, four times an H200's L2) on a GPU, where smaller buffers
//! would be timed out of the L2 and not say what HBM does.

mod common;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ddpm::backend::{Backend, Optimizer, SamplerOps, TrainOps};
use ddpm::diffusion::{
    DdimScheduler, DdpmScheduler, Noise, NoiseSchedule, PhiloxStream, SchedulerConfig, Step, StepTable,
};
use ddpm::testing::{random_vec, rng_for};
use std::time::Duration;

/// The buffer length: 1M elements on the host, 64M (256 MB) on a GPU.
fn elements(timer: &common::Timer) -> usize {
    if timer.is_device() { 1 << 26 } else { 1 << 20 }
}

fn bench_backend<B: TrainOps>(c: &mut Criterion, label: &str, b: &B, timer: &common::Timer) {
    let n = elements(timer);
    let label = &format!("{label}-{}M", n >> 20);
    let mut rng = rng_for("bench");
    let x = b.upload(&random_vec(&mut rng, n, -2.0, 2.0)).unwrap();
    let dy = b.upload(&random_vec(&mut rng, n, -1.0, 1.0)).unwrap();
    let mut y = b.alloc(n).unwrap();
    let mut group = c.benchmark_group("ops");
    common::configure(&mut group, Duration::from_secs(2), Duration::from_millis(300));
    let io = Io { label, b, timer, x: &x, dy: &dy, bytes: (n * 4) as u64 };
    bench_elementwise(&mut group, &io, &mut y);
    bench_diffusion(&mut group, &io, &mut y);
    bench_solver(&mut group, &io, &mut y);
    bench_optim(&mut group, &io, &mut y);
    bench_train_step(&mut group, &io, &mut y);
    group.finish();
}

/// What every op bench reads: the backend, its timer, the inputs and their size in bytes.
struct Io<'a, B: Backend> {
    label: &'a str,
    b: &'a B,
    timer: &'a common::Timer,
    x: &'a B::Buf,
    dy: &'a B::Buf,
    bytes: u64,
}

type Group<'a> = BenchmarkGroup<'a, WallTime>;

/// fill, axpy and SiLU (src/{cpu,cuda,fast}/{elementwise,silu}.rs).
fn bench_elementwise<B: Backend>(group: &mut Group, io: &Io<B>, y: &mut B::Buf) {
    let Io { label, b, timer, x, dy, bytes } = *io;
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(BenchmarkId::new("fill", label), |bn| {
        timer.iter(bn, || {
            b.fill(y, 1.5).unwrap();
        })
    });
    group.throughput(Throughput::Bytes(3 * bytes));
    group.bench_function(BenchmarkId::new("axpy", label), |bn| {
        timer.iter(bn, || {
            b.axpy(0.5, x, y).unwrap();
        })
    });
    group.throughput(Throughput::Bytes(2 * bytes));
    group.bench_function(BenchmarkId::new("silu_fwd", label), |bn| {
        timer.iter(bn, || {
            b.silu_fwd(x, y).unwrap();
        })
    });
    group.throughput(Throughput::Bytes(3 * bytes));
    group.bench_function(BenchmarkId::new("silu_bwd", label), |bn| {
        timer.iter(bn, || {
            b.silu_bwd(x, dy, y).unwrap();
        })
    });
}

/// The diffusion ops (src/{cpu,cuda}/diffusion.rs): noise, noising, the loss, the sampler steps.
fn bench_diffusion<B: SamplerOps>(group: &mut Group, io: &Io<B>, y: &mut B::Buf) {
    let Io { label, b, timer, x, dy, bytes } = *io;
    // On the same elements (1M: a batch of 16 images of 256 x 256 x 4).
    let stream = PhiloxStream { seed: 1, offset: 0 };
    let schedule = NoiseSchedule::new(&SchedulerConfig::default().beta_schedule, 1000).unwrap();
    let tables = b.schedule_tables(&schedule).unwrap();
    let t = b.upload_u32(&(0..16).map(|i| i * 61).collect::<Vec<u32>>()).unwrap();
    let mut loss = b.alloc(1).unwrap();
    let mut ddpm = DdpmScheduler::new(SchedulerConfig::default()).unwrap();
    ddpm.set_timesteps(50).unwrap();
    let ddpm_step = ddpm.step_params(ddpm.timesteps[5]).unwrap();
    let mut ddim = DdimScheduler::new(SchedulerConfig::default()).unwrap();
    ddim.set_timesteps(50).unwrap();
    let ddim_step = ddim.step_params(ddim.timesteps[5], 0.0, false).unwrap();
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(BenchmarkId::new("fill_normal", label), |bn| {
        timer.iter(bn, || {
            b.fill_normal(y, stream).unwrap();
        })
    });
    group.throughput(Throughput::Bytes(2 * bytes));
    group.bench_function(BenchmarkId::new("q_sample", label), |bn| {
        timer.iter(bn, || {
            b.q_sample(x, &t, &tables, Noise::Philox(stream), y).unwrap();
        })
    });
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(BenchmarkId::new("mse_loss", label), |bn| {
        timer.iter(bn, || {
            b.mse_loss(x, Noise::Philox(stream), &mut loss).unwrap();
        })
    });
    group.throughput(Throughput::Bytes(2 * bytes));
    group.bench_function(BenchmarkId::new("mse_loss_bwd", label), |bn| {
        timer.iter(bn, || {
            b.mse_loss_bwd(x, Noise::Philox(stream), 1.0, y).unwrap();
        })
    });
    group.throughput(Throughput::Bytes(3 * bytes));
    group.bench_function(BenchmarkId::new("ddpm_step", label), |bn| {
        timer.iter(bn, || {
            b.ddpm_step(&ddpm_step, x, dy, Noise::Philox(stream), y).unwrap();
        })
    });
    group.bench_function(BenchmarkId::new("ddim_step", label), |bn| {
        timer.iter(bn, || {
            b.ddim_step(&ddim_step, x, dy, Noise::Philox(stream), y).unwrap();
        })
    });
    // The sampler's table-driven step (constants read from a device table at a device-side step
    // index), in place; the index stays at the noisy step 0, so every iteration does the same work.
    let table = b.upload_u32(&StepTable::new([(ddpm.timesteps[5] as f32, Step::Ddpm(ddpm_step))]).words).unwrap();
    let step = b.upload_u32(&[0]).unwrap();
    group.bench_function(BenchmarkId::new("sampler_step", label), |bn| {
        timer.iter(bn, || {
            b.sampler_step(&table, &step, y, dy, 1, 1).unwrap();
        })
    });
}

/// The fast samplers' row kernels (src/diffusion/solver/), in place like the sampler's step.
fn bench_solver<B: SamplerOps>(group: &mut Group, io: &Io<B>, y: &mut B::Buf) {
    let Io { label, b, timer, x, dy, bytes } = *io;
    let step = b.upload_u32(&[0]).unwrap();
    // A linear solver's row (src/diffusion/solver/): it reads x, the model output, the saved sample
    // and three ring slots, and writes the ring and x: 8 floats per element. A noiseless
    // second-order row, like most of a DPM-Solver++ or UniPC run.
    let n = (bytes / 4) as usize;
    let row = ddpm::diffusion::solver::SolverRow {
        input_scale: 1.0,
        p: 1.2,
        q: -0.7,
        next: [0.9, 0.0, 0.2, -0.1, 0.0, 0.0],
        save: None,
        noise_std: None,
        clip: None,
        slots: ddpm::diffusion::solver::Slots::ring_of_four(0),
    };
    let solver_table = b.upload_u32(&StepTable::new([(500.0, Step::Solver(row))]).words).unwrap();
    let mut state = b.upload(&vec![0.0; 5 * n]).unwrap();
    group.throughput(Throughput::Bytes(8 * bytes));
    group.bench_function(BenchmarkId::new("solver_step", label), |bn| {
        timer.iter(bn, || {
            b.solver_step(&solver_table, &step, y, dy, &mut state, None, 1, 1).unwrap();
        })
    });
    // The model input of a sigma-space solver's row (scale_model_input): reads x, writes the input.
    group.throughput(Throughput::Bytes(2 * bytes));
    group.bench_function(BenchmarkId::new("solver_input", label), |bn| {
        timer.iter(bn, || {
            b.solver_input(&solver_table, &step, x, y).unwrap();
        })
    });
}

/// The optimizer (src/{cpu,cuda,fast}/optim.rs) over the same parameters.
fn bench_optim<B: Optimizer>(group: &mut Group, io: &Io<B>, y: &mut B::Buf) {
    let Io { label, b, timer, x, dy, bytes } = *io;
    let n = (bytes / 4) as usize;
    let (mut m, mut v, mut ema) =
        (b.upload(&vec![0.0; n]).unwrap(), b.upload(&vec![0.0; n]).unwrap(), b.upload(&vec![0.0; n]).unwrap());
    let adamw = ddpm::math::adamw::AdamWStep::new(1e-4, 0.95, 0.999, 1e-8, 1e-6, 10, 1.0);
    group.throughput(Throughput::Bytes(7 * bytes));
    group.bench_function(BenchmarkId::new("adamw_step", label), |bn| {
        timer.iter(bn, || {
            b.adamw_step(y, dy, &mut m, &mut v, &adamw).unwrap();
        })
    });
    group.throughput(Throughput::Bytes(3 * bytes));
    group.bench_function(BenchmarkId::new("ema_update", label), |bn| {
        timer.iter(bn, || {
            b.ema_update(&mut ema, x, 0.999).unwrap();
        })
    });
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(BenchmarkId::new("global_norm", label), |bn| {
        timer.iter(bn, || {
            b.global_norm(std::slice::from_ref(x)).unwrap();
        })
    });
}

/// The graphed training step's row-driven ops (src/{backend,cuda}/train_step.rs): the noise draw,
/// the on-device norm and clip status, and AdamW reading its constants from the row.
fn bench_train_step<B: TrainOps>(group: &mut Group, io: &Io<B>, y: &mut B::Buf) {
    use ddpm::train::row::StepRow;
    let Io { label, b, timer, x, dy, bytes } = *io;
    let n = (bytes / 4) as usize;
    let adamw = ddpm::math::adamw::AdamWStep::new(1e-4, 0.95, 0.999, 1e-8, 1e-6, 10, 1.0);
    let row = b.upload_u32(&StepRow { adamw, ema_decay: 0.999, seed: 3, offset: 20, slot: 0 }.words()).unwrap();
    let mut status = b.upload_u32(&[1, 0, 0, 0]).unwrap();
    let (mut m, mut v) = (b.upload(&vec![0.0; n]).unwrap(), b.upload(&vec![0.0; n]).unwrap());
    let (mut t, mut tf, loss) = (b.upload_u32(&vec![0; 64]).unwrap(), b.alloc(64).unwrap(), b.upload(&[0.5]).unwrap());
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(BenchmarkId::new("train_draw", label), |bn| {
        timer.iter(bn, || {
            b.train_draw(&row, 0, 1000, &mut t, &mut tf, y).unwrap();
        })
    });
    group.bench_function(BenchmarkId::new("clip_status", label), |bn| {
        timer.iter(bn, || {
            b.clip_status(std::slice::from_ref(x), &loss, Some(1.0), true, &mut status).unwrap();
        })
    });
    group.throughput(Throughput::Bytes(7 * bytes));
    group.bench_function(BenchmarkId::new("adamw_step_row", label), |bn| {
        timer.iter(bn, || {
            b.adamw_step_row(y, dy, &mut m, &mut v, None, &row, &status).unwrap();
        })
    });
    // With the EMA in the same pass (the graphed step's update): 2 more buffers' traffic, one
    // launch; `ema_update` alone moves 3.
    let mut ema = b.upload(&vec![0.0; n]).unwrap();
    group.throughput(Throughput::Bytes(9 * bytes));
    group.bench_function(BenchmarkId::new("adamw_step_row_ema", label), |bn| {
        timer.iter(bn, || {
            b.adamw_step_row(y, dy, &mut m, &mut v, Some(&mut ema), &row, &status).unwrap();
        })
    });
}

/// AdamW on a weight kept as a bf16 copy (src/backend/cuda_weights.rs: the kernel also stores the
/// rounded weight, 30 bytes moved per element instead of 28) beside the same step on a weight
/// without one, on one bf16 backend.
fn bench_kept_adamw(c: &mut Criterion, label: &str, gpu: ddpm::gpu::Gpu, timer: &common::Timer) {
    use ddpm::backend::{CudaBackend, Layers};
    let b = CudaBackend::with_precision(gpu, ddpm::fast::bf16::Precision::Bf16).keeping_weights(true);
    let n = elements(timer);
    let label = &format!("{label}-{}M", n >> 20);
    let mut rng = rng_for("bench_kept");
    let mut up = |lo, hi| b.upload(&random_vec(&mut rng, n, lo, hi)).unwrap();
    let (mut plain, mut kept, g, mut m, mut v) =
        (up(-1.0, 1.0), up(-1.0, 1.0), up(-0.1, 0.1), up(-0.01, 0.01), up(0.0, 0.01));
    b.keep_product_weights(&[&kept]).unwrap();
    let adamw = ddpm::math::adamw::AdamWStep::new(1e-4, 0.95, 0.999, 1e-8, 1e-6, 10, 1.0);
    let mut group = c.benchmark_group("ops");
    common::configure(&mut group, Duration::from_secs(2), Duration::from_millis(300));
    for (name, p, moved) in [("adamw_step_bf16", &mut plain, 28 * n), ("adamw_step_kept_copy", &mut kept, 30 * n)] {
        group.throughput(Throughput::Bytes(moved as u64));
        group.bench_function(BenchmarkId::new(name, label), |bn| {
            timer.iter(bn, || b.adamw_step(p, &g, &mut m, &mut v, &adamw).unwrap())
        });
    }
    group.finish();
}

/// The graphed step's clip norm and update over a model's parameters (cifar10's 35.7M elements in
/// 328 tensors on a GPU, the tiny model's on the emulator): one launch per tensor, and one for
/// all after `prepare_clip_status` / `prepare_adamw_steps` (sum_squares_many_f32,
/// adamw_step_many_row_f32).
fn bench_step_update(c: &mut Criterion, label: &str, gpu: ddpm::gpu::Gpu, timer: &common::Timer) {
    use ddpm::backend::CudaBackend;
    let config = if timer.is_device() { ddpm::model::UNetConfig::cifar10() } else { ddpm::model::UNetConfig::tiny() };
    let table = ddpm::model::weights::ParamTable::new(&config);
    let (each, one) = (CudaBackend::new(gpu.clone()), CudaBackend::new(gpu));
    let mut rng = rng_for("bench_clip");
    let grads: Vec<_> =
        table.specs.iter().map(|s| each.upload(&random_vec(&mut rng, s.numel(), -0.1, 0.1)).unwrap()).collect();
    one.prepare_clip_status(&grads).unwrap();
    let loss = each.upload(&[0.5]).unwrap();
    let mut status = each.upload_u32(&[1, 0, 0, 0]).unwrap();
    let label = &format!("{label}-{}x{}", grads.len(), table.numel());
    let mut group = c.benchmark_group("ops");
    common::configure(&mut group, Duration::from_secs(2), Duration::from_millis(300));
    group.throughput(Throughput::Bytes(4 * table.numel() as u64));
    for (name, b) in [("clip_status_per_tensor", &each), ("clip_status_one_launch", &one)] {
        group.bench_function(BenchmarkId::new(name, label), |bn| {
            timer.iter(bn, || b.clip_status(&grads, &loss, Some(1.0), false, &mut status).unwrap())
        });
    }
    let copy = |b: &CudaBackend, v: &[ddpm::gpu::Buffer<f32>]| -> Vec<_> {
        v.iter().map(|t| b.upload(&vec![0.01; t.len()]).unwrap()).collect()
    };
    let (mut params, mut m, mut v, mut ema) =
        (copy(&each, &grads), copy(&each, &grads), copy(&each, &grads), copy(&each, &grads));
    one.prepare_adamw_steps(&params, &grads, &m, &v, &ema).unwrap();
    let adamw = ddpm::math::adamw::AdamWStep::new(1e-4, 0.95, 0.999, 1e-8, 1e-6, 10, 1.0);
    let words = ddpm::train::row::StepRow { adamw, ema_decay: 0.999, seed: 3, offset: 20, slot: 0 }.words();
    let row = each.upload_u32(&words).unwrap();
    // p, m, v and the EMA read and written, g read.
    group.throughput(Throughput::Bytes(36 * table.numel() as u64));
    for (name, b) in [("adamw_steps_per_tensor", &each), ("adamw_steps_one_launch", &one)] {
        group.bench_function(BenchmarkId::new(name, label), |bn| {
            timer.iter(bn, || b.adamw_steps_row(&mut params, &grads, &mut m, &mut v, &mut ema, &row, &status).unwrap())
        });
    }
    group.finish();
}

fn ops(c: &mut Criterion) {
    common::bench_on_every_backend!(c, bench_backend);
    if common::wants("emulator") {
        let emu = ddpm::gpu::Gpu::emulator().expect("the emulator is built");
        bench_kept_adamw(c, "emulator", emu.clone(), &common::Timer::Host);
        bench_step_update(c, "emulator", emu, &common::Timer::Host);
    }
    if let Some((gpu, timer)) = common::cuda() {
        bench_kept_adamw(c, "cuda", gpu.clone(), &timer);
        bench_step_update(c, "cuda", gpu, &timer);
    }
}

criterion_group!(benches, ops);
criterion_main!(benches);
