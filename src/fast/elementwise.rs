//! Fast elementwise and data-movement ops: fill, axpy, residual adds, channel bias and sums,
//! channel concat/split (reference: src/cpu/elementwise.rs), and what the other fast ops share:
//! the chunking, a vectorisable exp, f64 scratch. Large tensors split into fixed chunks run on
//! rayon's threads; each chunk's loop is compiled per SIMD level (`simd_dispatch!`). Every op but
//! channel_sum (f64 partial sums, in another order) computes the reference's bits.

use super::scratch::with_scratch;
use crate::cpu::elementwise as reference;
use crate::shapes::ImageShape;
use crate::simd_dispatch;
use rayon::prelude::*;

/// Elements per parallel task: large enough that rayon's per-task cost (about a microsecond) is
/// noise, small enough that a UNet activation (0.5-2M elements) spreads over every core. Tensors
/// no larger than this run on the calling thread.
pub const CHUNK: usize = 1 << 15;

// ---- Math shared by the fast ops ----

/// e^x for the SiLU and softmax loops (src/fast/silu.rs, src/fast/attention.rs): Cephes' expf polynomial after a round-to-nearest range
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

/// Runs `f` with a scratch slice of `len` f64 (contents unspecified), carved 8-byte aligned out of
/// the per-thread f32 scratch, so f64 partial sums allocate nothing in a steady state either.
pub fn with_f64_scratch<R>(len: usize, f: impl FnOnce(&mut [f64]) -> R) -> R {
    with_scratch([2 * len + 1], |[buf]| {
        let (_, aligned, _) = bytemuck::pod_align_to_mut::<f32, f64>(buf);
        f(&mut aligned[..len])
    })
}

/// `f` over matching CHUNK-sized pieces of `y` and `x`, in parallel when there is more than one.
pub(super) fn chunked2(y: &mut [f32], x: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    assert_eq!(y.len(), x.len(), "elementwise: lengths differ");
    if y.len() <= CHUNK {
        return f(y, x);
    }
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| f(y, x));
}

/// As [`chunked2`], with two inputs.
pub(super) fn chunked3(y: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(&mut [f32], &[f32], &[f32]) + Sync) {
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

/// Rows per parallel task of a concat/split or an upsampling with `width` elements per output row.
pub(super) fn rows_per_task(width: usize) -> usize {
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
