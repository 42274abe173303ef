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

/// The tensor-core forward and backward (bf16 operands, kernels/linear_bf16.cu) beside the f32
/// SIMT kernels on the same device and shape, so the two times read side by side (on the emulator: emulator time).
fn bench_bf16(c: &mut Criterion, label: &str, gpu: &ddpm::gpu::Gpu, timer: &common::Timer) {
    let mut rng = rng_for("bench_linear_bf16");
    let (k, o) = (LIN.in_features, LIN.out_features);
    let to_bf16 = |v: Vec<f32>| v.into_iter().map(half::bf16::from_f32).collect::<Vec<_>>();
    let x = gpu.upload(&to_bf16(random_vec(&mut rng, LIN.rows * k, -1.0, 1.0))).unwrap();
    let w = gpu.upload(&to_bf16(random_vec(&mut rng, o * k, -1.0, 1.0))).unwrap();
    let bias = gpu.upload(&random_vec(&mut rng, o, -1.0, 1.0)).unwrap();
    let dy = gpu.upload(&to_bf16(random_vec(&mut rng, LIN.rows * o, -1.0, 1.0))).unwrap();
    let mut y = gpu.alloc::<f32>(LIN.rows * o).unwrap();
    let (mut dx, mut dw, mut db) =
        (gpu.alloc::<f32>(LIN.rows * k).unwrap(), gpu.alloc::<f32>(o * k).unwrap(), gpu.alloc::<f32>(o).unwrap());
    let mut group = c.benchmark_group("linear");
    common::configure(&mut group, Duration::from_millis(1500), Duration::from_millis(300));
    group.throughput(Throughput::Elements((2 * LIN.rows * k * o) as u64));
    group.bench_function(BenchmarkId::new("linear_fwd_bf16", label), |bn| {
        timer.iter(bn, || ddpm::cuda::linear::linear_fwd_bf16(&LIN, &x, &w, Some(&bias), &mut y).unwrap())
    });
    // Into bf16 (an attention block's q, k, v): half the output bytes.
    let mut y16 = gpu.alloc::<half::bf16>(LIN.rows * o).unwrap();
    group.bench_function(BenchmarkId::new("linear_fwd_bf16_to_bf16", label), |bn| {
        timer.iter(bn, || ddpm::cuda::linear::linear_fwd_bf16(&LIN, &x, &w, Some(&bias), &mut y16).unwrap())
    });
    group.finish();
    bench_qkv(c, label, gpu, timer, &LIN);
    if label == "cuda" {
        // cifar10's attention at batch 1: 256 tokens of 256 channels, 16 blocks per projection.
        bench_qkv(c, label, gpu, timer, &LinearShape { rows: 256, in_features: 256, out_features: 256 });
    }
    let mut group = c.benchmark_group("linear");
    common::configure(&mut group, Duration::from_millis(1500), Duration::from_millis(300));
    group.throughput(Throughput::Elements((2 * LIN.rows * k * o) as u64));
    group.bench_function(BenchmarkId::new("linear_bwd_input_bf16", label), |bn| {
        timer.iter(bn, || ddpm::cuda::linear::linear_bwd_input_bf16(&LIN, &dy, &w, &mut dx).unwrap())
    });
    group.bench_function(BenchmarkId::new("linear_bwd_weight_bf16", label), |bn| {
        timer.iter(bn, || ddpm::cuda::linear::linear_bwd_weight_bf16(&LIN, &x, &dy, &mut dw, Some(&mut db)).unwrap())
    });
    group.finish();
}

