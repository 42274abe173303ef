//! Launchers of kernels/linear.cu.

use super::count_u32;
use crate::gpu::{Buffer, DType, KernelArgs, LaunchConfig};
use crate::shapes::LinearShape;
use anyhow::Result;

/// The GEMM kernels' block (they assume exactly this) and output tile.
const GEMM_THREADS: u32 = 256;
const GEMM_TILE: usize = 64;
/// linear_bwd_bias_f32's block: 32 column lanes x 8 row strides.
const BIAS_THREADS: u32 = 256;
const MAX_GRID: usize = 65535;

/// One block per 64x64 tile of the [m, n] output (a grid-stride loop covers the rest).
fn gemm_launch(m: usize, n: usize) -> LaunchConfig {
    LaunchConfig::linear((m.div_ceil(GEMM_TILE) * n.div_ceil(GEMM_TILE)).min(MAX_GRID) as u32, GEMM_THREADS)
}

/// rows, in, out as the kernels take them, after checking every flat size fits 32 bits.
fn dims(op: &str, s: &LinearShape, args: KernelArgs) -> Result<KernelArgs> {
    for n in [s.rows * s.in_features, s.rows * s.out_features, s.in_features * s.out_features] {
        count_u32(op, n)?;
    }
    Ok(args.u32(s.rows as u32).u32(s.in_features as u32).u32(s.out_features as u32))
}

pub fn linear_fwd_f32(
    s: &LinearShape,
    x: &Buffer<f32>,
    w: &Buffer<f32>,
    b: Option<&Buffer<f32>>,
    y: &mut Buffer<f32>,
) -> Result<()> {
    let args = KernelArgs::new().buf(x).buf(w);
    let args = match b {
        Some(b) => args.buf(b),
        None => args.null(),
    };
    let args = dims("linear_fwd", s, args.buf(y))?;
    x.gpu().launch("linear_fwd_f32", gemm_launch(s.rows, s.out_features), &args)
}

pub fn linear_bwd_input_f32(s: &LinearShape, dy: &Buffer<f32>, w: &Buffer<f32>, dx: &mut Buffer<f32>) -> Result<()> {
    let args = dims("linear_bwd_input", s, KernelArgs::new().buf(dy).buf(w).buf(dx))?;
    dy.gpu().launch("linear_bwd_input_f32", gemm_launch(s.rows, s.in_features), &args)
}

pub fn linear_bwd_weight_f32(
    s: &LinearShape,
    x: &Buffer<f32>,
    dy: &Buffer<f32>,
    dw: &mut Buffer<f32>,
    db: Option<&mut Buffer<f32>>,
) -> Result<()> {
    let gpu = x.gpu();
    let args = dims("linear_bwd_weight", s, KernelArgs::new().buf(x).buf(dy).buf(dw))?;
    gpu.launch("linear_bwd_weight_f32", gemm_launch(s.out_features, s.in_features), &args)?;
    if let Some(db) = db {
        let args = KernelArgs::new().buf(dy).buf(db).u32(s.rows as u32).u32(s.out_features as u32);
        let blocks = s.out_features.div_ceil(32).min(MAX_GRID) as u32;
        gpu.launch("linear_bwd_bias_f32", LaunchConfig::linear(blocks, BIAS_THREADS), &args)?;
    }
    Ok(())
}

/// kernels/linear_bf16.cu's tile, block and pipeline (the kernel assumes exactly these).
const BF16_TILE: usize = 64;
const BF16_THREADS: u32 = 128;
const BF16_SHARED_BYTES: u32 = 3 * 2 * 64 * 40 * 2;

/// What the bf16 forward stores: f32, or bf16 rounded once from the f32 value (what attention's
/// bf16 kernels read).
pub trait LinearOut: DType {
    const KERNEL: &'static str;
}
impl LinearOut for f32 {
    const KERNEL: &'static str = "linear_fwd_bf16";
}
impl LinearOut for half::bf16 {
    const KERNEL: &'static str = "linear_fwd_bf16_to_bf16";
}

