//! Noise schedules: betas, alphas and cumulative alphas (abar_t), computed the way diffusers
//! computes them (float32 `torch.linspace`, `torch.cumprod` on the CPU), because published
//! checkpoints were trained and are sampled with exactly those numbers. Checked bit for bit
//! against values dumped from diffusers (tests/diffusion.rs).

use anyhow::{Result, bail};

#[derive(Clone, Debug, PartialEq)]
pub enum BetaSchedule {
    /// DDPM's: betas evenly spaced from beta_start to beta_end. The ends are kept in f64, as the
    /// Python floats of a config are; torch rounds them to f32 itself.
    Linear { beta_start: f64, beta_end: f64 },
    /// Evenly spaced in sqrt(beta), then squared (latent diffusion's).
    ScaledLinear { beta_start: f64, beta_end: f64 },
    /// Nichol & Dhariwal's cosine schedule (s = 0.008), betas capped at 0.999.
    SquaredCosCapV2,
    /// Explicit betas from a config.
    Trained(Vec<f32>),
}

#[derive(Clone, Debug)]
pub struct NoiseSchedule {
    pub betas: Vec<f32>,
    pub alphas: Vec<f32>,
    /// abar_t = prod_{s <= t} alpha_s
    pub alphas_cumprod: Vec<f32>,
}

impl NoiseSchedule {
    pub fn new(schedule: &BetaSchedule, num_train_timesteps: usize) -> Result<Self> {
        if num_train_timesteps < 2 {
            bail!("num_train_timesteps must be at least 2, got {num_train_timesteps}");
        }
        let betas = match schedule {
            BetaSchedule::Linear { beta_start, beta_end } => {
                linspace_f32(*beta_start as f32, *beta_end as f32, num_train_timesteps)
            }
            BetaSchedule::ScaledLinear { beta_start, beta_end } => {
                // diffusers: linspace(beta_start**0.5, beta_end**0.5) ** 2, the roots taken in f64
                // (Python floats) and the square in f32.
                let (a, b) = (beta_start.sqrt() as f32, beta_end.sqrt() as f32);
                linspace_f32(a, b, num_train_timesteps).into_iter().map(|v| v * v).collect()
            }
            BetaSchedule::SquaredCosCapV2 => cosine_betas(num_train_timesteps, 0.999),
            BetaSchedule::Trained(b) => {
                if b.len() != num_train_timesteps {
                    bail!("trained_betas has {} values but num_train_timesteps is {num_train_timesteps}", b.len());
                }
                b.clone()
            }
        };
        if let Some((t, b)) = betas.iter().enumerate().find(|(_, b)| !(**b > 0.0 && **b < 1.0)) {
            bail!("beta at timestep {t} is {b}; betas must lie in (0, 1)");
        }
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        // torch.cumprod on the CPU accumulates float32 in double (acc_type<float> is double there)
        // and rounds each running product to float32 on store.
        let mut acc = 1.0f64;
        let alphas_cumprod = alphas
            .iter()
            .map(|&a| {
                acc *= a as f64;
                acc as f32
            })
            .collect();
        Ok(NoiseSchedule { betas, alphas, alphas_cumprod })
    }

    pub fn len(&self) -> usize {
        self.betas.len()
    }
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// sqrt(abar_t) per t, in f32 as diffusers' `alphas_cumprod ** 0.5`.
    pub fn sqrt_alphas_cumprod(&self) -> Vec<f32> {
        self.alphas_cumprod.iter().map(|a| a.sqrt()).collect()
    }
    /// sqrt(1 - abar_t) per t, as diffusers' `(1 - alphas_cumprod) ** 0.5`.
    pub fn sqrt_one_minus_alphas_cumprod(&self) -> Vec<f32> {
        self.alphas_cumprod.iter().map(|a| (1.0 - a).sqrt()).collect()
    }
}

/// torch.linspace(start, end, steps, dtype=float32) on the CPU: step = (end - start) / (steps - 1)
/// in float32; the first half counts up from start, the second half down from end, so both ends
/// are exact. PyTorch's x86 build contracts `start + step * i` into one fused multiply-add (GCC,
/// -mfma); so do we, which is what makes the betas agree with diffusers' to the bit.
pub fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| if i < halfway { step.mul_add(i as f32, start) } else { (-step).mul_add((steps - i - 1) as f32, end) })
        .collect()
}

/// diffusers' betas_for_alpha_bar with the cosine transform, in f64 (Python floats) and rounded to
/// float32 at the end as `torch.tensor(betas, dtype=float32)` does.
fn cosine_betas(steps: usize, max_beta: f64) -> Vec<f32> {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
    (0..steps)
        .map(|i| {
            let (t1, t2) = (i as f64 / steps as f64, (i + 1) as f64 / steps as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Why the f32 emulation matters: the same schedule computed in f64 and rounded once differs
    /// from diffusers' f32 numbers at many timesteps (the fixtures pin the f32 ones).
    #[test]
    fn an_f64_schedule_would_differ_from_diffusers() {
        let s = NoiseSchedule::new(&BetaSchedule::Linear { beta_start: 0.0001, beta_end: 0.02 }, 1000).unwrap();
        let mut acc = 1.0f64;
        let differ = (0..1000)
            .filter(|&t| {
                let beta = 0.0001 + (0.02 - 0.0001) * t as f64 / 999.0;
                acc *= 1.0 - beta;
                acc as f32 != s.alphas_cumprod[t]
            })
            .count();
        assert!(differ > 100, "only {differ} timesteps differ");
    }
}
