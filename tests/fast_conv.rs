//! The fast convolution (src/fast/conv.rs) against the reference (src/cpu/conv.rs): all three ops
//! and the bias gradient, on shapes that reach each of its formulations (1x1 GEMM; im2col with
//! a phase-gathered input gradient, in one or many blocks) with odd sizes, asymmetric padding, strides 1 to 3 and
//! batches 1 to 3; plus determinism across runs and rayon thread counts.

use ddpm::cpu::conv as reference;
use ddpm::fast::conv as fast;
use ddpm::fast::winograd::{self, Geometry};
use ddpm::fast::winograd4;
use ddpm::shapes::{Conv2dShape, Padding};
use ddpm::testing::{assert_close, random_vec, rng_for};

/// Inputs, weights and output gradients are uniform in [-1, 1), so each product term has rms
/// 1/3. Recursive f32 summation of K such terms has a typical error of ~0.4 eps (1/3) K (the
/// partial sums grow like sqrt(j)); the fast and reference sums differ by about 0.6 of that in
/// rms, so 4 eps (1/3) K is about 7 standard deviations: a real bug (a dropped or doubled tap,
/// magnitude ~1/3 or more) is far above it, rounding never reaches it. rtol adds a few ulps for
/// the bias added after the sum.
fn atol_for_sum(k: usize) -> f32 {
    4.0 * f32::EPSILON * (1.0 / 3.0) * k as f32
}
const RTOL: f32 = 4.0 * f32::EPSILON;

/// The forward's or input gradient's tolerance, summing over `channels`: the direct sum's, or for
/// a 3x3 "same" conv (which may run either Winograd transform) F(4x4)'s, the larger (see
/// `winograd_gamma2`).
fn conv_atol(s: &Conv2dShape, channels: usize) -> f32 {
    let k = s.kernel;
    let direct = atol_for_sum(k * k * channels);
    let p = s.pad;
    let same = k == 3 && s.stride == 1 && [p.top, p.bottom, p.left, p.right] == [1; 4];
    if same { direct.max(atol_for_sum(channels) * gamma2_f4() as f32) } else { direct }
}

fn padded(top: usize, bottom: usize, left: usize, right: usize) -> Padding {
    Padding { top, bottom, left, right }
}

/// [batch, h, w, in_c, out_c], then kernel, stride and padding.
fn shape([batch, h, w, ci, co]: [usize; 5], kernel: usize, stride: usize, pad: Padding) -> Conv2dShape {
    Conv2dShape { batch, in_h: h, in_w: w, in_c: ci, out_c: co, kernel, stride, pad }
}

struct Data {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
}

fn data(name: &str, s: &Conv2dShape) -> Data {
    let mut rng = rng_for(name);
    Data {
        x: random_vec(&mut rng, s.x_len(), -1.0, 1.0),
        w: random_vec(&mut rng, s.w_len(), -1.0, 1.0),
        b: random_vec(&mut rng, s.out_c, -1.0, 1.0),
        dy: random_vec(&mut rng, s.y_len(), -1.0, 1.0),
    }
}

/// The four outputs of the fast ops, each poisoned with NaN first.
fn run_fast(s: &Conv2dShape, d: &Data) -> [Vec<f32>; 4] {
    let (mut y, mut dx) = (vec![f32::NAN; s.y_len()], vec![f32::NAN; s.x_len()]);
    let (mut dw, mut db) = (vec![f32::NAN; s.w_len()], vec![f32::NAN; s.out_c]);
    fast::conv2d_fwd(s, &d.x, &d.w, Some(&d.b), &mut y);
    fast::conv2d_bwd_input(s, &d.dy, &d.w, &mut dx);
    fast::conv2d_bwd_weight(s, &d.x, &d.dy, &mut dw, Some(&mut db));
    [y, dx, dw, db]
}

