//! Fast 2-D convolution, NHWC activations, OHWI weights: the ops of src/cpu/conv.rs, as GEMMs
//! from the `gemm` crate over L2-sized blocks.
//!
//! Two formulations, chosen by shape:
//! - **1x1, stride 1, no padding**: the image already is a [pixels, channels] matrix, so each op
//!   is a plain GEMM (forward and input gradient in parallel blocks of pixels).
//! - **Everything else: im2col in blocks.** A block of output pixels (up to 256) is unrolled into
//!   a [rows, k*k*Ci] scratch matrix (zeros for padding), then one GEMM against the OHWI weights,
//!   which already are the [Co, k*k*Ci] matrix it needs (transposed view, no copy). Blocks run in
//!   parallel, one thread per GEMM. The input gradient gathers rather than scatters, so parallel
//!   blocks never write the same dx: input pixels are grouped by their phase (iy + pad) mod
//!   stride, and each phase multiplies a gathered block of dy by the taps that can reach it
//!   (weights repacked per phase), so a stride-2 conv does no work for taps that read nothing.
//!   The weight gradient is dW[Co, k*k*Ci] = sum over fixed chunks of pixels of
//!   dy_chunk^T col_chunk, chunks in order, each GEMM spread over all threads.
//!
//! Why not the copy-free "shifted views" formulation (pad x once; on the flat padded grid output
//! q reads pixel q + ky*Wp + kx, so each tap, or each kernel row with K = k*Ci, is a GEMM over a
//! strided view of the padded image): it was built and measured (commit 6ed6f57 has the per-tap
//! version) and came out 5-35% slower than im2col on every cifar10 shape, forward and both
//! backwards, even with the k taps of a kernel row merged into one GEMM. The gemm crate packs its
//! left operand anyway, so the im2col copy costs about what the packing of a strided view does,
//! while one GEMM with K = 9*Ci keeps the accumulator in registers 3-9x longer than k or k*k
//! accumulating GEMMs, and the padded grid adds junk rows (13% at 32x32, 56% at 8x8).
//!
//! Determinism: block and chunk sizes depend only on the shape, never on the thread count; each
//! GEMM's sum over K runs in an order fixed by its (m, n, k) (the gemm crate splits work over rows
//! and columns, never over K); the chunks of the weight gradient add up sequentially in order.
//! So the bits are the same on every run and every thread count.
//! Scratch comes from `with_scratch`: no allocation once the buffers have grown.

use super::bf16::Precision;
pub use super::conv_backward::conv3x3_bwd_weight_with;
use super::conv_backward::{gather_bwd_input, im2col_bwd_weight};
use super::gemm::{Mat, MatMut, Threads, matmul};
use super::gemm_bf16::{Bf16Kernel, PackedRhs, matmul_packed};
use super::prepared;
use super::scratch::with_scratch;
use super::winograd::{self, Geometry};
use super::winograd_grad;
use super::winograd4;
use crate::shapes::Conv2dShape;
use rayon::prelude::*;

/// Most output pixels per block of the forward and input gradient: the unrolled block
/// [rows, k*k*Ci] (1.2 MB for a 3x3 over 128 channels) and the output block stay in a core's L2
/// (2 MiB here).
const BLOCK_ROWS: usize = 256;

/// Small images are cut into at least this many blocks (down to 16 rows each) so that both cores
/// get work. Not more: every block's GEMM packs the whole weight matrix again, and with four
/// blocks that packing cost more than it parallelised (batch 1: 8x8 256->256 forward 94-106 ->
/// 123-140 GFLOP/s, 16x16 512->256 167-169 -> 179-183 with two). A constant, not the thread
/// count, so the blocks (and bits) never depend on it.
const MIN_BLOCKS: usize = 2;

/// Rows per block for `pixels` rows of output.
pub(super) fn block_rows(pixels: usize) -> usize {
    pixels.div_ceil(MIN_BLOCKS).next_multiple_of(16).clamp(16, BLOCK_ROWS)
}

/// Target size (floats) of one chunk of the weight gradient's unrolled input: 512 pixels of a
/// 3x3 over 128 channels, more pixels when there are fewer channels so that the chunk GEMMs
/// stay big enough to share between threads.
pub(super) const WEIGHT_GRAD_CHUNK_FLOATS: usize = 512 * 1152;

