//! DPM-Solver++ multistep (Lu et al. 2022) as diffusers' DPMSolverMultistepScheduler runs it:
//! `dpm++2m`, `dpm++3m` (algorithm_type "dpmsolver++", solver_order 2 or 3) and `dpm++2m-sde`
//! ("sde-dpmsolver++"), midpoint form, final sigma 0, optionally Karras sigmas. The converted
//! output d is the data prediction x0 on every row; the ring holds the earlier ones (diffusers'
//! `model_outputs`), so a step is one row and nothing is saved. The step scalars are computed in
//! f32 from the f32 sigma table, as torch computes them; the table itself as numpy does.

use super::{Eval, Lin, Plan, SolverOptions, sigmas};
use crate::diffusion::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use crate::diffusion::schedule::{BetaSchedule, NoiseSchedule};
use anyhow::{Result, anyhow, bail};

pub fn plan(config: &SchedulerConfig, steps: usize, opts: &SolverOptions, order: usize, sde: bool) -> Result<Plan> {
    let name = match (order, sde) {
        (2, false) => "dpm++2m",
        (3, false) => "dpm++3m",
        (2, true) => "dpm++2m-sde",
        (3, true) => "dpm++3m-sde",
        _ => bail!("DPM-Solver++ multistep has orders 2 and 3, not {order}"),
    };
    check_request(name, config, steps, opts)?;
    // Karras timesteps of the cosine schedule stay fractional in diffusers and are truncated by
    // the cast to int64; the others are rounded.
    let round = !matches!(config.beta_schedule, BetaSchedule::SquaredCosCapV2);
    let table = SigmaTable::new(config, multistep_timesteps(config, steps), opts.karras, round)?;
    let n = table.timesteps.len();
    let mut plan = Plan::new(name, n, 1.0);
    for i in 0..n {
        let (t, s0) = (Point::new(table.sigmas[i + 1]), Point::new(table.sigmas[i]));
        let (p, q) = data_prediction(config.prediction_type, s0);
        let (next, noise_std) = match step_order(i, n, order) {
            1 => midpoint_update(Span::new(t, s0), Lin::X, Lin::D, Lin::ZERO, sde),
            2 => second_order(t, s0, Point::new(table.sigmas[i - 1]), sde),
            _ => third_order(t, s0, Point::new(table.sigmas[i - 1]), Point::new(table.sigmas[i - 2]), sde),
        };
        let eval = Eval { t: table.timesteps[i] as f64, input_scale: 1.0, p, q, next, save: None, noise_std };
        plan.push(eval).map_err(|e| table.explain(e, i))?;
    }
    Ok(plan)
}

/// The order diffusers' `step` uses at step i of n: warm-up through the lower orders while
/// `model_outputs` fills, first order at the end (final_sigmas_type "zero" forces it), second
/// order before it under lower_order_final (on, the default) when there are fewer than 15 steps.
fn step_order(i: usize, n: usize, order: usize) -> usize {
    let lower_order_second = i + 2 == n && n < 15;
    if i == 0 || i + 1 == n {
        1
    } else if order == 2 || i < 2 || lower_order_second {
        2
    } else {
        3
    }
}

/// multistep_dpm_solver_second_order_update: D0 = d, D1 = (d - h1) / r0.
fn second_order(t: Point, s0: Point, s1: Point, sde: bool) -> (Lin, Option<f64>) {
    let span = Span::new(t, s0);
    let r0 = (s0.lambda - s1.lambda) / span.h;
    let d1 = f(1.0 / r0) * (Lin::D - Lin::h(1));
    midpoint_update(span, Lin::X, Lin::D, d1, sde)
}

