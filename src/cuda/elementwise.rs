//! Launchers of kernels/elementwise.cu.

use super::count_u32;
use crate::gpu::{Buffer, KernelArgs, LaunchConfig};
use crate::shapes::same_len;
use anyhow::Result;

const THREADS: u32 = 256;

pub fn fill_f32(out: &mut Buffer<f32>, value: f32) -> Result<()> {
    let n = count_u32("fill", out.len())?;
    let args = KernelArgs::new().buf(out).f32(value).u32(n);
    out.gpu().launch("fill_f32", LaunchConfig::for_elements(out.len(), THREADS), &args)
}

/// y = a * x + y
pub fn axpy_f32(a: f32, x: &Buffer<f32>, y: &mut Buffer<f32>) -> Result<()> {
    same_len("axpy", &[("x", x.len()), ("y", y.len())])?;
    let n = count_u32("axpy", y.len())?;
    let args = KernelArgs::new().buf(y).buf(x).f32(a).u32(n);
    y.gpu().launch("axpy_f32", LaunchConfig::for_elements(y.len(), THREADS), &args)
}
