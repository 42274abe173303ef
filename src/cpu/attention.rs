//! Reference of kernels/attention.cu: multi-head softmax attention with saved log-sum-exp.
//! STUB: to be implemented.
#![allow(unused_variables)]

use super::Real;
use crate::shapes::AttentionShape;

pub fn attention_fwd<T: Real>(s: &AttentionShape, q: &[T], k: &[T], v: &[T], out: &mut [T], lse: &mut [T]) {
    todo!("attention reference")
}

#[allow(clippy::too_many_arguments)]
pub fn attention_bwd<T: Real>(s: &AttentionShape, q: &[T], k: &[T], v: &[T], out: &[T], lse: &[T], dout: &[T], dq: &mut [T], dk: &mut [T], dv: &mut [T]) {
    todo!("attention reference")
}
