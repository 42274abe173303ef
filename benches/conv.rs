//! Criterion benches of the conv ops on the CPU backend, the emulator and a GPU when present,
//! on UNet-like shapes scaled down so the emulator finishes (batch 2, 16x16, 64 channels).
//! Throughput is in FLOPs (2 per multiply-add), so backends and ops compare directly.

mod common;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use ddpm::backend::Layers;
use ddpm::shapes::Conv2dShape;
use ddpm::testing::{random_vec, rng_for};
use std::time::Duration;

fn shapes() -> [(&'static str, Conv2dShape); 3] {
    [
        ("conv3x3", Conv2dShape::conv3x3(2, 16, 16, 64, 64)),
        ("conv1x1", Conv2dShape::conv1x1(2, 16, 16, 64, 128)),
        ("downsample", Conv2dShape::downsample(2, 16, 16, 64, 64, 1)),
    ]
}

fn bench_backend<B: Layers>(c: &mut Criterion, label: &str, b: &B, timer: &common::Timer) {
    let mut rng = rng_for("conv bench");
    let mut group = c.benchmark_group("conv");
    // Flat sampling: an emulated iteration takes a good fraction of a second, and linear
    // sampling would run 55 of them per bench.
    common::configure(&mut group, Duration::from_secs(2), Duration::from_millis(300));
    group.sampling_mode(SamplingMode::Flat);
    for (name, s) in shapes() {
        let x = b.upload(&random_vec(&mut rng, s.x_len(), -1.0, 1.0)).unwrap();
        let w = b.upload(&random_vec(&mut rng, s.w_len(), -1.0, 1.0)).unwrap();
        let bias = b.upload(&random_vec(&mut rng, s.out_c, -1.0, 1.0)).unwrap();
        let dy = b.upload(&random_vec(&mut rng, s.y_len(), -1.0, 1.0)).unwrap();
        let (mut y, mut dx) = (b.alloc(s.y_len()).unwrap(), b.alloc(s.x_len()).unwrap());
        let (mut dw, mut db) = (b.alloc(s.w_len()).unwrap(), b.alloc(s.out_c).unwrap());
        group.throughput(Throughput::Elements(2 * s.macs() as u64));
        group.bench_function(BenchmarkId::new(format!("{name}_fwd"), label), |bn| {
            timer.iter(bn, || {
                b.conv2d_fwd(&s, &x, &w, Some(&bias), &mut y).unwrap();
            })
        });
        group.bench_function(BenchmarkId::new(format!("{name}_bwd_input"), label), |bn| {
            timer.iter(bn, || {
                b.conv2d_bwd_input(&s, &dy, &w, &mut dx).unwrap();
            })
        });
        group.bench_function(BenchmarkId::new(format!("{name}_bwd_weight"), label), |bn| {
            timer.iter(bn, || {
                b.conv2d_bwd_weight(&s, &x, &dy, &mut dw, Some(&mut db)).unwrap();
            })
        });
    }
    group.finish();
}

/// The tensor-core kernels (bf16 operands, kernels/conv_bf16.cu and conv_bwd_bf16.cu) on the same shapes, beside the
/// f32 SIMT kernels above (on the emulator: emulator time).
fn bench_bf16(c: &mut Criterion, label: &str, gpu: &ddpm::gpu::Gpu, timer: &common::Timer) {
    use ddpm::cuda::conv_bf16::{ConvOut, conv2d_bwd_input_bf16, conv2d_bwd_weight_bf16, conv2d_fwd_bf16};
    let mut rng = rng_for("conv bf16 bench");
    let to_bf16 = |v: Vec<f32>| v.into_iter().map(half::bf16::from_f32).collect::<Vec<_>>();
    let mut group = c.benchmark_group("conv");
    common::configure(&mut group, Duration::from_secs(2), Duration::from_millis(300));
    group.sampling_mode(SamplingMode::Flat);
    for (name, s) in shapes() {
        let x = gpu.upload(&to_bf16(random_vec(&mut rng, s.x_len(), -1.0, 1.0))).unwrap();
        let w = gpu.upload(&to_bf16(random_vec(&mut rng, s.w_len(), -1.0, 1.0))).unwrap();
        let bias = gpu.upload(&random_vec(&mut rng, s.out_c, -1.0, 1.0)).unwrap();
        let dy = gpu.upload(&to_bf16(random_vec(&mut rng, s.y_len(), -1.0, 1.0))).unwrap();
        let mut y = gpu.alloc::<f32>(s.y_len()).unwrap();
        let (mut dx, mut dw, mut db) =
            (gpu.alloc(s.x_len()).unwrap(), gpu.alloc(s.w_len()).unwrap(), gpu.alloc(s.out_c).unwrap());
        group.throughput(Throughput::Elements(2 * s.macs() as u64));
        group.bench_function(BenchmarkId::new(format!("{name}_fwd_bf16"), label), |bn| {
            timer.iter(bn, || {
                conv2d_fwd_bf16(&s, &x, &w, Some(&bias), None, ConvOut::F32 { y: &mut y, residual: None }).unwrap()
            })
        });
        group.bench_function(BenchmarkId::new(format!("{name}_bwd_input_bf16"), label), |bn| {
            timer.iter(bn, || conv2d_bwd_input_bf16(&s, &dy, &w, &mut dx).unwrap())
        });
        group.bench_function(BenchmarkId::new(format!("{name}_bwd_weight_bf16"), label), |bn| {
            timer.iter(bn, || conv2d_bwd_weight_bf16(&s, &x, &dy, &mut dw, Some(&mut db)).unwrap())
        });
    }
    group.finish();
}

/// cifar10's conv_out weight gradient at batch 128 (32x32, 128 -> 3 channels) in f32, as the bf16
/// model runs it (3 channels are not a multiple of 8): the 64x64-tile kernel beside the narrow one
/// (kernels/conv.cu). GPU only: the emulator would take minutes per call.
fn bench_narrow_wgrad(c: &mut Criterion, gpu: &ddpm::gpu::Gpu, timer: &common::Timer) {
    use ddpm::cuda::conv::conv2d_bwd_weight_f32_path;
    let s = Conv2dShape::conv3x3(128, 32, 32, 128, 3);
    let mut rng = ddpm::testing::rng_for("bench_conv_narrow");
    let x = gpu.upload(&ddpm::testing::random_vec(&mut rng, s.x_len(), -1.0, 1.0)).unwrap();
    let dy = gpu.upload(&ddpm::testing::random_vec(&mut rng, s.y_len(), -1.0, 1.0)).unwrap();
    let (mut dw, mut db) = (gpu.alloc::<f32>(s.w_len()).unwrap(), gpu.alloc::<f32>(s.out_c).unwrap());
    let mut group = c.benchmark_group("conv");
    common::configure(&mut group, Duration::from_millis(1500), Duration::from_millis(300));
    for (name, narrow) in [("conv_out_b128_bwd_weight_tiles", false), ("conv_out_b128_bwd_weight_narrow", true)] {
        group.bench_function(BenchmarkId::new(name, "cuda"), |bn| {
            timer.iter(bn, || conv2d_bwd_weight_f32_path(&s, &x, &dy, &mut dw, Some(&mut db), narrow).unwrap())
        });
    }
    group.finish();
}

/// cifar10's 16x16 256-channel weight gradient at batch 128 in bf16 with the pixel chunks of the
/// old block target (264: one chunk, 148 blocks) beside the new one and the 128 tile (the launcher's), and
/// the input gradient's 64 and 128 tiles. GPU only: the emulator would take minutes per call.
fn bench_wgrad_targets(c: &mut Criterion, gpu: &ddpm::gpu::Gpu, timer: &common::Timer) {
    use ddpm::cuda::conv_bf16::{WGRAD_T128_TARGET_BLOCKS, WGRAD_TARGET_BLOCKS, conv2d_bwd_weight_bf16_target};
    let s = Conv2dShape::conv3x3(128, 16, 16, 256, 256);
    let mut rng = rng_for("bench_conv_wgrad_targets");
    let mut up = |n: usize| {
        gpu.upload(&random_vec(&mut rng, n, -1.0, 1.0).into_iter().map(half::bf16::from_f32).collect::<Vec<_>>())
            .unwrap()
    };
    let (x, dy) = (up(s.x_len()), up(s.y_len()));
    let (mut dw, mut db) = (gpu.alloc::<f32>(s.w_len()).unwrap(), gpu.alloc::<f32>(s.out_c).unwrap());
    let mut group = c.benchmark_group("conv");
    common::configure(&mut group, Duration::from_millis(1500), Duration::from_millis(300));
    group.throughput(Throughput::Elements(2 * s.macs() as u64));
    for (tile, target) in [(64, 264), (64, WGRAD_TARGET_BLOCKS), (128, WGRAD_T128_TARGET_BLOCKS)] {
        let name = format!("b128_16x16x256_bwd_weight_bf16_t{tile}_target{target}");
        group.bench_function(BenchmarkId::new(name, "cuda"), |bn| {
            timer.iter(bn, || conv2d_bwd_weight_bf16_target(&s, &x, &dy, &mut dw, Some(&mut db), tile, target).unwrap())
        });
    }
    // The input gradient's two tiles on cifar10's 32x32 128-channel convolution at batch 128.
    let s = Conv2dShape::conv3x3(128, 32, 32, 128, 128);
    let (dy, w) = (up(s.y_len()), up(s.w_len()));
    let mut dx = gpu.alloc::<f32>(s.x_len()).unwrap();
    group.throughput(Throughput::Elements(2 * s.macs() as u64));
    for tile in [64, 128] {
        group.bench_function(BenchmarkId::new(format!("b128_32x32x128_bwd_input_bf16_t{tile}"), "cuda"), |bn| {
            timer.iter(bn, || ddpm::cuda::conv_bf16::conv2d_bwd_input_bf16_tiled(tile, &s, &dy, &w, &mut dx).unwrap())
        });
    }
    group.finish();
}

fn benches_conv(c: &mut Criterion) {
    common::bench_on_every_backend!(c, bench_backend);
    if common::wants("emulator") {
        bench_bf16(c, "emulator", &ddpm::gpu::Gpu::emulator().expect("the emulator is built"), &common::Timer::Host);
    }
    if let Some((gpu, timer)) = common::cuda() {
        bench_bf16(c, "cuda", &gpu, &timer);
        bench_narrow_wgrad(c, &gpu, &timer);
        bench_wgrad_targets(c, &gpu, &timer);
    }
}

criterion_group!(benches, benches_conv);
criterion_main!(benches);
