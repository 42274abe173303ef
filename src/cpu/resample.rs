//! Reference of kernels/resample.cu: residual adds, per-image channel broadcast, nearest 2x
//! upsampling, channel concatenation. Activations are NHWC, so a pixel's channels are contiguous.
//! Every op but channel_sum does the same f32 operations in the same order as its kernel (the
//! results match bit for bit); channel_sum accumulates in f64, the exact value the kernel's f32
//! partial sums approximate.

use super::Real;
use crate::shapes::ImageShape;

/// y = (a + b) / divisor: a true division, as diffusers' `(x + residual) / output_scale_factor`.
pub fn add_scaled<T: Real>(a: &[T], b: &[T], divisor: f32, y: &mut [T]) {
    let d = T::from_f64(divisor as f64);
    for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
        *y = (a + b) / d;
    }
}

pub fn div_scalar<T: Real>(x: &[T], divisor: f32, y: &mut [T]) {
    let d = T::from_f64(divisor as f64);
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x / d;
    }
}

/// y[n, p, c] = x[n, p, c] + v[n, c].
pub fn add_channel_bias<T: Real>(s: &ImageShape, x: &[T], v: &[T], y: &mut [T]) {
    let per_image = s.h * s.w * s.c;
    for (n, (y, x)) in y.chunks_exact_mut(per_image).zip(x.chunks_exact(per_image)).enumerate() {
        let v = &v[n * s.c..(n + 1) * s.c];
        for (y, x) in y.chunks_exact_mut(s.c).zip(x.chunks_exact(s.c)) {
            for c in 0..s.c {
                y[c] = x[c] + v[c];
            }
        }
    }
}

/// dv[n, c] = sum over the pixels p of dy[n, p, c].
pub fn channel_sum<T: Real>(s: &ImageShape, dy: &[T], dv: &mut [T]) {
    let per_image = s.h * s.w * s.c;
    let mut sums = vec![0f64; s.c];
    for (dy, dv) in dy.chunks_exact(per_image).zip(dv.chunks_exact_mut(s.c)) {
        sums.fill(0.0);
        for pixel in dy.chunks_exact(s.c) {
            for (sum, &d) in sums.iter_mut().zip(pixel) {
                *sum += d.to_f64();
            }
        }
        for (dv, &sum) in dv.iter_mut().zip(&sums) {
            *dv = T::from_f64(sum);
        }
    }
}

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

/// y[r, :] = [a[r, :c1], b[r, :c2]].
pub fn concat_channels<T: Real>(rows: usize, c1: usize, c2: usize, a: &[T], b: &[T], y: &mut [T]) {
    for r in 0..rows {
        let y = &mut y[r * (c1 + c2)..(r + 1) * (c1 + c2)];
        y[..c1].copy_from_slice(&a[r * c1..(r + 1) * c1]);
        y[c1..].copy_from_slice(&b[r * c2..(r + 1) * c2]);
    }
}

/// da[r, :] = dy[r, :c1], db[r, :] = dy[r, c1:].
pub fn split_channels<T: Real>(rows: usize, c1: usize, c2: usize, dy: &[T], da: &mut [T], db: &mut [T]) {
    for r in 0..rows {
        let dy = &dy[r * (c1 + c2)..(r + 1) * (c1 + c2)];
        da[r * c1..(r + 1) * c1].copy_from_slice(&dy[..c1]);
        db[r * c2..(r + 1) * c2].copy_from_slice(&dy[c1..]);
    }
}
