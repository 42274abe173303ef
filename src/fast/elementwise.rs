//! Fast elementwise and data-movement ops: SiLU, residual adds, channel bias and sums,
//! upsampling, channel concat/split, axpy and fill (references: src/cpu/{silu,resample,
//! elementwise}.rs). Large tensors split into fixed chunks run on rayon's threads; each chunk's
//! loop is compiled per SIMD level (`simd_dispatch!`). Every op but SiLU (a vectorisable exp) and
//! channel_sum (f64 partial sums, in another order) computes the reference's bits.

use super::scratch::with_scratch;
use crate::cpu::resample as reference;
use crate::shapes::ImageShape;
use crate::simd_dispatch;
use rayon::prelude::*;

/// Elements per parallel task: large enough that rayon's per-task cost (about a microsecond) is
/// noise, small enough that a UNet activation (0.5-2M elements) spreads over every core. Tensors
/// no larger than this run on the calling thread.
pub const CHUNK: usize = 1 << 15;

// ---- Math shared by the fast ops ----

/// e^x for the SiLU and softmax loops: Cephes' expf polynomial after a round-to-nearest range
/// reduction, branch-free so that it vectorises (libm's expf is a scalar call, 5-10x slower in
/// these loops). Within 2 ulp of e^x for x in [-87.3, 88]; below, it returns e^-87.3 (~1e-38,
/// where the exact value is denormal or 0), above, e^88. NaN gives NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4; // ln 2 split so n * LN2_HI is exact for |n| < 2^9
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer, kept in the low bits
    let x = x.clamp(-87.3, 88.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let k = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, which rounds to 0.5 in f32
    let e_r = p * (r * r) + r + 1.0;
    e_r * f32::from_bits((k.wrapping_add(127) as u32) << 23)
}

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

/// Runs `f` with a scratch slice of `len` f64 (contents unspecified), carved 8-byte aligned out of
/// the per-thread f32 scratch, so f64 partial sums allocate nothing in a steady state either.
pub fn with_f64_scratch<R>(len: usize, f: impl FnOnce(&mut [f64]) -> R) -> R {
    with_scratch([2 * len + 1], |[buf]| {
        let (_, aligned, _) = bytemuck::pod_align_to_mut::<f32, f64>(buf);
        f(&mut aligned[..len])
    })
}

/// `f` over matching CHUNK-sized pieces of `y` and `x`, in parallel when there is more than one.
fn chunked2(y: &mut [f32], x: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    assert_eq!(y.len(), x.len(), "elementwise: lengths differ");
    if y.len() <= CHUNK {
        return f(y, x);
    }
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| f(y, x));
}

/// As [`chunked2`], with two inputs.
fn chunked3(y: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(&mut [f32], &[f32], &[f32]) + Sync) {
    assert!(y.len() == a.len() && y.len() == b.len(), "elementwise: lengths differ");
    if y.len() <= CHUNK {
        return f(y, a, b);
    }
    y.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).zip(b.par_chunks(CHUNK)).for_each(|((y, a), b)| f(y, a, b));
}

// ---- Per-chunk loops, compiled per SIMD level ----

