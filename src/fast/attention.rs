//! Fast multi-head attention with saved log-sum-exp: the ops of src/cpu/attention.rs as GEMMs
//! over blocks of BLOCK query rows, so the score buffer is [BLOCK x tokens] (64 KB at 256
//! tokens, in L2), never [tokens x tokens]. q, k, v and out stay where they are: a head is a
//! strided view of its columns.
//!
//! Forward tasks are (image, query block), each running every head; a task owns its output rows.
//! Backward: dk and dv sum over all query blocks, so for determinism each (image, split of the
//! query blocks) accumulates its blocks in order, and splits are added in split order. The
//! number of splits depends only on the shape (more splits when the batch is too small to fill
//! the cores), so results are the same on any thread count.

use super::elementwise::exp;
use super::gemm::{Mat, MatMut, Threads, matmul};
use super::scratch::with_scratch;
use crate::shapes::AttentionShape;
use crate::simd_dispatch;
use rayon::prelude::*;

/// Query rows per block.
const BLOCK: usize = 64;

/// Lanes of the row max and sum: a fixed layout (so the same bits on every SIMD level) wide
/// enough to vectorise.
const LANES: usize = 16;

/// Where one (image, head) lives in q, k, v, out: element (token i, feature j) at
/// `base + i * stride + j`.
#[derive(Clone, Copy)]
struct Head {
    base: usize,
    stride: usize,
    tokens: usize,
    d: usize,
}

impl Head {
    fn new(s: &AttentionShape, image: usize, head: usize) -> Head {
        let stride = s.heads * s.head_dim;
        Head { base: image * s.tokens * stride + head * s.head_dim, stride, tokens: s.tokens, d: s.head_dim }
    }
    /// Rows [first, first + rows) of this head in `x`.
    fn rows<'a>(&self, x: &'a [f32], first: usize, rows: usize) -> Mat<'a> {
        Mat::strided(x, self.base + first * self.stride, rows, self.d, self.stride)
    }
    fn all<'a>(&self, x: &'a [f32]) -> Mat<'a> {
        self.rows(x, 0, self.tokens)
    }
    /// This head's columns of a [rows, heads * d] slab (a task's output rows, or a partial sum).
    fn cols_mut<'a>(&self, slab: &'a mut [f32], head: usize) -> MatMut<'a> {
        let rows = slab.len() / self.stride;
        MatMut::strided(slab, head * self.d, rows, self.d, self.stride)
    }
}

/// Writes one image's `x` ([tokens, heads * d], starting at `image_base`) head by head as
/// [heads, d, tokens]: K^T and V^T as plain row-major operands. gemm multiplies by a transposed
/// view at half speed (44 against 98 GFLOP/s per core for a 64x256x256 block), and the copy costs
/// 1/(2 * BLOCK) of the product it feeds.
fn transpose_heads(s: &AttentionShape, x: &[f32], image_base: usize, xt: &mut [f32]) {
    let (t, hd) = (s.tokens, s.heads * s.head_dim);
    let x = &x[image_base..image_base + t * hd];
    // Feature f = head * d + j lands in row f of the output: [heads, d, tokens] is [hd, tokens].
    // Tiles of TILE x TILE keep both the reads and the scattered writes within a few cache lines.
    const TILE: usize = 16;
    for i0 in (0..t).step_by(TILE) {
        for f0 in (0..hd).step_by(TILE) {
            for i in i0..(i0 + TILE).min(t) {
                for f in f0..(f0 + TILE).min(hd) {
                    xt[f * t + i] = x[i * hd + f];
                }
            }
        }
    }
}

/// Head `head`'s [d, tokens] block of a [`transpose_heads`] output.
fn head_t<'a>(s: &AttentionShape, xt: &'a [f32], head: usize) -> Mat<'a> {
    Mat::rows(&xt[head * s.head_dim * s.tokens..][..s.head_dim * s.tokens], s.head_dim, s.tokens)
}

fn softmax_scale(s: &AttentionShape) -> f32 {
    1.0 / (s.head_dim as f32).sqrt()
}

// Per row of raw scores: p = exp(scale * s - max), the row's max and sum of p, each reduced
// over LANES interleaved partial results.
simd_dispatch!(
    fn softmax_rows(scores: &mut [f32], cols: usize, scale: f32, max: &mut [f32], sum: &mut [f32]) {
        for ((row, max), sum) in scores.chunks_exact_mut(cols).zip(max.iter_mut()).zip(sum.iter_mut()) {
            let mut m = [f32::NEG_INFINITY; LANES];
            let mut lanes = row.chunks_exact_mut(LANES);
            for x in &mut lanes {
                for (m, x) in m.iter_mut().zip(x.iter_mut()) {
                    *x *= scale;
                    *m = m.max(*x);
                }
            }
            for (m, x) in m.iter_mut().zip(lanes.into_remainder()) {
                *x *= scale;
                *m = m.max(*x);
            }
            let m = m.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let mut l = [0f32; LANES];
            let mut lanes = row.chunks_exact_mut(LANES);
            for x in &mut lanes {
                for (l, x) in l.iter_mut().zip(x.iter_mut()) {
                    *x = exp(*x - m);
                    *l += *x;
                }
            }
            for (l, x) in l.iter_mut().zip(lanes.into_remainder()) {
                *x = exp(*x - m);
                *l += *x;
            }
            (*max, *sum) = (m, l.iter().sum());
        }
    }
);

