//! Optimizer ops: AdamW, the EMA of the weights, and the pieces of global-norm clipping.

use super::{Backend, CpuBackend, CudaBackend};
use crate::dist::Comm;
use crate::dist::grad_sync::{DEFAULT_BUCKET_BYTES, GradSync};
use crate::gpu::Buffer;
use crate::math::adamw::AdamWStep;
use crate::{cpu, cuda};
use anyhow::Result;
use std::sync::Arc;

pub trait Optimizer: Backend {
    /// One AdamW step on a parameter from its gradient, updating the moments in place.
    fn adamw_step(
        &self,
        p: &mut Self::Buf,
        g: &Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        s: &AdamWStep,
    ) -> Result<()>;
    /// ema = decay * ema + (1 - decay) * p
    fn ema_update(&self, ema: &mut Self::Buf, p: &Self::Buf, decay: f32) -> Result<()>;
    /// The global L2 norm of a list of tensors: a sum of squares per tensor, added on the host in
    /// f64 in a fixed order (deterministic; one device-to-host copy for the whole list).
    fn global_norm(&self, tensors: &[Self::Buf]) -> Result<f64>;
    /// x *= s
    fn scale(&self, x: &mut Self::Buf, s: f32) -> Result<()>;
    /// What averages the gradients over the ranks of a data-parallel run: buckets through the
    /// host (src/dist/grad_sync.rs), or on the device where the backend has a transport there.
    fn grad_sync(&self, comm: Arc<dyn Comm>, params: usize) -> Result<GradSync<Self>>
    where
        Self: Sized,
    {
        GradSync::new(comm, params, DEFAULT_BUCKET_BYTES)
    }
}

impl Optimizer for CpuBackend {
    fn adamw_step(
        &self,
        p: &mut Vec<f32>,
        g: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        s: &AdamWStep,
    ) -> Result<()> {
        crate::shapes::same_len(
            "adamw_step",
            &[("param", p.len()), ("grad", g.len()), ("exp_avg", m.len()), ("exp_avg_sq", v.len())],
        )?;
        cpu::optim::adamw_step(p, g, m, v, s);
        Ok(())
    }
    fn ema_update(&self, ema: &mut Vec<f32>, p: &Vec<f32>, decay: f32) -> Result<()> {
        crate::shapes::same_len("ema_update", &[("ema", ema.len()), ("param", p.len())])?;
        cpu::optim::ema_update(ema, p, decay);
        Ok(())
    }
    fn global_norm(&self, tensors: &[Vec<f32>]) -> Result<f64> {
        Ok(tensors.iter().map(|t| cpu::optim::sum_squares(t) as f64).sum::<f64>().sqrt())
    }
    fn scale(&self, x: &mut Vec<f32>, s: f32) -> Result<()> {
        cpu::optim::scale(x, s);
        Ok(())
    }
}

impl Optimizer for CudaBackend {
    /// NCCL on a CUDA device; the host transport on the emulator.
    fn grad_sync(&self, comm: Arc<dyn Comm>, params: usize) -> Result<GradSync<Self>> {
        if self.gpu.is_emulator() {
            return GradSync::new(comm, params, DEFAULT_BUCKET_BYTES);
        }
        let nccl = Box::new(crate::dist::nccl::NcclTransport::open(self, comm.as_ref())?);
        Ok(GradSync::with_transport(comm, nccl, params, crate::dist::nccl::NCCL_BUCKET_BYTES))
    }

    fn adamw_step(
        &self,
        p: &mut Buffer<f32>,
        g: &Buffer<f32>,
        m: &mut Buffer<f32>,
        v: &mut Buffer<f32>,
        s: &AdamWStep,
    ) -> Result<()> {
        // A kept bf16 copy (src/backend/cuda_weights.rs) is rewritten in the same pass.
        let copy = self.kept.get(p);
        cuda::optim::adamw_step_f32(p, g, m, v, copy.as_deref(), s)
    }
    fn ema_update(&self, ema: &mut Buffer<f32>, p: &Buffer<f32>, decay: f32) -> Result<()> {
        self.kept.refuse_write("ema_update", ema)?;
        cuda::optim::ema_update_f32(ema, p, decay)
    }
    fn global_norm(&self, tensors: &[Buffer<f32>]) -> Result<f64> {
        // Every tensor's partial sums side by side (about 9,000 floats for cifar10's 35.7M
        // parameters), added on the host in f64 in the order clip_status_f32 adds them on the
        // device (a graphed step), so both paths clip by the same bits.
        let total: usize = tensors.iter().map(|t| cuda::optim::sum_squares_parts(t.len())).sum();
        let mut partials = self.gpu.alloc::<f32>(total.max(1))?;
        let mut first = 0;
        for t in tensors {
            cuda::optim::sum_squares_f32(t, &mut partials, first)?;
            first += cuda::optim::sum_squares_parts(t.len());
        }
        let host = self.gpu.download(&partials)?;
        Ok(crate::train::row::norm_of_partials(&host[..total]))
    }
    fn scale(&self, x: &mut Buffer<f32>, s: f32) -> Result<()> {
        cuda::optim::scale_f32(x, s)
    }
}
