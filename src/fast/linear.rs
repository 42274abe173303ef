//! Fast linear layer (y = x W^T + b, W [out, in]): the ops of src/cpu/linear.rs as GEMMs on
//! row-major views, the transposes free. Each output is one f32 dot product in gemm's fixed
//! order (deterministic); the bias gradient sums rows in f64.

use super::bf16::Precision;
use super::elementwise::with_f64_scratch;
use super::gemm::{Mat, MatMut, Threads, matmul};
use super::gemm_bf16::{Bf16Kernel, PackedRhs, matmul_packed};
use super::prepared;
use crate::shapes::LinearShape;
use crate::simd_dispatch;

/// y[r, o] = sum_i x[r, i] W[o, i] + b[o]: y starts as the broadcast bias and the product is
/// accumulated onto it.
pub fn linear_fwd(s: &LinearShape, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) {
    linear_fwd_as(s, x, w, Precision::F32, b, y)
}

/// [`linear_fwd`] with W as it is (f32) or rounded to bf16 as part of its preparation (x is the
/// caller's to round; src/fast/bf16.rs).
pub(crate) fn linear_fwd_as(s: &LinearShape, x: &[f32], w: &[f32], wp: Precision, b: Option<&[f32]>, y: &mut [f32]) {
    let (k, n) = (s.in_features, s.out_features);
    let y = &mut y[..s.rows * n];
    if let Some(b) = b {
        for row in y.chunks_exact_mut(n) {
            row.copy_from_slice(&b[..n]);
        }
    }
    // W as [k, n] rows, kept while it stays the same (src/fast/prepared.rs): gemm reads it
    // without packing it.
    let kind = prepared::Kind::Transposed { rows: n, cols: k };
    let transpose = |w: &[f32], wt: &mut [f32]| super::winograd::transpose(w, n, k, wt);
    prepared::with_prepared(&w[..n * k], kind, wp, n * k, transpose, |wt| {
        matmul(MatMut::rows(y, s.rows, n), Mat::rows(x, s.rows, k), Mat::rows(wt, k, n), b.is_some(), Threads::All)
    });
}

/// [`linear_fwd`] with bf16 operands multiplied by `kernel` (src/fast/gemm_bf16.rs, which rounds
/// x and W as it packs them).
pub fn linear_fwd_bf16(kernel: Bf16Kernel, s: &LinearShape, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) {
    let (k, n) = (s.in_features, s.out_features);
    let y = &mut y[..s.rows * n];
    if let Some(b) = b {
        for row in y.chunks_exact_mut(n) {
            row.copy_from_slice(&b[..n]);
        }
    }
    let packed = PackedRhs::new(Mat::rows(w, n, k).t());
    matmul_packed(kernel, MatMut::rows(y, s.rows, n), Mat::rows(x, s.rows, k), &packed, b.is_some(), Threads::All);
}

/// dx[r, i] = sum_o dy[r, o] W[o, i].
pub fn linear_bwd_input(s: &LinearShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (k, n) = (s.in_features, s.out_features);
    matmul(MatMut::rows(dx, s.rows, k), Mat::rows(dy, s.rows, n), Mat::rows(w, n, k), false, Threads::All);
}

// sums[o] += dy[r, o] over the rows of `dy`, in row order.
simd_dispatch!(
    fn column_sums(dy: &[f32], sums: &mut [f64]) {
        for row in dy.chunks_exact(sums.len()) {
            for (s, &d) in sums.iter_mut().zip(row) {
                *s += d as f64;
            }
        }
    }
);

/// dW[o, i] = sum_r dy[r, o] x[r, i] (dy^T x); db[o] = sum_r dy[r, o].
pub fn linear_bwd_weight(s: &LinearShape, x: &[f32], dy: &[f32], dw: &mut [f32], db: Option<&mut [f32]>) {
    let (k, n) = (s.in_features, s.out_features);
    matmul(MatMut::rows(dw, n, k), Mat::rows(dy, s.rows, n).t(), Mat::rows(x, s.rows, k), false, Threads::All);
    if let Some(db) = db {
        bias_grad(s, dy, db);
    }
}

/// db[o] = sum_r dy[r, o], in f64. A row sweep is cheap next to the GEMM (rows * out adds against
/// rows * out * in multiply-adds), so it stays on one thread.
pub fn bias_grad(s: &LinearShape, dy: &[f32], db: &mut [f32]) {
    let n = s.out_features;
    with_f64_scratch(n, |sums| {
        sums.fill(0.0);
        column_sums(&dy[..s.rows * n], sums);
        for (db, &v) in db.iter_mut().zip(sums.iter()) {
            *db = v as f32;
        }
    });
}
