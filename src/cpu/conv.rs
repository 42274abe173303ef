//! Reference of kernels/conv.cu: 2-D convolution, NHWC activations, OHWI weights.
//! STUB: to be implemented.
#![allow(unused_variables)]

use super::Real;
use crate::shapes::Conv2dShape;

pub fn conv2d_fwd<T: Real>(s: &Conv2dShape, x: &[T], w: &[T], b: Option<&[T]>, y: &mut [T]) {
    todo!("conv reference")
}

pub fn conv2d_bwd_input<T: Real>(s: &Conv2dShape, dy: &[T], w: &[T], dx: &mut [T]) {
    todo!("conv reference")
}

pub fn conv2d_bwd_weight<T: Real>(s: &Conv2dShape, x: &[T], dy: &[T], dw: &mut [T], db: Option<&mut [T]>) {
    todo!("conv reference")
}
