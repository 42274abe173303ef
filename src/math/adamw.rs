//! The step constants of AdamW, as torch.optim.AdamW computes them: the one description of a step
//! that the CPU reference (src/cpu/optim.rs), the fast CPU path (src/fast/optim.rs), the kernel's
//! launcher (src/cuda/optim.rs) and the trainer (src/train/step.rs) all take.

/// Hyper-parameters of one AdamW step, with the step-dependent factors precomputed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// lr / (1 - beta1^step)
    pub step_size: f32,
    /// sqrt(1 - beta2^step)
    pub bias_correction2_sqrt: f32,
    /// Gradient multiplier from global-norm clipping (1 when not clipping).
    pub grad_scale: f32,
}

impl AdamWStep {
    /// The factors torch.optim.AdamW computes for `step` (1-based), in f64 as Python does.
    pub fn new(lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32, step: u64, grad_scale: f32) -> Self {
        let bc1 = 1.0 - (beta1 as f64).powi(step as i32);
        let bc2 = 1.0 - (beta2 as f64).powi(step as i32);
        AdamWStep {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            step_size: (lr as f64 / bc1) as f32,
            bias_correction2_sqrt: bc2.sqrt() as f32,
            grad_scale,
        }
    }
}
