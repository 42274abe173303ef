//! Fast GroupNorm (+SiLU) over NHWC: the ops of src/cpu/group_norm.rs.
//!
//! Each image's pixels split into fixed runs ("tasks", about 8K elements, whatever the thread
//! count). Both directions make two parallel sweeps over the tasks:
//! 1. per task and channel, f64 sums (forward: of x - pivot and its square, the pivot being the
//!    image's first pixel, so a large mean does not cancel the variance away; backward: of
//!    dL/dpre and dL/dpre * xhat);
//! 2. after the task sums are combined in task order (on the calling thread: a few KB), the
//!    elementwise output.
//!
//! Channels are innermost, so every loop runs along contiguous channels and vectorises, and the
//! statistics are the same bits on any number of threads.

use super::elementwise::with_f64_scratch;
use super::scratch::with_scratch;
use super::silu::{silu, silu_grad};
use crate::shapes::GroupNormShape;
use crate::simd_dispatch;
use rayon::prelude::*;

/// Elements per task: small enough that one 32x32x128 image splits over 16 cores, large enough
/// to amortise rayon's per-task cost.
const TASK_ELEMS: usize = 8192;

/// The fixed split of every image's pixels into tasks.
struct Tasks {
    hw: usize,
    c: usize,
    pixels: usize,
    per_image: usize,
}

impl Tasks {
    fn new(s: &GroupNormShape) -> Tasks {
        let pixels = (TASK_ELEMS / s.channels).clamp(1, s.hw);
        Tasks { hw: s.hw, c: s.channels, pixels, per_image: s.hw.div_ceil(pixels) }
    }
    /// Task t's image and its element range in the tensor.
    fn range(&self, t: usize) -> (usize, std::ops::Range<usize>) {
        let (n, first) = (t / self.per_image, (t % self.per_image) * self.pixels);
        let start = (n * self.hw + first) * self.c;
        (n, start..start + self.pixels.min(self.hw - first) * self.c)
    }
}

// acc[..c] += x - pivot, acc[c..] += (x - pivot)^2 per channel, over the pixels of x.
simd_dispatch!(
    fn shifted_sums(x: &[f32], pivot: &[f32], acc: &mut [f64]) {
        let (s1, s2) = acc.split_at_mut(pivot.len());
        s1.fill(0.0);
        s2.fill(0.0);
        for px in x.chunks_exact(pivot.len()) {
            for (((s1, s2), &x), &p) in s1.iter_mut().zip(s2.iter_mut()).zip(px).zip(pivot) {
                let d = x as f64 - p as f64;
                *s1 += d;
                *s2 += d * d;
            }
        }
    }
);

// y = (x - m) r g + b per channel (the reference's order), then SiLU when `silu_out`.
simd_dispatch!(
    fn normalize(x: &[f32], m: &[f32], r: &[f32], g: &[f32], b: &[f32], silu_out: bool, y: &mut [f32]) {
        if silu_out { normalize_pixels::<true>(x, m, r, g, b, y) } else { normalize_pixels::<false>(x, m, r, g, b, y) }
    }
);

// The per-pixel loops below re-slice every operand to the channel count, so the compiler drops
// the bounds checks and vectorises along the channels; SILU is a const parameter so the branch
// is outside the loop.
#[inline(always)]
fn normalize_pixels<const SILU: bool>(x: &[f32], m: &[f32], r: &[f32], g: &[f32], b: &[f32], y: &mut [f32]) {
    let c = m.len();
    let (r, g, b) = (&r[..c], &g[..c], &b[..c]);
    for (y, x) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        for i in 0..c {
            let pre = (x[i] - m[i]) * r[i] * g[i] + b[i];
            y[i] = if SILU { silu(pre) } else { pre };
        }
    }
}

/// (xhat, dL/dpre) of one element.
#[inline(always)]
fn grads<const SILU: bool>(x: f32, dy: f32, m: f32, r: f32, g: f32, b: f32) -> (f32, f32) {
    let xhat = (x - m) * r;
    (xhat, if SILU { dy * silu_grad(xhat * g + b) } else { dy })
}

// Per channel: acc[..c] = sum dL/dpre, acc[c..] = sum dL/dpre * xhat.
simd_dispatch!(
    fn grad_sums(x: &[f32], dy: &[f32], m: &[f32], r: &[f32], g: &[f32], b: &[f32], silu_out: bool, acc: &mut [f64]) {
        if silu_out {
            grad_sums_pixels::<true>(x, dy, m, r, g, b, acc)
        } else {
            grad_sums_pixels::<false>(x, dy, m, r, g, b, acc)
        }
    }
);

#[inline(always)]
fn grad_sums_pixels<const SILU: bool>(
    x: &[f32],
    dy: &[f32],
    m: &[f32],
    r: &[f32],
    g: &[f32],
    b: &[f32],
    acc: &mut [f64],
) {
    let c = m.len();
    let (r, g, b) = (&r[..c], &g[..c], &b[..c]);
    let (sd, sdx) = acc.split_at_mut(c);
    let sdx = &mut sdx[..c];
    sd.fill(0.0);
    sdx.fill(0.0);
    for (x, dy) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
        for i in 0..c {
            let (xhat, dpre) = grads::<SILU>(x[i], dy[i], m[i], r[i], g[i], b[i]);
            sd[i] += dpre as f64;
            sdx[i] += dpre as f64 * xhat as f64;
        }
    }
}

