//! 3x3, stride 1, padding 1 convolutions by Winograd's F(2x2, 3x3) (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2015): each 2x2 block of outputs ("tile") comes
//! from a 4x4 patch of input as Y = A^T [ (G g G^T) .* (B^T d B) ] A, so the sum over input
//! channels becomes 16 GEMMs (one per position of the 4x4 transformed tile) of
//! [tiles, Ci] x [Ci, Co]: 16 multiplies per 4 outputs instead of 36, 2.25x fewer FLOPs than the
//! direct (im2col) form. The UNet's 3x3 convolutions are most of its work, so this is where the
//! CPU path gains the most; the transforms are a few adds per element, vectorised over channels
//! (NHWC keeps each pixel's channels contiguous).
//!
//! The input gradient of such a convolution is the same convolution of dy with the weights
//! flipped in space and transposed in channels, so it runs through the same routine.
//!
//! Accuracy: the transforms only add, subtract and halve, so the error stays of the order of the
//! direct sum's (tests/fast_conv.rs holds it to the same tolerance as im2col).
//! Determinism: tiles are cut into blocks by shape alone; every block's GEMMs run on one thread.

use super::gemm::{Mat, MatMut, Threads, matmul};
use super::scratch::with_scratch;
use crate::simd_dispatch;
use rayon::prelude::*;

/// Tiles per block: the block's transformed input [16, tiles, Ci] and products [16, tiles, Co]
/// are written once and read once, and each of its 16 GEMMs packs a [Ci, Co] weight matrix, which
/// 256 tiles amortise (fewer made the packing a visible cost).
const BLOCK_TILES: usize = 256;

/// Fewest tiles for which the Winograd path is used: below this (batch 1 at 16x16 and smaller)
/// the blocks would be too small for efficient GEMMs and im2col is faster.
pub const MIN_TILES: usize = 256;

/// The geometry of one call: an NHWC batch convolved to the same height and width.
#[derive(Clone, Copy)]
pub struct Geometry {
    pub batch: usize,
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
}

impl Geometry {
    fn tiles_y(&self) -> usize {
        self.h.div_ceil(2)
    }
    fn tiles_x(&self) -> usize {
        self.w.div_ceil(2)
    }
    pub fn tiles(&self) -> usize {
        self.batch * self.tiles_y() * self.tiles_x()
    }
}

/// The 16 transformed filters of every (o, i) pair, vectorised over i: ut[xi][o][i] =
/// (G g G^T)[xi] with g(ky, kx) = w[o][fy(ky)][fx(kx)][i] (fy = identity or flip). Each step is
/// a sum or difference of two channel vectors, G's halves applied last.
fn filters_by_output(w: &[f32], cin: usize, cout: usize, flip: bool, ut: &mut [f32]) {
    for_each_output(ut, 16, cout, cin, |o, k, rows| {
        with_scratch([12 * cin], |[t]| {
            let g = |ky: usize, kx: usize| {
                let (ky, kx) = if flip { (2 - ky, 2 - kx) } else { (ky, kx) };
                &w[((o * 3 + ky) * 3 + kx) * cin..][..cin]
            };
            // t = G g: for each column c, rows g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2.
            for c in 0..3 {
                let (t1, rest) = t[(3 + c) * cin..].split_at_mut(cin);
                let t2 = &mut rest[2 * cin..][..cin];
                half_sum3(t1, g(0, c), g(1, c), g(2, c), 1.0);
                half_sum3(t2, g(0, c), g(1, c), g(2, c), -1.0);
                t[c * cin..][..cin].copy_from_slice(g(0, c));
                t[(9 + c) * cin..][..cin].copy_from_slice(g(2, c));
            }
            // u = t G^T: for each row r of t, columns t0, (t0 + t1 + t2) / 2, (t0 - t1 + t2) / 2, t2.
            for r in 0..4 {
                let row = |c: usize| &t[(r * 3 + c) * cin..][..cin];
                let [u0, u1, u2, u3] = &mut rows[r * 4..r * 4 + 4] else { unreachable!("four positions") };
                let (u0, u1, u2, u3) = (&mut u0[k * cin..], &mut u1[k * cin..], &mut u2[k * cin..], &mut u3[k * cin..]);
                u0[..cin].copy_from_slice(row(0));
                half_sum3(&mut u1[..cin], row(0), row(1), row(2), 1.0);
                half_sum3(&mut u2[..cin], row(0), row(1), row(2), -1.0);
                u3[..cin].copy_from_slice(row(2));
            }
        })
    });
}

