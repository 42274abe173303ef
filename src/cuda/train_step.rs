//! Launchers of kernels/train_step.cu: the row-driven ops of a graphed training step.

use super::count_u32;
use super::optim::{SumTable, sum_squares_f32, sum_squares_many_f32, sum_squares_parts};
use crate::gpu::{Buffer, KernelArgs, LaunchConfig};
use crate::shapes::same_len;
use crate::train::row::{HISTORY_WORDS, ROW_WORDS, STATUS_WORDS};
use anyhow::{Result, bail};
use half::bf16;

const THREADS: u32 = 256;

fn check_row(op: &str, row: &Buffer<u32>) -> Result<()> {
    if row.len() != ROW_WORDS {
        bail!("{op}: a step row holds {ROW_WORDS} words, this one {}", row.len());
    }
    Ok(())
}

fn check_status(op: &str, status: &Buffer<u32>) -> Result<()> {
    if status.len() != STATUS_WORDS {
        bail!("{op}: a step status holds {STATUS_WORDS} words, this one {}", status.len());
    }
    Ok(())
}

/// t, t_float: the timesteps of images first.. (t.len() images); eps: normals from element
/// first * per_image on, per_image = eps.len() / t.len().
pub fn train_draw_f32(
    row: &Buffer<u32>,
    first: usize,
    t_max: u32,
    t: &mut Buffer<u32>,
    t_float: &mut Buffer<f32>,
    eps: &mut Buffer<f32>,
) -> Result<()> {
    check_row("train_draw", row)?;
    same_len("train_draw", &[("t", t.len()), ("t_float", t_float.len())])?;
    if t.is_empty() || !eps.len().is_multiple_of(t.len()) {
        bail!("train_draw: {} noise elements do not split into {} images", eps.len(), t.len());
    }
    let (images, n) = (count_u32("train_draw", t.len())?, count_u32("train_draw", eps.len())?);
    let first_u32 = count_u32("train_draw", first + t.len())? - images;
    let start = (first * (eps.len() / t.len())) as u64;
    let args = KernelArgs::new().buf(row).buf(t).buf(t_float).u32(images).u32(first_u32).u32(t_max);
    let args = args.buf(eps).u32(n).u64(start);
    row.gpu().launch("train_draw_f32", LaunchConfig::for_elements(eps.len(), THREADS), &args)
}

/// status = (applied, clip scale, global norm) of `grads` and the step's `loss`.
/// `table`: the grads' `SumTable`, if prepared (one launch for their partials; else one each).
pub fn clip_status_f32(
    grads: &[Buffer<f32>],
    table: Option<&SumTable>,
    loss: &Buffer<f32>,
    max_norm: Option<f32>,
    sticky: bool,
    status: &mut Buffer<u32>,
) -> Result<()> {
    check_status("clip_status", status)?;
    if loss.len() != 1 {
        bail!("clip_status: the loss is 1 element, got {}", loss.len());
    }
    let total: usize = grads.iter().map(|g| sum_squares_parts(g.len())).sum();
    let mut partials = status.gpu().alloc::<f32>(total.max(1))?;
    match table {
        Some(t) if t.parts() == total => sum_squares_many_f32(t, &mut partials)?,
        Some(_) => bail!("clip_status: the prepared table is not these gradients'"),
        None => {
            let mut first = 0;
            for g in grads {
                sum_squares_f32(g, &mut partials, first)?;
                first += sum_squares_parts(g.len());
            }
        }
    }
    let args = KernelArgs::new().buf(&partials).u32(count_u32("clip_status", total)?).buf(loss);
    let args = args.f32(max_norm.unwrap_or(0.0)).i32(max_norm.is_some() as i32).i32(sticky as i32).buf(status);
    status.gpu().launch("clip_status_f32", LaunchConfig::linear(1, THREADS), &args)
}

