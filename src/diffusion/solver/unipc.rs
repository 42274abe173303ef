//! UniPC (Zhao et al. 2023) as diffusers' UniPCMultistepScheduler runs it with its own defaults:
//! B(h) = e^h - 1 (bh2), solver_order 2, updates on the predicted x_0, lower_order_final, the
//! corrector on every step after the first. One row per step: the row's model output first
//! corrects the sample that was evaluated (UniC, from last_sample, kept in s), then the corrected
//! sample feeds the predictor (UniP); both are linear, so `next` is their composition and the
//! corrected sample is saved as the next row's last_sample.
//!
//! The scalars follow diffusers' float32 tensor arithmetic (the sigmas as numpy rounds them to
//! float32, then alpha, sigma, lambda, h, expm1 in f32); only the final combination is f64.
//! Also home of the set_timesteps that UniPC and DEIS share (n + 1 points, the last dropped).

use super::{Eval, Lin, Plan, SolverOptions, refuse_eta, sigmas};
use crate::diffusion::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use crate::diffusion::schedule::NoiseSchedule;
use crate::diffusion::timesteps::inference_timesteps;
use anyhow::{Result, bail};

/// The class's solver_order (its own key, so always its default here).
const ORDER: usize = 2;

pub fn plan(config: &SchedulerConfig, steps: usize, opts: &SolverOptions) -> Result<Plan> {
    refuse_eta("unipc", opts)?;
    let sched = multistep_schedule(config, steps, opts.karras, FinalSigma::Zero)?;
    let n = sched.timesteps.len();
    let mut plan = Plan::new("unipc", steps, 1.0);
    let mut prev_order = 0;
    for k in 0..n {
        let (p, q) = x0_conversion(config.prediction_type, AlphaSigma::new(sched.sigmas[k]));
        // The sample the corrector makes of x (x itself on the first step, where there is none).
        let corrected = if k == 0 { Lin::X } else { corrector(&sched.sigmas, k, prev_order) };
        // lower_order_final and the warm-up: diffusers' min(order, steps left, outputs so far).
        let order = ORDER.min(n - k).min(k + 1);
        let next = predictor(&sched.sigmas, k, order, corrected);
        plan.push(Eval {
            t: sched.timesteps[k] as f64,
            input_scale: 1.0,
            p,
            q,
            next,
            save: Some(corrected),
            noise_std: None,
        })?;
        prev_order = order;
    }
    Ok(plan)
}

/// convert_model_output with predict_x0: d = p x + q model_out is the predicted x_0.
pub(super) fn x0_conversion(prediction: PredictionType, a: AlphaSigma) -> (f64, f64) {
    let (alpha, sigma) = (a.alpha as f64, a.sigma as f64);
    match prediction {
        PredictionType::Epsilon => (1.0 / alpha, -sigma / alpha),
        PredictionType::Sample => (0.0, 1.0),
        PredictionType::VPrediction => (alpha, -sigma),
    }
}

/// multistep_uni_c_bh_update at step k (this_sample's step) with the previous step's order: the
/// update from last_sample (s) over the outputs h1 (m0), h2, ... plus this one (d).
fn corrector(sigmas: &[f32], k: usize, order: usize) -> Lin {
    let earlier: Vec<f32> = (1..order).map(|i| sigmas[k - 1 - i]).collect();
    let c = bh_update(sigmas[k], sigmas[k - 1], &earlier);
    let rhos = if order == 1 { vec![0.5] } else { solve(&c.r, &c.b) };
    // D1s: (m_i - m0) / r_i, m_i the output i steps before m0.
    let mut res = Lin::ZERO;
    for (i, &rk) in c.rks.iter().enumerate() {
        res = res + (Lin::h(i + 2) - Lin::h(1)) * (rhos[i] / rk);
    }
    res = res + (Lin::D - Lin::h(1)) * rhos[order - 1];
    c.x_coeff * Lin::S - c.m0_coeff * Lin::h(1) - c.bh_coeff * res
}

