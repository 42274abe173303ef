//! The fast CPU convolution's two backward GEMM formulations (see src/fast/conv.rs for the
//! forward, the choice between 1x1, Winograd and im2col, and the determinism rules these follow):
//! the weight gradient as in-order chunks of im2col GEMMs, and the input gradient as a gather over
//! input pixels grouped by stride phase. Also `conv3x3_bwd_weight_with`, the 3x3 weight gradient
//! by a forced algorithm (im2col or src/fast/winograd_grad.rs) for benches and tests.

use super::conv::{
    Conv3x3Algo, Tile, WEIGHT_GRAD_CHUNK_FLOATS, WEIGHT_GRAD_PARTIALS, block_rows, check, gemm_threads, im2col_rows,
};
use super::gemm::{Mat, MatMut, Threads, matmul};
use super::scratch::with_scratch;
use super::winograd::Geometry;
use super::winograd_grad;
use crate::shapes::Conv2dShape;
use rayon::prelude::*;

/// dW[co, kk] = sum over chunks of dy_chunk^T col_chunk, chunks in order (so the sum over
/// pixels has a fixed order); the GEMM of each chunk spreads over the threads by output column.
pub(super) fn im2col_bwd_weight(s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (co, kk) = (s.out_c, s.kernel * s.kernel * s.in_c);
    let pixels = s.batch * s.out_h() * s.out_w();
    let chunk = (WEIGHT_GRAD_CHUNK_FLOATS / kk).max(64).min(pixels);
    let chunks = pixels.div_ceil(chunk);
    if chunks < WEIGHT_GRAD_PARTIALS {
        return weight_grad_partial(s, x, dy, dw, chunk, 0, 1, Threads::All);
    }
    // Two partial sums side by side, each over every other chunk with single-threaded GEMMs,
    // then added in order: no fork-join per chunk, and each core unrolls its own chunks (one
    // GEMM split across both cores per chunk measured ~160 GFLOP/s, this ~190).
    let threads = if rayon::current_num_threads() > WEIGHT_GRAD_PARTIALS { Threads::All } else { Threads::One };
    with_scratch([co * kk], |[other]| {
        rayon::join(
            || weight_grad_partial(s, x, dy, dw, chunk, 0, WEIGHT_GRAD_PARTIALS, threads),
            || weight_grad_partial(s, x, dy, other, chunk, 1, WEIGHT_GRAD_PARTIALS, threads),
        );
        for (d, &o) in dw.iter_mut().zip(other.iter()) {
            *d += o;
        }
    });
}

/// out = the weight gradient summed over chunks first, first + step, ... of `chunk` pixels.
#[allow(clippy::too_many_arguments)]
fn weight_grad_partial(
    s: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    out: &mut [f32],
    chunk: usize,
    first: usize,
    step: usize,
    threads: Threads,
) {
    let (co, kk) = (s.out_c, s.kernel * s.kernel * s.in_c);
    let pixels = s.batch * s.out_h() * s.out_w();
    with_scratch([chunk * kk], |[col]| {
        for (i, p0) in (0..pixels).step_by(chunk).skip(first).step_by(step).enumerate() {
            let m = chunk.min(pixels - p0);
            let col = &mut col[..m * kk];
            if threads == Threads::All {
                col.par_chunks_mut(16 * kk).enumerate().for_each(|(j, part)| im2col_rows(s, x, p0 + j * 16, part));
            } else {
                im2col_rows(s, x, p0, col);
            }
            let lhs = Mat::strided(dy, p0 * co, m, co, co).t();
            matmul(MatMut::rows(out, co, kk), lhs, Mat::rows(col, m, kk), i > 0, threads);
        }
    });
}

/// The input gradient as a gather over input pixels, grouped by stride phase.
///
/// Input coordinate iy is read by tap ky from output (iy + pad - ky) / stride when that divides
/// exactly, so the taps reaching iy are ky = (iy + pad) mod stride, + stride, ...: the same set
/// for every input pixel of one phase. Per phase, the weights of its taps are repacked [taps, co,
/// ci] and each block of the phase's pixels is one GEMM against a gathered [pixels, taps * co]
/// block of dy (zeros where the output pixel falls outside the image).
pub(super) fn gather_bwd_input(s: &Conv2dShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (k, st, ci, co) = (s.kernel, s.stride, s.in_c, s.out_c);
    // Rows per parallel item: whole phases of rows (a multiple of the stride), about
    // block_rows pixels per phase.
    let groups = (block_rows(s.batch * s.in_h * s.in_w / (st * st)) * st / s.in_w).max(1);
    let item_rows = st * groups;
    let items = (s.batch * s.in_h).div_ceil(item_rows);
    // Items run in parallel; the phases within an item one after another.
    let threads = gemm_threads(items);
    with_scratch([s.w_len()], |[wph]| {
        // Repack: phase (py, px) gets taps ky in py, py+st, ..; kx in px, px+st, .. in order.
        let mut at = 0;
        for py in 0..st {
            for px in 0..st {
                for ky in (py..k).step_by(st) {
                    for kx in (px..k).step_by(st) {
                        for o in 0..co {
                            wph[at..at + ci].copy_from_slice(&w[((o * k + ky) * k + kx) * ci..][..ci]);
                            at += ci;
                        }
                    }
                }
            }
        }
        let wph = &*wph;
        dx.par_chunks_mut(item_rows * s.in_w * ci).enumerate().for_each(|(item, dx_item)| {
            let row0 = item * item_rows;
            let rows = dx_item.len() / (s.in_w * ci);
            let mut phase_start = 0;
            for py in 0..st {
                for px in 0..st {
                    let taps = (py..k).step_by(st).len() * (px..k).step_by(st).len();
                    let w_phase = Mat::rows(&wph[phase_start..], taps * co, ci);
                    phase_start += taps * co * ci;
                    gather_phase(s, dy, row0, rows, (py, px), w_phase, dx_item, threads);
                }
            }
        });
    });
}

