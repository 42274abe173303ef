//! The fast CPU backends: the CPU execution path (`--device cpu`). The layer ops and the hot
//! elementwise ops run src/fast (GEMMs, rayon, fused loops); the diffusion-process ops, which
//! touch each element of a step once, run the reference. [`FastCpuBackend`] multiplies in f32;
//! [`FastCpuBf16Backend`] (`--precision bf16`) rounds every matrix product's operands to bf16
//! (src/fast/bf16.rs) and is otherwise the same backend.

use super::{Backend, CpuBackend, Optimizer};
use crate::diffusion::{DdimStep, DdpmStep, Noise, PhiloxStream, ScheduleTables};
use crate::fast;
use crate::fast::pool::PooledVec;
use crate::math::adamw::AdamWStep;
use crate::shapes::same_len;
use anyhow::Result;

#[derive(Clone, Copy, Debug, Default)]
pub struct FastCpuBackend;

/// The fast CPU path with bf16 matrix-product operands (src/fast/bf16.rs).
#[derive(Clone, Copy, Debug, Default)]
pub struct FastCpuBf16Backend;

/// Given noise as the reference backend takes it.
fn host(noise: Noise<&PooledVec>) -> Noise<&Vec<f32>> {
    match noise {
        Noise::Philox(s) => Noise::Philox(s),
        Noise::Given(v) => Noise::Given(&**v),
    }
}

/// The Backend and Optimizer impls, the same for both precisions (the Layers impls differ:
/// src/backend/cpu_layers.rs).
macro_rules! fast_cpu_backend {
    ($backend:ty, $precision:expr) => {
        impl Backend for $backend {
            type Buf = PooledVec;
            type Idx = Vec<u32>;

            fn name(&self) -> String {
                match $precision {
                    fast::bf16::Precision::F32 => format!("cpu ({}, f32)", fast::simd::SimdLevel::describe()),
                    fast::bf16::Precision::Bf16 => {
                        format!("cpu ({}, {})", fast::simd::SimdLevel::describe(), fast::bf16::path_name())
                    }
                }
            }
            fn len(buf: &PooledVec) -> usize {
                buf.len()
            }
            fn host_f32(buf: &PooledVec) -> Option<&[f32]> {
                Some(buf)
            }
            fn alloc(&self, len: usize) -> Result<PooledVec> {
                Ok(PooledVec::uninit(len))
            }
            fn upload(&self, data: &[f32]) -> Result<PooledVec> {
                Ok(PooledVec::from_slice(data))
            }
            fn download(&self, buf: &PooledVec) -> Result<Vec<f32>> {
                Ok(buf.to_vec())
            }
            fn fill(&self, out: &mut PooledVec, value: f32) -> Result<()> {
                fast::elementwise::fill(out, value);
                Ok(())
            }
            fn axpy(&self, a: f32, x: &PooledVec, y: &mut PooledVec) -> Result<()> {
                same_len("axpy", &[("x", x.len()), ("y", y.len())])?;
                fast::elementwise::axpy(a, x, y);
                Ok(())
            }
            fn silu_fwd(&self, x: &PooledVec, y: &mut PooledVec) -> Result<()> {
                same_len("silu_fwd", &[("x", x.len()), ("y", y.len())])?;
                fast::silu::silu_fwd(x, y);
                Ok(())
            }
            fn silu_bwd(&self, x: &PooledVec, dy: &PooledVec, dx: &mut PooledVec) -> Result<()> {
                same_len("silu_bwd", &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())])?;
                fast::silu::silu_bwd(x, dy, dx);
                Ok(())
            }
            fn upload_u32(&self, data: &[u32]) -> Result<Vec<u32>> {
                CpuBackend.upload_u32(data)
            }
            fn download_u32(&self, buf: &Vec<u32>) -> Result<Vec<u32>> {
                CpuBackend.download_u32(buf)
            }
            fn sample_timesteps(&self, t: &mut Vec<u32>, t_max: u32, stream: PhiloxStream) -> Result<()> {
                CpuBackend.sample_timesteps(t, t_max, stream)
            }
            fn fill_normal(&self, out: &mut PooledVec, stream: PhiloxStream) -> Result<()> {
                CpuBackend.fill_normal(out, stream)
            }
            fn q_sample(
                &self,
                x0: &PooledVec,
                t: &Vec<u32>,
                tables: &ScheduleTables<PooledVec>,
                noise: Noise<&PooledVec>,
                xt: &mut PooledVec,
            ) -> Result<()> {
                super::cpu::q_sample_host(x0, t, tables, super::cpu::host_noise(&noise, x0.len(), "q_sample")?, xt)
            }
            fn mse_loss(&self, pred: &PooledVec, target: Noise<&PooledVec>, loss: &mut PooledVec) -> Result<()> {
                CpuBackend.mse_loss(pred, host(target), loss)
            }
            fn mse_loss_bwd(
                &self,
                pred: &PooledVec,
                target: Noise<&PooledVec>,
                upstream: f32,
                grad: &mut PooledVec,
            ) -> Result<()> {
                CpuBackend.mse_loss_bwd(pred, host(target), upstream, grad)
            }
            fn ddpm_step(
                &self,
                c: &DdpmStep,
                sample: &PooledVec,
                model_out: &PooledVec,
                noise: Noise<&PooledVec>,
                prev: &mut PooledVec,
            ) -> Result<()> {
                CpuBackend.ddpm_step(c, sample, model_out, host(noise), prev)
            }
            fn ddim_step(
                &self,
                c: &DdimStep,
                sample: &PooledVec,
                model_out: &PooledVec,
                noise: Noise<&PooledVec>,
                prev: &mut PooledVec,
            ) -> Result<()> {
                CpuBackend.ddim_step(c, sample, model_out, host(noise), prev)
            }
        }

        impl Optimizer for $backend {
            fn adamw_step(
                &self,
                p: &mut PooledVec,
                g: &PooledVec,
                m: &mut PooledVec,
                v: &mut PooledVec,
                s: &AdamWStep,
            ) -> Result<()> {
                same_len(
                    "adamw_step",
                    &[("param", p.len()), ("grad", g.len()), ("exp_avg", m.len()), ("exp_avg_sq", v.len())],
                )?;
                fast::optim::adamw_step(p, g, m, v, s);
                Ok(())
            }
            fn ema_update(&self, ema: &mut PooledVec, p: &PooledVec, decay: f32) -> Result<()> {
                same_len("ema_update", &[("ema", ema.len()), ("param", p.len())])?;
                fast::optim::ema_update(ema, p, decay);
                Ok(())
            }
            fn global_norm(&self, tensors: &[PooledVec]) -> Result<f64> {
                Ok(tensors.iter().map(|t| fast::optim::sum_squares(t) as f64).sum::<f64>().sqrt())
            }
            fn scale(&self, x: &mut PooledVec, s: f32) -> Result<()> {
                fast::optim::scale(x, s);
                Ok(())
            }
        }
    };
}

fast_cpu_backend!(FastCpuBackend, fast::bf16::Precision::F32);
fast_cpu_backend!(FastCpuBf16Backend, fast::bf16::Precision::Bf16);
