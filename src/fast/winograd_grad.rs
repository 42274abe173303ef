//! The weight gradient of a 3x3, stride-1, padding-1 convolution by Winograd's transforms
//! (src/fast/winograd.rs and winograd4.rs have the forwards). For one tile the forward is
//! Y = A^T [U .* V] A with U = G g G^T and V = B^T d B, linear in the filter g, so its gradient is
//!
//!   dg = G^T [ (A dY A^T) .* V ] G,
//!
//! and over every tile of the batch dW = G^T [ sum over tiles (A dY A^T) .* V ] G: the sum over
//! tiles is P GEMMs (one per position xi of the transformed tile) of [Co, tiles] x [tiles, Ci].
//! F(2x2, 3x3) (P = 16 per 2x2 block of dy) does 2.25x fewer products than the direct (im2col)
//! gradient's 36, F(4x4, 3x3) (P = 36 per 4x4 block) 4x fewer. The weight gradient was
//! training's most expensive op (about 3x the forward's time by im2col), so this is where a
//! training step gains the most. src/fast/conv.rs picks the transform by the forward's rule.
//!
//! Accuracy: tests/fast_winograd.rs derives each transform's bound from its matrices (F(2x2)'s
//! is the direct sum's over the pixels, F(4x4)'s 6x that) and holds it to it.
//! Determinism: tiles are cut into blocks by shape alone; two partial sums, each over every
//! other block with its GEMMs one per thread, are added in order: the same bits on any thread
//! count.

use super::conv::Tile;
use super::gemm::{Mat, MatMut, Threads, matmul};
use super::scratch::with_scratch;
use super::winograd::{self, Geometry, combine2, tile_coords};
use super::{winograd4, winograd4_grad};
use rayon::prelude::*;

// The transform (src/fast/conv.rs's `Tile`): F(2x2, 3x3) (this file) or F(4x4, 3x3) (the
// transforms in src/fast/winograd4_grad.rs, the same sum with 36 positions per 4x4 tile of dy).

fn positions(tile: Tile) -> usize {
    match tile {
        Tile::F2 => 16,
        Tile::F4 => 36,
    }
}

fn tiles_of(tile: Tile, g: &Geometry) -> usize {
    match tile {
        Tile::F2 => g.tiles(),
        Tile::F4 => winograd4::tiles(g),
    }
}

/// Most tiles per block: each block's transformed input and gradient ([P][tiles][C] each) are
/// written by one thread and read straight back by its P GEMMs, which add into the [Co, Ci]
/// accumulator of their position. Measured flat within noise from 64 to 256 tiles (cifar10's 3x3
/// convs at batch 16); fewer tiles re-read the accumulators too often.
fn block_tiles(tile: Tile) -> usize {
    match tile {
        Tile::F2 => 256,
        Tile::F4 => 128,
    }
}

/// Partial sums computed side by side, each over every other block, then added in order: a
/// constant, not the thread count, so the bits are the same on any machine.
const PARTIALS: usize = 2;

/// dW (OHWI, [cout][3][3][cin]) of the 3x3 "same" conv of NHWC x (g.cin channels) whose output
/// gradient is dy (g.cout channels), overwritten.
pub(super) fn weight_grad(tile: Tile, g: &Geometry, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (ci, co, tiles) = (g.cin, g.cout, tiles_of(tile, g));
    assert_eq!(x.len(), g.batch * g.h * g.w * ci, "winograd weight grad: input length");
    assert_eq!(dy.len(), g.batch * g.h * g.w * co, "winograd weight grad: output gradient length");
    assert_eq!(dw.len(), 9 * ci * co, "winograd weight grad: weight gradient length");
    let per_block = tiles.div_ceil(PARTIALS).clamp(1, block_tiles(tile));
    let blocks = tiles.div_ceil(per_block);
    let len = positions(tile) * co * ci;
    // m[p][xi][o][i]: partial p's sum over its tiles of D[xi][o] V[xi][i], D = A dY A^T.
    with_scratch([PARTIALS * len], |[m]| {
        m.par_chunks_mut(len).enumerate().for_each(|(p, m)| {
            m.fill(0.0);
            for blk in (p..blocks).step_by(PARTIALS) {
                let first = blk * per_block;
                block_products(tile, g, x, dy, first, per_block.min(tiles - first), m);
            }
        });
        let (sum, rest) = m.split_at_mut(len);
        for part in rest.chunks_exact(len) {
            sum.iter_mut().zip(part).for_each(|(s, &p)| *s += p);
        }
        let sum = &*sum;
        dw.par_chunks_mut(9 * ci).enumerate().for_each(|(o, dw)| match tile {
            Tile::F2 => filter_transform(sum, o, ci, co, dw),
            Tile::F4 => winograd4_grad::grad_filter(sum, o, ci, co, dw),
        });
    });
}

