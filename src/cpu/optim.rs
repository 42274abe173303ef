//! Reference of kernels/optim.cu: AdamW, EMA, sum of squares, scale.

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

pub fn adamw_step(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamWStep) {
    for i in 0..p.len() {
        let grad = g[i] * s.grad_scale;
        let param = p[i] * (1.0 - s.lr * s.weight_decay);
        let mi = m[i] + (1.0 - s.beta1) * (grad - m[i]);
        let vi = v[i] * s.beta2 + (1.0 - s.beta2) * grad * grad;
        m[i] = mi;
        v[i] = vi;
        let denom = vi.sqrt() / s.bias_correction2_sqrt + s.eps;
        p[i] = param - s.step_size * (mi / denom);
    }
}

pub fn ema_update(ema: &mut [f32], p: &[f32], decay: f32) {
    let one_minus = 1.0 - decay;
    for (e, &w) in ema.iter_mut().zip(p) {
        *e -= one_minus * (*e - w);
    }
}

/// Sum of squares accumulated in f64 (the exact value the kernel's f32 tree approximates).
pub fn sum_squares(x: &[f32]) -> f32 {
    x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() as f32
}

pub fn scale(x: &mut [f32], s: f32) {
    x.iter_mut().for_each(|v| *v *= s);
}
