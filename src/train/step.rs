//! One training step (Ho et al. 2020, Algorithm 1): draw t and eps, noise the batch (eq. 8), run
//! the UNet, take the loss ||eps - eps_theta(x_t, t)||^2 as a mean over all elements (eq. 17),
//! backpropagate to every parameter, clip the global gradient norm, take an AdamW step and update
//! the EMA of the weights.

use crate::backend::{Layers, Optimizer};
use crate::diffusion::{Noise, PhiloxStream, ScheduleTables};
use crate::dist::Shard;
use crate::dist::grad_sync::GradSync;
use crate::math::adamw::AdamWStep;
use crate::math::philox;
use crate::model::blocks::Grads;
use crate::model::unet::UNet;
use crate::train::row::clip_scale;
use crate::train::schedule::{LrSchedule, ema_decay, learning_rate};
use anyhow::Result;

/// The noise of one step: given explicitly (parity with a reference) or drawn from Philox.
pub enum StepNoise<'a, Buf> {
    Philox { seed: u64, offset: u64 },
    Given { t: &'a [u32], eps: &'a Buf },
}

/// The loss of a batch and the gradient of every parameter (written into `grads`).
#[allow(clippy::too_many_arguments)]
pub fn loss_and_grads<B: Layers>(
    b: &B,
    unet: &UNet,
    params: &[B::Buf],
    tables: &ScheduleTables<B::Buf>,
    x0: &B::Buf,
    batch: usize,
    noise: StepNoise<B::Buf>,
    grads: &mut [B::Buf],
) -> Result<f32> {
    loss_and_grads_on(b, unet, params, tables, x0, Shard::whole(batch), noise, grads, None)
}

/// `loss_and_grads` for one rank's `shard` of a global batch (`x0` holds the shard): each image's
/// timestep and noise are drawn by its index in the global batch, so they do not depend on which
/// rank holds it. With `sync`, the gradients and the loss come back averaged over the ranks.
#[allow(clippy::too_many_arguments)]
pub fn loss_and_grads_on<B: Layers>(
    b: &B,
    unet: &UNet,
    params: &[B::Buf],
    tables: &ScheduleTables<B::Buf>,
    x0: &B::Buf,
    shard: Shard,
    noise: StepNoise<B::Buf>,
    grads: &mut [B::Buf],
    sync: Option<&mut GradSync<B>>,
) -> Result<f32> {
    // Timesteps are drawn on the host: a handful of Philox words, bitwise what the device would draw.
    let mut drawn = None;
    let (t, eps_source) = match noise {
        StepNoise::Philox { seed, offset } => {
            let first = shard.first as u64;
            let t: Vec<u32> = (first..first + shard.len as u64)
                .map(|i| philox::timestep(philox::word(seed, offset, i), tables.len as u32))
                .collect();
            let stream = PhiloxStream { seed, offset: offset + 1 };
            if shard.first == 0 {
                (t, Noise::Philox(stream))
            } else {
                // A later shard's noise starts mid-stream: drawn here, element by element the
                // numbers the device draws for the whole batch (src/math/philox.rs).
                let mut eps = vec![0.0; B::len(x0)];
                philox::fill_normal(seed, stream.offset, first * (B::len(x0) / shard.len) as u64, &mut eps);
                (t, Noise::Given(&*drawn.insert(b.upload(&eps)?)))
            }
        }
        StepNoise::Given { t, eps } => (t.to_vec(), Noise::Given(eps)),
    };
    let t_idx = b.upload_u32(&t)?;
    let t_float = b.upload(&t.iter().map(|&v| v as f32).collect::<Vec<_>>())?;
    let mut xt = b.alloc(B::len(x0))?;
    b.q_sample(x0, &t_idx, tables, eps_source, &mut xt)?;
    let tape = unet.forward(b, params, &xt, &t_float, shard.len)?;
    let mut loss = b.alloc(1)?;
    b.mse_loss(tape.output(), eps_source, &mut loss)?;
    let mut dout = b.alloc(B::len(tape.output()))?;
    b.mse_loss_bwd(tape.output(), eps_source, 1.0, &mut dout)?;
    let Some(sync) = sync else {
        unet.backward(b, params, &xt, tape, dout, grads)?;
        return Ok(b.download(&loss)?[0]);
    };
    {
        let mut hook = |done: &[usize], g: &[B::Buf]| sync.ready(b, done, g);
        unet.backward_with(b, params, &xt, tape, dout, Grads::with_hook(grads, &mut hook))?;
    }
    sync.finish(b, grads)?;
    sync.agree(b.download(&loss)?[0])
}

