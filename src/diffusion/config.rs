//! Scheduler configuration: the keys of diffusers' `scheduler_config.json` that DDPMScheduler and
//! DDIMScheduler read, with diffusers' defaults. Values this engine does not implement are refused
//! with an error naming the key; keys it does not know (diffusers adds some over versions, and
//! `_class_name` and friends) are ignored.

use super::schedule::BetaSchedule;
use anyhow::{Context, Result, bail};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon = 0,
    Sample = 1,
    VPrediction = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarianceType {
    FixedSmall,
    FixedSmallLog,
    FixedLarge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

impl VarianceType {
    /// diffusers' name, e.g. "fixed_small".
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "fixed_small" => VarianceType::FixedSmall,
            "fixed_small_log" => VarianceType::FixedSmallLog,
            "fixed_large" => VarianceType::FixedLarge,
            other => bail!(
                "variance_type {other:?} is not supported (fixed_small, fixed_small_log, fixed_large; learned \
                 variances need a model that predicts them, and diffusers' fixed_large_log yields NaN)"
            ),
        })
    }
}

impl TimestepSpacing {
    /// diffusers' name: "leading", "trailing" or "linspace".
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "leading" => TimestepSpacing::Leading,
            "trailing" => TimestepSpacing::Trailing,
            "linspace" => TimestepSpacing::Linspace,
            other => bail!("timestep_spacing {other:?} is not supported (leading, trailing, linspace)"),
        })
    }
}

/// Far above any published schedule (1000 to 4000).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    pub num_train_timesteps: usize,
    pub beta_schedule: BetaSchedule,
    pub prediction_type: PredictionType,
    pub clip_sample: bool,
    pub clip_sample_range: f32,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    /// DDPM only.
    pub variance_type: VarianceType,
    /// DDIM only: abar for the step after the last (1 if true, else abar_0).
    pub set_alpha_to_one: bool,
}

impl Default for SchedulerConfig {
    /// diffusers' defaults, which are DDPM's (Ho et al.): linear betas 1e-4 to 0.02, T = 1000.
    fn default() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_schedule: BetaSchedule::Linear { beta_start: 0.0001, beta_end: 0.02 },
            prediction_type: PredictionType::Epsilon,
            clip_sample: true,
            clip_sample_range: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
            variance_type: VarianceType::FixedSmall,
            set_alpha_to_one: true,
        }
    }
}