/// y = x W^T + b on the tensor cores: x [rows][in] and W [out][in] in bf16, b in f32, y in f32 or
/// bf16, f32 accumulation in a fixed order (kernels/linear_bf16.cu). in_features must be a
/// multiple of 8 (16-byte rows for cp.async).
pub fn linear_fwd_bf16<T: LinearOut>(
    s: &LinearShape,
    x: &Buffer<half::bf16>,
    w: &Buffer<half::bf16>,
    b: Option<&Buffer<f32>>,
    y: &mut Buffer<T>,
) -> Result<()> {
    let op = T::KERNEL;
    let (bias_len, bias_want) = (b.map_or(0, |b| b.len()), if b.is_some() { s.out_features } else { 0 });
    crate::shapes::lengths(
        op,
        &[
            ("x", x.len(), s.rows * s.in_features),
            ("w", w.len(), s.out_features * s.in_features),
            ("y", y.len(), s.rows * s.out_features),
            ("bias", bias_len, bias_want),
        ],
    )?;
    if !s.in_features.is_multiple_of(8) {
        anyhow::bail!("{op}: in_features {} must be a multiple of 8", s.in_features);
    }
    let blocks = count_u32(op, s.rows.div_ceil(BF16_TILE) * s.out_features.div_ceil(BF16_TILE))?;
    let args = dims(op, s, KernelArgs::new().buf(x).buf(w).opt(b).buf(y))?;
    let cfg = LaunchConfig::linear(blocks, BF16_THREADS).with_shared(BF16_SHARED_BYTES);
    y.gpu().launch(op, cfg, &args)
}

/// An attention block's q, k and v projections of one input in one launch: three
/// `linear_fwd_bf16` into bf16, bit for bit, with a grid of 3 x the tiles (kernels/linear_bf16.cu).
pub fn linear_fwd_bf16_to_bf16_x3(
    s: &LinearShape,
    x: &Buffer<half::bf16>,
    w: [&Buffer<half::bf16>; 3],
    b: [Option<&Buffer<f32>>; 3],
    y: [&mut Buffer<half::bf16>; 3],
) -> Result<()> {
    let op = "linear_fwd_bf16_to_bf16_x3";
    let mut lens = vec![("x", x.len(), s.rows * s.in_features)];
    let names = [["w_q", "y_q", "b_q"], ["w_k", "y_k", "b_k"], ["w_v", "y_v", "b_v"]];
    for (i, [w_name, y_name, b_name]) in names.into_iter().enumerate() {
        lens.push((w_name, w[i].len(), s.out_features * s.in_features));
        lens.push((y_name, y[i].len(), s.rows * s.out_features));
        lens.push((b_name, b[i].map_or(s.out_features, |b| b.len()), s.out_features));
    }
    crate::shapes::lengths(op, &lens)?;
    if !s.in_features.is_multiple_of(8) {
        anyhow::bail!("{op}: in_features {} must be a multiple of 8", s.in_features);
    }
    let blocks = count_u32(op, s.rows.div_ceil(BF16_TILE) * s.out_features.div_ceil(BF16_TILE))?;
    if blocks == 0 {
        return Ok(());
    }
    let [y0, y1, y2] = y;
    let args = KernelArgs::new().buf(x).buf(w[0]).buf(w[1]).buf(w[2]).opt(b[0]).opt(b[1]).opt(b[2]);
    let args = dims(op, s, args.buf(y0).buf(y1).buf(y2))?;
    let mut cfg = LaunchConfig::linear(blocks, BF16_THREADS).with_shared(BF16_SHARED_BYTES);
    cfg.grid[1] = 3;
    x.gpu().launch(op, cfg, &args)
}

/// The bf16 backward's checks: lengths, and the 16-byte chunks' multiples of 8 (kernels/linear_bf16.cu).
fn check_bwd_bf16(op: &str, s: &LinearShape, lengths: &[(&str, usize, usize)]) -> Result<()> {
    crate::shapes::lengths(op, lengths)?;
    for (name, n) in [("in_features", s.in_features), ("out_features", s.out_features)] {
        if !n.is_multiple_of(8) {
            anyhow::bail!("{op}: {name} {n} must be a multiple of 8");
        }
    }
    Ok(())
}

/// Launches a bf16 GEMM kernel over an m x n output in 64x64 tiles; nothing when the output is empty.
fn launch_bf16(gpu: &crate::gpu::Gpu, op: &str, m: usize, n: usize, args: &KernelArgs) -> Result<()> {
    let blocks = count_u32(op, m.div_ceil(BF16_TILE) * n.div_ceil(BF16_TILE))?;
    if blocks == 0 {
        return Ok(());
    }
    gpu.launch(op, LaunchConfig::linear(blocks, BF16_THREADS).with_shared(BF16_SHARED_BYTES), args)
}