simd_dispatch!(
    fn axpy_chunk(a: f32, x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = a.mul_add(x, *y);
        }
    }
);
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
simd_dispatch!(
    fn add_scaled_chunk(a: &[f32], b: &[f32], d: f32, y: &mut [f32]) {
        for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
            *y = (a + b) / d;
        }
    }
);
simd_dispatch!(
    fn div_scalar_chunk(x: &[f32], d: f32, y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x / d;
        }
    }
);
simd_dispatch!(
    fn add_bias_chunk(x: &[f32], v: &[f32], y: &mut [f32]) {
        for (y, x) in y.chunks_exact_mut(v.len()).zip(x.chunks_exact(v.len())) {
            for ((y, &x), &v) in y.iter_mut().zip(x).zip(v) {
                *y = x + v;
            }
        }
    }
);
simd_dispatch!(
    fn channel_sum_chunk(dy: &[f32], sums: &mut [f64]) {
        sums.fill(0.0);
        for pixel in dy.chunks_exact(sums.len()) {
            for (s, &d) in sums.iter_mut().zip(pixel) {
                *s += d as f64;
            }
        }
    }
);
// One output row pair of the upsampling: each input pixel of `x_row` written twice across and
// into both rows.
simd_dispatch!(
    fn upsample_row(x_row: &[f32], c: usize, y_rows: &mut [f32]) {
        let (top, bottom) = y_rows.split_at_mut(y_rows.len() / 2);
        for ((px, t), b) in x_row.chunks_exact(c).zip(top.chunks_exact_mut(2 * c)).zip(bottom.chunks_exact_mut(2 * c)) {
            t[..c].copy_from_slice(px);
            t[c..].copy_from_slice(px);
            b.copy_from_slice(t);
        }
    }
);
// One input row of the upsampling's backward: the 2x2 sums, row by row as the reference adds.
simd_dispatch!(
    fn downsum_row(dy_rows: &[f32], c: usize, dx_row: &mut [f32]) {
        let (top, bottom) = dy_rows.split_at(dy_rows.len() / 2);
        for ((dx, t), b) in dx_row.chunks_exact_mut(c).zip(top.chunks_exact(2 * c)).zip(bottom.chunks_exact(2 * c)) {
            for k in 0..c {
                dx[k] = t[k] + t[c + k] + b[k] + b[c + k];
            }
        }
    }
);

// ---- The ops ----

pub fn fill(out: &mut [f32], value: f32) {
    if out.len() <= CHUNK {
        return out.fill(value);
    }
    out.par_chunks_mut(CHUNK).for_each(|o| o.fill(value));
}
/// y = a * x + y with a fused multiply-add, as the reference.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    chunked2(y, x, |y, x| axpy_chunk(a, x, y));
}
pub fn silu_fwd(x: &[f32], y: &mut [f32]) {
    chunked2(y, x, |y, x| silu_fwd_chunk(x, y));
}
pub fn silu_bwd(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    chunked3(dx, x, dy, |dx, x, dy| silu_bwd_chunk(x, dy, dx));
}
pub fn add_scaled(a: &[f32], b: &[f32], divisor: f32, y: &mut [f32]) {
    chunked3(y, a, b, |y, a, b| add_scaled_chunk(a, b, divisor, y));
}
pub fn div_scalar(x: &[f32], divisor: f32, y: &mut [f32]) {
    chunked2(y, x, |y, x| div_scalar_chunk(x, divisor, y));
}

/// Whole pixels per parallel task for the per-pixel ops: about CHUNK elements.
fn pixels_per_task(c: usize) -> usize {
    (CHUNK / c.max(1)).max(1)
}

/// y[n, p, c] = x[n, p, c] + v[n, c].
pub fn add_channel_bias(s: &ImageShape, x: &[f32], v: &[f32], y: &mut [f32]) {
    let (per_image, task) = (s.h * s.w * s.c, pixels_per_task(s.c) * s.c);
    assert!(x.len() >= s.len() && y.len() >= s.len() && v.len() >= s.batch * s.c, "add_channel_bias: short buffers");
    let (x, y) = (&x[..s.len()], &mut y[..s.len()]);
    y.par_chunks_mut(per_image).zip(x.par_chunks(per_image)).enumerate().for_each(|(n, (y, x))| {
        let v = &v[n * s.c..(n + 1) * s.c];
        y.par_chunks_mut(task).zip(x.par_chunks(task)).for_each(|(y, x)| add_bias_chunk(x, v, y));
    });
}

