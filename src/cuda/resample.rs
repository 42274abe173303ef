//! Launchers of kernels/resample.cu. Lengths of f32 buffers are checked by the backend
//! (src/backend/checks.rs); these check what the kernels' 32-bit indexing needs, and the bf16
//! output's lengths.

use super::count_u32;
use crate::gpu::{Buffer, DType, KernelArgs, LaunchConfig};
use crate::shapes::{ImageShape, lengths};
use anyhow::Result;
use half::bf16;

const THREADS: u32 = 256;

/// `s` is the input's shape; one thread per input element (it writes or reads a 2x2 block).
pub fn upsample_nearest2x_fwd_f32(s: &ImageShape, x: &Buffer<f32>, y: &mut Buffer<f32>) -> Result<()> {
    upsample_fwd("upsample_nearest2x_fwd_f32", s, x, y)
}

/// The same into bf16, each value rounded to nearest even once: the input of an upsampler's bf16
/// convolution, the bits it would round itself.
pub fn upsample_nearest2x_fwd_to_bf16_f32(s: &ImageShape, x: &Buffer<f32>, y: &mut Buffer<bf16>) -> Result<()> {
    lengths("upsample_nearest2x_fwd", &[("x", x.len(), s.len()), ("y", y.len(), 4 * s.len())])?;
    upsample_fwd("upsample_nearest2x_fwd_to_bf16_f32", s, x, y)
}

/// From a bf16 input (the residual stream in bf16) into bf16: bits copied.
pub fn upsample_nearest2x_fwd_bf16(s: &ImageShape, x: &Buffer<bf16>, y: &mut Buffer<bf16>) -> Result<()> {
    lengths("upsample_nearest2x_fwd", &[("x", x.len(), s.len()), ("y", y.len(), 4 * s.len())])?;
    upsample_fwd("upsample_nearest2x_fwd_bf16", s, x, y)
}

fn upsample_fwd<X: DType, T: DType>(kernel: &str, s: &ImageShape, x: &Buffer<X>, y: &mut Buffer<T>) -> Result<()> {
    count_u32("upsample_nearest2x_fwd", 4 * s.len())?;
    let args = KernelArgs::new().buf(x).buf(y).u32(s.len() as u32).u32(s.w as u32).u32(s.c as u32);
    x.gpu().launch(kernel, LaunchConfig::for_elements(s.len(), THREADS), &args)
}

pub fn upsample_nearest2x_bwd_f32(s: &ImageShape, dy: &Buffer<f32>, dx: &mut Buffer<f32>) -> Result<()> {
    count_u32("upsample_nearest2x_bwd", 4 * s.len())?;
    let args = KernelArgs::new().buf(dy).buf(dx).u32(s.len() as u32).u32(s.w as u32).u32(s.c as u32);
    dy.gpu().launch("upsample_nearest2x_bwd_f32", LaunchConfig::for_elements(s.len(), THREADS), &args)
}
