//! The Winograd transforms (src/fast/winograd.rs, winograd4.rs, winograd_grad.rs) called
//! directly, whatever src/fast/conv.rs's shape rule picks, against an f64 direct convolution:
//! forward, input gradient and weight gradient, each within the bound its matrices give
//! (tests/common/winograd_bounds.rs).

use ddpm::fast::conv::{Conv3x3Algo, conv3x3_bwd_weight_with};
use ddpm::fast::winograd::{self, Geometry};
use ddpm::fast::winograd4;
use ddpm::shapes::Conv2dShape;

#[path = "common/winograd_bounds.rs"]
mod winograd_bounds;
use winograd_bounds::*;

/// y = b + conv3x3 (padding 1) of NHWC x with OHWI w, in f64; `backward` flips w in space and
/// swaps its channel roles (the input gradient, x = dy).
fn direct_f64(g: &Geometry, x: &[f32], w: &[f32], b: Option<&[f32]>, backward: bool) -> Vec<f32> {
    let (h, wd, ci, co) = (g.h, g.w, g.cin, g.cout);
    let weight = |o: usize, ky: usize, kx: usize, i: usize| -> f64 {
        let v =
            if backward { w[((i * 3 + 2 - ky) * 3 + 2 - kx) * co + o] } else { w[((o * 3 + ky) * 3 + kx) * ci + i] };
        v as f64
    };
    let mut y = vec![0f32; g.batch * h * wd * co];
    for (p, out) in y.chunks_exact_mut(co).enumerate() {
        let (n, py, px) = (p / (h * wd), p / wd % h, p % wd);
        for (o, out) in out.iter_mut().enumerate() {
            let mut acc = b.map_or(0.0, |b| b[o] as f64);
            for ky in 0..3 {
                for kx in 0..3 {
                    let (iy, ix) = ((py + ky).wrapping_sub(1), (px + kx).wrapping_sub(1));
                    if iy < h && ix < wd {
                        let src = &x[((n * h + iy) * wd + ix) * ci..][..ci];
                        acc += src.iter().enumerate().map(|(i, &v)| v as f64 * weight(o, ky, kx, i)).sum::<f64>();
                    }
                }
            }
            *out = acc as f32;
        }
    }
    y
}

/// Both transforms, forward (with bias) and input gradient, called directly (whatever
/// src/fast/conv.rs's shape rule picks), against the f64 direct sum, within atol_for_sum(K) *
/// gamma^2 (see `winograd_gamma2`) + RTOL |ref|; returns the worst error in units of atol.
fn check_winograd(name: &str, [batch, h, w, ci, co]: [usize; 5]) {
    let s = Conv2dShape::conv3x3(batch, h, w, ci, co);
    let d = data(name, &s);
    for (tile, gamma2) in [(2, gamma2_f2()), (4, gamma2_f4())] {
        for backward in [false, true] {
            let (k_in, k_out) = if backward { (co, ci) } else { (ci, co) };
            let g = Geometry { batch, h, w, cin: k_in, cout: k_out };
            let (x, b) = if backward { (&d.dy, None) } else { (&d.x, Some(&d.b[..])) };
            let mut y = vec![f32::NAN; batch * h * w * k_out];
            let mut u = vec![f32::NAN; if tile == 2 { 16 } else { 36 } * ci * co];
            match (tile, backward) {
                (2, false) => winograd::forward_filters(&d.w, ci, co, &mut u),
                (2, true) => winograd::backward_filters(&d.w, ci, co, &mut u),
                (_, false) => winograd4::forward_filters(&d.w, ci, co, &mut u),
                (_, true) => winograd4::backward_filters(&d.w, ci, co, &mut u),
            }
            if tile == 2 {
                winograd::conv3x3(&g, x, &u, b, &mut y)
            } else {
                winograd4::conv3x3(&g, x, &u, b, &mut y)
            }
            let want = direct_f64(&g, x, &d.w, b, backward);
            let atol = atol_for_sum(k_in) * gamma2 as f32;
            assert_within(&format!("{name} F({tile}x{tile}) backward={backward} {s:?}"), &y, &want, atol);
        }
    }
}

