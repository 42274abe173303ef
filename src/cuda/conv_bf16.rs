//! Launchers of the tensor-core convolutions (kernels/conv_bf16.cu, kernels/conv_bwd_bf16.cu): bf16 NHWC activations and
//! OHWI weights, f32 accumulation in a fixed order, on the GEMM core of kernels/gemm_bf16.cuh.

use super::count_u32;
use crate::gpu::{Buffer, KernelArgs, LaunchConfig};
use crate::shapes::{Conv2dShape, lengths};
use anyhow::{Result, bail};
use half::bf16;

/// kernels/gemm_bf16.cuh's block, tile and shared memory (the kernels assume exactly these).
const THREADS: u32 = 128;
const TILE: usize = 64;
const SHARED_BYTES: u32 = 3 * 2 * 64 * 40 * 2;
/// The core's K slice: split-K and the weight gradient's pixel chunks come in whole slices.
const BK: usize = 32;

/// The forward's output, with the optional residual of the same type and layout added in the
/// epilogue.
pub enum ConvOut<'a> {
    F32 { y: &'a mut Buffer<f32>, residual: Option<&'a Buffer<f32>> },
    Bf16 { y: &'a mut Buffer<bf16>, residual: Option<&'a Buffer<bf16>> },
}

/// The geometry that ends every kernel's parameter list, in its order.
fn geometry(args: KernelArgs, s: &Conv2dShape) -> KernelArgs {
    [s.batch, s.in_h, s.in_w, s.in_c, s.out_h(), s.out_w(), s.out_c, s.kernel, s.stride, s.pad.top, s.pad.left]
        .into_iter()
        .fold(args, |a, v| a.u32(v as u32))
}

/// Checks that the GEMM's channel count (the one its 16-byte chunks run along) is a multiple of 8
/// and every flat size fits the kernels' 32-bit arithmetic.
fn check(op: &str, s: &Conv2dShape, channels: (&str, usize)) -> Result<()> {
    if !channels.1.is_multiple_of(8) {
        bail!("{op}: {} {} must be a multiple of 8 (16-byte rows for cp.async)", channels.0, channels.1);
    }
    for n in [s.x_len(), s.y_len(), s.w_len()] {
        count_u32(op, n)?;
    }
    Ok(())
}

/// y = conv(x, w) + bias + emb[image] + residual, the sum in that order in f32 after the
/// convolution's own, then stored as f32 or rounded to bf16. `emb` is [batch][out_c] (a
/// ResnetBlock's time-embedding projection); in_c must be a multiple of 8.
pub fn conv2d_fwd_bf16(
    s: &Conv2dShape,
    x: &Buffer<bf16>,
    w: &Buffer<bf16>,
    bias: Option<&Buffer<f32>>,
    emb: Option<&Buffer<f32>>,
    out: ConvOut,
) -> Result<()> {
    conv2d_fwd_bf16_tiled(conv2d_fwd_bf16_tile(s), s, x, w, bias, emb, out)
}

/// The forward with a chosen block tile, 64 or 128 (for tests and the workbench; the tile
/// changes who computes each sum, not its order, so the bits are the same either way).
pub fn conv2d_fwd_bf16_tiled(
    tile: usize,
    s: &Conv2dShape,
    x: &Buffer<bf16>,
    w: &Buffer<bf16>,
    bias: Option<&Buffer<f32>>,
    emb: Option<&Buffer<f32>>,
    out: ConvOut,
) -> Result<()> {
    let op = "conv2d_fwd_bf16";
    if tile != 64 && tile != 128 {
        bail!("{op}: tile {tile} is not one of the kernels' (64, 128)");
    }
    let (y_len, res_len, out_bf16) = match &out {
        ConvOut::F32 { y, residual } => (y.len(), residual.map(|r| r.len()), false),
        ConvOut::Bf16 { y, residual } => (y.len(), residual.map(|r| r.len()), true),
    };
    let opt = |b: Option<usize>, want: usize| (b.unwrap_or(0), if b.is_some() { want } else { 0 });
    let (bias_got, bias_want) = opt(bias.map(|b| b.len()), s.out_c);
    let (emb_got, emb_want) = opt(emb.map(|b| b.len()), s.batch * s.out_c);
    let (res_got, res_want) = opt(res_len, s.y_len());
    lengths(
        op,
        &[
            ("x", x.len(), s.x_len()),
            ("w", w.len(), s.w_len()),
            ("y", y_len, s.y_len()),
            ("bias", bias_got, bias_want),
            ("emb", emb_got, emb_want),
            ("residual", res_got, res_want),
        ],
    )?;
    check(op, s, ("in_c", s.in_c))?;
    if s.y_len() == 0 {
        return Ok(());
    }
    let (rows, gpu) = (s.batch * s.out_h() * s.out_w(), x.gpu());
    let splits = conv2d_fwd_bf16_splits(s, tile);
    let partial = gpu.alloc::<f32>(if splits > 1 { splits * s.y_len() } else { 0 })?;
    let blocks = count_u32(op, splits * rows.div_ceil(tile) * s.out_c.div_ceil(tile))?;
    count_u32(op, partial.len())?;
    let tail = |args: KernelArgs| match &out {
        ConvOut::F32 { y, residual } => args.opt(*residual).buf(*y),
        ConvOut::Bf16 { y, residual } => args.opt(*residual).buf(*y),
    };
    let args = tail(KernelArgs::new().buf(x).buf(w).opt(bias).opt(emb)).i32(out_bf16 as i32);
    split_tiles(op, splits, rows.div_ceil(tile) * s.out_c.div_ceil(tile))?;
    let args = geometry(args.u32(splits as u32).buf(&partial).raw_pointer(gpu.split_counters()), s);
    launch_tiled(gpu, op, "conv2d_fwd_bf16_t128", tile, blocks, &args)
}

