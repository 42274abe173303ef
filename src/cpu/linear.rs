//! Reference of kernels/linear.cu: y = x W^T + b with W stored [out, in], as torch.nn.Linear.
//!
//! Every dot product runs in f64 and is rounded once, so for f32 data the reference is the exact
//! result the kernels approximate, and for f64 data (gradient checks) it is plain f64 math.

use super::Real;
use crate::shapes::LinearShape;

fn dot<T: Real>(terms: impl Iterator<Item = (T, T)>) -> f64 {
    terms.map(|(a, b)| a.to_f64() * b.to_f64()).sum()
}

/// y[r, o] = sum_i x[r, i] W[o, i] + b[o].
pub fn linear_fwd<T: Real>(s: &LinearShape, x: &[T], w: &[T], b: Option<&[T]>, y: &mut [T]) {
    let (k, n) = (s.in_features, s.out_features);
    for r in 0..s.rows {
        let xr = &x[r * k..(r + 1) * k];
        for o in 0..n {
            let acc = dot(xr.iter().copied().zip(w[o * k..(o + 1) * k].iter().copied()));
            y[r * n + o] = T::from_f64(acc + b.map_or(0.0, |b| b[o].to_f64()));
        }
    }
}

/// dx[r, i] = sum_o dy[r, o] W[o, i].
pub fn linear_bwd_input<T: Real>(s: &LinearShape, dy: &[T], w: &[T], dx: &mut [T]) {
    let (k, n) = (s.in_features, s.out_features);
    for r in 0..s.rows {
        for i in 0..k {
            dx[r * k + i] = T::from_f64(dot((0..n).map(|o| (dy[r * n + o], w[o * k + i]))));
        }
    }
}

/// dW[o, i] = sum_r dy[r, o] x[r, i]; db[o] = sum_r dy[r, o].
pub fn linear_bwd_weight<T: Real>(s: &LinearShape, x: &[T], dy: &[T], dw: &mut [T], db: Option<&mut [T]>) {
    let (k, n) = (s.in_features, s.out_features);
    for o in 0..n {
        for i in 0..k {
            dw[o * k + i] = T::from_f64(dot((0..s.rows).map(|r| (dy[r * n + o], x[r * k + i]))));
        }
    }
    if let Some(db) = db {
        for (o, db) in db.iter_mut().enumerate() {
            *db = T::from_f64((0..s.rows).map(|r| dy[r * n + o].to_f64()).sum());
        }
    }
}
