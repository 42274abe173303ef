//! The cifar10 UNet's convolutions (src/model/convs.rs), each distinct shape timed at the batches
//! asked for: the tensor-core forward (conv2d_fwd_bf16, bf16 in and out, bias) and the f32 SIMT
//! forward (conv2d_fwd_f32) beside it. One line per row, `key=value` fields, which
//! scripts/gpu-check joins with benches/pytorch_convs.py's lines for the same shapes.
//!
//!   conv_table --bench cuda|emulator [--batches 1,16,128] [--iters 20] [--reps 5] [--max-mflop N]
//!   conv_table --list [--batches ...] [--max-mflop N]   the shapes, one `shape` line each (for
//!                                                       benches/pytorch_convs.py)
//!
//! Timing (src/gpu/timing.rs, the same policy pytorch_convs.py follows): one warm-up call, then
//! `reps` batches of `iters` launches back to back between device events, the L2 flushed before
//! each batch; the median batch over `iters`. Data that fits in the L2 (every batch-1 shape) is
//! therefore read from it after a batch's first launch, on both sides alike. Inputs are random
//! (zeros can run faster). Without --bench (`cargo test --benches`) it prints the shape list only.

use anyhow::{Context, Result, bail};
use ddpm::cuda::conv::conv2d_fwd_f32;
use ddpm::cuda::conv_bf16::{ConvOut, conv2d_fwd_bf16};
use ddpm::gpu::{DeviceTimer, Gpu, bf16_dense_peak};
use ddpm::model::UNetConfig;
use ddpm::model::convs::{ConvUse, conv_shapes, shape_key};
use ddpm::shapes::Conv2dShape;
use ddpm::testing::{random_vec, rng_for};
use half::bf16;

struct Args {
    device: Option<String>,
    list: bool,
    batches: Vec<usize>,
    iters: u64,
    reps: usize,
    max_mflop: Option<f64>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args { device: None, list: false, batches: vec![1, 16, 128], iters: 20, reps: 5, max_mflop: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => a.device = Some(a.device.take().unwrap_or_else(|| "cuda".into())),
            "--list" => a.list = true,
            "--batches" => a.batches = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--iters" => a.iters = value()?.parse()?,
            "--reps" => a.reps = value()?.parse()?,
            "--max-mflop" => a.max_mflop = Some(value()?.parse()?),
            "cuda" | "emulator" => a.device = Some(arg.clone()),
            // cargo test passes its own flags (--test-threads and the like): test mode.
            _ if arg.starts_with("--") => {}
            _ => bail!("conv_table: unknown argument {arg:?}"),
        }
    }
    if a.iters == 0 || a.reps == 0 {
        bail!("conv_table: --iters and --reps must be at least 1");
    }
    Ok(a)
}

/// The cifar10 UNet's distinct convolutions at each batch, and how many rows --max-mflop left out.
fn rows(a: &Args) -> (Vec<ConvUse>, usize) {
    let c = UNetConfig::cifar10();
    let all: Vec<ConvUse> = a.batches.iter().flat_map(|&n| conv_shapes(&c, n)).collect();
    let n = all.len();
    let kept: Vec<ConvUse> =
        all.into_iter().filter(|u| a.max_mflop.is_none_or(|m| 2.0 * u.shape.macs() as f64 <= m * 1e6)).collect();
    let left_out = n - kept.len();
    (kept, left_out)
}

fn print_list(a: &Args) {
    for u in rows(a).0 {
        let (s, p) = (&u.shape, u.shape.pad);
        println!(
            "shape key={} batch={} h={} w={} cin={} cout={} k={} stride={} pad={},{},{},{} count={} first={}",
            shape_key(s),
            s.batch,
            s.in_h,
            s.in_w,
            s.in_c,
            s.out_c,
            s.kernel,
            s.stride,
            p.top,
            p.bottom,
            p.left,
            p.right,
            u.count,
            u.first
        );
    }
}

