//! The backend seam: model code is written once against [`Backend`], whose methods are ops
//! (forward and backward). [`CpuBackend`] runs the pure-Rust reference (the oracle of every test);
//! [`FastCpuBackend`] the fast CPU path (src/fast), [`FastCpuBf16Backend`] the same with bf16
//! matrix-product operands; [`CudaBackend`] launches the kernels on a
//! [`crate::gpu::Gpu`], real or emulated.

pub mod checks;
mod cpu;
mod cpu_f64;
mod cpu_fast;
mod cpu_layers;
mod cuda;
mod cuda_bf16;
mod cuda_layers;
mod cuda_operands;
mod cuda_stream;
mod cuda_weights;
mod layers;
mod layers_separate;
mod optim;
mod sampler;
mod stream;
mod train_step;

pub use cpu::CpuBackend;
pub use cpu_f64::CpuF64Backend;
pub use cpu_fast::{FastCpuBackend, FastCpuBf16Backend};
pub use cuda::CudaBackend;
pub use cuda_bf16::Operand as CudaOperand;
pub use layers::{Consumer, Layers, ProductInput};
pub use layers_separate::{conv2d_bwd_separately, conv2d_fwd_then_adds, linear_bwd_separately};
pub use optim::Optimizer;
pub use sampler::SamplerOps;
pub use stream::Stream;
pub use train_step::TrainOps;

use crate::diffusion::{DdimStep, DdpmStep, Noise, NoiseSchedule, PhiloxStream, ScheduleTables};
use anyhow::Result;

pub trait Backend {
    /// A flat f32 buffer on this backend.
    type Buf;
    /// A flat u32 buffer (timesteps).
    type Idx;

    fn name(&self) -> String;
    /// Runs `f` and returns its result with the milliseconds it took on this backend: device
    /// events around it on a GPU (so the work it queued is counted, not the host's view of it),
    /// the host clock elsewhere. `ddpm bench` times with it.
    fn time_ms<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<(R, f64)> {
        let start = std::time::Instant::now();
        let r = f()?;
        Ok((r, start.elapsed().as_secs_f64() * 1e3))
    }
    /// Elements in a buffer.
    fn len(buf: &Self::Buf) -> usize;
    /// The buffer as host f32s where the fast CPU ops read it so (None elsewhere): what the
    /// sampler freezes for src/fast/prepared.rs.
    fn host_f32(_buf: &Self::Buf) -> Option<&[f32]> {
        None
    }
    /// A buffer of `len` elements with unspecified contents.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    fn upload(&self, data: &[f32]) -> Result<Self::Buf>;
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;

    /// out[i] = value
    fn fill(&self, out: &mut Self::Buf, value: f32) -> Result<()>;
    /// y = a * x + y
    fn axpy(&self, a: f32, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// y = x * sigmoid(x)
    fn silu_fwd(&self, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// dx = dy * d silu(x) / dx
    fn silu_bwd(&self, x: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;

    fn upload_u32(&self, data: &[u32]) -> Result<Self::Idx>;
    fn download_u32(&self, buf: &Self::Idx) -> Result<Vec<u32>>;

    // ---- the diffusion process (kernels/diffusion.cu, src/cpu/diffusion.rs) ----

    /// The schedule's sqrt(abar) tables, resident on this backend.
    fn schedule_tables(&self, s: &NoiseSchedule) -> Result<ScheduleTables<Self::Buf>> {
        Ok(ScheduleTables {
            sqrt_abar: self.upload(&s.sqrt_alphas_cumprod())?,
            sqrt_one_minus_abar: self.upload(&s.sqrt_one_minus_alphas_cumprod())?,
            len: s.len(),
        })
    }
    /// t[b] uniform in [0, t_max), one per image.
    fn sample_timesteps(&self, t: &mut Self::Idx, t_max: u32, stream: PhiloxStream) -> Result<()>;
    /// Standard normals from a Philox stream.
    fn fill_normal(&self, out: &mut Self::Buf, stream: PhiloxStream) -> Result<()>;
    /// x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t per image (x0.len() / t.len() elements each).
    fn q_sample(
        &self,
        x0: &Self::Buf,
        t: &Self::Idx,
        tables: &ScheduleTables<Self::Buf>,
        noise: Noise<&Self::Buf>,
        xt: &mut Self::Buf,
    ) -> Result<()>;
    /// loss[0] = mean((eps - pred)^2), deterministic.
    fn mse_loss(&self, pred: &Self::Buf, target: Noise<&Self::Buf>, loss: &mut Self::Buf) -> Result<()>;
    /// grad = upstream * 2 / n * (pred - eps).
    fn mse_loss_bwd(
        &self,
        pred: &Self::Buf,
        target: Noise<&Self::Buf>,
        upstream: f32,
        grad: &mut Self::Buf,
    ) -> Result<()>;
    /// One DDPM step; `noise` is read only when the step adds noise (t > 0).
    fn ddpm_step(
        &self,
        c: &DdpmStep,
        sample: &Self::Buf,
        model_out: &Self::Buf,
        noise: Noise<&Self::Buf>,
        prev: &mut Self::Buf,
    ) -> Result<()>;
    /// One DDIM step; `noise` is read only when eta > 0.
    fn ddim_step(
        &self,
        c: &DdimStep,
        sample: &Self::Buf,
        model_out: &Self::Buf,
        noise: Noise<&Self::Buf>,
        prev: &mut Self::Buf,
    ) -> Result<()>;
}
