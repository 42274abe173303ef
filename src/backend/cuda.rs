//! The CUDA backend: every op launches its kernel on a Gpu (a real device or the emulator).

use super::Backend;
use crate::cuda;
use crate::gpu::{Buffer, Gpu};
use anyhow::Result;

#[derive(Clone)]
pub struct CudaBackend {
    pub gpu: Gpu,
}

impl CudaBackend {
    pub fn new(gpu: Gpu) -> Self {
        CudaBackend { gpu }
    }
}

impl Backend for CudaBackend {
    type Buf = Buffer<f32>;

    fn name(&self) -> String {
        self.gpu.name()
    }
    fn alloc(&self, len: usize) -> Result<Buffer<f32>> {
        self.gpu.alloc(len)
    }
    fn upload(&self, data: &[f32]) -> Result<Buffer<f32>> {
        self.gpu.upload(data)
    }
    fn download(&self, buf: &Buffer<f32>) -> Result<Vec<f32>> {
        self.gpu.download(buf)
    }
    fn fill(&self, out: &mut Buffer<f32>, value: f32) -> Result<()> {
        cuda::elementwise::fill_f32(out, value)
    }
    fn axpy(&self, a: f32, x: &Buffer<f32>, y: &mut Buffer<f32>) -> Result<()> {
        cuda::elementwise::axpy_f32(a, x, y)
    }
    fn row_sum_sumsq(&self, x: &Buffer<f32>, rows: usize, cols: usize, sum: &mut Buffer<f32>, sumsq: &mut Buffer<f32>) -> Result<()> {
        cuda::reduce::row_sum_sumsq_f32(x, rows, cols, sum, sumsq)
    }
    fn silu_fwd(&self, x: &Buffer<f32>, y: &mut Buffer<f32>) -> Result<()> {
        cuda::silu::silu_fwd_f32(x, y)
    }
    fn silu_bwd(&self, x: &Buffer<f32>, dy: &Buffer<f32>, dx: &mut Buffer<f32>) -> Result<()> {
        cuda::silu::silu_bwd_f32(x, dy, dx)
    }
}
