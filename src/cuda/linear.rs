//! Launchers of kernels/linear.cu.
//! STUB: to be implemented.
#![allow(unused_variables)]

use crate::gpu::Buffer;
use crate::shapes::LinearShape;
use anyhow::Result;

pub fn linear_fwd_f32(s: &LinearShape, x: &Buffer<f32>, w: &Buffer<f32>, b: Option<&Buffer<f32>>, y: &mut Buffer<f32>) -> Result<()> {
    todo!("linear launcher")
}

pub fn linear_bwd_input_f32(s: &LinearShape, dy: &Buffer<f32>, w: &Buffer<f32>, dx: &mut Buffer<f32>) -> Result<()> {
    todo!("linear launcher")
}

pub fn linear_bwd_weight_f32(s: &LinearShape, x: &Buffer<f32>, dy: &Buffer<f32>, dw: &mut Buffer<f32>, db: Option<&mut Buffer<f32>>) -> Result<()> {
    todo!("linear launcher")
}
