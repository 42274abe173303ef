//! Launchers of kernels/optim.cu.

use super::count_u32;
use crate::gpu::{Buffer, KernelArgs, LaunchConfig};
use crate::math::adamw::AdamWStep;
use crate::shapes::same_len;
use anyhow::{Result, bail};

const THREADS: u32 = 256;

pub fn adamw_step_f32(
    p: &mut Buffer<f32>,
    g: &Buffer<f32>,
    m: &mut Buffer<f32>,
    v: &mut Buffer<f32>,
    s: &AdamWStep,
) -> Result<()> {
    same_len("adamw_step", &[("param", p.len()), ("grad", g.len()), ("exp_avg", m.len()), ("exp_avg_sq", v.len())])?;
    let n = count_u32("adamw_step", p.len())?;
    let args = KernelArgs::new()
        .buf(p)
        .buf(g)
        .buf(m)
        .buf(v)
        .u32(n)
        .f32(s.lr)
        .f32(s.beta1)
        .f32(s.beta2)
        .f32(s.eps)
        .f32(s.weight_decay)
        .f32(s.step_size)
        .f32(s.bias_correction2_sqrt)
        .f32(s.grad_scale);
    p.gpu().launch("adamw_step_f32", LaunchConfig::for_elements(p.len(), THREADS), &args)
}

pub fn ema_update_f32(ema: &mut Buffer<f32>, p: &Buffer<f32>, decay: f32) -> Result<()> {
    same_len("ema_update", &[("ema", ema.len()), ("param", p.len())])?;
    let n = count_u32("ema_update", p.len())?;
    let args = KernelArgs::new().buf(ema).buf(p).u32(n).f32(decay);
    ema.gpu().launch("ema_update_f32", LaunchConfig::for_elements(p.len(), THREADS), &args)
}

/// out[slot] = sum of squares of x.
pub fn sum_squares_f32(x: &Buffer<f32>, out: &mut Buffer<f32>, slot: usize) -> Result<()> {
    if slot >= out.len() {
        bail!("sum_squares: slot {slot} outside an output of {}", out.len());
    }
    let n = count_u32("sum_squares", x.len())?;
    // A pointer to the slot: the emulator accepts any address inside a live buffer.
    let args = KernelArgs::new().buf(x).u32(n).raw_pointer(out.device_ptr() + 4 * slot as u64);
    x.gpu().launch("sum_squares_f32", LaunchConfig::linear(1, 1024), &args)
}

pub fn scale_f32(x: &mut Buffer<f32>, s: f32) -> Result<()> {
    let n = count_u32("scale", x.len())?;
    let args = KernelArgs::new().buf(x).u32(n).f32(s);
    x.gpu().launch("scale_f32", LaunchConfig::for_elements(x.len(), THREADS), &args)
}
