//! Launchers of kernels/diffusion.cu.

use super::count_u32;
use crate::diffusion::checks;
use crate::diffusion::step_table::ROW_WORDS;
use crate::diffusion::{DdimStep, DdpmStep, Noise, PhiloxStream, PredictionType, ScheduleTables};
use crate::gpu::{Buffer, KernelArgs, LaunchConfig};
use anyhow::{Result, bail};

const THREADS: u32 = 256;
/// Elements per block of the loss's first pass. Fixed, so the reduction order (and the bits of
/// the loss) depend only on n.
const LOSS_CHUNK: usize = 4096;

/// Appends a noise source: a pointer (null for Philox) here, seed and offset at the end.
fn noise_args(args: KernelArgs, noise: &Noise<&Buffer<f32>>, n: usize, op: &str) -> Result<(KernelArgs, u64, u64)> {
    Ok(match noise {
        Noise::Philox(s) => (args.null(), s.seed, s.offset),
        Noise::Given(b) => {
            checks::noise(op, b.len(), n)?;
            (args.buf(b), 0, 0)
        }
    })
}

pub fn sample_timesteps_u32(t: &mut Buffer<u32>, t_max: u32, s: PhiloxStream) -> Result<()> {
    let n = count_u32("sample_timesteps", t.len())?;
    let args = KernelArgs::new().buf(t).u32(n).u32(t_max).u64(s.seed).u64(s.offset);
    t.gpu().launch("sample_timesteps_u32", LaunchConfig::for_elements(t.len(), THREADS), &args)
}

pub fn fill_normal_f32(out: &mut Buffer<f32>, s: PhiloxStream) -> Result<()> {
    let n = count_u32("fill_normal", out.len())?;
    let args = KernelArgs::new().buf(out).u32(n).u64(s.seed).u64(s.offset);
    out.gpu().launch("fill_normal_f32", LaunchConfig::for_elements(out.len(), THREADS), &args)
}

pub fn q_sample_f32(
    x0: &Buffer<f32>,
    t: &Buffer<u32>,
    tables: &ScheduleTables<Buffer<f32>>,
    noise: Noise<&Buffer<f32>>,
    xt: &mut Buffer<f32>,
) -> Result<()> {
    checks::q_sample(x0.len(), xt.len(), t.len())?;
    let n = count_u32("q_sample", x0.len())?;
    let args =
        KernelArgs::new().buf(x0).buf(t).buf(&tables.sqrt_abar).buf(&tables.sqrt_one_minus_abar).u32(tables.len as u32);
    let (args, seed, offset) = noise_args(args, &noise, x0.len(), "q_sample")?;
    let args = args.buf(xt).u32((x0.len() / t.len()) as u32).u32(n).u64(seed).u64(offset);
    x0.gpu().launch("q_sample_f32", LaunchConfig::for_elements(x0.len(), THREADS), &args)
}

/// loss[0] = mean((eps - pred)^2), by a fixed two-pass reduction (deterministic).
pub fn mse_loss_f32(pred: &Buffer<f32>, target: Noise<&Buffer<f32>>, loss: &mut Buffer<f32>) -> Result<()> {
    checks::mse_loss(pred.len(), loss.len())?;
    let n = count_u32("mse_loss", pred.len())?;
    let blocks = pred.len().div_ceil(LOSS_CHUNK);
    let gpu = pred.gpu();
    let partials = gpu.alloc::<f32>(blocks)?;
    let args = KernelArgs::new().buf(pred);
    let (args, seed, offset) = noise_args(args, &target, pred.len(), "mse_loss")?;
    let args = args.buf(&partials).u32(n).u32(LOSS_CHUNK as u32).u64(seed).u64(offset);
    gpu.launch("mse_loss_partial_f32", LaunchConfig::linear(count_u32("mse_loss", blocks)?, THREADS), &args)?;
    let args = KernelArgs::new().buf(&partials).u32(blocks as u32).buf(loss).u32(n);
    gpu.launch("mse_loss_finish_f32", LaunchConfig::linear(1, THREADS), &args)
}

/// grad = scale * (pred - eps).
pub fn mse_loss_bwd_f32(
    pred: &Buffer<f32>,
    target: Noise<&Buffer<f32>>,
    scale: f32,
    grad: &mut Buffer<f32>,
) -> Result<()> {
    checks::mse_loss_bwd(pred.len(), grad.len())?;
    let n = count_u32("mse_loss_bwd", pred.len())?;
    let args = KernelArgs::new().buf(pred);
    let (args, seed, offset) = noise_args(args, &target, pred.len(), "mse_loss_bwd")?;
    let args = args.buf(grad).u32(n).f32(scale).u64(seed).u64(offset);
    pred.gpu().launch("mse_loss_bwd_f32", LaunchConfig::for_elements(pred.len(), THREADS), &args)
}

/// The x_0-prediction parameters both step kernels take, in their order.
fn x0_args(
    args: KernelArgs,
    prediction: PredictionType,
    sqrt_alpha_prod: f32,
    sqrt_beta_prod: f32,
    clip: Option<f32>,
) -> KernelArgs {
    args.i32(prediction as i32)
        .f32(sqrt_alpha_prod)
        .f32(sqrt_beta_prod)
        .i32(clip.is_some() as i32)
        .f32(clip.unwrap_or(0.0))
}

/// The noise parameters that end both step kernels' argument lists.
fn noise_tail(args: KernelArgs, noise_std: Option<f32>, seed: u64, offset: u64) -> KernelArgs {
    args.f32(noise_std.unwrap_or(0.0)).i32(noise_std.is_some() as i32).u64(seed).u64(offset)
}

