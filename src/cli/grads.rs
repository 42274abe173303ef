//! `ddpm grads`: the loss and every parameter gradient of a model for a given batch, timesteps and
//! noise (PyTorch layouts in and out), so kernel work can be checked against any reference.

use super::device::{Device, DeviceName};
use crate::backend::Layers;
use crate::checkpoint::model::load_model;
use crate::checkpoint::write_tensors;
use crate::diffusion::NoiseSchedule;
use crate::layout::nchw_to_nhwc;
use crate::model::unet::UNet;
use crate::model::weights::HostParams;
use crate::npy;
use crate::train::step::{StepNoise, loss_and_grads};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct GradsArgs {
    /// A diffusers model folder (config.json + diffusion_pytorch_model.safetensors), a pipeline or
    /// run directory (with unet/), or a safetensors file with config.json beside it.
    #[arg(long)]
    model: PathBuf,
    /// The clean batch x_0: float32 .npy, NCHW [n, in_channels, size, size], values in [-1, 1].
    #[arg(long)]
    x0: PathBuf,
    /// Timesteps, .npy of n integers (int64 or int32) in [0, num_train_timesteps).
    #[arg(long)]
    t: PathBuf,
    /// The noise eps: float32 .npy shaped like x0.
    #[arg(long)]
    noise: PathBuf,
    /// Output safetensors: every gradient under diffusers' names (PyTorch layouts) and `loss`.
    #[arg(long)]
    out: PathBuf,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceName::Auto)]
    device: DeviceName,
    /// f32, or bf16 matrix-product operands with f32 sums (as `ddpm train --precision`). Default:
    /// bf16 on a CUDA device, f32 on the CPU and the emulator.
    #[arg(long, value_enum)]
    precision: Option<crate::fast::bf16::Precision>,
}

pub fn run(args: GradsArgs) -> Result<()> {
    let model = load_model(&args.model)?;
    let c = &model.config;
    let (x_shape, x0) = npy::read_f32(&args.x0)?;
    let (t_shape, t) = npy::read_f32(&args.t)?;
    let (eps_shape, eps) = npy::read_f32(&args.noise)?;
    let want = |n: usize| vec![n, c.in_channels, c.sample_size, c.sample_size];
    let n = *x_shape.first().unwrap_or(&0);
    if x_shape != want(n) || n == 0 {
        bail!(
            "{}: shape {x_shape:?}, the model needs [n, {}, {}, {}]",
            args.x0.display(),
            c.in_channels,
            c.sample_size,
            c.sample_size
        );
    }
    if eps_shape != x_shape {
        bail!("{}: shape {eps_shape:?} differs from x0's {x_shape:?}", args.noise.display());
    }
    if t_shape.iter().product::<usize>() != n {
        bail!("{}: {} timesteps for a batch of {n}", args.t.display(), t.len());
    }
    let scheduler = model.scheduler.clone().unwrap_or_default();
    let schedule = NoiseSchedule::new(&scheduler.beta_schedule, scheduler.num_train_timesteps)?;
    let t: Vec<u32> = t
        .iter()
        .map(|&v| {
            if v < 0.0 || v.fract() != 0.0 || v as usize >= schedule.len() {
                bail!("{}: timestep {v} is not an integer in [0, {})", args.t.display(), schedule.len());
            }
            Ok(v as u32)
        })
        .collect::<Result<_>>()?;
    let x0 = nchw_to_nhwc(&x0, n, c.in_channels, c.sample_size, c.sample_size);
    let eps = nchw_to_nhwc(&eps, n, c.in_channels, c.sample_size, c.sample_size);
    let unet = UNet::new(model.config.clone())?;
    let device = Device::open_with(args.device, args.precision)?;
    let (loss, grads) = crate::with_backend!(&device, b => compute(b, &unet, &model.params, &schedule, &x0, &t, &eps))?;
    let mut tensors = grads.to_torch(&unet.table);
    tensors.push(("loss".to_string(), vec![1], vec![loss]));
    write_tensors(&args.out, &tensors, None).with_context(|| format!("writing {}", args.out.display()))?;
    println!("loss {loss:.6} on {}; {} gradients written to {}", device.name(), unet.table.len(), args.out.display());
    Ok(())
}

fn compute<B: Layers>(
    b: &B,
    unet: &UNet,
    params: &HostParams,
    schedule: &NoiseSchedule,
    x0: &[f32],
    t: &[u32],
    eps: &[f32],
) -> Result<(f32, HostParams)> {
    let tables = b.schedule_tables(schedule)?;
    let params = params.upload(b)?;
    let mut grads: Vec<B::Buf> = params.iter().map(|p| b.alloc(B::len(p))).collect::<Result<_>>()?;
    let (x0, eps) = (b.upload(x0)?, b.upload(eps)?);
    let noise = StepNoise::Given { t, eps: &eps };
    let loss = loss_and_grads(b, unet, &params, &tables, &x0, t.len(), noise, &mut grads)?;
    Ok((loss, HostParams::download(b, &grads)?))
}