// dx = r (dxhat - a - xhat b), dxhat = dL/dpre * g, with the group means a, b per channel.
#[rustfmt::skip]
simd_dispatch!(fn input_grad(x: &[f32], dy: &[f32], m: &[f32], r: &[f32], g: &[f32], b: &[f32], a_mean: &[f32], b_mean: &[f32],
    silu_out: bool, dx: &mut [f32]) {
    if silu_out {
        input_grad_pixels::<true>(x, dy, m, r, g, b, a_mean, b_mean, dx)
    } else {
        input_grad_pixels::<false>(x, dy, m, r, g, b, a_mean, b_mean, dx)
    }
});

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_grad_pixels<const SILU: bool>(
    x: &[f32],
    dy: &[f32],
    m: &[f32],
    r: &[f32],
    g: &[f32],
    b: &[f32],
    a_mean: &[f32],
    b_mean: &[f32],
    dx: &mut [f32],
) {
    let c = m.len();
    let (r, g, b, a_mean, b_mean) = (&r[..c], &g[..c], &b[..c], &a_mean[..c], &b_mean[..c]);
    for ((dx, x), dy) in dx.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(dy.chunks_exact(c)) {
        for i in 0..c {
            let (xhat, dpre) = grads::<SILU>(x[i], dy[i], m[i], r[i], g[i], b[i]);
            dx[i] = r[i] * (dpre * g[i] - a_mean[i] - xhat * b_mean[i]);
        }
    }
}

/// Per-(image, channel) copies of the per-(image, group) values, and gamma / beta defaulting to 1
/// and 0 (which change no bits), so the loops above index by channel only.
struct PerChannel<'a> {
    m: &'a mut [f32],
    r: &'a mut [f32],
    g: &'a mut [f32],
    b: &'a mut [f32],
}

impl PerChannel<'_> {
    fn affine(&mut self, gamma: Option<&[f32]>, beta: Option<&[f32]>) {
        let c = self.g.len();
        match gamma {
            Some(gamma) => self.g.copy_from_slice(&gamma[..c]),
            None => self.g.fill(1.0),
        }
        match beta {
            Some(beta) => self.b.copy_from_slice(&beta[..c]),
            None => self.b.fill(0.0),
        }
    }
    fn broadcast(s: &GroupNormShape, per_group: &[f32], per_channel: &mut [f32]) {
        let cpg = s.channels / s.groups;
        for (i, v) in per_channel.iter_mut().enumerate() {
            *v = per_group[i / cpg];
        }
    }
}

/// Per (image, channel): the sums of the image's tasks, added in task order.
fn combine_tasks(t: &Tasks, partials: &[f64], n: usize, ch: usize) -> (f64, f64) {
    let image = &partials[n * t.per_image * 2 * t.c..][..t.per_image * 2 * t.c];
    image.chunks_exact(2 * t.c).fold((0.0, 0.0), |(a, b), task| (a + task[ch], b + task[t.c + ch]))
}

#[allow(clippy::too_many_arguments)]
pub fn group_norm_fwd(
    s: &GroupNormShape,
    x: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    silu_out: bool,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let (c, cpg, t) = (s.channels, s.channels / s.groups, Tasks::new(s));
    let tasks = s.batch * t.per_image;
    with_f64_scratch(tasks * 2 * c + 2 * c, |scratch| {
        let (partials, channel_stats) = scratch.split_at_mut(tasks * 2 * c);
        partials.par_chunks_mut(2 * c).enumerate().for_each(|(i, acc)| {
            let (n, range) = t.range(i);
            shifted_sums(&x[range], &x[n * s.hw * c..][..c], acc);
        });
        // Per channel: the mean mu = pivot + S1 / hw and M2 = sum (x - mu)^2 = S2 - S1^2 / hw; per
        // group, Chan's combination: M2 = sum of the channels' M2 + hw * sum (mu_c - mean)^2.
        let hw = s.hw as f64;
        let (mus, m2s) = channel_stats.split_at_mut(c);
        for n in 0..s.batch {
            for ch in 0..c {
                let (s1, s2) = combine_tasks(&t, partials, n, ch);
                (mus[ch], m2s[ch]) = (x[n * s.hw * c + ch] as f64 + s1 / hw, (s2 - s1 * s1 / hw).max(0.0));
            }
            for g in 0..s.groups {
                let (mus, m2s) = (&mus[g * cpg..(g + 1) * cpg], &m2s[g * cpg..(g + 1) * cpg]);
                let m = mus.iter().sum::<f64>() / cpg as f64;
                let m2 = mus.iter().zip(m2s).map(|(&mu, &m2)| m2 + hw * (mu - m) * (mu - m)).sum::<f64>();
                mean[n * s.groups + g] = m as f32;
                rstd[n * s.groups + g] = (1.0 / (m2 / (hw * cpg as f64) + s.eps as f64).sqrt()) as f32;
            }
        }
    });
    normalize_all(s, &t, x, gamma, beta, silu_out, y, mean, rstd);
}

