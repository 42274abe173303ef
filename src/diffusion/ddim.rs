//! DDIM sampling (Song et al. 2021) as diffusers' DDIMScheduler does it: predict x_0 and the
//! noise, optionally clip x_0, then x_prev = sqrt(abar_prev) x_0 + sqrt(1 - abar_prev - sigma^2)
//! eps + sigma z with sigma = eta * sqrt(variance). eta = 0 is deterministic. Scalars in f32, in
//! diffusers' order; the element-wise part takes a [`DdimStep`].

use super::config::{PredictionType, SchedulerConfig};
use super::schedule::NoiseSchedule;
use super::timesteps::inference_timesteps;
use anyhow::{Result, bail};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdimStep {
    pub prediction: PredictionType,
    pub sqrt_alpha_prod: f32,
    pub sqrt_beta_prod: f32,
    pub clip: Option<f32>,
    /// use_clipped_model_output: recompute eps from the clipped x_0.
    pub recompute_eps: bool,
    pub sqrt_alpha_prev: f32,
    /// sqrt(1 - abar_prev - sigma^2), the weight of the predicted noise.
    pub dir_coeff: f32,
    /// sigma when eta > 0; None for deterministic DDIM.
    pub noise_std: Option<f32>,
}

pub struct DdimScheduler {
    pub config: SchedulerConfig,
    pub schedule: NoiseSchedule,
    pub timesteps: Vec<usize>,
    inference_steps: usize,
    final_alpha_cumprod: f32,
}

impl DdimScheduler {
    pub fn new(config: SchedulerConfig) -> Result<Self> {
        config.validate()?;
        let schedule = NoiseSchedule::new(&config.beta_schedule, config.num_train_timesteps)?;
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { schedule.alphas_cumprod[0] };
        let n = config.num_train_timesteps;
        Ok(DdimScheduler {
            timesteps: (0..n).rev().collect(),
            inference_steps: n,
            config,
            schedule,
            final_alpha_cumprod,
        })
    }

    pub fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        let c = &self.config;
        self.timesteps = inference_timesteps(c.timestep_spacing, c.num_train_timesteps, steps, c.steps_offset)?;
        self.inference_steps = steps;
        Ok(())
    }

    /// prev_t = t - T // n, as diffusers computes it whatever the spacing; negative means "past
    /// the end", where abar_prev is final_alpha_cumprod.
    pub fn previous_timestep(&self, t: usize) -> i64 {
        t as i64 - (self.config.num_train_timesteps / self.inference_steps) as i64
    }

    pub fn step_params(&self, t: usize, eta: f32, use_clipped_model_output: bool) -> Result<DdimStep> {
        let ac = &self.schedule.alphas_cumprod;
        if t >= ac.len() {
            bail!("timestep {t} is outside the schedule (num_train_timesteps = {})", ac.len());
        }
        if !(eta >= 0.0) {
            bail!("eta must be non-negative, got {eta}");
        }
        let prev = self.previous_timestep(t);
        let alpha_prod_t = ac[t];
        let alpha_prod_t_prev = if prev >= 0 { ac[prev as usize] } else { self.final_alpha_cumprod };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let variance = (beta_prod_t_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_t_prev);
        let std_dev_t = eta * variance.sqrt();
        Ok(DdimStep {
            prediction: self.config.prediction_type,
            sqrt_alpha_prod: alpha_prod_t.sqrt(),
            sqrt_beta_prod: beta_prod_t.sqrt(),
            clip: self.config.clip_or(true),
            recompute_eps: use_clipped_model_output,
            sqrt_alpha_prev: alpha_prod_t_prev.sqrt(),
            dir_coeff: (1.0 - alpha_prod_t_prev - std_dev_t * std_dev_t).sqrt(),
            noise_std: (eta > 0.0).then_some(std_dev_t),
        })
    }
}
