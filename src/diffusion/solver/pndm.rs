//! PNDM (Liu et al. 2022) as diffusers' PNDMScheduler runs it: pseudo linear multistep (PLMS)
//! steps on the noise prediction, formula (9) of the paper as the transfer, Adams-Bashforth
//! weights up to fourth order over the `ets` history. d is the model's raw output on every row
//! (v_prediction is converted inside the transfer, after the history is combined, as diffusers
//! does), so the ring holds diffusers' `ets`.
//!
//! diffusers' default (skip_prk_steps = false) first runs three Runge-Kutta steps over the last
//! four timesteps (12 evaluations, [`plan`]): in each group of four, the first evaluation's sample
//! is kept (s) and every evaluation transfers from it, the fourth with the classic 1/6, 1/3, 1/3,
//! 1/6 mean of the group's outputs (d and h1..h3). The first output of each group also enters
//! `ets`, so the PLMS steps after them read the outputs of evaluations 0, 4 and 8 long after
//! they left the three before: those rows name their reads (slots.rs keeps them alive).
//! skip_prk_steps = true (latent diffusion's configs) is [`plms_plan`].

use super::{Eval, Lin, Plan, SolverOptions, refuse_eta};
use crate::diffusion::config::{PredictionType, SchedulerConfig};
use crate::diffusion::schedule::NoiseSchedule;
use crate::diffusion::timesteps::inference_timesteps;
use anyhow::{Result, bail};

/// PNDMScheduler from a model folder's config: PLMS alone when the config sets skip_prk_steps,
/// else the Runge-Kutta warm-up first (steps + 9 evaluations; at least 4 steps, as diffusers).
pub fn plan(config: &SchedulerConfig, steps: usize, opts: &SolverOptions) -> Result<Plan> {
    if config.skip_prk_steps {
        return plms_plan(config, steps, opts);
    }
    check(config, opts)?;
    if steps < 4 {
        bail!("pndm's Runge-Kutta warm-up runs over the last 4 timesteps: it needs at least 4 steps, got {steps}");
    }
    let ts = ascending_timesteps(config, steps)?;
    let (t_train, n) = (config.num_train_timesteps, ts.len());
    let half = (t_train / steps / 2) as i64;
    // diffusers' prk_timesteps: the last four timesteps, each with its midpoint, in RK4's order.
    let mut pairs: Vec<i64> = ts[n - 4..].iter().flat_map(|&t| [t, t + half]).collect();
    pairs.pop();
    let mut prk: Vec<i64> = pairs.iter().flat_map(|&t| [t, t]).collect();
    prk = prk[1..prk.len() - 1].to_vec();
    prk.reverse();
    let transfer = Transfer::new(config)?;
    let mut plan = Plan::new("pndm", steps, 1.0);
    for (c, &tau) in prk.iter().enumerate() {
        let prev = tau - if c % 2 == 1 { 0 } else { half };
        let (sample, eps, save) = match c % 4 {
            0 => (Lin::X, Lin::D, Some(Lin::X)),
            3 => (Lin::S, (Lin::h(3) + 2.0 * Lin::h(2) + 2.0 * Lin::h(1) + Lin::D) * (1.0 / 6.0), None),
            _ => (Lin::S, Lin::D, None),
        };
        let next = transfer.prev_sample(prk[c / 4 * 4], prev, sample, eps)?;
        plan.push(Eval { t: tau as f64, input_scale: 1.0, p: 0.0, q: 1.0, next, save, noise_std: None })?;
    }
    // The PLMS steps, fourth order from the first: `ets` holds the outputs of evaluations 0, 4, 8,
    // then of every evaluation from 12 on; row 12 + j is ets entry 3 + j and reads the three before.
    let ets = |i: usize| if i < 3 { 4 * i } else { i + 9 };
    let delta = (t_train / steps) as i64;
    for (j, &tau) in ts[..n - 3].iter().rev().enumerate() {
        let next = transfer.prev_sample(tau, tau - delta, Lin::X, adams4(Lin::D, Lin::h(1), Lin::h(2), Lin::h(3)))?;
        let eval = Eval { t: tau as f64, input_scale: 1.0, p: 0.0, q: 1.0, next, save: None, noise_std: None };
        plan.push_reading(eval, [Some(ets(j + 2)), Some(ets(j + 1)), Some(ets(j))])?;
    }
    Ok(plan)
}

