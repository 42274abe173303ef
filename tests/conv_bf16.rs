//! The tensor-core convolution forward (kernels/conv_bf16.cu) on the emulator, each check with
//! the block's fibers in forward and in reversed order (races between warps show in one of them):
//! (a) small-integer inputs, where every sum is exact, bit for bit against the f32 reference
//!     (src/cpu/conv.rs) plus the fused epilogue: a layout slip fails with zero tolerance;
//! (b) random inputs, bit for bit against a host model that replays the kernel's k order through
//!     the mma arithmetic model (src/emu/mma_model.cpp), on both architectures;
//! (c) random inputs against an f64 reference from the same bf16 values, within the model's
//!     worst-case bound (K/16 + splits + 4) (17 2^-24 + 2^-23) sum|terms| (+ 2^-8 |y| for a bf16 output).
//! Shapes: tests/common/conv_bf16_checks.rs (odd maps and channels, batch 1, 1x1, stride 2).

mod common;
use common::conv_bf16_checks::{exact_small_integers, im2col_row, matches_model, random_case, run, shapes};
use common::{both_orders, emu};
use ddpm::cuda::conv_bf16::{ConvOut, conv2d_fwd_bf16};
use ddpm::gpu::Gpu;
use ddpm::shapes::Conv2dShape;
use half::bf16;
use rand::{SeedableRng, rngs::StdRng};

#[test]
fn small_integers_are_exact_and_bit_for_bit() {
    let _guard = common::emulator_settings();
    both_orders(&mut |gpu, order| exact_small_integers(gpu, order));
}

#[test]
fn random_inputs_match_the_host_model_bit_for_bit_on_both_architectures() {
    common::on_both_archs(&mut |gpu, arch, order| matches_model(gpu, arch, order));
}

#[test]
fn backward_small_integers_are_exact_and_bit_for_bit() {
    let _guard = common::emulator_settings();
    both_orders(&mut |gpu, order| common::conv_bwd_bf16_checks::exact_small_integers(gpu, order));
}

#[test]
fn backward_random_inputs_match_the_host_model_bit_for_bit_on_both_architectures() {
    common::on_both_archs(&mut |gpu, arch, order| common::conv_bwd_bf16_checks::matches_model(gpu, arch, order));
}

#[test]
fn random_inputs_are_within_the_models_worst_case_bound_of_f64() {
    let _guard = common::emulator_settings();
    let gpu = emu();
    let mut rng = StdRng::seed_from_u64(28);
    let per_step = 17.0 * 2f64.powi(-24) + 2f64.powi(-23);
    for (ci, s) in shapes().into_iter().enumerate() {
        let c = random_case(&mut rng, s, ci % 2 == 1);
        let got = run(&gpu, &c);
        // Split-K adds each split's partial sum once more.
        let splits = ddpm::cuda::conv_bf16::conv2d_fwd_bf16_splits(&s, 64) as f64;
        let mut worst = 0f64;
        for m in 0..s.batch * s.out_h() * s.out_w() {
            let a = im2col_row(&s, &c.x, m);
            let k = a.len();
            let img = m / (s.out_h() * s.out_w());
            for o in 0..s.out_c {
                let terms = (0..k).map(|j| a[j].to_f64() * c.w[o * k + j].to_f64());
                let extra = [c.bias[o], c.emb[img * s.out_c + o], c.residual[m * s.out_c + o]].map(f64::from);
                let (exact, mag) = terms.chain(extra).fold((0f64, 0f64), |(s, m), t| (s + t, m + t.abs()));
                let sum_bound = (k.div_ceil(16) as f64 + splits + 4.0) * per_step * mag * (1.0 + 2f64.powi(-8));
                // Rounding to bf16: half an ulp, at most 2^-8 of the value.
                let rounding = if c.out_bf16 { 2f64.powi(-8) * (exact.abs() + sum_bound) } else { 0.0 };
                let bound = sum_bound + rounding;
                let err = (got[m * s.out_c + o] as f64 - exact).abs();
                assert!(err <= bound, "{s:?} y[{m}][{o}]: error {err:e} over the bound {bound:e}");
                worst = worst.max(err / bound.max(f64::MIN_POSITIVE));
            }
        }
        println!("conv_bf16 {s:?} (bf16 out: {}): worst error {:.1}% of the bound", c.out_bf16, 100.0 * worst);
    }
}

