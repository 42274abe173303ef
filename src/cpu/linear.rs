//! Reference of kernels/linear.cu: y = x W^T + b with W stored [out, in].
//! STUB: to be implemented.
#![allow(unused_variables)]

use super::Real;
use crate::shapes::LinearShape;

pub fn linear_fwd<T: Real>(s: &LinearShape, x: &[T], w: &[T], b: Option<&[T]>, y: &mut [T]) {
    todo!("linear reference")
}

pub fn linear_bwd_input<T: Real>(s: &LinearShape, dy: &[T], w: &[T], dx: &mut [T]) {
    todo!("linear reference")
}

pub fn linear_bwd_weight<T: Real>(s: &LinearShape, x: &[T], dy: &[T], dw: &mut [T], db: Option<&mut [T]>) {
    todo!("linear reference")
}
