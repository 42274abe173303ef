//! Launchers of kernels/group_norm.cu and group_norm_bf16.cu (the kernels of group_norm.cuh for an
//! f32 or a bf16 input).

use super::count_u32;
use crate::gpu::{Buffer, DType, KernelArgs, LaunchConfig};
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

/// One block per (image, group), sized to the group (a multiple of 32 for block_sum).
fn group_launch(s: &GroupNormShape) -> LaunchConfig {
    let count = s.hw * (s.channels / s.groups);
    let threads = count.next_multiple_of(32).clamp(32, GROUP_THREADS_MAX) as u32;
    LaunchConfig::linear(s.stats_len().min(MAX_GRID) as u32, threads)
}

/// Blocks the statistics aim for: 4 blocks of 512 threads fill one of an H200's 132 SMs (528).
const TARGET_BLOCKS: usize = 512;
/// The fewest elements a chunk takes: 8 per thread of a 512-thread block. Below that, the second
/// launch and the partials' round trip cost about what the extra blocks save (an estimate, to be
/// tuned on a GPU with benches/group_norm.rs). The cifar10 UNet at batch 1 splits only its 32 x 32
/// groups of 256 channels or more (2 or 3 chunks); a 256 x 256 UNet splits every 128-channel group
/// of its top level 16 ways.
const MIN_CHUNK: usize = 4096;
/// A group's chunks are combined serially by one thread of each block.
const MAX_CHUNKS: usize = 64;

/// How kernels/group_norm.cu's split path cuts each (image, group): `count` runs of `len`
/// consecutive elements (the last may be shorter). One chunk is the one-block-per-group path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunks {
    pub len: usize,
    pub count: usize,
}

impl Chunks {
    /// The shape's chunking: split only when batch x groups blocks leave the GPU idle and each
    /// chunk still gets MIN_CHUNK elements. A function of the shape alone, so the bits are too.
    pub fn for_shape(s: &GroupNormShape) -> Chunks {
        let group = s.hw * (s.channels / s.groups);
        let want = (group / MIN_CHUNK).min(TARGET_BLOCKS / s.stats_len().max(1)).clamp(1, MAX_CHUNKS);
        Self::forced(s, want)
    }

    /// About `want` chunks per group (at most one per element), for tests and A/B runs.
    pub fn forced(s: &GroupNormShape, want: usize) -> Chunks {
        let group = (s.hw * (s.channels / s.groups)).max(1);
        let len = group.div_ceil(want.clamp(1, group));
        Chunks { len, count: group.div_ceil(len) }
    }

    /// One block per chunk of every group, sized to the chunk.
    fn launch(&self, s: &GroupNormShape) -> LaunchConfig {
        let threads = self.len.next_multiple_of(32).clamp(32, GROUP_THREADS_MAX) as u32;
        LaunchConfig::linear((s.stats_len() * self.count).min(MAX_GRID) as u32, threads)
    }

    /// Fails unless the chunks tile each group of `s` exactly: none empty, none missing.
    fn check(&self, op: &str, s: &GroupNormShape) -> Result<()> {
        let group = s.hw * (s.channels / s.groups);
        let (n, len) = (self.count, self.len);
        if n == 0 || len == 0 || (n - 1) * len >= group.max(1) || n * len < group {
            anyhow::bail!(
                "{op}: {self:?} does not tile a group of {group} elements (Chunks::for_shape or ::forced do)"
            );
        }
        Ok(())
    }

    fn args(&self, args: KernelArgs) -> KernelArgs {
        args.u32(self.len as u32).u32(self.count as u32)
    }
}

/// The shape as the kernels take it: batch, hw, channels, groups (after checking the flat length
/// fits their 32-bit indices).
fn dims(op: &str, s: &GroupNormShape, args: KernelArgs) -> Result<KernelArgs> {
    count_u32(op, s.len())?;
    Ok(args.u32(s.batch as u32).u32(s.hw as u32).u32(s.channels as u32).u32(s.groups as u32))
}

/// The shape; the lengths of two full-size tensors and of the two statistics (in that order), of
/// the optional gamma and beta; and the chunking: one line naming what is wrong.
fn check_lengths(
    op: &str,
    s: &GroupNormShape,
    [(na, a), (nb, b), (nm, m), (nr, r)]: [(&str, usize); 4],
    gamma: Option<&Buffer<f32>>,
    beta: Option<&Buffer<f32>>,
    chunks: Chunks,
) -> Result<()> {
    s.validate()?;
    let want = |v: Option<&Buffer<f32>>| if v.is_some() { s.channels } else { 0 };
    let (gl, bl) = (gamma.map_or(0, |g| g.len()), beta.map_or(0, |b| b.len()));
    lengths(
        op,
        &[
            (na, a, s.len()),
            (nb, b, s.len()),
            (nm, m, s.stats_len()),
            (nr, r, s.stats_len()),
            ("gamma", gl, want(gamma)),
            ("beta", bl, want(beta)),
        ],
    )?;
    chunks.check(op, s)
}

