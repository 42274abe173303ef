//! Launchers of kernels/optim.cu.

use super::count_u32;
use crate::gpu::{Buffer, KernelArgs, LaunchConfig};
use crate::math::adamw::AdamWStep;
use crate::shapes::same_len;
use anyhow::{Result, bail};
use half::bf16;

const THREADS: u32 = 256;

/// `copy`: the weight's kept bf16 copy (src/backend/cuda_weights.rs), rewritten with it. Shared
/// by reference because the products hold it too; this is its only writer.
pub fn adamw_step_f32(
    p: &mut Buffer<f32>,
    g: &Buffer<f32>,
    m: &mut Buffer<f32>,
    v: &mut Buffer<f32>,
    copy: Option<&Buffer<bf16>>,
    s: &AdamWStep,
) -> Result<()> {
    check_adamw(p, g, m, v, copy)?;
    let n = count_u32("adamw_step", p.len())?;
    let args = KernelArgs::new()
        .buf(p)
        .buf(g)
        .buf(m)
        .buf(v)
        .opt(copy)
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

/// The lengths of an AdamW step's tensors, shared with the graphed step's launcher.
pub(crate) fn check_adamw(
    p: &Buffer<f32>,
    g: &Buffer<f32>,
    m: &Buffer<f32>,
    v: &Buffer<f32>,
    copy: Option<&Buffer<bf16>>,
) -> Result<()> {
    let mut lens = vec![("param", p.len()), ("grad", g.len()), ("exp_avg", m.len()), ("exp_avg_sq", v.len())];
    lens.extend(copy.map(|c| ("bf16 copy", c.len())));
    same_len("adamw_step", &lens)
}

pub fn ema_update_f32(ema: &mut Buffer<f32>, p: &Buffer<f32>, decay: f32) -> Result<()> {
    same_len("ema_update", &[("ema", ema.len()), ("param", p.len())])?;
    let n = count_u32("ema_update", p.len())?;
    let args = KernelArgs::new().buf(ema).buf(p).u32(n).f32(decay);
    ema.gpu().launch("ema_update_f32", LaunchConfig::for_elements(p.len(), THREADS), &args)
}

/// Threads per block of sum_squares_f32, and the elements each block takes at least.
const SUM_THREADS: u32 = 256;
const SUM_PER_BLOCK: usize = 16 * 1024;
/// At most this many blocks (partials) per tensor: 4 blocks of 256 threads on each of an H200's 132
/// SMs fill it; more only adds partials to download.
pub const SUM_MAX_PARTS: usize = 512;

/// How many partial sums `sum_squares_f32` writes for `n` elements: from n alone, so the grid and
/// with it the result are the same on every device.
pub fn sum_squares_parts(n: usize) -> usize {
    n.div_ceil(SUM_PER_BLOCK).clamp(1, SUM_MAX_PARTS)
}

/// out[first..first + sum_squares_parts(x.len())] = partial sums of squares of x, whose total is
/// the sum of squares (the caller adds them, in order).
pub fn sum_squares_f32(x: &Buffer<f32>, out: &mut Buffer<f32>, first: usize) -> Result<()> {
    let parts = sum_squares_parts(x.len());
    if first + parts > out.len() {
        bail!("sum_squares: partials {first}..{} outside an output of {}", first + parts, out.len());
    }
    let n = count_u32("sum_squares", x.len())?;
    // A pointer into the output: the emulator accepts any address inside a live buffer.
    let args = KernelArgs::new().buf(x).u32(n).raw_pointer(out.device_ptr() + 4 * first as u64);
    x.gpu().launch("sum_squares_f32", LaunchConfig::linear(parts as u32, SUM_THREADS), &args)
}

/// What `sum_squares_many_f32` reads (kernels/optim.cu): per tensor its address (low and high
/// word), length, first partial and partials, tensors in order, their partials side by side from 0
/// (as `clip_status` lays them out). Its addresses must stay live while it is used: the caller
/// builds it from buffers it holds at least as long.
pub struct SumTable {
    table: Buffer<u32>,
    tensors: usize,
    parts: usize,
}

impl SumTable {
    /// Uploads the table of `tensors` (a host copy: not while capturing).
    pub fn new(tensors: &[Buffer<f32>]) -> Result<Option<Self>> {
        let Some(gpu) = tensors.first().map(|t| t.gpu()) else { return Ok(None) };
        let (mut words, mut first) = (Vec::with_capacity(5 * tensors.len()), 0);
        for t in tensors {
            let parts = sum_squares_parts(t.len());
            let at = t.device_ptr();
            let n = count_u32("sum_squares", t.len())?;
            words.extend([at as u32, (at >> 32) as u32, n, count_u32("sum_squares", first)?, parts as u32]);
            first += parts;
        }
        Ok(Some(SumTable { table: gpu.upload(&words)?, tensors: tensors.len(), parts: first }))
    }

    /// The partials of all the tensors.
    pub fn parts(&self) -> usize {
        self.parts
    }
}

/// `sum_squares_f32` of every tensor of `t` in one launch, into out[0..t.parts()]: the partials
/// of the launches one per tensor, bit for bit.
pub fn sum_squares_many_f32(t: &SumTable, out: &mut Buffer<f32>) -> Result<()> {
    if t.parts > out.len() {
        bail!("sum_squares: {} partials into an output of {}", t.parts, out.len());
    }
    let args = KernelArgs::new().buf(&t.table).u32(count_u32("sum_squares", t.tensors)?).buf(out);
    out.gpu().launch(
        "sum_squares_many_f32",
        LaunchConfig::linear(count_u32("sum_squares", t.parts)?, SUM_THREADS),
        &args,
    )
}

pub fn scale_f32(x: &mut Buffer<f32>, s: f32) -> Result<()> {
    let n = count_u32("scale", x.len())?;
    let args = KernelArgs::new().buf(x).u32(n).f32(s);
    x.gpu().launch("scale_f32", LaunchConfig::for_elements(x.len(), THREADS), &args)
}
