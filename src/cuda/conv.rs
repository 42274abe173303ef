//! Launchers of kernels/conv.cu.
//! STUB: to be implemented.
#![allow(unused_variables)]

use crate::gpu::Buffer;
use crate::shapes::Conv2dShape;
use anyhow::Result;

pub fn conv2d_fwd_f32(s: &Conv2dShape, x: &Buffer<f32>, w: &Buffer<f32>, b: Option<&Buffer<f32>>, y: &mut Buffer<f32>) -> Result<()> {
    todo!("conv launcher")
}

pub fn conv2d_bwd_input_f32(s: &Conv2dShape, dy: &Buffer<f32>, w: &Buffer<f32>, dx: &mut Buffer<f32>) -> Result<()> {
    todo!("conv launcher")
}

pub fn conv2d_bwd_weight_f32(s: &Conv2dShape, x: &Buffer<f32>, dy: &Buffer<f32>, dw: &mut Buffer<f32>, db: Option<&mut Buffer<f32>>) -> Result<()> {
    todo!("conv launcher")
}