/// An attention block's q, k and v projections: three `linear_fwd_bf16_to_bf16` launches beside
/// the one launch of `linear_fwd_bf16_to_bf16_x3` (the same bits), same inputs.
fn bench_qkv(c: &mut Criterion, label: &str, gpu: &ddpm::gpu::Gpu, timer: &common::Timer, s: &LinearShape) {
    use ddpm::cuda::linear::{linear_fwd_bf16, linear_fwd_bf16_to_bf16_x3};
    let mut rng = rng_for("bench_linear_qkv");
    let mut bf16s = |n: usize| {
        gpu.upload(&random_vec(&mut rng, n, -1.0, 1.0).into_iter().map(half::bf16::from_f32).collect::<Vec<_>>())
            .unwrap()
    };
    let (x, w) = (bf16s(s.rows * s.in_features), [(); 3].map(|_| bf16s(s.out_features * s.in_features)));
    let mut y = [(); 3].map(|_| gpu.alloc::<half::bf16>(s.rows * s.out_features).unwrap());
    let id = format!("{label}/{}x{}x{}", s.rows, s.in_features, s.out_features);
    let mut group = c.benchmark_group("linear");
    common::configure(&mut group, Duration::from_millis(1500), Duration::from_millis(300));
    group.throughput(Throughput::Elements((3 * 2 * s.rows * s.in_features * s.out_features) as u64));
    group.bench_function(BenchmarkId::new("qkv_three_launches", &id), |bn| {
        timer.iter(bn, || {
            for (w, y) in w.iter().zip(y.iter_mut()) {
                linear_fwd_bf16(s, &x, w, None, y).unwrap();
            }
        })
    });
    group.bench_function(BenchmarkId::new("linear_fwd_bf16_to_bf16_x3", &id), |bn| {
        timer.iter(bn, || {
            let [y0, y1, y2] = &mut y;
            linear_fwd_bf16_to_bf16_x3(s, &x, [&w[0], &w[1], &w[2]], [None; 3], [y0, y1, y2]).unwrap()
        })
    });
    group.finish();
}

/// The weight gradient of a cifar10 attention projection at batch 128 (32,768 rows of 256
/// features; 20 output tiles): all rows in one block per tile beside the launcher's split of the
/// rows (kernels/linear_bf16.cu). GPU only: the emulator would take minutes per call.
fn bench_bf16_split(c: &mut Criterion, gpu: &ddpm::gpu::Gpu, timer: &common::Timer) {
    use ddpm::cuda::linear::{linear_bwd_weight_bf16_split, linear_bwd_weight_bf16_splits};
    let s = LinearShape { rows: 128 * 16 * 16, in_features: 256, out_features: 256 };
    let mut rng = rng_for("bench_linear_bf16_split");
    let mut up = |n: usize| {
        gpu.upload(&random_vec(&mut rng, n, -1.0, 1.0).into_iter().map(half::bf16::from_f32).collect::<Vec<_>>())
            .unwrap()
    };
    let (x, dy) = (up(s.rows * s.in_features), up(s.rows * s.out_features));
    let (mut dw, mut db) =
        (gpu.alloc::<f32>(s.in_features * s.out_features).unwrap(), gpu.alloc::<f32>(s.out_features).unwrap());
    let mut group = c.benchmark_group("linear");
    common::configure(&mut group, Duration::from_millis(1500), Duration::from_millis(300));
    group.throughput(Throughput::Elements((2 * s.rows * s.in_features * s.out_features) as u64));
    for (name, splits) in
        [("wgrad_attn_b128_one_split", 1), ("wgrad_attn_b128_split", linear_bwd_weight_bf16_splits(&s, true))]
    {
        group.bench_function(BenchmarkId::new(name, "cuda"), |bn| {
            timer.iter(bn, || linear_bwd_weight_bf16_split(&s, &x, &dy, &mut dw, Some(&mut db), splits).unwrap())
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    common::bench_on_every_backend!(c, bench_backend);
    if common::wants("emulator") {
        bench_bf16(c, "emulator", &ddpm::gpu::Gpu::emulator().expect("the emulator is built"), &common::Timer::Host);
    }
    if let Some((gpu, timer)) = common::cuda() {
        bench_bf16(c, "cuda", &gpu, &timer);
        bench_bf16_split(c, &gpu, &timer);
    }
}

criterion_group!(linear, benches);
criterion_main!(linear);