/// dx for the pixels of rows [row0, row0 + rows) in phase (py, px); `dx_rows` holds those rows.
#[allow(clippy::too_many_arguments)]
fn gather_phase(
    s: &Conv2dShape,
    dy: &[f32],
    row0: usize,
    rows: usize,
    (py, px): (usize, usize),
    w_phase: Mat,
    dx_rows: &mut [f32],
    threads: Threads,
) {
    let (k, st, ci, co) = (s.kernel, s.stride, s.in_c, s.out_c);
    let (oh, ow) = (s.out_h(), s.out_w());
    let in_phase = |i: usize, pad: usize, ph: usize| (i + pad) % st == ph;
    let pixels: usize = (0..rows).filter(|&r| in_phase((row0 + r) % s.in_h, s.pad.top, py)).count()
        * (0..s.in_w).filter(|&ix| in_phase(ix, s.pad.left, px)).count();
    if pixels == 0 {
        return;
    }
    let kdim = w_phase.rows;
    // Input coordinate i, tap k: the output coordinate that reads it, if any.
    let source =
        |i: usize, kt: usize, pad: usize, size: usize| (i + pad).checked_sub(kt).map(|d| d / st).filter(|&o| o < size);
    with_scratch([pixels * kdim, pixels * ci], |[col, out]| {
        let mut r = 0;
        // Visits the phase's pixels (local row, ix) in the same order for the gather and the
        // scatter.
        let each_pixel = |f: &mut dyn FnMut(usize, usize)| {
            for lr in (0..rows).filter(|&lr| in_phase((row0 + lr) % s.in_h, s.pad.top, py)) {
                for ix in (0..s.in_w).filter(|&ix| in_phase(ix, s.pad.left, px)) {
                    f(lr, ix);
                }
            }
        };
        each_pixel(&mut |lr, ix| {
            let (n, iy) = ((row0 + lr) / s.in_h, (row0 + lr) % s.in_h);
            let mut c = 0;
            for ky in (py..k).step_by(st) {
                let oy = source(iy, ky, s.pad.top, oh);
                for kx in (px..k).step_by(st) {
                    let dst = &mut col[r * kdim + c..][..co];
                    match (oy, source(ix, kx, s.pad.left, ow)) {
                        (Some(oy), Some(ox)) => dst.copy_from_slice(&dy[((n * oh + oy) * ow + ox) * co..][..co]),
                        _ => dst.fill(0.0),
                    }
                    c += co;
                }
            }
            r += 1;
        });
        matmul(MatMut::rows(out, pixels, ci), Mat::rows(col, pixels, kdim), w_phase, false, threads);
        let mut r = 0;
        each_pixel(&mut |lr, ix| {
            dx_rows[(lr * s.in_w + ix) * ci..][..ci].copy_from_slice(&out[r * ci..][..ci]);
            r += 1;
        });
    });
}

/// [`super::conv::conv2d_bwd_weight`] (without the bias) of a 3x3, stride-1, padding-1 conv by `algo`,
/// whatever its shape: for side-by-side benches and tests.
pub fn conv3x3_bwd_weight_with(algo: Conv3x3Algo, s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let p = s.pad;
    assert!(
        s.kernel == 3 && s.stride == 1 && [p.top, p.bottom, p.left, p.right] == [1; 4],
        "conv3x3_bwd_weight_with: {s:?}"
    );
    check(s, x.len(), dw.len(), dy.len());
    let g = Geometry { batch: s.batch, h: s.in_h, w: s.in_w, cin: s.in_c, cout: s.out_c };
    match algo {
        Conv3x3Algo::Im2col => im2col_bwd_weight(s, x, dy, dw),
        Conv3x3Algo::WinogradF2 => winograd_grad::weight_grad(Tile::F2, &g, x, dy, dw),
        Conv3x3Algo::WinogradF4 => winograd_grad::weight_grad(Tile::F4, &g, x, dy, dw),
    }
}