/// Output channels per task of [`for_each_output`].
const OUTPUTS_PER_TASK: usize = 4;

/// Runs `f(o, k, rows)` for every output channel o, groups of channels in parallel (the filters
/// are transformed every training step, and one thread doing it left the other idle): ut is
/// [positions][cout][cin], and o's row of position xi is rows[xi][k * cin..][..cin].
pub(super) fn for_each_output(
    ut: &mut [f32],
    positions: usize,
    cout: usize,
    cin: usize,
    f: impl Fn(usize, usize, &mut [&mut [f32]]) + Sync,
) {
    let mut per_position: Vec<_> =
        ut[..positions * cout * cin].chunks_mut(cout * cin).map(|p| p.chunks_mut(OUTPUTS_PER_TASK * cin)).collect();
    let tasks: Vec<Vec<&mut [f32]>> = (0..cout.div_ceil(OUTPUTS_PER_TASK))
        .map(|_| per_position.iter_mut().map(|p| p.next().expect("a task's rows")).collect())
        .collect();
    tasks.into_par_iter().enumerate().for_each(|(task, mut rows)| {
        let first = task * OUTPUTS_PER_TASK;
        for o in first..(first + OUTPUTS_PER_TASK).min(cout) {
            f(o, o - first, &mut rows);
        }
    });
}

simd_dispatch!(
    fn half_sum3(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32], sb: f32) {
        for (((o, &a), &b), &c) in out.iter_mut().zip(a).zip(b).zip(c) {
            *o = 0.5 * (a + sb * b + c);
        }
    }
);

/// The forward's transformed weights: u[xi][i][o] (a [Ci, Co] GEMM operand per position xi)
/// from OHWI w[o][ky][kx][i]: computed as ut[xi][o][i] (vectorised over i), then transposed.
pub fn forward_filters(w: &[f32], cin: usize, cout: usize, u: &mut [f32]) {
    with_scratch([16 * cin * cout], |[ut]| {
        filters_by_output(w, cin, cout, false, ut);
        u.par_chunks_mut(cin * cout).zip(ut.par_chunks(cin * cout)).for_each(|(u, ut)| transpose(ut, cout, cin, u));
    });
}

/// The input gradient's transformed weights: the forward's filters flipped in space and
/// transposed in channels, u[xi][o][i] (a [Co, Ci] operand) from w[o][2 - ky][2 - kx][i].
pub fn backward_filters(w: &[f32], cin: usize, cout: usize, u: &mut [f32]) {
    filters_by_output(w, cin, cout, true, u);
}

/// dst[c][r] = src[r][c] for a [rows, cols] src, in 16x16 blocks (both sides stay in cache);
/// blocks of 16 dst rows in parallel (training transposes its forward weights every step, and
/// one thread doing it left the other idle).
pub(super) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const B: usize = 16;
    dst[..rows * cols].par_chunks_mut(B * rows).enumerate().for_each(|(blk, dst)| {
        let c0 = blk * B;
        for r0 in (0..rows).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    dst[(c - c0) * rows + r] = src[r * cols + c];
                }
            }
        }
    });
}

