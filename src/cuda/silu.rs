//! Launchers of kernels/silu.cu.

use super::count_u32;
use crate::gpu::{Buffer, KernelArgs, LaunchConfig};
use crate::shapes::same_len;
use anyhow::Result;

const THREADS: u32 = 256;

pub fn silu_fwd_f32(x: &Buffer<f32>, y: &mut Buffer<f32>) -> Result<()> {
    same_len("silu_fwd", &[("x", x.len()), ("y", y.len())])?;
    let n = count_u32("silu_fwd", x.len())?;
    let args = KernelArgs::new().buf(x).buf(y).u32(n);
    x.gpu().launch("silu_fwd_f32", LaunchConfig::for_elements(x.len(), THREADS), &args)
}

pub fn silu_bwd_f32(x: &Buffer<f32>, dy: &Buffer<f32>, dx: &mut Buffer<f32>) -> Result<()> {
    same_len("silu_bwd", &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())])?;
    let n = count_u32("silu_bwd", x.len())?;
    let args = KernelArgs::new().buf(x).buf(dy).buf(dx).u32(n);
    x.gpu().launch("silu_bwd_f32", LaunchConfig::for_elements(x.len(), THREADS), &args)
}