/// dx = dy W on the tensor cores: dy [rows][out] and W [out][in] in bf16, dx in f32, f32
/// accumulation over out in a fixed order (kernels/linear_bf16.cu). in_features and out_features
/// must be multiples of 8.
pub fn linear_bwd_input_bf16(
    s: &LinearShape,
    dy: &Buffer<half::bf16>,
    w: &Buffer<half::bf16>,
    dx: &mut Buffer<f32>,
) -> Result<()> {
    let op = "linear_bwd_input_bf16";
    check_bwd_bf16(
        op,
        s,
        &[
            ("dy", dy.len(), s.rows * s.out_features),
            ("w", w.len(), s.out_features * s.in_features),
            ("dx", dx.len(), s.rows * s.in_features),
        ],
    )?;
    let args = dims(op, s, KernelArgs::new().buf(dy).buf(w).buf(dx))?;
    launch_bf16(dy.gpu(), op, s.rows, s.in_features, &args)
}

/// dW = dy^T x and db = the column sums of dy on the tensor cores: x [rows][in] and dy [rows][out]
/// in bf16, dW [out][in] and db [out] in f32, f32 accumulation over rows in a fixed order; db is
/// an extra ones column of the same GEMM (kernels/linear_bf16.cu). in_features and out_features
/// must be multiples of 8; rows need not be.
pub fn linear_bwd_weight_bf16(
    s: &LinearShape,
    x: &Buffer<half::bf16>,
    dy: &Buffer<half::bf16>,
    dw: &mut Buffer<f32>,
    db: Option<&mut Buffer<f32>>,
) -> Result<()> {
    let splits = linear_bwd_weight_bf16_splits(s, db.is_some());
    linear_bwd_weight_bf16_split(s, x, dy, dw, db, splits)
}

/// linear_bwd_weight_bf16 with the rows shared by `splits` blocks per output tile (at most one
/// 32-row slice short of equal shares; a split left empty is an error): for benches and tests
/// that compare splittings. The sum's order, so the bits, depend on `splits`.
pub fn linear_bwd_weight_bf16_split(
    s: &LinearShape,
    x: &Buffer<half::bf16>,
    dy: &Buffer<half::bf16>,
    dw: &mut Buffer<f32>,
    db: Option<&mut Buffer<f32>>,
    splits: usize,
) -> Result<()> {
    let op = "linear_bwd_weight_bf16";
    let slices = s.rows.div_ceil(32);
    if splits == 0 || (splits > 1 && (splits - 1) * slices.div_ceil(splits) >= slices) {
        anyhow::bail!("{op}: {} rows ({slices} slices of 32) cannot be split {splits} ways", s.rows);
    }
    let (db_len, db_want) = (db.as_ref().map_or(0, |b| b.len()), if db.is_some() { s.out_features } else { 0 });
    check_bwd_bf16(
        op,
        s,
        &[
            ("x", x.len(), s.rows * s.in_features),
            ("dy", dy.len(), s.rows * s.out_features),
            ("dw", dw.len(), s.out_features * s.in_features),
            ("db", db_len, db_want),
        ],
    )?;
    let cols = s.in_features + usize::from(db.is_some());
    let tiles = s.out_features.div_ceil(BF16_TILE) * cols.div_ceil(BF16_TILE);
    super::conv_bf16::split_tiles(op, splits, tiles)?;
    let gpu = x.gpu();
    let partial = gpu.alloc::<f32>(if splits > 1 { splits * s.out_features * cols } else { 0 })?;
    count_u32(op, partial.len())?;
    let args = KernelArgs::new().buf(x).buf(dy).buf(dw);
    let args = match db {
        Some(db) => args.buf(db),
        None => args.null(),
    };
    let args = args.u32(splits as u32).buf(&partial).raw_pointer(gpu.split_counters());
    let blocks = count_u32(op, splits * tiles)?;
    if blocks == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig::linear(blocks, BF16_THREADS).with_shared(BF16_SHARED_BYTES);
    gpu.launch(op, cfg, &dims(op, s, args)?)
}

/// How many blocks share the rows (the sum) of linear_bwd_weight_bf16's output tiles: 1 unless
/// the tiles alone leave the GPU idle (an attention projection at batch 128: 20 tiles, 32,768
/// rows). From the shape alone, so the bits are the same on every device; the splits' partial
/// sums are added in split order.
pub fn linear_bwd_weight_bf16_splits(s: &LinearShape, with_db: bool) -> usize {
    let cols = s.in_features + usize::from(with_db);
    super::conv_bf16::splits_for(s.out_features.div_ceil(BF16_TILE) * cols.div_ceil(BF16_TILE), s.rows)
}