// D_i = dout_i . out_i per row of one head (rows `stride` apart, `d` long).
simd_dispatch!(
    fn row_dots(a: &[f32], b: &[f32], stride: usize, d: usize, out: &mut [f32]) {
        for (r, out) in out.iter_mut().enumerate() {
            let (a, b) = (&a[r * stride..][..d], &b[r * stride..][..d]);
            let mut acc = [0f32; LANES];
            let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
            for (x, y) in (&mut ca).zip(&mut cb) {
                for ((acc, &x), &y) in acc.iter_mut().zip(x).zip(y) {
                    *acc += x * y;
                }
            }
            for ((acc, &x), &y) in acc.iter_mut().zip(ca.remainder()).zip(cb.remainder()) {
                *acc += x * y;
            }
            *out = acc.iter().sum();
        }
    }
);

// Per row: p = exp(scale * s - lse), the forward's probabilities.
simd_dispatch!(
    fn probabilities(scores: &mut [f32], cols: usize, scale: f32, lse: &[f32]) {
        for (row, &lse) in scores.chunks_exact_mut(cols).zip(lse) {
            for x in row.iter_mut() {
                *x = exp(*x * scale - lse);
            }
        }
    }
);

// dS = P * (dP - D) * scale, written over dP.
simd_dispatch!(
    fn score_grad(p: &[f32], dp: &mut [f32], cols: usize, delta: &[f32], scale: f32) {
        for ((p, dp), &delta) in p.chunks_exact(cols).zip(dp.chunks_exact_mut(cols)).zip(delta) {
            for (&p, dp) in p.iter().zip(dp.iter_mut()) {
                *dp = p * (*dp - delta) * scale;
            }
        }
    }
);

pub fn attention_fwd(s: &AttentionShape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], lse: &mut [f32]) {
    let (t, h, hd) = (s.tokens, s.heads, s.heads * s.head_dim);
    let blocks = t.div_ceil(BLOCK);
    // Each task's lse values, [image, block, head, row]: contiguous per task, scattered after.
    with_scratch([s.batch * blocks * h * BLOCK, s.len()], |[lse_blocks, kt]| {
        kt.par_chunks_mut(t * hd).enumerate().for_each(|(image, kt)| transpose_heads(s, k, image * t * hd, kt));
        let kt = &*kt;
        let image_tasks = out[..s.len()].par_chunks_mut(t * hd).zip(lse_blocks.par_chunks_mut(blocks * h * BLOCK));
        image_tasks.enumerate().for_each(|(image, (out, lse_blocks))| {
            let kt = &kt[image * t * hd..][..t * hd];
            let tasks = out.par_chunks_mut(BLOCK * hd).zip(lse_blocks.par_chunks_mut(h * BLOCK));
            tasks.enumerate().for_each(|(block, (out, lse))| {
                for (head, lse) in lse.chunks_exact_mut(BLOCK).enumerate() {
                    let kt = head_t(s, kt, head);
                    fwd_block(s, &Head::new(s, image, head), head, block * BLOCK, q, kt, v, out, lse);
                }
            });
        });
        for (i, lse) in lse[..s.lse_len()].iter_mut().enumerate() {
            let (image, head, row) = (i / (h * t), i / t % h, i % t);
            *lse = lse_blocks[((image * blocks + row / BLOCK) * h + head) * BLOCK + row % BLOCK];
        }
    });
}

/// One head of one query block: `out` is the block's rows (all heads), `lse` its BLOCK entries,
/// `kt` the head's K^T.
#[allow(clippy::too_many_arguments)]
fn fwd_block(
    s: &AttentionShape,
    hd: &Head,
    head: usize,
    first: usize,
    q: &[f32],
    kt: Mat,
    v: &[f32],
    out: &mut [f32],
    lse: &mut [f32],
) {
    let (rows, t) = (out.len() / hd.stride, s.tokens);
    with_scratch([rows * t], |[scores]| {
        matmul(MatMut::rows(scores, rows, t), hd.rows(q, first, rows), kt, false, Threads::One);
        let (mut max, mut sum) = ([0f32; BLOCK], [0f32; BLOCK]);
        softmax_rows(scores, t, softmax_scale(s), &mut max[..rows], &mut sum[..rows]);
        matmul(hd.cols_mut(out, head), Mat::rows(scores, rows, t), hd.all(v), false, Threads::One);
        for (r, row) in out.chunks_exact_mut(hd.stride).enumerate() {
            for x in &mut row[head * hd.d..(head + 1) * hd.d] {
                *x /= sum[r];
            }
            lse[r] = max[r] + sum[r].ln();
        }
    });
}

/// Splits of each image's query blocks in the backward: enough (image, split) tasks for 8 cores
/// when the batch is small; one split (no partial sums) when it is not.
fn splits(s: &AttentionShape) -> usize {
    let blocks = s.tokens.div_ceil(BLOCK);
    8usize.div_ceil(s.batch).min(blocks)
}

