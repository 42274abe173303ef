//! Reference of kernels/diffusion.cu: the same f32 operations in the same order (Rust never fuses
//! a multiply and an add on its own), so the kernels match it bit for bit, and it matches
//! diffusers' schedulers bit for bit.

use crate::diffusion::{DdimStep, DdpmStep, Noise, PhiloxStream, PredictionType};
use crate::math::philox;

fn noise_at(noise: &Noise<&[f32]>, i: usize) -> f32 {
    match noise {
        Noise::Philox(s) => philox::normal(s.seed, s.offset, i as u64),
        Noise::Given(v) => v[i],
    }
}

/// t[b] uniform in [0, t_max).
pub fn sample_timesteps(t: &mut [u32], t_max: u32, s: PhiloxStream) {
    for (i, t) in t.iter_mut().enumerate() {
        *t = philox::timestep(philox::word(s.seed, s.offset, i as u64), t_max);
    }
}

pub fn fill_normal(out: &mut [f32], s: PhiloxStream) {
    philox::fill_normal(s.seed, s.offset, 0, out);
}

/// x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (eq. 8), t per image of `per_image` elements.
pub fn q_sample(
    x0: &[f32],
    t: &[u32],
    sqrt_abar: &[f32],
    sqrt_one_minus_abar: &[f32],
    noise: Noise<&[f32]>,
    xt: &mut [f32],
) {
    let per_image = x0.len() / t.len();
    for (i, (xt, &x0)) in xt.iter_mut().zip(x0).enumerate() {
        let ti = t[i / per_image] as usize;
        *xt = sqrt_abar[ti] * x0 + sqrt_one_minus_abar[ti] * noise_at(&noise, i);
    }
}

/// mean((eps - pred)^2) (eq. 17), accumulated in f64: the exact value the kernel's f32 tree
/// approximates.
pub fn mse_loss(pred: &[f32], target: Noise<&[f32]>) -> f32 {
    let sum: f64 = pred.iter().enumerate().map(|(i, &p)| ((noise_at(&target, i) - p) as f64).powi(2)).sum();
    (sum / pred.len() as f64) as f32
}

/// d loss / d pred = scale * (pred - eps); scale = 2 / n times the upstream gradient.
pub fn mse_loss_bwd(pred: &[f32], target: Noise<&[f32]>, scale: f32, grad: &mut [f32]) {
    for (i, (g, &p)) in grad.iter_mut().zip(pred).enumerate() {
        *g = scale * (p - noise_at(&target, i));
    }
}

fn predict_x0(kind: PredictionType, s: f32, m: f32, sa: f32, sb: f32) -> f32 {
    match kind {
        PredictionType::Epsilon => (s - sb * m) / sa,
        PredictionType::Sample => m,
        PredictionType::VPrediction => sa * s - sb * m,
    }
}

fn clip(x: f32, range: Option<f32>) -> f32 {
    range.map_or(x, |r| x.max(-r).min(r))
}

/// One DDPM step, element-wise (see kernels/diffusion.cu ddpm_step_f32).
pub fn ddpm_step(c: &DdpmStep, sample: &[f32], model_out: &[f32], noise: Noise<&[f32]>, prev: &mut [f32]) {
    for i in 0..sample.len() {
        let s = sample[i];
        let x0 = clip(predict_x0(c.prediction, s, model_out[i], c.sqrt_alpha_prod, c.sqrt_beta_prod), c.clip);
        let mut p = c.coeff_x0 * x0 + c.coeff_sample * s;
        if let Some(std) = c.noise_std {
            p += std * noise_at(&noise, i);
        }
        prev[i] = p;
    }
}

/// One DDIM step, element-wise (see kernels/diffusion.cu ddim_step_f32).
pub fn ddim_step(c: &DdimStep, sample: &[f32], model_out: &[f32], noise: Noise<&[f32]>, prev: &mut [f32]) {
    let (sa, sb) = (c.sqrt_alpha_prod, c.sqrt_beta_prod);
    for i in 0..sample.len() {
        let (s, m) = (sample[i], model_out[i]);
        let x0 = predict_x0(c.prediction, s, m, sa, sb);
        let mut eps = match c.prediction {
            PredictionType::Epsilon => m,
            PredictionType::Sample => (s - sa * x0) / sb,
            PredictionType::VPrediction => sa * m + sb * s,
        };
        let x0 = clip(x0, c.clip);
        if c.recompute_eps {
            eps = (s - sa * x0) / sb;
        }
        let mut p = c.sqrt_alpha_prev * x0 + c.dir_coeff * eps;
        if let Some(std) = c.noise_std {
            p += std * noise_at(&noise, i);
        }
        prev[i] = p;
    }
}
