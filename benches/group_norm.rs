//! Criterion benches of GroupNorm + fused SiLU on the CPU backend, the emulator and a GPU when one
//! opens (device events around each batch of iterations: benches/common). The shape is a UNet
//! block's scaled down so the emulator finishes: batch 2 at 16x16 with 64 channels in 32 groups.
//! GroupNorm is memory-bound: throughput is in bytes moved.

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ddpm::backend::Layers;
use ddpm::cuda::group_norm::group_norm_fwd;
use ddpm::shapes::GroupNormShape;
use ddpm::testing::{random_vec, rng_for};
use std::time::Duration;

const GN: GroupNormShape = GroupNormShape { batch: 2, hw: 16 * 16, channels: 64, groups: 32, eps: 1e-5 };

fn bench_backend<B: Layers>(c: &mut Criterion, label: &str, b: &B, timer: &common::Timer) {
    let mut rng = rng_for("bench_group_norm");
    let mut up = |n: usize| b.upload(&random_vec(&mut rng, n, -1.0, 1.0)).unwrap();
    let mut group = c.benchmark_group("group_norm");
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
    group.finish();
}

/// The bf16 kernels, CUDA only (src/backend/cuda_bf16.rs): the forward writing bf16 (what a bf16
/// matrix product reads) from an f32 input (read 4 bytes, write 2 per element) and from a bf16
/// one (a ResnetBlock's h2: read 2, write 2), and the backward from either input (read x and dy,
/// write dx). `shape` names the GroupNorm shape in the bench's id; on a GPU also cifar10's 32 x 32
/// level at batch 128, where the bytes and not the launch set the time.
fn bench_bf16(c: &mut Criterion, label: &str, gpu: &ddpm::gpu::Gpu, timer: &common::Timer, s: GroupNormShape) {
    use ddpm::cuda::group_norm::group_norm_bwd;
    use half::bf16;
    let mut rng = rng_for("bench_group_norm");
    let mut up = |n: usize| gpu.upload(&random_vec(&mut rng, n, -1.0, 1.0)).unwrap();
    let (x, dy, gamma, beta) = (up(s.len()), up(s.len()), up(s.channels), up(s.channels));
    let xb = gpu.upload(&gpu.download(&x).unwrap().iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>()).unwrap();
    let mut y = gpu.alloc::<bf16>(s.len()).unwrap();
    let (mut mean, mut rstd) = (gpu.alloc::<f32>(s.stats_len()).unwrap(), gpu.alloc::<f32>(s.stats_len()).unwrap());
    let (mut dx, mut dgamma, mut dbeta) = (up(s.len()), up(s.channels), up(s.channels));
    let (g, b) = (Some(&gamma), Some(&beta));
    let mut group = c.benchmark_group("group_norm");
    common::configure(&mut group, Duration::from_millis(1500), Duration::from_millis(300));
    let dims = if s.batch == GN.batch && s.hw == GN.hw {
        String::new()
    } else {
        format!("_b{}x{}x{}", s.batch, s.hw, s.channels)
    };
    group.throughput(Throughput::Bytes((s.len() * 6) as u64));
    group.bench_function(BenchmarkId::new(format!("group_norm_silu_fwd_to_bf16{dims}"), label), |bn| {
        timer.iter(bn, || group_norm_fwd(&s, &x, g, b, true, &mut y, &mut mean, &mut rstd).unwrap())
    });
    group.throughput(Throughput::Bytes((s.len() * 4) as u64));
    group.bench_function(BenchmarkId::new(format!("group_norm_silu_fwd_bf16_to_bf16{dims}"), label), |bn| {
        timer.iter(bn, || group_norm_fwd(&s, &xb, g, b, true, &mut y, &mut mean, &mut rstd).unwrap())
    });
    group.throughput(Throughput::Bytes((s.len() * 12) as u64));
    group.bench_function(BenchmarkId::new(format!("group_norm_silu_bwd_f32_input{dims}"), label), |bn| {
        timer.iter(bn, || {
            let grads = (Some(&mut dgamma), Some(&mut dbeta));
            group_norm_bwd(&s, &x, g, b, &mean, &rstd, true, &dy, &mut dx, grads.0, grads.1).unwrap()
        })
    });
    group.throughput(Throughput::Bytes((s.len() * 10) as u64));
    group.bench_function(BenchmarkId::new(format!("group_norm_silu_bwd_bf16_input{dims}"), label), |bn| {
        timer.iter(bn, || {
            let grads = (Some(&mut dgamma), Some(&mut dbeta));
            group_norm_bwd(&s, &xb, g, b, &mean, &rstd, true, &dy, &mut dx, grads.0, grads.1).unwrap()
        })
    });
    group.finish();
}

/// The split path against one block per group, forward + SiLU, batch 1 (sampling), at (side,
/// channels): a 64 x 64 level of 128 channels (4 chunks of 4096 elements); on a GPU also the
/// cifar10 UNet's split levels (32 x 32 at 256 and 384 channels: 2 and 3 chunks, where the
/// MIN_CHUNK estimate is tested) and a 256 x 256 one (16 chunks). The statistics' extra pass is
/// not counted in the bytes.
fn bench_split(c: &mut Criterion, label: &str, gpu: &ddpm::gpu::Gpu, timer: &common::Timer, levels: &[(usize, usize)]) {
    use ddpm::cuda::group_norm::{Chunks, group_norm_fwd_chunked};
    let mut rng = rng_for("bench_group_norm_split");
    let mut group = c.benchmark_group("group_norm");
    common::configure(&mut group, Duration::from_millis(1500), Duration::from_millis(300));
    for &(side, channels) in levels {
        let s = GroupNormShape { batch: 1, hw: side * side, channels, groups: 32, eps: 1e-5 };
        let mut up = |n: usize| gpu.upload(&random_vec(&mut rng, n, -1.0, 1.0)).unwrap();
        let (x, gamma, beta, mut y) = (up(s.len()), up(s.channels), up(s.channels), up(s.len()));
        let (mut mean, mut rstd) = (up(s.stats_len()), up(s.stats_len()));
        group.throughput(Throughput::Bytes((s.len() * 8) as u64));
        for chunks in [Chunks::forced(&s, 1), Chunks::for_shape(&s)] {
            let name = format!("group_norm_silu_fwd_b1_{side}x{side}x{channels}_{}chunks", chunks.count);
            group.bench_function(BenchmarkId::new(name, label), |bn| {
                timer.iter(bn, || {
                    let (g, b) = (Some(&gamma), Some(&beta));
                    group_norm_fwd_chunked(&s, &x, g, b, true, &mut y, &mut mean, &mut rstd, chunks).unwrap();
                })
            });
        }
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    common::bench_on_every_backend!(c, bench_backend);
    if common::wants("emulator") {
        let emu = ddpm::gpu::Gpu::emulator().expect("the emulator is built");
        bench_bf16(c, "emulator", &emu, &common::Timer::Host, GN);
        bench_split(c, "emulator", &emu, &common::Timer::Host, &[(64, 128)]);
    }
    if let Some((gpu, timer)) = common::cuda() {
        bench_bf16(c, "cuda", &gpu, &timer, GN);
        bench_bf16(c, "cuda", &gpu, &timer, GroupNormShape { batch: 128, hw: 32 * 32, channels: 128, ..GN });
        bench_split(c, "cuda", &gpu, &timer, &[(32, 256), (32, 384), (64, 128), (256, 128)]);
    }
}

criterion_group!(group_norm, benches);
criterion_main!(group_norm);
