//! diffusers' HeunDiscreteScheduler (`heun`): per step an Euler predictor from sigma to sigma'
//! and a trapezoidal corrector at sigma', two model evaluations; the last step, down to sigma = 0,
//! is the predictor alone (diffusers' doubled timesteps end there), so n steps are 2n - 1
//! evaluations. d is the denoised x0 on every row; the predictor saves its input sample in s, and
//! its x0 is h1 when the corrector runs, so the first derivative (s - h1) / sigma is rebuilt.

use super::euler::{denoised, input_scale};
use super::sigmas::SigmaSchedule;
use super::{Eval, Lin, Plan, SolverOptions, refuse_eta};
use crate::diffusion::config::SchedulerConfig;
use anyhow::Result;

/// The corrector: s + (sigma' - sigma) / 2 * ((s - h1) / sigma + (x - d) / sigma').
fn corrector(sigma: f64, next: f64) -> Lin {
    let first = (Lin::S - Lin::h(1)) * (1.0 / sigma);
    let second = (Lin::X - Lin::D) * (1.0 / next);
    Lin::S + (first + second) * ((next - sigma) / 2.0)
}

pub fn plan(config: &SchedulerConfig, steps: usize, opts: &SolverOptions) -> Result<Plan> {
    refuse_eta("heun", opts)?;
    let sched = SigmaSchedule::new(config, steps, opts.karras)?;
    let mut plan = Plan::new("heun", steps, sched.init_noise_sigma(config.timestep_spacing));
    // Heun reads clip_sample (its own default false; a DDPM config writes true) and clamps x0,
    // which is d on every row: the row clamps d.
    plan.clip = config.clip_or(false);
    let pred = config.prediction_type;
    for (k, &t) in sched.timesteps.iter().enumerate() {
        let (sigma, next) = (sched.sigmas[k] as f64, sched.sigmas[k + 1] as f64);
        let (p, q) = denoised(pred, sigma);
        let predictor = Lin::X + (Lin::X - Lin::D) * ((next - sigma) / sigma);
        plan.push(Eval {
            t,
            input_scale: input_scale(sigma),
            p,
            q,
            next: predictor,
            save: Some(Lin::X),
            noise_std: None,
        })?;
        if k + 1 == steps {
            break;
        }
        let (p, q) = denoised(pred, next);
        let t_next = sched.timesteps[k + 1];
        let next_lin = corrector(sigma, next);
        plan.push(Eval {
            t: t_next,
            input_scale: input_scale(next),
            p,
            q,
            next: next_lin,
            save: None,
            noise_std: None,
        })?;
    }
    Ok(plan)
}
