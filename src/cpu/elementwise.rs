//! Reference of kernels/elementwise.cu: fill, scale-add, residual adds, per-image channel
//! broadcast and its channel sums, channel concatenation and its split. Activations are NHWC, so a
//! pixel's channels are contiguous. Every op but channel_sum does the same f32 operations in the
//! same order as its kernel (the results match bit for bit); channel_sum accumulates in f64, the
//! exact value the kernel's f32 partial sums approximate.

use super::Real;
use crate::shapes::ImageShape;

pub fn fill(out: &mut [f32], value: f32) {
    out.fill(value);
}

/// y = a * x + y, with a fused multiply-add as the kernel does.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = a.mul_add(x, *y);
    }
}

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
