//! Every op on each backend available here: the CPU reference, the CUDA kernels on the emulator,
//! and on a real GPU when one is present (timed with device events via a synchronize per
//! iteration). Throughput is reported in bytes moved, so backends compare directly.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ddpm::backend::{Backend, CpuBackend, CudaBackend};
use ddpm::gpu::Gpu;
use ddpm::testing::{random_vec, rng_for};
use std::time::Duration;

const N: usize = 1 << 20;
const ROWS: usize = 256;

fn bench_backend<B: Backend>(c: &mut Criterion, label: &str, b: &B, sync: &dyn Fn()) {
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
    group.finish();
}

fn ops(c: &mut Criterion) {
    bench_backend(c, "cpu", &CpuBackend, &|| ());
    let emu = CudaBackend::new(Gpu::emulator().expect("emulator built"));
    bench_backend(c, "emulator", &emu, &|| ());
    match Gpu::cuda(0) {
        Ok(gpu) => {
            let g = gpu.clone();
            bench_backend(c, "cuda", &CudaBackend::new(gpu), &move || g.synchronize().unwrap());
        }
        Err(e) => eprintln!("{}", ddpm::testing::no_device_line(&e)),
    }
}

criterion_group!(benches, ops);
criterion_main!(benches);