/// multistep_uni_p_bh_update at step k, from `sample` (the corrected one) with this row's output
/// (d) as m0 and h1, h2 before it.
fn predictor(sigmas: &[f32], k: usize, order: usize, sample: Lin) -> Lin {
    let earlier: Vec<f32> = (1..order).map(|i| sigmas[k - i]).collect();
    let c = bh_update(sigmas[k + 1], sigmas[k], &earlier);
    // rhos_p is 0.5 at order 2; diffusers solves for it only from order 3, past solver_order.
    let res = match c.rks[..] {
        [] => Lin::ZERO,
        [rk] => (Lin::h(1) - Lin::D) * (0.5 / rk),
        _ => unreachable!("UniPC runs at solver_order {ORDER}"),
    };
    c.x_coeff * sample - c.m0_coeff * Lin::D - c.bh_coeff * res
}

/// The scalars both UniPC updates share: x_t = x_coeff x - m0_coeff m0 - bh_coeff (sum of rho D1).
struct BhUpdate {
    x_coeff: f64,
    m0_coeff: f64,
    bh_coeff: f64,
    /// r_i = (lambda_si - lambda_s0) / h for the earlier outputs (the trailing 1 left out).
    rks: Vec<f64>,
    /// R[i][j] = r_j^i (with r = 1 last) and b: the order conditions rho solves.
    r: Vec<Vec<f64>>,
    b: Vec<f64>,
}

/// From sigma_s0 to sigma_t, with `earlier` the sigmas of the older outputs, newest first; f32
/// throughout as diffusers' tensor scalars.
fn bh_update(sigma_t: f32, sigma_s0: f32, earlier: &[f32]) -> BhUpdate {
    let (t, s0) = (AlphaSigma::new(sigma_t), AlphaSigma::new(sigma_s0));
    let h = t.lambda - s0.lambda;
    let mut rks: Vec<f32> = earlier.iter().map(|&s| (AlphaSigma::new(s).lambda - s0.lambda) / h).collect();
    rks.push(1.0);
    // predict_x0: hh = -h.
    let hh = -h;
    let h_phi_1 = hh.exp_m1();
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let b_h = hh.exp_m1();
    let (mut factorial, mut r, mut b) = (1u64, Vec::new(), Vec::new());
    for i in 1..=rks.len() {
        r.push(rks.iter().map(|&rk| rk.powi(i as i32 - 1) as f64).collect());
        b.push((h_phi_k * factorial as f32 / b_h) as f64);
        factorial *= i as u64 + 1;
        h_phi_k = h_phi_k / hh - (1.0 / factorial as f64) as f32;
    }
    rks.pop();
    BhUpdate {
        x_coeff: (t.sigma / s0.sigma) as f64,
        m0_coeff: (t.alpha * h_phi_1) as f64,
        bh_coeff: (t.alpha * b_h) as f64,
        rks: rks.into_iter().map(f64::from).collect(),
        r,
        b,
    }
}

/// torch.linalg.solve for the tiny systems of the order conditions (Gaussian elimination with
/// partial pivoting, as LAPACK's gesv), rounded to f32 as diffusers' rhos are.
fn solve(r: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut a: Vec<Vec<f64>> = r.iter().zip(b).map(|(row, &v)| row[..n].iter().copied().chain([v]).collect()).collect();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).unwrap_or(col);
        a.swap(col, pivot);
        let (top, below) = a.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for row in below {
            let f = row[col] / pivot_row[col];
            for (v, p) in row.iter_mut().zip(pivot_row).skip(col) {
                *v -= f * p;
            }
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|j| a[i][j] * x[j]).sum();
        x[i] = (a[i][n] - s) / a[i][i];
    }
    x.into_iter().map(|v| v as f32 as f64).collect()
}