/// dv[n, c] = sum over pixels of dy[n, p, c]: f64 sums over fixed runs of pixels, added in order,
/// so the result is the same on any number of threads (and within an ulp of the reference's).
pub fn channel_sum(s: &ImageShape, dy: &[f32], dv: &mut [f32]) {
    let (hw, c) = (s.h * s.w, s.c);
    let task_px = pixels_per_task(c);
    let tasks_per_image = hw.div_ceil(task_px);
    with_f64_scratch(s.batch * tasks_per_image * c, |partials| {
        partials.par_chunks_mut(c).enumerate().for_each(|(t, sums)| {
            let (n, first) = (t / tasks_per_image, (t % tasks_per_image) * task_px);
            let px = task_px.min(hw - first);
            channel_sum_chunk(&dy[(n * hw + first) * c..][..px * c], sums);
        });
        for (n, dv) in dv[..s.batch * c].chunks_exact_mut(c).enumerate() {
            let image = &partials[n * tasks_per_image * c..][..tasks_per_image * c];
            for (ch, dv) in dv.iter_mut().enumerate() {
                *dv = image.iter().skip(ch).step_by(c).sum::<f64>() as f32;
            }
        }
    });
}

/// y[n, 2i + a, 2j + b, c] = x[n, i, j, c] for a, b in {0, 1}; `s` is x's shape.
pub fn upsample_nearest2x_fwd(s: &ImageShape, x: &[f32], y: &mut [f32]) {
    let row = s.w * s.c; // one input row; its two output rows are 4 * row
    let (x, y) = (&x[..s.len()], &mut y[..4 * s.len()]);
    y.par_chunks_mut(4 * row)
        .zip(x.par_chunks(row))
        .with_min_len(rows_per_task(4 * row))
        .for_each(|(y, x)| upsample_row(x, s.c, y));
}

/// dx[n, i, j, c] = the sum of dy over the 2x2 block at (2i, 2j), in the reference's order.
pub fn upsample_nearest2x_bwd(s: &ImageShape, dy: &[f32], dx: &mut [f32]) {
    let row = s.w * s.c;
    let (dy, dx) = (&dy[..4 * s.len()], &mut dx[..s.len()]);
    dx.par_chunks_mut(row)
        .zip(dy.par_chunks(4 * row))
        .with_min_len(rows_per_task(4 * row))
        .for_each(|(dx, dy)| downsum_row(dy, s.c, dx));
}

/// Rows per parallel task of a concat/split with `width` elements per output row.
fn rows_per_task(width: usize) -> usize {
    (CHUNK / width.max(1)).max(1)
}

/// y[r, :] = [a[r, :c1], b[r, :c2]].
pub fn concat_channels(rows: usize, c1: usize, c2: usize, a: &[f32], b: &[f32], y: &mut [f32]) {
    if c1 == 0 || c2 == 0 {
        return reference::concat_channels(rows, c1, c2, a, b, y); // a plain copy
    }
    let rt = rows_per_task(c1 + c2);
    let (a, b, y) = (&a[..rows * c1], &b[..rows * c2], &mut y[..rows * (c1 + c2)]);
    y.par_chunks_mut(rt * (c1 + c2)).zip(a.par_chunks(rt * c1)).zip(b.par_chunks(rt * c2)).for_each(|((y, a), b)| {
        for ((y, a), b) in y.chunks_exact_mut(c1 + c2).zip(a.chunks(c1)).zip(b.chunks(c2)) {
            y[..c1].copy_from_slice(&a[..c1]);
            y[c1..].copy_from_slice(&b[..c2]);
        }
    });
}

/// da[r, :] = dy[r, :c1], db[r, :] = dy[r, c1:].
pub fn split_channels(rows: usize, c1: usize, c2: usize, dy: &[f32], da: &mut [f32], db: &mut [f32]) {
    if c1 == 0 || c2 == 0 {
        return reference::split_channels(rows, c1, c2, dy, da, db); // a plain copy
    }
    let rt = rows_per_task(c1 + c2);
    let (dy, da, db) = (&dy[..rows * (c1 + c2)], &mut da[..rows * c1], &mut db[..rows * c2]);
    da.par_chunks_mut(rt * c1).zip(db.par_chunks_mut(rt * c2)).zip(dy.par_chunks(rt * (c1 + c2))).for_each(
        |((da, db), dy)| {
            for ((dy, da), db) in dy.chunks_exact(c1 + c2).zip(da.chunks_mut(c1)).zip(db.chunks_mut(c2)) {
                da[..c1].copy_from_slice(&dy[..c1]);
                db[..c2].copy_from_slice(&dy[c1..]);
            }
        },
    );
}
