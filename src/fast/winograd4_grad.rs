//! The weight gradient's F(4x4, 3x3) transforms (src/fast/winograd_grad.rs runs the sum; the
//! matrices are in src/fast/winograd4.rs): D = A dY A^T for each 4x4 tile of the output gradient,
//! and dW = G^T M G from the 36 summed products.

// The transforms index six channel vectors in lockstep; a zip of that many reads worse.
#![allow(clippy::needless_range_loop)]

use super::scratch::with_scratch;
use super::winograd::Geometry;
use super::winograd4::{nth_mut, tile_coords};
use crate::simd_dispatch;

/// D = A dY A^T for the 4x4 output gradient of `tile` (zeros outside the image) into row `row`
/// of each of the 36 [count, cout] matrices in d: A's rows (read off A^T's columns) map four
/// values to y0, y0 + y1 + y2 + y3, y0 - y1 + y2 - y3, y0 + 2y1 + 4y2 + 8y3, y0 - 2y1 + 4y2 - 8y3,
/// y3. In one pass per 16 channels, as the input transform.
pub(super) fn transform_grad_tile(
    g: &Geometry,
    dy: &[f32],
    tile: usize,
    row: usize,
    count: usize,
    zeros: &[f32],
    d: &mut [f32],
) {
    let (n, ty, tx) = tile_coords(g, tile);
    let co = g.cout;
    let mut y = [&zeros[..co]; 16];
    for (k, y) in y.iter_mut().enumerate() {
        let (py, px) = (4 * ty + k / 4, 4 * tx + k % 4);
        if py < g.h && px < g.w {
            *y = &dy[((n * g.h + py) * g.w + px) * co..][..co];
        }
    }
    grad_patch(&y, d, row * co, count * co);
}

simd_dispatch!(
    fn grad_patch(y: &[&[f32]; 16], d: &mut [f32], at: usize, stride: usize) {
        let n = y[0].len();
        let mut c = 0;
        while c + 16 <= n {
            grad_lanes::<16>(y, d, [at, stride, c]);
            c += 16;
        }
        while c < n {
            grad_lanes::<1>(y, d, [at, stride, c]);
            c += 1;
        }
    }
);

/// Channels [c, c + W) of [`transform_grad_tile`]: t = A dY column by column, then D = t A^T
/// row by row into d[at + (r * 6 + col) * stride + c ..].
#[inline(always)]
fn grad_lanes<const W: usize>(y: &[&[f32]; 16], d: &mut [f32], [at, stride, c]: [usize; 3]) {
    #[inline(always)]
    fn column<const W: usize>(y: &[&[f32]; 16], col: usize, c: usize) -> [[f32; W]; 6] {
        let mut p = [[0f32; W]; 4];
        for (r, p) in p.iter_mut().enumerate() {
            p.copy_from_slice(&y[r * 4 + col][c..c + W]);
        }
        a6_lanes(p)
    }
    let t: [[[f32; W]; 6]; 4] = [column(y, 0, c), column(y, 1, c), column(y, 2, c), column(y, 3, c)];
    for r in 0..6 {
        let o = a6_lanes([t[0][r], t[1][r], t[2][r], t[3][r]]);
        for (col, o) in o.iter().enumerate() {
            d[at + (r * 6 + col) * stride + c..][..W].copy_from_slice(o);
        }
    }
}

/// A applied to four W-lane values.
#[inline(always)]
fn a6_lanes<const W: usize>(y: [[f32; W]; 4]) -> [[f32; W]; 6] {
    let [y0, y1, y2, y3] = y;
    let mut o = [[0f32; W]; 6];
    for i in 0..W {
        let (s02, s13) = (y0[i] + y2[i], y1[i] + y3[i]);
        let (p, q) = (y0[i] + 4.0 * y2[i], 2.0 * y1[i] + 8.0 * y3[i]);
        o[0][i] = y0[i];
        o[1][i] = s02 + s13;
        o[2][i] = s02 - s13;
        o[3][i] = p + q;
        o[4][i] = p - q;
        o[5][i] = y3[i];
    }
    o
}

/// dW[o][ky][kx][:] = (G^T M G)[ky][kx] for output channel o, M = m[xi][o][:] (36 positions).
pub(super) fn grad_filter(m: &[f32], o: usize, ci: usize, co: usize, dw: &mut [f32]) {
    with_scratch([18 * ci], |[t]| {
        // t[a][kx] = sum over b of M[a][b] G[b][kx], at (a * 3 + kx).
        for a in 0..6 {
            gt6(nth_mut(&mut t[a * 3 * ci..], ci, 1), std::array::from_fn(|b| &m[((a * 6 + b) * co + o) * ci..][..ci]));
        }
        // dW[ky][kx] = sum over a of G[a][ky] t[a][kx].
        for kx in 0..3 {
            gt6(nth_mut(&mut dw[kx * ci..], ci, 3), std::array::from_fn(|a| &t[(a * 3 + kx) * ci..][..ci]));
        }
    });
}

simd_dispatch!(
    fn gt6(out: [&mut [f32]; 3], m: [&[f32]; 6]) {
        // G's columns: (1/4, -1/6, -1/6, 1/24, 1/24, 0), (0, -1/6, 1/6, 1/12, -1/12, 0),
        // (0, -1/6, -1/6, 1/6, 1/6, 1).
        let n = m[0].len();
        let [o0, o1, o2] = out;
        let (o0, o1, o2) = (&mut o0[..n], &mut o1[..n], &mut o2[..n]);
        let (m0, m1, m2, m3, m4, m5) = (&m[0][..n], &m[1][..n], &m[2][..n], &m[3][..n], &m[4][..n], &m[5][..n]);
        for i in 0..n {
            let (s12, d12) = (m1[i] + m2[i], m1[i] - m2[i]);
            let (s34, d34) = (m3[i] + m4[i], m3[i] - m4[i]);
            o0[i] = 0.25 * m0[i] - s12 * (1.0 / 6.0) + s34 * (1.0 / 24.0);
            o1[i] = -d12 * (1.0 / 6.0) + d34 * (1.0 / 12.0);
            o2[i] = (s34 - s12) * (1.0 / 6.0) + m5[i];
        }
    }
);
