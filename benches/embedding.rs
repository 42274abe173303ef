//! Criterion bench of the timestep embedding on the CPU backend, the emulator and a GPU when
//! present: a batch of 64 timesteps at 128 dimensions; throughput is in bytes moved.

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ddpm::backend::Layers;
use std::time::Duration;

const EMBED_BATCH: usize = 64;
const EMBED_DIM: usize = 128;

fn bench_backend<B: Layers>(c: &mut Criterion, label: &str, b: &B, timer: &common::Timer) {
    let t = b.upload(&(0..EMBED_BATCH).map(|i| (i * 15) as f32).collect::<Vec<_>>()).unwrap();
    let mut emb = b.alloc(EMBED_BATCH * EMBED_DIM).unwrap();

    let mut g = c.benchmark_group("embedding");
    common::configure(&mut g, Duration::from_millis(1500), Duration::from_millis(300));
    let emb_bytes = (EMBED_BATCH * (EMBED_DIM + 1) * 4) as u64;
    g.throughput(Throughput::Bytes(emb_bytes));
    g.bench_function(BenchmarkId::new("timestep_embedding", label), |bn| {
        timer.iter(bn, || {
            b.timestep_embedding(&t, EMBED_DIM, false, 1.0, &mut emb).unwrap();
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    common::bench_on_every_backend!(c, bench_backend);
}

criterion_group!(embedding, benches);
criterion_main!(embedding);
