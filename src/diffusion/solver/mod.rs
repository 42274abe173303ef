//! Fast samplers as linear plans. Every scheduler of diffusers that `ddpm sample --scheduler`
//! offers (DPM-Solver++, UniPC, DEIS, Euler, Heun, PNDM, ...) makes its next sample as a linear
//! combination of the current sample, earlier model outputs (converted to the solver's data or
//! noise prediction), at most one saved sample, and fresh noise, with coefficients that depend
//! only on the step. So a solver is written here once, on the host, as a transcription of the
//! diffusers class's `step` over symbolic tensors ([`Lin`]); it yields one [`SolverRow`] per model
//! evaluation, and the device only evaluates rows (kernels/diffusion.cu `solver_step_f32`, the CPU
//! reference [`apply_row`]). The per-step data lives in device buffers (the sample, one saved
//! sample, a ring of earlier converted outputs: slots.rs), so one captured CUDA graph replays the
//! whole run, as for DDPM and DDIM.
//!
//! The basis of a row: x (the sample as it enters the row), s (the saved sample), d (this
//! evaluation's converted output, d = p x + q model_out), h1, h2, h3 (the three converted outputs
//! before it, newest first, unless the row names others: [`Plan::push_reading`]). A solver states its update over that basis; which of its Python
//! state lives where (its `model_outputs` list in the ring, `last_sample` or Heun's first-stage
//! sample in s) is the transcription's choice.

pub mod deis;
pub mod dpm;
pub mod dpm_single;
pub mod euler;
pub mod heun;
pub mod pndm;
pub mod sigmas;
pub mod slots;
pub mod unipc;

use crate::diffusion::{Noise, PhiloxStream, SchedulerConfig};
use crate::math::philox;
use anyhow::{Result, bail};
pub use slots::Slots;
use slots::{Reads, previous_three};
use std::ops::{Add, Mul, Neg, Sub};

/// The options a user sets on the command line; everything else comes from the model folder's
/// scheduler config ([`crate::diffusion::SchedulerConfig`]) or the diffusers class's defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SolverOptions {
    /// `--karras`: use_karras_sigmas = True (an error for a class without it).
    pub karras: bool,
    /// `--eta`, for the solvers that take it (an error for the others).
    pub eta: Option<f32>,
}

/// The names `--scheduler` gives the linear solvers, in the README's order.
pub const NAMES: [&str; 10] =
    ["dpm++2m", "dpm++3m", "dpm++2m-sde", "dpm++2s", "unipc", "deis", "euler", "euler-a", "heun", "pndm"];

/// The plan of the solver `name` (as `--scheduler` spells it) for `steps` scheduler steps.
pub fn plan_named(name: &str, config: &SchedulerConfig, steps: usize, opts: &SolverOptions) -> Result<Plan> {
    match name {
        "dpm++2m" => dpm::plan(config, steps, opts, 2, false),
        "dpm++3m" => dpm::plan(config, steps, opts, 3, false),
        "dpm++2m-sde" => dpm::plan(config, steps, opts, 2, true),
        "dpm++2s" => dpm_single::plan(config, steps, opts),
        "unipc" => unipc::plan(config, steps, opts),
        "deis" => deis::plan(config, steps, opts),
        "euler" => euler::plan(config, steps, opts),
        "euler-a" => euler::plan_ancestral(config, steps, opts),
        "heun" => heun::plan(config, steps, opts),
        "pndm" => pndm::plan(config, steps, opts),
        other => bail!("no solver named {other:?} (the solvers: {})", NAMES.join(", ")),
    }
}

/// The eta check of every linear solver: none has one (DDIM's is its own scheduler's), so `--eta`
/// is refused in one line, worded the same for all.
pub(crate) fn refuse_eta(name: &str, opts: &SolverOptions) -> Result<()> {
    if let Some(eta) = opts.eta {
        bail!("--eta {eta}: the {name} scheduler has no eta (only ddim takes one)");
    }
    Ok(())
}

/// A symbolic tensor: coefficients over (x, s, d, h1, h2, h3), in f64.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Lin(pub [f64; 6]);

