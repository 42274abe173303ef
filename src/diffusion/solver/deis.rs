//! DEIS (Zhang & Chen 2023) as diffusers' DEISMultistepScheduler runs it with its own defaults:
//! the log-rho multistep solver of order 2 on the noise prediction, first order on the first
//! step and (under 15 steps) on the last. One row per step; d is the predicted noise, which
//! diffusers derives from its x_0 prediction, and h1 the previous step's.
//!
//! The coefficients are float32 as diffusers computes them (the sigmas as stored, then tensor
//! scalars; np.log of a 0-dim float32 tensor stays float32). The log-rho coefficients are
//! differences of two terms near rho (about 157 at the first step), so f32 moves them by an ulp of
//! that; computed in f64 instead, the fixtures' 10-step error grows from 1.2e-6 to 4.8e-6.

use super::unipc::{AlphaSigma, FinalSigma, multistep_schedule};
use super::{Eval, Lin, Plan, SolverOptions, refuse_eta};
use crate::diffusion::config::{PredictionType, SchedulerConfig};
use anyhow::Result;

/// Steps under which lower_order_final applies (diffusers' hard-coded 15).
const LOWER_ORDER_FINAL_BELOW: usize = 15;

pub fn plan(config: &SchedulerConfig, steps: usize, opts: &SolverOptions) -> Result<Plan> {
    refuse_eta("deis", opts)?;
    let sched = multistep_schedule(config, steps, opts.karras, FinalSigma::SigmaMin)?;
    let n = sched.timesteps.len();
    let mut plan = Plan::new("deis", steps, 1.0);
    for k in 0..n {
        let s = &sched.sigmas;
        let (p, q) = eps_conversion(config.prediction_type, AlphaSigma::new(s[k]));
        let first_order = k == 0 || (k == n - 1 && n < LOWER_ORDER_FINAL_BELOW);
        let next = if first_order {
            first_order_update(s[k + 1], s[k])
        } else {
            second_order_update(s[k + 1], s[k], s[k - 1])
        };
        plan.push(Eval { t: sched.timesteps[k] as f64, input_scale: 1.0, p, q, next, save: None, noise_std: None })?;
    }
    Ok(plan)
}

/// convert_model_output: x_0 from the prediction, then eps = (x - alpha x_0) / sigma.
fn eps_conversion(prediction: PredictionType, a: AlphaSigma) -> (f64, f64) {
    let (alpha, sigma) = (a.alpha as f64, a.sigma as f64);
    let (x0_p, x0_q) = super::unipc::x0_conversion(prediction, a);
    ((1.0 - alpha * x0_p) / sigma, -alpha * x0_q / sigma)
}

/// deis_first_order_update: x_t = (alpha_t / alpha_s) x - sigma_t (e^h - 1) eps.
fn first_order_update(sigma_t: f32, sigma_s: f32) -> Lin {
    let (t, s) = (AlphaSigma::new(sigma_t), AlphaSigma::new(sigma_s));
    let h = t.lambda - s.lambda;
    (t.alpha / s.alpha) as f64 * Lin::X - (t.sigma * (h.exp() - 1.0)) as f64 * Lin::D
}

/// multistep_deis_second_order_update: x_t = alpha_t (x / alpha_s0 + c1 m0 + c2 m1).
fn second_order_update(sigma_t: f32, sigma_s0: f32, sigma_s1: f32) -> Lin {
    let (t, s0, s1) = (AlphaSigma::new(sigma_t), AlphaSigma::new(sigma_s0), AlphaSigma::new(sigma_s1));
    let (rho_t, rho_s0, rho_s1) = (t.sigma / t.alpha, s0.sigma / s0.alpha, s1.sigma / s1.alpha);
    let coef1 = ind_fn(rho_t, rho_s0, rho_s1) - ind_fn(rho_s0, rho_s0, rho_s1);
    let coef2 = ind_fn(rho_t, rho_s1, rho_s0) - ind_fn(rho_s0, rho_s1, rho_s0);
    let alpha_t = t.alpha as f64;
    alpha_t * (1.0 / s0.alpha as f64) * Lin::X
        + (alpha_t * coef1 as f64) * Lin::D
        + (alpha_t * coef2 as f64) * Lin::h(1)
}

/// The integral of the Lagrange basis polynomial through log rho b and c, in diffusers' order.
fn ind_fn(t: f32, b: f32, c: f32) -> f32 {
    t * (-c.ln() + t.ln() - 1.0) / (b.ln() - c.ln())
}
