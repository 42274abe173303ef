//! Launchers of kernels/conv.cu. Callers (the CUDA backend) have checked the buffer lengths
//! against the shape; these check that the kernels' 32-bit index arithmetic cannot overflow.

use super::count_u32;
use crate::gpu::{Buffer, KernelArgs, LaunchConfig};
use crate::shapes::Conv2dShape;
use anyhow::Result;

/// The kernels' block: 256 threads computing a 64 x 64 output tile (kernels/conv.cu).
const THREADS: u32 = 256;
const TILE: usize = 64;
/// Blocks beyond this loop over the remaining tiles (the kernels' block-stride loops).
const MAX_BLOCKS: usize = 65535;
/// The weight gradient's pixel chunks: enough chunks to give a GPU about this many blocks, but
/// none shorter than MIN_CHUNK pixels. Chosen from the shape alone, so the reduction order, and
/// the bits of dw, are the same on every device.
const WGRAD_TARGET_BLOCKS: usize = 264;
const WGRAD_MIN_CHUNK: usize = 256;
/// The kernels' reduction step: chunks are whole steps.
const BK: usize = 16;

fn tiles(n: usize) -> usize {
    n.div_ceil(TILE)
}

fn blocks(op: &str, n: usize) -> Result<LaunchConfig> {
    count_u32(op, n)?;
    Ok(LaunchConfig::linear(n.clamp(1, MAX_BLOCKS) as u32, THREADS))
}

/// The geometry that ends every GEMM kernel's parameter list, in its order. The bottom and right
/// padding are implied by out_h and out_w.
fn geometry(args: KernelArgs, s: &Conv2dShape) -> KernelArgs {
    [s.batch, s.in_h, s.in_w, s.in_c, s.out_h(), s.out_w(), s.out_c, s.kernel, s.stride, s.pad.top, s.pad.left]
        .into_iter()
        .fold(args, |a, v| a.u32(v as u32))
}

/// Every index the kernels form is below one of these sizes, so it fits in u32.
fn check_u32(op: &str, s: &Conv2dShape, extra: usize) -> Result<()> {
    for n in [s.x_len(), s.y_len(), s.w_len(), extra] {
        count_u32(op, n)?;
    }
    Ok(())
}

pub fn conv2d_fwd_f32(
    s: &Conv2dShape,
    x: &Buffer<f32>,
    w: &Buffer<f32>,
    b: Option<&Buffer<f32>>,
    y: &mut Buffer<f32>,
) -> Result<()> {
    check_u32("conv2d_fwd", s, 0)?;
    let rows = s.batch * s.out_h() * s.out_w();
    let args = KernelArgs::new().buf(x).buf(w);
    let args = match b {
        Some(b) => args.buf(b),
        None => args.null(),
    };
    let args = geometry(args.buf(y), s);
    x.gpu().launch("conv2d_fwd_f32", blocks("conv2d_fwd", tiles(rows) * tiles(s.out_c))?, &args)
}

pub fn conv2d_bwd_input_f32(s: &Conv2dShape, dy: &Buffer<f32>, w: &Buffer<f32>, dx: &mut Buffer<f32>) -> Result<()> {
    check_u32("conv2d_bwd_input", s, 0)?;
    let rows = s.batch * s.in_h * s.in_w;
    let args = geometry(KernelArgs::new().buf(dy).buf(w).buf(dx), s);
    dy.gpu().launch("conv2d_bwd_input_f32", blocks("conv2d_bwd_input", tiles(rows) * tiles(s.in_c))?, &args)
}

/// How the weight gradient splits its output pixels into chunks of whole `step`s (the kernel's
/// reduction step), for 64x64 output tiles: (pixels per chunk, chunks). The bf16 kernels use it too.
/// `target`: the blocks to aim for; `tile`: the output tile's side.
pub(super) fn wgrad_chunks(s: &Conv2dShape, cols: usize, step: usize, target: usize, tile: usize) -> (usize, usize) {
    let pixels = s.batch * s.out_h() * s.out_w();
    let wanted = (target / (s.out_c.div_ceil(tile) * cols.div_ceil(tile))).max(1);
    let chunks = wanted.min(pixels.div_ceil(WGRAD_MIN_CHUNK)).max(1);
    let chunk_len = pixels.div_ceil(chunks).next_multiple_of(step);
    (chunk_len, pixels.div_ceil(chunk_len))
}