/// Median milliseconds per call of `f` (see the module comment).
fn time_ms(gpu: &Gpu, timer: &DeviceTimer, a: &Args, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    gpu.synchronize()?;
    let mut t = (0..a.reps)
        .map(|_| Ok(timer.time_batch(a.iters, f)?.as_secs_f64() * 1e3 / a.iters as f64))
        .collect::<Result<Vec<f64>>>()?;
    gpu.synchronize()?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// (ours ms, f32 ms) for one shape; ours is None when the tensor-core kernel cannot take it.
fn time_shape(gpu: &Gpu, timer: &DeviceTimer, a: &Args, s: &Conv2dShape) -> Result<(Option<f64>, f64)> {
    let mut rng = rng_for(&shape_key(s));
    let (x, w) = (random_vec(&mut rng, s.x_len(), -1.0, 1.0), random_vec(&mut rng, s.w_len(), -1.0, 1.0));
    let bias = gpu.upload(&random_vec(&mut rng, s.out_c, -1.0, 1.0))?;
    let to_bf16 = |v: &[f32]| v.iter().map(|&f| bf16::from_f32(f)).collect::<Vec<_>>();
    let ours = if s.in_c.is_multiple_of(8) {
        let (xb, wb) = (gpu.upload(&to_bf16(&x))?, gpu.upload(&to_bf16(&w))?);
        let mut y = gpu.alloc::<bf16>(s.y_len())?;
        Some(time_ms(gpu, timer, a, &mut || {
            conv2d_fwd_bf16(s, &xb, &wb, Some(&bias), None, ConvOut::Bf16 { y: &mut y, residual: None })
        })?)
    } else {
        None
    };
    let (xf, wf) = (gpu.upload(&x)?, gpu.upload(&w)?);
    let mut y = gpu.alloc::<f32>(s.y_len())?;
    let f32_ms = time_ms(gpu, timer, a, &mut || conv2d_fwd_f32(s, &xf, &wf, Some(&bias), &mut y))?;
    Ok((ours, f32_ms))
}

fn bench(device: &str, a: &Args) -> Result<()> {
    let gpu = match device {
        "emulator" => Gpu::emulator()?,
        _ => Gpu::cuda(0)?,
    };
    let timer = DeviceTimer::new(&gpu)?;
    let peak = bf16_dense_peak(&gpu)?;
    let clock = if gpu.is_emulator() { "emulator time (host clock), not a GPU's" } else { "device events" };
    println!("device {} ({clock}); {} launches per batch, median of {} batches", gpu.name(), a.iters, a.reps);
    match &peak {
        Some((tf, how)) => println!("peak bf16 dense {tf:.0} TFLOP/s = {how}"),
        None => println!("peak bf16 dense unknown on this device (% of peak left out)"),
    }
    let (rows, left_out) = rows(a);
    for u in rows {
        let s = &u.shape;
        let flop = 2.0 * s.macs() as f64;
        let (ours, f32_ms) = time_shape(&gpu, &timer, a, s).with_context(|| format!("timing {}", shape_key(s)))?;
        let tflops = ours.map(|ms| flop / (ms * 1e-3) / 1e12);
        let fmt = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
        let note = if ours.is_none() { format!(" note=no_tensor_cores_in_c_{}", s.in_c) } else { String::new() };
        println!(
            "conv key={} batch={} count={} gflop={:.4} ours_ms={} tflops={} peak_pct={} f32_ms={:.4}{note}",
            shape_key(s),
            s.batch,
            u.count,
            flop / 1e9,
            fmt(ours, 4),
            fmt(tflops, 1),
            fmt(tflops.zip(peak.as_ref()).map(|(t, (p, _))| 100.0 * t / p), 1),
            f32_ms
        );
    }
    if left_out > 0 {
        println!("left out: {left_out} rows over --max-mflop {}", a.max_mflop.unwrap_or(0.0));
    }
    Ok(())
}

fn main() -> Result<()> {
    let a = parse_args()?;
    match &a.device {
        Some(d) if !a.list => bench(d, &a),
        _ => {
            print_list(&a);
            Ok(())
        }
    }
}
