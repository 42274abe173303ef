//! Fast 2-D convolution, NHWC activations, OHWI weights: the ops of src/cpu/conv.rs, as GEMMs.
//!
//! Three formulations, chosen by shape:
//! - **1x1, stride 1, no padding**: the image is already a [pixels, channels] matrix, so every op
//!   is one plain GEMM.
//! - **Stride 1 ("shifted views")**: the input is copied once into a zero-padded scratch image
//!   [N, Hp, Wp, C]. On the flat grid of padded pixels, output q = (n, oy, ox) reads padded pixel
//!   q + ky * Wp + kx through tap (ky, kx), so for a block of consecutive q every tap is ONE GEMM
//!   whose left operand is a strided view of the padded image (no im2col copy) and whose right
//!   operand is a strided view of the OHWI weights. The k * k tap products accumulate into a small
//!   block (in L2), and the valid rows (ox < out_w, oy < out_h) are copied out with the bias.
//!   The junk rows cost (Hp * Wp) / (out_h * out_w) - 1 extra work (13% at 32x32, 56% at 8x8),
//!   so small images go to im2col instead, whose copy is cheaper than that. The input gradient
//!   of a stride-1 conv is the same computation on the padded dy with the taps flipped and the
//!   weights transposed. The weight gradient per tap is dW_tap[Co, Ci] = dy'^T x_shifted with
//!   dy' = dy placed on the padded grid (zeros in the junk rows): again views, no copies.
//! - **Anything else (stride 2, large padding)**: im2col of a block of output pixels into
//!   scratch, then one GEMM with K = k * k * Ci. The input gradient gathers instead of scatters
//!   (so parallel blocks never write the same dx): input pixels are grouped by their phase
//!   (iy + pad) mod stride, and each phase multiplies only the taps that can reach it, against
//!   weights repacked per phase, so a stride-2 conv wastes no work on taps that read nothing.
//!
//! Determinism: block sizes depend only on the shape, never on the thread count; each GEMM's
//! sum over K runs in an order fixed by its (m, n, k) (the gemm crate splits work over rows and
//! columns, never over K); sums across blocks of the weight gradient run sequentially in block
//! order. So the bits are the same on every run and every thread count.
//! Scratch comes from `with_scratch`: no allocation once the buffers have grown.

use super::gemm::{Mat, MatMut, Threads, matmul};
use super::scratch::with_scratch;
use crate::shapes::Conv2dShape;
use rayon::prelude::*;

/// Output rows per block of the stride-1 and im2col forward: the accumulator [rows, Co] and the
/// operand panels stay in a core's L2 (2 MiB here) while the taps stream through it.
const BLOCK_ROWS: usize = 256;

/// Rows (output pixels) per sequential chunk of the im2col weight gradient.
const WEIGHT_GRAD_CHUNK: usize = 512;

/// Stride-1 shifted views pay for junk rows; above this ratio of padded to valid pixels the
/// im2col copy is cheaper.
const MAX_JUNK_RATIO: f32 = 1.3;

pub fn conv2d_fwd(s: &Conv2dShape, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) {
    check(s, x.len(), w.len(), y.len());
    if let Some(b) = b {
        assert_eq!(b.len(), s.out_c, "conv2d_fwd: bias length");
    }
    match plan(s) {
        Plan::Pointwise => pointwise_fwd(s, x, w, b, y),
        Plan::Shifted => shifted_fwd(s, x, w, b, y),
        Plan::Im2col => im2col_fwd(s, x, w, b, y),
    }
}

pub fn conv2d_bwd_input(s: &Conv2dShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    check(s, dx.len(), w.len(), dy.len());
    match plan(s) {
        Plan::Pointwise => {
            let pixels = s.batch * s.in_h * s.in_w;
            let dst = MatMut::rows(dx, pixels, s.in_c);
            matmul(dst, Mat::rows(dy, pixels, s.out_c), Mat::rows(w, s.out_c, s.in_c), false, Threads::All);
        }
        Plan::Shifted => shifted_bwd_input(s, dy, w, dx),
        Plan::Im2col => gather_bwd_input(s, dy, w, dx),
    }
}

