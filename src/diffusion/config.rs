//! Scheduler configuration: the keys of diffusers' `scheduler_config.json` that DDPMScheduler and
//! DDIMScheduler read, with diffusers' defaults. Values this engine does not implement are refused
//! with an error naming the key; keys it does not know (diffusers adds some over versions, and
//! `_class_name` and friends) are ignored.

use super::schedule::BetaSchedule;
use anyhow::{Context, Result, bail};
use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    Epsilon = 0,
    Sample = 1,
    VPrediction = 2,
}

/// Read by name through [`VarianceType::parse`], whose error says why the others are missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(try_from = "String")]
#[value(rename_all = "snake_case")]
pub enum VarianceType {
    FixedSmall,
    FixedSmallLog,
    FixedLarge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
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
                "{other:?} is not supported (fixed_small, fixed_small_log, fixed_large; learned \
                 variances need a model that predicts them, and diffusers' fixed_large_log yields NaN)"
            ),
        })
    }
}

impl TryFrom<String> for VarianceType {
    type Error = anyhow::Error;
    fn try_from(name: String) -> Result<Self> {
        Self::parse(&name)
    }
}

/// Far above any published schedule (1000 to 4000).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    pub num_train_timesteps: usize,
    pub beta_schedule: BetaSchedule,
    pub prediction_type: PredictionType,
    /// None when the config does not say: each class then takes its own default (DDPM and DDIM
    /// clip, Heun does not), as diffusers' from_config does.
    pub clip_sample: Option<bool>,
    pub clip_sample_range: f32,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    /// DDPM only.
    pub variance_type: VarianceType,
    /// DDIM only: abar for the step after the last (1 if true, else abar_0).
    pub set_alpha_to_one: bool,
    /// PNDM's own key (diffusers' default false: the Runge-Kutta warm-up); any class's config may
    /// carry it, as diffusers passes every key on to the class it makes.
    pub skip_prk_steps: bool,
    /// The class the config was saved by, when it says (`_class_name`), with the solver keys
    /// that pick among `--scheduler`'s names: a folder samples with its own class by default.
    pub class: Option<ConfigClass>,
}

/// `_class_name` and the keys that choose a solver's variant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigClass {
    pub name: String,
    pub solver_order: Option<usize>,
    pub algorithm_type: Option<String>,
    pub use_karras_sigmas: Option<bool>,
}

impl Default for SchedulerConfig {
    /// diffusers' defaults, which are DDPM's (Ho et al.): linear betas 1e-4 to 0.02, T = 1000.
    fn default() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_schedule: BetaSchedule::Linear { beta_start: 0.0001, beta_end: 0.02 },
            prediction_type: PredictionType::Epsilon,
            clip_sample: None,
            clip_sample_range: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
            variance_type: VarianceType::FixedSmall,
            set_alpha_to_one: true,
            skip_prk_steps: false,
            class: None,
        }
    }
}

impl SchedulerConfig {
    /// Reads a diffusers `scheduler_config.json`; absent or null keys take diffusers' defaults.
    pub fn from_json(text: &str) -> Result<Self> {
        let k: SchedulerKeys = crate::json_keys::parse(text, "scheduler config")?;
        for (key, on) in [("thresholding", k.thresholding), ("rescale_betas_zero_snr", k.rescale_betas_zero_snr)] {
            if on == Some(true) {
                bail!("{key} = true is not supported");
            }
        }
        let d = SchedulerConfig::default();
        let (beta_start, beta_end) = (k.beta_start.unwrap_or(0.0001), k.beta_end.unwrap_or(0.02));
        let beta_schedule = match (k.trained_betas, k.beta_schedule.unwrap_or(BetaScheduleName::Linear)) {
            (Some(betas), _) => BetaSchedule::Trained(betas),
            (None, BetaScheduleName::Linear) => BetaSchedule::Linear { beta_start, beta_end },
            (None, BetaScheduleName::ScaledLinear) => BetaSchedule::ScaledLinear { beta_start, beta_end },
            (None, BetaScheduleName::SquaredcosCapV2) => BetaSchedule::SquaredCosCapV2,
        };
        let c = SchedulerConfig {
            num_train_timesteps: k.num_train_timesteps.unwrap_or(d.num_train_timesteps),
            beta_schedule,
            prediction_type: k.prediction_type.unwrap_or(d.prediction_type),
            clip_sample: k.clip_sample,
            clip_sample_range: k.clip_sample_range.unwrap_or(d.clip_sample_range),
            timestep_spacing: k.timestep_spacing.unwrap_or(d.timestep_spacing),
            steps_offset: k.steps_offset.unwrap_or(d.steps_offset),
            variance_type: k.variance_type.unwrap_or(d.variance_type),
            set_alpha_to_one: k.set_alpha_to_one.unwrap_or(d.set_alpha_to_one),
            skip_prk_steps: k.skip_prk_steps.unwrap_or(d.skip_prk_steps),
            class: k.class_name.map(|name| ConfigClass {
                name,
                solver_order: k.solver_order,
                algorithm_type: k.algorithm_type,
                use_karras_sigmas: k.use_karras_sigmas,
            }),
        };
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

    /// The clip range if clip_sample is on, for a class whose default is `default` (DDPM's and
    /// DDIM's is true, Heun's false).
    pub fn clip_or(&self, default: bool) -> Option<f32> {
        self.clip_sample.unwrap_or(default).then_some(self.clip_sample_range)
    }
}

/// The keys of scheduler_config.json this engine reads; `None` is an absent or null key.
#[derive(Default, Deserialize)]
#[serde(default)]
struct SchedulerKeys {
    num_train_timesteps: Option<usize>,
    beta_start: Option<f64>,
    beta_end: Option<f64>,
    beta_schedule: Option<BetaScheduleName>,
    trained_betas: Option<Vec<f32>>,
    prediction_type: Option<PredictionType>,
    clip_sample: Option<bool>,
    clip_sample_range: Option<f32>,
    timestep_spacing: Option<TimestepSpacing>,
    steps_offset: Option<usize>,
    variance_type: Option<VarianceType>,
    set_alpha_to_one: Option<bool>,
    skip_prk_steps: Option<bool>,
    thresholding: Option<bool>,
    rescale_betas_zero_snr: Option<bool>,
    #[serde(rename = "_class_name")]
    class_name: Option<String>,
    solver_order: Option<usize>,
    algorithm_type: Option<String>,
    use_karras_sigmas: Option<bool>,
}

/// `beta_schedule`'s names; the betas themselves come with beta_start/beta_end.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BetaScheduleName {
    Linear,
    ScaledLinear,
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
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
        assert_eq!(c.clip_or(false), Some(1.0), "a written clip_sample wins over the class default");
        let absent = SchedulerConfig::from_json("{}").unwrap();
        assert_eq!((absent.clip_or(true), absent.clip_or(false)), (Some(1.0), None));
        let err = SchedulerConfig::from_json(r#"{"variance_type": "learned_range"}"#).unwrap_err().to_string();
        assert!(err.contains("variance_type"), "{err}");
        let err = SchedulerConfig::from_json(r#"{"thresholding": true}"#).unwrap_err().to_string();
        assert!(err.contains("thresholding"), "{err}");
        let err = SchedulerConfig::from_json(r#"{"clip_sample": "yes"}"#).unwrap_err().to_string();
        assert!(err.contains("clip_sample"), "{err}");
        assert!(SchedulerConfig::from_json("[1, 2]").is_err());
    }
}