/// Partial sums of the weight gradient computed side by side (a shape-independent constant, not
/// the thread count, so the bits are the same on any number of threads).
pub(super) const WEIGHT_GRAD_PARTIALS: usize = 2;

pub fn conv2d_fwd(s: &Conv2dShape, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) {
    conv2d_fwd_as(s, x, w, Precision::F32, b, y)
}

/// [`conv2d_fwd`] with the weights used as they are (f32) or rounded to bf16 (src/fast/bf16.rs;
/// x is the caller's to round): the rounding is part of the weights' preparation, kept with it.
pub(crate) fn conv2d_fwd_as(s: &Conv2dShape, x: &[f32], w: &[f32], wp: Precision, b: Option<&[f32]>, y: &mut [f32]) {
    check(s, x.len(), w.len(), y.len());
    if let Some(b) = b {
        assert_eq!(b.len(), s.out_c, "conv2d_fwd: bias length");
    }
    if let Some((g, tile)) = winograd_geometry(s, false) {
        return winograd_conv(&g, tile, false, x, w, wp, b, y);
    }
    // The GEMMs read the weights as [k, out_c] rows, prepared once while they stay the same
    // (src/fast/prepared.rs): the gemm crate then multiplies them without packing them.
    let k = s.kernel * s.kernel * s.in_c;
    let kind = prepared::Kind::Transposed { rows: s.out_c, cols: k };
    let transpose = |w: &[f32], wt: &mut [f32]| winograd::transpose(w, s.out_c, k, wt);
    prepared::with_prepared(w, kind, wp, w.len(), transpose, |wt| {
        let weights = Weights::F32(Mat::rows(wt, k, s.out_c));
        if is_pointwise(s) { pointwise_rows(x, s.in_c, weights, b, y) } else { im2col_fwd(s, x, weights, b, y) }
    })
}

/// The forward with bf16 operands multiplied by `kernel` (src/fast/gemm_bf16.rs, which rounds x
/// and w as it packs them): the weights packed once for every block, then the 1x1 or im2col
/// blocks of [`conv2d_fwd`]. No Winograd: it would round the transformed operands, not x and w,
/// and the bf16 contract is about x and w (src/fast/bf16.rs).
pub fn conv2d_fwd_bf16(kernel: Bf16Kernel, s: &Conv2dShape, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) {
    check(s, x.len(), w.len(), y.len());
    if let Some(b) = b {
        assert_eq!(b.len(), s.out_c, "conv2d_fwd: bias length");
    }
    let packed = PackedRhs::new(Mat::rows(w, s.out_c, s.kernel * s.kernel * s.in_c).t());
    let weights = Weights::Bf16(kernel, &packed);
    if is_pointwise(s) {
        pointwise_rows(x, s.in_c, weights, b, y);
    } else {
        im2col_fwd(s, x, weights, b, y);
    }
}

/// The right operand of the forward's products: an f32 view, or bf16 pairs packed once.
#[derive(Clone, Copy)]
enum Weights<'a> {
    F32(Mat<'a>),
    Bf16(Bf16Kernel, &'a PackedRhs),
}

impl Weights<'_> {
    fn cols(&self) -> usize {
        match self {
            Weights::F32(m) => m.cols,
            Weights::Bf16(_, p) => p.n,
        }
    }
    /// dst = lhs * self.
    fn multiply(&self, dst: MatMut, lhs: Mat, threads: Threads) {
        match *self {
            Weights::F32(rhs) => matmul(dst, lhs, rhs, false, threads),
            Weights::Bf16(kernel, packed) => matmul_packed(kernel, dst, lhs, packed, false, threads),
        }
    }
}

pub fn conv2d_bwd_input(s: &Conv2dShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    check(s, dx.len(), w.len(), dy.len());
    if is_pointwise(s) {
        pointwise_rows(dy, s.out_c, Weights::F32(Mat::rows(w, s.out_c, s.in_c)), None, dx);
    } else if let Some((g, tile)) = winograd_geometry(s, true) {
        winograd_conv(&g, tile, true, dy, w, Precision::F32, None, dx);
    } else {
        gather_bwd_input(s, dy, w, dx);
    }
}