#[test]
fn winograd_transforms_against_f64() {
    // gamma^2 as stated in winograd_gamma2's docs (a typo in a matrix above shows here).
    assert!((gamma2_f2() - 5.0).abs() < 1e-9 && (gamma2_f4() - 94.3).abs() < 0.1, "{} {}", gamma2_f2(), gamma2_f4());
    // Odd sizes: edge tiles cut by the image on the bottom and right (7 = 4 + 3, 5 = 4 + 1,
    // 9 = 8 + 1), channels off the SIMD width, and the cifar10 sizes.
    check_winograd("7x7", [3, 7, 7, 17, 20]);
    check_winograd("5x9", [2, 5, 9, 24, 19]);
    check_winograd("odd 13x11", [1, 13, 11, 33, 16]);
    check_winograd("cifar 32x32", [2, 32, 32, 128, 128]);
    check_winograd("cifar 8x8", [2, 8, 8, 256, 256]);
    check_winograd("cifar 4x4", [4, 4, 4, 512, 256]);
}

/// dW[o][ky][kx][i] = sum over pixels of dy[p, o] x[p + (ky - 1, kx - 1), i], in f64.
fn direct_weight_grad_f64(s: &Conv2dShape, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (h, wd, ci, co) = (s.in_h, s.in_w, s.in_c, s.out_c);
    let mut dw = vec![0f64; s.w_len()];
    for p in 0..s.batch * h * wd {
        let (n, py, px) = (p / (h * wd), p / wd % h, p % wd);
        for ky in 0..3 {
            for kx in 0..3 {
                let (iy, ix) = ((py + ky).wrapping_sub(1), (px + kx).wrapping_sub(1));
                if iy >= h || ix >= wd {
                    continue;
                }
                let src = &x[((n * h + iy) * wd + ix) * ci..][..ci];
                for (o, &g) in dy[p * co..][..co].iter().enumerate() {
                    let dst = &mut dw[((o * 3 + ky) * 3 + kx) * ci..][..ci];
                    dst.iter_mut().zip(src).for_each(|(d, &v)| *d += g as f64 * v as f64);
                }
            }
        }
    }
    dw.into_iter().map(|v| v as f32).collect()
}

/// The weight gradient by each transform (src/fast/winograd_grad.rs) against the f64 direct sum,
/// within atol_for_sum(tiles) * gamma^2 (see `winograd_grad_gamma2`) + RTOL |ref|.
fn check_weight_grad(name: &str, [batch, h, w, ci, co]: [usize; 5]) {
    let s = Conv2dShape::conv3x3(batch, h, w, ci, co);
    let d = data(name, &s);
    let want = direct_weight_grad_f64(&s, &d.x, &d.dy);
    for (algo, size, gamma2) in [
        (Conv3x3Algo::WinogradF2, 2, matrices_f2().grad_gamma2()),
        (Conv3x3Algo::WinogradF4, 4, matrices_f4().grad_gamma2()),
    ] {
        let mut dw = vec![f32::NAN; s.w_len()];
        conv3x3_bwd_weight_with(algo, &s, &d.x, &d.dy, &mut dw);
        let tiles = batch * h.div_ceil(size) * w.div_ceil(size);
        let atol = atol_for_sum(tiles) * gamma2 as f32;
        assert_within(&format!("{name} weight grad {algo:?} {s:?}"), &dw, &want, atol);
    }
}

#[test]
fn winograd_weight_grad_against_f64() {
    // gamma^2 of the weight gradient: F(2x2) 4 (G's halves against A and B^T's +-1s), F(4x4) 97.
    let (g2, g4) = (matrices_f2().grad_gamma2(), matrices_f4().grad_gamma2());
    assert!((g2 - 4.0).abs() < 1e-9 && (g4 - 97.0).abs() < 1.0, "{g2} {g4}");
    // Odd sizes (edge tiles of dy cut by the image), channels off the SIMD width, one tile and
    // several blocks of tiles (each split between the two partial sums), and cifar10 sizes.
    check_weight_grad("7x7", [3, 7, 7, 17, 20]);
    check_weight_grad("5x9", [2, 5, 9, 24, 19]);
    check_weight_grad("one tile", [1, 2, 2, 16, 16]);
    check_weight_grad("odd 33x31", [3, 33, 31, 19, 21]);
    check_weight_grad("cifar 32x32", [4, 32, 32, 128, 128]);
    check_weight_grad("cifar 8x8", [2, 8, 8, 256, 256]);
    check_weight_grad("cifar 4x4", [4, 4, 4, 512, 256]);
}
