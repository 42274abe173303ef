//! Launchers of kernels/group_norm.cu.

use super::count_u32;
use crate::gpu::{Buffer, KernelArgs, LaunchConfig};
use crate::shapes::{GroupNormShape, lengths};
use anyhow::Result;
use half::bf16;

/// The per-(image, group) kernels' __launch_bounds__.
const GROUP_THREADS_MAX: usize = 512;
/// group_norm_bwd_params_partial_f32's block: 32 channel lanes x 8 pixel rows.
const PARAMS_THREADS: u32 = 256;
const PARAMS_TILE_C: usize = 32;
/// Pixels per partial sum of the gamma/beta gradients. Fixed, so the reduction order (and the
/// bits) depend only on the shape; 256 pixels give each row-thread 32 terms.
const CHUNK_PIXELS: usize = 256;
const MAX_GRID: usize = 65535;

fn opt(args: KernelArgs, b: Option<&Buffer<f32>>) -> KernelArgs {
    match b {
        Some(b) => args.buf(b),
        None => args.null(),
    }
}

/// One block per (image, group), sized to the group (a multiple of 32 for block_sum).
fn group_launch(s: &GroupNormShape) -> LaunchConfig {
    let count = s.hw * (s.channels / s.groups);
    let threads = count.next_multiple_of(32).clamp(32, GROUP_THREADS_MAX) as u32;
    LaunchConfig::linear(s.stats_len().min(MAX_GRID) as u32, threads)
}

/// The shape as the kernels take it: batch, hw, channels, groups (after checking the flat length
/// fits their 32-bit indices).
fn dims(op: &str, s: &GroupNormShape, args: KernelArgs) -> Result<KernelArgs> {
    count_u32(op, s.len())?;
    Ok(args.u32(s.batch as u32).u32(s.hw as u32).u32(s.channels as u32).u32(s.groups as u32))
}

#[allow(clippy::too_many_arguments)]
pub fn group_norm_fwd_f32(
    s: &GroupNormShape,
    x: &Buffer<f32>,
    gamma: Option<&Buffer<f32>>,
    beta: Option<&Buffer<f32>>,
    silu: bool,
    y: &mut Buffer<f32>,
    mean: &mut Buffer<f32>,
    rstd: &mut Buffer<f32>,
) -> Result<()> {
    let args = opt(opt(KernelArgs::new().buf(x), gamma), beta).buf(y).buf(mean).buf(rstd);
    let args = dims("group_norm_fwd", s, args)?.f32(s.eps).i32(silu as i32);
    x.gpu().launch("group_norm_fwd_f32", group_launch(s), &args)
}

/// The forward with its output rounded to bf16 (nearest even) as it is stored: the f32 kernel's
/// values, rounded, bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_fwd_to_bf16_f32(
    s: &GroupNormShape,
    x: &Buffer<f32>,
    gamma: Option<&Buffer<f32>>,
    beta: Option<&Buffer<f32>>,
    silu: bool,
    y: &mut Buffer<bf16>,
    mean: &mut Buffer<f32>,
    rstd: &mut Buffer<f32>,
) -> Result<()> {
    let op = "group_norm_fwd_to_bf16";
    s.validate()?;
    let (gl, bl) = (gamma.map_or(0, |g| g.len()), beta.map_or(0, |b| b.len()));
    let want = |v: Option<&Buffer<f32>>| if v.is_some() { s.channels } else { 0 };
    lengths(
        op,
        &[
            ("x", x.len(), s.len()),
            ("y", y.len(), s.len()),
            ("mean", mean.len(), s.stats_len()),
            ("rstd", rstd.len(), s.stats_len()),
            ("gamma", gl, want(gamma)),
            ("beta", bl, want(beta)),
        ],
    )?;
    let args = opt(opt(KernelArgs::new().buf(x), gamma), beta).buf(y).buf(mean).buf(rstd);
    let args = dims(op, s, args)?.f32(s.eps).i32(silu as i32);
    x.gpu().launch("group_norm_fwd_to_bf16_f32", group_launch(s), &args)
}

/// The arguments both backward kernels start with. A function, not a closure called twice as
/// `inputs(KernelArgs::new())`: rustc 1.95.0 miscompiles that in release builds (MIR GVN merges the
/// two identical `KernelArgs::new()` arguments into one local, and the closure call passes that
/// local by pointer without a copy; the closure pushes into it in place, so the second call starts
/// from the first call's vectors, since reallocated: a double free). rust-lang/rust#155241; see
/// tests/rustc_closure_arg_miscompile.rs, which reproduces it and checks src/ for the pattern.
fn bwd_inputs(
    x: &Buffer<f32>,
    gamma: Option<&Buffer<f32>>,
    beta: Option<&Buffer<f32>>,
    mean: &Buffer<f32>,
    rstd: &Buffer<f32>,
    dy: &Buffer<f32>,
) -> KernelArgs {
    opt(opt(KernelArgs::new().buf(x), gamma), beta).buf(mean).buf(rstd).buf(dy)
}

#[allow(clippy::too_many_arguments)]
pub fn group_norm_bwd_f32(
    s: &GroupNormShape,
    x: &Buffer<f32>,
    gamma: Option<&Buffer<f32>>,
    beta: Option<&Buffer<f32>>,
    mean: &Buffer<f32>,
    rstd: &Buffer<f32>,
    silu: bool,
    dy: &Buffer<f32>,
    dx: &mut Buffer<f32>,
    dgamma: Option<&mut Buffer<f32>>,
    dbeta: Option<&mut Buffer<f32>>,
) -> Result<()> {
    let gpu = x.gpu();
    let args = dims("group_norm_bwd", s, bwd_inputs(x, gamma, beta, mean, rstd, dy).buf(dx))?.i32(silu as i32);
    gpu.launch("group_norm_bwd_f32", group_launch(s), &args)?;
    if dgamma.is_none() && dbeta.is_none() {
        return Ok(());
    }
    let chunks = (s.batch * s.hw).div_ceil(CHUNK_PIXELS);
    let (part_dgamma, part_dbeta) = (gpu.alloc::<f32>(chunks * s.channels)?, gpu.alloc::<f32>(chunks * s.channels)?);
    let args = dims(
        "group_norm_bwd_params",
        s,
        bwd_inputs(x, gamma, beta, mean, rstd, dy).buf(&part_dgamma).buf(&part_dbeta),
    )?
    .i32(silu as i32)
    .u32(CHUNK_PIXELS as u32)
    .u32(chunks as u32);
    let blocks = (s.channels.div_ceil(PARAMS_TILE_C) * chunks).min(MAX_GRID) as u32;
    gpu.launch("group_norm_bwd_params_partial_f32", LaunchConfig::linear(blocks, PARAMS_THREADS), &args)?;
    let args = opt(opt(KernelArgs::new().buf(&part_dgamma).buf(&part_dbeta), dgamma.as_deref()), dbeta.as_deref())
        .u32(s.channels as u32)
        .u32(chunks as u32);
    gpu.launch("group_norm_bwd_params_f32", LaunchConfig::for_elements(s.channels, PARAMS_THREADS), &args)
}