fn check_against_reference(name: &str, s: Conv2dShape) {
    s.validate().unwrap();
    let d = data(name, &s);
    let [y, dx, dw, db] = run_fast(&s, &d);

    let (mut ry, mut rdx) = (vec![f32::NAN; s.y_len()], vec![f32::NAN; s.x_len()]);
    let (mut rdw, mut rdb) = (vec![f32::NAN; s.w_len()], vec![f32::NAN; s.out_c]);
    reference::conv2d_fwd(&s, &d.x, &d.w, Some(&d.b), &mut ry);
    reference::conv2d_bwd_input(&s, &d.dy, &d.w, &mut rdx);
    reference::conv2d_bwd_weight(&s, &d.x, &d.dy, &mut rdw, Some(&mut rdb));

    let pixels = s.batch * s.out_h() * s.out_w();
    assert_close(&format!("{name} fwd {s:?}"), &y, &ry, conv_atol(&s, s.in_c), RTOL);
    assert_close(&format!("{name} bwd_input {s:?}"), &dx, &rdx, conv_atol(&s, s.out_c), RTOL);
    assert_close(&format!("{name} bwd_weight {s:?}"), &dw, &rdw, atol_for_sum(pixels), RTOL);
    // dy alone has rms 1/sqrt(3), not 1/3: 1.7x the budget of a product sum of the same length.
    assert_close(&format!("{name} bias grad {s:?}"), &db, &rdb, 1.8 * atol_for_sum(pixels), RTOL);

    // Without a bias the forward must be the bias-free sum (not a stale bias).
    let mut y_nb = vec![f32::NAN; s.y_len()];
    let mut ry_nb = vec![f32::NAN; s.y_len()];
    fast::conv2d_fwd(&s, &d.x, &d.w, None, &mut y_nb);
    reference::conv2d_fwd(&s, &d.x, &d.w, None, &mut ry_nb);
    assert_close(&format!("{name} fwd no bias {s:?}"), &y_nb, &ry_nb, conv_atol(&s, s.in_c), RTOL);
}

#[test]
fn pointwise_1x1() {
    check_against_reference("1x1 odd", Conv2dShape::conv1x1(3, 7, 5, 13, 9));
    check_against_reference("1x1 wide", Conv2dShape::conv1x1(1, 16, 16, 96, 40));
}

#[test]
fn stride1() {
    check_against_reference("3x3 odd", Conv2dShape::conv3x3(3, 13, 17, 5, 11));
    check_against_reference("3x3 asymmetric pad", shape([2, 15, 19, 7, 3], 3, 1, padded(0, 2, 1, 0)));
    check_against_reference("1x1 padded", shape([1, 9, 9, 6, 10], 1, 1, padded(1, 1, 1, 1)));
    check_against_reference("3x3 batch 1", Conv2dShape::conv3x3(1, 20, 18, 24, 17));
    // Enough 2x2 tiles (>= 256) for the Winograd path (src/fast/winograd.rs, F(2x2) here), odd sizes:
    // partial tiles on the bottom and right edges, channels not a multiple of the SIMD width.
    check_against_reference("3x3 winograd odd", Conv2dShape::conv3x3(2, 33, 31, 17, 20));
    // 4 * 9 * 8 = 288 4x4 tiles: enough for the shape rule's F(4x4) (src/fast/conv.rs).
    check_against_reference("3x3 winograd F(4x4) odd", Conv2dShape::conv3x3(4, 33, 31, 17, 20));
}

#[test]
fn strided_and_unusual() {
    check_against_reference("downsample pad 0", Conv2dShape::downsample(3, 9, 11, 5, 7, 0));
    check_against_reference("downsample pad 1", Conv2dShape::downsample(1, 10, 7, 6, 5, 1));
    check_against_reference("3x3 small image", Conv2dShape::conv3x3(2, 5, 7, 9, 6));
    check_against_reference("5x5 stride 1", shape([2, 6, 5, 4, 5], 5, 1, padded(2, 1, 2, 2)));
    check_against_reference("3x3 padding 3", shape([1, 6, 7, 3, 4], 3, 1, Padding::same(3)));
    check_against_reference("2x2 stride 2", shape([2, 8, 9, 5, 6], 2, 2, padded(0, 0, 0, 1)));
    check_against_reference("3x3 stride 3", shape([2, 10, 11, 4, 3], 3, 3, padded(1, 1, 0, 2)));
    // Kernel smaller than the stride: some input pixels are read by no tap (dx = 0 there).
    check_against_reference("1x1 stride 2", shape([3, 7, 8, 5, 6], 1, 2, Padding::default()));
}

#[test]
fn cifar10_sized() {
    check_against_reference("cifar 3x3 32x32", Conv2dShape::conv3x3(2, 32, 32, 128, 128));
    check_against_reference("cifar 3x3 8x8", Conv2dShape::conv3x3(3, 8, 8, 256, 256));
    check_against_reference("cifar downsample", Conv2dShape::downsample(2, 16, 16, 256, 256, 1));
    check_against_reference("cifar 1x1", Conv2dShape::conv1x1(2, 16, 16, 384, 256));
    check_against_reference("cifar conv_in", Conv2dShape::conv3x3(2, 32, 32, 3, 128));
    check_against_reference("cifar conv_out", Conv2dShape::conv3x3(1, 32, 32, 128, 3));
}

fn same_bits(what: &str, a: &[f32], b: &[f32]) {
    let differ = a.iter().zip(b).position(|(x, y)| x.to_bits() != y.to_bits());
    assert!(differ.is_none(), "{what}: bits differ at index {}", differ.unwrap());
}

