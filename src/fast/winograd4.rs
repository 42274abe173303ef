//! 3x3, stride 1, padding 1 convolutions by Winograd's F(4x4, 3x3) (Lavin & Gray 2015), the
//! larger sibling of src/fast/winograd.rs's F(2x2, 3x3): each 4x4 tile of outputs comes from a
//! 6x6 input patch as Y = A^T [ (G g G^T) .* (B^T d B) ] A, so the sum over input channels is 36
//! GEMMs per 16 outputs (2.25 multiplies per output against F(2x2)'s 4: 1.78x fewer), for larger
//! transforms. The interpolation points are 0, ±1, ±2 and ∞ (the usual choice, as in oneDNN and
//! NNPACK):
//!
//! ```text
//! B^T = [4  0 -5  0 1 0]   G = [ 1/4     0    0 ]   A^T = [1 1  1 1  1 0]
//!       [0 -4 -4  1 1 0]       [-1/6 -1/6 -1/6 ]         [0 1 -1 2 -2 0]
//!       [0  4 -4 -1 1 0]       [-1/6  1/6 -1/6 ]         [0 1  1 4  4 0]
//!       [0 -2 -1  2 1 0]       [1/24 1/12  1/6 ]         [0 1 -1 8 -8 1]
//!       [0  2 -1 -2 1 0]       [1/24 -1/12 1/6 ]
//!       [0  4  0 -5 0 1]       [   0    0    1 ]
//! ```
//!
//! Accuracy: the coefficients up to 8 (A) and 5 (B) amplify the GEMMs' rounding: the worst
//! output (tile corner 3,3) has ~19x F(2x2)'s error (tests/fast_conv.rs derives the bound it
//! tests against from these matrices). src/fast/conv.rs picks F(4x4) only where it measured faster.
//! Determinism: as F(2x2), tiles are cut into blocks by shape alone, each block's GEMMs on one
//! thread.

// The transforms index six or eight channel vectors in lockstep; a zip of that many reads worse.
#![allow(clippy::needless_range_loop)]

use super::gemm::{Mat, MatMut, Threads, matmul};
use super::scratch::with_scratch;
use super::winograd::{Geometry, SharedOut, for_each_output, transpose};
use crate::simd_dispatch;
use rayon::prelude::*;

/// Tiles per block: the block's transformed input [36, tiles, Ci] is 2.25x F(2x2)'s per tile, so
/// half F(2x2)'s 256 tiles keep it about as large (in L2), and each of the 36 packed [Ci, Co]
/// weight matrices still serves 128 tiles (2048 outputs).
const BLOCK_TILES: usize = 128;

/// Positions of the transformed tile.
const POS: usize = 36;

/// 4x4 output tiles of the geometry.
pub fn tiles(g: &Geometry) -> usize {
    g.batch * g.h.div_ceil(4) * g.w.div_ceil(4)
}

/// ut[xi][o][i] = (G g G^T)[xi] of each (o, i), vectorised over i (g read flipped when `flip`).
fn filters_by_output(w: &[f32], cin: usize, cout: usize, flip: bool, ut: &mut [f32]) {
    for_each_output(ut, POS, cout, cin, |o, k, rows| {
        with_scratch([18 * cin], |[t]| {
            let g = |ky: usize, kx: usize| {
                let (ky, kx) = if flip { (2 - ky, 2 - kx) } else { (ky, kx) };
                &w[((o * 3 + ky) * 3 + kx) * cin..][..cin]
            };
            // t = G g, column by column: t[r][c] at (r * 3 + c).
            for c in 0..3 {
                g6(nth_mut(&mut t[c * cin..], cin, 3), [g(0, c), g(1, c), g(2, c)]);
            }
            // u = t G^T, row by row: u[r][c'] is o's row of position r * 6 + c'.
            for r in 0..6 {
                let src = &t[r * 3 * cin..];
                let mut dst = rows[r * 6..r * 6 + 6].iter_mut().map(|p| &mut p[k * cin..][..cin]);
                let dst = std::array::from_fn(|_| dst.next().expect("six positions"));
                g6(dst, [&src[..cin], &src[cin..2 * cin], &src[2 * cin..3 * cin]]);
            }
        })
    });
}

