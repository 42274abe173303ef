//! Launchers of kernels/resample.cu. Lengths are checked by the backend (src/backend/checks.rs);
//! these check only what the kernels' 32-bit indexing needs.

use super::count_u32;
use crate::gpu::{Buffer, KernelArgs, LaunchConfig};
use crate::shapes::ImageShape;
use anyhow::Result;

const THREADS: u32 = 256;

/// `s` is the input's shape; one thread per input element (it writes or reads a 2x2 block).
pub fn upsample_nearest2x_fwd_f32(s: &ImageShape, x: &Buffer<f32>, y: &mut Buffer<f32>) -> Result<()> {
    count_u32("upsample_nearest2x_fwd", 4 * s.len())?;
    let args = KernelArgs::new().buf(x).buf(y).u32(s.len() as u32).u32(s.w as u32).u32(s.c as u32);
    x.gpu().launch("upsample_nearest2x_fwd_f32", LaunchConfig::for_elements(s.len(), THREADS), &args)
}

pub fn upsample_nearest2x_bwd_f32(s: &ImageShape, dy: &Buffer<f32>, dx: &mut Buffer<f32>) -> Result<()> {
    count_u32("upsample_nearest2x_bwd", 4 * s.len())?;
    let args = KernelArgs::new().buf(dy).buf(dx).u32(s.len() as u32).u32(s.w as u32).u32(s.c as u32);
    dy.gpu().launch("upsample_nearest2x_bwd_f32", LaunchConfig::for_elements(s.len(), THREADS), &args)
}