pub fn conv2d_bwd_weight(s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32], db: Option<&mut [f32]>) {
    check(s, x.len(), dw.len(), dy.len());
    match plan(s) {
        Plan::Pointwise => {
            let pixels = s.batch * s.in_h * s.in_w;
            let dst = MatMut::rows(dw, s.out_c, s.in_c);
            matmul(dst, Mat::rows(dy, pixels, s.out_c).t(), Mat::rows(x, pixels, s.in_c), false, Threads::All);
        }
        Plan::Shifted => shifted_bwd_weight(s, x, dy, dw),
        Plan::Im2col => im2col_bwd_weight(s, x, dy, dw),
    }
    if let Some(db) = db {
        bias_grad(s.out_c, dy, db);
    }
}

fn check(s: &Conv2dShape, x_len: usize, w_len: usize, y_len: usize) {
    s.validate().expect("conv2d shape");
    assert_eq!(x_len, s.x_len(), "conv2d: input length");
    assert_eq!(w_len, s.w_len(), "conv2d: weight length");
    assert_eq!(y_len, s.y_len(), "conv2d: output length");
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Pointwise,
    Shifted,
    Im2col,
}

fn plan(s: &Conv2dShape) -> Plan {
    let p = s.pad;
    let no_pad = p.top == 0 && p.bottom == 0 && p.left == 0 && p.right == 0;
    if s.kernel == 1 && s.stride == 1 && no_pad {
        return Plan::Pointwise;
    }
    // The input gradient's flipped taps need the dy padding k - 1 - pad to be non-negative.
    let pad_fits = [p.top, p.bottom, p.left, p.right].iter().all(|&q| q < s.kernel) && s.kernel * s.kernel <= MAX_TAPS;
    let padded = ((s.in_h + p.top + p.bottom) * (s.in_w + p.left + p.right)) as f32;
    let junk_ratio = padded / (s.out_h() * s.out_w()) as f32;
    if s.stride == 1 && pad_fits && junk_ratio <= MAX_JUNK_RATIO { Plan::Shifted } else { Plan::Im2col }
}