/// Six disjoint `len`-long slices of `buf`, `step` slices apart (element 0, step * len, ...).
pub(super) fn nth_mut<const N: usize>(buf: &mut [f32], len: usize, step: usize) -> [&mut [f32]; N] {
    let mut it = buf.chunks_mut(len).step_by(step);
    std::array::from_fn(|_| it.next().expect("winograd4: scratch too short"))
}

simd_dispatch!(
    fn g6(out: [&mut [f32]; 6], g: [&[f32]; 3]) {
        let n = g[0].len();
        let [o0, o1, o2, o3, o4, o5] = out;
        let (o0, o1, o2, o3, o4, o5) =
            (&mut o0[..n], &mut o1[..n], &mut o2[..n], &mut o3[..n], &mut o4[..n], &mut o5[..n]);
        let (a, b, c) = (&g[0][..n], &g[1][..n], &g[2][..n]);
        for i in 0..n {
            let (a, b, c) = (a[i], b[i], c[i]);
            let (s, p, q) = (a + c, (a + 4.0 * c) * (1.0 / 24.0), b * (1.0 / 12.0));
            o0[i] = 0.25 * a;
            o1[i] = -(s + b) * (1.0 / 6.0);
            o2[i] = -(s - b) * (1.0 / 6.0);
            o3[i] = p + q;
            o4[i] = p - q;
            o5[i] = c;
        }
    }
);

/// The forward's transformed weights u[xi][i][o] (36 [Ci, Co] GEMM operands) from OHWI w.
pub fn forward_filters(w: &[f32], cin: usize, cout: usize, u: &mut [f32]) {
    with_scratch([POS * cin * cout], |[ut]| {
        filters_by_output(w, cin, cout, false, ut);
        u.par_chunks_mut(cin * cout).zip(ut.par_chunks(cin * cout)).for_each(|(u, ut)| transpose(ut, cout, cin, u));
    });
}

/// The input gradient's transformed weights u[xi][o][i]: flipped in space, transposed in channels.
pub fn backward_filters(w: &[f32], cin: usize, cout: usize, u: &mut [f32]) {
    filters_by_output(w, cin, cout, true, &mut u[..POS * cin * cout]);
}

/// y = conv3x3(x) with transformed filters `u` ([36][cin][cout]) and an optional bias.
pub fn conv3x3(g: &Geometry, x: &[f32], u: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    assert_eq!(x.len(), g.batch * g.h * g.w * g.cin, "winograd4: input length");
    assert_eq!(y.len(), g.batch * g.h * g.w * g.cout, "winograd4: output length");
    assert_eq!(u.len(), POS * g.cin * g.cout, "winograd4: filter length");
    let tiles = tiles(g);
    // At least 4 blocks (a constant, so the bits never depend on the thread count), as F(2x2).
    let per_block = tiles.div_ceil(4).next_multiple_of(16).clamp(16, BLOCK_TILES);
    let blocks = tiles.div_ceil(per_block);
    let out = SharedOut(y.as_mut_ptr(), y.len());
    (0..blocks).into_par_iter().for_each(|blk| {
        let first = blk * per_block;
        let count = per_block.min(tiles - first);
        let width = g.cin.max(g.cout);
        with_scratch(
            [POS * count * g.cin, POS * count * g.cout, width, g.cout, 16 * g.cout],
            |[v, m, zeros, bias_or_zero, junk]| {
                zeros.fill(0.0);
                match bias {
                    Some(b) => bias_or_zero.copy_from_slice(b),
                    None => bias_or_zero.fill(0.0),
                }
                for tile in 0..count {
                    transform_input_tile(g, x, first + tile, tile, count, zeros, v);
                }
                for xi in 0..POS {
                    matmul(
                        MatMut::strided(m, xi * count * g.cout, count, g.cout, g.cout),
                        Mat::strided(v, xi * count * g.cin, count, g.cin, g.cin),
                        Mat::strided(u, xi * g.cin * g.cout, g.cin, g.cout, g.cout),
                        false,
                        Threads::One,
                    );
                }
                for tile in 0..count {
                    // SAFETY: tile first + tile's outputs are written by this block only (tiles are
                    // disjoint 4x4 output blocks), and `out` outlives the parallel loop.
                    unsafe { transform_output_tile(g, m, [first + tile, tile, count], bias_or_zero, junk, &out) };
                }
            },
        );
    });
}