/// What the kernels read: an f32 activation, or a bf16 one (a bf16 convolution's output, issue
/// #17) widened to f32 on load, which gives the f32 kernels' bits on the widened values.
pub trait GroupNormIn: DType {
    /// The forward's (one-block-per-group kernel, split path's second kernel) for an f32 and a
    /// bf16 output (`GroupNormOut::INDEX`), then the split path's first kernel.
    const FWD: [(&'static str, &'static str); 2];
    const STATS_PARTIAL: &'static str;
    /// The backward's: one block per group, the split path's two, the gamma/beta partial sums.
    const BWD: [&'static str; 4];
}
impl GroupNormIn for f32 {
    const FWD: [(&'static str, &'static str); 2] = [
        ("group_norm_fwd_f32", "group_norm_apply_f32"),
        ("group_norm_fwd_to_bf16_f32", "group_norm_apply_to_bf16_f32"),
    ];
    const STATS_PARTIAL: &'static str = "group_norm_stats_partial_f32";
    const BWD: [&'static str; 4] = [
        "group_norm_bwd_f32",
        "group_norm_bwd_partial_f32",
        "group_norm_bwd_apply_f32",
        "group_norm_bwd_params_partial_f32",
    ];
}
impl GroupNormIn for bf16 {
    const FWD: [(&'static str, &'static str); 2] = [
        ("group_norm_fwd_bf16", "group_norm_apply_bf16"),
        ("group_norm_fwd_bf16_to_bf16", "group_norm_apply_bf16_to_bf16"),
    ];
    const STATS_PARTIAL: &'static str = "group_norm_stats_partial_bf16";
    const BWD: [&'static str; 4] = [
        "group_norm_bwd_bf16",
        "group_norm_bwd_partial_bf16",
        "group_norm_bwd_apply_bf16",
        "group_norm_bwd_params_partial_bf16",
    ];
}

/// What the forward stores: f32, or bf16 rounded once from the f32 value.
pub trait GroupNormOut: DType {
    /// Which of `GroupNormIn::FWD`.
    const INDEX: usize;
}
impl GroupNormOut for f32 {
    const INDEX: usize = 0;
}
impl GroupNormOut for bf16 {
    const INDEX: usize = 1;
}

/// The forward with a given chunking (Chunks::for_shape is what the layers use).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_fwd_chunked<X: GroupNormIn, T: GroupNormOut>(
    s: &GroupNormShape,
    x: &Buffer<X>,
    gamma: Option<&Buffer<f32>>,
    beta: Option<&Buffer<f32>>,
    silu: bool,
    y: &mut Buffer<T>,
    mean: &mut Buffer<f32>,
    rstd: &mut Buffer<f32>,
    chunks: Chunks,
) -> Result<()> {
    let (op, (single, apply)) = ("group_norm_fwd", X::FWD[T::INDEX]);
    let lens = [("x", x.len()), ("y", y.len()), ("mean", mean.len()), ("rstd", rstd.len())];
    check_lengths(op, s, lens, gamma, beta, chunks)?;
    let gpu = x.gpu();
    if chunks.count == 1 {
        let args = KernelArgs::new().buf(x).opt(gamma).opt(beta).buf(y).buf(mean).buf(rstd);
        let args = dims(op, s, args)?.f32(s.eps).i32(silu as i32);
        return gpu.launch(single, group_launch(s), &args);
    }
    let part = gpu.alloc::<f32>(2 * s.stats_len() * chunks.count)?;
    let args = chunks.args(dims(op, s, KernelArgs::new().buf(x).buf(&part))?);
    gpu.launch(X::STATS_PARTIAL, chunks.launch(s), &args)?;
    let args = KernelArgs::new().buf(x).opt(gamma).opt(beta).buf(&part).buf(y).buf(mean).buf(rstd);
    let args = chunks.args(dims(op, s, args)?.f32(s.eps).i32(silu as i32));
    gpu.launch(apply, chunks.launch(s), &args)
}

