//! Launchers of kernels/attention.cu.
//! STUB: to be implemented.
#![allow(unused_variables)]

use crate::gpu::Buffer;
use crate::shapes::AttentionShape;
use anyhow::Result;

pub fn attention_fwd_f32(s: &AttentionShape, q: &Buffer<f32>, k: &Buffer<f32>, v: &Buffer<f32>, out: &mut Buffer<f32>, lse: &mut Buffer<f32>) -> Result<()> {
    todo!("attention launcher")
}

#[allow(clippy::too_many_arguments)]
pub fn attention_bwd_f32(s: &AttentionShape, q: &Buffer<f32>, k: &Buffer<f32>, v: &Buffer<f32>, out: &Buffer<f32>, lse: &Buffer<f32>, dout: &Buffer<f32>, dq: &mut Buffer<f32>, dk: &mut Buffer<f32>, dv: &mut Buffer<f32>) -> Result<()> {
    todo!("attention launcher")
}
