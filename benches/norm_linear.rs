//! Criterion benches of GroupNorm (+ fused SiLU) and Linear on the CPU backend, the emulator and a
//! GPU when one opens (device events around each batch of iterations: benches/common). Shapes are a UNet block's scaled
//! down so the emulator finishes: batch 2 at 16x16 with 64 channels in 32 groups, and the
//! attention projections over its 512 tokens. GroupNorm reports bytes moved (it is
//! memory-bound), Linear FLOPs.

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ddpm::backend::Layers;
use ddpm::shapes::{GroupNormShape, LinearShape};
use ddpm::testing::{random_vec, rng_for};
use std::time::Duration;

const GN: GroupNormShape = GroupNormShape { batch: 2, hw: 16 * 16, channels: 64, groups: 32, eps: 1e-5 };
const LIN: LinearShape = LinearShape { rows: 2 * 16 * 16, in_features: 64, out_features: 64 };

fn bench_backend<B: Layers>(c: &mut Criterion, label: &str, b: &B, timer: &common::Timer) {
    let mut rng = rng_for("bench_norm_linear");
    let mut up = |n: usize| b.upload(&random_vec(&mut rng, n, -1.0, 1.0)).unwrap();
    let mut group = c.benchmark_group("norm_linear");
    common::configure(&mut group, Duration::from_millis(1500), Duration::from_millis(300));

    let (x, dy, gamma, beta) = (up(GN.len()), up(GN.len()), up(GN.channels), up(GN.channels));
    let (mut y, mut dx) = (b.alloc(GN.len()).unwrap(), b.alloc(GN.len()).unwrap());
    let (mut mean, mut rstd) = (b.alloc(GN.stats_len()).unwrap(), b.alloc(GN.stats_len()).unwrap());
    let (mut dgamma, mut dbeta) = (b.alloc(GN.channels).unwrap(), b.alloc(GN.channels).unwrap());
    let bytes = (GN.len() * 4) as u64;
    // Forward: read x, write y. Backward: read x and dy, write dx.
    group.throughput(Throughput::Bytes(2 * bytes));
    group.bench_function(BenchmarkId::new("group_norm_silu_fwd", label), |bn| {
        timer.iter(bn, || {
            b.group_norm_fwd(&GN, &x, Some(&gamma), Some(&beta), true, &mut y, &mut mean, &mut rstd).unwrap();
        })
    });
    group.throughput(Throughput::Bytes(3 * bytes));
    group.bench_function(BenchmarkId::new("group_norm_silu_bwd", label), |bn| {
        timer.iter(bn, || {
            b.group_norm_bwd(
                &GN,
                &x,
                Some(&gamma),
                Some(&beta),
                &mean,
                &rstd,
                true,
                &dy,
                &mut dx,
                Some(&mut dgamma),
                Some(&mut dbeta),
            )
            .unwrap();
        })
    });

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

fn benches_norm_linear(c: &mut Criterion) {
    common::bench_on_every_backend!(c, bench_backend);
}

criterion_group!(benches, benches_norm_linear);
criterion_main!(benches);