#[allow(clippy::too_many_arguments)]
pub fn adamw_step_row_f32(
    p: &mut Buffer<f32>,
    g: &Buffer<f32>,
    m: &mut Buffer<f32>,
    v: &mut Buffer<f32>,
    copy: Option<&Buffer<bf16>>,
    ema: Option<&mut Buffer<f32>>,
    row: &Buffer<u32>,
    status: &Buffer<u32>,
) -> Result<()> {
    super::optim::check_adamw(p, g, m, v, copy)?;
    if let Some(ema) = ema.as_deref() {
        same_len("ema_update", &[("ema", ema.len()), ("param", p.len())])?;
    }
    check_row("adamw_step", row)?;
    check_status("adamw_step", status)?;
    let n = count_u32("adamw_step", p.len())?;
    let args = KernelArgs::new().buf(p).buf(g).buf(m).buf(v).opt(copy).opt(ema.as_deref()).u32(n).buf(row).buf(status);
    p.gpu().launch("adamw_step_row_f32", LaunchConfig::for_elements(p.len(), THREADS), &args)
}

/// history[row's slot] = (loss, applied, norm).
pub fn record_step_u32(
    row: &Buffer<u32>,
    status: &Buffer<u32>,
    loss: &Buffer<f32>,
    history: &mut Buffer<u32>,
) -> Result<()> {
    check_row("record_step", row)?;
    check_status("record_step", status)?;
    if loss.len() != 1 || history.is_empty() || !history.len().is_multiple_of(HISTORY_WORDS) {
        bail!("record_step: a 1-element loss and whole history slots, got {} and {} words", loss.len(), history.len());
    }
    let slots = (history.len() / HISTORY_WORDS) as u32;
    let args = KernelArgs::new().buf(row).buf(status).buf(loss).buf(history).u32(slots);
    row.gpu().launch("record_step_u32", LaunchConfig::linear(1, 32), &args)
}

/// What `adamw_step_many_row_f32` reads (kernels/train_step.cu): per parameter the addresses of
/// p, g, m, v, its bf16 copy and its EMA, n, its first block and its blocks. The addresses must
/// stay live while it is used: the caller builds it from buffers it holds at least as long.
pub struct AdamwTable {
    table: Buffer<u32>,
    tensors: usize,
    blocks: usize,
}

/// One parameter's buffers for `AdamwTable::new`: p, g, m, v, its kept copy, its EMA.
pub type AdamwBuffers<'a> =
    (&'a Buffer<f32>, &'a Buffer<f32>, &'a Buffer<f32>, &'a Buffer<f32>, Option<&'a Buffer<bf16>>, &'a Buffer<f32>);

impl AdamwTable {
    /// Uploads the table (a host copy: not while capturing); None for no parameters.
    pub fn new(params: &[AdamwBuffers]) -> Result<Option<Self>> {
        let Some(gpu) = params.first().map(|t| t.0.gpu()) else { return Ok(None) };
        let (mut words, mut first) = (Vec::with_capacity(15 * params.len()), 0);
        for &(p, g, m, v, copy, ema) in params {
            super::optim::check_adamw(p, g, m, v, copy)?;
            same_len("ema_update", &[("ema", ema.len()), ("param", p.len())])?;
            let n = count_u32("adamw_step", p.len())?;
            // 8 elements a thread: each block first finds its parameter in the table (a few
            // dependent loads), so blocks are made to do more than one element's work each.
            let blocks = p.len().div_ceil(8 * THREADS as usize).clamp(1, 65535);
            for at in [
                p.device_ptr(),
                g.device_ptr(),
                m.device_ptr(),
                v.device_ptr(),
                copy.map_or(0, |c| c.device_ptr()),
                ema.device_ptr(),
            ] {
                words.extend([at as u32, (at >> 32) as u32]);
            }
            words.extend([n, count_u32("adamw_step", first)?, blocks as u32]);
            first += blocks;
        }
        Ok(Some(AdamwTable { table: gpu.upload(&words)?, tensors: params.len(), blocks: first }))
    }
}

/// `adamw_step_row_f32` (with the EMA) of every parameter of `t` in one launch: the same bits.
pub fn adamw_step_many_row_f32(t: &AdamwTable, row: &Buffer<u32>, status: &Buffer<u32>) -> Result<()> {
    check_row("adamw_step", row)?;
    check_status("adamw_step", status)?;
    let args = KernelArgs::new().buf(&t.table).u32(count_u32("adamw_step", t.tensors)?).buf(row).buf(status);
    row.gpu().launch(
        "adamw_step_many_row_f32",
        LaunchConfig::linear(count_u32("adamw_step", t.blocks)?, THREADS),
        &args,
    )
}