/// multistep_dpm_solver_third_order_update (which has no midpoint form).
fn third_order(t: Point, s0: Point, s1: Point, s2: Point, sde: bool) -> (Lin, Option<f64>) {
    let (h, h_0, h_1) = (t.lambda - s0.lambda, s0.lambda - s1.lambda, s1.lambda - s2.lambda);
    let (r0, r1) = (h_0 / h, h_1 / h);
    let d1_0 = f(1.0 / r0) * (Lin::D - Lin::h(1));
    let d1_1 = f(1.0 / r1) * (Lin::h(1) - Lin::h(2));
    let d1 = d1_0 + f(r0 / (r0 + r1)) * (d1_0 - d1_1);
    let d2 = f(1.0 / (r0 + r1)) * (d1_0 - d1_1);
    let ratio = t.sigma / s0.sigma;
    if !sde {
        let e = (-h).exp() - 1.0;
        let next = f(ratio) * Lin::X - f(t.alpha * e) * Lin::D + f(t.alpha * (e / h + 1.0)) * d1
            - f(t.alpha * ((e + h) / (h * h) - 0.5)) * d2;
        return (next, None);
    }
    let e = 1.0 - (-2.0 * h).exp();
    let next = f(ratio * (-h).exp()) * Lin::X
        + f(t.alpha * e) * Lin::D
        + f(t.alpha * (e / (-2.0 * h) + 1.0)) * d1
        + f(t.alpha * ((e - 2.0 * h) / ((2.0 * h) * (2.0 * h)) - 0.5)) * d2;
    (next, Some(f(t.sigma * e.sqrt())))
}

/// One step's ends: from s to t over h = lambda_t - lambda_s.
#[derive(Clone, Copy, Debug)]
pub(super) struct Span {
    pub t: Point,
    pub s: Point,
    pub h: f32,
}

impl Span {
    pub(super) fn new(t: Point, s: Point) -> Span {
        Span { t, s, h: t.lambda - s.lambda }
    }
}

/// The first-order update (D1 = 0) and the midpoint second-order one, from `sample` at s to t:
/// x_t = (sigma_t/sigma_s) x - b D0 - b/2 D1 with b = alpha_t (e^-h - 1), or the SDE form, which
/// also returns the noise's std.
pub(super) fn midpoint_update(span: Span, sample: Lin, d0: Lin, d1: Lin, sde: bool) -> (Lin, Option<f64>) {
    let Span { t, s, h } = span;
    let ratio = t.sigma / s.sigma;
    if !sde {
        let b = t.alpha * ((-h).exp() - 1.0);
        return (f(ratio) * sample - f(b) * d0 - f(0.5 * b) * d1, None);
    }
    let e = 1.0 - (-2.0 * h).exp();
    let c = t.alpha * e;
    (f(ratio * (-h).exp()) * sample + f(c) * d0 + f(0.5 * c) * d1, Some(f(t.sigma * e.sqrt())))
}

fn f(v: f32) -> f64 {
    v as f64
}

/// The errors every DPM-Solver plan shares.
pub(super) fn check_request(name: &str, config: &SchedulerConfig, steps: usize, opts: &SolverOptions) -> Result<()> {
    config.validate()?;
    let train = config.num_train_timesteps;
    if steps == 0 || steps > train {
        bail!("{name}: the number of sampling steps must be between 1 and num_train_timesteps ({train}), got {steps}");
    }
    super::refuse_eta(name, opts)?;
    Ok(())
}

/// convert_model_output for dpmsolver++: x0 = p x + q model_out at the row's own sigma.
pub(super) fn data_prediction(prediction: PredictionType, at: Point) -> (f64, f64) {
    match prediction {
        // (x - sigma_t eps) / alpha_t
        PredictionType::Epsilon => (f(1.0 / at.alpha), f(-at.sigma / at.alpha)),
        PredictionType::VPrediction => (f(at.alpha), f(-at.sigma)),
        PredictionType::Sample => (0.0, 1.0),
    }
}

/// alpha_t, sigma_t and lambda_t of one entry of the sigma table (_sigma_to_alpha_sigma_t), in
/// f32 as torch computes them. At the final sigma 0, lambda is +inf and the updates reduce to
/// x_t = D0 exactly, as in diffusers.
#[derive(Clone, Copy, Debug)]
pub(super) struct Point {
    pub alpha: f32,
    pub sigma: f32,
    pub lambda: f32,
}

impl Point {
    pub(super) fn new(s: f32) -> Point {
        let alpha = 1.0 / (s * s + 1.0).sqrt();
        let sigma = s * alpha;
        Point { alpha, sigma, lambda: alpha.ln() - sigma.ln() }
    }
}

