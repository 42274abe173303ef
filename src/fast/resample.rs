//! Fast nearest 2x upsampling and its backward (reference: src/cpu/resample.rs): rows of the
//! image in parallel, each row's loop compiled per SIMD level; the same bits as the reference.

use super::elementwise::rows_per_task;
use crate::shapes::ImageShape;
use crate::simd_dispatch;
use rayon::prelude::*;

// One output row pair of the upsampling: each input pixel of `x_row` written twice across and
// into both rows.
simd_dispatch!(
    fn upsample_row(x_row: &[f32], c: usize, y_rows: &mut [f32]) {
        let (top, bottom) = y_rows.split_at_mut(y_rows.len() / 2);
        for ((px, t), b) in x_row.chunks_exact(c).zip(top.chunks_exact_mut(2 * c)).zip(bottom.chunks_exact_mut(2 * c)) {
            t[..c].copy_from_slice(px);
            t[c..].copy_from_slice(px);
            b.copy_from_slice(t);
        }
    }
);
// One input row of the upsampling's backward: the 2x2 sums, row by row as the reference adds.
simd_dispatch!(
    fn downsum_row(dy_rows: &[f32], c: usize, dx_row: &mut [f32]) {
        let (top, bottom) = dy_rows.split_at(dy_rows.len() / 2);
        for ((dx, t), b) in dx_row.chunks_exact_mut(c).zip(top.chunks_exact(2 * c)).zip(bottom.chunks_exact(2 * c)) {
            for k in 0..c {
                dx[k] = t[k] + t[c + k] + b[k] + b[c + k];
            }
        }
    }
);

/// y[n, 2i + a, 2j + b, c] = x[n, i, j, c] for a, b in {0, 1}; `s` is x's shape.
pub fn upsample_nearest2x_fwd(s: &ImageShape, x: &[f32], y: &mut [f32]) {
    let row = s.w * s.c; // one input row; its two output rows are 4 * row
    let (x, y) = (&x[..s.len()], &mut y[..4 * s.len()]);
    y.par_chunks_mut(4 * row)
        .zip(x.par_chunks(row))
        .with_min_len(rows_per_task(4 * row))
        .for_each(|(y, x)| upsample_row(x, s.c, y));
}

/// dx[n, i, j, c] = the sum of dy over the 2x2 block at (2i, 2j), in the reference's order.
pub fn upsample_nearest2x_bwd(s: &ImageShape, dy: &[f32], dx: &mut [f32]) {
    let row = s.w * s.c;
    let (dy, dx) = (&dy[..4 * s.len()], &mut dx[..s.len()]);
    dx.par_chunks_mut(row)
        .zip(dy.par_chunks(4 * row))
        .with_min_len(rows_per_task(4 * row))
        .for_each(|(dx, dy)| downsum_row(dy, s.c, dx));
}
