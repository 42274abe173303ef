//! Launchers of kernels/embedding.cu.

use super::count_u32;
use crate::cpu::embedding::{freq_denominator, neg_log_max_period};
use crate::gpu::{Buffer, KernelArgs, LaunchConfig};
use anyhow::Result;

const THREADS: u32 = 256;

/// y[t.len(), dim]; the two float32 constants are rounded here exactly as the CPU reference
/// rounds them.
pub fn timestep_embedding_f32(
    t: &Buffer<f32>,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f32,
    y: &mut Buffer<f32>,
) -> Result<()> {
    let n = count_u32("timestep_embedding", t.len() * dim)?;
    if n == 0 {
        return Ok(());
    }
    let args = KernelArgs::new()
        .buf(t)
        .buf(y)
        .u32(n)
        .u32(dim as u32)
        .i32(flip_sin_to_cos as i32)
        .f32(neg_log_max_period())
        .f32(freq_denominator(dim, freq_shift));
    t.gpu().launch("timestep_embedding_f32", LaunchConfig::for_elements(y.len(), THREADS), &args)
}
