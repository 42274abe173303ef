//! DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) as diffusers' DDPMScheduler does it:
//! predict x_0, optionally clip it, take the posterior mean (eq. 7, the x_0 form of eq. 12) and
//! add noise with the chosen variance for t > 0. The scalars are computed here in f32, in
//! diffusers' order of operations; the element-wise part is one fused kernel (or the CPU
//! reference) given a [`DdpmStep`].

use super::config::{PredictionType, SchedulerConfig, VarianceType};
use super::schedule::NoiseSchedule;
use super::timesteps::inference_timesteps;
use anyhow::{Result, bail};

/// Everything the element-wise part of one DDPM step needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdpmStep {
    pub prediction: PredictionType,
    pub sqrt_alpha_prod: f32,
    pub sqrt_beta_prod: f32,
    /// Clip range for the predicted x_0, if clip_sample.
    pub clip: Option<f32>,
    /// Posterior mean = coeff_x0 * x_0 + coeff_sample * x_t.
    pub coeff_x0: f32,
    pub coeff_sample: f32,
    /// Standard deviation of the added noise; None at t = 0 (no noise is drawn).
    pub noise_std: Option<f32>,
}

pub struct DdpmScheduler {
    pub config: SchedulerConfig,
    pub schedule: NoiseSchedule,
    /// Descending; all of 0..T until set_timesteps.
    pub timesteps: Vec<usize>,
    inference_steps: Option<usize>,
}

impl DdpmScheduler {
    pub fn new(config: SchedulerConfig) -> Result<Self> {
        config.validate()?;
        let schedule = NoiseSchedule::new(&config.beta_schedule, config.num_train_timesteps)?;
        let timesteps = (0..config.num_train_timesteps).rev().collect();
        Ok(DdpmScheduler { config, schedule, timesteps, inference_steps: None })
    }

    pub fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        let c = &self.config;
        self.timesteps = inference_timesteps(c.timestep_spacing, c.num_train_timesteps, steps, c.steps_offset)?;
        self.inference_steps = Some(steps);
        Ok(())
    }

    /// The timestep after `t` in the sampling order, None past the last (diffusers' -1).
    pub fn previous_timestep(&self, t: usize) -> Result<Option<usize>> {
        if self.inference_steps.is_none() {
            return Ok(t.checked_sub(1));
        }
        match self.timesteps.iter().position(|&x| x == t) {
            Some(i) => Ok(self.timesteps.get(i + 1).copied()),
            None => bail!("timestep {t} is not one of this scheduler's timesteps"),
        }
    }

    pub fn step_params(&self, t: usize) -> Result<DdpmStep> {
        let ac = &self.schedule.alphas_cumprod;
        if t >= ac.len() {
            bail!("timestep {t} is outside the schedule (num_train_timesteps = {})", ac.len());
        }
        let alpha_prod_t = ac[t];
        let alpha_prod_t_prev = self.previous_timestep(t)?.map_or(1.0, |p| ac[p]);
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
        let current_beta_t = 1.0 - current_alpha_t;
        let coeff_x0 = (alpha_prod_t_prev.sqrt() * current_beta_t) / beta_prod_t;
        let coeff_sample = current_alpha_t.sqrt() * beta_prod_t_prev / beta_prod_t;
        let noise_std = (t > 0).then(|| {
            // _get_variance: recomputes current_beta_t the same way, clamps at 1e-20.
            let variance = ((1.0 - alpha_prod_t_prev) / (1.0 - alpha_prod_t) * current_beta_t).max(1e-20);
            match self.config.variance_type {
                VarianceType::FixedSmall => variance.sqrt(),
                VarianceType::FixedSmallLog => (0.5 * variance.ln()).exp(),
                VarianceType::FixedLarge => current_beta_t.sqrt(),
            }
        });
        Ok(DdpmStep {
            prediction: self.config.prediction_type,
            sqrt_alpha_prod: alpha_prod_t.sqrt(),
            sqrt_beta_prod: beta_prod_t.sqrt(),
            clip: self.config.clip_or(true),
            coeff_x0,
            coeff_sample,
            noise_std,
        })
    }
}