/// The backward's (c): dx and dw against f64 sums of the same bf16 products, within (k16 steps +
/// pixel chunks or K splits + 1) (17 2^-24 + 2^-23) sum|terms|.
#[test]
fn backward_random_inputs_are_within_the_models_worst_case_bound_of_f64() {
    use common::conv_bwd_bf16_checks as bwd;
    let _guard = common::emulator_settings();
    let gpu = emu();
    let mut rng = StdRng::seed_from_u64(38);
    let per_step = 17.0 * 2f64.powi(-24) + 2f64.powi(-23);
    for s in bwd::shapes() {
        let c = bwd::random_case(&mut rng, s);
        let (dx, dw, _) = bwd::run(&gpu, &c);
        let (f, pixels) = (|v: bf16| v.to_f64(), s.batch * s.out_h() * s.out_w());
        let mut want_dx = vec![(0f64, 0f64); s.x_len()];
        let mut want_dw = vec![(0f64, 0f64); s.w_len()];
        for p in 0..pixels {
            let a = im2col_row(&s, &c.x, p);
            let img_base = (p / (s.out_h() * s.out_w())) * s.in_h * s.in_w;
            for o in 0..s.out_c {
                let g = f(c.dy[p * s.out_c + o]);
                for (k, &xv) in a.iter().enumerate() {
                    let t = g * f(xv);
                    let e = &mut want_dw[o * a.len() + k];
                    *e = (e.0 + t, e.1 + t.abs());
                    // The same product order dx sees: dy[p][o] w[o][tap][i] lands on the input
                    // pixel that tap reads, when inside the image.
                    let (tap, i) = (k / s.in_c, k % s.in_c);
                    let (oy, ox) = ((p / s.out_w()) % s.out_h(), p % s.out_w());
                    let iy = (oy * s.stride + tap / s.kernel).checked_sub(s.pad.top).filter(|&v| v < s.in_h);
                    let ix = (ox * s.stride + tap % s.kernel).checked_sub(s.pad.left).filter(|&v| v < s.in_w);
                    if let (Some(iy), Some(ix)) = (iy, ix) {
                        let t = g * f(c.w[o * a.len() + k]);
                        let e = &mut want_dx[(img_base + iy * s.in_w + ix) * s.in_c + i];
                        *e = (e.0 + t, e.1 + t.abs());
                    }
                }
            }
        }
        let chunks = ddpm::cuda::conv_bf16::conv2d_bwd_weight_bf16_chunks(&s, true).1 as f64;
        let splits = ddpm::cuda::conv_bf16::conv2d_bwd_input_bf16_splits(&s) as f64;
        let steps = [
            (s.kernel * s.kernel * s.out_c).div_ceil(16) as f64 + splits + 1.0,
            pixels.div_ceil(16) as f64 + chunks + 1.0,
        ];
        let mut worst = 0f64;
        for (name, got, want, steps) in [("dx", &dx, &want_dx, steps[0]), ("dw", &dw, &want_dw, steps[1])] {
            for (e, (&g, &(exact, mag))) in got.iter().zip(want.iter()).enumerate() {
                let (err, bound) = ((g as f64 - exact).abs(), steps * per_step * mag);
                assert!(err <= bound, "{s:?} {name}[{e}]: error {err:e} over the bound {bound:e}");
                worst = worst.max(err / bound.max(f64::MIN_POSITIVE));
            }
        }
        println!("conv_bf16 backward {s:?}: worst error {:.1}% of the bound", 100.0 * worst);
    }
}

#[test]
fn without_the_epilogue_terms_it_is_the_plain_convolution() {
    let gpu = emu();
    let mut rng = StdRng::seed_from_u64(29);
    let s = Conv2dShape::conv3x3(1, 4, 3, 8, 6);
    let c = random_case(&mut rng, s, false);
    let (x, w) = (gpu.upload(&c.x).unwrap(), gpu.upload(&c.w).unwrap());
    let mut y = gpu.upload(&vec![f32::NAN; s.y_len()]).unwrap();
    conv2d_fwd_bf16(&s, &x, &w, None, None, ConvOut::F32 { y: &mut y, residual: None }).unwrap();
    let got = gpu.download(&y).unwrap();
    // The same problem with zero bias, embedding and residual gives the same bits.
    let zero = common::conv_bf16_checks::Case {
        bias: vec![0.0; s.out_c],
        emb: vec![0.0; s.out_c],
        residual: vec![0.0; s.y_len()],
        ..c
    };
    let want = run(&gpu, &zero);
    assert!(got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()), "{got:?} vs {want:?}");
}