pub fn conv2d_bwd_weight(s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32], db: Option<&mut [f32]>) {
    check(s, x.len(), dw.len(), dy.len());
    if is_pointwise(s) {
        let pixels = s.batch * s.in_h * s.in_w;
        let dst = MatMut::rows(dw, s.out_c, s.in_c);
        matmul(dst, Mat::rows(dy, pixels, s.out_c).t(), Mat::rows(x, pixels, s.in_c), false, Threads::All);
    } else if let Some((g, tile)) = winograd_geometry(s, false) {
        winograd_grad::weight_grad(tile, &g, x, dy, dw);
    } else {
        im2col_bwd_weight(s, x, dy, dw);
    }
    if let Some(db) = db {
        bias_grad(s.out_c, dy, db);
    }
}

pub(super) fn check(s: &Conv2dShape, x_len: usize, w_len: usize, y_len: usize) {
    s.validate().expect("conv2d shape");
    assert_eq!(x_len, s.x_len(), "conv2d: input length");
    assert_eq!(w_len, s.w_len(), "conv2d: weight length");
    assert_eq!(y_len, s.y_len(), "conv2d: output length");
}

/// `DDPM_NO_WINOGRAD=1` runs every 3x3 through im2col instead: for comparing the two algorithms
/// (benchmarks, kernel research). Read once.
static WINOGRAD_OFF: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("DDPM_NO_WINOGRAD").is_some());

/// The two Winograd transforms: F(2x2, 3x3) (src/fast/winograd.rs) and F(4x4, 3x3)
/// (src/fast/winograd4.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tile {
    F2,
    F4,
}

/// `DDPM_WINOGRAD=2` or `DDPM_WINOGRAD=4` runs every conv that takes the Winograd path with
/// F(2x2) or F(4x4) instead of the shape rule's pick: for A/B runs of one binary. Read once; any
/// other value is ignored.
static WINOGRAD_TILE: std::sync::LazyLock<Option<Tile>> =
    std::sync::LazyLock::new(|| match std::env::var("DDPM_WINOGRAD").as_deref() {
        Ok("2") => Some(Tile::F2),
        Ok("4") => Some(Tile::F4),
        _ => None,
    });

/// Fewest 4x4 tiles for which F(4x4) is used instead of F(2x2). Measured (benches/winograd.rs,
/// 2-core AVX2+FMA EPYC, f32): at 256 tiles and more (the cifar10 convs at 32x32 and 16x16,
/// batch 16) F(4x4) took 0.58-0.67 of F(2x2)'s time, forward and input gradient; at 64 tiles
/// (8x8 at batch 16, 32x32 at batch 1) 0.86-1.25x, at 16 and 4 tiles 0.72-1.74x, mostly slower:
/// its blocks get too few rows for efficient GEMMs and its transforms cost more per tile.
const MIN_TILES_F4: usize = 256;

/// The Winograd geometry and transform of a 3x3, stride-1, padding-1 conv with enough tiles to
/// pay off (see src/fast/winograd.rs); `backward` gives the input gradient's (channels swapped).
fn winograd_geometry(s: &Conv2dShape, backward: bool) -> Option<(Geometry, Tile)> {
    let p = s.pad;
    let same = s.kernel == 3 && s.stride == 1 && [p.top, p.bottom, p.left, p.right] == [1; 4];
    // Very few channels (the image-facing convs) leave the 16 GEMMs too thin to win.
    let (cin, cout) = if backward { (s.out_c, s.in_c) } else { (s.in_c, s.out_c) };
    let g = Geometry { batch: s.batch, h: s.in_h, w: s.in_w, cin, cout };
    if *WINOGRAD_OFF || !same || cin < 16 || cout < 16 || g.tiles() < winograd::MIN_TILES {
        return None;
    }
    let by_shape = if winograd4::tiles(&g) >= MIN_TILES_F4 { Tile::F4 } else { Tile::F2 };
    Some((g, WINOGRAD_TILE.unwrap_or(by_shape)))
}

