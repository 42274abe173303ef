//! The sigma-space helpers of diffusers' Karras-style schedulers (Euler, Euler ancestral, Heun,
//! and the use_karras_sigmas option of others): sigma_t = ((1 - abar_t) / abar_t)^0.5, sigmas at
//! float timesteps by np.interp, the Karras et al. (2022) rho = 7 schedule, and its inverse
//! _sigma_to_t. diffusers mixes dtypes here (the sigmas in torch float32, the interpolation and
//! the Karras ramp in numpy float64, log_sigmas in numpy float32), and the mix is mirrored: a
//! timestep off by an f32 rounding moves the model's input time.

use crate::diffusion::config::{SchedulerConfig, TimestepSpacing};
use crate::diffusion::schedule::NoiseSchedule;
use crate::diffusion::timesteps::inference_timesteps;
use anyhow::{Result, bail};

/// Karras et al.'s rho, fixed in diffusers.
pub const RHO: f64 = 7.0;

/// sigma_t for every training timestep, in f32 as diffusers' torch expression rounds each op.
/// The root is rounded correctly; torch's CPU kernel is not (an ulp off on about one entry in
/// six of the linear schedule), which moves nothing past 1e-6 downstream.
pub fn sigmas_from_alphas_cumprod(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect()
}

/// np.interp(x, arange(len(fp)), fp): f64 throughout, slope * (x - x_j) + fp_j, the ends held.
pub fn interp(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x.is_nan() {
        return x;
    }
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    let (lo, hi) = (fp[j] as f64, fp[j + 1] as f64);
    if x == j as f64 {
        return lo;
    }
    // xp[j + 1] - xp[j] is exactly 1, but numpy divides by it: keep the division for the rounding.
    (hi - lo) / 1.0 * (x - j as f64) + lo
}

/// np.linspace(start, stop, n) in f64: start + i * step, the last value set to stop exactly.
pub fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (stop - start) / (n - 1) as f64;
    (0..n).map(|i| if i + 1 == n { stop } else { i as f64 * step + start }).collect()
}

/// _convert_to_karras: n sigmas from sigma_max down to sigma_min, even in sigma^(1/rho).
pub fn karras(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / RHO), sigma_max.powf(1.0 / RHO));
    linspace(0.0, 1.0, n).into_iter().map(|r| (max_inv + r * (min_inv - max_inv)).powf(RHO)).collect()
}

/// np.log of the float32 sigmas: a float32 array. Rounded correctly here; numpy's SIMD f32 log
/// is an ulp off on about one entry in seven, so a Karras timestep can differ from diffusers'
/// by an ulp of t (6e-5 at t near 1000).
pub fn log_sigmas(sigmas: &[f32]) -> Vec<f32> {
    sigmas.iter().map(|&s| (s as f64).ln() as f32).collect()
}

/// _sigma_to_t: the fractional training timestep whose log sigma is log(sigma), by linear
/// interpolation between the two neighbouring log_sigmas. `low - high` is an f32 difference
/// in numpy (both are float32 scalars); everything else is f64.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // cumsum(dists >= 0).argmax(): the last index with log_sigmas[i] <= log_sigma (0 if none).
    let low_idx = log_sigmas.iter().rposition(|&l| log_sigma - l as f64 >= 0.0).unwrap_or(0).min(log_sigmas.len() - 2);
    let (low, high) = (log_sigmas[low_idx], log_sigmas[low_idx + 1]);
    let w = ((low as f64 - log_sigma) / (low - high) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * (low_idx + 1) as f64
}

/// set_timesteps' timesteps before any sigma conversion, as the float32 values numpy makes
/// (linspace spacing is fractional: np.linspace(0, T - 1, n, dtype=float32)).
pub fn spaced_timesteps(config: &SchedulerConfig, steps: usize) -> Result<Vec<f64>> {
    let train = config.num_train_timesteps;
    if steps == 0 || steps > train {
        bail!("the number of sampling steps must be between 1 and num_train_timesteps ({train}), got {steps}");
    }
    Ok(match config.timestep_spacing {
        TimestepSpacing::Linspace => {
            linspace(0.0, (train - 1) as f64, steps).into_iter().rev().map(|t| t as f32 as f64).collect()
        }
        spacing => {
            inference_timesteps(spacing, train, steps, config.steps_offset)?.into_iter().map(|t| t as f64).collect()
        }
    })
}