/// y = conv3x3(x) with transformed filters `u` ([16][cin][cout]) and an optional bias.
pub fn conv3x3(g: &Geometry, x: &[f32], u: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    assert_eq!(x.len(), g.batch * g.h * g.w * g.cin, "winograd: input length");
    assert_eq!(y.len(), g.batch * g.h * g.w * g.cout, "winograd: output length");
    assert_eq!(u.len(), 16 * g.cin * g.cout, "winograd: filter length");
    let tiles = g.tiles();
    // At least 4 blocks, so both cores (of a 2-core machine) get whole blocks: a constant, not
    // the thread count, so the blocks (and bits) are the same on any machine.
    let per_block = tiles.div_ceil(4).next_multiple_of(16).clamp(16, BLOCK_TILES);
    let blocks = tiles.div_ceil(per_block);
    // Blocks write disjoint tiles of y; hand each its own view through a raw pointer wrapper.
    let out = SharedOut(y.as_mut_ptr(), y.len());
    (0..blocks).into_par_iter().for_each(|blk| {
        let first = blk * per_block;
        let count = per_block.min(tiles - first);
        let width = g.cin.max(g.cout);
        with_scratch(
            [16 * count * g.cin, 16 * count * g.cout, width, 16 * width, g.cout],
            |[v, m, zeros, t, bias_or_zero]| {
                zeros.fill(0.0);
                match bias {
                    Some(b) => bias_or_zero.copy_from_slice(b),
                    None => bias_or_zero.fill(0.0),
                }
                for tile in 0..count {
                    transform_input_tile(g, x, first + tile, tile, count, zeros, t, v);
                }
                for xi in 0..16 {
                    let lhs = Mat::strided(v, xi * count * g.cin, count, g.cin, g.cin);
                    let rhs = Mat::strided(u, xi * g.cin * g.cout, g.cin, g.cout, g.cout);
                    matmul(
                        MatMut::strided(m, xi * count * g.cout, count, g.cout, g.cout),
                        lhs,
                        rhs,
                        false,
                        Threads::One,
                    );
                }
                for tile in 0..count {
                    // SAFETY: tile first + tile's outputs are written by this block only (tiles are
                    // disjoint 2x2 output blocks), and `out` outlives the parallel loop.
                    unsafe { transform_output_tile(g, m, first + tile, tile, count, bias_or_zero, t, &out) };
                }
            },
        );
    });
}

/// y's pointer, shared by blocks that write disjoint elements.
pub(super) struct SharedOut(pub(super) *mut f32, pub(super) usize);
// SAFETY: blocks write disjoint elements (see conv3x3).
unsafe impl Sync for SharedOut {}

/// (image, tile row, tile column) of flat tile index `tile`.
pub(super) fn tile_coords(g: &Geometry, tile: usize) -> (usize, usize, usize) {
    let (ty, tx) = (g.tiles_y(), g.tiles_x());
    (tile / (ty * tx), tile / tx % ty, tile % tx)
}

/// V = B^T d B for the 4x4 input patch of `tile` (zeros outside the image), written to row
/// `row` of each of the 16 [count, cin] matrices in v, with B^T = [1 0 -1 0; 0 1 1 0;
/// 0 -1 1 0; 0 1 0 -1]. Every step adds or subtracts two channel vectors (SIMD over channels).
#[allow(clippy::too_many_arguments)]
pub(super) fn transform_input_tile(
    g: &Geometry,
    x: &[f32],
    tile: usize,
    row: usize,
    count: usize,
    zeros: &[f32],
    t: &mut [f32],
    v: &mut [f32],
) {
    let (n, ty, tx) = tile_coords(g, tile);
    let ci = g.cin;
    let d = |k: usize| -> &[f32] {
        let (iy, ix) = ((2 * ty + k / 4).wrapping_sub(1), (2 * tx + k % 4).wrapping_sub(1));
        if iy < g.h && ix < g.w { &x[((n * g.h + iy) * g.w + ix) * ci..][..ci] } else { zeros }
    };
    // t = B^T d, over the rows of the patch.
    for c in 0..4 {
        let ts = |r: usize| (r * 4 + c) * ci;
        combine2(&mut t[ts(0)..ts(0) + ci], d(c), d(8 + c), -1.0);
        combine2(&mut t[ts(1)..ts(1) + ci], d(4 + c), d(8 + c), 1.0);
        combine2(&mut t[ts(2)..ts(2) + ci], d(8 + c), d(4 + c), -1.0);
        combine2(&mut t[ts(3)..ts(3) + ci], d(4 + c), d(12 + c), -1.0);
    }
    // V = t B, over the columns.
    let t = &*t;
    for r in 0..4 {
        let q = |c: usize| &t[(r * 4 + c) * ci..][..ci];
        let at = |c: usize| ((r * 4 + c) * count + row) * ci;
        combine2(&mut v[at(0)..at(0) + ci], q(0), q(2), -1.0);
        combine2(&mut v[at(1)..at(1) + ci], q(1), q(2), 1.0);
        combine2(&mut v[at(2)..at(2) + ci], q(2), q(1), -1.0);
        combine2(&mut v[at(3)..at(3) + ci], q(1), q(3), -1.0);
    }
}

