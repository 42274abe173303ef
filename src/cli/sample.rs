//! `ddpm sample`: images from a trained model (a run directory or a diffusers model/pipeline
//! folder), with DDPM or DDIM, reproducible seed for seed (Philox), or image for image with
//! diffusers' pipelines (`--rng torch`).

use super::device::{Device, DeviceName};
use crate::checkpoint::model::load_model;
use crate::diffusion::solver::{self, SolverOptions};
use crate::diffusion::{ConfigClass, DdimScheduler, DdpmScheduler, TimestepSpacing, VarianceType};
use crate::fast::bf16::Precision;
use crate::layout::{nchw_to_nhwc, nhwc_to_nchw};
use crate::math::torch_rng::TorchGenerator;
use crate::model::unet::UNet;
use crate::npy;
use crate::sample::{Job, Launch, NoiseSource, Sampler, generate_batches, write_grid};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

/// `--scheduler`: the sampling loop, each the diffusers class it reproduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SchedulerName {
    /// DDPMScheduler: ancestral sampling (default 1000 steps).
    Ddpm,
    /// DDIMScheduler (default 50 steps; --eta 0 is deterministic).
    Ddim,
    /// DPMSolverMultistepScheduler, dpmsolver++, order 2 (default 20 steps).
    #[value(name = "dpm++2m")]
    DpmPp2m,
    /// DPMSolverMultistepScheduler, dpmsolver++, order 3.
    #[value(name = "dpm++3m")]
    DpmPp3m,
    /// DPMSolverMultistepScheduler, sde-dpmsolver++, order 2 (stochastic).
    #[value(name = "dpm++2m-sde")]
    DpmPp2mSde,
    /// DPMSolverSinglestepScheduler, dpmsolver++, order 2.
    #[value(name = "dpm++2s")]
    DpmPp2s,
    /// UniPCMultistepScheduler (bh2, order 2).
    Unipc,
    /// DEISMultistepScheduler (order 2).
    Deis,
    /// EulerDiscreteScheduler.
    Euler,
    /// EulerAncestralDiscreteScheduler (stochastic).
    #[value(name = "euler-a")]
    EulerA,
    /// HeunDiscreteScheduler (two model evaluations per step).
    Heun,
    /// PNDMScheduler (Runge-Kutta warm-up, then PLMS).
    Pndm,
}

impl SchedulerName {
    /// The name for a scheduler config's class (ddpm when it names none, as `ddpm train`'s
    /// configs before the solvers did not).
    pub fn of_class(class: &ConfigClass) -> Result<SchedulerName> {
        let algorithm = class.algorithm_type.as_deref().unwrap_or("dpmsolver++");
        Ok(match class.name.as_str() {
            "" | "DDPMScheduler" => SchedulerName::Ddpm,
            "DDIMScheduler" => SchedulerName::Ddim,
            "DPMSolverMultistepScheduler" if algorithm == "sde-dpmsolver++" => SchedulerName::DpmPp2mSde,
            "DPMSolverMultistepScheduler" if algorithm == "dpmsolver++" => match class.solver_order {
                Some(3) => SchedulerName::DpmPp3m,
                _ => SchedulerName::DpmPp2m,
            },
            "DPMSolverSinglestepScheduler" if algorithm == "dpmsolver++" => SchedulerName::DpmPp2s,
            "UniPCMultistepScheduler" => SchedulerName::Unipc,
            "DEISMultistepScheduler" => SchedulerName::Deis,
            "EulerDiscreteScheduler" => SchedulerName::Euler,
            "EulerAncestralDiscreteScheduler" => SchedulerName::EulerA,
            "HeunDiscreteScheduler" => SchedulerName::Heun,
            "PNDMScheduler" => SchedulerName::Pndm,
            other => bail!(
                "the model's scheduler config names {other} (algorithm_type {algorithm}), which ddpm does not \
                 reproduce; choose one with --scheduler"
            ),
        })
    }

    /// The `--scheduler` spelling, which is also the solver's name in src/diffusion/solver/.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerName::Ddpm => "ddpm",
            SchedulerName::Ddim => "ddim",
            SchedulerName::DpmPp2m => "dpm++2m",
            SchedulerName::DpmPp3m => "dpm++3m",
            SchedulerName::DpmPp2mSde => "dpm++2m-sde",
            SchedulerName::DpmPp2s => "dpm++2s",
            SchedulerName::Unipc => "unipc",
            SchedulerName::Deis => "deis",
            SchedulerName::Euler => "euler",
            SchedulerName::EulerA => "euler-a",
            SchedulerName::Heun => "heun",
            SchedulerName::Pndm => "pndm",
        }
    }
}

/// `--rng`: where the noise comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RngName {
    /// Counter-based Philox: the same images on every backend.
    Philox,
    /// torch.manual_seed(seed)'s generator: diffusers' pipelines image for image.
    Torch,
}