/// (image, tile row, tile column) of flat tile index `tile`.
pub(super) fn tile_coords(g: &Geometry, tile: usize) -> (usize, usize, usize) {
    let (ty, tx) = (g.h.div_ceil(4), g.w.div_ceil(4));
    (tile / (ty * tx), tile / tx % ty, tile % tx)
}

/// V = B^T d B for the 6x6 input patch of `tile` (zeros outside the image), written to row `row`
/// of each of the 36 [count, cin] matrices in v.
pub(super) fn transform_input_tile(
    g: &Geometry,
    x: &[f32],
    tile: usize,
    row: usize,
    count: usize,
    zeros: &[f32],
    v: &mut [f32],
) {
    let (n, ty, tx) = tile_coords(g, tile);
    let ci = g.cin;
    let mut d = [&zeros[..ci]; 36];
    for (k, d) in d.iter_mut().enumerate() {
        let (iy, ix) = ((4 * ty + k / 6).wrapping_sub(1), (4 * tx + k % 6).wrapping_sub(1));
        if iy < g.h && ix < g.w {
            *d = &x[((n * g.h + iy) * g.w + ix) * ci..][..ci];
        }
    }
    input_patch(&d, v, row * ci, count * ci);
}

simd_dispatch!(
    fn input_patch(d: &[&[f32]; 36], v: &mut [f32], at: usize, stride: usize) {
        // 16 channels at a time (one 512-bit vector), the whole 6x6 transform in registers and
        // the stack: one pass over the patch instead of twelve calls through a scratch matrix
        // (one core, 128 channels: 2.8 -> 2.1 us per tile), then single channels for the rest.
        let n = d[0].len();
        let mut c = 0;
        while c + 16 <= n {
            patch_lanes::<16>(d, v, at, stride, c);
            c += 16;
        }
        while c < n {
            patch_lanes::<1>(d, v, at, stride, c);
            c += 1;
        }
    }
);

/// Channels [c, c + W) of [`transform_input_tile`]: t = B^T d column by column, then V = t B
/// row by row into v[at + (r * 6 + col) * stride + c ..]. Six values at a time, by value.
#[inline(always)]
fn patch_lanes<const W: usize>(d: &[&[f32]; 36], v: &mut [f32], at: usize, stride: usize, c: usize) {
    // Helpers, not closures: a closure inside a #[target_feature] function is compiled without
    // its features (and here was not inlined: scalar code and calls).
    #[inline(always)]
    fn column<const W: usize>(d: &[&[f32]; 36], col: usize, c: usize) -> [[f32; W]; 6] {
        let mut p = [[0f32; W]; 6];
        for (r, p) in p.iter_mut().enumerate() {
            p.copy_from_slice(&d[r * 6 + col][c..c + W]);
        }
        bt6_lanes(p)
    }
    // t[col][r] = (B^T d)[r][col]: built whole, so no scratch to zero first.
    let t: [[[f32; W]; 6]; 6] =
        [column(d, 0, c), column(d, 1, c), column(d, 2, c), column(d, 3, c), column(d, 4, c), column(d, 5, c)];
    for r in 0..6 {
        let o = bt6_lanes([t[0][r], t[1][r], t[2][r], t[3][r], t[4][r], t[5][r]]);
        for (col, o) in o.iter().enumerate() {
            v[at + (r * 6 + col) * stride + c..][..W].copy_from_slice(o);
        }
    }
}

/// B^T applied to six W-lane values.
#[inline(always)]
fn bt6_lanes<const W: usize>(d: [[f32; W]; 6]) -> [[f32; W]; 6] {
    let [d0, d1, d2, d3, d4, d5] = d;
    let mut o = [[0f32; W]; 6];
    for i in 0..W {
        let (a, b) = (d4[i] - 4.0 * d2[i], d3[i] - 4.0 * d1[i]);
        let (c, e) = (d4[i] - d2[i], 2.0 * (d3[i] - d1[i]));
        o[0][i] = 4.0 * d0[i] - 5.0 * d2[i] + d4[i];
        o[1][i] = a + b;
        o[2][i] = a - b;
        o[3][i] = c + e;
        o[4][i] = c - e;
        o[5][i] = 4.0 * d1[i] - 5.0 * d3[i] + d5[i];
    }
    o
}

