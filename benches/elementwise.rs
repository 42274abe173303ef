//! Criterion benches of the elementwise layer ops (residual adds, channel bias and sums, channel
//! concat/split) on the CPU backend, the emulator and a GPU when present. The shape is a UNet level
//! scaled down so the emulator finishes (batch 2, 16 x 16, 64 channels); all ops are memory bound,
//! so throughput is in bytes moved (each element read or written once). fill and axpy are in
//! benches/ops.rs, at bandwidth-sized buffers. The bf16 ops of `--precision bf16` on CUDA (the
//! operand rounding, the residual stream's widening, add and concat) run on the emulator and a GPU
//! only.

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use ddpm::backend::Layers;
use ddpm::shapes::ImageShape;
use ddpm::testing::{random_vec, rng_for};
use std::time::Duration;

const S: ImageShape = ImageShape { batch: 2, h: 16, w: 16, c: 64 };

fn bench_backend<B: Layers>(c: &mut Criterion, label: &str, b: &B, timer: &common::Timer) {
    let mut rng = rng_for("elementwise_bench");
    let n = S.len();
    let x = b.upload(&random_vec(&mut rng, n, -2.0, 2.0)).unwrap();
    let x2 = b.upload(&random_vec(&mut rng, n, -2.0, 2.0)).unwrap();
    let v = b.upload(&random_vec(&mut rng, S.batch * S.c, -1.0, 1.0)).unwrap();
    let (mut y, mut y2) = (b.alloc(n).unwrap(), b.alloc(n).unwrap());
    let mut dv = b.alloc(S.batch * S.c).unwrap();
    let mut cat = b.alloc(2 * n).unwrap();
    let rows = S.batch * S.h * S.w;

    let mut g = c.benchmark_group("elementwise");
    common::configure(&mut g, Duration::from_millis(1500), Duration::from_millis(300));
    let bytes = (n * 4) as u64;
    let mut bench =
        |name: &str, moved: u64, op: &mut dyn FnMut()| common::bench_bytes(&mut g, timer, (name, label), moved, op);
    bench("add_scaled", 3 * bytes, &mut || b.add_scaled(&x, &x2, 1.41, &mut y).unwrap());
    bench("div_scalar", 2 * bytes, &mut || b.div_scalar(&x, 1.41, &mut y).unwrap());
    bench("add_channel_bias", 2 * bytes, &mut || b.add_channel_bias(&S, &x, &v, &mut y).unwrap());
    bench("channel_sum", bytes, &mut || b.channel_sum(&S, &x, &mut dv).unwrap());
    bench("concat_channels", 4 * bytes, &mut || b.concat_channels(rows, S.c, S.c, &x, &x2, &mut cat).unwrap());
    bench("split_channels", 4 * bytes, &mut || b.split_channels(rows, S.c, S.c, &cat, &mut y, &mut y2).unwrap());
    g.finish();
}

/// The bf16 ops of `--precision bf16` on CUDA, beside the f32 rows of `bench_backend` on the same
/// device: f32 -> bf16 rounding (the operands), and the residual stream's widening, residual add
/// and concatenation (kernels/stream_bf16.cu), each with the bytes it moves.
fn bench_bf16(c: &mut Criterion, label: &str, gpu: &ddpm::gpu::Gpu, timer: &common::Timer) {
    use ddpm::cuda::stream_bf16;
    use half::bf16;
    let (n, rows) = (S.len(), S.batch * S.h * S.w);
    let x = gpu.upload(&random_vec(&mut rng_for("round_bf16_bench"), n, -2.0, 2.0)).unwrap();
    let (mut y, mut xs, mut cat) =
        (gpu.alloc::<bf16>(n).unwrap(), gpu.alloc::<bf16>(n).unwrap(), gpu.alloc::<bf16>(2 * n).unwrap());
    ddpm::cuda::elementwise::round_bf16_f32(&x, &mut xs).unwrap();
    let mut wide = gpu.alloc::<f32>(n).unwrap();
    let mut g = c.benchmark_group("elementwise");
    common::configure(&mut g, Duration::from_millis(1500), Duration::from_millis(300));
    let n = n as u64;
    let mut bench =
        |name: &str, moved: u64, op: &mut dyn FnMut()| common::bench_bytes(&mut g, timer, (name, label), moved, op);
    bench("round_bf16", 6 * n, &mut || ddpm::cuda::elementwise::round_bf16_f32(&x, &mut y).unwrap());
    bench("widen_bf16", 6 * n, &mut || stream_bf16::widen_bf16(&xs, &mut wide).unwrap());
    bench("add_scaled_to_bf16", 8 * n, &mut || stream_bf16::add_scaled_to_bf16_bf16(&xs, &x, 1.41, &mut y).unwrap());
    bench("concat_channels_bf16", 8 * n, &mut || {
        stream_bf16::concat_channels_bf16(rows, S.c, S.c, &xs, &xs, &mut cat).unwrap()
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    common::bench_on_every_backend!(c, bench_backend);
    if common::wants("emulator") {
        bench_bf16(c, "emulator", &ddpm::gpu::Gpu::emulator().expect("the emulator is built"), &common::Timer::Host);
    }
    if let Some((gpu, timer)) = common::cuda() {
        bench_bf16(c, "cuda", &gpu, &timer);
    }
}

criterion_group!(elementwise, benches);
criterion_main!(elementwise);
