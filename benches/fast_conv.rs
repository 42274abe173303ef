//! Criterion benches of the fast CPU convolution (src/fast/conv.rs) on the cifar10 UNet's conv
//! shapes at batch 16 (training) and 1 (sampling one image), plus the reference on one small
//! shape for scale. Throughput is in FLOPs (2 per multiply-add; the backward ops do as many as
//! the forward), so criterion's "elem/s" reads as FLOP/s.
//!
//! The `fast_conv_bf16` group (issue #11: bf16 slower than f32 on an AVX-512 BF16 Xeon) puts, per
//! shape, the f32 forward production runs (Winograd or im2col) beside the bf16 forward with
//! vdpbf16ps (`bf16_native_fwd`, or `bf16_EMULATED_fwd` where the CPU lacks AVX-512 BF16: an
//! upper bound only), with AMX tiles (`bf16_amx_fwd`, src/fast/amx.rs: production's choice where
//! the CPU and OS allow it), the same forward without its products (`bf16_pack_only`:
//! im2col, rounding, packing, stores; the products cost the difference) and the weights' packing
//! alone (`bf16_pack_w`, part of both). The run first prints the CPU's flags, the chosen kernels
//! and one core's peaks of vdpbf16ps, vfmadd231ps and (where AMX runs) tdpbf16ps. `--bench
//! fast_conv_bf16` runs that group alone; `DDPM_NO_WINOGRAD=1` turns f32_fwd into f32 im2col.

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use ddpm::cpu::conv as reference;
use ddpm::fast::conv as fast;
use ddpm::fast::gemm::Mat;
use ddpm::fast::gemm_bf16::{Bf16Kernel, PackedRhs};
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

/// The bf16 forward beside f32's, split into packing and products (see the module docs).
fn bench_bf16(c: &mut Criterion, label: &str, s: Conv2dShape) {
    let (kernel, name) = match Bf16Kernel::native() {
        Some(k) => (k, "bf16_native_fwd"),
        None => (Bf16Kernel::Emulated, "bf16_EMULATED_fwd"),
    };
    let mut group = c.benchmark_group("fast_conv_bf16");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_millis(400)).warm_up_time(Duration::from_millis(100));
    group.throughput(Throughput::Elements(2 * s.macs() as u64));
    let d = Buffers::new(&s);
    let mut y = vec![0.0; s.y_len()];
    let b = Some(&d.b[..]);
    group.bench_function(BenchmarkId::new(label, "f32_fwd"), |bn| {
        bn.iter(|| fast::conv2d_fwd(&s, &d.x, &d.w, b, &mut y))
    });
    group.bench_function(BenchmarkId::new(label, name), |bn| {
        bn.iter(|| fast::conv2d_fwd_bf16(kernel, &s, &d.x, &d.w, b, &mut y))
    });
    if let Some(amx) = Bf16Kernel::amx() {
        group.bench_function(BenchmarkId::new(label, "bf16_amx_fwd"), |bn| {
            bn.iter(|| fast::conv2d_fwd_bf16(amx, &s, &d.x, &d.w, b, &mut y))
        });
    }
    group.bench_function(BenchmarkId::new(label, "bf16_pack_only"), |bn| {
        bn.iter(|| fast::conv2d_fwd_bf16(Bf16Kernel::PackOnly, &s, &d.x, &d.w, b, &mut y))
    });
    let w_t = Mat::rows(&d.w, s.out_c, s.kernel * s.kernel * s.in_c).t();
    group.bench_function(BenchmarkId::new(label, "bf16_pack_w"), |bn| bn.iter(|| PackedRhs::new(w_t)));
    group.finish();
}

/// What the numbers ran on: SIMD level, bf16 path, the CPU's AVX-512 / AMX flags, the peaks.
fn print_machine() {
    println!("fast_conv: {}", ddpm::fast::simd::SimdLevel::describe());
    println!("fast_conv: bf16 path: {}", ddpm::fast::bf16::path_name());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find(|l| l.starts_with("model name")).unwrap_or("model name: ?");
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let wanted: Vec<&str> = flags
        .split_whitespace()
        .filter(|f| f.starts_with("avx512") || f.starts_with("amx") || f.contains("bf16"))
        .collect();
    println!("fast_conv: {model}; flags: {}", wanted.join(" "));
    println!("fast_conv: {}", peak::report());
}

fn benches_fast_conv(c: &mut Criterion) {
    print_machine();
    for (name, s, batch_1_too) in cifar10_shapes() {
        bench_bf16(c, &format!("{name}_b16"), s);
        if batch_1_too {
            bench_bf16(c, &format!("{name}_b1"), Conv2dShape { batch: 1, ..s });
        }
    }
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

/// Single-core peaks of the multiply instructions (one thread, register-only chains): whether
/// `vdpbf16ps` (32 products) really issues as fast as `vfmadd231ps` (16) on this core, which is
/// what the bf16 path's 2x rests on. The FMA and vdpbf16ps figures are the ones the bf16 path
/// chooses by (`ddpm::fast::simd::avx512_peaks`); AMX's is measured here.
mod peak {
    use std::time::Instant;

    /// Iterations of the AMX loop.
    const ITERS: usize = 100_000;

    /// GMAC/s of tdpbf16ps (16 x 16 outputs x 32 products) on four independent C tiles, best of 5;
    /// None where AMX is not available (the same check as the kernel's).
    #[cfg(target_arch = "x86_64")]
    fn amx_rate() -> Option<f64> {
        use std::arch::asm;
        ddpm::fast::gemm_bf16::Bf16Kernel::amx()?;
        #[repr(C, align(64))]
        struct Cfg([u8; 64]);
        let cfg = Cfg(ddpm::fast::amx::tile_config());
        let run = || {
            // SAFETY: AMX is available (checked above); the tiles are configured before use,
            // hold zeros (products of zeros), and are released after.
            unsafe {
                asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
                asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
                asm!("tilezero tmm4", "tilezero tmm5", "tilezero tmm6", "tilezero tmm7", options(nostack, nomem));
                for _ in 0..ITERS {
                    asm!(
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        options(nostack, nomem)
                    );
                }
                asm!("tilerelease", options(nostack, nomem));
            }
        };
        let best = (0..5)
            .map(|_| {
                let t = Instant::now();
                run();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        Some((ITERS * 4 * 16 * 16 * 32) as f64 / best / 1e9)
    }

    pub fn report() -> String {
        #[cfg(target_arch = "x86_64")]
        if let Some(p) = ddpm::fast::simd::avx512_peaks() {
            let fma = p.fma512;
            let dp = p.dpbf16.map_or("no AVX-512 BF16".to_string(), |r| format!("{r:.0} GMAC/s ({:.2}x)", r / fma));
            let tiles = amx_rate().map_or("no AMX".to_string(), |r| format!("{r:.0} GMAC/s ({:.1}x)", r / fma));
            return format!("one core's peak: vfmadd231ps zmm {fma:.0} GMAC/s, vdpbf16ps zmm {dp}, tdpbf16ps {tiles}");
        }
        "one core's peak: no AVX-512 here".to_string()
    }
}

criterion_group! {
    name = benches;
    // Plots take longer to draw than these benches take to run.
    config = Criterion::default().without_plots();
    targets = benches_fast_conv
}
criterion_main!(benches);