/// Split-K: blocks to aim for (two waves of the 132 SMs of an H100/H200), and the fewest K
/// slices (32 wide) one split may take, so the partial sums' traffic stays small beside the work.
const SPLIT_TARGET_BLOCKS: usize = 264;
const MIN_SLICES_PER_SPLIT: usize = 4;

/// How many splits of K a GEMM of `tiles` output tiles and a K of `k` gets: 1 unless the tiles
/// alone leave the GPU idle. From the shape alone, so the bits are the same on every device.
pub(crate) fn splits_for(tiles: usize, k: usize) -> usize {
    let slices = k.div_ceil(BK);
    let wanted = (SPLIT_TARGET_BLOCKS / tiles.max(1)).min(slices / MIN_SLICES_PER_SPLIT).max(1);
    // The kernels give each split ceil(slices / splits) slices: drop splits that would be empty.
    slices.div_ceil(slices.div_ceil(wanted).max(1)).max(1)
}

/// A split launch counts its splits' arrivals in one device counter per output tile
/// (kernels/gemm_bf16.cuh `gbf16_last_split`); K is split only when the tiles are few.
pub(crate) fn split_tiles(op: &str, splits: usize, tiles: usize) -> Result<()> {
    if splits > 1 && tiles > crate::gpu::SPLIT_COUNTERS {
        bail!(
            "{op}: {tiles} output tiles split {splits} ways, more than the {} split counters",
            crate::gpu::SPLIT_COUNTERS
        );
    }
    Ok(())
}

/// The forward's block tile: 128x128 (twice the reuse of every operand byte) when those tiles
/// alone make SPLIT_TARGET_BLOCKS blocks (batch 128 at 32x32: 1,024), else 64x64.
pub fn conv2d_fwd_bf16_tile(s: &Conv2dShape) -> usize {
    let rows = s.batch * s.out_h() * s.out_w();
    if rows.div_ceil(128) * s.out_c.div_ceil(128) >= SPLIT_TARGET_BLOCKS { 128 } else { TILE }
}

/// The forward's split of K with block tile `tile` (its sum is then the splits' partial sums
/// added in order).
pub fn conv2d_fwd_bf16_splits(s: &Conv2dShape, tile: usize) -> usize {
    let rows = s.batch * s.out_h() * s.out_w();
    splits_for(rows.div_ceil(tile) * s.out_c.div_ceil(tile), s.kernel * s.kernel * s.in_c)
}

/// The input gradient's block tile, as the forward's: 128x128 when those tiles alone make
/// SPLIT_TARGET_BLOCKS blocks, else 64x64.
pub fn conv2d_bwd_input_bf16_tile(s: &Conv2dShape) -> usize {
    let rows = s.batch * s.in_h * s.in_w;
    if rows.div_ceil(128) * s.in_c.div_ceil(128) >= SPLIT_TARGET_BLOCKS { 128 } else { TILE }
}

/// The input gradient's split of K with its tile (conv2d_bwd_input_bf16_tile), as the forward's.
pub fn conv2d_bwd_input_bf16_splits(s: &Conv2dShape) -> usize {
    conv2d_bwd_input_bf16_splits_tiled(s, conv2d_bwd_input_bf16_tile(s))
}

