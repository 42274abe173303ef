//! Reference of kernels/attention.cu and attention_bwd.cu: multi-head softmax attention with saved log-sum-exp.
//!
//! q, k, v, out are [batch, tokens, heads * d], head h in features [h * d, (h + 1) * d). Per
//! (image, head), with scale = 1 / sqrt(d):
//!   S = scale * q k^T,  lse_i = log sum_j exp(S_ij),  P = exp(S - lse),  out = P v.
//! The backward of L(out), given dout = dL/dout:
//!   dv = P^T dout,  dP = dout v^T,  D_i = sum_j P_ij dP_ij = dout_i . out_i,
//!   dS = P * (dP - D),  dq = scale * dS k,  dk = scale * dS^T q.

use super::Real;
use crate::shapes::AttentionShape;

/// Index helpers for one (image, head): row i of q, k, v or out starts at `row(i)`.
struct Head {
    base: usize,
    stride: usize,
    d: usize,
    tokens: usize,
}

impl Head {
    fn new(s: &AttentionShape, b: usize, h: usize) -> Head {
        let stride = s.heads * s.head_dim;
        Head { base: b * s.tokens * stride + h * s.head_dim, stride, d: s.head_dim, tokens: s.tokens }
    }
    fn row<'a, T>(&self, x: &'a [T], i: usize) -> &'a [T] {
        let start = self.base + i * self.stride;
        &x[start..start + self.d]
    }
    fn row_mut<'a, T>(&self, x: &'a mut [T], i: usize) -> &'a mut [T] {
        let start = self.base + i * self.stride;
        &mut x[start..start + self.d]
    }
    /// Scaled scores of query i against every key: S_i.
    fn scores<T: Real>(&self, q: &[T], k: &[T], i: usize, scale: T, s: &mut [T]) {
        let qi = self.row(q, i);
        for (j, sj) in s.iter_mut().enumerate().take(self.tokens) {
            *sj = dot(qi, self.row(k, j)) * scale;
        }
    }
}

fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).map(|(&x, &y)| x * y).sum()
}

fn scale<T: Real>(s: &AttentionShape) -> T {
    T::ONE / T::from_f64(s.head_dim as f64).sqrt()
}

/// Every (image, head) in order with its lse offset.
fn heads(s: &AttentionShape) -> impl Iterator<Item = (Head, usize)> + '_ {
    (0..s.batch).flat_map(move |b| (0..s.heads).map(move |h| (Head::new(s, b, h), (b * s.heads + h) * s.tokens)))
}

pub fn attention_fwd<T: Real>(s: &AttentionShape, q: &[T], k: &[T], v: &[T], out: &mut [T], lse: &mut [T]) {
    let scale = scale::<T>(s);
    let mut row = vec![T::ZERO; s.tokens];
    for (hd, stats) in heads(s) {
        for i in 0..s.tokens {
            hd.scores(q, k, i, scale, &mut row);
            // Subtracting the row max keeps every exp <= 1: no overflow for any scores.
            let m = row.iter().copied().fold(row[0], T::max);
            let mut sum = T::ZERO;
            for sj in row.iter_mut() {
                *sj = (*sj - m).exp();
                sum += *sj;
            }
            let o = hd.row_mut(out, i);
            o.fill(T::ZERO);
            for (j, &p) in row.iter().enumerate() {
                for (ox, &vx) in o.iter_mut().zip(hd.row(v, j)) {
                    *ox += p * vx;
                }
            }
            for ox in o.iter_mut() {
                *ox = *ox / sum;
            }
            lse[stats + i] = m + sum.ln();
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn attention_bwd<T: Real>(
    s: &AttentionShape,
    q: &[T],
    k: &[T],
    v: &[T],
    out: &[T],
    lse: &[T],
    dout: &[T],
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
) {
    let scale = scale::<T>(s);
    dq.fill(T::ZERO);
    dk.fill(T::ZERO);
    dv.fill(T::ZERO);
    let mut p = vec![T::ZERO; s.tokens];
    for (hd, stats) in heads(s) {
        for i in 0..s.tokens {
            hd.scores(q, k, i, scale, &mut p);
            for pj in p.iter_mut() {
                *pj = (*pj - lse[stats + i]).exp();
            }
            let (do_i, q_i) = (hd.row(dout, i), hd.row(q, i));
            let delta = dot(do_i, hd.row(out, i));
            for (j, &pij) in p.iter().enumerate() {
                for (dvx, &g) in hd.row_mut(dv, j).iter_mut().zip(do_i) {
                    *dvx += pij * g;
                }
                let ds = pij * (dot(do_i, hd.row(v, j)) - delta) * scale;
                for (dqx, &kx) in hd.row_mut(dq, i).iter_mut().zip(hd.row(k, j)) {
                    *dqx += ds * kx;
                }
                for (dkx, &qx) in hd.row_mut(dk, j).iter_mut().zip(q_i) {
                    *dkx += ds * qx;
                }
            }
        }
    }
}
