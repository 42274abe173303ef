//! Criterion benches of the fast CPU convolution (src/fast/conv.rs) on the cifar10 UNet's conv
//! shapes at batch 16 (training) and 1 (sampling one image), plus the reference on one small
//! shape for scale. Throughput is in FLOPs (2 per multiply-add; the backward ops do as many as
//! the forward), so criterion's "elem/s" reads as FLOP/s.

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use ddpm::cpu::conv as reference;
use ddpm::fast::conv as fast;
use ddpm::shapes::Conv2dShape;
use ddpm::testing::{random_vec, rng_for};
use std::time::Duration;

/// (name, shape, also at batch 1): the cifar10 UNet's convolutions, at batch 16.
fn cifar10_shapes() -> Vec<(&'static str, Conv2dShape, bool)> {
    vec![
        ("3x3_128_32x32", Conv2dShape::conv3x3(16, 32, 32, 128, 128), true),
        ("3x3_256_16x16", Conv2dShape::conv3x3(16, 16, 16, 256, 256), true),
        ("3x3_256_8x8", Conv2dShape::conv3x3(16, 8, 8, 256, 256), true),
        ("3x3_512to256_4x4", Conv2dShape::conv3x3(16, 4, 4, 512, 256), false),
        ("3x3_384to128_32x32", Conv2dShape::conv3x3(16, 32, 32, 384, 128), false),
        ("conv_in_3to128_32x32", Conv2dShape::conv3x3(16, 32, 32, 3, 128), false),
        ("conv_out_128to3_32x32", Conv2dShape::conv3x3(16, 32, 32, 128, 3), false),
        ("1x1_384to128_32x32", Conv2dShape::conv1x1(16, 32, 32, 384, 128), true),
        ("1x1_512to256_16x16", Conv2dShape::conv1x1(16, 16, 16, 512, 256), false),
        ("down_128_32to16", Conv2dShape::downsample(16, 32, 32, 128, 128, 1), true),
        ("down_256_16to8", Conv2dShape::downsample(16, 16, 16, 256, 256, 1), false),
    ]
}

type Op = fn(&Conv2dShape, &Buffers);

struct Buffers {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
    out: std::cell::RefCell<[Vec<f32>; 4]>,
}

impl Buffers {
    fn new(s: &Conv2dShape) -> Self {
        let mut rng = rng_for("fast_conv bench");
        Buffers {
            x: random_vec(&mut rng, s.x_len(), -1.0, 1.0),
            w: random_vec(&mut rng, s.w_len(), -1.0, 1.0),
            b: random_vec(&mut rng, s.out_c, -1.0, 1.0),
            dy: random_vec(&mut rng, s.y_len(), -1.0, 1.0),
            out: std::cell::RefCell::new([
                vec![0.0; s.y_len()],
                vec![0.0; s.x_len()],
                vec![0.0; s.w_len()],
                vec![0.0; s.out_c],
            ]),
        }
    }
}

fn fast_ops() -> [(&'static str, Op); 3] {
    [
        ("fwd", |s, d| fast::conv2d_fwd(s, &d.x, &d.w, Some(&d.b), &mut d.out.borrow_mut()[0])),
        ("bwd_input", |s, d| fast::conv2d_bwd_input(s, &d.dy, &d.w, &mut d.out.borrow_mut()[1])),
        ("bwd_weight", |s, d| {
            let [_, _, dw, db] = &mut *d.out.borrow_mut();
            fast::conv2d_bwd_weight(s, &d.x, &d.dy, dw, Some(db))
        }),
    ]
}

fn reference_ops() -> [(&'static str, Op); 3] {
    [
        ("fwd", |s, d| reference::conv2d_fwd(s, &d.x, &d.w, Some(&d.b), &mut d.out.borrow_mut()[0])),
        ("bwd_input", |s, d| reference::conv2d_bwd_input(s, &d.dy, &d.w, &mut d.out.borrow_mut()[1])),
        ("bwd_weight", |s, d| {
            let [_, _, dw, db] = &mut *d.out.borrow_mut();
            reference::conv2d_bwd_weight(s, &d.x, &d.dy, dw, Some(db))
        }),
    ]
}

fn bench_shape(c: &mut Criterion, label: &str, s: Conv2dShape, ops: [(&'static str, Op); 3]) {
    let mut group = c.benchmark_group("fast_conv");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_millis(600)).warm_up_time(Duration::from_millis(200));
    group.throughput(Throughput::Elements(2 * s.macs() as u64));
    let d = Buffers::new(&s);
    for (op, run) in ops {
        group.bench_function(BenchmarkId::new(label, op), |bn| bn.iter(|| run(&s, &d)));
    }
    group.finish();
}

fn benches_fast_conv(c: &mut Criterion) {
    for (name, s, batch_1_too) in cifar10_shapes() {
        bench_shape(c, &format!("{name}_b16"), s, fast_ops());
        if batch_1_too {
            bench_shape(c, &format!("{name}_b1"), Conv2dShape { batch: 1, ..s }, fast_ops());
        }
    }
    let small = Conv2dShape::conv3x3(2, 16, 16, 64, 64);
    bench_shape(c, "3x3_64_16x16_b2", small, fast_ops());
    bench_shape(c, "reference_3x3_64_16x16_b2", small, reference_ops());
}

criterion_group! {
    name = benches;
    // Plots take longer to draw than these benches take to run.
    config = Criterion::default().without_plots();
    targets = benches_fast_conv
}
criterion_main!(benches);
