//! Reference of kernels/group_norm.cu: GroupNorm over NHWC, optionally fused with SiLU, as
//! torch.nn.GroupNorm defines it (biased variance, eps inside the square root). Image n, group g
//! covers channels [g * C/G, (g + 1) * C/G) of all of the image's pixels.
//!
//! Every sum runs in f64 and is rounded once, so for f32 data the reference is the exact result
//! the kernels approximate, and for f64 data (gradient checks) it is plain f64 math.

use super::Real;
use super::silu::{silu, silu_grad};
use crate::shapes::GroupNormShape;

/// Flat NHWC indices of the elements of (image n, group g), pixel by pixel.
fn group_indices(s: &GroupNormShape, n: usize, g: usize) -> impl Iterator<Item = usize> {
    let cpg = s.channels / s.groups;
    let (channels, hw) = (s.channels, s.hw);
    (0..hw).flat_map(move |p| {
        let start = (n * hw + p) * channels + g * cpg;
        start..start + cpg
    })
}

fn sum64<T: Real>(terms: impl Iterator<Item = T>) -> f64 {
    terms.map(T::to_f64).sum()
}

/// The pre-SiLU output of one element: (x - mean) * rstd * gamma + beta.
fn affine<T: Real>(x: T, mean: T, rstd: T, gamma: Option<&[T]>, beta: Option<&[T]>, c: usize) -> T {
    let xhat = (x - mean) * rstd;
    let y = gamma.map_or(xhat, |g| xhat * g[c]);
    beta.map_or(y, |b| y + b[c])
}

#[allow(clippy::too_many_arguments)]
pub fn group_norm_fwd<T: Real>(
    s: &GroupNormShape,
    x: &[T],
    gamma: Option<&[T]>,
    beta: Option<&[T]>,
    silu_out: bool,
    y: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
) {
    let count = (s.hw * s.channels / s.groups) as f64;
    for n in 0..s.batch {
        for g in 0..s.groups {
            // Two passes: the variance as the mean of squared deviations stays accurate when the
            // mean is large compared with the spread.
            let m = sum64(group_indices(s, n, g).map(|i| x[i])) / count;
            let var = group_indices(s, n, g).map(|i| (x[i].to_f64() - m).powi(2)).sum::<f64>() / count;
            let (m, r) = (T::from_f64(m), T::from_f64(1.0 / (var + s.eps as f64).sqrt()));
            mean[n * s.groups + g] = m;
            rstd[n * s.groups + g] = r;
            for i in group_indices(s, n, g) {
                let pre = affine(x[i], m, r, gamma, beta, i % s.channels);
                y[i] = if silu_out { silu(pre) } else { pre };
            }
        }
    }
}

/// With xhat = (x - mean) * rstd and dxhat = dL/dxhat = dL/dpre * gamma, per group of `count`
/// elements: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)); the two means carry
/// the dependence of the statistics on x. dgamma[c] = sum dL/dpre * xhat and dbeta[c] =
/// sum dL/dpre over images and pixels, where dL/dpre = dy, times SiLU'(pre) when fused.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_bwd<T: Real>(
    s: &GroupNormShape,
    x: &[T],
    gamma: Option<&[T]>,
    beta: Option<&[T]>,
    mean: &[T],
    rstd: &[T],
    silu_out: bool,
    dy: &[T],
    dx: &mut [T],
    dgamma: Option<&mut [T]>,
    dbeta: Option<&mut [T]>,
) {
    let count = (s.hw * s.channels / s.groups) as f64;
    let (mut sum_dgamma, mut sum_dbeta) = (vec![0f64; s.channels], vec![0f64; s.channels]);
    for n in 0..s.batch {
        for g in 0..s.groups {
            let (m, r) = (mean[n * s.groups + g], rstd[n * s.groups + g]);
            // (xhat, dL/dpre, dL/dxhat) of element i.
            let grads = |i: usize| {
                let c = i % s.channels;
                let xhat = (x[i] - m) * r;
                let dpre = if silu_out { dy[i] * silu_grad(affine(x[i], m, r, gamma, beta, c)) } else { dy[i] };
                (xhat, dpre, gamma.map_or(dpre, |gm| dpre * gm[c]))
            };
            let (mut a, mut b) = (0f64, 0f64);
            for i in group_indices(s, n, g) {
                let (xhat, dpre, dxhat) = grads(i);
                a += dxhat.to_f64();
                b += dxhat.to_f64() * xhat.to_f64();
                sum_dgamma[i % s.channels] += dpre.to_f64() * xhat.to_f64();
                sum_dbeta[i % s.channels] += dpre.to_f64();
            }
            let (a, b) = (T::from_f64(a / count), T::from_f64(b / count));
            for i in group_indices(s, n, g) {
                let (xhat, _, dxhat) = grads(i);
                dx[i] = r * (dxhat - a - xhat * b);
            }
        }
    }
    for (out, sums) in [(dgamma, sum_dgamma), (dbeta, sum_dbeta)] {
        if let Some(out) = out {
            for (o, v) in out.iter_mut().zip(sums) {
                *o = T::from_f64(v);
            }
        }
    }
}