#[allow(clippy::too_many_arguments)]
pub fn attention_bwd(
    s: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let (t, hd) = (s.tokens, s.heads * s.head_dim);
    let (slab, blocks) = (t * hd, t.div_ceil(BLOCK));
    let rows_per_split = blocks.div_ceil(splits(s)) * BLOCK;
    let splits = t.div_ceil(rows_per_split);
    let io = Io { q, k, v, out, lse, dout };
    let (dq, dk, dv) = (&mut dq[..s.len()], &mut dk[..s.len()], &mut dv[..s.len()]);
    if splits == 1 {
        dq.par_chunks_mut(slab)
            .zip(dk.par_chunks_mut(slab))
            .zip(dv.par_chunks_mut(slab))
            .enumerate()
            .for_each(|(image, ((dq, dk), dv))| bwd_rows(s, &io, image, 0, dq, dk, dv));
        return;
    }
    // Per (image, split): partial dk and dv, [tokens, heads * d] each.
    with_scratch([s.batch * splits * 2 * slab], |[partials]| {
        dq.par_chunks_mut(slab).zip(partials.par_chunks_mut(splits * 2 * slab)).enumerate().for_each(
            |(image, (dq, partials))| {
                let tasks = dq.par_chunks_mut(rows_per_split * hd).zip(partials.par_chunks_mut(2 * slab));
                tasks.enumerate().for_each(|(split, (dq, partial))| {
                    let (dk, dv) = partial.split_at_mut(slab);
                    bwd_rows(s, &io, image, split * rows_per_split, dq, dk, dv);
                });
            },
        );
        let partials = &*partials;
        let sums = dk.par_chunks_mut(slab).zip(dv.par_chunks_mut(slab)).zip(partials.par_chunks(splits * 2 * slab));
        sums.for_each(|((dk, dv), partials)| {
            let mut parts = partials.chunks_exact(slab);
            let (k0, v0) = (parts.next().expect("split 0"), parts.next().expect("split 0"));
            dk.copy_from_slice(k0);
            dv.copy_from_slice(v0);
            while let (Some(pk), Some(pv)) = (parts.next(), parts.next()) {
                add_assign(dk, pk);
                add_assign(dv, pv);
            }
        });
    });
}

simd_dispatch!(
    fn add_assign(y: &mut [f32], x: &[f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += x;
        }
    }
);

/// The forward's tensors and the incoming gradient.
struct Io<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    out: &'a [f32],
    lse: &'a [f32],
    dout: &'a [f32],
}

/// The backward of query rows [first, first + rows) of one image, all heads: dq's rows written,
/// this split's dk and dv ([tokens, heads * d]) overwritten with its sums, block by block.
fn bwd_rows(s: &AttentionShape, io: &Io, image: usize, first: usize, dq: &mut [f32], dk: &mut [f32], dv: &mut [f32]) {
    let (t, scale) = (s.tokens, softmax_scale(s));
    let slab = t * s.heads * s.head_dim;
    let rows_total = dq.len() / (s.heads * s.head_dim);
    with_scratch([BLOCK * t, BLOCK * t, slab, slab], |[p, ds, kt, vt]| {
        transpose_heads(s, io.k, image * slab, kt);
        transpose_heads(s, io.v, image * slab, vt);
        for head in 0..s.heads {
            let hd = Head::new(s, image, head);
            let (kt, vt) = (head_t(s, kt, head), head_t(s, vt, head));
            let lse = &io.lse[(image * s.heads + head) * t..][..t];
            for b0 in (0..rows_total).step_by(BLOCK) {
                let (i0, rows) = (first + b0, BLOCK.min(rows_total - b0));
                let (p, ds) = (&mut p[..rows * t], &mut ds[..rows * t]);
                let (q_blk, do_blk) = (hd.rows(io.q, i0, rows), hd.rows(io.dout, i0, rows));
                let accumulate = b0 > 0;
                matmul(MatMut::rows(p, rows, t), q_blk, kt, false, Threads::One);
                probabilities(p, t, scale, &lse[i0..i0 + rows]);
                matmul(hd.cols_mut(dv, head), Mat::rows(p, rows, t).t(), do_blk, accumulate, Threads::One);
                matmul(MatMut::rows(ds, rows, t), do_blk, vt, false, Threads::One);
                let mut delta = [0f32; BLOCK];
                let at = hd.base + i0 * hd.stride;
                row_dots(&io.dout[at..], &io.out[at..], hd.stride, hd.d, &mut delta[..rows]);
                score_grad(p, ds, t, &delta[..rows], scale);
                let dq_rows = &mut dq[b0 * hd.stride..(b0 + rows) * hd.stride];
                matmul(hd.cols_mut(dq_rows, head), Mat::rows(ds, rows, t), hd.all(io.k), false, Threads::One);
                matmul(hd.cols_mut(dk, head), Mat::rows(ds, rows, t).t(), q_blk, accumulate, Threads::One);
            }
        }
    });
}