/// conv2d_bwd_weight_narrow_f32 (kernels/conv.cu): for out_c up to NARROW_OUT, a thread per
/// weight column keeping out_c sums; NARROW_BLOCKS blocks aimed for (8 per SM of an H100/H200:
/// each thread's chain is a chunk of pixels, and more of them hide the loads' latency).
const NARROW_OUT: usize = 8;
const NARROW_THREADS: u32 = 256;
const NARROW_BLOCKS: usize = 1056;
const NARROW_MIN_CHUNK: usize = 64;

/// The narrow kernel's chunks of output pixels: (pixels per chunk, chunks), from the shape alone.
fn narrow_chunks(s: &Conv2dShape, cols: usize) -> (usize, usize) {
    let pixels = s.batch * s.out_h() * s.out_w();
    let wanted = (NARROW_BLOCKS / cols.div_ceil(NARROW_THREADS as usize)).max(1);
    let chunk_len = pixels.div_ceil(wanted.min(pixels.div_ceil(NARROW_MIN_CHUNK)).max(1)).max(1);
    (chunk_len, pixels.div_ceil(chunk_len))
}

pub fn conv2d_bwd_weight_f32(
    s: &Conv2dShape,
    x: &Buffer<f32>,
    dy: &Buffer<f32>,
    dw: &mut Buffer<f32>,
    db: Option<&mut Buffer<f32>>,
) -> Result<()> {
    conv2d_bwd_weight_f32_path(s, x, dy, dw, db, s.out_c <= NARROW_OUT)
}

/// conv2d_bwd_weight_f32 on the path asked for: `narrow` (out_c up to 8 only) or the 64x64
/// tiles, for benches that compare them. The pixel chunks, so the bits, differ between paths.
pub fn conv2d_bwd_weight_f32_path(
    s: &Conv2dShape,
    x: &Buffer<f32>,
    dy: &Buffer<f32>,
    dw: &mut Buffer<f32>,
    db: Option<&mut Buffer<f32>>,
    narrow: bool,
) -> Result<()> {
    let op = "conv2d_bwd_weight";
    if narrow && s.out_c > NARROW_OUT {
        anyhow::bail!("{op}: the narrow kernel takes at most {NARROW_OUT} output channels, not {}", s.out_c);
    }
    let red = s.kernel * s.kernel * s.in_c;
    let cols = red + db.is_some() as usize;
    let (chunk_len, chunks) =
        if narrow { narrow_chunks(s, cols) } else { wgrad_chunks(s, cols, BK, WGRAD_TARGET_BLOCKS, TILE) };
    check_u32(op, s, chunks * s.out_c * cols)?;
    let gpu = x.gpu();
    let partial = gpu.alloc::<f32>(chunks * s.out_c * cols)?;
    let args = KernelArgs::new().buf(x).buf(dy).buf(&partial).u32(chunk_len as u32);
    if narrow {
        let col_blocks = cols.div_ceil(NARROW_THREADS as usize);
        let args = geometry(args.u32(col_blocks as u32).i32(db.is_some() as i32), s);
        let narrow_blocks = count_u32(op, chunks * col_blocks)?;
        if narrow_blocks > 0 {
            gpu.launch("conv2d_bwd_weight_narrow_f32", LaunchConfig::linear(narrow_blocks, NARROW_THREADS), &args)?;
        }
    } else {
        let args = geometry(args.u32(chunks as u32).i32(db.is_some() as i32), s);
        gpu.launch("conv2d_bwd_weight_f32", blocks(op, chunks * tiles(s.out_c) * tiles(cols))?, &args)?;
    }
    let args = KernelArgs::new().buf(&partial).buf(dw);
    let args = match db {
        Some(db) => args.buf(db),
        None => args.null(),
    };
    let args = args.u32(s.out_c as u32).u32(red as u32).u32(cols as u32).u32(chunks as u32);
    gpu.launch("conv2d_bwd_weight_finish_f32", LaunchConfig::for_elements(s.out_c * cols, THREADS), &args)
}