/// _sigma_to_alpha_sigma_t and lambda = log(alpha) - log(sigma), in f32.
#[derive(Clone, Copy, Debug)]
pub(super) struct AlphaSigma {
    pub alpha: f32,
    pub sigma: f32,
    pub lambda: f32,
}

impl AlphaSigma {
    pub fn new(sigma: f32) -> AlphaSigma {
        let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
        let sigma_t = sigma * alpha;
        AlphaSigma { alpha, sigma: sigma_t, lambda: alpha.ln() - sigma_t.ln() }
    }
}

/// What follows the last sigma (final_sigmas_type): UniPC's "zero", or DEIS's repeat of the
/// smallest ("sigma_min": abar_0's sigma, or the last Karras sigma).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum FinalSigma {
    Zero,
    SigmaMin,
}

/// set_timesteps of UniPC and DEIS: the model's timesteps and steps + 1 sigmas (f32, as stored).
pub(super) struct MultistepSchedule {
    pub timesteps: Vec<i64>,
    pub sigmas: Vec<f32>,
}

pub(super) fn multistep_schedule(
    config: &SchedulerConfig,
    steps: usize,
    karras: bool,
    last: FinalSigma,
) -> Result<MultistepSchedule> {
    config.validate()?;
    let t_train = config.num_train_timesteps;
    if steps == 0 || steps > t_train {
        bail!("the number of sampling steps must be between 1 and num_train_timesteps ({t_train}), got {steps}");
    }
    let schedule = NoiseSchedule::new(&config.beta_schedule, t_train)?;
    // ((1 - abar) / abar) ** 0.5 in torch float32.
    let all = sigmas::sigmas_from_alphas_cumprod(&schedule.alphas_cumprod);
    let (timesteps, mut sigmas) = if karras {
        let log_sigmas = sigmas::log_sigmas(&all);
        let k = sigmas::karras(all[0] as f64, all[t_train - 1] as f64, steps);
        let t = k.iter().map(|&s| sigmas::sigma_to_t(s, &log_sigmas).round_ties_even() as i64).collect();
        (t, k.into_iter().map(|s| s as f32).collect::<Vec<f32>>())
    } else {
        let t = spaced_timesteps(config, steps)?;
        let s = t.iter().map(|&t| all[t as usize]).collect();
        (t, s)
    };
    let final_sigma = match (last, karras) {
        (FinalSigma::Zero, _) => 0.0,
        (FinalSigma::SigmaMin, true) => sigmas[sigmas.len() - 1],
        (FinalSigma::SigmaMin, false) => all[0],
    };
    sigmas.push(final_sigma);
    if let Some(&t) = timesteps.iter().find(|&&t| t < 0 || t as usize >= t_train) {
        bail!("timestep {t} is outside the schedule (num_train_timesteps = {t_train})");
    }
    Ok(MultistepSchedule { timesteps, sigmas })
}

/// The multistep classes' spacings: linspace and leading over steps + 1 points with the last (0)
/// dropped; trailing as everywhere.
fn spaced_timesteps(config: &SchedulerConfig, steps: usize) -> Result<Vec<i64>> {
    let t_train = config.num_train_timesteps;
    Ok(match config.timestep_spacing {
        TimestepSpacing::Linspace => {
            // np.linspace(0, T - 1, n + 1).round()[::-1][:-1]
            let stop = (t_train - 1) as f64;
            let step = stop / steps as f64;
            (1..=steps)
                .rev()
                .map(|i| if i == steps { stop } else { i as f64 * step }.round_ties_even() as i64)
                .collect()
        }
        TimestepSpacing::Leading => {
            let ratio = t_train / (steps + 1);
            (1..=steps).rev().map(|i| (i * ratio + config.steps_offset) as i64).collect()
        }
        TimestepSpacing::Trailing => {
            inference_timesteps(TimestepSpacing::Trailing, t_train, steps, 0)?.into_iter().map(|t| t as i64).collect()
        }
    })
}