fn step_inputs(op: &str, sample: &Buffer<f32>, model_out: &Buffer<f32>, prev: &Buffer<f32>) -> Result<u32> {
    checks::step(op, sample.len(), model_out.len(), prev.len())?;
    count_u32(op, sample.len())
}

pub fn ddpm_step_f32(
    c: &DdpmStep,
    sample: &Buffer<f32>,
    model_out: &Buffer<f32>,
    noise: Noise<&Buffer<f32>>,
    prev: &mut Buffer<f32>,
) -> Result<()> {
    let n = step_inputs("ddpm_step", sample, model_out, prev)?;
    let args = KernelArgs::new().buf(sample).buf(model_out);
    let (args, seed, offset) = noise_args(args, &noise, sample.len(), "ddpm_step")?;
    let args = x0_args(args.buf(prev).u32(n), c.prediction, c.sqrt_alpha_prod, c.sqrt_beta_prod, c.clip)
        .f32(c.coeff_x0)
        .f32(c.coeff_sample);
    let args = noise_tail(args, c.noise_std, seed, offset);
    sample.gpu().launch("ddpm_step_f32", LaunchConfig::for_elements(sample.len(), THREADS), &args)
}

pub fn ddim_step_f32(
    c: &DdimStep,
    sample: &Buffer<f32>,
    model_out: &Buffer<f32>,
    noise: Noise<&Buffer<f32>>,
    prev: &mut Buffer<f32>,
) -> Result<()> {
    let n = step_inputs("ddim_step", sample, model_out, prev)?;
    let args = KernelArgs::new().buf(sample).buf(model_out);
    let (args, seed, offset) = noise_args(args, &noise, sample.len(), "ddim_step")?;
    let args = x0_args(args.buf(prev).u32(n), c.prediction, c.sqrt_alpha_prod, c.sqrt_beta_prod, c.clip)
        .i32(c.recompute_eps as i32)
        .f32(c.sqrt_alpha_prev)
        .f32(c.dir_coeff);
    let args = noise_tail(args, c.noise_std, seed, offset);
    sample.gpu().launch("ddim_step_f32", LaunchConfig::for_elements(sample.len(), THREADS), &args)
}

// ---- the table-driven sampler (src/backend/sampler.rs) ----

fn table_steps(op: &str, table: &Buffer<u32>, step: &Buffer<u32>) -> Result<()> {
    if table.is_empty() || !table.len().is_multiple_of(ROW_WORDS) || step.len() != 1 {
        bail!("{op}: a table of whole {ROW_WORDS}-word rows and a 1-element step index are needed");
    }
    Ok(())
}

pub fn sampler_timesteps_f32(table: &Buffer<u32>, step: &Buffer<u32>, t: &mut Buffer<f32>) -> Result<()> {
    table_steps("sampler_timesteps", table, step)?;
    let n = count_u32("sampler_timesteps", t.len())?;
    let args = KernelArgs::new().buf(t).u32(n).buf(table).buf(step);
    t.gpu().launch("sampler_timesteps_f32", LaunchConfig::for_elements(t.len(), THREADS), &args)
}

pub fn sampler_step_f32(
    table: &Buffer<u32>,
    step: &Buffer<u32>,
    x: &mut Buffer<f32>,
    model_out: &Buffer<f32>,
    seed: u64,
    offset_base: u64,
) -> Result<()> {
    table_steps("sampler_step", table, step)?;
    checks::sampler_step(x.len(), model_out.len())?;
    let n = count_u32("sampler_step", x.len())?;
    let args = KernelArgs::new().buf(x).buf(model_out).u32(n).buf(table).buf(step).u64(seed).u64(offset_base);
    x.gpu().launch("sampler_step_f32", LaunchConfig::for_elements(x.len(), THREADS), &args)
}

pub fn sampler_advance_u32(step: &mut Buffer<u32>) -> Result<()> {
    let args = KernelArgs::new().buf(step);
    step.gpu().launch("sampler_advance_u32", LaunchConfig::linear(1, 32), &args)
}

// ---- the linear solvers (src/diffusion/solver/) ----

pub fn solver_input_f32(table: &Buffer<u32>, step: &Buffer<u32>, x: &Buffer<f32>, out: &mut Buffer<f32>) -> Result<()> {
    table_steps("solver_input", table, step)?;
    checks::sampler_step(x.len(), out.len())?;
    let n = count_u32("solver_input", x.len())?;
    let args = KernelArgs::new().buf(out).buf(x).u32(n).buf(table).buf(step);
    x.gpu().launch("solver_input_f32", LaunchConfig::for_elements(x.len(), THREADS), &args)
}

#[allow(clippy::too_many_arguments)]
pub fn solver_step_f32(
    table: &Buffer<u32>,
    step: &Buffer<u32>,
    x: &mut Buffer<f32>,
    model_out: &Buffer<f32>,
    state: &mut Buffer<f32>,
    noise: Option<&Buffer<f32>>,
    seed: u64,
    offset_base: u64,
) -> Result<()> {
    table_steps("solver_step", table, step)?;
    // The rows live on the device, so their slots are checked against the ring where the plan is
    // uploaded (sample.rs); the kernel reduces them modulo the ring, never reading past the state.
    let ring = checks::solver_step(x.len(), model_out.len(), state.len(), noise.map(|b| b.len()))?;
    let n = count_u32("solver_step", x.len())?;
    let args = KernelArgs::new()
        .buf(x)
        .buf(model_out)
        .buf(state)
        .opt(noise)
        .u32(n)
        .u32(ring as u32)
        .buf(table)
        .buf(step)
        .u64(seed)
        .u64(offset_base);
    x.gpu().launch("solver_step_f32", LaunchConfig::for_elements(x.len(), THREADS), &args)
}