/// Whether [`conv2d_fwd`] computes `s` by Winograd (src/fast/bf16.rs keeps such convs on f32
/// products).
pub fn uses_winograd(s: &Conv2dShape) -> bool {
    winograd_geometry(s, false).is_some()
}

/// A 3x3 conv's algorithm, forced: for side-by-side benches (benches/winograd.rs) of what
/// [`conv2d_fwd`] and [`conv2d_bwd_input`] otherwise pick by shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conv3x3Algo {
    Im2col,
    WinogradF2,
    WinogradF4,
}

/// [`conv2d_fwd`] (`backward` false: x, bias b, into y) or [`conv2d_bwd_input`] (x = dy, into
/// y = dx) of a 3x3, stride-1, padding-1 conv by `algo`, whatever its shape.
pub fn conv3x3_with(
    algo: Conv3x3Algo,
    backward: bool,
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
) {
    let p = s.pad;
    assert!(s.kernel == 3 && s.stride == 1 && [p.top, p.bottom, p.left, p.right] == [1; 4], "conv3x3_with: {s:?}");
    let (cin, cout) = if backward { (s.out_c, s.in_c) } else { (s.in_c, s.out_c) };
    let g = Geometry { batch: s.batch, h: s.in_h, w: s.in_w, cin, cout };
    match (algo, backward) {
        (Conv3x3Algo::Im2col, false) => im2col_fwd(s, x, Weights::F32(Mat::rows(w, s.out_c, 9 * s.in_c).t()), b, y),
        (Conv3x3Algo::Im2col, true) => gather_bwd_input(s, x, w, y),
        (Conv3x3Algo::WinogradF2, _) => winograd_conv(&g, Tile::F2, backward, x, w, Precision::F32, b, y),
        (Conv3x3Algo::WinogradF4, _) => winograd_conv(&g, Tile::F4, backward, x, w, Precision::F32, b, y),
    }
}

/// y = conv3x3(x) (+ bias) by Winograd `tile`: the forward with OHWI weights w, or (`backward`)
/// the input gradient, x = dy, with w flipped and transposed.
#[allow(clippy::too_many_arguments)]
fn winograd_conv(
    g: &Geometry,
    tile: Tile,
    backward: bool,
    x: &[f32],
    w: &[f32],
    wp: Precision,
    b: Option<&[f32]>,
    y: &mut [f32],
) {
    // The filters take the conv's own channel order: (in_c, out_c) = (g.cout, g.cin) backward.
    let (ci, co) = if backward { (g.cout, g.cin) } else { (g.cin, g.cout) };
    let len = if tile == Tile::F2 { 16 } else { 36 } * ci * co;
    let filters = |w: &[f32], u: &mut [f32]| match (tile, backward) {
        (Tile::F2, false) => winograd::forward_filters(w, ci, co, u),
        (Tile::F2, true) => winograd::backward_filters(w, ci, co, u),
        (Tile::F4, false) => winograd4::forward_filters(w, ci, co, u),
        (Tile::F4, true) => winograd4::backward_filters(w, ci, co, u),
    };
    let mut conv = |u: &[f32]| match tile {
        Tile::F2 => winograd::conv3x3(g, x, u, b, y),
        Tile::F4 => winograd4::conv3x3(g, x, u, b, y),
    };
    // The forward's filters are kept while the weights stay the same (sampling); the input
    // gradient's are training's, whose weights change every step.
    if backward {
        assert_eq!(wp, Precision::F32, "winograd_conv: the input gradient's weights come rounded");
        return with_scratch([len], |[u]| {
            filters(w, u);
            conv(u)
        });
    }
    let kind = match tile {
        Tile::F2 => prepared::Kind::WinogradF2 { cin: ci, cout: co },
        Tile::F4 => prepared::Kind::WinogradF4 { cin: ci, cout: co },
    };
    prepared::with_prepared(w, kind, wp, len, filters, conv)
}

fn is_pointwise(s: &Conv2dShape) -> bool {
    let p = s.pad;
    s.kernel == 1 && s.stride == 1 && p.top == 0 && p.bottom == 0 && p.left == 0 && p.right == 0
}

