//! Launchers of kernels/stream_bf16.cu (and of concat_channels_bf16 in elementwise.cu): the
//! residual stream's ops in bf16 (issue #17). Each checks every length against the others and
//! the kernels' 32-bit indexing, and skips empty launches.

use super::count_u32;
use crate::gpu::{Buffer, KernelArgs, LaunchConfig};
use crate::shapes::lengths;
use anyhow::Result;
use half::bf16;

const THREADS: u32 = 256;

/// y = x widened to f32 (exact).
pub fn widen_bf16(x: &Buffer<bf16>, y: &mut Buffer<f32>) -> Result<()> {
    lengths("widen_bf16", &[("y", y.len(), x.len())])?;
    let n = count_u32("widen_bf16", x.len())?;
    if n == 0 {
        return Ok(());
    }
    let args = KernelArgs::new().buf(x).buf(y).u32(n);
    x.gpu().launch("widen_bf16", LaunchConfig::for_elements(x.len(), THREADS), &args)
}

/// y = (x + h) / divisor in f32, rounded to bf16 once.
pub fn add_scaled_to_bf16_bf16(x: &Buffer<bf16>, h: &Buffer<f32>, divisor: f32, y: &mut Buffer<bf16>) -> Result<()> {
    lengths("add_scaled", &[("h", h.len(), x.len()), ("y", y.len(), x.len())])?;
    let n = count_u32("add_scaled", x.len())?;
    if n == 0 {
        return Ok(());
    }
    let args = KernelArgs::new().buf(x).buf(h).buf(y).u32(n).f32(divisor);
    x.gpu().launch("add_scaled_to_bf16_bf16", LaunchConfig::for_elements(x.len(), THREADS), &args)
}

/// y[r, :] = [a[r, :c1], b[r, :c2]] for `rows` rows.
pub fn concat_channels_bf16(
    rows: usize,
    c1: usize,
    c2: usize,
    a: &Buffer<bf16>,
    b: &Buffer<bf16>,
    y: &mut Buffer<bf16>,
) -> Result<()> {
    let want = [("a", a.len(), rows * c1), ("b", b.len(), rows * c2), ("y", y.len(), rows * (c1 + c2))];
    lengths("concat_channels", &want)?;
    super::elementwise::concat_channels("concat_channels_bf16", rows, c1, c2, a, b, y)
}