fn conv2d_bwd_input_bf16_splits_tiled(s: &Conv2dShape, tile: usize) -> usize {
    let rows = s.batch * s.in_h * s.in_w;
    splits_for(rows.div_ceil(tile) * s.in_c.div_ceil(tile), s.kernel * s.kernel * s.out_c)
}

/// dx = the input gradient of the convolution, from dy and w in bf16, in f32: the sum over (ky,
/// kx, o) in that order (kernels/conv_bwd_bf16.cu). in_c and out_c must be multiples of 8.
pub fn conv2d_bwd_input_bf16(s: &Conv2dShape, dy: &Buffer<bf16>, w: &Buffer<bf16>, dx: &mut Buffer<f32>) -> Result<()> {
    conv2d_bwd_input_bf16_tiled(conv2d_bwd_input_bf16_tile(s), s, dy, w, dx)
}

/// The input gradient with a chosen block tile, 64 or 128 (for tests and benches). The split of K
/// is the tile's (conv2d_bwd_input_bf16_splits for the launcher's own tile); with equal splits
/// the bits are the same either way.
pub fn conv2d_bwd_input_bf16_tiled(
    tile: usize,
    s: &Conv2dShape,
    dy: &Buffer<bf16>,
    w: &Buffer<bf16>,
    dx: &mut Buffer<f32>,
) -> Result<()> {
    let op = "conv2d_bwd_input_bf16";
    if tile != 64 && tile != 128 {
        bail!("{op}: tile {tile} is not one of the kernels' (64, 128)");
    }
    lengths(op, &[("dy", dy.len(), s.y_len()), ("w", w.len(), s.w_len()), ("dx", dx.len(), s.x_len())])?;
    check(op, s, ("out_c", s.out_c))?;
    check(op, s, ("in_c", s.in_c))?;
    if s.x_len() == 0 {
        return Ok(());
    }
    let (rows, gpu) = (s.batch * s.in_h * s.in_w, dy.gpu());
    let splits = conv2d_bwd_input_bf16_splits_tiled(s, tile);
    let partial = gpu.alloc::<f32>(if splits > 1 { splits * s.x_len() } else { 0 })?;
    count_u32(op, partial.len())?;
    let tiles = rows.div_ceil(tile) * s.in_c.div_ceil(tile);
    let blocks = count_u32(op, splits * tiles)?;
    split_tiles(op, splits, tiles)?;
    let args = KernelArgs::new().buf(dy).buf(w).buf(dx).u32(splits as u32).buf(&partial);
    let args = geometry(args.raw_pointer(gpu.split_counters()), s);
    launch_tiled(gpu, op, "conv2d_bwd_input_bf16_t128", tile, blocks, &args)
}

/// Launches kernel `t64` or its 128x128 twin `t128` (256 threads, twice the shared memory: twice
/// the rows per slot, past the default limit, so opted into).
fn launch_tiled(
    gpu: &crate::gpu::Gpu,
    t64: &str,
    t128: &str,
    tile: usize,
    blocks: u32,
    args: &KernelArgs,
) -> Result<()> {
    let (kernel, threads, shared) =
        if tile == 128 { (t128, 2 * THREADS, 2 * SHARED_BYTES) } else { (t64, THREADS, SHARED_BYTES) };
    if shared > crate::gpu::limits::DEFAULT_SHARED_BYTES {
        gpu.set_max_dynamic_shared(kernel, shared)?;
    }
    gpu.launch(kernel, LaunchConfig::linear(blocks, threads).with_shared(shared), args)
}

/// How conv2d_bwd_weight_bf16 splits the output pixels: (pixels per chunk, chunks). The chunks'
/// partial sums are added in chunk order, so this fixes the order of every sum (and the bits).
pub fn conv2d_bwd_weight_bf16_chunks(s: &Conv2dShape, with_db: bool) -> (usize, usize) {
    let tile = conv2d_bwd_weight_bf16_tile(s);
    conv2d_bwd_weight_bf16_chunks_for(s, with_db, tile, wgrad_target(tile))
}

/// The weight gradient's blocks to aim for with the 64x64 tile: one full wave at its residency of
/// 7 blocks per SM (30 KiB of shared memory and 72 registers a thread) on 132 SMs. At 264 (two
/// blocks per SM) cifar10's 256-channel weight gradients at batch 128 got one chunk, 148 blocks,
/// some SMs running a single block of 4 warps: the 16x16 one took 551 us on the H200, 245 us at
/// 924 (benches/conv.rs, one run).
pub const WGRAD_TARGET_BLOCKS: usize = 924;
/// With the 128x128 tile (256 threads, 128 registers, 60 KiB): 2 blocks per SM, one wave.
pub const WGRAD_T128_TARGET_BLOCKS: usize = 264;

