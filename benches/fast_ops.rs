//! Criterion benches of the fast CPU path's ops other than convolution (src/fast), on the
//! DDPM CIFAR-10 UNet's shapes at training batch 16, with the reference (src/cpu) alongside for
//! a few. Memory-bound ops report bytes moved (read + written once each), GEMM-based ones FLOPs
//! (as elements/s): 2 per multiply-add; attention as FlashAttention counts it, 4 b h t^2 d
//! forward and 2.5 times that backward.

use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use ddpm::fast::simd::SimdLevel;
use ddpm::math::adamw::AdamWStep;
use ddpm::shapes::{AttentionShape, GroupNormShape, LinearShape};
use ddpm::testing::{random_vec, rng_for};
use ddpm::{cpu, fast};
use rand::rngs::StdRng;
use std::time::Duration;

/// The first level of the CIFAR-10 UNet: 32x32 pixels, 128 channels in 32 groups.
const GN: GroupNormShape = GroupNormShape { batch: 16, hw: 32 * 32, channels: 128, groups: 32, eps: 1e-6 };
/// Its attention: 16x16 tokens, one head of 256.
const ATTN: AttentionShape = AttentionShape { batch: 16, tokens: 256, heads: 1, head_dim: 256 };
/// The time-embedding MLP, and the attention projections over every token.
const LINEARS: [LinearShape; 2] = [
    LinearShape { rows: 16, in_features: 512, out_features: 512 },
    LinearShape { rows: 16 * 256, in_features: 256, out_features: 256 },
];
/// The CIFAR-10 UNet's parameter count.
const PARAMS: usize = 35_746_307;

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    // Flat sampling: ten samples of equal iteration counts, so the slow references finish in ~1 s.
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(800));
    g
}

fn input(rng: &mut StdRng, n: usize) -> Vec<f32> {
    random_vec(rng, n, -1.0, 1.0)
}

fn bench_group_norm(c: &mut Criterion, rng: &mut StdRng) {
    let s = GN;
    let (x, dy, gamma, beta) =
        (input(rng, s.len()), input(rng, s.len()), input(rng, s.channels), input(rng, s.channels));
    let (mut y, mut dx, mut mean, mut rstd) =
        (vec![0.0; s.len()], vec![0.0; s.len()], vec![0.0; s.stats_len()], vec![0.0; s.stats_len()]);
    let (mut dg, mut db) = (vec![0.0; s.channels], vec![0.0; s.channels]);
    let bytes = (s.len() * 4) as u64;
    let mut g = group(c, "group_norm_silu_b16_32x32x128");
    g.throughput(Throughput::Bytes(2 * bytes)); // read x, write y
    g.bench_function("fwd/fast", |b| {
        b.iter(|| {
            fast::group_norm::group_norm_fwd(&s, &x, Some(&gamma), Some(&beta), true, &mut y, &mut mean, &mut rstd)
        })
    });
    g.bench_function("fwd/reference", |b| {
        b.iter(|| {
            cpu::group_norm::group_norm_fwd(&s, &x, Some(&gamma), Some(&beta), true, &mut y, &mut mean, &mut rstd)
        })
    });
    g.throughput(Throughput::Bytes(3 * bytes)); // read x and dy, write dx
    g.bench_function("bwd/fast", |b| {
        b.iter(|| {
            fast::group_norm::group_norm_bwd(
                &s,
                &x,
                Some(&gamma),
                Some(&beta),
                &mean,
                &rstd,
                true,
                &dy,
                &mut dx,
                Some(&mut dg),
                Some(&mut db),
            )
        })
    });
    g.bench_function("bwd/reference", |b| {
        b.iter(|| {
            cpu::group_norm::group_norm_bwd(
                &s,
                &x,
                Some(&gamma),
                Some(&beta),
                &mean,
                &rstd,
                true,
                &dy,
                &mut dx,
                Some(&mut dg),
                Some(&mut db),
            )
        })
    });
    g.finish();
}

fn bench_attention(c: &mut Criterion, rng: &mut StdRng) {
    for s in [ATTN, AttentionShape { batch: 1, ..ATTN }] {
        let (q, k, v, dout) = (input(rng, s.len()), input(rng, s.len()), input(rng, s.len()), input(rng, s.len()));
        let (mut out, mut lse) = (vec![0.0; s.len()], vec![0.0; s.lse_len()]);
        let (mut dq, mut dk, mut dv) = (vec![0.0; s.len()], vec![0.0; s.len()], vec![0.0; s.len()]);
        fast::attention::attention_fwd(&s, &q, &k, &v, &mut out, &mut lse);
        let flops = 4 * (s.batch * s.heads * s.tokens * s.tokens * s.head_dim) as u64;
        let mut g = group(c, &format!("attention_b{}_t{}_d{}", s.batch, s.tokens, s.head_dim));
        g.throughput(Throughput::Elements(flops));
        g.bench_function("fwd/fast", |b| b.iter(|| fast::attention::attention_fwd(&s, &q, &k, &v, &mut out, &mut lse)));
        if s.batch == 1 {
            g.bench_function("fwd/reference", |b| {
                b.iter(|| cpu::attention::attention_fwd(&s, &q, &k, &v, &mut out, &mut lse))
            });
        }
        g.throughput(Throughput::Elements(flops * 5 / 2));
        g.bench_function("bwd/fast", |b| {
            b.iter(|| fast::attention::attention_bwd(&s, &q, &k, &v, &out, &lse, &dout, &mut dq, &mut dk, &mut dv))
        });
        g.finish();
    }
}

