//! diffusers' EulerDiscreteScheduler (`euler`) and EulerAncestralDiscreteScheduler (`euler-a`):
//! Karras et al.'s first-order step in sigma space, x' = x + (x - x0) / sigma * (sigma' - sigma),
//! with the ancestral variant stepping to sigma_down and adding sigma_up noise. d is the
//! denoised x0 on every row. s_churn stays 0 (diffusers' pipelines never set it), so Euler is
//! deterministic.

use super::sigmas::SigmaSchedule;
use super::{Eval, Lin, Plan, SolverOptions, refuse_eta};
use crate::diffusion::config::{PredictionType, SchedulerConfig};
use anyhow::{Result, bail};

/// x0 = p x + q model_out at `sigma`, as the sigma-space classes convert the model's output.
pub(super) fn denoised(prediction: PredictionType, sigma: f64) -> (f64, f64) {
    match prediction {
        PredictionType::Epsilon => (1.0, -sigma),
        PredictionType::VPrediction => (1.0 / (sigma * sigma + 1.0), -sigma / (sigma * sigma + 1.0).sqrt()),
        PredictionType::Sample => (0.0, 1.0),
    }
}

/// scale_model_input: x / (sigma^2 + 1)^0.5.
pub(super) fn input_scale(sigma: f64) -> f64 {
    1.0 / (sigma * sigma + 1.0).sqrt()
}

/// x + (x - x0) / sigma * (to - sigma): an Euler step from sigma to `to` along the x0 direction.
fn euler_step(sigma: f64, to: f64) -> Lin {
    Lin::X + (Lin::X - Lin::D) * ((to - sigma) / sigma)
}

pub fn plan(config: &SchedulerConfig, steps: usize, opts: &SolverOptions) -> Result<Plan> {
    refuse_eta("euler", opts)?;
    let sched = SigmaSchedule::new(config, steps, opts.karras)?;
    let mut plan = Plan::new("euler", steps, sched.init_noise_sigma(config.timestep_spacing));
    for (i, &t) in sched.timesteps.iter().enumerate() {
        let (sigma, to) = (sched.sigmas[i] as f64, sched.sigmas[i + 1] as f64);
        let (p, q) = denoised(config.prediction_type, sigma);
        let next = euler_step(sigma, to);
        plan.push(Eval { t, input_scale: input_scale(sigma), p, q, next, save: None, noise_std: None })?;
    }
    Ok(plan)
}

/// sigma_up and sigma_down of an ancestral step, in f32 as torch computes them on the sigma
/// tensors: the final step (to = 0) gets sigma_up = 0 but still draws its noise.
fn ancestral_sigmas(from: f32, to: f32) -> (f32, f32) {
    let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
    let down = (to * to - up * up).sqrt();
    (up, down)
}

pub fn plan_ancestral(config: &SchedulerConfig, steps: usize, opts: &SolverOptions) -> Result<Plan> {
    refuse_eta("euler-a", opts)?;
    if opts.karras {
        bail!("--karras: diffusers' EulerAncestralDiscreteScheduler has no use_karras_sigmas");
    }
    if config.prediction_type == PredictionType::Sample {
        bail!("prediction_type sample: diffusers' EulerAncestralDiscreteScheduler does not implement it");
    }
    let sched = SigmaSchedule::new(config, steps, false)?;
    let mut plan = Plan::new("euler-a", steps, sched.init_noise_sigma(config.timestep_spacing));
    for (i, &t) in sched.timesteps.iter().enumerate() {
        let (from, to) = (sched.sigmas[i], sched.sigmas[i + 1]);
        let (up, down) = ancestral_sigmas(from, to);
        let sigma = from as f64;
        let (p, q) = denoised(config.prediction_type, sigma);
        let next = euler_step(sigma, down as f64);
        let noise_std = Some(up as f64);
        plan.push(Eval { t, input_scale: input_scale(sigma), p, q, next, save: None, noise_std })?;
    }
    Ok(plan)
}
