//! Every op on each backend available here: the CPU reference, the CUDA kernels on the emulator,
//! and on a real GPU when one is present (timed with device events via a synchronize per
//! iteration). Throughput is reported in bytes moved, so backends compare directly.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ddpm::backend::{Optimizer, SamplerOps};
use ddpm::diffusion::{DdimScheduler, DdpmScheduler, Noise, NoiseSchedule, PhiloxStream, SchedulerConfig, Step, StepTable};
use ddpm::testing::{random_vec, rng_for};
use std::time::Duration;

const N: usize = 1 << 20;
const ROWS: usize = 256;

fn bench_backend<B: Optimizer + SamplerOps>(c: &mut Criterion, label: &str, b: &B, sync: &dyn Fn()) {
    let mut rng = rng_for("bench");
    let x = b.upload(&random_vec(&mut rng, N, -2.0, 2.0)).unwrap();
    let dy = b.upload(&random_vec(&mut rng, N, -1.0, 1.0)).unwrap();
    let mut y = b.alloc(N).unwrap();
    let (mut s, mut ss) = (b.alloc(ROWS).unwrap(), b.alloc(ROWS).unwrap());
    let mut group = c.benchmark_group("ops");
    group.sample_size(10).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(300));
    let bytes = (N * 4) as u64;
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(BenchmarkId::new("fill", label), |bn| bn.iter(|| { b.fill(&mut y, 1.5).unwrap(); sync() }));
    group.throughput(Throughput::Bytes(3 * bytes));
    group.bench_function(BenchmarkId::new("axpy", label), |bn| bn.iter(|| { b.axpy(0.5, &x, &mut y).unwrap(); sync() }));
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(BenchmarkId::new("row_sum_sumsq", label), |bn| {
        bn.iter(|| { b.row_sum_sumsq(&x, ROWS, N / ROWS, &mut s, &mut ss).unwrap(); sync() })
    });
    group.throughput(Throughput::Bytes(2 * bytes));
    group.bench_function(BenchmarkId::new("silu_fwd", label), |bn| bn.iter(|| { b.silu_fwd(&x, &mut y).unwrap(); sync() }));
    group.throughput(Throughput::Bytes(3 * bytes));
    group.bench_function(BenchmarkId::new("silu_bwd", label), |bn| bn.iter(|| { b.silu_bwd(&x, &dy, &mut y).unwrap(); sync() }));

    // The diffusion kernels on the same 1M elements (a batch of 16 images of 256 x 256 x 4).
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
    group.bench_function(BenchmarkId::new("fill_normal", label), |bn| bn.iter(|| { b.fill_normal(&mut y, stream).unwrap(); sync() }));
    group.throughput(Throughput::Bytes(2 * bytes));
    group.bench_function(BenchmarkId::new("q_sample", label), |bn| {
        bn.iter(|| { b.q_sample(&x, &t, &tables, Noise::Philox(stream), &mut y).unwrap(); sync() })
    });
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(BenchmarkId::new("mse_loss", label), |bn| {
        bn.iter(|| { b.mse_loss(&x, Noise::Philox(stream), &mut loss).unwrap(); sync() })
    });
    group.throughput(Throughput::Bytes(2 * bytes));
    group.bench_function(BenchmarkId::new("mse_loss_bwd", label), |bn| {
        bn.iter(|| { b.mse_loss_bwd(&x, Noise::Philox(stream), 1.0, &mut y).unwrap(); sync() })
    });
    group.throughput(Throughput::Bytes(3 * bytes));
    group.bench_function(BenchmarkId::new("ddpm_step", label), |bn| {
        bn.iter(|| { b.ddpm_step(&ddpm_step, &x, &dy, Noise::Philox(stream), &mut y).unwrap(); sync() })
    });
    group.bench_function(BenchmarkId::new("ddim_step", label), |bn| {
        bn.iter(|| { b.ddim_step(&ddim_step, &x, &dy, Noise::Philox(stream), &mut y).unwrap(); sync() })
    });
    // The sampler's table-driven step (constants read from a device table at a device-side step
    // index), in place; the index stays at the noisy step 0, so every iteration does the same work.
    let table = b.upload_u32(&StepTable::new([(ddpm.timesteps[5], Step::Ddpm(ddpm_step))]).words).unwrap();
    let step = b.upload_u32(&[0]).unwrap();
    group.bench_function(BenchmarkId::new("sampler_step", label), |bn| {
        bn.iter(|| { b.sampler_step(&table, &step, &mut y, &dy, 1, 1).unwrap(); sync() })
    });

    // The optimizer over the same 1M parameters.
    let (mut m, mut v, mut ema) = (b.upload(&vec![0.0; N]).unwrap(), b.upload(&vec![0.0; N]).unwrap(), b.upload(&vec![0.0; N]).unwrap());
    let adamw = ddpm::cpu::optim::AdamWStep::new(1e-4, 0.95, 0.999, 1e-8, 1e-6, 10, 1.0);
    group.throughput(Throughput::Bytes(7 * bytes));
    group.bench_function(BenchmarkId::new("adamw_step", label), |bn| {
        bn.iter(|| { b.adamw_step(&mut y, &dy, &mut m, &mut v, &adamw).unwrap(); sync() })
    });
    group.throughput(Throughput::Bytes(3 * bytes));
    group.bench_function(BenchmarkId::new("ema_update", label), |bn| bn.iter(|| { b.ema_update(&mut ema, &x, 0.999).unwrap(); sync() }));
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(BenchmarkId::new("global_norm", label), |bn| {
        bn.iter(|| b.global_norm(std::slice::from_ref(&x)).unwrap())
    });
    group.finish();
}

fn ops(c: &mut Criterion) {
    ddpm::bench_on_every_backend!(c, bench_backend);
}

criterion_group!(benches, ops);
criterion_main!(benches);