/// PNDMScheduler with skip_prk_steps = true: steps + 1 evaluations, the second one at the same
/// timestep as the third (diffusers averages the first two outputs into a second-order start).
pub fn plms_plan(config: &SchedulerConfig, steps: usize, opts: &SolverOptions) -> Result<Plan> {
    check(config, opts)?;
    let t_train = config.num_train_timesteps;
    let ts = ascending_timesteps(config, steps)?;
    let n = ts.len();
    let mut plms: Vec<i64> = ts[..n - 1].to_vec();
    plms.extend_from_slice(&ts[n.saturating_sub(2)..n - 1]);
    plms.push(ts[n - 1]);
    plms.reverse();
    let transfer = Transfer::new(config)?;
    let delta = (t_train / steps) as i64;
    let mut plan = Plan::new("pndm", steps, 1.0);
    for (c, &tau) in plms.iter().enumerate() {
        // ets holds every output but the second (which diffusers folds into the first instead).
        let (from, to, sample, eps, save) = match c {
            0 => (tau, tau - delta, Lin::X, Lin::D, Some(Lin::X)),
            // cur_sample (x_0, in s) again, with the mean of the two outputs; s then keeps m_0,
            // the oldest ets entry of the fourth-order steps 2 and 4 ago.
            1 => (tau + delta, tau, Lin::S, (Lin::D + Lin::h(1)) * 0.5, Some(Lin::h(1))),
            2 => (tau, tau - delta, Lin::X, (3.0 * Lin::D - Lin::h(2)) * 0.5, None),
            3 => (tau, tau - delta, Lin::X, (23.0 * Lin::D - 16.0 * Lin::h(1) + 5.0 * Lin::h(3)) * (1.0 / 12.0), None),
            4 => (tau, tau - delta, Lin::X, adams4(Lin::D, Lin::h(1), Lin::h(2), Lin::S), None),
            _ => (tau, tau - delta, Lin::X, adams4(Lin::D, Lin::h(1), Lin::h(2), Lin::h(3)), None),
        };
        let next = transfer.prev_sample(from, to, sample, eps)?;
        plan.push(Eval { t: tau as f64, input_scale: 1.0, p: 0.0, q: 1.0, next, save, noise_std: None })?;
    }
    Ok(plan)
}

fn check(config: &SchedulerConfig, opts: &SolverOptions) -> Result<()> {
    refuse_eta("pndm", opts)?;
    if opts.karras {
        bail!("pndm has no --karras (diffusers' PNDMScheduler has no use_karras_sigmas)");
    }
    if config.prediction_type == PredictionType::Sample {
        bail!("pndm supports prediction_type epsilon and v_prediction, not sample");
    }
    config.validate()
}

/// diffusers' _timesteps: the inference timesteps, ascending.
fn ascending_timesteps(config: &SchedulerConfig, steps: usize) -> Result<Vec<i64>> {
    let ts = inference_timesteps(config.timestep_spacing, config.num_train_timesteps, steps, config.steps_offset)?;
    Ok(ts.into_iter().rev().map(|t| t as i64).collect())
}

/// The fourth-order Adams-Bashforth weights, newest first.
fn adams4(e0: Lin, e1: Lin, e2: Lin, e3: Lin) -> Lin {
    (55.0 * e0 - 59.0 * e1 + 37.0 * e2 - 9.0 * e3) * (1.0 / 24.0)
}

/// _get_prev_sample: formula (9) from timestep `from` to `to`, scalars in f32 as diffusers'.
struct Transfer {
    ac: Vec<f32>,
    final_alpha_cumprod: f32,
    prediction: PredictionType,
}

impl Transfer {
    fn new(config: &SchedulerConfig) -> Result<Transfer> {
        let ac = NoiseSchedule::new(&config.beta_schedule, config.num_train_timesteps)?.alphas_cumprod;
        // set_alpha_to_one is PNDM's own key (false); a DDPM config does not carry it.
        Ok(Transfer { final_alpha_cumprod: ac[0], ac, prediction: config.prediction_type })
    }

    fn prev_sample(&self, from: i64, to: i64, sample: Lin, model_output: Lin) -> Result<Lin> {
        let at = |t: i64| -> Result<f32> {
            match usize::try_from(t).ok().and_then(|i| self.ac.get(i)) {
                Some(&a) => Ok(a),
                None => bail!("pndm: timestep {t} is outside the schedule (num_train_timesteps = {})", self.ac.len()),
            }
        };
        let alpha_prod_t = at(from)?;
        let alpha_prod_t_prev = if to >= 0 { at(to)? } else { self.final_alpha_cumprod };
        let (beta_prod_t, beta_prod_t_prev) = (1.0 - alpha_prod_t, 1.0 - alpha_prod_t_prev);
        let eps = match self.prediction {
            PredictionType::VPrediction => {
                alpha_prod_t.sqrt() as f64 * model_output + beta_prod_t.sqrt() as f64 * sample
            }
            _ => model_output,
        };
        let sample_coeff = (alpha_prod_t_prev / alpha_prod_t).sqrt();
        let denom = alpha_prod_t * beta_prod_t_prev.sqrt() + (alpha_prod_t * beta_prod_t * alpha_prod_t_prev).sqrt();
        Ok(sample_coeff as f64 * sample - ((alpha_prod_t_prev - alpha_prod_t) as f64 / denom as f64) * eps)
    }
}
