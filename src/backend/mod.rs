//! The backend seam: model code is written once against [`Backend`], whose methods are ops
//! (forward and backward). [`CpuBackend`] runs the pure-Rust reference; [`CudaBackend`] launches
//! the kernels on a [`crate::gpu::Gpu`], real or emulated.

mod cpu;
mod cuda;

pub use cpu::CpuBackend;
pub use cuda::CudaBackend;

use anyhow::Result;

pub trait Backend {
    /// A flat f32 buffer on this backend.
    type Buf;

    fn name(&self) -> String;
    /// A buffer of `len` elements with unspecified contents.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    fn upload(&self, data: &[f32]) -> Result<Self::Buf>;
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;

    /// out[i] = value
    fn fill(&self, out: &mut Self::Buf, value: f32) -> Result<()>;
    /// y = a * x + y
    fn axpy(&self, a: f32, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// Per row of a row-major [rows, cols] matrix: sum and sum of squares.
    fn row_sum_sumsq(&self, x: &Self::Buf, rows: usize, cols: usize, sum: &mut Self::Buf, sumsq: &mut Self::Buf)
    -> Result<()>;
    /// y = x * sigmoid(x)
    fn silu_fwd(&self, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// dx = dy * d silu(x) / dx
    fn silu_bwd(&self, x: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
}