fn wgrad_target(tile: usize) -> usize {
    if tile == 128 { WGRAD_T128_TARGET_BLOCKS } else { WGRAD_TARGET_BLOCKS }
}

/// The weight gradient's tile: 128x128 (half the issued instructions per mma, as the other
/// kernels') when out_c fills its rows and the pixels make chunks enough for a wave of those
/// blocks (batch 16 at 32x32 and up); else 64x64.
pub fn conv2d_bwd_weight_bf16_tile(s: &Conv2dShape) -> usize {
    let pixels = s.batch * s.out_h() * s.out_w();
    if s.out_c.is_multiple_of(128) && pixels >= 16384 { 128 } else { TILE }
}

/// conv2d_bwd_weight_bf16_chunks for a given tile and block target (benches and tests compare them).
pub fn conv2d_bwd_weight_bf16_chunks_for(s: &Conv2dShape, with_db: bool, tile: usize, target: usize) -> (usize, usize) {
    super::conv::wgrad_chunks(s, s.kernel * s.kernel * s.in_c + with_db as usize, BK, target, tile)
}

/// dw (and db) from x and dy in bf16, in f32: per chunk of output pixels (fixed by the shape:
/// [`super::conv::wgrad_chunks`]) a tensor-core partial sum, then the chunks added in order by
/// conv2d_bwd_weight_finish_f32. db rides along as a column of ones. in_c and out_c must be
/// multiples of 8.
pub fn conv2d_bwd_weight_bf16(
    s: &Conv2dShape,
    x: &Buffer<bf16>,
    dy: &Buffer<bf16>,
    dw: &mut Buffer<f32>,
    db: Option<&mut Buffer<f32>>,
) -> Result<()> {
    let tile = conv2d_bwd_weight_bf16_tile(s);
    conv2d_bwd_weight_bf16_target(s, x, dy, dw, db, tile, wgrad_target(tile))
}

/// conv2d_bwd_weight_bf16 with a chosen tile (64 or 128) and the pixel chunks of a block target:
/// the chunks fix the bits, the tile does not.
pub fn conv2d_bwd_weight_bf16_target(
    s: &Conv2dShape,
    x: &Buffer<bf16>,
    dy: &Buffer<bf16>,
    dw: &mut Buffer<f32>,
    db: Option<&mut Buffer<f32>>,
    tile: usize,
    target: usize,
) -> Result<()> {
    let op = "conv2d_bwd_weight_bf16";
    if tile != 64 && tile != 128 {
        bail!("{op}: tile {tile} is not one of the kernels' (64, 128)");
    }
    let (db_got, db_want) = (db.as_ref().map_or(0, |b| b.len()), if db.is_some() { s.out_c } else { 0 });
    lengths(
        op,
        &[("x", x.len(), s.x_len()), ("dy", dy.len(), s.y_len()), ("dw", dw.len(), s.w_len()), ("db", db_got, db_want)],
    )?;
    check(op, s, ("out_c", s.out_c))?;
    check(op, s, ("in_c", s.in_c))?;
    if s.w_len() == 0 {
        return Ok(());
    }
    let red = s.kernel * s.kernel * s.in_c;
    let cols = red + db.is_some() as usize;
    let (chunk_len, chunks) = conv2d_bwd_weight_bf16_chunks_for(s, db.is_some(), tile, target);
    let gpu = x.gpu();
    let partial = gpu.alloc::<f32>(chunks * s.out_c * cols)?;
    count_u32(op, partial.len())?;
    let blocks = count_u32(op, chunks * s.out_c.div_ceil(tile) * cols.div_ceil(tile))?;
    let args = KernelArgs::new().buf(x).buf(dy).buf(&partial).u32(chunk_len as u32).u32(cols as u32);
    launch_tiled(gpu, op, "conv2d_bwd_weight_bf16_t128", tile, blocks, &geometry(args, s))?;
    let args = KernelArgs::new().buf(&partial).buf(dw).opt(db.as_deref());
    let args = args.u32(s.out_c as u32).u32(red as u32).u32(cols as u32).u32(chunks as u32);
    gpu.launch("conv2d_bwd_weight_finish_f32", LaunchConfig::for_elements(s.out_c * cols, 256), &args)
}
