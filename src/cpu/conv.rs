//! Reference of kernels/conv.cu: 2-D convolution, NHWC activations, OHWI weights.
//!
//! Output pixel (oy, ox) sees input pixel (oy * stride + ky - pad.top, ox * stride + kx - pad.left)
//! through weight tap (ky, kx); taps that land in the padding read zero. The sums run over
//! (ky, kx, in channel) for the forward, (ky, kx, out channel) for the input gradient and (image,
//! oy, ox) for the weight gradient, in those orders, which are the kernels' orders too.

use super::Real;
use crate::shapes::Conv2dShape;

/// The input coordinate a tap reads along one axis, if it is inside the image.
fn tap(out: usize, k: usize, s: &Conv2dShape, pad_before: usize, size: usize) -> Option<usize> {
    (out * s.stride + k).checked_sub(pad_before).filter(|&i| i < size)
}

/// The output coordinate that reads input coordinate `i` through tap `k` along one axis, if any.
fn tapped_by(i: usize, k: usize, s: &Conv2dShape, pad_before: usize, out_size: usize) -> Option<usize> {
    (i + pad_before).checked_sub(k).filter(|d| d % s.stride == 0).map(|d| d / s.stride).filter(|&o| o < out_size)
}

/// y[n, oy, ox, o] = b[o] + sum over (ky, kx, i) of x[n, iy, ix, i] w[o, ky, kx, i].
pub fn conv2d_fwd<T: Real>(s: &Conv2dShape, x: &[T], w: &[T], b: Option<&[T]>, y: &mut [T]) {
    let (oh, ow, k, ci, co) = (s.out_h(), s.out_w(), s.kernel, s.in_c, s.out_c);
    for n in 0..s.batch {
        for oy in 0..oh {
            for ox in 0..ow {
                let out = &mut y[((n * oh + oy) * ow + ox) * co..][..co];
                for (o, out) in out.iter_mut().enumerate() {
                    let mut acc = T::ZERO;
                    for ky in 0..k {
                        let Some(iy) = tap(oy, ky, s, s.pad.top, s.in_h) else { continue };
                        for kx in 0..k {
                            let Some(ix) = tap(ox, kx, s, s.pad.left, s.in_w) else { continue };
                            let xs = &x[((n * s.in_h + iy) * s.in_w + ix) * ci..][..ci];
                            let ws = &w[((o * k + ky) * k + kx) * ci..][..ci];
                            for (&xv, &wv) in xs.iter().zip(ws) {
                                acc += xv * wv;
                            }
                        }
                    }
                    *out = acc + b.map_or(T::ZERO, |b| b[o]);
                }
            }
        }
    }
}

/// dx[n, iy, ix, i] = sum over (ky, kx, o) of dy[n, oy, ox, o] w[o, ky, kx, i], over the output
/// pixels (oy, ox) that read (iy, ix) through tap (ky, kx).
pub fn conv2d_bwd_input<T: Real>(s: &Conv2dShape, dy: &[T], w: &[T], dx: &mut [T]) {
    let (oh, ow, k, ci, co) = (s.out_h(), s.out_w(), s.kernel, s.in_c, s.out_c);
    for n in 0..s.batch {
        for iy in 0..s.in_h {
            for ix in 0..s.in_w {
                let grad = &mut dx[((n * s.in_h + iy) * s.in_w + ix) * ci..][..ci];
                for (i, grad) in grad.iter_mut().enumerate() {
                    let mut acc = T::ZERO;
                    for ky in 0..k {
                        let Some(oy) = tapped_by(iy, ky, s, s.pad.top, oh) else { continue };
                        for kx in 0..k {
                            let Some(ox) = tapped_by(ix, kx, s, s.pad.left, ow) else { continue };
                            let dys = &dy[((n * oh + oy) * ow + ox) * co..][..co];
                            for (o, &g) in dys.iter().enumerate() {
                                acc += g * w[((o * k + ky) * k + kx) * ci + i];
                            }
                        }
                    }
                    *grad = acc;
                }
            }
        }
    }
}

/// dw[o, ky, kx, i] = sum over (n, oy, ox) of dy[n, oy, ox, o] x[n, iy, ix, i];
/// db[o] = sum over (n, oy, ox) of dy[n, oy, ox, o].
pub fn conv2d_bwd_weight<T: Real>(s: &Conv2dShape, x: &[T], dy: &[T], dw: &mut [T], db: Option<&mut [T]>) {
    let (oh, ow, k, ci, co) = (s.out_h(), s.out_w(), s.kernel, s.in_c, s.out_c);
    for o in 0..co {
        for ky in 0..k {
            for kx in 0..k {
                for i in 0..ci {
                    let mut acc = T::ZERO;
                    for n in 0..s.batch {
                        for oy in 0..oh {
                            let Some(iy) = tap(oy, ky, s, s.pad.top, s.in_h) else { continue };
                            for ox in 0..ow {
                                let Some(ix) = tap(ox, kx, s, s.pad.left, s.in_w) else { continue };
                                acc += dy[((n * oh + oy) * ow + ox) * co + o] * x[((n * s.in_h + iy) * s.in_w + ix) * ci + i];
                            }
                        }
                    }
                    dw[((o * k + ky) * k + kx) * ci + i] = acc;
                }
            }
        }
    }
    if let Some(db) = db {
        for (o, db) in db.iter_mut().enumerate() {
            *db = dy.chunks_exact(co).map(|px| px[o]).sum();
        }
    }
}
