//! `ddpm sample`: images from a trained model (a run directory or a diffusers model/pipeline
//! folder), with DDPM or DDIM, reproducible seed for seed (Philox), or image for image with
//! diffusers' pipelines (`--rng torch`).

use super::device::Device;
use crate::backend::{Layers, SamplerOps};
use crate::checkpoint::model::load_model;
use crate::cpu::torch_rng::TorchGenerator;
use crate::diffusion::{DdimScheduler, DdpmScheduler, TimestepSpacing, VarianceType};
use crate::fast::bf16::Precision;
use crate::layout::{nchw_to_nhwc, nhwc_to_nchw};
use crate::model::unet::UNet;
use crate::model::weights::HostParams;
use crate::npy;
use crate::sample::{Launch, NoiseSource, Sampler, generate_with, write_grid};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SampleArgs {
    /// A run directory, a diffusers pipeline folder (unet/ + scheduler/) or a UNet folder.
    #[arg(long)]
    model: PathBuf,
    /// ddpm (ancestral) or ddim.
    #[arg(long, default_value = "ddpm")]
    scheduler: String,
    /// Denoising steps (default: 1000 for ddpm, 50 for ddim).
    #[arg(long)]
    steps: Option<usize>,
    /// DDIM's eta (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    eta: f32,
    /// Overrides the scheduler config: leading, trailing or linspace.
    #[arg(long)]
    timestep_spacing: Option<String>,
    /// Overrides the scheduler config: true or false.
    #[arg(long)]
    clip_sample: Option<bool>,
    /// Overrides the scheduler config (DDPM): fixed_small, fixed_small_log or fixed_large.
    #[arg(long)]
    variance_type: Option<String>,
    /// Number of images.
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// Images per forward pass (default: all of them).
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// philox (same images on every backend) or torch (diffusers' pipelines with
    /// generator=torch.manual_seed(seed), image for image).
    #[arg(long, default_value = "philox")]
    rng: String,
    /// auto, cpu, cuda or emulator.
    #[arg(long, default_value = "auto")]
    device: String,
    /// The PNG grid.
    #[arg(long, default_value = "samples.png")]
    out: PathBuf,
    /// Also write each image as DIR/NNNN.png.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// The initial noise x_T: float32 .npy, NCHW [n, in_channels, size, size].
    #[arg(long)]
    noise: Option<PathBuf>,
    /// Write the final samples in model space (float32 .npy, NCHW) before conversion to pixels.
    #[arg(long)]
    save_raw: Option<PathBuf>,
    /// Launch every op of every step instead of replaying a CUDA graph of the first (for
    /// debugging and for measuring what the graph saves; the images are the same).
    #[arg(long)]
    no_graph: bool,
    /// f32, or bf16: every matrix product's operands (weights, activations) rounded to bf16,
    /// sums, normalisation, softmax and the scheduler step in f32. CPU only for now.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
}

fn sampler(args: &SampleArgs, mut config: crate::diffusion::SchedulerConfig) -> Result<Sampler> {
    if let Some(s) = &args.timestep_spacing {
        config.timestep_spacing = TimestepSpacing::parse(s).context("--timestep-spacing")?;
    }
    if let Some(c) = args.clip_sample {
        config.clip_sample = c;
    }
    if let Some(v) = &args.variance_type {
        config.variance_type = VarianceType::parse(v).context("--variance-type")?;
    }
    if !(args.eta >= 0.0) {
        bail!("--eta must be non-negative");
    }
    Ok(match args.scheduler.as_str() {
        "ddpm" => {
            let mut s = DdpmScheduler::new(config)?;
            s.set_timesteps(args.steps.unwrap_or(1000))?;
            Sampler::Ddpm(s)
        }
        "ddim" => {
            let mut s = DdimScheduler::new(config)?;
            s.set_timesteps(args.steps.unwrap_or(50))?;
            Sampler::Ddim { scheduler: s, eta: args.eta }
        }
        other => bail!("--scheduler {other:?}: use ddpm or ddim"),
    })
}

