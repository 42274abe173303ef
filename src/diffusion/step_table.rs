//! The sampler's steps as a device-resident table: one row of [`ROW_WORDS`] words per step,
//! read by kernels/diffusion.cu's table-driven kernels at a step index kept on the device. The
//! host builds the rows once per run; after that a denoising step needs nothing from the host,
//! so one captured CUDA graph replays every step.
//!
//! Row layout (u32 words; floats as their bits):
//!   0 kind (0 DDPM, 1 DDIM, 2 linear solver)   4 timestep t (as f32, the UNet's time input)
//!   DDPM and DDIM:
//!     1 prediction type   2 clip (0/1)   3 clip range   5 sqrt(abar_t)   6 sqrt(1 - abar_t)
//!     7 DDPM coeff_x0 | DDIM sqrt(abar_prev)   8 DDPM coeff_sample | DDIM dir_coeff
//!     9 noise std   10 adds noise (0/1)   11 DDIM recompute eps (0/1)
//!   linear solver ([`SolverRow`], one row per model evaluation):
//!     1 model input scale   2 p   3 q (d = p x + q model_out)   5 saves (0/1)   6 adds noise (0/1)
//!     7 noise std   8..14 x' over (x, s, d, h1, h2, h3)   14..20 s' over the same
//!     20 clamps d (0/1)   21 its range   22 ring slots (write | h1 << 8 | h2 << 16 | h3 << 24)
//!   the rest unused.

use super::solver::{Slots, SolverRow};
use super::{DdimStep, DdpmStep, PredictionType};
use anyhow::{Result, bail};

pub const ROW_WORDS: usize = 24;

/// One step of either scheduler.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    Ddpm(DdpmStep),
    Ddim(DdimStep),
    Solver(SolverRow),
}

/// The rows of a whole sampling run, in step order.
#[derive(Clone, Debug, Default)]
pub struct StepTable {
    pub words: Vec<u32>,
}

impl StepTable {
    /// A table of (timestep, step) pairs, in the order they run.
    pub fn new(steps: impl IntoIterator<Item = (f32, Step)>) -> StepTable {
        let mut words = Vec::new();
        for (t, step) in steps {
            words.extend(encode(t, &step));
        }
        StepTable { words }
    }

    pub fn len(&self) -> usize {
        self.words.len() / ROW_WORDS
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

fn encode(t: f32, step: &Step) -> [u32; ROW_WORDS] {
    let mut r = [0u32; ROW_WORDS];
    let (prediction, sa, sb, clip, noise_std) = match step {
        Step::Ddpm(c) => (c.prediction, c.sqrt_alpha_prod, c.sqrt_beta_prod, c.clip, c.noise_std),
        Step::Ddim(c) => (c.prediction, c.sqrt_alpha_prod, c.sqrt_beta_prod, c.clip, c.noise_std),
        Step::Solver(c) => return encode_solver(t, c),
    };
    let (kind, c1, c2, recompute) = match step {
        Step::Ddpm(c) => (0, c.coeff_x0, c.coeff_sample, false),
        Step::Ddim(c) => (1, c.sqrt_alpha_prev, c.dir_coeff, c.recompute_eps),
        Step::Solver(_) => unreachable!("returned above"),
    };
    r[0] = kind;
    r[1] = prediction as u32;
    r[2] = clip.is_some() as u32;
    r[3] = clip.unwrap_or(0.0).to_bits();
    r[4] = t.to_bits();
    r[5] = sa.to_bits();
    r[6] = sb.to_bits();
    r[7] = c1.to_bits();
    r[8] = c2.to_bits();
    r[9] = noise_std.unwrap_or(0.0).to_bits();
    r[10] = noise_std.is_some() as u32;
    r[11] = recompute as u32;
    r
}

fn encode_solver(t: f32, c: &SolverRow) -> [u32; ROW_WORDS] {
    let mut r = [0u32; ROW_WORDS];
    r[0] = 2;
    r[1] = c.input_scale.to_bits();
    r[2] = c.p.to_bits();
    r[3] = c.q.to_bits();
    r[4] = t.to_bits();
    r[5] = c.save.is_some() as u32;
    r[6] = c.noise_std.is_some() as u32;
    r[7] = c.noise_std.unwrap_or(0.0).to_bits();
    for (i, v) in c.next.iter().enumerate() {
        r[8 + i] = v.to_bits();
    }
    for (i, v) in c.save.unwrap_or_default().iter().enumerate() {
        r[14 + i] = v.to_bits();
    }
    r[20] = c.clip.is_some() as u32;
    r[21] = c.clip.unwrap_or(0.0).to_bits();
    r[22] = c.slots.pack();
    r
}

/// Row `k` of a table as (timestep, step): what the CPU backends run, and the inverse of the
/// encoding the kernels read.
pub fn decode(words: &[u32], k: usize) -> Result<(f32, Step)> {
    let Some(r) = words.get(k * ROW_WORDS..(k + 1) * ROW_WORDS) else {
        bail!("sampler step {k} is past the end of a table of {} steps", words.len() / ROW_WORDS);
    };
    let f = |i: usize| f32::from_bits(r[i]);
    if r[0] == 2 {
        let row = SolverRow {
            input_scale: f(1),
            p: f(2),
            q: f(3),
            next: std::array::from_fn(|i| f(8 + i)),
            save: (r[5] != 0).then(|| std::array::from_fn(|i| f(14 + i))),
            noise_std: (r[6] != 0).then(|| f(7)),
            clip: (r[20] != 0).then(|| f(21)),
            slots: Slots::unpack(r[22]),
        };
        return Ok((f(4), Step::Solver(row)));
    }
    let prediction = match r[1] {
        0 => PredictionType::Epsilon,
        1 => PredictionType::Sample,
        2 => PredictionType::VPrediction,
        p => bail!("sampler step table: unknown prediction type {p}"),
    };
    let clip = (r[2] != 0).then(|| f(3));
    let noise_std = (r[10] != 0).then(|| f(9));
    let step = match r[0] {
        0 => Step::Ddpm(DdpmStep {
            prediction,
            sqrt_alpha_prod: f(5),
            sqrt_beta_prod: f(6),
            clip,
            coeff_x0: f(7),
            coeff_sample: f(8),
            noise_std,
        }),
        1 => Step::Ddim(DdimStep {
            prediction,
            sqrt_alpha_prod: f(5),
            sqrt_beta_prod: f(6),
            clip,
            recompute_eps: r[11] != 0,
            sqrt_alpha_prev: f(7),
            dir_coeff: f(8),
            noise_std,
        }),
        k => bail!("sampler step table: unknown scheduler kind {k}"),
    };
    Ok((f(4), step))
}
