//! Launchers of kernels/attention.cu (forward) and kernels/attention_bwd.cu (backward).

use super::count_u32;
use crate::gpu::{Buffer, Gpu, KernelArgs, LaunchConfig, limits};
use crate::shapes::AttentionShape;
use anyhow::{Result, bail};

/// The kernels' block size (ATT_THREADS).
const THREADS: usize = 256;
/// Accumulator registers per thread (ATT_ACC): a tile's rows x head_dim accumulator is spread
/// over the block, so rows * head_dim <= THREADS * ACC.
const ACC: usize = 16;
/// The largest head_dim the kernels take: one 8-row tile fills the accumulators.
pub const MAX_HEAD_DIM: usize = THREADS * ACC / 8;

/// How one launch tiles the tokens.
struct Plan {
    /// Rows per tile, T: 8, 16, 32 or 64 (the sizes the kernels' with_tile instantiates).
    tile: usize,
    /// Blocks: one per (image, head, tile).
    blocks: u32,
    /// Shared-memory row stride of the operand tiles (the kernels' lds), see [`row_stride`].
    lds: usize,
}

impl Plan {
    fn new(op: &str, s: &AttentionShape) -> Result<Plan> {
        let d = s.head_dim;
        if d > MAX_HEAD_DIM {
            bail!(
                "{op}: head_dim {d} exceeds the kernels' limit of {MAX_HEAD_DIM} (split the channels into more heads)"
            );
        }
        count_u32(op, s.len())?;
        // The largest tile whose accumulators fit; 64 rows is plenty for the score tile's reuse.
        let mut tile = 64;
        while tile * d > THREADS * ACC {
            tile /= 2;
        }
        let blocks = count_u32(op, s.batch * s.heads * s.tokens.div_ceil(tile))?;
        Ok(Plan { tile, blocks, lds: row_stride(d, tile) })
    }

    /// Dynamic shared memory of a kernel holding `tiles` operand tiles, the score tile and
    /// `stats` per-row values.
    fn shared_bytes(&self, tiles: usize, stats: usize) -> u32 {
        let floats = tiles * self.tile * self.lds + self.tile * self.tile + stats * self.tile;
        (floats * std::mem::size_of::<f32>()) as u32
    }

    /// The tile kernels' last arguments: tile, lds, scale.
    fn tail(&self, args: KernelArgs, s: &AttentionShape) -> KernelArgs {
        args.u32(self.tile as u32).u32(self.lds as u32).f32(scale(s))
    }

    /// A launch of `kernel`, opting in to more than the default shared memory when it needs it:
    /// at most 81.5 KiB (the backward at T = 64, head_dim 64), within every sm_80+ part's limit.
    fn config(&self, gpu: &Gpu, kernel: &str, shared: u32) -> Result<LaunchConfig> {
        if shared > limits::DEFAULT_SHARED_BYTES {
            gpu.set_max_dynamic_shared(kernel, shared)?;
        }
        Ok(LaunchConfig::linear(self.blocks, THREADS as u32).with_shared(shared))
    }
}

/// The row stride of a shared [tile][head_dim] operand: the kernels' score dots have the 32
/// lanes of a warp read rows c at feature offset p, c < 32 / split, p < split, split = 32 / tile
/// lanes per dot when tile < 32, else 1. Rows `split` times an odd number apart put those 32
/// reads in distinct banks (c * lds + p covers 0..32 mod 32 exactly).
fn row_stride(head_dim: usize, tile: usize) -> usize {
    let split = (32 / tile).max(1);
    let units = head_dim.div_ceil(split);
    split * (units | 1)
}

fn scale(s: &AttentionShape) -> f32 {
    1.0 / (s.head_dim as f32).sqrt()
}

/// Shape arguments every kernel takes after its buffers: tokens, heads, head_dim.
fn dims(args: KernelArgs, s: &AttentionShape) -> KernelArgs {
    args.u32(s.tokens as u32).u32(s.heads as u32).u32(s.head_dim as u32)
}

/// out and the log-sum-exp of every score row, [batch, heads, tokens]. Lengths are checked by
/// the backend (src/backend/checks.rs).
pub fn attention_fwd_f32(
    s: &AttentionShape,
    q: &Buffer<f32>,
    k: &Buffer<f32>,
    v: &Buffer<f32>,
    out: &mut Buffer<f32>,
    lse: &mut Buffer<f32>,
) -> Result<()> {
    let plan = Plan::new("attention_fwd", s)?;
    let gpu = q.gpu();
    let kernel = "attention_fwd_f32";
    let cfg = plan.config(gpu, kernel, plan.shared_bytes(2, 3))?;
    let args = plan.tail(dims(KernelArgs::new().buf(q).buf(k).buf(v).buf(out).buf(lse), s), s);
    gpu.launch(kernel, cfg, &args)
}

/// dq, dk, dv: D = rowsum(dout * out) into a scratch buffer, then the key-tile kernel (dk, dv)
/// and the query-tile kernel (dq).
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd_f32(
    s: &AttentionShape,
    q: &Buffer<f32>,
    k: &Buffer<f32>,
    v: &Buffer<f32>,
    out: &Buffer<f32>,
    lse: &Buffer<f32>,
    dout: &Buffer<f32>,
    dq: &mut Buffer<f32>,
    dk: &mut Buffer<f32>,
    dv: &mut Buffer<f32>,
) -> Result<()> {
    let plan = Plan::new("attention_bwd", s)?;
    let gpu = q.gpu();
    let rows = count_u32("attention_bwd", s.lse_len())?;
    let delta = gpu.alloc::<f32>(s.lse_len())?;
    let warps_per_block = (THREADS / 32) as u32;
    let args = dims(KernelArgs::new().buf(out).buf(dout).buf(&delta).u32(rows), s);
    let cfg = LaunchConfig::linear(rows.div_ceil(warps_per_block).min(65535), THREADS as u32);
    gpu.launch("attention_bwd_delta_f32", cfg, &args)?;

    let shared = plan.shared_bytes(4, 2);
    let tail = |a: KernelArgs| plan.tail(dims(a, s), s);
    let inputs = || KernelArgs::new().buf(q).buf(k).buf(v).buf(dout).buf(lse).buf(&delta);
    let (dkdv, dq_kernel) = ("attention_bwd_dkdv_f32", "attention_bwd_dq_f32");
    gpu.launch(dkdv, plan.config(gpu, dkdv, shared)?, &tail(inputs().buf(dk).buf(dv)))?;
    gpu.launch(dq_kernel, plan.config(gpu, dq_kernel, shared)?, &tail(inputs().buf(dq)))
}
