//! Criterion benches of nearest 2x upsampling and its backward on the CPU backend, the emulator
//! and a GPU when present. The shape is a UNet level scaled down so the emulator finishes (batch 2,
//! 16 x 16, 64 channels); both are memory bound, so throughput is in bytes moved.

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use ddpm::backend::Layers;
use ddpm::shapes::ImageShape;
use ddpm::testing::{random_vec, rng_for};
use std::time::Duration;

const S: ImageShape = ImageShape { batch: 2, h: 16, w: 16, c: 64 };

fn bench_backend<B: Layers>(c: &mut Criterion, label: &str, b: &B, timer: &common::Timer) {
    let mut rng = rng_for("resample_bench");
    let n = S.len();
    let x = b.upload(&random_vec(&mut rng, n, -2.0, 2.0)).unwrap();
    let big = b.upload(&random_vec(&mut rng, 4 * n, -1.0, 1.0)).unwrap();
    let (mut y, mut y_big) = (b.alloc(n).unwrap(), b.alloc(4 * n).unwrap());

    let mut g = c.benchmark_group("resample");
    common::configure(&mut g, Duration::from_millis(1500), Duration::from_millis(300));
    let bytes = (n * 4) as u64;
    let mut bench =
        |name: &str, moved: u64, op: &mut dyn FnMut()| common::bench_bytes(&mut g, timer, (name, label), moved, op);
    bench("upsample_nearest2x_fwd", 5 * bytes, &mut || b.upsample_nearest2x_fwd(&S, &x, &mut y_big).unwrap());
    bench("upsample_nearest2x_bwd", 5 * bytes, &mut || b.upsample_nearest2x_bwd(&S, &big, &mut y).unwrap());
    g.finish();
}

/// The forward into bf16 (an upsampler's image for its bf16 convolution), CUDA only: from f32
/// (read 4 bytes, write 4 x 2 per input element) and from the bf16 residual stream.
fn bench_to_bf16(c: &mut Criterion, label: &str, gpu: &ddpm::gpu::Gpu, timer: &common::Timer) {
    let mut rng = rng_for("resample_bench");
    let x = gpu.upload(&random_vec(&mut rng, S.len(), -2.0, 2.0)).unwrap();
    let mut y = gpu.alloc::<half::bf16>(4 * S.len()).unwrap();
    let mut g = c.benchmark_group("resample");
    common::configure(&mut g, Duration::from_millis(1500), Duration::from_millis(300));
    let moved = (S.len() * 12) as u64;
    common::bench_bytes(&mut g, timer, ("upsample_nearest2x_fwd_to_bf16", label), moved, &mut || {
        ddpm::cuda::resample::upsample_nearest2x_fwd_to_bf16_f32(&S, &x, &mut y).unwrap()
    });
    // From the residual stream in bf16: read 2 bytes, write 4 x 2.
    let mut xs = gpu.alloc::<half::bf16>(S.len()).unwrap();
    ddpm::cuda::elementwise::round_bf16_f32(&x, &mut xs).unwrap();
    common::bench_bytes(&mut g, timer, ("upsample_nearest2x_fwd_bf16", label), (S.len() * 10) as u64, &mut || {
        ddpm::cuda::resample::upsample_nearest2x_fwd_bf16(&S, &xs, &mut y).unwrap()
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    common::bench_on_every_backend!(c, bench_backend);
    if common::wants("emulator") {
        let emu = ddpm::gpu::Gpu::emulator().expect("the emulator is built");
        bench_to_bf16(c, "emulator", &emu, &common::Timer::Host);
    }
    if let Some((gpu, timer)) = common::cuda() {
        bench_to_bf16(c, "cuda", &gpu, &timer);
    }
}

criterion_group!(resample, benches);
criterion_main!(resample);