/// The forward from an f32 or a bf16 input into an f32 or a bf16 output (rounded once from the
/// f32 value, nearest even: the f32 kernel's values, rounded, bit for bit), chunked as the shape
/// says.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_fwd<X: GroupNormIn, T: GroupNormOut>(
    s: &GroupNormShape,
    x: &Buffer<X>,
    gamma: Option<&Buffer<f32>>,
    beta: Option<&Buffer<f32>>,
    silu: bool,
    y: &mut Buffer<T>,
    mean: &mut Buffer<f32>,
    rstd: &mut Buffer<f32>,
) -> Result<()> {
    group_norm_fwd_chunked(s, x, gamma, beta, silu, y, mean, rstd, Chunks::for_shape(s))
}

/// The arguments both backward kernels start with. A function, not a closure called twice as
/// `inputs(KernelArgs::new())`: rustc 1.95.0 miscompiles that in release builds (MIR GVN merges the
/// two identical `KernelArgs::new()` arguments into one local, and the closure call passes that
/// local by pointer without a copy; the closure pushes into it in place, so the second call starts
/// from the first call's vectors, since reallocated: a double free). rust-lang/rust#155241; see
/// tests/rustc_closure_arg_miscompile.rs, which reproduces it and checks src/ for the pattern.
fn bwd_inputs<X: GroupNormIn>(
    x: &Buffer<X>,
    gamma: Option<&Buffer<f32>>,
    beta: Option<&Buffer<f32>>,
    mean: &Buffer<f32>,
    rstd: &Buffer<f32>,
    dy: &Buffer<f32>,
) -> KernelArgs {
    KernelArgs::new().buf(x).opt(gamma).opt(beta).buf(mean).buf(rstd).buf(dy)
}

/// dx with a given chunking (Chunks::for_shape is what the layers use).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_bwd_dx_chunked<X: GroupNormIn>(
    s: &GroupNormShape,
    x: &Buffer<X>,
    gamma: Option<&Buffer<f32>>,
    beta: Option<&Buffer<f32>>,
    mean: &Buffer<f32>,
    rstd: &Buffer<f32>,
    silu: bool,
    dy: &Buffer<f32>,
    dx: &mut Buffer<f32>,
    chunks: Chunks,
) -> Result<()> {
    let (op, gpu) = ("group_norm_bwd", x.gpu());
    let lens = [("x", x.len()), ("dy", dy.len()), ("mean", mean.len()), ("rstd", rstd.len())];
    check_lengths(op, s, lens, gamma, beta, chunks)?;
    lengths(op, &[("dx", dx.len(), s.len())])?;
    if chunks.count == 1 {
        let args = dims(op, s, bwd_inputs(x, gamma, beta, mean, rstd, dy).buf(dx))?.i32(silu as i32);
        return gpu.launch(X::BWD[0], group_launch(s), &args);
    }
    let part = gpu.alloc::<f32>(2 * s.stats_len() * chunks.count)?;
    let args = chunks.args(dims(op, s, bwd_inputs(x, gamma, beta, mean, rstd, dy).buf(&part))?.i32(silu as i32));
    gpu.launch(X::BWD[1], chunks.launch(s), &args)?;
    let args = dims(op, s, bwd_inputs(x, gamma, beta, mean, rstd, dy).buf(&part).buf(dx))?.i32(silu as i32);
    gpu.launch(X::BWD[2], chunks.launch(s), &chunks.args(args))
}

/// dx, and dgamma / dbeta where asked, from an f32 or a bf16 input.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_bwd<X: GroupNormIn>(
    s: &GroupNormShape,
    x: &Buffer<X>,
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
    let want = |g: &Option<&mut Buffer<f32>>| g.as_ref().map_or((0, 0), |g| (g.len(), s.channels));
    let ((ng, wg), (nb, wb)) = (want(&dgamma), want(&dbeta));
    lengths("group_norm_bwd", &[("dgamma", ng, wg), ("dbeta", nb, wb)])?;
    group_norm_bwd_dx_chunked(s, x, gamma, beta, mean, rstd, silu, dy, dx, Chunks::for_shape(s))?;
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
    gpu.launch(X::BWD[3], LaunchConfig::linear(blocks, PARAMS_THREADS), &args)?;
    let args = KernelArgs::new()
        .buf(&part_dgamma)
        .buf(&part_dbeta)
        .opt(dgamma.as_deref())
        .opt(dbeta.as_deref())
        .u32(s.channels as u32)
        .u32(chunks as u32);
    gpu.launch("group_norm_bwd_params_f32", LaunchConfig::for_elements(s.channels, PARAMS_THREADS), &args)
}