/// db[o] = sum over pixels of dy[p, o], pixels in order (the reference's order).
pub fn bias_grad(co: usize, dy: &[f32], db: &mut [f32]) {
    assert_eq!(db.len(), co, "conv2d_bwd_weight: bias gradient length");
    db.fill(0.0);
    for px in dy.chunks_exact(co) {
        for (d, &g) in db.iter_mut().zip(px) {
            *d += g;
        }
    }
}

fn add_bias(rows: &mut [f32], b: Option<&[f32]>) {
    if let Some(b) = b {
        for row in rows.chunks_exact_mut(b.len()) {
            for (v, &bv) in row.iter_mut().zip(b) {
                *v += bv;
            }
        }
    }
}

/// The threads for the GEMM of each of `blocks` parallel blocks: one per block when there are
/// enough blocks to share out, otherwise all of them inside the one GEMM. Depends on the shape
/// only, so the GEMM (and its bits) are the same on any thread count.
pub(super) fn gemm_threads(blocks: usize) -> Threads {
    if blocks >= 4 { Threads::One } else { Threads::All }
}

// ---- 1x1 ----------------------------------------------------------------------------------

/// dst[p, :] = src[p, :] * rhs (+ bias) for every pixel p, in parallel blocks of pixels.
fn pointwise_rows(src: &[f32], src_c: usize, rhs: Weights, b: Option<&[f32]>, dst: &mut [f32]) {
    let dst_c = rhs.cols();
    let pixels = dst.len() / dst_c;
    let rows = block_rows(pixels);
    let threads = gemm_threads(pixels.div_ceil(rows));
    dst.par_chunks_mut(rows * dst_c).enumerate().for_each(|(blk, d)| {
        let m = d.len() / dst_c;
        let lhs = Mat::strided(src, blk * rows * src_c, m, src_c, src_c);
        rhs.multiply(MatMut::rows(d, m, dst_c), lhs, threads);
        add_bias(d, b);
    });
}

// ---- general: im2col ------------------------------------------------------------------------

/// The input coordinate a tap reads along one axis, if inside the image (as the reference).
fn tap(out: usize, k: usize, stride: usize, pad_before: usize, size: usize) -> Option<usize> {
    (out * stride + k).checked_sub(pad_before).filter(|&i| i < size)
}

/// Rows [p0, p0 + m) of the im2col matrix [pixels, k*k*ci] into `col`, zeros for padding.
pub(super) fn im2col_rows(s: &Conv2dShape, x: &[f32], p0: usize, col: &mut [f32]) {
    let (oh, ow, k, ci) = (s.out_h(), s.out_w(), s.kernel, s.in_c);
    for (r, row) in col.chunks_exact_mut(k * k * ci).enumerate() {
        let p = p0 + r;
        let (n, oy, ox) = (p / (oh * ow), p / ow % oh, p % ow);
        for ky in 0..k {
            let iy = tap(oy, ky, s.stride, s.pad.top, s.in_h);
            for kx in 0..k {
                let dst = &mut row[(ky * k + kx) * ci..][..ci];
                match (iy, tap(ox, kx, s.stride, s.pad.left, s.in_w)) {
                    (Some(iy), Some(ix)) => dst.copy_from_slice(&x[((n * s.in_h + iy) * s.in_w + ix) * ci..][..ci]),
                    _ => dst.fill(0.0),
                }
            }
        }
    }
}

fn im2col_fwd(s: &Conv2dShape, x: &[f32], w_t: Weights, b: Option<&[f32]>, y: &mut [f32]) {
    let (co, kk) = (s.out_c, s.kernel * s.kernel * s.in_c);
    let pixels = s.batch * s.out_h() * s.out_w();
    let rows = block_rows(pixels);
    let threads = gemm_threads(pixels.div_ceil(rows));
    y.par_chunks_mut(rows * co).enumerate().for_each(|(blk, y_blk)| {
        let m = y_blk.len() / co;
        with_scratch([m * kk], |[col]| {
            im2col_rows(s, x, blk * rows, col);
            w_t.multiply(MatMut::rows(y_blk, m, co), Mat::rows(col, m, kk), threads);
        });
        add_bias(y_blk, b);
    });
}