pub fn run(args: SampleArgs) -> Result<()> {
    let model = load_model(&args.model)?;
    let c = model.config.clone();
    if args.n == 0 {
        bail!("--n must be positive");
    }
    let batch = args.batch.unwrap_or(args.n).clamp(1, args.n);
    let sampler = sampler(&args, model.scheduler.clone().unwrap_or_default())?;
    let x_t = match &args.noise {
        None => None,
        Some(path) => {
            let (shape, data) = npy::read_f32(path)?;
            let want = vec![args.n, c.in_channels, c.sample_size, c.sample_size];
            if shape != want {
                bail!(
                    "{}: shape {shape:?}, expected {want:?} (--n {} images of the model's shape)",
                    path.display(),
                    args.n
                );
            }
            Some(nchw_to_nhwc(&data, args.n, c.in_channels, c.sample_size, c.sample_size))
        }
    };
    let mut source = match args.rng.as_str() {
        "philox" => NoiseSource::Philox { seed: args.seed },
        "torch" => NoiseSource::Torch(Box::new(TorchGenerator::manual_seed(args.seed))),
        other => bail!("--rng {other:?}: use philox or torch"),
    };
    let unet = UNet::new(c.clone())?;
    let device = Device::open_with(&args.device, args.precision)?;
    let bar = indicatif::ProgressBar::new((args.n.div_ceil(batch) * sampler_steps(&sampler)) as u64);
    let launch = if args.no_graph { Launch::Plain } else { Launch::Graph };
    let job = Job {
        unet: &unet,
        params: &model.params,
        sampler: &sampler,
        batch,
        x_t: x_t.as_deref(),
        launch,
        seed: args.seed,
    };
    let images = crate::with_backend!(&device, b => sample_all(b, &job, args.n, &mut source, &bar))?;
    bar.finish_and_clear();
    if let Some(path) = &args.save_raw {
        npy::write_f32(
            path,
            &[args.n, c.out_channels, c.sample_size, c.sample_size],
            &nhwc_to_nchw(&images, args.n, c.out_channels, c.sample_size, c.sample_size),
        )?;
    }
    let cols = (args.n as f64).sqrt().ceil() as usize;
    write_grid(&args.out, &images, args.n, c.sample_size, c.out_channels, cols)
        .with_context(|| format!("writing {}", args.out.display()))?;
    if let Some(dir) = &args.out_dir {
        let per_out = c.out_channels * c.sample_size * c.sample_size;
        for (i, img) in images.chunks_exact(per_out).enumerate() {
            crate::sample::write_png(&dir.join(format!("{i:04}.png")), img, c.sample_size, c.out_channels)?;
        }
    }
    println!("{} images ({}) on {}: {}", args.n, args.scheduler, device.name(), args.out.display());
    Ok(())
}

fn sampler_steps(s: &Sampler) -> usize {
    match s {
        Sampler::Ddpm(d) => d.timesteps.len(),
        Sampler::Ddim { scheduler, .. } => scheduler.timesteps.len(),
    }
}

/// What to sample, batch by batch.
struct Job<'a> {
    unet: &'a UNet,
    params: &'a HostParams,
    sampler: &'a Sampler,
    batch: usize,
    x_t: Option<&'a [f32]>,
    launch: Launch,
    seed: u64,
}

/// All `n` images, `job.batch` at a time, with the weights uploaded once. A torch generator
/// continues its stream from batch to batch; Philox gives each batch its own stream, so the same
/// seed and --batch give the same images on every backend.
fn sample_all<B: Layers + SamplerOps>(
    b: &B,
    job: &Job,
    n: usize,
    source: &mut NoiseSource,
    bar: &indicatif::ProgressBar,
) -> Result<Vec<f32>> {
    let params = job.params.upload(b)?;
    let c = &job.unet.config;
    let per = c.in_channels * c.sample_size * c.sample_size;
    let mut images = Vec::with_capacity(n * per);
    for start in (0..n).step_by(job.batch) {
        let m = job.batch.min(n - start);
        if let NoiseSource::Philox { seed } = source {
            *seed = job.seed.wrapping_add(start as u64 * 0x9E37_79B9);
        }
        let given = job.x_t.map(|x| &x[start * per..(start + m) * per]);
        images.extend(generate_with(b, job.unet, &params, job.sampler, m, source, given, job.launch, &mut |_, _| {
            bar.inc(1)
        })?);
    }
    Ok(images)
}
