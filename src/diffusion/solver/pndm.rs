//! PNDM (Liu et al. 2022) as diffusers' PNDMScheduler runs it: pseudo linear multistep (PLMS)
//! steps on the noise prediction, formula (9) of the paper as the transfer, Adams-Bashforth
//! weights up to fourth order over the `ets` history. d is the model's raw output on every row
//! (v_prediction is converted inside the transfer, after the history is combined, as diffusers
//! does), so the ring holds diffusers' `ets`.
//!
//! Only the PLMS part is a linear plan. diffusers' default (skip_prk_steps = false) first runs
//! three Runge-Kutta steps (12 evaluations), keeping one output of each in `ets`; the PLMS step
//! after them combines the outputs of evaluations 0, 4 and 8, the next one those of 4 and 8.
//! Evaluations 0 and 4 are then needed apart, long after they left the ring, and a row has a
//! single saved sample (which the Runge-Kutta steps also need for their starting sample), so no
//! plan over (x, s, d, h1, h2, h3) reproduces it: [`plan`] refuses it, [`plms_plan`] is PNDM with
//! skip_prk_steps = true.

use super::{Eval, Lin, Plan, SolverOptions};
use crate::diffusion::config::{PredictionType, SchedulerConfig};
use crate::diffusion::schedule::NoiseSchedule;
use crate::diffusion::timesteps::inference_timesteps;
use anyhow::{Result, bail};

/// PNDMScheduler from a model folder's config. Its own key skip_prk_steps defaults to false and
/// the engine's config has no such key, so this is the Runge-Kutta warm-up, refused (see above).
pub fn plan(config: &SchedulerConfig, steps: usize, opts: &SolverOptions) -> Result<Plan> {
    check(config, opts)?;
    bail!(
        "pndm: diffusers' default Runge-Kutta warm-up (skip_prk_steps = false) needs the outputs of \
         evaluations 0 and 4 apart at evaluations 12 and 13, more state than a solver row keeps; \
         PNDM with skip_prk_steps (PLMS only) fits, or use another solver ({steps} steps asked)"
    )
}

/// PNDMScheduler with skip_prk_steps = true: steps + 1 evaluations, the second one at the same
/// timestep as the third (diffusers averages the first two outputs into a second-order start).
pub fn plms_plan(config: &SchedulerConfig, steps: usize, opts: &SolverOptions) -> Result<Plan> {
    check(config, opts)?;
    let t_train = config.num_train_timesteps;
    // Ascending, as diffusers' _timesteps.
    let mut ts: Vec<i64> = inference_timesteps(config.timestep_spacing, t_train, steps, config.steps_offset)?
        .into_iter()
        .map(|t| t as i64)
        .collect();
    ts.reverse();
    let n = ts.len();
    let mut plms: Vec<i64> = ts[..n - 1].to_vec();
    plms.extend_from_slice(&ts[n.saturating_sub(2)..n - 1]);
    plms.push(ts[n - 1]);
    plms.reverse();
    let schedule = NoiseSchedule::new(&config.beta_schedule, t_train)?;
    // set_alpha_to_one is PNDM's own key (false); a DDPM config does not carry it.
    let transfer = Transfer {
        ac: &schedule.alphas_cumprod,
        final_alpha_cumprod: schedule.alphas_cumprod[0],
        prediction: config.prediction_type,
    };
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
    if opts.eta.is_some() {
        bail!("pndm is deterministic and takes no --eta");
    }
    if opts.karras {
        bail!("pndm has no --karras (diffusers' PNDMScheduler has no use_karras_sigmas)");
    }
    if config.prediction_type == PredictionType::Sample {
        bail!("pndm supports prediction_type epsilon and v_prediction, not sample");
    }
    config.validate()
}

/// The fourth-order Adams-Bashforth weights, newest first.
fn adams4(e0: Lin, e1: Lin, e2: Lin, e3: Lin) -> Lin {
    (55.0 * e0 - 59.0 * e1 + 37.0 * e2 - 9.0 * e3) * (1.0 / 24.0)
}

/// _get_prev_sample: formula (9) from timestep `from` to `to`, scalars in f32 as diffusers'.
struct Transfer<'a> {
    ac: &'a [f32],
    final_alpha_cumprod: f32,
    prediction: PredictionType,
}

impl Transfer<'_> {
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
