//! Launchers of kernels/attention_bf16.cu (forward) and kernels/attention_bwd_bf16.cu (backward):
//! the tensor-core attention, bf16 q, k, v (and dout), f32 (or bf16) out, f32 lse and gradients,
//! the f32 kernels' layout and lse convention (src/cuda/attention.rs), so either path consumes the
//! other's saved statistics.

use super::count_u32;
use crate::gpu::{Buffer, DType, Gpu, KernelArgs, LaunchConfig, limits};
use crate::shapes::AttentionShape;
use anyhow::{Result, bail};
use half::bf16;

/// The kernels' block (4 warps) and the rows of its tile (16 per warp).
const THREADS: u32 = 128;
const TILE: usize = 64;
/// Pipeline stages of streamed K/V (or Q/dO) tiles (abf16::STAGES).
const STAGES: usize = 2;
/// The largest head_dim the fused kernels take (their widest instantiation).
pub const MAX_HEAD_DIM: usize = 256;

/// One head-dim instantiation: D (the kernel's padded head dim, a suffix of its name) and the rows
/// of the streamed tiles (abf16::Cfg<D>::BN).
#[derive(Clone, Copy, Debug)]
struct Variant {
    d: usize,
    bn: usize,
}

impl Variant {
    /// The smallest instantiation that holds head_dim, which must be a multiple of 8 (16-byte rows
    /// for cp.async) and at most MAX_HEAD_DIM.
    fn new(op: &str, s: &AttentionShape) -> Result<Variant> {
        let d = s.head_dim;
        if d > MAX_HEAD_DIM {
            bail!(
                "{op}: head_dim {d} exceeds the bf16 kernels' limit of {MAX_HEAD_DIM} (use the f32 path or more heads)"
            );
        }
        if !d.is_multiple_of(8) {
            bail!("{op}: head_dim {d} must be a multiple of 8");
        }
        let padded = [32, 64, 128, 256].into_iter().find(|&p| p >= d).unwrap_or(MAX_HEAD_DIM);
        Ok(Variant { d: padded, bn: if padded > 128 { 32 } else { 64 } })
    }

    /// The shared row stride in bf16 (abf16::Cfg<D>::LDS).
    fn lds(self) -> usize {
        self.d + 8
    }

    fn kernel(self, name: &str) -> String {
        format!("{name}_d{}", self.d)
    }
}

/// The forward's output: f32, or the f32 value rounded to bf16 (nearest even) in the store, which an
/// attention block's output projection reads as its operand; the backward reads either.
pub trait AttentionOut: DType {
    /// The forward's kernels and the backward's dQ kernel (which reads out), without the _d suffix.
    const FWD: &'static str;
    const BWD_DQ: &'static str;
}
impl AttentionOut for f32 {
    const FWD: &'static str = "attention_fwd_bf16";
    const BWD_DQ: &'static str = "attention_bwd_dq_bf16";
}
impl AttentionOut for bf16 {
    const FWD: &'static str = "attention_fwd_bf16_to_bf16";
    const BWD_DQ: &'static str = "attention_bwd_dq_bf16_out_bf16";
}

/// Blocks: one per (image, head, tile of 64 rows).
fn blocks(op: &str, s: &AttentionShape) -> Result<u32> {
    count_u32(op, s.len())?;
    count_u32(op, s.batch * s.heads * s.tokens.div_ceil(TILE))
}

/// A launch with `shared` bytes of dynamic shared memory, opted in past the default 48 KiB.
fn config(gpu: &Gpu, kernel: &str, blocks: u32, shared: usize) -> Result<LaunchConfig> {
    let shared = shared as u32;
    if shared > limits::DEFAULT_SHARED_BYTES {
        gpu.set_max_dynamic_shared(kernel, shared)?;
    }
    Ok(LaunchConfig::linear(blocks, THREADS).with_shared(shared))
}

fn scale(s: &AttentionShape) -> f32 {
    1.0 / (s.head_dim as f32).sqrt()
}

/// Shape arguments every kernel takes after its buffers: tokens, heads, head_dim, scale.
fn dims(args: KernelArgs, s: &AttentionShape) -> KernelArgs {
    args.u32(s.tokens as u32).u32(s.heads as u32).u32(s.head_dim as u32).f32(scale(s))
}