fn bench_linear(c: &mut Criterion, rng: &mut StdRng) {
    for s in LINEARS {
        let (k, n) = (s.in_features, s.out_features);
        let (x, w, bias, dy) = (input(rng, s.rows * k), input(rng, n * k), input(rng, n), input(rng, s.rows * n));
        let (mut y, mut dx, mut dw, mut db) =
            (vec![0.0; s.rows * n], vec![0.0; s.rows * k], vec![0.0; n * k], vec![0.0; n]);
        let mut g = group(c, &format!("linear_{}x{}_to_{}", s.rows, k, n));
        g.throughput(Throughput::Elements(2 * (s.rows * k * n) as u64));
        g.bench_function("fwd/fast", |b| b.iter(|| fast::linear::linear_fwd(&s, &x, &w, Some(&bias), &mut y)));
        if s.rows == 16 {
            g.bench_function("fwd/reference", |b| b.iter(|| cpu::linear::linear_fwd(&s, &x, &w, Some(&bias), &mut y)));
        }
        g.bench_function("bwd_input/fast", |b| b.iter(|| fast::linear::linear_bwd_input(&s, &dy, &w, &mut dx)));
        g.bench_function("bwd_weight/fast", |b| {
            b.iter(|| fast::linear::linear_bwd_weight(&s, &x, &dy, &mut dw, Some(&mut db)))
        });
        g.finish();
    }
}

fn bench_elementwise(c: &mut Criterion, rng: &mut StdRng) {
    let len = GN.len();
    let (x, a, dy) = (input(rng, len), input(rng, len), input(rng, len));
    let mut y = vec![0.0; len];
    let bytes = (len * 4) as u64;
    let mut g = group(c, "elementwise_b16_32x32x128");
    g.throughput(Throughput::Bytes(2 * bytes));
    g.bench_function("silu_fwd/fast", |b| b.iter(|| fast::silu::silu_fwd(&x, &mut y)));
    g.bench_function("silu_fwd/reference", |b| b.iter(|| cpu::silu::silu_fwd(&x, &mut y)));
    g.throughput(Throughput::Bytes(3 * bytes));
    g.bench_function("silu_bwd/fast", |b| b.iter(|| fast::silu::silu_bwd(&x, &dy, &mut y)));
    g.bench_function("add_scaled/fast", |b| {
        b.iter(|| fast::elementwise::add_scaled(&x, &a, std::f32::consts::SQRT_2, &mut y))
    });
    g.bench_function("add_scaled/reference", |b| {
        b.iter(|| cpu::elementwise::add_scaled(&x, &a, std::f32::consts::SQRT_2, &mut y))
    });
    g.finish();
}

fn bench_optim(c: &mut Criterion, rng: &mut StdRng) {
    let (mut p, g_) = (input(rng, PARAMS), random_vec(rng, PARAMS, -0.01, 0.01));
    let (mut m, mut v) = (vec![0.0; PARAMS], vec![0.0; PARAMS]);
    let step = AdamWStep::new(2e-4, 0.9, 0.999, 1e-8, 0.0, 10, 1.0);
    let bytes = (PARAMS * 4) as u64;
    let mut g = group(c, "optim_35.7M_params");
    g.throughput(Throughput::Bytes(7 * bytes)); // read p, g, m, v; write p, m, v
    g.bench_function("adamw/fast", |b| b.iter(|| fast::optim::adamw_step(&mut p, &g_, &mut m, &mut v, &step)));
    g.bench_function("adamw/reference", |b| b.iter(|| cpu::optim::adamw_step(&mut p, &g_, &mut m, &mut v, &step)));
    g.throughput(Throughput::Bytes(3 * bytes));
    g.bench_function("ema/fast", |b| b.iter(|| fast::optim::ema_update(&mut m, &p, 0.9999)));
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("sum_squares/fast", |b| b.iter(|| fast::optim::sum_squares(&g_)));
    g.bench_function("sum_squares/reference", |b| b.iter(|| cpu::optim::sum_squares(&g_)));
    g.finish();
}

fn benches(c: &mut Criterion) {
    eprintln!("fast CPU path: {}", SimdLevel::describe());
    let mut rng = rng_for("bench_fast_ops");
    bench_group_norm(c, &mut rng);
    bench_attention(c, &mut rng);
    bench_linear(c, &mut rng);
    bench_elementwise(c, &mut rng);
    bench_optim(c, &mut rng);
}

criterion_group!(fast_ops, benches);
criterion_main!(fast_ops);