/// db[o] = sum over pixels of dy[p, o], pixels in order (the reference's order).
fn bias_grad(co: usize, dy: &[f32], db: &mut [f32]) {
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
fn gemm_threads(blocks: usize) -> Threads {
    if blocks >= 4 { Threads::One } else { Threads::All }
}

// ---- 1x1 ----------------------------------------------------------------------------------

fn pointwise_fwd(s: &Conv2dShape, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) {
    let pixels = s.batch * s.in_h * s.in_w;
    let (ci, co) = (s.in_c, s.out_c);
    let blocks = pixels.div_ceil(BLOCK_ROWS);
    let threads = gemm_threads(blocks);
    y.par_chunks_mut(BLOCK_ROWS * co).enumerate().for_each(|(blk, y_blk)| {
        let m = y_blk.len() / co;
        let lhs = Mat::strided(x, blk * BLOCK_ROWS * ci, m, ci, ci);
        matmul(MatMut::rows(y_blk, m, co), lhs, Mat::rows(w, co, ci).t(), false, threads);
        add_bias(y_blk, b);
    });
}

// ---- stride 1: shifted views of a padded image ----------------------------------------------

/// Copies `src` [N, h, w, c] into `dst` [N, hg, wg, c] at offset (top, left), zeros around it.
fn pad_into(src: &[f32], dims: [usize; 4], dst: &mut [f32], hg: usize, wg: usize, top: usize, left: usize) {
    let [_, h, w, c] = dims;
    dst.par_chunks_mut(wg * c).enumerate().for_each(|(row, d)| {
        let (n, r) = (row / hg, row % hg);
        match r.checked_sub(top).filter(|&iy| iy < h) {
            Some(iy) => {
                d[..left * c].fill(0.0);
                d[left * c..(left + w) * c].copy_from_slice(&src[(n * h + iy) * w * c..][..w * c]);
                d[(left + w) * c..].fill(0.0);
            }
            None => d.fill(0.0),
        }
    });
}

/// One stride-1 convolution on a padded grid: out[n, vy, vx, :] = bias + sum over taps t of
/// img[n, vy, vx shifted by offsets[t], :] * rhs(t), for vy < vh, vx < vw.
struct ShiftedConv<'a, F: Fn(usize) -> Mat<'a> + Sync> {
    /// [N, hg, wg, cin], zero-padded.
    img: &'a [f32],
    batch: usize,
    hg: usize,
    wg: usize,
    cin: usize,
    cout: usize,
    vh: usize,
    vw: usize,
    /// Flat pixel offset of each tap on the grid.
    offsets: &'a [usize],
    /// The tap's [cin, cout] weights.
    rhs: F,
}

impl<'a, F: Fn(usize) -> Mat<'a> + Sync> ShiftedConv<'a, F> {
    fn run(&self, b: Option<&[f32]>, out: &mut [f32]) {
        let (hg, wg, cin, cout) = (self.hg, self.wg, self.cin, self.cout);
        // Grid rows past the last valid output would read past the image's end.
        let rows = (self.batch - 1) * hg * wg + (self.vh - 1) * wg + self.vw;
        let blocks = rows.div_ceil(BLOCK_ROWS);
        let threads = gemm_threads(blocks);
        // Each block writes the output pixels of its grid rows; splitting `out` by image rows
        // would cut blocks, so blocks own disjoint output rows through raw parts below.
        let out_ptr = SyncPtr(out.as_mut_ptr());
        (0..blocks).into_par_iter().for_each(|blk| {
            let q0 = blk * BLOCK_ROWS;
            let m = BLOCK_ROWS.min(rows - q0);
            with_scratch([m * cout], |[acc]| {
                for (t, &off) in self.offsets.iter().enumerate() {
                    let lhs = Mat::strided(self.img, (q0 + off) * cin, m, cin, cin);
                    matmul(MatMut::rows(acc, m, cout), lhs, (self.rhs)(t), t > 0, threads);
                }
                for (r, acc_row) in acc.chunks_exact(cout).enumerate() {
                    let q = q0 + r;
                    let (n, gy, gx) = (q / (hg * wg), q / wg % hg, q % wg);
                    if gy >= self.vh || gx >= self.vw {
                        continue;
                    }
                    let p = (n * self.vh + gy) * self.vw + gx;
                    // SAFETY: grid row q maps to exactly one output pixel p < N * vh * vw (checked
                    // by the slice below against `out`'s length), and the blocks' grid rows are
                    // disjoint, so no two threads write the same output row.
                    let dst = unsafe { out_ptr.row(p * cout, cout, self.batch * self.vh * self.vw * cout) };
                    dst.copy_from_slice(acc_row);
                    if let Some(b) = b {
                        for (v, &bv) in dst.iter_mut().zip(b) {
                            *v += bv;
                        }
                    }
                }
            });
        });
    }
}

#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: used only to hand out disjoint rows of one slice to rayon workers (see `row`).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// # Safety
    /// `start + len <= total` (asserted), `total` is the slice's length, and no other thread
    /// touches these elements while the returned slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, start: usize, len: usize, total: usize) -> &mut [f32] {
        assert!(start + len <= total);
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

/// The tap (ky, kx) of OHWI weights as a [ci, co] view: element (i, o) = w[o, ky, kx, i].
fn weight_tap_t<'a>(s: &Conv2dShape, w: &'a [f32], tap: usize) -> Mat<'a> {
    let kk = s.kernel * s.kernel * s.in_c;
    Mat { data: w, offset: tap * s.in_c, rows: s.in_c, cols: s.out_c, row_stride: 1, col_stride: kk }
}

