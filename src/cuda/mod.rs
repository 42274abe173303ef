//! Launchers: one Rust function per kernel, named as the kernel, checking sizes before launching.
//! Files mirror kernels/ and src/cpu/.

pub mod attention;
pub mod attention_bf16;
pub mod conv;
pub mod conv_bf16;
pub mod diffusion;
pub mod elementwise;
pub mod embedding;
pub mod group_norm;
pub mod linear;
pub mod optim;
pub mod resample;
pub mod silu;
pub mod stream_bf16;
pub mod train_step;

use anyhow::{Result, bail};

/// Element counts are passed to kernels as u32.
pub(crate) fn count_u32(op: &str, n: usize) -> Result<u32> {
    u32::try_from(n).or_else(|_| bail!("{op}: {n} elements exceed the kernels' 32-bit element count"))
}
