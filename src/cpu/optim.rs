//! Reference of kernels/optim.cu: AdamW, EMA, sum of squares, scale.

use crate::math::adamw::AdamWStep;

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
