//! DPM-Solver++ singlestep, second order (`dpm++2s`), as diffusers' DPMSolverSinglestepScheduler
//! runs it: steps alternate first order (from the sample at s1 to the intermediate sigma s0,
//! where the model is evaluated next) and second order (from the same sample at s1 to t, using
//! both data predictions). Each step is one evaluation and so one row; the first-order rows save
//! their input sample (diffusers' `self.sample`) in s for the second-order row after them.
//!
//! The class has no timestep_spacing or steps_offset: its timesteps are always "linspace", whatever
//! the model folder's config says. Its lower_order_final defaults to False, but set_timesteps turns
//! it on for final_sigmas_type "zero" (the default), so the order list always ends in first order.

use super::dpm::{Point, SigmaTable, Span, check_request, data_prediction, linspace_timesteps, midpoint_update};
use super::{Eval, Lin, Plan, SolverOptions};
use crate::diffusion::SchedulerConfig;
use anyhow::Result;

pub fn plan(config: &SchedulerConfig, steps: usize, opts: &SolverOptions) -> Result<Plan> {
    let name = "dpm++2s";
    check_request(name, config, steps, opts)?;
    let timesteps = linspace_timesteps(config.num_train_timesteps, steps);
    let table = SigmaTable::new(config, timesteps, opts.karras, true)?;
    let mut plan = Plan::new(name, steps, 1.0);
    for (i, &order) in order_list(steps).iter().enumerate() {
        let (t, s0) = (Point::new(table.sigmas[i + 1]), Point::new(table.sigmas[i]));
        let (p, q) = data_prediction(config.prediction_type, s0);
        let (next, save, noise_std) = if order == 1 {
            let (next, noise) = midpoint_update(Span::new(t, s0), Lin::X, Lin::D, Lin::ZERO, false);
            (next, Some(Lin::X), noise)
        } else {
            let (next, noise) = second_order(t, s0, Point::new(table.sigmas[i - 1]));
            (next, None, noise)
        };
        let eval = Eval { t: table.timesteps[i] as f64, input_scale: 1.0, p, q, next, save, noise_std };
        plan.push(eval).map_err(|e| table.explain(e, i))?;
    }
    Ok(plan)
}

/// get_order_list for order 2 with lower_order_final: [1, 2] pairs, ending in [1, 1] (even) or
/// [1] (odd). The first entry is 1, so the `model_outputs[-order] is None` fallback never fires.
fn order_list(steps: usize) -> Vec<usize> {
    let mut orders: Vec<usize> = if steps.is_multiple_of(2) {
        [1, 2].repeat(steps / 2 - 1).into_iter().chain([1, 1]).collect()
    } else {
        [1, 2].repeat(steps / 2).into_iter().chain([1]).collect()
    };
    *orders.last_mut().expect("steps >= 1") = 1;
    orders
}

/// singlestep_dpm_solver_second_order_update: from the saved sample at s1 over h = lambda_t -
/// lambda_s1, D0 = the prediction at s1 (h1), D1 = (d - h1) / r0 with r0 = (lambda_s0 - lambda_s1) / h.
fn second_order(t: Point, s0: Point, s1: Point) -> (Lin, Option<f64>) {
    let span = Span::new(t, s1);
    let r0 = (s0.lambda - s1.lambda) / span.h;
    let d1 = (1.0 / r0) as f64 * (Lin::D - Lin::h(1));
    midpoint_update(span, Lin::S, Lin::h(1), d1, false)
}
