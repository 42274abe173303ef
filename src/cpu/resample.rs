//! Reference of kernels/resample.cu: nearest 2x upsampling of NHWC activations and its backward.
//! Both do the same f32 operations in the same order as the kernels (bit for bit).

use super::Real;
use crate::shapes::ImageShape;

/// y[n, 2i + a, 2j + b, c] = x[n, i, j, c] for a, b in {0, 1}; `s` is x's shape.
pub fn upsample_nearest2x_fwd<T: Real>(s: &ImageShape, x: &[T], y: &mut [T]) {
    let (ow, c) = (2 * s.w, s.c);
    for n in 0..s.batch {
        for oy in 0..2 * s.h {
            for ox in 0..ow {
                let src = ((n * s.h + oy / 2) * s.w + ox / 2) * c;
                let dst = ((n * 2 * s.h + oy) * ow + ox) * c;
                y[dst..dst + c].copy_from_slice(&x[src..src + c]);
            }
        }
    }
}

/// dx[n, i, j, c] = the sum of dy over the 2x2 block at (2i, 2j), row by row: the order PyTorch
/// accumulates in, and the kernel's.
pub fn upsample_nearest2x_bwd<T: Real>(s: &ImageShape, dy: &[T], dx: &mut [T]) {
    let (ow, c) = (2 * s.w, s.c);
    for n in 0..s.batch {
        for i in 0..s.h {
            for j in 0..s.w {
                let at = |a: usize, b: usize| ((n * 2 * s.h + 2 * i + a) * ow + 2 * j + b) * c;
                let (d00, d01, d10, d11) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
                let dst = ((n * s.h + i) * s.w + j) * c;
                for k in 0..c {
                    dx[dst + k] = dy[d00 + k] + dy[d01 + k] + dy[d10 + k] + dy[d11 + k];
                }
            }
        }
    }
}
