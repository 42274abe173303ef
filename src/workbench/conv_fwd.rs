//! Conv2d forward (NHWC x, OHWI w, optional bias) in the workbench. Every variant takes
//! conv2d_fwd_f32's parameters (kernels/conv.cu): x, w, bias or null, y, then batch, in_h, in_w,
//! in_c, out_h, out_w, out_c, k, stride, pad_top, pad_left. The first variant is the production
//! kernel: the others are measured against it.

use super::{BenchOptions, BenchRow, CheckLine, CheckOptions, Op};
use crate::gpu::{Buffer, DeviceTimer, Gpu, KernelArgs, LaunchConfig};
use crate::shapes::{Conv2dShape, Padding};
use crate::testing::{compare, random_vec};
use anyhow::{Context, Result, bail};
use rand::{SeedableRng, rngs::StdRng};

/// A launcher with the production launcher's signature (src/cuda/conv.rs).
pub type Launcher = fn(&Conv2dShape, &Buffer<f32>, &Buffer<f32>, Option<&Buffer<f32>>, &mut Buffer<f32>) -> Result<()>;

/// How a variant is launched.
#[derive(Clone, Copy)]
pub enum Launch {
    /// Its own launcher (grid, block, shared memory chosen there).
    Launcher(Launcher),
    /// One thread per output element: 256-thread blocks, grid-stride past 65535 blocks.
    PerOutput,
}

/// One kernel variant of the op.
#[derive(Clone, Copy)]
pub struct Variant {
    /// Its name in --check lines and --bench tables.
    pub name: &'static str,
    /// The `extern "C" __global__` function it launches.
    pub kernel: &'static str,
    pub launch: Launch,
}

/// The registry: adding a variant is one kernel file in kernels/ plus one line here.
/// The first is the production kernel, the one the others are compared with in --bench.
pub static VARIANTS: &[Variant] = &[
    Variant::launcher("tiled_simt", "conv2d_fwd_f32", crate::cuda::conv::conv2d_fwd_f32),
    Variant::per_output("naive", "conv2d_fwd_naive_f32"),
];

pub const SHAPE_SYNTAX: &str = "b,cin,h,w,cout,k,stride[,pad] (pad: P on every side, or A+B for A top/left and \
                                B bottom/right; default k/2)";

pub static OP: Op = Op {
    name: "conv_fwd",
    about: "conv2d forward, f32 (kernels/conv.cu and its variants)",
    shape_syntax: SHAPE_SYNTAX,
    variant_names: || VARIANTS.iter().map(|v| v.name).collect(),
    check: |gpu, opts| check_variants(gpu, VARIANTS, &check_shapes(), opts),
    bench,
};

impl Variant {
    /// A variant launched by its own launcher (grid, block and shared memory chosen there).
    pub const fn launcher(name: &'static str, kernel: &'static str, launch: Launcher) -> Self {
        Variant { name, kernel, launch: Launch::Launcher(launch) }
    }

    /// A variant launched with one thread per output element ([`Launch::PerOutput`]).
    pub const fn per_output(name: &'static str, kernel: &'static str) -> Self {
        Variant { name, kernel, launch: Launch::PerOutput }
    }

    /// Runs the variant: y = conv(x, w) + b.
    pub fn run(
        &self,
        s: &Conv2dShape,
        x: &Buffer<f32>,
        w: &Buffer<f32>,
        b: Option<&Buffer<f32>>,
        y: &mut Buffer<f32>,
    ) -> Result<()> {
        match self.launch {
            Launch::Launcher(f) => f(s, x, w, b, y),
            Launch::PerOutput => {
                let n = s.y_len();
                u32::try_from(n.max(s.x_len()).max(s.w_len()))
                    .context("conv_fwd: shape too large for 32-bit indices")?;
                let args = KernelArgs::new().buf(x).buf(w);
                let args = match b {
                    Some(b) => args.buf(b),
                    None => args.null(),
                };
                let g = [
                    s.batch,
                    s.in_h,
                    s.in_w,
                    s.in_c,
                    s.out_h(),
                    s.out_w(),
                    s.out_c,
                    s.kernel,
                    s.stride,
                    s.pad.top,
                    s.pad.left,
                ];
                let args = g.into_iter().fold(args.buf(y), |a, v| a.u32(v as u32));
                x.gpu().launch(self.kernel, LaunchConfig::for_elements(n, 256), &args)
            }
        }
    }
}

