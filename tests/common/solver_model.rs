//! The solver fixtures' stand-in model (tests/fixtures/solver_model.py, the same formula) and
//! their loop: a plan run on the host with the torch generator's draws in diffusers' order.

use ddpm::diffusion::solver::{Plan, run_plan};
use ddpm::math::torch_rng::TorchGenerator;

/// Elements of the fixtures' sample, [2, 3, 4, 4] NCHW.
pub const LEN: usize = 2 * 3 * 4 * 4;

pub fn stand_in(x: &[f32], t: f32) -> Vec<f32> {
    let w = (0.9 * (t as f64 / 1000.0).sqrt()) as f32;
    x.iter().enumerate().map(|(i, &v)| v * w + 0.1 * v.tanh() + 0.05 * (i as f32 + t / 100.0).sin()).collect()
}

/// The raw output of `plan` from torch seed `seed`: z first, then one draw per noisy row.
pub fn run(plan: &Plan, seed: u64) -> Vec<f32> {
    let mut g = TorchGenerator::manual_seed(seed);
    let z = g.randn(LEN);
    run_plan(plan, &z, &mut |x, t| stand_in(x, t), &mut || g.randn(LEN))
}