simd_dispatch!(
    fn combine2(out: &mut [f32], a: &[f32], b: &[f32], sb: f32) {
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *o = a + sb * b;
        }
    }
);

simd_dispatch!(
    fn combine3(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32], sb: f32, sc: f32) {
        for (((o, &a), &b), &c) in out.iter_mut().zip(a).zip(b).zip(c) {
            *o = a + sb * b + sc * c;
        }
    }
);

/// Y = A^T M A for `tile` (row `row` of the 16 [count, cout] products in m), plus the bias,
/// written to the tile's in-image outputs, with A^T = [1 1 1 0; 0 1 -1 -1]. SIMD over channels.
///
/// # Safety
/// `out` must point at the whole output, and no other thread may write this tile's outputs.
#[allow(clippy::too_many_arguments)]
unsafe fn transform_output_tile(
    g: &Geometry,
    m: &[f32],
    tile: usize,
    row: usize,
    count: usize,
    bias: &[f32],
    t: &mut [f32],
    out: &SharedOut,
) {
    let (n, ty, tx) = tile_coords(g, tile);
    let co = g.cout;
    let p = |xi: usize| &m[(xi * count + row) * co..][..co];
    // t[r] = column 0 of M A for row r, t[4 + r] = column 1: m0 + m1 + m2 and m1 - m2 - m3.
    for r in 0..4 {
        combine3(&mut t[r * co..(r + 1) * co], p(r * 4), p(r * 4 + 1), p(r * 4 + 2), 1.0, 1.0);
        combine3(&mut t[(4 + r) * co..(5 + r) * co], p(r * 4 + 1), p(r * 4 + 2), p(r * 4 + 3), -1.0, -1.0);
    }
    let t = &*t;
    let col = |j: usize, r: usize| &t[(j * 4 + r) * co..][..co];
    for k in 0..4 {
        let (oy, ox) = (k / 2, k % 2);
        let (py, px) = (2 * ty + oy, 2 * tx + ox);
        if py >= g.h || px >= g.w {
            continue;
        }
        let base = ((n * g.h + py) * g.w + px) * co;
        assert!(base + co <= out.1, "winograd: output pixel out of range");
        // SAFETY: in bounds (checked above); this tile's pixels are written by this thread only
        // (the caller's contract).
        let dst = unsafe { std::slice::from_raw_parts_mut(out.0.add(base), co) };
        // Rows of A^T: 0 -> r0 + r1 + r2, 1 -> r1 - r2 - r3.
        if oy == 0 {
            combine3_bias(dst, col(ox, 0), col(ox, 1), col(ox, 2), 1.0, 1.0, bias);
        } else {
            combine3_bias(dst, col(ox, 1), col(ox, 2), col(ox, 3), -1.0, -1.0, bias);
        }
    }
}

simd_dispatch!(
    fn combine3_bias(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32], sb: f32, sc: f32, bias: &[f32]) {
        for ((((o, &a), &b), &c), &d) in out.iter_mut().zip(a).zip(b).zip(c).zip(bias) {
            *o = a + sb * b + sc * c + d;
        }
    }
);
