//! An f64 CPU backend for whole-model gradient checks: the same reference code as the CPU
//! backend, instantiated in f64, so finite differences through the whole UNet are accurate. It
//! implements the model's ops; the diffusion-process ops (noising, loss, sampler steps) are f32
//! by definition (they reproduce diffusers bit for bit) and are refused here.

use super::Backend;
use crate::diffusion::{DdimStep, DdpmStep, Noise, PhiloxStream, ScheduleTables};
use crate::shapes::same_len;
use anyhow::{Result, bail};

#[derive(Clone, Copy, Debug, Default)]
pub struct CpuF64Backend;

type V = Vec<f64>;

fn refused<T>(op: &str) -> Result<T> {
    bail!("{op} is not available on the f64 gradient-check backend")
}

impl CpuF64Backend {
    /// The exact contents (download rounds to f32).
    pub fn download_f64(&self, buf: &V) -> Vec<f64> {
        buf.clone()
    }
}

impl Backend for CpuF64Backend {
    type Buf = V;
    type Idx = Vec<u32>;

    fn name(&self) -> String {
        "cpu-f64".into()
    }
    fn len(buf: &V) -> usize {
        buf.len()
    }
    fn alloc(&self, len: usize) -> Result<V> {
        Ok(vec![f64::NAN; len])
    }
    fn upload(&self, data: &[f32]) -> Result<V> {
        Ok(data.iter().map(|&v| v as f64).collect())
    }
    fn download(&self, buf: &V) -> Result<Vec<f32>> {
        Ok(buf.iter().map(|&v| v as f32).collect())
    }
    fn fill(&self, out: &mut V, value: f32) -> Result<()> {
        out.fill(value as f64);
        Ok(())
    }
    fn axpy(&self, a: f32, x: &V, y: &mut V) -> Result<()> {
        same_len("axpy", &[("x", x.len()), ("y", y.len())])?;
        y.iter_mut().zip(x).for_each(|(y, &x)| *y += a as f64 * x);
        Ok(())
    }
    fn silu_fwd(&self, x: &V, y: &mut V) -> Result<()> {
        super::cpu::silu_fwd_host(x, y)
    }
    fn silu_bwd(&self, x: &V, dy: &V, dx: &mut V) -> Result<()> {
        super::cpu::silu_bwd_host(x, dy, dx)
    }
    fn upload_u32(&self, data: &[u32]) -> Result<Vec<u32>> {
        Ok(data.to_vec())
    }
    fn download_u32(&self, buf: &Vec<u32>) -> Result<Vec<u32>> {
        Ok(buf.clone())
    }
    fn sample_timesteps(&self, _: &mut Vec<u32>, _: u32, _: PhiloxStream) -> Result<()> {
        refused("sample_timesteps")
    }
    fn fill_normal(&self, _: &mut V, _: PhiloxStream) -> Result<()> {
        refused("fill_normal")
    }
    fn q_sample(&self, _: &V, _: &Vec<u32>, _: &ScheduleTables<V>, _: Noise<&V>, _: &mut V) -> Result<()> {
        refused("q_sample")
    }
    fn mse_loss(&self, _: &V, _: Noise<&V>, _: &mut V) -> Result<()> {
        refused("mse_loss")
    }
    fn mse_loss_bwd(&self, _: &V, _: Noise<&V>, _: f32, _: &mut V) -> Result<()> {
        refused("mse_loss_bwd")
    }
    fn ddpm_step(&self, _: &DdpmStep, _: &V, _: &V, _: Noise<&V>, _: &mut V) -> Result<()> {
        refused("ddpm_step")
    }
    fn ddim_step(&self, _: &DdimStep, _: &V, _: &V, _: Noise<&V>, _: &mut V) -> Result<()> {
        refused("ddim_step")
    }
}