#[test]
fn deterministic_across_runs_and_thread_counts() {
    let shapes = [
        ("3x3 many blocks", Conv2dShape::conv3x3(2, 32, 32, 32, 48)),
        // 256 4x4 tiles: F(4x4) by the shape rule.
        ("3x3 F(4x4)", Conv2dShape::conv3x3(4, 32, 32, 32, 48)),
        // 36 output pixels: 3 blocks, each GEMM spread over the threads inside the gemm crate.
        ("3x3 few blocks", Conv2dShape::conv3x3(1, 6, 6, 256, 256)),
        ("3x3 small image", Conv2dShape::conv3x3(1, 8, 8, 64, 32)),
        ("downsample", Conv2dShape::downsample(2, 32, 32, 32, 32, 1)),
        ("1x1", Conv2dShape::conv1x1(2, 32, 32, 64, 32)),
    ];
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let two_threads = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for (name, s) in shapes {
        let d = data(name, &s);
        let first = two_threads.install(|| run_fast(&s, &d));
        let again = two_threads.install(|| run_fast(&s, &d));
        let single = one_thread.install(|| run_fast(&s, &d));
        for (i, op) in ["fwd", "bwd_input", "bwd_weight", "bias grad"].iter().enumerate() {
            same_bits(&format!("{name} {op}: two runs"), &first[i], &again[i]);
            same_bits(&format!("{name} {op}: 1 vs 2 threads"), &first[i], &single[i]);
        }
    }
}

// ---- Winograd F(2x2) and F(4x4) against an f64 direct convolution ------------------------------

/// Y = A^T [(G g G^T) .* (B^T d B)] A: each output mixes the 6x6 (or 4x4) GEMM results with
/// weights A_ir A_jc, and GEMM result (r, c) sums cin products of transformed values with rms
/// (1/3) P_r P_c, P_r = |row r of G| |row r of B^T| (entries of x and w independent, variance 1/3).
/// With independent rounding errors of ~0.4 eps per unit of (rms term x K), as for the direct sum
/// (see `atol_for_sum`), output (i, j) has rms error 0.4 eps (1/3) cin gamma_i gamma_j, gamma_i =
/// |A_i. * P|. So the bound is atol_for_sum(cin) * max_i gamma_i^2 (10x the typical error, as the
/// direct one): gamma^2 = 5 for F(2x2); 94.3 for F(4x4), whose A has 8s and B^T 4s and 5s.
fn winograd_gamma2(at: &[&[f64]], g: &[[f64; 3]], bt: &[&[f64]]) -> f64 {
    let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    let p: Vec<f64> = g.iter().zip(bt).map(|(g, b)| norm(g) * norm(b)).collect();
    at.iter().map(|a| a.iter().zip(&p).map(|(a, p)| (a * p) * (a * p)).sum::<f64>()).fold(0.0, f64::max)
}

fn gamma2_f2() -> f64 {
    let at: [&[f64]; 2] = [&[1., 1., 1., 0.], &[0., 1., -1., -1.]];
    let g = [[1., 0., 0.], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0., 0., 1.]];
    let bt: [&[f64]; 4] = [&[1., 0., -1., 0.], &[0., 1., 1., 0.], &[0., -1., 1., 0.], &[0., 1., 0., -1.]];
    winograd_gamma2(&at, &g, &bt)
}

fn gamma2_f4() -> f64 {
    let at: [&[f64]; 4] = [
        &[1., 1., 1., 1., 1., 0.],
        &[0., 1., -1., 2., -2., 0.],
        &[0., 1., 1., 4., 4., 0.],
        &[0., 1., -1., 8., -8., 1.],
    ];
    let (s, t, u) = (1. / 6., 1. / 12., 1. / 24.);
    let g = [[0.25, 0., 0.], [-s, -s, -s], [-s, s, -s], [u, t, s], [u, -t, s], [0., 0., 1.]];
    let bt: [&[f64]; 6] = [
        &[4., 0., -5., 0., 1., 0.],
        &[0., -4., -4., 1., 1., 0.],
        &[0., 4., -4., -1., 1., 0.],
        &[0., -2., -1., 2., 1., 0.],
        &[0., 2., -1., -2., 1., 0.],
        &[0., 4., 0., -5., 0., 1.],
    ];
    winograd_gamma2(&at, &g, &bt)
}

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
            let worst = y.iter().zip(&want).map(|(a, b)| (a - b).abs() / (atol + RTOL * b.abs())).fold(0f32, f32::max);
            eprintln!("{name} F({tile}x{tile}) backward={backward}: worst error {worst:.3} of the bound");
            assert_close(&format!("{name} F({tile}x{tile}) backward={backward} {s:?}"), &y, &want, atol, RTOL);
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