impl SchedulerConfig {
    /// Reads a diffusers `scheduler_config.json`; absent keys take diffusers' defaults.
    pub fn from_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text).context("scheduler config is not valid JSON")?;
        let obj = v.as_object().context("scheduler config must be a JSON object")?;
        let mut c = SchedulerConfig::default();
        let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
        if let Some(v) = get("num_train_timesteps") {
            c.num_train_timesteps = as_usize(v, "num_train_timesteps")?;
        }
        let beta_start = get("beta_start").map(|v| as_f64(v, "beta_start")).transpose()?.unwrap_or(0.0001);
        let beta_end = get("beta_end").map(|v| as_f64(v, "beta_end")).transpose()?.unwrap_or(0.02);
        let schedule = get("beta_schedule").map(|v| as_str(v, "beta_schedule")).transpose()?.unwrap_or("linear");
        c.beta_schedule = match schedule {
            "linear" => BetaSchedule::Linear { beta_start, beta_end },
            "scaled_linear" => BetaSchedule::ScaledLinear { beta_start, beta_end },
            "squaredcos_cap_v2" => BetaSchedule::SquaredCosCapV2,
            other => bail!("beta_schedule {other:?} is not supported (linear, scaled_linear, squaredcos_cap_v2)"),
        };
        if let Some(v) = get("trained_betas") {
            let arr = v.as_array().context("trained_betas must be an array of numbers")?;
            let betas = arr.iter().map(|b| as_f32(b, "trained_betas")).collect::<Result<Vec<_>>>()?;
            c.beta_schedule = BetaSchedule::Trained(betas);
        }
        if let Some(v) = get("prediction_type") {
            c.prediction_type = match as_str(v, "prediction_type")? {
                "epsilon" => PredictionType::Epsilon,
                "sample" => PredictionType::Sample,
                "v_prediction" => PredictionType::VPrediction,
                other => bail!("prediction_type {other:?} is not supported (epsilon, sample, v_prediction)"),
            };
        }
        if let Some(v) = get("clip_sample") {
            c.clip_sample = v.as_bool().context("clip_sample must be true or false")?;
        }
        if let Some(v) = get("clip_sample_range") {
            c.clip_sample_range = as_f32(v, "clip_sample_range")?;
        }
        if let Some(v) = get("timestep_spacing") {
            c.timestep_spacing = TimestepSpacing::parse(as_str(v, "timestep_spacing")?)?;
        }
        if let Some(v) = get("steps_offset") {
            c.steps_offset = as_usize(v, "steps_offset")?;
        }
        if let Some(v) = get("variance_type") {
            c.variance_type = VarianceType::parse(as_str(v, "variance_type")?)?;
        }
        if let Some(v) = get("set_alpha_to_one") {
            c.set_alpha_to_one = v.as_bool().context("set_alpha_to_one must be true or false")?;
        }
        for key in ["thresholding", "rescale_betas_zero_snr"] {
            if get(key).and_then(Value::as_bool) == Some(true) {
                bail!("{key} = true is not supported");
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// Reads a `scheduler_config.json` file; errors name the file.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn validate(&self) -> Result<()> {
        // The schedule is three f32 vectors of this length, made before anything else is checked:
        // a config claiming 10^12 timesteps must be refused, not allocated.
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&self.num_train_timesteps) {
            bail!("num_train_timesteps must be between 2 and {MAX_TRAIN_TIMESTEPS}, got {}", self.num_train_timesteps);
        }
        // Past T every timestep is out of range anyway, and a huge offset overflowed the sum.
        if self.steps_offset >= self.num_train_timesteps {
            bail!(
                "steps_offset {} must be below num_train_timesteps ({})",
                self.steps_offset,
                self.num_train_timesteps
            );
        }
        if !(self.clip_sample_range > 0.0) {
            bail!("clip_sample_range must be positive, got {}", self.clip_sample_range);
        }
        if let BetaSchedule::Linear { beta_start, beta_end } | BetaSchedule::ScaledLinear { beta_start, beta_end } =
            self.beta_schedule
            && !(beta_start > 0.0 && beta_end < 1.0 && beta_start <= beta_end)
        {
            bail!("beta_start {beta_start} and beta_end {beta_end} must satisfy 0 < beta_start <= beta_end < 1");
        }
        Ok(())
    }

    /// The clip range if clip_sample is on.
    pub fn clip(&self) -> Option<f32> {
        self.clip_sample.then_some(self.clip_sample_range)
    }
}

fn as_f64(v: &Value, key: &str) -> Result<f64> {
    v.as_f64().with_context(|| format!("{key} must be a number, got {v}"))
}
fn as_f32(v: &Value, key: &str) -> Result<f32> {
    v.as_f64().map(|x| x as f32).with_context(|| format!("{key} must be a number, got {v}"))
}
fn as_usize(v: &Value, key: &str) -> Result<usize> {
    v.as_u64().map(|x| x as usize).with_context(|| format!("{key} must be a non-negative integer, got {v}"))
}
fn as_str<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v.as_str().with_context(|| format!("{key} must be a string, got {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_diffusers_config_and_refuses_unsupported_values() {
        let c = SchedulerConfig::from_json(
            r#"{"_class_name": "DDPMScheduler", "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001,
                "clip_sample": true, "num_train_timesteps": 1000, "trained_betas": null, "variance_type": "fixed_large"}"#,
        )
        .unwrap();
        assert_eq!(c.variance_type, VarianceType::FixedLarge);
        assert_eq!(c.num_train_timesteps, 1000);
        let err = SchedulerConfig::from_json(r#"{"variance_type": "learned_range"}"#).unwrap_err().to_string();
        assert!(err.contains("variance_type"), "{err}");
        let err = SchedulerConfig::from_json(r#"{"thresholding": true}"#).unwrap_err().to_string();
        assert!(err.contains("thresholding"), "{err}");
        let err = SchedulerConfig::from_json(r#"{"clip_sample": "yes"}"#).unwrap_err().to_string();
        assert!(err.contains("clip_sample"), "{err}");
        assert!(SchedulerConfig::from_json("[1, 2]").is_err());
    }
}
