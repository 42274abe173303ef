//! The CUDA backend: every op launches its kernel on a Gpu (a real device or the emulator).

use super::Backend;
use crate::cuda;
use crate::diffusion::{DdimStep, DdpmStep, Noise, PhiloxStream, ScheduleTables};
use crate::fast::bf16::Precision;
use crate::gpu::{Buffer, Gpu};
use anyhow::Result;

#[derive(Clone)]
pub struct CudaBackend {
    pub gpu: Gpu,
    /// bf16: convolutions, linears and attention take bf16 operands on the tensor cores
    /// (src/backend/cuda_bf16.rs), and activations are stored in bf16 (cuda_stream.rs,
    /// cuda_operands.rs); sums, statistics, gradients and the master weights stay f32.
    pub precision: Precision,
    /// bf16 copies of the weights a trainer or sampler keeps (src/backend/cuda_weights.rs).
    pub(super) kept: super::cuda_weights::KeptWeights,
    /// Tables of gradients whose norm one launch takes (`TrainOps::prepare_clip_status`).
    pub(super) sum_tables: super::train_step::SumTables,
    /// Tables of parameters whose AdamW steps one launch takes (`TrainOps::prepare_adamw_steps`).
    pub(super) adamw_tables: super::train_step::AdamwTables,
}

impl CudaBackend {
    pub fn new(gpu: Gpu) -> Self {
        Self::with_precision(gpu, Precision::F32)
    }

    pub fn with_precision(gpu: Gpu, precision: Precision) -> Self {
        let mut kept = super::cuda_weights::KeptWeights::default();
        kept.off = std::env::var_os("DDPM_NO_KEPT_WEIGHTS").is_some_and(|v| v == "1");
        CudaBackend { gpu, precision, kept, sum_tables: Default::default(), adamw_tables: Default::default() }
    }

    /// Whether the weights a trainer or sampler declares are kept as bf16 copies at `--precision
    /// bf16` (src/backend/cuda_weights.rs): on unless `DDPM_NO_KEPT_WEIGHTS=1`; off, every product
    /// rounds its weight at each use (the same bits, more passes), for tests and A/B timing.
    pub fn keeping_weights(mut self, on: bool) -> Self {
        self.kept.off = !on;
        self
    }

    /// `w`'s kept bf16 copy, downloaded; None when it has none.
    pub fn kept_weight(&self, w: &Buffer<f32>) -> Result<Option<Vec<half::bf16>>> {
        self.kept.get(w).map(|c| self.gpu.download(&*c)).transpose()
    }

    /// Elements held in kept copies (2 bytes each).
    pub fn kept_weight_elements(&self) -> usize {
        self.kept.len()
    }
}

impl Backend for CudaBackend {
    type Buf = Buffer<f32>;
    type Idx = Buffer<u32>;

    fn name(&self) -> String {
        match self.precision {
            Precision::F32 => self.gpu.name(),
            Precision::Bf16 => format!("{} (bf16 operands on the tensor cores)", self.gpu.name()),
        }
    }
    fn time_ms<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<(R, f64)> {
        let start = self.gpu.record_event()?;
        let r = f()?;
        let end = self.gpu.record_event()?;
        Ok((r, start.elapsed_ms(&end)? as f64))
    }
    fn len(buf: &Buffer<f32>) -> usize {
        buf.len()
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
    fn silu_fwd(&self, x: &Buffer<f32>, y: &mut Buffer<f32>) -> Result<()> {
        cuda::silu::silu_fwd_f32(x, y)
    }
    fn silu_bwd(&self, x: &Buffer<f32>, dy: &Buffer<f32>, dx: &mut Buffer<f32>) -> Result<()> {
        cuda::silu::silu_bwd_f32(x, dy, dx)
    }

    fn upload_u32(&self, data: &[u32]) -> Result<Buffer<u32>> {
        self.gpu.upload(data)
    }
    fn download_u32(&self, buf: &Buffer<u32>) -> Result<Vec<u32>> {
        self.gpu.download(buf)
    }
    fn sample_timesteps(&self, t: &mut Buffer<u32>, t_max: u32, stream: PhiloxStream) -> Result<()> {
        cuda::diffusion::sample_timesteps_u32(t, t_max, stream)
    }
    fn fill_normal(&self, out: &mut Buffer<f32>, stream: PhiloxStream) -> Result<()> {
        cuda::diffusion::fill_normal_f32(out, stream)
    }
    fn q_sample(
        &self,
        x0: &Buffer<f32>,
        t: &Buffer<u32>,
        tables: &ScheduleTables<Buffer<f32>>,
        noise: Noise<&Buffer<f32>>,
        xt: &mut Buffer<f32>,
    ) -> Result<()> {
        cuda::diffusion::q_sample_f32(x0, t, tables, noise, xt)
    }
    fn mse_loss(&self, pred: &Buffer<f32>, target: Noise<&Buffer<f32>>, loss: &mut Buffer<f32>) -> Result<()> {
        cuda::diffusion::mse_loss_f32(pred, target, loss)
    }
    fn mse_loss_bwd(
        &self,
        pred: &Buffer<f32>,
        target: Noise<&Buffer<f32>>,
        upstream: f32,
        grad: &mut Buffer<f32>,
    ) -> Result<()> {
        cuda::diffusion::mse_loss_bwd_f32(pred, target, upstream * 2.0 / pred.len() as f32, grad)
    }
    fn ddpm_step(
        &self,
        c: &DdpmStep,
        sample: &Buffer<f32>,
        model_out: &Buffer<f32>,
        noise: Noise<&Buffer<f32>>,
        prev: &mut Buffer<f32>,
    ) -> Result<()> {
        cuda::diffusion::ddpm_step_f32(c, sample, model_out, noise, prev)
    }
    fn ddim_step(
        &self,
        c: &DdimStep,
        sample: &Buffer<f32>,
        model_out: &Buffer<f32>,
        noise: Noise<&Buffer<f32>>,
        prev: &mut Buffer<f32>,
    ) -> Result<()> {
        cuda::diffusion::ddim_step_f32(c, sample, model_out, noise, prev)
    }
}
