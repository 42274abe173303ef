//! Criterion benches of the attention ops on the CPU backend, the emulator and a GPU when
//! present (device events around each batch of iterations: benches/common). Throughput is in FLOPs as FlashAttention counts them:
//! 4 * batch * heads * tokens^2 * head_dim for the forward (Q K^T and P V), 2.5 times that for
//! the backward (S recomputed, dV, dP, dQ, dK); the kernels' extra recomputation is not counted.

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ddpm::backend::{CpuBackend, CudaBackend, Layers};
use ddpm::gpu::Gpu;
use ddpm::shapes::AttentionShape;
use ddpm::testing::{random_vec, rng_for};
use std::time::Duration;

/// A 16x16 attention block of a small UNet (64 channels, one head), batch 2: small enough for
/// the emulator.
const SMALL: AttentionShape = AttentionShape { batch: 2, tokens: 256, heads: 1, head_dim: 64 };
/// The DDPM CIFAR-10 UNet's attention (16x16, 256 channels, one head) and a 256x256 model's
/// (16x16, 512 channels), at training batch sizes: GPU only.
const GPU_ONLY: &[AttentionShape] = &[
    AttentionShape { batch: 32, tokens: 256, heads: 1, head_dim: 256 },
    AttentionShape { batch: 8, tokens: 256, heads: 1, head_dim: 512 },
    AttentionShape { batch: 4, tokens: 1024, heads: 4, head_dim: 64 },
];

fn forward_flops(s: &AttentionShape) -> u64 {
    4 * (s.batch * s.heads * s.tokens * s.tokens * s.head_dim) as u64
}

fn bench_shape<B: Layers>(c: &mut Criterion, label: &str, b: &B, s: &AttentionShape, timer: &common::Timer) {
    let mut rng = rng_for("bench_attention");
    let mut input = || b.upload(&random_vec(&mut rng, s.len(), -2.0, 2.0)).unwrap();
    let (q, k, v, dout) = (input(), input(), input(), input());
    let (mut out, mut lse) = (b.alloc(s.len()).unwrap(), b.alloc(s.lse_len()).unwrap());
    let (mut dq, mut dk, mut dv) = (b.alloc(s.len()).unwrap(), b.alloc(s.len()).unwrap(), b.alloc(s.len()).unwrap());
    b.attention_fwd(s, &q, &k, &v, &mut out, &mut lse).unwrap();
    let id = format!("{label}/b{}t{}h{}d{}", s.batch, s.tokens, s.heads, s.head_dim);
    let mut group = c.benchmark_group("attention");
    common::configure(&mut group, Duration::from_secs(2), Duration::from_millis(300));
    group.throughput(Throughput::Elements(forward_flops(s)));
    group.bench_function(BenchmarkId::new("fwd", &id), |bn| {
        timer.iter(bn, || {
            b.attention_fwd(s, &q, &k, &v, &mut out, &mut lse).unwrap();
        })
    });
    group.throughput(Throughput::Elements(forward_flops(s) * 5 / 2));
    group.bench_function(BenchmarkId::new("bwd", &id), |bn| {
        timer.iter(bn, || {
            b.attention_bwd(s, &q, &k, &v, &out, &lse, &dout, &mut dq, &mut dk, &mut dv).unwrap();
        })
    });
    group.finish();
}

/// The tensor-core kernels (bf16 operands, kernels/attention_bf16.cu and attention_bwd_bf16.cu)
/// beside the f32 kernels on the same device and shape, so the times read side by side (on the
/// emulator: emulator time).
const BF16_SHAPE: AttentionShape = AttentionShape { batch: 1, tokens: 256, heads: 1, head_dim: 64 };