/// out (f32, or rounded to bf16) and the log-sum-exp of every score row ([batch, heads, tokens],
/// natural log, as the f32 kernel writes it) from bf16 q, k, v on the tensor cores. head_dim: a
/// multiple of 8, at most 256.
pub fn attention_fwd_bf16<T: AttentionOut>(
    s: &AttentionShape,
    q: &Buffer<bf16>,
    k: &Buffer<bf16>,
    v: &Buffer<bf16>,
    out: &mut Buffer<T>,
    lse: &mut Buffer<f32>,
) -> Result<()> {
    let op = "attention_fwd_bf16";
    s.validate()?;
    crate::shapes::lengths(
        op,
        &[
            ("q", q.len(), s.len()),
            ("k", k.len(), s.len()),
            ("v", v.len(), s.len()),
            ("out", out.len(), s.len()),
            ("lse", lse.len(), s.lse_len()),
        ],
    )?;
    let var = Variant::new(op, s)?;
    let blocks = blocks(op, s)?;
    // Q [64][LDS], then STAGES stages of K and V [bn][LDS], bf16.
    let shared = (TILE + STAGES * 2 * var.bn) * var.lds() * 2;
    let gpu = q.gpu();
    let kernel = var.kernel(T::FWD);
    let cfg = config(gpu, &kernel, blocks, shared)?;
    let args = dims(KernelArgs::new().buf(q).buf(k).buf(v).buf(out).buf(lse), s);
    gpu.launch(&kernel, cfg, &args)
}

/// dq, dk, dv (f32) of bf16 q, k, v, dout given the forward's out (f32 or bf16) and lse (f32,
/// from either forward): the dQ kernel first (it computes D = rowsum(dout * out) for its query rows and
/// writes it to a scratch buffer), then the key-tile kernel(s) that read D: dK and dV together,
/// or at head_dim > 128 one kernel each (their accumulators would not fit in registers together).
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd_bf16<T: AttentionOut>(
    s: &AttentionShape,
    q: &Buffer<bf16>,
    k: &Buffer<bf16>,
    v: &Buffer<bf16>,
    out: &Buffer<T>,
    lse: &Buffer<f32>,
    dout: &Buffer<bf16>,
    dq: &mut Buffer<f32>,
    dk: &mut Buffer<f32>,
    dv: &mut Buffer<f32>,
) -> Result<()> {
    let op = "attention_bwd_bf16";
    s.validate()?;
    let n = s.len();
    crate::shapes::lengths(
        op,
        &[
            ("q", q.len(), n),
            ("k", k.len(), n),
            ("v", v.len(), n),
            ("out", out.len(), n),
            ("lse", lse.len(), s.lse_len()),
            ("dout", dout.len(), n),
            ("dq", dq.len(), n),
            ("dk", dk.len(), n),
            ("dv", dv.len(), n),
        ],
    )?;
    let var = Variant::new(op, s)?;
    let blocks = blocks(op, s)?;
    let gpu = q.gpu();
    let delta = gpu.alloc::<f32>(s.lse_len())?;
    // dQ: Q and dO [64][LDS], then STAGES stages of K and V [bn][LDS], bf16.
    let dq_kernel = var.kernel(T::BWD_DQ);
    let shared = (2 * TILE + STAGES * 2 * var.bn) * var.lds() * 2;
    let args = KernelArgs::new().buf(q).buf(k).buf(v).buf(out).buf(dout).buf(lse).buf(&delta).buf(dq);
    gpu.launch(&dq_kernel, config(gpu, &dq_kernel, blocks, shared)?, &dims(args, s))?;
    // dK, dV: K and V [64][LDS], then STAGES stages of Q and dO [bq][LDS] and lse, D [bq] f32.
    let bq = if var.d > 64 { 32 } else { 64 };
    let shared = 2 * TILE * var.lds() * 2 + STAGES * (2 * bq * var.lds() * 2 + 2 * bq * 4);
    let kernels: &[&str] =
        if var.d > 128 { &["attention_bwd_dk_bf16", "attention_bwd_dv_bf16"] } else { &["attention_bwd_dkdv_bf16"] };
    for name in kernels {
        let kernel = var.kernel(name);
        let args = KernelArgs::new().buf(q).buf(k).buf(v).buf(dout).buf(lse).buf(&delta).buf(dk).buf(dv);
        gpu.launch(&kernel, config(gpu, &kernel, blocks, shared)?, &dims(args, s))?;
    }
    Ok(())
}