/// The tap (ky, kx) of OHWI weights as a [co, ci] view: element (o, i) = w[o, ky, kx, i].
fn weight_tap<'a>(s: &Conv2dShape, w: &'a [f32], tap: usize) -> Mat<'a> {
    let kk = s.kernel * s.kernel * s.in_c;
    Mat::strided(w, tap * s.in_c, s.out_c, s.in_c, kk)
}

fn shifted_fwd(s: &Conv2dShape, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) {
    let k = s.kernel;
    let (hp, wp) = (s.in_h + s.pad.top + s.pad.bottom, s.in_w + s.pad.left + s.pad.right);
    let mut offsets = [0usize; MAX_TAPS];
    let taps = tap_offsets(k, wp, false, &mut offsets);
    with_scratch([s.batch * hp * wp * s.in_c], |[xp]| {
        pad_into(x, [s.batch, s.in_h, s.in_w, s.in_c], xp, hp, wp, s.pad.top, s.pad.left);
        let conv = ShiftedConv {
            img: xp, batch: s.batch, hg: hp, wg: wp, cin: s.in_c, cout: s.out_c,
            vh: s.out_h(), vw: s.out_w(), offsets: taps, rhs: |t| weight_tap_t(s, w, t),
        };
        conv.run(b, y);
    });
}

fn shifted_bwd_input(s: &Conv2dShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let k = s.kernel;
    // dy padded by k - 1 - pad on each side: dx[iy, ix] reads it at (iy + k-1-ky, ix + k-1-kx).
    let (hd, wd) = (s.in_h + k - 1, s.in_w + k - 1);
    let mut offsets = [0usize; MAX_TAPS];
    let taps = tap_offsets(k, wd, true, &mut offsets);
    with_scratch([s.batch * hd * wd * s.out_c], |[dyp]| {
        let dims = [s.batch, s.out_h(), s.out_w(), s.out_c];
        pad_into(dy, dims, dyp, hd, wd, k - 1 - s.pad.top, k - 1 - s.pad.left);
        let conv = ShiftedConv {
            img: dyp, batch: s.batch, hg: hd, wg: wd, cin: s.out_c, cout: s.in_c,
            vh: s.in_h, vw: s.in_w, offsets: taps, rhs: |t| weight_tap(s, w, t),
        };
        conv.run(None, dx);
    });
}

/// Taps of the largest kernel the stride-1 path takes without allocating (7x7).
const MAX_TAPS: usize = 49;

/// Grid offsets of the taps in (ky, kx) order: ky * wg + kx, or flipped (k-1-ky) * wg + (k-1-kx).
fn tap_offsets(k: usize, wg: usize, flipped: bool, out: &mut [usize; MAX_TAPS]) -> &[usize] {
    assert!(k * k <= MAX_TAPS, "conv2d: {k}x{k} kernels take the im2col path");
    for ky in 0..k {
        for kx in 0..k {
            let (gy, gx) = if flipped { (k - 1 - ky, k - 1 - kx) } else { (ky, kx) };
            out[ky * k + kx] = gy * wg + gx;
        }
    }
    &out[..k * k]
}

fn shifted_bwd_weight(s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (k, ci, co) = (s.kernel, s.in_c, s.out_c);
    let (hp, wp) = (s.in_h + s.pad.top + s.pad.bottom, s.in_w + s.pad.left + s.pad.right);
    let rows = (s.batch - 1) * hp * wp + (s.out_h() - 1) * wp + s.out_w();
    with_scratch([s.batch * hp * wp * ci, s.batch * hp * wp * co], |[xp, dyg]| {
        pad_into(x, [s.batch, s.in_h, s.in_w, ci], xp, hp, wp, s.pad.top, s.pad.left);
        // dy on the same grid as the forward's output rows, zeros in the junk rows so they add
        // nothing.
        pad_into(dy, [s.batch, s.out_h(), s.out_w(), co], dyg, hp, wp, 0, 0);
        let lhs = Mat::rows(dyg, rows, co).t();
        for ky in 0..k {
            for kx in 0..k {
                let tap = ky * k + kx;
                let rhs = Mat::strided(xp, (ky * wp + kx) * ci, rows, ci, ci);
                let dst = MatMut::strided(dw, tap * ci, co, ci, k * k * ci);
                matmul(dst, lhs, rhs, false, Threads::All);
            }
        }
    });
}