/// The check shapes: 3x3 and 1x1, stride 1 and 2, symmetric and diffusers' asymmetric downsample
/// padding, odd sizes and channel counts on both sides of the kernels' 64-wide tiles.
pub fn check_shapes() -> Vec<Conv2dShape> {
    vec![
        Conv2dShape::conv3x3(1, 3, 3, 1, 1),
        Conv2dShape::conv3x3(1, 5, 7, 3, 5),
        Conv2dShape::conv3x3(2, 9, 11, 13, 70),
        Conv2dShape::conv1x1(3, 7, 5, 65, 3),
        Conv2dShape::conv1x1(1, 12, 12, 7, 67),
        Conv2dShape::downsample(2, 9, 9, 17, 33, 1),
        Conv2dShape::downsample(1, 8, 10, 6, 7, 0),
    ]
}

/// The default bench shapes: the UNet's (cifar10 preset, batch 16) on a GPU; small ones on the
/// emulator, where a full-size convolution takes minutes.
pub fn default_bench_shapes(gpu: &Gpu) -> Vec<&'static str> {
    if gpu.is_emulator() {
        vec!["1,32,16,16,32,3,1", "1,64,8,8,64,1,1", "1,32,16,16,32,3,2"]
    } else {
        vec!["16,128,32,32,128,3,1", "16,256,16,16,256,3,1", "16,128,32,32,256,1,1", "16,256,32,32,256,3,2"]
    }
}

/// Parses [`SHAPE_SYNTAX`].
pub fn parse_shape(text: &str) -> Result<Conv2dShape> {
    let bad = || format!("bad conv_fwd shape {text:?}: expected {SHAPE_SYNTAX}");
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if !(7..=8).contains(&parts.len()) {
        bail!("{}", bad());
    }
    let n: Vec<usize> = parts[..7].iter().map(|p| p.parse()).collect::<Result<_, _>>().with_context(bad)?;
    let pad = match parts.get(7) {
        None => Padding::same(n[5] / 2),
        Some(p) => match p.split_once('+') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().with_context(bad)?, b.parse().with_context(bad)?);
                Padding { top: a, left: a, bottom: b, right: b }
            }
            None => Padding::same(p.parse().with_context(bad)?),
        },
    };
    let s =
        Conv2dShape { batch: n[0], in_c: n[1], in_h: n[2], in_w: n[3], out_c: n[4], kernel: n[5], stride: n[6], pad };
    s.validate().with_context(bad)?;
    Ok(s)
}

/// The shape in [`SHAPE_SYNTAX`], padding spelled out.
pub fn label(s: &Conv2dShape) -> String {
    let p = s.pad;
    let pad = if p == Padding::same(p.top) { p.top.to_string() } else { format!("{}+{}", p.top, p.bottom) };
    format!("{},{},{},{},{},{},{},{pad}", s.batch, s.in_c, s.in_h, s.in_w, s.out_c, s.kernel, s.stride)
}

/// The CPU reference's tolerance: f32 sums of `terms` products in a different rounding (fmaf on
/// the device), as tests/common/conv_checks.rs allows.
fn atol(terms: usize) -> f32 {
    1e-6 + 2e-7 * terms as f32
}
const RTOL: f32 = 1e-5;

