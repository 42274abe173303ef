//! The CPU backend: the reference implementations on host vectors.

use super::Backend;
use crate::cpu;
use crate::cuda::same_len;
use anyhow::{Result, bail};

#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    type Buf = Vec<f32>;

    fn name(&self) -> String {
        "cpu".into()
    }
    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![f32::NAN; len])
    }
    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }
    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(buf.clone())
    }
    fn fill(&self, out: &mut Vec<f32>, value: f32) -> Result<()> {
        cpu::elementwise::fill(out, value);
        Ok(())
    }
    fn axpy(&self, a: f32, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        same_len("axpy", &[("x", x.len()), ("y", y.len())])?;
        cpu::elementwise::axpy(a, x, y);
        Ok(())
    }
    fn row_sum_sumsq(&self, x: &Vec<f32>, rows: usize, cols: usize, sum: &mut Vec<f32>, sumsq: &mut Vec<f32>) -> Result<()> {
        if rows * cols != x.len() {
            bail!("row_sum_sumsq: {rows} x {cols} does not match an input of {} elements", x.len());
        }
        same_len("row_sum_sumsq", &[("rows", rows), ("sum", sum.len()), ("sumsq", sumsq.len())])?;
        if rows > 0 && cols > 0 {
            cpu::reduce::row_sum_sumsq(x, cols, sum, sumsq);
        } else {
            sum.fill(0.0);
            sumsq.fill(0.0);
        }
        Ok(())
    }
    fn silu_fwd(&self, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        same_len("silu_fwd", &[("x", x.len()), ("y", y.len())])?;
        cpu::silu::silu_fwd(x, y);
        Ok(())
    }
    fn silu_bwd(&self, x: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) -> Result<()> {
        same_len("silu_bwd", &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())])?;
        cpu::silu::silu_bwd(x, dy, dx);
        Ok(())
    }
}