/// What set_timesteps leaves for the Euler-family classes, before Heun's doubling: the model's
/// time inputs (f32 values) and the sigmas, one per step and a final 0, in f32.
#[derive(Clone, Debug, PartialEq)]
pub struct SigmaSchedule {
    pub timesteps: Vec<f64>,
    pub sigmas: Vec<f32>,
}

impl SigmaSchedule {
    /// The linear-interpolation path (interpolation_type "linear", final_sigmas_type "zero"),
    /// optionally converted to Karras sigmas.
    pub fn new(config: &SchedulerConfig, steps: usize, karras_sigmas: bool) -> Result<SigmaSchedule> {
        let mut timesteps = spaced_timesteps(config, steps)?;
        let schedule = NoiseSchedule::new(&config.beta_schedule, config.num_train_timesteps)?;
        let train_sigmas = sigmas_from_alphas_cumprod(&schedule.alphas_cumprod);
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| interp(t, &train_sigmas)).collect();
        if karras_sigmas {
            // sigma_min/max are the interpolated ends (f64), not the training schedule's.
            sigmas = karras(sigmas[sigmas.len() - 1], sigmas[0], steps);
            let logs = log_sigmas(&train_sigmas);
            timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &logs) as f32 as f64).collect();
        }
        let sigmas = sigmas.into_iter().map(|s| s as f32).chain([0.0]).collect();
        Ok(SigmaSchedule { timesteps, sigmas })
    }

    /// init_noise_sigma: the largest sigma, or (max^2 + 1)^0.5 for "leading" spacing, in f32 as
    /// torch computes it on the sigma tensor.
    pub fn init_noise_sigma(&self, spacing: TimestepSpacing) -> f64 {
        let max = self.sigmas.iter().copied().fold(f32::MIN, f32::max);
        match spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interp_holds_the_ends_and_hits_the_knots() {
        let fp = [1.0f32, 3.0, 7.0];
        assert_eq!(interp(-1.0, &fp), 1.0);
        assert_eq!(interp(5.0, &fp), 7.0);
        assert_eq!(interp(1.0, &fp), 3.0);
        assert_eq!(interp(1.25, &fp), 4.0);
    }

    #[test]
    fn karras_runs_from_max_to_min_and_sigma_to_t_inverts_the_training_sigmas() {
        let k = karras(0.1, 80.0, 5);
        assert!((k[0] - 80.0).abs() < 1e-12 && (k[4] - 0.1).abs() < 1e-12);
        assert!(k.windows(2).all(|w| w[0] > w[1]));
        let abar: Vec<f32> = (0..10).map(|i| 1.0 - 0.09 * i as f32 - 0.01).collect();
        let sig = sigmas_from_alphas_cumprod(&abar);
        let logs = log_sigmas(&sig);
        for (i, &s) in sig.iter().enumerate() {
            assert!((sigma_to_t(s as f64, &logs) - i as f64).abs() < 1e-4, "t {i}");
        }
        let mid = ((sig[3] as f64).ln() * 0.5 + (sig[4] as f64).ln() * 0.5).exp();
        assert!((sigma_to_t(mid, &logs) - 3.5).abs() < 1e-4);
        // Outside the table, t is held at the ends.
        assert_eq!(sigma_to_t(1e-6, &logs), 0.0);
        assert_eq!(sigma_to_t(1e6, &logs), 9.0);
    }

    #[test]
    fn linspace_spacing_is_fractional_and_descending() {
        let c = SchedulerConfig { timestep_spacing: TimestepSpacing::Linspace, ..SchedulerConfig::default() };
        let t = spaced_timesteps(&c, 10).unwrap();
        assert_eq!(t[0], 999.0);
        assert_eq!(t[9], 0.0);
        assert_eq!(t[1], 888.0);
        assert_eq!(t[2], (999.0f64 / 9.0 * 7.0) as f32 as f64);
        assert!(spaced_timesteps(&c, 0).is_err() && spaced_timesteps(&c, 1001).is_err());
    }
}
