//! Launchers of kernels/elementwise.cu. Lengths of the layer ops are checked by the backend
//! (src/backend/checks.rs); these check only what the kernels' 32-bit indexing needs, and skip
//! empty launches.

use super::count_u32;
use crate::gpu::{Buffer, DType, KernelArgs, LaunchConfig};
use crate::shapes::{ImageShape, same_len};
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

pub fn add_scaled_f32(a: &Buffer<f32>, b: &Buffer<f32>, divisor: f32, y: &mut Buffer<f32>) -> Result<()> {
    let n = count_u32("add_scaled", a.len())?;
    if n == 0 {
        return Ok(());
    }
    let args = KernelArgs::new().buf(a).buf(b).buf(y).u32(n).f32(divisor);
    a.gpu().launch("add_scaled_f32", LaunchConfig::for_elements(a.len(), THREADS), &args)
}

pub fn div_scalar_f32(x: &Buffer<f32>, divisor: f32, y: &mut Buffer<f32>) -> Result<()> {
    let n = count_u32("div_scalar", x.len())?;
    if n == 0 {
        return Ok(());
    }
    let args = KernelArgs::new().buf(x).buf(y).u32(n).f32(divisor);
    x.gpu().launch("div_scalar_f32", LaunchConfig::for_elements(x.len(), THREADS), &args)
}

/// y = x rounded to bf16 (nearest even), on the device: the tensor-core ops' operands.
pub fn round_bf16_f32(x: &Buffer<f32>, y: &mut Buffer<half::bf16>) -> Result<()> {
    same_len("round_bf16", &[("x", x.len()), ("y", y.len())])?;
    let n = count_u32("round_bf16", x.len())?;
    if n == 0 {
        return Ok(());
    }
    let args = KernelArgs::new().buf(x).buf(y).u32(n);
    x.gpu().launch("round_bf16_f32", LaunchConfig::for_elements(x.len(), THREADS), &args)
}

pub fn add_channel_bias_f32(s: &ImageShape, x: &Buffer<f32>, v: &Buffer<f32>, y: &mut Buffer<f32>) -> Result<()> {
    let n = count_u32("add_channel_bias", s.len())?;
    let args = KernelArgs::new().buf(x).buf(v).buf(y).u32(n).u32(s.c as u32).u32((s.h * s.w * s.c) as u32);
    x.gpu().launch("add_channel_bias_f32", LaunchConfig::for_elements(s.len(), THREADS), &args)
}

/// One block per (image, 32 channels), grid-strided past the grid limit. The block size is fixed:
/// it sets the summation order, so the bits never depend on the device.
pub fn channel_sum_f32(s: &ImageShape, dy: &Buffer<f32>, dv: &mut Buffer<f32>) -> Result<()> {
    count_u32("channel_sum", s.len())?;
    let items = (s.batch * s.c.div_ceil(32)).min(65535) as u32;
    let args = KernelArgs::new().buf(dy).buf(dv).u32(s.batch as u32).u32((s.h * s.w) as u32).u32(s.c as u32);
    dy.gpu().launch("channel_sum_f32", LaunchConfig::linear(items, THREADS), &args)
}

pub fn concat_channels_f32(
    rows: usize,
    c1: usize,
    c2: usize,
    a: &Buffer<f32>,
    b: &Buffer<f32>,
    y: &mut Buffer<f32>,
) -> Result<()> {
    concat_channels("concat_channels_f32", rows, c1, c2, a, b, y)
}

/// `kernel` (concat_channels_f32 or _bf16) over `rows` rows; nothing when empty.
pub(super) fn concat_channels<T: DType>(
    kernel: &str,
    rows: usize,
    c1: usize,
    c2: usize,
    a: &Buffer<T>,
    b: &Buffer<T>,
    y: &mut Buffer<T>,
) -> Result<()> {
    let n = count_u32("concat_channels", rows * (c1 + c2))?;
    if n == 0 {
        return Ok(());
    }
    let args = KernelArgs::new().buf(a).buf(b).buf(y).u32(n).u32(c1 as u32).u32(c2 as u32);
    y.gpu().launch(kernel, LaunchConfig::for_elements(y.len(), THREADS), &args)
}

pub fn split_channels_f32(
    rows: usize,
    c1: usize,
    c2: usize,
    dy: &Buffer<f32>,
    da: &mut Buffer<f32>,
    db: &mut Buffer<f32>,
) -> Result<()> {
    let n = count_u32("split_channels", rows * (c1 + c2))?;
    if n == 0 {
        return Ok(());
    }
    let args = KernelArgs::new().buf(dy).buf(da).buf(db).u32(n).u32(c1 as u32).u32(c2 as u32);
    dy.gpu().launch("split_channels_f32", LaunchConfig::for_elements(dy.len(), THREADS), &args)
}