// ---- general: im2col ------------------------------------------------------------------------

/// The input coordinate a tap reads along one axis, if inside the image (as the reference).
fn tap(out: usize, k: usize, stride: usize, pad_before: usize, size: usize) -> Option<usize> {
    (out * stride + k).checked_sub(pad_before).filter(|&i| i < size)
}

/// Rows [p0, p0 + m) of the im2col matrix [pixels, k*k*ci] into `col`, zeros for padding.
fn im2col_rows(s: &Conv2dShape, x: &[f32], p0: usize, col: &mut [f32]) {
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

fn im2col_fwd(s: &Conv2dShape, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) {
    let (co, kk) = (s.out_c, s.kernel * s.kernel * s.in_c);
    let pixels = s.batch * s.out_h() * s.out_w();
    let threads = gemm_threads(pixels.div_ceil(BLOCK_ROWS));
    let w_t = Mat::rows(w, co, kk).t();
    y.par_chunks_mut(BLOCK_ROWS * co).enumerate().for_each(|(blk, y_blk)| {
        let m = y_blk.len() / co;
        with_scratch([m * kk], |[col]| {
            im2col_rows(s, x, blk * BLOCK_ROWS, col);
            matmul(MatMut::rows(y_blk, m, co), Mat::rows(col, m, kk), w_t, false, threads);
        });
        add_bias(y_blk, b);
    });
}

/// dW[co, kk] = sum over chunks of dy_chunk^T col_chunk, chunks in order (so the sum over
/// pixels has a fixed order); the GEMM of each chunk spreads over the threads by output column.
fn im2col_bwd_weight(s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (co, kk) = (s.out_c, s.kernel * s.kernel * s.in_c);
    let pixels = s.batch * s.out_h() * s.out_w();
    with_scratch([WEIGHT_GRAD_CHUNK.min(pixels) * kk], |[col]| {
        for p0 in (0..pixels).step_by(WEIGHT_GRAD_CHUNK) {
            let m = WEIGHT_GRAD_CHUNK.min(pixels - p0);
            let col = &mut col[..m * kk];
            col.par_chunks_mut(16 * kk).enumerate().for_each(|(i, part)| im2col_rows(s, x, p0 + i * 16, part));
            let lhs = Mat::strided(dy, p0 * co, m, co, co).t();
            matmul(MatMut::rows(dw, co, kk), lhs, Mat::rows(col, m, kk), p0 > 0, Threads::All);
        }
    });
}

/// The input gradient as a gather over input pixels, grouped by stride phase.
///
/// Input coordinate iy is read by tap ky from output (iy + pad - ky) / stride when that divides
/// exactly, so the taps reaching iy are ky = (iy + pad) mod stride, + stride, ...: the same set
/// for every input pixel of one phase. Per phase, the weights of its taps are repacked [taps, co,
/// ci] and each block of the phase's pixels is one GEMM against a gathered [pixels, taps * co]
/// block of dy (zeros where the output pixel falls outside the image).
fn gather_bwd_input(s: &Conv2dShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (k, st, ci, co) = (s.kernel, s.stride, s.in_c, s.out_c);
    // Rows per parallel item: whole phases of rows (a multiple of the stride), about BLOCK_ROWS
    // pixels per phase.
    let groups = (BLOCK_ROWS * st / s.in_w).max(1);
    let item_rows = st * groups;
    let items = (s.batch * s.in_h).div_ceil(item_rows);
    let threads = gemm_threads(items * st * st);
    with_scratch([s.w_len()], |[wph]| {
        // Repack: phase (py, px) gets taps ky in py, py+st, ..; kx in px, px+st, .. in order.
        let mut at = 0;
        for py in 0..st {
            for px in 0..st {
                for ky in (py..k).step_by(st) {
                    for kx in (px..k).step_by(st) {
                        for o in 0..co {
                            wph[at..at + ci].copy_from_slice(&w[((o * k + ky) * k + kx) * ci..][..ci]);
                            at += ci;
                        }
                    }
                }
            }
        }
        let wph = &*wph;
        dx.par_chunks_mut(item_rows * s.in_w * ci).enumerate().for_each(|(item, dx_item)| {
            let row0 = item * item_rows;
            let rows = dx_item.len() / (s.in_w * ci);
            let mut phase_start = 0;
            for py in 0..st {
                for px in 0..st {
                    let taps = (py..k).step_by(st).len() * (px..k).step_by(st).len();
                    let w_phase = Mat::rows(&wph[phase_start..], taps * co, ci);
                    phase_start += taps * co * ci;
                    gather_phase(s, dy, row0, rows, (py, px), w_phase, dx_item, threads);
                }
            }
        });
    });
}

/// dx for the pixels of rows [row0, row0 + rows) in phase (py, px); `dx_rows` holds those rows.
#[allow(clippy::too_many_arguments)]
fn gather_phase(s: &Conv2dShape, dy: &[f32], row0: usize, rows: usize, (py, px): (usize, usize), w_phase: Mat, dx_rows: &mut [f32], threads: Threads) {
    let (k, st, ci, co) = (s.kernel, s.stride, s.in_c, s.out_c);
    let (oh, ow) = (s.out_h(), s.out_w());
    let in_phase = |i: usize, pad: usize, ph: usize| (i + pad) % st == ph;
    let pixels: usize = (0..rows).filter(|&r| in_phase((row0 + r) % s.in_h, s.pad.top, py)).count()
        * (0..s.in_w).filter(|&ix| in_phase(ix, s.pad.left, px)).count();
    if pixels == 0 {
        return;
    }
    let kdim = w_phase.rows;
    // Input coordinate i, tap k: the output coordinate that reads it, if any.
    let source = |i: usize, kt: usize, pad: usize, size: usize| {
        (i + pad).checked_sub(kt).map(|d| d / st).filter(|&o| o < size)
    };
    with_scratch([pixels * kdim, pixels * ci], |[col, out]| {
        let mut r = 0;
        let each_pixel = |f: &mut dyn FnMut(usize, usize, usize)| {
            for lr in 0..rows {
                let (n, iy) = ((row0 + lr) / s.in_h, (row0 + lr) % s.in_h);
                if !in_phase(iy, s.pad.top, py) {
                    continue;
                }
                for ix in (0..s.in_w).filter(|&ix| in_phase(ix, s.pad.left, px)) {
                    f(lr, n * s.in_h + iy, ix);
                }
            }
        };
        each_pixel(&mut |_, row, ix| {
            let (n, iy) = (row / s.in_h, row % s.in_h);
            let mut c = 0;
            for ky in (py..k).step_by(st) {
                let oy = source(iy, ky, s.pad.top, oh);
                for kx in (px..k).step_by(st) {
                    let dst = &mut col[r * kdim + c..][..co];
                    match (oy, source(ix, kx, s.pad.left, ow)) {
                        (Some(oy), Some(ox)) => dst.copy_from_slice(&dy[((n * oh + oy) * ow + ox) * co..][..co]),
                        _ => dst.fill(0.0),
                    }
                    c += co;
                }
            }
            r += 1;
        });
        matmul(MatMut::rows(out, pixels, ci), Mat::rows(col, pixels, kdim), w_phase, false, threads);
        let mut r = 0;
        each_pixel(&mut |lr, _, ix| {
            dx_rows[(lr * s.in_w + ix) * ci..][..ci].copy_from_slice(&out[r * ci..][..ci]);
            r += 1;
        });
    });
}