/// set_timesteps' spacings for this class, which differ from DDPM's: "leading" divides by
/// steps + 1 and "linspace" spans steps + 1 points, both dropping the last (t = 0). lambda_min_clipped
/// is -inf, so the last timestep is T. "trailing" can yield one step more than asked, ending at
/// t = -1 (e.g. 61 of 1000: numpy's arange length rounds up); diffusers runs it, and so do we.
pub(super) fn multistep_timesteps(config: &SchedulerConfig, steps: usize) -> Vec<i64> {
    let last = config.num_train_timesteps;
    match config.timestep_spacing {
        TimestepSpacing::Linspace => linspace_timesteps(last, steps),
        TimestepSpacing::Leading => {
            let ratio = last / (steps + 1);
            (1..=steps).rev().map(|i| (i * ratio + config.steps_offset) as i64).collect()
        }
        TimestepSpacing::Trailing => {
            // np.arange(T, 0, -T/n): ceil of the span over the step elements, start + i * delta.
            let (start, step) = (last as f64, -(last as f64 / steps as f64));
            let len = ((0.0 - start) / step).ceil() as usize;
            let delta = (start + step) - start;
            (0..len).map(|i| (start + i as f64 * delta).round_ties_even() as i64 - 1).collect()
        }
    }
}

/// np.linspace(0, T - 1, steps + 1).round()[::-1][:-1]: i * step, the last point exact.
pub(super) fn linspace_timesteps(train_steps: usize, steps: usize) -> Vec<i64> {
    let stop = (train_steps - 1) as f64;
    let step = stop / steps as f64;
    (1..=steps).rev().map(|i| if i == steps { stop } else { i as f64 * step }.round_ties_even() as i64).collect()
}

/// diffusers' `timesteps` and `sigmas` after set_timesteps: one sigma per evaluation, then 0.
pub(super) struct SigmaTable {
    pub timesteps: Vec<i64>,
    pub sigmas: Vec<f32>,
}

impl SigmaTable {
    /// `round`: whether Karras timesteps are rounded (else truncated by the int64 cast).
    pub(super) fn new(config: &SchedulerConfig, timesteps: Vec<i64>, karras: bool, round: bool) -> Result<Self> {
        let schedule = NoiseSchedule::new(&config.beta_schedule, config.num_train_timesteps)?;
        // torch, in f32: ((1 - abar) / abar) ** 0.5
        let train = sigmas::sigmas_from_alphas_cumprod(&schedule.alphas_cumprod);
        let (timesteps, mut sigmas) = if karras {
            let log_sigmas = sigmas::log_sigmas(&train);
            let k = sigmas::karras(train[0] as f64, train[train.len() - 1] as f64, timesteps.len());
            let t = k
                .iter()
                .map(|&s| sigmas::sigma_to_t(s, &log_sigmas))
                .map(|t| if round { t.round_ties_even() } else { t });
            (t.map(|t| t as i64).collect(), k.iter().map(|&s| s as f32).collect())
        } else {
            let at = |t: i64| train[t.clamp(0, train.len() as i64 - 1) as usize];
            let s: Vec<f32> = timesteps.iter().map(|&t| at(t)).collect();
            (timesteps, s)
        };
        // index_for_timestep takes the second match of the first timestep, so diffusers would
        // start one step in and index past its sigmas at the end.
        if timesteps[1..].contains(&timesteps[0]) {
            bail!(
                "{} steps repeat the first timestep {} (diffusers fails on that schedule); use fewer steps",
                timesteps.len(),
                timesteps[0]
            );
        }
        sigmas.push(0.0);
        Ok(SigmaTable { timesteps, sigmas })
    }

    /// A non-finite coefficient at evaluation i comes from a repeated sigma (e.g. "linspace" at
    /// T steps rounds two timesteps alike): a step of length zero divides by zero, and diffusers
    /// returns NaN. Where the repeat falls on a first-order step it is harmless, so it is no
    /// error by itself.
    pub(super) fn explain(&self, e: anyhow::Error, i: usize) -> anyhow::Error {
        match (i.saturating_sub(2)..=i).find(|&j| self.sigmas[j] == self.sigmas[j + 1]) {
            Some(j) => {
                anyhow!("{e}: timestep {} repeats, a step of length zero (diffusers returns NaN)", self.timesteps[j])
            }
            None => e,
        }
    }
}
