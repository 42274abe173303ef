//! The fast CPU backend: the CPU execution path (`--device cpu`). The layer ops and the hot
//! elementwise ops run src/fast (GEMMs, rayon, fused loops); the diffusion-process ops, which
//! touch each element of a step once, run the reference.

use super::{Backend, CpuBackend, Optimizer};
use crate::cpu::optim::AdamWStep;
use crate::cuda::same_len;
use crate::diffusion::{DdimStep, DdpmStep, Noise, PhiloxStream, ScheduleTables};
use crate::fast;
use anyhow::Result;

#[derive(Clone, Copy, Debug, Default)]
pub struct FastCpuBackend;

impl Backend for FastCpuBackend {
    type Buf = Vec<f32>;
    type Idx = Vec<u32>;

    fn name(&self) -> String {
        format!("cpu ({})", fast::simd::SimdLevel::describe())
    }
    fn len(buf: &Vec<f32>) -> usize {
        buf.len()
    }
    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        CpuBackend.alloc(len)
    }
    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        CpuBackend.upload(data)
    }
    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        CpuBackend.download(buf)
    }
    fn fill(&self, out: &mut Vec<f32>, value: f32) -> Result<()> {
        fast::elementwise::fill(out, value);
        Ok(())
    }
    fn axpy(&self, a: f32, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        same_len("axpy", &[("x", x.len()), ("y", y.len())])?;
        fast::elementwise::axpy(a, x, y);
        Ok(())
    }
    fn row_sum_sumsq(&self, x: &Vec<f32>, rows: usize, cols: usize, sum: &mut Vec<f32>, sumsq: &mut Vec<f32>) -> Result<()> {
        CpuBackend.row_sum_sumsq(x, rows, cols, sum, sumsq)
    }
    fn silu_fwd(&self, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        same_len("silu_fwd", &[("x", x.len()), ("y", y.len())])?;
        fast::elementwise::silu_fwd(x, y);
        Ok(())
    }
    fn silu_bwd(&self, x: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) -> Result<()> {
        same_len("silu_bwd", &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())])?;
        fast::elementwise::silu_bwd(x, dy, dx);
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
    fn fill_normal(&self, out: &mut Vec<f32>, stream: PhiloxStream) -> Result<()> {
        CpuBackend.fill_normal(out, stream)
    }
    fn q_sample(&self, x0: &Vec<f32>, t: &Vec<u32>, tables: &ScheduleTables<Vec<f32>>, noise: Noise<&Vec<f32>>,
        xt: &mut Vec<f32>) -> Result<()> {
        CpuBackend.q_sample(x0, t, tables, noise, xt)
    }
    fn mse_loss(&self, pred: &Vec<f32>, target: Noise<&Vec<f32>>, loss: &mut Vec<f32>) -> Result<()> {
        CpuBackend.mse_loss(pred, target, loss)
    }
    fn mse_loss_bwd(&self, pred: &Vec<f32>, target: Noise<&Vec<f32>>, upstream: f32, grad: &mut Vec<f32>) -> Result<()> {
        CpuBackend.mse_loss_bwd(pred, target, upstream, grad)
    }
    fn ddpm_step(&self, c: &DdpmStep, sample: &Vec<f32>, model_out: &Vec<f32>, noise: Noise<&Vec<f32>>,
        prev: &mut Vec<f32>) -> Result<()> {
        CpuBackend.ddpm_step(c, sample, model_out, noise, prev)
    }
    fn ddim_step(&self, c: &DdimStep, sample: &Vec<f32>, model_out: &Vec<f32>, noise: Noise<&Vec<f32>>,
        prev: &mut Vec<f32>) -> Result<()> {
        CpuBackend.ddim_step(c, sample, model_out, noise, prev)
    }
}

impl Optimizer for FastCpuBackend {
    fn adamw_step(&self, p: &mut Vec<f32>, g: &Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>, s: &AdamWStep) -> Result<()> {
        same_len("adamw_step", &[("param", p.len()), ("grad", g.len()), ("exp_avg", m.len()), ("exp_avg_sq", v.len())])?;
        fast::optim::adamw_step(p, g, m, v, s);
        Ok(())
    }
    fn ema_update(&self, ema: &mut Vec<f32>, p: &Vec<f32>, decay: f32) -> Result<()> {
        same_len("ema_update", &[("ema", ema.len()), ("param", p.len())])?;
        fast::optim::ema_update(ema, p, decay);
        Ok(())
    }
    fn global_norm(&self, tensors: &[Vec<f32>]) -> Result<f64> {
        Ok(tensors.iter().map(|t| fast::optim::sum_squares(t) as f64).sum::<f64>().sqrt())
    }
    fn scale(&self, x: &mut Vec<f32>, s: f32) -> Result<()> {
        fast::optim::scale(x, s);
        Ok(())
    }
}
