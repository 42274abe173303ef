//! The emulator's scheduling cost: 1,024 blocks x 256 threads, each thread passing 10
//! __syncthreads (2.9 million fiber switches). Target: under 1 s on 2 cores.

use criterion::{Criterion, criterion_group, criterion_main};
use ddpm::gpu::{Gpu, KernelArgs, LaunchConfig};
use std::time::Duration;

fn barrier_bench(c: &mut Criterion) {
    let gpu = Gpu::emulator().expect("emulator built");
    let (blocks, threads) = (1024u32, 256u32);
    let out = gpu.alloc::<f32>((blocks * threads) as usize).unwrap();
    let args = KernelArgs::new().buf(&out);
    let mut group = c.benchmark_group("emulator");
    group.sample_size(10).measurement_time(Duration::from_secs(8));
    group.bench_function("1024 blocks x 256 threads x 10 syncthreads", |b| {
        b.iter(|| gpu.launch("emu_test_barrier_bench", LaunchConfig::linear(blocks, threads), &args).unwrap())
    });
    group.finish();
}

criterion_group!(benches, barrier_bench);
criterion_main!(benches);