/// m[xi] += D[xi]^T V[xi] over tiles [first, first + count): V = B^T d B and D = A dY A^T laid
/// out [P][count][c], each position's rows contiguous, which its GEMM reads at twice the rate of
/// rows strided across positions (measured, 128 channels).
fn block_products(tile: Tile, g: &Geometry, x: &[f32], dy: &[f32], first: usize, count: usize, m: &mut [f32]) {
    let (ci, co, pos) = (g.cin, g.cout, positions(tile));
    let width = ci.max(co);
    with_scratch([pos * count * ci, pos * count * co, width, pos * width], |[v, d, zeros, t]| {
        zeros.fill(0.0);
        for j in 0..count {
            match tile {
                Tile::F2 => {
                    winograd::transform_input_tile(g, x, first + j, j, count, &zeros[..ci], t, v);
                    transform_grad_tile(g, dy, first + j, j, count, zeros, t, d);
                }
                Tile::F4 => {
                    winograd4::transform_input_tile(g, x, first + j, j, count, zeros, v);
                    winograd4_grad::transform_grad_tile(g, dy, first + j, j, count, zeros, d);
                }
            }
        }
        let (v, d) = (&*v, &*d);
        m.par_chunks_mut(co * ci).enumerate().for_each(|(xi, m)| {
            let lhs = Mat::rows(&d[xi * count * co..][..count * co], count, co).t();
            let rhs = Mat::rows(&v[xi * count * ci..][..count * ci], count, ci);
            matmul(MatMut::rows(m, co, ci), lhs, rhs, true, Threads::One);
        });
    });
}

/// D = A dY A^T for the 2x2 output gradient of `tile` (zeros outside the image) into row `row`
/// of each of the 16 [count, cout] matrices in d, with A^T = [1 1 1 0; 0 1 -1 -1]: rows y0,
/// y0 + y1, y0 - y1, -y1, then the same over columns. Every step adds or subtracts two channel
/// vectors.
#[allow(clippy::too_many_arguments)]
fn transform_grad_tile(
    g: &Geometry,
    dy: &[f32],
    tile: usize,
    row: usize,
    count: usize,
    zeros: &[f32],
    t: &mut [f32],
    d: &mut [f32],
) {
    let (n, ty, tx) = tile_coords(g, tile);
    let co = g.cout;
    let zeros = &zeros[..co];
    let y = |r: usize, c: usize| -> &[f32] {
        let (py, px) = (2 * ty + r, 2 * tx + c);
        if py < g.h && px < g.w { &dy[((n * g.h + py) * g.w + px) * co..][..co] } else { zeros }
    };
    // t[r][c] = (A dY)[r][c], r < 4, c < 2.
    for c in 0..2 {
        let at = |r: usize| (r * 2 + c) * co;
        t[at(0)..at(0) + co].copy_from_slice(y(0, c));
        combine2(&mut t[at(1)..at(1) + co], y(0, c), y(1, c), 1.0);
        combine2(&mut t[at(2)..at(2) + co], y(0, c), y(1, c), -1.0);
        combine2(&mut t[at(3)..at(3) + co], zeros, y(1, c), -1.0);
    }
    let t = &*t;
    for r in 0..4 {
        let q = |c: usize| &t[(r * 2 + c) * co..][..co];
        let at = |c: usize| ((r * 4 + c) * count + row) * co;
        d[at(0)..at(0) + co].copy_from_slice(q(0));
        combine2(&mut d[at(1)..at(1) + co], q(0), q(1), 1.0);
        combine2(&mut d[at(2)..at(2) + co], q(0), q(1), -1.0);
        combine2(&mut d[at(3)..at(3) + co], zeros, q(1), -1.0);
    }
}

/// dW[o][ky][kx][:] = (G^T M G)[ky][kx] for output channel o, M = m[xi][o][:], with G's columns
/// (1, 1/2, 1/2, 0), (0, 1/2, -1/2, 0), (0, 1/2, 1/2, 1).
fn filter_transform(m: &[f32], o: usize, ci: usize, co: usize, dw: &mut [f32]) {
    // p0..p3 -> p0 + (p1 + p2) / 2, (p1 - p2) / 2, (p1 + p2) / 2 + p3, elementwise.
    let g_t = |p: [&[f32]; 4], out: [&mut [f32]; 3]| {
        let [o0, o1, o2] = out;
        for i in 0..ci {
            let (s, t) = (0.5 * (p[1][i] + p[2][i]), 0.5 * (p[1][i] - p[2][i]));
            (o0[i], o1[i], o2[i]) = (p[0][i] + s, t, s + p[3][i]);
        }
    };
    with_scratch([12 * ci], |[t]| {
        // t[a][kx] = sum over b of M[a][b] G[b][kx].
        for a in 0..4 {
            let row = |b: usize| &m[((a * 4 + b) * co + o) * ci..][..ci];
            let (t0, rest) = t[a * 3 * ci..(a + 1) * 3 * ci].split_at_mut(ci);
            let (t1, t2) = rest.split_at_mut(ci);
            g_t([row(0), row(1), row(2), row(3)], [t0, t1, t2]);
        }
        let t = &*t;
        for kx in 0..3 {
            let col = |a: usize| &t[(a * 3 + kx) * ci..][..ci];
            let mut out = dw.chunks_exact_mut(ci).skip(kx).step_by(3);
            let mut next = || out.next().expect("3 kernel rows");
            g_t([col(0), col(1), col(2), col(3)], [next(), next(), next()]);
        }
    });
}