#[allow(clippy::too_many_arguments)]
fn normalize_all(
    s: &GroupNormShape,
    t: &Tasks,
    x: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    silu_out: bool,
    y: &mut [f32],
    mean: &[f32],
    rstd: &[f32],
) {
    let c = s.channels;
    with_scratch([s.batch * c, s.batch * c, c, c], |[m, r, g, b]| {
        let mut pc = PerChannel { m, r, g, b };
        pc.affine(gamma, beta);
        PerChannel::broadcast(s, &mean[..s.stats_len()], pc.m);
        PerChannel::broadcast(s, &rstd[..s.stats_len()], pc.r);
        let pc = &pc;
        for_each_task(t, s.batch, &mut y[..s.len()], |n, range, y| {
            let per_n = n * c..(n + 1) * c;
            normalize(&x[range], &pc.m[per_n.clone()], &pc.r[per_n], pc.g, pc.b, silu_out, y);
        });
    });
}

/// Runs `f(image, range, out[range])` for every task, in parallel.
fn for_each_task(
    t: &Tasks,
    batch: usize,
    out: &mut [f32],
    f: impl Fn(usize, std::ops::Range<usize>, &mut [f32]) + Sync,
) {
    out.par_chunks_mut(t.hw * t.c).take(batch).enumerate().for_each(|(n, image)| {
        image.par_chunks_mut(t.pixels * t.c).enumerate().for_each(|(i, out)| {
            let (_, range) = t.range(n * t.per_image + i);
            f(n, range, out)
        });
    });
}

#[allow(clippy::too_many_arguments)]
pub fn group_norm_bwd(
    s: &GroupNormShape,
    x: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    mean: &[f32],
    rstd: &[f32],
    silu_out: bool,
    dy: &[f32],
    dx: &mut [f32],
    dgamma: Option<&mut [f32]>,
    dbeta: Option<&mut [f32]>,
) {
    let (c, cpg, t) = (s.channels, s.channels / s.groups, Tasks::new(s));
    let tasks = s.batch * t.per_image;
    let count = (s.hw * cpg) as f64;
    with_scratch([s.batch * c, s.batch * c, c, c, s.batch * c, s.batch * c], |[m, r, g, b, a_mean, b_mean]| {
        let mut pc = PerChannel { m, r, g, b };
        pc.affine(gamma, beta);
        PerChannel::broadcast(s, &mean[..s.stats_len()], pc.m);
        PerChannel::broadcast(s, &rstd[..s.stats_len()], pc.r);
        let pc = &pc;
        with_f64_scratch(tasks * 2 * c + 2 * c, |scratch| {
            let (partials, param_sums) = scratch.split_at_mut(tasks * 2 * c);
            partials.par_chunks_mut(2 * c).enumerate().for_each(|(i, acc)| {
                let (n, range) = t.range(i);
                let per_n = n * c..(n + 1) * c;
                grad_sums(&x[range.clone()], &dy[range], &pc.m[per_n.clone()], &pc.r[per_n], pc.g, pc.b, silu_out, acc);
            });
            let (dbeta_sum, dgamma_sum) = param_sums.split_at_mut(c);
            dbeta_sum.fill(0.0);
            dgamma_sum.fill(0.0);
            for n in 0..s.batch {
                for grp in 0..s.groups {
                    let (mut a, mut bsum) = (0.0, 0.0);
                    for ch in grp * cpg..(grp + 1) * cpg {
                        let (sd, sdx) = combine_tasks(&t, partials, n, ch);
                        dbeta_sum[ch] += sd;
                        dgamma_sum[ch] += sdx;
                        a += pc.g[ch] as f64 * sd;
                        bsum += pc.g[ch] as f64 * sdx;
                    }
                    for ch in grp * cpg..(grp + 1) * cpg {
                        a_mean[n * c + ch] = (a / count) as f32;
                        b_mean[n * c + ch] = (bsum / count) as f32;
                    }
                }
            }
            for (out, sums) in [(dgamma, &*dgamma_sum), (dbeta, &*dbeta_sum)] {
                if let Some(out) = out {
                    for (o, &v) in out.iter_mut().zip(sums) {
                        *o = v as f32;
                    }
                }
            }
        });
        let (a_mean, b_mean) = (&*a_mean, &*b_mean);
        for_each_task(&t, s.batch, &mut dx[..s.len()], |n, range, dx| {
            let per_n = n * c..(n + 1) * c;
            input_grad(
                &x[range.clone()],
                &dy[range],
                &pc.m[per_n.clone()],
                &pc.r[per_n.clone()],
                pc.g,
                pc.b,
                &a_mean[per_n.clone()],
                &b_mean[per_n],
                silu_out,
                dx,
            );
        });
    });
}