#[derive(clap::Args)]
pub struct SampleArgs {
    /// A run directory, a diffusers pipeline folder (unet/ + scheduler/) or a UNet folder.
    #[arg(long)]
    model: PathBuf,
    /// The sampler, each the diffusers class it reproduces. Default: the class the model folder's
    /// scheduler config names (with its Karras setting), else ddpm.
    #[arg(long, value_enum)]
    scheduler: Option<SchedulerName>,
    /// Scheduler steps (default: 1000 for ddpm, 50 for ddim, 20 for the others). Heun and PNDM
    /// evaluate the model more than once per step; the progress bar counts evaluations.
    #[arg(long)]
    steps: Option<usize>,
    /// DDIM's eta (default 0: deterministic); an error for the samplers without one.
    #[arg(long)]
    eta: Option<f32>,
    /// Karras sigmas (use_karras_sigmas) for the samplers whose class has them.
    #[arg(long)]
    karras: bool,
    /// Overrides the scheduler config.
    #[arg(long, value_enum)]
    timestep_spacing: Option<TimestepSpacing>,
    /// Overrides the scheduler config: true or false.
    #[arg(long)]
    clip_sample: Option<bool>,
    /// Overrides the scheduler config (DDPM; learned variances need a model that predicts them).
    #[arg(long, value_enum)]
    variance_type: Option<VarianceType>,
    /// Number of images.
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// Images per forward pass (default: all of them).
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = RngName::Philox)]
    rng: RngName,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceName::Auto)]
    device: DeviceName,
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
    /// sums, normalisation, softmax and the scheduler step in f32. On CUDA the products run on
    /// the tensor cores (convolutions, linears and attention whose channels are multiples of 8).
    /// Default: bf16 on a CUDA device, f32 on the CPU and the emulator.
    #[arg(long, value_enum)]
    precision: Option<Precision>,
}

fn sampler(args: &SampleArgs, mut config: crate::diffusion::SchedulerConfig) -> Result<(SchedulerName, Sampler)> {
    if let Some(s) = args.timestep_spacing {
        config.timestep_spacing = s;
    }
    if let Some(c) = args.clip_sample {
        config.clip_sample = Some(c);
    }
    if let Some(v) = args.variance_type {
        config.variance_type = v;
    }
    let (name, karras) = match args.scheduler {
        Some(name) => (name, args.karras),
        None => {
            let class = config.class.clone().unwrap_or_default();
            (SchedulerName::of_class(&class)?, args.karras || class.use_karras_sigmas == Some(true))
        }
    };
    Ok((name, build_sampler(name, config, args.steps, args.eta, karras)?))
}

/// The sampler `name` over `config`: `steps` scheduler steps (default 1000 for ddpm, 50 for ddim,
/// 20 for the solvers), `eta` for DDIM (an error elsewhere), Karras sigmas where the class has
/// them (an error elsewhere).
pub fn build_sampler(
    name: SchedulerName,
    config: crate::diffusion::SchedulerConfig,
    steps: Option<usize>,
    eta: Option<f32>,
    karras: bool,
) -> Result<Sampler> {
    if let Some(eta) = eta
        && !(eta >= 0.0)
    {
        bail!("--eta must be non-negative");
    }
    let label = name.name();
    if karras && matches!(name, SchedulerName::Ddpm | SchedulerName::Ddim) {
        bail!(
            "--karras: {label} has no Karras sigmas (the solvers built on sigmas do: dpm++*, unipc, deis, euler, heun)"
        );
    }
    Ok(match name {
        SchedulerName::Ddpm => {
            if eta.is_some() {
                bail!("--eta is DDIM's; ddpm has none");
            }
            let mut s = DdpmScheduler::new(config)?;
            s.set_timesteps(steps.unwrap_or(1000))?;
            Sampler::Ddpm(s)
        }
        SchedulerName::Ddim => {
            let mut s = DdimScheduler::new(config)?;
            s.set_timesteps(steps.unwrap_or(50))?;
            Sampler::Ddim { scheduler: s, eta: eta.unwrap_or(0.0) }
        }
        _ => {
            let opts = SolverOptions { karras, eta };
            Sampler::Solver(solver::plan_named(label, &config, steps.unwrap_or(20), &opts)?)
        }
    })
}

pub fn run(args: SampleArgs) -> Result<()> {
    let model = load_model(&args.model)?;
    let c = model.config.clone();
    if args.n == 0 {
        bail!("--n must be positive");
    }
    let batch = args.batch.unwrap_or(args.n).clamp(1, args.n);
    let (name, sampler) = sampler(&args, model.scheduler.clone().unwrap_or_default())?;
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
    let mut source = match args.rng {
        RngName::Philox => NoiseSource::Philox { seed: args.seed },
        RngName::Torch => NoiseSource::Torch(Box::new(TorchGenerator::manual_seed(args.seed))),
    };
    let unet = UNet::new(c.clone())?;
    let device = Device::open_with(args.device, args.precision)?;
    let bar = indicatif::ProgressBar::new((args.n.div_ceil(batch) * sampler.steps()) as u64);
    let job = Job {
        unet: &unet,
        params: &model.params,
        sampler: &sampler,
        n: args.n,
        batch,
        x_t: x_t.as_deref(),
        launch: if args.no_graph { Launch::Plain } else { Launch::Graph },
    };
    let images = crate::with_backend!(&device, b => generate_batches(b, &job, &mut source, &mut |_, _| bar.inc(1)))?;
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
    println!(
        "{} images ({}, {} model evaluations each) on {}: {}",
        args.n,
        name.name(),
        sampler.steps(),
        device.name(),
        args.out.display()
    );
    Ok(())
}
