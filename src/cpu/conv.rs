//! Reference of kernels/conv.cu: 2-D convolution, NHWC activations, OHWI weights.
//!
//! Output pixel (oy, ox) sees input pixel (oy * stride + ky - pad.top, ox * stride + kx - pad.left)
//! through weight tap (ky, kx); taps that land in the padding read zero. The sums run over
//! (ky, kx, in channel) for the forward, (ky, kx, out channel) for the input gradient and (image,
//! oy, ox) for the weight gradient, in those orders, which are the kernels' orders too.

use super::Real;
use crate::shapes::Conv2dShape;
use rayon::prelude::*;

/// The input coordinate a tap reads along one axis, if it is inside the image.
fn tap(out: usize, k: usize, s: &Conv2dShape, pad_before: usize, size: usize) -> Option<usize> {
    (out * s.stride + k).checked_sub(pad_before).filter(|&i| i < size)
}

/// The output coordinate that reads input coordinate `i` through tap `k` along one axis, if any.
fn tapped_by(i: usize, k: usize, s: &Conv2dShape, pad_before: usize, out_size: usize) -> Option<usize> {
    (i + pad_before).checked_sub(k).filter(|d| d % s.stride == 0).map(|d| d / s.stride).filter(|&o| o < out_size)
}

/// y[n, oy, ox, o] = b[o] + sum over (ky, kx, i) of x[n, iy, ix, i] w[o, ky, kx, i].
///
/// Every output's sum runs in the stated order; the loops are arranged so the innermost one runs
/// over independent outputs (contiguous, vectorisable) instead of along a single sum, which
/// changes the speed, not the bits.
pub fn conv2d_fwd<T: Real>(s: &Conv2dShape, x: &[T], w: &[T], b: Option<&[T]>, y: &mut [T]) {
    let (oh, ow, k, ci, co) = (s.out_h(), s.out_w(), s.kernel, s.in_c, s.out_c);
    // w as [ky, kx, i, o]: the weights of all outputs for one input value are contiguous.
    let mut wt = vec![T::ZERO; w.len()];
    for o in 0..co {
        for t in 0..k * k * ci {
            wt[t * co + o] = w[o * k * k * ci + t];
        }
    }
    // Output rows in parallel.
    y.par_chunks_mut(ow * co).enumerate().for_each(|(row, y_row)| {
        let (n, oy) = (row / oh, row % oh);
        for ox in 0..ow {
            let acc = &mut y_row[ox * co..][..co];
            acc.fill(T::ZERO);
            for ky in 0..k {
                let Some(iy) = tap(oy, ky, s, s.pad.top, s.in_h) else { continue };
                for kx in 0..k {
                    let Some(ix) = tap(ox, kx, s, s.pad.left, s.in_w) else { continue };
                    let xs = &x[((n * s.in_h + iy) * s.in_w + ix) * ci..][..ci];
                    for (i, &xv) in xs.iter().enumerate() {
                        let ws = &wt[((ky * k + kx) * ci + i) * co..][..co];
                        for (a, &wv) in acc.iter_mut().zip(ws) {
                            *a += xv * wv;
                        }
                    }
                }
            }
            if let Some(b) = b {
                for (a, &bv) in acc.iter_mut().zip(b) {
                    *a += bv;
                }
            }
        }
    });
}

/// dx[n, iy, ix, i] = sum over (ky, kx, o) of dy[n, oy, ox, o] w[o, ky, kx, i], over the output
/// pixels (oy, ox) that read (iy, ix) through tap (ky, kx). Same arrangement as the forward: the
/// innermost loop runs over the input channels, each sum in the stated order.
pub fn conv2d_bwd_input<T: Real>(s: &Conv2dShape, dy: &[T], w: &[T], dx: &mut [T]) {
    let (oh, ow, k, ci, co) = (s.out_h(), s.out_w(), s.kernel, s.in_c, s.out_c);
    dx.par_chunks_mut(s.in_w * ci).enumerate().for_each(|(row, dx_row)| {
        let (n, iy) = (row / s.in_h, row % s.in_h);
        for ix in 0..s.in_w {
            let acc = &mut dx_row[ix * ci..][..ci];
            acc.fill(T::ZERO);
            for ky in 0..k {
                let Some(oy) = tapped_by(iy, ky, s, s.pad.top, oh) else { continue };
                for kx in 0..k {
                    let Some(ox) = tapped_by(ix, kx, s, s.pad.left, ow) else { continue };
                    let dys = &dy[((n * oh + oy) * ow + ox) * co..][..co];
                    for (o, &g) in dys.iter().enumerate() {
                        let ws = &w[((o * k + ky) * k + kx) * ci..][..ci];
                        for (a, &wv) in acc.iter_mut().zip(ws) {
                            *a += g * wv;
                        }
                    }
                }
            }
        }
    });
}

/// dw[o, ky, kx, i] = sum over (n, oy, ox) of dy[n, oy, ox, o] x[n, iy, ix, i];
/// db[o] = sum over (n, oy, ox) of dy[n, oy, ox, o]. Output channels in parallel; the innermost
/// loop runs over the input channels, each sum in the stated order.
pub fn conv2d_bwd_weight<T: Real>(s: &Conv2dShape, x: &[T], dy: &[T], dw: &mut [T], db: Option<&mut [T]>) {
    let (oh, ow, k, ci, co) = (s.out_h(), s.out_w(), s.kernel, s.in_c, s.out_c);
    dw.par_chunks_mut(k * k * ci).enumerate().for_each(|(o, dw_o)| {
        for ky in 0..k {
            for kx in 0..k {
                let acc = &mut dw_o[(ky * k + kx) * ci..][..ci];
                acc.fill(T::ZERO);
                for n in 0..s.batch {
                    for oy in 0..oh {
                        let Some(iy) = tap(oy, ky, s, s.pad.top, s.in_h) else { continue };
                        for ox in 0..ow {
                            let Some(ix) = tap(ox, kx, s, s.pad.left, s.in_w) else { continue };
                            let g = dy[((n * oh + oy) * ow + ox) * co + o];
                            let xs = &x[((n * s.in_h + iy) * s.in_w + ix) * ci..][..ci];
                            for (a, &xv) in acc.iter_mut().zip(xs) {
                                *a += g * xv;
                            }
                        }
                    }
                }
            }
        }
    });
    if let Some(db) = db {
        for (o, db) in db.iter_mut().enumerate() {
            *db = dy.chunks_exact(co).map(|px| px[o]).sum();
        }
    }
}
