//! The CPU backend: the reference implementations on host vectors.

use super::Backend;
use crate::cpu;
use crate::diffusion::{DdimStep, DdpmStep, Noise, PhiloxStream, ScheduleTables, checks};
use crate::shapes::same_len;
use anyhow::{Result, bail};

/// Given noise as a host slice, its length checked against the output's.
pub(super) fn host_noise<'a, V: AsRef<[f32]>>(noise: &Noise<&'a V>, n: usize, op: &str) -> Result<Noise<&'a [f32]>> {
    Ok(match noise {
        Noise::Philox(s) => Noise::Philox(*s),
        Noise::Given(v) => {
            let v = (*v).as_ref();
            checks::noise(op, v.len(), n)?;
            Noise::Given(v)
        }
    })
}

/// The reference q_sample on host slices, after the checks both CPU backends share.
pub(super) fn q_sample_host(
    x0: &[f32],
    t: &[u32],
    tables: &ScheduleTables<impl AsRef<[f32]>>,
    noise: Noise<&[f32]>,
    xt: &mut [f32],
) -> Result<()> {
    checks::q_sample(x0.len(), xt.len(), t.len())?;
    if let Some(bad) = t.iter().find(|&&v| v as usize >= tables.len) {
        bail!("q_sample: timestep {bad} is outside the schedule (num_train_timesteps = {})", tables.len);
    }
    cpu::diffusion::q_sample(x0, t, tables.sqrt_abar.as_ref(), tables.sqrt_one_minus_abar.as_ref(), noise, xt);
    Ok(())
}

/// The reference SiLU after its length check, in f32 or f64 (both reference backends).
pub(super) fn silu_fwd_host<T: cpu::Real>(x: &[T], y: &mut [T]) -> Result<()> {
    same_len("silu_fwd", &[("x", x.len()), ("y", y.len())])?;
    cpu::silu::silu_fwd(x, y);
    Ok(())
}

pub(super) fn silu_bwd_host<T: cpu::Real>(x: &[T], dy: &[T], dx: &mut [T]) -> Result<()> {
    same_len("silu_bwd", &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())])?;
    cpu::silu::silu_bwd(x, dy, dx);
    Ok(())
}

#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Idx = Vec<u32>;

    fn name(&self) -> String {
        "cpu".into()
    }
    fn len(buf: &Vec<f32>) -> usize {
        buf.len()
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
    fn silu_fwd(&self, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        silu_fwd_host(x, y)
    }
    fn silu_bwd(&self, x: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) -> Result<()> {
        silu_bwd_host(x, dy, dx)
    }

    fn upload_u32(&self, data: &[u32]) -> Result<Vec<u32>> {
        Ok(data.to_vec())
    }
    fn download_u32(&self, buf: &Vec<u32>) -> Result<Vec<u32>> {
        Ok(buf.clone())
    }
    fn sample_timesteps(&self, t: &mut Vec<u32>, t_max: u32, stream: PhiloxStream) -> Result<()> {
        cpu::diffusion::sample_timesteps(t, t_max, stream);
        Ok(())
    }
    fn fill_normal(&self, out: &mut Vec<f32>, stream: PhiloxStream) -> Result<()> {
        cpu::diffusion::fill_normal(out, stream);
        Ok(())
    }
    fn q_sample(
        &self,
        x0: &Vec<f32>,
        t: &Vec<u32>,
        tables: &ScheduleTables<Vec<f32>>,
        noise: Noise<&Vec<f32>>,
        xt: &mut Vec<f32>,
    ) -> Result<()> {
        q_sample_host(x0, t, tables, host_noise(&noise, x0.len(), "q_sample")?, xt)
    }
    fn mse_loss(&self, pred: &Vec<f32>, target: Noise<&Vec<f32>>, loss: &mut Vec<f32>) -> Result<()> {
        checks::mse_loss(pred.len(), loss.len())?;
        loss[0] = cpu::diffusion::mse_loss(pred, host_noise(&target, pred.len(), "mse_loss")?);
        Ok(())
    }
    fn mse_loss_bwd(
        &self,
        pred: &Vec<f32>,
        target: Noise<&Vec<f32>>,
        upstream: f32,
        grad: &mut Vec<f32>,
    ) -> Result<()> {
        checks::mse_loss_bwd(pred.len(), grad.len())?;
        let scale = upstream * 2.0 / pred.len() as f32;
        cpu::diffusion::mse_loss_bwd(pred, host_noise(&target, pred.len(), "mse_loss_bwd")?, scale, grad);
        Ok(())
    }
    fn ddpm_step(
        &self,
        c: &DdpmStep,
        sample: &Vec<f32>,
        model_out: &Vec<f32>,
        noise: Noise<&Vec<f32>>,
        prev: &mut Vec<f32>,
    ) -> Result<()> {
        checks::step("ddpm_step", sample.len(), model_out.len(), prev.len())?;
        cpu::diffusion::ddpm_step(c, sample, model_out, host_noise(&noise, sample.len(), "ddpm_step")?, prev);
        Ok(())
    }
    fn ddim_step(
        &self,
        c: &DdimStep,
        sample: &Vec<f32>,
        model_out: &Vec<f32>,
        noise: Noise<&Vec<f32>>,
        prev: &mut Vec<f32>,
    ) -> Result<()> {
        checks::step("ddim_step", sample.len(), model_out.len(), prev.len())?;
        cpu::diffusion::ddim_step(c, sample, model_out, host_noise(&noise, sample.len(), "ddim_step")?, prev);
        Ok(())
    }
}
