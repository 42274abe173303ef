//! Reference of kernels/group_norm.cu: GroupNorm over NHWC, optionally fused with SiLU.
//! STUB: to be implemented.
#![allow(unused_variables)]

use super::Real;
use crate::shapes::GroupNormShape;

#[allow(clippy::too_many_arguments)]
pub fn group_norm_fwd<T: Real>(s: &GroupNormShape, x: &[T], gamma: Option<&[T]>, beta: Option<&[T]>, silu: bool, y: &mut [T], mean: &mut [T], rstd: &mut [T]) {
    todo!("group_norm reference")
}

#[allow(clippy::too_many_arguments)]
pub fn group_norm_bwd<T: Real>(s: &GroupNormShape, x: &[T], gamma: Option<&[T]>, beta: Option<&[T]>, mean: &[T], rstd: &[T], silu: bool, dy: &[T], dx: &mut [T], dgamma: Option<&mut [T]>, dbeta: Option<&mut [T]>) {
    todo!("group_norm reference")
}
