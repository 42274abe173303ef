//! The per-step constants of a graphed training step (src/train/graph.rs) as one row of u32
//! words, written to the device before each replay and read there by kernels/train_step.cu. Every
//! value is computed on the host exactly as the op-by-op step computes it (src/train/step.rs), so
//! the two paths take bitwise the same steps; only what depends on the step's own results (the
//! clip scale, whether the update is applied) is decided on the device.
//!
//! Row layout (floats as their bits):
//!   0 lr   1 beta1   2 beta2   3 eps   4 weight decay   5 step size (lr / (1 - beta1^step))
//!   6 sqrt(1 - beta2^step)   7 EMA decay   8-9 Philox seed   10-11 Philox offset of the
//!   timesteps (the noise is drawn at offset + 1)   12 history slot of this step
//! Status layout (written by clip_status): 0 applied (0/1)   1 clip scale   2-3 global gradient
//! norm (f64). A history slot: 0 loss   1 applied   2-3 global gradient norm.

use crate::math::adamw::AdamWStep;

pub const ROW_WORDS: usize = 13;
pub const STATUS_WORDS: usize = 4;
pub const HISTORY_WORDS: usize = 4;

/// The constants of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepRow {
    /// The AdamW factors of the step; its grad_scale is not stored (the status carries it).
    pub adamw: AdamWStep,
    pub ema_decay: f32,
    pub seed: u64,
    pub offset: u64,
    pub slot: u32,
}

impl StepRow {
    pub fn words(&self) -> [u32; ROW_WORDS] {
        let a = &self.adamw;
        let (s, o) = (self.seed, self.offset);
        [
            a.lr.to_bits(),
            a.beta1.to_bits(),
            a.beta2.to_bits(),
            a.eps.to_bits(),
            a.weight_decay.to_bits(),
            a.step_size.to_bits(),
            a.bias_correction2_sqrt.to_bits(),
            self.ema_decay.to_bits(),
            s as u32,
            (s >> 32) as u32,
            o as u32,
            (o >> 32) as u32,
            self.slot,
        ]
    }

    /// A row back from its words, its AdamW factors with `grad_scale` set.
    pub fn decode(w: &[u32], grad_scale: f32) -> (AdamWStep, f32, u64, u64, u32) {
        let f = |i: usize| f32::from_bits(w[i]);
        let u64_at = |i: usize| w[i] as u64 | (w[i + 1] as u64) << 32;
        let adamw = AdamWStep {
            lr: f(0),
            beta1: f(1),
            beta2: f(2),
            eps: f(3),
            weight_decay: f(4),
            step_size: f(5),
            bias_correction2_sqrt: f(6),
            grad_scale,
        };
        (adamw, f(7), u64_at(8), u64_at(10), w[12])
    }
}

/// A step's outcome as the device recorded it in a history slot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recorded {
    pub loss: f32,
    pub applied: bool,
    pub grad_norm: f64,
}

impl Recorded {
    pub fn from_words(w: &[u32]) -> Recorded {
        Recorded { loss: f32::from_bits(w[0]), applied: w[1] != 0, grad_norm: status_norm(w) }
    }
}

/// torch.nn.utils.clip_grad_norm_'s factor: max_norm / (norm + 1e-6) when that is below 1, in
/// f64, rounded once to f32 (clip_status_f32 computes the same).
pub fn clip_scale(max_norm: Option<f32>, norm: f64) -> f32 {
    max_norm.map_or(1.0, |m| (m as f64 / (norm + 1e-6)).min(1.0) as f32)
}

/// The global norm from partial sums of squares as clip_status_f32 adds them: 256 lanes, lane k
/// summing partials k, k + 256, ... in f64 in order, then the lanes' sums in order. Deterministic,
/// and bitwise the same on the host and the device.
pub fn norm_of_partials(partials: &[f32]) -> f64 {
    const LANES: usize = 256;
    let mut total = 0.0f64;
    for k in 0..LANES {
        total += partials.iter().skip(k).step_by(LANES).fold(0.0f64, |a, &v| a + v as f64);
    }
    total.sqrt()
}

/// The global norm in words 2-3 of a status (or of a history slot, which keeps it there too).
pub fn status_norm(status: &[u32]) -> f64 {
    f64::from_bits(status[2] as u64 | (status[3] as u64) << 32)
}
