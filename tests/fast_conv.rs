//! The fast convolution (src/fast/conv.rs) against the reference (src/cpu/conv.rs): all three ops
//! and the bias gradient, on shapes that reach each of its formulations (1x1 GEMM; im2col with
//! a phase-gathered input gradient, in one or many blocks) with odd sizes, asymmetric padding, strides 1 to 3 and
//! batches 1 to 3; plus determinism across runs and rayon thread counts.

use ddpm::cpu::conv as reference;
use ddpm::fast::conv as fast;
use ddpm::shapes::{Conv2dShape, Padding};
use ddpm::testing::assert_close;

#[path = "common/winograd_bounds.rs"]
mod winograd_bounds;
use winograd_bounds::{Data, RTOL, atol_for_sum, data, gamma2_f4};

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
