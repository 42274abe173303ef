//! Launchers of kernels/reduce.cu.

use super::count_u32;
use crate::gpu::{Buffer, KernelArgs, LaunchConfig};
use crate::shapes::same_len;
use anyhow::{Result, bail};

/// Row sums and sums of squares of a row-major [rows, cols] matrix.
pub fn row_sum_sumsq_f32(
    x: &Buffer<f32>,
    rows: usize,
    cols: usize,
    sum: &mut Buffer<f32>,
    sumsq: &mut Buffer<f32>,
) -> Result<()> {
    if rows * cols != x.len() {
        bail!("row_sum_sumsq: {rows} x {cols} does not match an input of {} elements", x.len());
    }
    same_len("row_sum_sumsq", &[("rows", rows), ("sum", sum.len()), ("sumsq", sumsq.len())])?;
    if rows == 0 {
        return Ok(());
    }
    let rows_u32 = count_u32("row_sum_sumsq", rows)?;
    let cols = count_u32("row_sum_sumsq", cols)?;
    // One block per row; 256 threads is the kernel's __launch_bounds__.
    let threads = if cols >= 256 { 256 } else { cols.next_multiple_of(32).max(32) };
    let args = KernelArgs::new().buf(x).buf(sum).buf(sumsq).u32(cols);
    x.gpu().launch("row_sum_sumsq_f32", LaunchConfig::linear(rows_u32, threads), &args)
}
