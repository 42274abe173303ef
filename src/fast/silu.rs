//! Fast SiLU, forward and backward (reference: src/cpu/silu.rs): the chunked, SIMD-dispatched
//! loops of src/fast/elementwise.rs over a vectorisable exp, so within a few ulps of the
//! reference rather than bit for bit.

use super::elementwise::{chunked2, chunked3, exp};
use crate::simd_dispatch;

#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x * (1.0 / (1.0 + exp(-x)))
}

/// d SiLU / dx = s (1 + x (1 - s)), s = sigmoid(x): the reference's formula.
#[inline(always)]
pub fn silu_grad(x: f32) -> f32 {
    let s = 1.0 / (1.0 + exp(-x));
    s * (1.0 + x * (1.0 - s))
}

simd_dispatch!(
    fn silu_fwd_chunk(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = silu(x);
        }
    }
);
simd_dispatch!(
    fn silu_bwd_chunk(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
            *dx = dy * silu_grad(x);
        }
    }
);

pub fn silu_fwd(x: &[f32], y: &mut [f32]) {
    chunked2(y, x, |y, x| silu_fwd_chunk(x, y));
}
pub fn silu_bwd(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    chunked3(dx, x, dy, |dx, x, dy| silu_bwd_chunk(x, dy, dx));
}