/// The 128x128 tile (8 warps of 64x32) computes every sum in the same order as the 64x64 one, so
/// its bits must equal those (which the model tests check) on shapes that are not multiples of
/// 128, with and without split-K, both output types, both fiber orders.
#[test]
fn the_128_tile_gives_the_64_tiles_bits() {
    use common::conv_bf16_checks::Case;
    use ddpm::cuda::conv_bf16::{conv2d_fwd_bf16_splits, conv2d_fwd_bf16_tiled};
    let _guard = common::emulator_settings();
    let mut rng = StdRng::seed_from_u64(30);
    let run_tiled = |gpu: &Gpu, c: &Case, tile: usize| -> Vec<u32> {
        let (x, w) = (gpu.upload(&c.x).unwrap(), gpu.upload(&c.w).unwrap());
        let (bias, emb, res) =
            (gpu.upload(&c.bias).unwrap(), gpu.upload(&c.emb).unwrap(), gpu.upload(&c.residual).unwrap());
        let mut y = gpu.upload(&vec![f32::NAN; c.s.y_len()]).unwrap();
        let out = ConvOut::F32 { y: &mut y, residual: Some(&res) };
        conv2d_fwd_bf16_tiled(tile, &c.s, &x, &w, Some(&bias), Some(&emb), out).unwrap();
        gpu.download(&y).unwrap().iter().map(|v| v.to_bits()).collect()
    };
    let shapes = [Conv2dShape::conv3x3(1, 11, 13, 16, 136), Conv2dShape::conv3x3(1, 4, 4, 128, 24)];
    assert!(conv2d_fwd_bf16_splits(&shapes[1], 128) > 1, "the second shape exercises split-K");
    for s in shapes {
        let c = random_case(&mut rng, s, false);
        both_orders(&mut |gpu, order| {
            let (small, large) = (run_tiled(gpu, &c, 64), run_tiled(gpu, &c, 128));
            let diff = small.iter().zip(&large).position(|(a, b)| a != b);
            assert!(diff.is_none(), "{order} {s:?}: y[{}] differs between the tiles", diff.unwrap());
        });
    }
}

#[test]
fn the_input_gradients_128_tile_gives_the_64_tiles_bits() {
    let _guard = common::emulator_settings();
    both_orders(&mut |gpu, order| common::conv_bwd_bf16_checks::input_grad_tiles_agree(gpu, order));
}

#[test]
fn the_weight_gradients_128_tile_gives_the_64_tiles_bits() {
    let _guard = common::emulator_settings();
    both_orders(&mut |gpu, order| common::conv_bwd_bf16_checks::weight_grad_tiles_agree(gpu, order));
}

#[test]
fn bad_inputs_are_refused_in_one_line() {
    let gpu = emu();
    let s = Conv2dShape::conv3x3(1, 4, 4, 12, 8);
    let x = gpu.upload(&vec![bf16::ZERO; s.x_len()]).unwrap();
    let w = gpu.upload(&vec![bf16::ZERO; s.w_len()]).unwrap();
    let mut y = gpu.alloc::<f32>(s.y_len()).unwrap();
    let err = conv2d_fwd_bf16(&s, &x, &w, None, None, ConvOut::F32 { y: &mut y, residual: None }).unwrap_err();
    assert!(err.to_string().contains("in_c 12 must be a multiple of 8"), "{err}");
    let s = Conv2dShape::conv3x3(1, 4, 4, 8, 8);
    let x = gpu.upload(&vec![bf16::ZERO; s.x_len()]).unwrap();
    let w = gpu.upload(&vec![bf16::ZERO; s.w_len()]).unwrap();
    let emb = gpu.upload(&[0f32; 3]).unwrap();
    let err = conv2d_fwd_bf16(&s, &x, &w, None, Some(&emb), ConvOut::F32 { y: &mut y, residual: None }).unwrap_err();
    assert!(err.to_string().contains("emb has 3 elements, the shape needs 8"), "{err}");
    assert!(!err.to_string().contains('\n'));
}