fn bench_bf16(c: &mut Criterion, label: &str, gpu: &Gpu, timer: &common::Timer) {
    use ddpm::cuda::{attention, attention_bf16};
    let s = &BF16_SHAPE;
    let mut rng = rng_for("bench_attention_bf16");
    let mut input = || random_vec(&mut rng, s.len(), -2.0, 2.0);
    let (q, k, v, dout) = (input(), input(), input(), input());
    let f32s = [&q, &k, &v, &dout].map(|x| gpu.upload(x).unwrap());
    let bf16s = [&q, &k, &v, &dout]
        .map(|x| gpu.upload(&x.iter().map(|&y| half::bf16::from_f32(y)).collect::<Vec<_>>()).unwrap());
    let (mut out, mut lse) = (gpu.alloc::<f32>(s.len()).unwrap(), gpu.alloc::<f32>(s.lse_len()).unwrap());
    // The output stored in bf16 (issue #17: what the output projection reads); lse stays f32.
    let mut out_bf16 = gpu.alloc::<half::bf16>(s.len()).unwrap();
    // The backward rows read a real forward's out and lse even when a filter runs them alone.
    attention_bf16::attention_fwd_bf16(s, &bf16s[0], &bf16s[1], &bf16s[2], &mut out, &mut lse).unwrap();
    attention_bf16::attention_fwd_bf16(s, &bf16s[0], &bf16s[1], &bf16s[2], &mut out_bf16, &mut lse).unwrap();
    let mut grads = [(); 3].map(|_| gpu.alloc::<f32>(s.len()).unwrap());
    let id = format!("{label}/b{}t{}h{}d{}", s.batch, s.tokens, s.heads, s.head_dim);
    let mut group = c.benchmark_group("attention");
    common::configure(&mut group, Duration::from_millis(1500), Duration::from_millis(300));
    group.throughput(Throughput::Elements(forward_flops(s)));
    group.bench_function(BenchmarkId::new("fwd_f32", &id), |bn| {
        timer.iter(bn, || attention::attention_fwd_f32(s, &f32s[0], &f32s[1], &f32s[2], &mut out, &mut lse).unwrap())
    });
    group.bench_function(BenchmarkId::new("fwd_bf16", &id), |bn| {
        timer.iter(bn, || {
            attention_bf16::attention_fwd_bf16(s, &bf16s[0], &bf16s[1], &bf16s[2], &mut out, &mut lse).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("fwd_bf16_to_bf16", &id), |bn| {
        timer.iter(bn, || {
            attention_bf16::attention_fwd_bf16(s, &bf16s[0], &bf16s[1], &bf16s[2], &mut out_bf16, &mut lse).unwrap()
        })
    });
    group.throughput(Throughput::Elements(forward_flops(s) * 5 / 2));
    let [dq, dk, dv] = &mut grads;
    group.bench_function(BenchmarkId::new("bwd_bf16", &id), |bn| {
        timer.iter(bn, || {
            let [q, k, v, dout] = &bf16s;
            attention_bf16::attention_bwd_bf16(s, q, k, v, &out, &lse, dout, dq, dk, dv).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("bwd_bf16_from_bf16_out", &id), |bn| {
        timer.iter(bn, || {
            let [q, k, v, dout] = &bf16s;
            attention_bf16::attention_bwd_bf16(s, q, k, v, &out_bf16, &lse, dout, dq, dk, dv).unwrap()
        })
    });
    group.finish();
}

fn benches_attention(c: &mut Criterion) {
    if common::wants("cpu") {
        bench_shape(c, "cpu", &CpuBackend, &SMALL, &common::Timer::Host);
    }
    if common::wants("emulator") {
        let emu = CudaBackend::new(Gpu::emulator().expect("emulator built"));
        bench_shape(c, "emulator", &emu, &SMALL, &common::Timer::Host);
        bench_bf16(c, "emulator", &Gpu::emulator().expect("emulator built"), &common::Timer::Host);
    }
    if let Some((gpu, timer)) = common::cuda() {
        bench_bf16(c, "cuda", &gpu, &timer);
        let b = CudaBackend::new(gpu);
        for s in std::iter::once(&SMALL).chain(GPU_ONLY) {
            bench_shape(c, "cuda", &b, s, &timer);
        }
    }
}

criterion_group!(benches, benches_attention);
criterion_main!(benches);
