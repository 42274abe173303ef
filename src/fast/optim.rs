//! Fast optimizer ops (AdamW, EMA, sum of squares, scale): the ops of src/cpu/optim.rs, over
//! fixed chunks on rayon's threads with per-SIMD-level loops. AdamW, EMA and scale are
//! elementwise and do the reference's operations in its order, so they give its bits;
//! sum_squares adds f64 partials in a fixed order, so it is the same on any thread count.

use super::elementwise::{CHUNK, with_f64_scratch};
use crate::math::adamw::AdamWStep;
use crate::simd_dispatch;
use rayon::prelude::*;

// The reference's arithmetic, expression for expression (no FMA contraction in Rust), so every
// SIMD level gives the reference's bits.
simd_dispatch!(
    fn adamw_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamWStep) {
        let decay = 1.0 - s.lr * s.weight_decay;
        let (one_minus_b1, one_minus_b2) = (1.0 - s.beta1, 1.0 - s.beta2);
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let grad = g * s.grad_scale;
            let param = *p * decay;
            let mi = *m + one_minus_b1 * (grad - *m);
            let vi = *v * s.beta2 + one_minus_b2 * grad * grad;
            *m = mi;
            *v = vi;
            let denom = vi.sqrt() / s.bias_correction2_sqrt + s.eps;
            *p = param - s.step_size * (mi / denom);
        }
    }
);
simd_dispatch!(
    fn ema_chunk(ema: &mut [f32], p: &[f32], one_minus: f32) {
        for (e, &w) in ema.iter_mut().zip(p) {
            *e -= one_minus * (*e - w);
        }
    }
);
simd_dispatch!(
    fn scale_chunk(x: &mut [f32], s: f32) {
        for v in x.iter_mut() {
            *v *= s;
        }
    }
);

/// Lanes of independent f64 accumulators: enough to fill the FP pipes (4 AVX-512 registers), in a
/// fixed layout so the sum does not depend on the instruction set.
const LANES: usize = 32;

simd_dispatch!(
    fn sum_squares_chunk(x: &[f32], out: &mut f64) {
        let mut acc = [0f64; LANES];
        let mut blocks = x.chunks_exact(LANES);
        for b in &mut blocks {
            for (a, &v) in acc.iter_mut().zip(b) {
                *a += v as f64 * v as f64;
            }
        }
        for (a, &v) in acc.iter_mut().zip(blocks.remainder()) {
            *a += v as f64 * v as f64;
        }
        *out = acc.iter().sum();
    }
);

pub fn adamw_step(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamWStep) {
    let n = p.len();
    assert!(g.len() == n && m.len() == n && v.len() == n, "adamw_step: lengths differ");
    if n <= CHUNK {
        return adamw_chunk(p, g, m, v, s);
    }
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| adamw_chunk(p, g, m, v, s));
}

pub fn ema_update(ema: &mut [f32], p: &[f32], decay: f32) {
    assert_eq!(ema.len(), p.len(), "ema_update: lengths differ");
    let one_minus = 1.0 - decay;
    if ema.len() <= CHUNK {
        return ema_chunk(ema, p, one_minus);
    }
    ema.par_chunks_mut(CHUNK).zip(p.par_chunks(CHUNK)).for_each(|(e, p)| ema_chunk(e, p, one_minus));
}

/// Sum of squares: f64 per CHUNK, the chunk sums added in order.
pub fn sum_squares(x: &[f32]) -> f32 {
    if x.len() <= CHUNK {
        let mut s = 0.0;
        sum_squares_chunk(x, &mut s);
        return s as f32;
    }
    with_f64_scratch(x.len().div_ceil(CHUNK), |partials| {
        partials.par_iter_mut().zip(x.par_chunks(CHUNK)).for_each(|(s, x)| sum_squares_chunk(x, s));
        partials.iter().sum::<f64>() as f32
    })
}

pub fn scale(x: &mut [f32], s: f32) {
    if x.len() <= CHUNK {
        return scale_chunk(x, s);
    }
    x.par_chunks_mut(CHUNK).for_each(|x| scale_chunk(x, s));
}