/// Every variant on every shape against crate::cpu::conv::conv2d_fwd, on fresh inputs from
/// `opts.seed` (bias on every other shape) with the output NaN-poisoned before each run.
pub fn check_variants(
    gpu: &Gpu,
    variants: &[Variant],
    shapes: &[Conv2dShape],
    opts: &CheckOptions,
) -> Result<Vec<CheckLine>> {
    if let Some(p) = &opts.plant
        && !variants.iter().any(|v| v.name == p)
    {
        let names: Vec<&str> = variants.iter().map(|v| v.name).collect();
        bail!("DDPM_WORKBENCH_PLANT={p:?} names no conv_fwd variant; variants: {}", names.join(", "));
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut lines = Vec::new();
    for (i, s) in shapes.iter().enumerate() {
        let bias = i % 2 == 1;
        let x = random_vec(&mut rng, s.x_len(), -1.0, 1.0);
        let w = random_vec(&mut rng, s.w_len(), -1.0, 1.0);
        let b = random_vec(&mut rng, s.out_c, -1.0, 1.0);
        let mut want = vec![0.0; s.y_len()];
        crate::cpu::conv::conv2d_fwd(s, &x, &w, bias.then_some(&b[..]), &mut want);
        let (gx, gw, gb) = (gpu.upload(&x)?, gpu.upload(&w)?, gpu.upload(&b)?);
        let shape = format!("{}{}", label(s), if bias { " +bias" } else { "" });
        for v in variants {
            let mut y = gpu.upload(&vec![f32::NAN; s.y_len()])?;
            let ran = v.run(s, &gx, &gw, bias.then_some(&gb), &mut y).and_then(|()| gpu.download(&y));
            let outcome = match ran {
                Err(e) => Err(format!("did not run: {e:#}")),
                Ok(mut got) => {
                    let planted = opts.plant.as_deref() == Some(v.name);
                    if planted {
                        let at = got.len() / 2;
                        got[at] += 1.0;
                    }
                    compare(&got, &want, atol(s.kernel * s.kernel * s.in_c + 1), RTOL)
                        .map(|()| max_abs_err(&got, &want))
                        .map_err(|m| format!("{m}{}", if planted { " (planted fault)" } else { "" }))
                }
            };
            lines.push(CheckLine { op: OP.name, variant: v.name, shape: shape.clone(), outcome });
        }
    }
    Ok(lines)
}

fn max_abs_err(got: &[f32], want: &[f32]) -> f32 {
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max)
}

/// Every variant on every shape (the defaults for the device when `shapes` is empty), with bias:
/// the median of `opts.iters` runs, each timed alone by device events after an L2 flush
/// (gpu::DeviceTimer; on the emulator host clocks and no flush).
fn bench(gpu: &Gpu, shapes: &[String], opts: &BenchOptions) -> Result<Vec<BenchRow>> {
    let texts: Vec<String> = if shapes.is_empty() {
        default_bench_shapes(gpu).into_iter().map(String::from).collect()
    } else {
        shapes.to_vec()
    };
    let parsed: Vec<Conv2dShape> = texts.iter().map(|t| parse_shape(t)).collect::<Result<_>>()?;
    let timer = DeviceTimer::new(gpu)?;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut rows = Vec::new();
    for s in &parsed {
        let x = gpu.upload(&random_vec(&mut rng, s.x_len(), -1.0, 1.0))?;
        let w = gpu.upload(&random_vec(&mut rng, s.w_len(), -1.0, 1.0))?;
        let b = gpu.upload(&random_vec(&mut rng, s.out_c, -1.0, 1.0))?;
        let mut y = gpu.alloc::<f32>(s.y_len())?;
        for v in VARIANTS {
            let mut run = || v.run(s, &x, &w, Some(&b), &mut y);
            run().with_context(|| format!("conv_fwd {} on {}", v.name, label(s)))?;
            let mut times = Vec::with_capacity(opts.iters);
            for _ in 0..opts.iters.max(1) {
                times.push(timer.time_batch(1, &mut run)?.as_secs_f64());
            }
            let seconds = super::median(&mut times);
            rows.push(BenchRow { variant: v.name, shape: label(s), seconds, flops: 2.0 * s.macs() as f64 });
        }
    }
    Ok(rows)
}