/// Y = A^T M A (+ bias) for tile `at = [tile, row, count]` (row `row` of the 36 [count, cout]
/// products in m), written to the tile's in-image outputs; the rest go to `junk` (16 rows).
///
/// # Safety
/// `out` must point at the whole output, and no other thread may write this tile's outputs.
unsafe fn transform_output_tile(
    g: &Geometry,
    m: &[f32],
    [tile, row, count]: [usize; 3],
    bias: &[f32],
    junk: &mut [f32],
    out: &SharedOut,
) {
    let (n, ty, tx) = tile_coords(g, tile);
    let co = g.cout;
    let mut spare = junk.chunks_mut(co);
    // Output (oy, j) of the tile at dst[oy * 4 + j].
    let mut dst: [&mut [f32]; 16] = std::array::from_fn(|k| {
        let (py, px) = (4 * ty + k / 4, 4 * tx + k % 4);
        let spare = spare.next().expect("winograd4: junk rows");
        if py >= g.h || px >= g.w {
            return spare;
        }
        let base = ((n * g.h + py) * g.w + px) * co;
        assert!(base + co <= out.1, "winograd4: output pixel out of range");
        // SAFETY: in bounds (checked above); this tile's pixels are written by this thread
        // only (the caller's contract), each once.
        unsafe { std::slice::from_raw_parts_mut(out.0.add(base), co) }
    });
    output_patch(m, row * co, count * co, bias, &mut dst);
}

simd_dispatch!(
    fn output_patch(m: &[f32], at: usize, stride: usize, bias: &[f32], dst: &mut [&mut [f32]; 16]) {
        // As `input_patch`: 16 channels at a time, the whole transform by value.
        let n = bias.len();
        let mut c = 0;
        while c + 16 <= n {
            output_lanes::<16>(m, [at, stride, c], bias, dst);
            c += 16;
        }
        while c < n {
            output_lanes::<1>(m, [at, stride, c], bias, dst);
            c += 1;
        }
    }
);

/// Channels [c, c + W) of [`transform_output_tile`]: t = M A row by row (plus zero, as the
/// bias-free first pass always was), then Y = A^T t + bias column by column.
#[inline(always)]
fn output_lanes<const W: usize>(m: &[f32], [at, stride, c]: [usize; 3], bias: &[f32], dst: &mut [&mut [f32]; 16]) {
    #[inline(always)]
    fn row<const W: usize>(m: &[f32], [at, stride, c]: [usize; 3], r: usize) -> [[f32; W]; 4] {
        let mut p = [[0f32; W]; 6];
        for (col, p) in p.iter_mut().enumerate() {
            p.copy_from_slice(&m[at + (r * 6 + col) * stride + c..][..W]);
        }
        at4_lanes(p, [0.0; W])
    }
    let a = [at, stride, c];
    let t: [[[f32; W]; 4]; 6] = [row(m, a, 0), row(m, a, 1), row(m, a, 2), row(m, a, 3), row(m, a, 4), row(m, a, 5)];
    let b: [f32; W] = bias[c..c + W].try_into().expect("W channels");
    for j in 0..4 {
        let o = at4_lanes([t[0][j], t[1][j], t[2][j], t[3][j], t[4][j], t[5][j]], b);
        for (oy, o) in o.iter().enumerate() {
            dst[oy * 4 + j][c..c + W].copy_from_slice(o);
        }
    }
}

/// A^T applied to six W-lane values, plus b.
#[inline(always)]
fn at4_lanes<const W: usize>(m: [[f32; W]; 6], b: [f32; W]) -> [[f32; W]; 4] {
    let [m0, m1, m2, m3, m4, m5] = m;
    let mut o = [[0f32; W]; 4];
    for i in 0..W {
        let (s12, d12) = (m1[i] + m2[i], m1[i] - m2[i]);
        let (s34, d34) = (m3[i] + m4[i], m3[i] - m4[i]);
        o[0][i] = m0[i] + s12 + s34 + b[i];
        o[1][i] = d12 + 2.0 * d34 + b[i];
        o[2][i] = s12 + 4.0 * s34 + b[i];
        o[3][i] = d12 + 8.0 * d34 + m5[i] + b[i];
    }
    o
}
