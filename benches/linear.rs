//! Criterion benches of Linear (forward, input and weight gradients) on the CPU backend, the
//! emulator and a GPU when one opens (device events around each batch of iterations:
//! benches/common). The shape is an attention projection over a scaled-down UNet level's 512
//! tokens (batch 2 at 16x16, 64 features), small enough for the emulator; throughput in FLOPs.

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ddpm::backend::Layers;
use ddpm::shapes::LinearShape;
use ddpm::testing::{random_vec, rng_for};
use std::time::Duration;

const LIN: LinearShape = LinearShape { rows: 2 * 16 * 16, in_features: 64, out_features: 64 };

fn bench_backend<B: Layers>(c: &mut Criterion, label: &str, b: &B, timer: &common::Timer) {
    let mut rng = rng_for("bench_linear");
    let mut up = |n: usize| b.upload(&random_vec(&mut rng, n, -1.0, 1.0)).unwrap();
    let mut group = c.benchmark_group("linear");
    common::configure(&mut group, Duration::from_millis(1500), Duration::from_millis(300));

    let (k, o) = (LIN.in_features, LIN.out_features);
    let (lx, w, bias, ldy) = (up(LIN.rows * k), up(o * k), up(o), up(LIN.rows * o));
    let (mut ly, mut ldx, mut dw, mut db) =
        (b.alloc(LIN.rows * o).unwrap(), b.alloc(LIN.rows * k).unwrap(), b.alloc(o * k).unwrap(), b.alloc(o).unwrap());
    group.throughput(Throughput::Elements((2 * LIN.rows * k * o) as u64));
    group.bench_function(BenchmarkId::new("linear_fwd", label), |bn| {
        timer.iter(bn, || {
            b.linear_fwd(&LIN, &lx, &w, Some(&bias), &mut ly).unwrap();
        })
    });
    group.bench_function(BenchmarkId::new("linear_bwd_input", label), |bn| {
        timer.iter(bn, || {
            b.linear_bwd_input(&LIN, &ldy, &w, &mut ldx).unwrap();
        })
    });
    group.bench_function(BenchmarkId::new("linear_bwd_weight", label), |bn| {
        timer.iter(bn, || {
            b.linear_bwd_weight(&LIN, &lx, &ldy, &mut dw, Some(&mut db)).unwrap();
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    common::bench_on_every_backend!(c, bench_backend);
}

criterion_group!(linear, benches);
criterion_main!(linear);