impl Lin {
    pub const ZERO: Lin = Lin([0.0; 6]);
    pub const X: Lin = Lin([1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    pub const S: Lin = Lin([0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    pub const D: Lin = Lin([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
    /// The converted output `back` evaluations ago (1 to 3).
    pub fn h(back: usize) -> Lin {
        assert!((1..=3).contains(&back), "the ring holds the three outputs before this one");
        let mut c = [0.0; 6];
        c[2 + back] = 1.0;
        Lin(c)
    }
}

impl Add for Lin {
    type Output = Lin;
    fn add(self, o: Lin) -> Lin {
        Lin(std::array::from_fn(|i| self.0[i] + o.0[i]))
    }
}
impl Sub for Lin {
    type Output = Lin;
    fn sub(self, o: Lin) -> Lin {
        Lin(std::array::from_fn(|i| self.0[i] - o.0[i]))
    }
}
impl Neg for Lin {
    type Output = Lin;
    fn neg(self) -> Lin {
        self * -1.0
    }
}
impl Mul<f64> for Lin {
    type Output = Lin;
    fn mul(self, k: f64) -> Lin {
        Lin(self.0.map(|c| c * k))
    }
}
impl Mul<Lin> for f64 {
    type Output = Lin;
    fn mul(self, l: Lin) -> Lin {
        l * self
    }
}

/// One model evaluation as the device runs it (f32 coefficients; layout in step_table.rs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SolverRow {
    /// The model's input is input_scale * x (scale_model_input).
    pub input_scale: f32,
    /// d = p x + q model_out: the output converted to what the solver combines.
    pub p: f32,
    pub q: f32,
    /// The next sample over (x, s, d, h1, h2, h3).
    pub next: [f32; 6],
    /// The new saved sample, when this row replaces it.
    pub save: Option<[f32; 6]>,
    /// The next sample gains noise_std * z, z standard normal.
    pub noise_std: Option<f32>,
    /// d is clamped to [-clip, clip] (clip_sample of a solver whose d is the x0 prediction).
    pub clip: Option<f32>,
    /// The ring slots of d, h1, h2, h3 (slots.rs).
    pub slots: Slots,
}

/// What one model evaluation of a solver does, in the solver's own terms: x here is the sample as
/// diffusers holds it (see [`Plan`] for the initial scale).
#[derive(Clone, Copy, Debug)]
pub struct Eval {
    /// The model's time input.
    pub t: f64,
    /// scale_model_input's factor (1 for the solvers that do not scale).
    pub input_scale: f64,
    /// d = p x + q model_out.
    pub p: f64,
    pub q: f64,
    pub next: Lin,
    pub save: Option<Lin>,
    pub noise_std: Option<f64>,
}

/// A whole run: rows in evaluation order, built eval by eval.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The scheduler's name as `--scheduler` spells it.
    pub name: &'static str,
    /// Scheduler steps (a Heun step is two evaluations).
    pub steps: usize,
    /// diffusers' init_noise_sigma: x_T = init_noise_sigma * z.
    pub init_noise_sigma: f64,
    /// clip_sample's range for every row's d (the solvers whose d is x0 and that read clip_sample).
    pub clip: Option<f32>,
    pub rows: Vec<(f32, SolverRow)>,
    /// The evaluations each row reads as h1, h2, h3, and whether any row reads other than the
    /// three before it (then slots are assigned by liveness, slots.rs).
    reads: Vec<Reads>,
    by_liveness: bool,
}

impl Plan {
    pub fn new(name: &'static str, steps: usize, init_noise_sigma: f64) -> Plan {
        Plan { name, steps, init_noise_sigma, clip: None, rows: Vec::new(), reads: Vec::new(), by_liveness: false }
    }

    /// Ring slots the run needs (the state is 1 + ring sample-sized buffers).
    pub fn ring(&self) -> usize {
        self.rows.iter().map(|(_, r)| r.slots.extent()).max().unwrap_or(1)
    }

    /// Model evaluations in the run.
    pub fn evaluations(&self) -> usize {
        self.rows.len()
    }

    /// Appends an evaluation whose h1, h2, h3 are the three evaluations before it. The buffer x
    /// of the first row holds z, not init_noise_sigma * z (the noise as drawn), so that row's x
    /// coefficients absorb the factor.
    pub fn push(&mut self, e: Eval) -> Result<()> {
        let reads = previous_three(self.rows.len());
        self.push_reading(e, reads)
    }

    /// Appends an evaluation whose h1, h2, h3 are the outputs of the evaluations `reads` (earlier
    /// ones; None where the coefficient is zero).
    pub fn push_reading(&mut self, e: Eval, reads: Reads) -> Result<()> {
        let k = if self.rows.is_empty() { self.init_noise_sigma } else { 1.0 };
        let scale_x = |l: Lin| {
            let mut c = l.0;
            c[0] *= k;
            c
        };
        let f = |v: f64, what: &str| -> Result<f32> {
            let r = v as f32;
            if !r.is_finite() {
                bail!("{}: {what} of evaluation {} is {v}, not a finite f32", self.name, self.rows.len());
            }
            Ok(r)
        };
        let arr = |c: [f64; 6], what: &str| -> Result<[f32; 6]> {
            let mut out = [0f32; 6];
            for (o, v) in out.iter_mut().zip(c) {
                *o = f(v, what)?;
            }
            Ok(out)
        };
        let row = SolverRow {
            input_scale: f(e.input_scale * k, "the input scale")?,
            p: f(e.p * k, "p")?,
            q: f(e.q, "q")?,
            next: arr(scale_x(e.next), "a coefficient of the next sample")?,
            save: e.save.map(|s| arr(scale_x(s), "a coefficient of the saved sample")).transpose()?,
            noise_std: e.noise_std.map(|v| f(v, "the noise std")).transpose()?,
            clip: self.clip,
            slots: Slots::ring_of_four(self.rows.len()),
        };
        self.by_liveness |= reads != previous_three(self.rows.len());
        self.rows.push((f(e.t, "the timestep")?, row));
        self.reads.push(reads);
        if self.by_liveness {
            let slots = slots::allocate(&self.reads).map_err(|e| e.context(self.name))?;
            for ((_, row), s) in self.rows.iter_mut().zip(slots) {
                row.slots = s;
            }
        }
        Ok(())
    }
}

/// c . (x, s, d, h1, h2, h3), left to right, each product rounded: the kernel's order.
fn combine(c: &[f32; 6], v: [f32; 6]) -> f32 {
    let mut acc = c[0] * v[0];
    for i in 1..6 {
        acc += c[i] * v[i];
    }
    acc
}

/// One row on the host, element-wise, in the kernel's f32 operations and order (the CPU
/// reference of `solver_step_f32`): `state` is [saved | ring 0 | ring 1 | ...], `x.len()` floats
/// each, with at least the row's slots (the caller checks: [`SolverRow::slots`]).
pub fn apply_row(row: &SolverRow, x: &mut [f32], model_out: &[f32], state: &mut [f32], noise: Noise<&[f32]>) {
    let n = x.len();
    let (saved, ring) = state.split_at_mut(n);
    let slot = row.slots.write as usize * n;
    let [h1, h2, h3] = row.slots.read.map(|s| s as usize * n);
    for i in 0..n {
        let (xv, sv) = (x[i], saved[i]);
        let mut d = row.p * xv + row.q * model_out[i];
        if let Some(r) = row.clip {
            d = d.max(-r).min(r);
        }
        let v = [xv, sv, d, ring[h1 + i], ring[h2 + i], ring[h3 + i]];
        let mut next = combine(&row.next, v);
        if let Some(std) = row.noise_std {
            let z = match noise {
                Noise::Philox(PhiloxStream { seed, offset }) => philox::normal(seed, offset, i as u64),
                Noise::Given(z) => z[i],
            };
            next += std * z;
        }
        if let Some(c) = &row.save {
            saved[i] = combine(c, v);
        }
        ring[slot + i] = d;
        x[i] = next;
    }
}

/// A whole plan on the host with a model given as a function (input, t) -> output, and the noise
/// of each noisy row from `noise` (called in row order): for tests against diffusers' loops with
/// a stand-in model, and for the CPU backends' loop.
pub fn run_plan(
    plan: &Plan,
    z: &[f32],
    model: &mut dyn FnMut(&[f32], f32) -> Vec<f32>,
    noise: &mut dyn FnMut() -> Vec<f32>,
) -> Vec<f32> {
    let n = z.len();
    let mut x = z.to_vec();
    let mut state = vec![0f32; (1 + plan.ring()) * n];
    for (t, row) in &plan.rows {
        let input: Vec<f32> = x.iter().map(|&v| row.input_scale * v).collect();
        let m = model(&input, *t);
        let drawn = row.noise_std.map(|_| noise());
        let given = drawn.as_deref().map_or(Noise::Philox(PhiloxStream { seed: 0, offset: 0 }), Noise::Given);
        apply_row(row, &mut x, &m, &mut state, given);
    }
    x
}