/// Optimizer settings, with diffusers' DDPM training defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub weight_decay: f32,
    pub eps: f32,
    /// Clip the global gradient norm to this (None: no clipping).
    pub max_grad_norm: Option<f32>,
    pub warmup_steps: u64,
    pub schedule: LrSchedule,
    pub total_steps: u64,
    pub ema_inv_gamma: f64,
    pub ema_power: f64,
    pub ema_max_decay: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 1e-4,
            beta1: 0.95,
            beta2: 0.999,
            weight_decay: 1e-6,
            eps: 1e-8,
            max_grad_norm: Some(1.0),
            warmup_steps: 500,
            schedule: LrSchedule::Cosine,
            total_steps: 10_000,
            ema_inv_gamma: 1.0,
            ema_power: 0.75,
            ema_max_decay: 0.9999,
        }
    }
}

/// Parameters, gradients, AdamW moments and EMA weights on a backend.
pub struct TrainState<Buf> {
    pub params: Vec<Buf>,
    pub grads: Vec<Buf>,
    pub exp_avg: Vec<Buf>,
    pub exp_avg_sq: Vec<Buf>,
    pub ema: Vec<Buf>,
    /// Optimizer steps taken.
    pub step: u64,
}

impl<Buf> TrainState<Buf> {
    pub fn new<B: Layers<Buf = Buf>>(b: &B, host: &[Vec<f32>]) -> Result<Self> {
        let zeros = |v: &Vec<f32>| b.upload(&vec![0.0; v.len()]);
        Ok(TrainState {
            params: host.iter().map(|v| b.upload(v)).collect::<Result<_>>()?,
            grads: host.iter().map(zeros).collect::<Result<_>>()?,
            exp_avg: host.iter().map(zeros).collect::<Result<_>>()?,
            exp_avg_sq: host.iter().map(zeros).collect::<Result<_>>()?,
            ema: host.iter().map(|v| b.upload(v)).collect::<Result<_>>()?,
            step: 0,
        })
    }
}

/// Statistics of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// The number of this step (1-based), whether applied or not.
    pub step: u64,
    pub loss: f32,
    pub grad_norm: f64,
    pub lr: f32,
    /// False when the loss or the gradient norm was not finite: the state was left untouched,
    /// its step counter included.
    pub applied: bool,
}

/// A full training step on a batch `x0` (NHWC), noise from Philox stream `seed` at an offset
/// derived from the step number (so a resumed run draws the same noise as a straight one).
#[allow(clippy::too_many_arguments)]
pub fn train_step<B: Layers + Optimizer>(
    b: &B,
    unet: &UNet,
    tables: &ScheduleTables<B::Buf>,
    state: &mut TrainState<B::Buf>,
    opt: &OptimConfig,
    x0: &B::Buf,
    batch: usize,
    seed: u64,
) -> Result<StepStats> {
    train_step_on(b, unet, tables, state, opt, x0, Shard::whole(batch), seed, None)
}

/// `train_step` on one rank's `shard` of the global batch, the gradients averaged over the ranks
/// by `sync` before the norm is taken: every rank then clips, steps and averages identically.
#[allow(clippy::too_many_arguments)]
pub fn train_step_on<B: Layers + Optimizer>(
    b: &B,
    unet: &UNet,
    tables: &ScheduleTables<B::Buf>,
    state: &mut TrainState<B::Buf>,
    opt: &OptimConfig,
    x0: &B::Buf,
    shard: Shard,
    seed: u64,
    sync: Option<&mut GradSync<B>>,
) -> Result<StepStats> {
    // The trainer's weights are written only by adamw_step below: a backend may keep them
    // converted (bf16 on CUDA), rewritten by the step itself. A lookup after the first step.
    unet.keep_product_weights(b, &state.params)?;
    let step = state.step + 1;
    let noise = StepNoise::Philox { seed, offset: step * 2 };
    let loss = loss_and_grads_on(b, unet, &state.params, tables, x0, shard, noise, &mut state.grads, sync)?;
    let grad_norm = b.global_norm(&state.grads)?;
    // A non-finite loss or gradient would poison the weights, the moments and the EMA for good
    // (clipping does not help: NaN.min(1.0) is 1.0): nothing is updated and the caller decides.
    if !loss.is_finite() || !grad_norm.is_finite() {
        let lr = learning_rate(opt.lr, opt.schedule, step, opt.warmup_steps, opt.total_steps);
        return Ok(StepStats { step, loss, grad_norm, lr, applied: false });
    }
    // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
    let grad_scale = clip_scale(opt.max_grad_norm, grad_norm);
    let lr = learning_rate(opt.lr, opt.schedule, step, opt.warmup_steps, opt.total_steps);
    let s = AdamWStep::new(lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay, step, grad_scale);
    for i in 0..state.params.len() {
        b.adamw_step(&mut state.params[i], &state.grads[i], &mut state.exp_avg[i], &mut state.exp_avg_sq[i], &s)?;
    }
    let decay = ema_decay(step, opt.ema_inv_gamma, opt.ema_power, opt.ema_max_decay);
    for (e, p) in state.ema.iter_mut().zip(&state.params) {
        b.ema_update(e, p, decay)?;
    }
    state.step = step;
    Ok(StepStats { step, loss, grad_norm, lr, applied: true })
}
