//! The tensor-core linear forward and backward (kernels/linear_bf16.cu) on the emulator, each check with the
//! block's fibers in forward and in reversed order (races between warps show in one of them):
//! (a) small-integer inputs, where every sum is exact, bit for bit against the f32 reference: a
//!     layout slip fails with zero tolerance;
//! (b) random inputs, bit for bit against a host model that replays the kernel's k order through
//!     the mma arithmetic model (src/emu/mma_model.cpp), on both architectures;
//! (c) random inputs against an f64 reference from the same bf16 values, within the worst-case
//!     bound of the model: (K/16) (17 2^-24 + 2^-23) (sum |a b| + |bias|).
//! Shapes: odd rows and columns (not multiples of the 64 tile), batch 1, K not a multiple of the
//! 32-wide slice, and more slices than pipeline stages. The backward (dx = dy W, dW = dy^T x and
//! db, an extra ones column of dW's GEMM) runs the same three checks on rows 1, 37 and 130 (dW's
//! k, not a multiple of 8) and in/out multiples of 8 but not of 64, and on 1,001 rows, whose
//! weight gradient the launcher splits over 8 blocks per tile (the splits added in order).

mod common;
use common::linear_bf16_checks::{
    BWD_SHAPES, SHAPES, bf16_output_is_the_rounded_f32, exact_small_integers, exact_small_integers_bwd, matches_model,
    matches_model_bwd, random_bwd_case, random_case, run, within_bound_bwd,
};
use common::{both_orders, emu};
use ddpm::cuda::linear::{
    linear_bwd_input_bf16, linear_bwd_weight_bf16, linear_bwd_weight_bf16_split, linear_fwd_bf16,
};
use ddpm::shapes::LinearShape;
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
fn random_inputs_are_within_the_models_worst_case_bound_of_f64() {
    let _guard = common::emulator_settings();
    let gpu = emu();
    let mut rng = StdRng::seed_from_u64(18);
    for &(rows, k, n) in &SHAPES {
        let c = random_case(&mut rng, rows, k, n);
        let got = run(&gpu, &c);
        let per_step = 17.0 * 2f64.powi(-24) + 2f64.powi(-23);
        let mut worst = 0f64;
        for r in 0..rows {
            for o in 0..n {
                let terms = (0..k).map(|j| c.x[r * k + j].to_f64() * c.w[o * k + j].to_f64());
                let (exact, mag) = terms.fold((c.b[o] as f64, (c.b[o] as f64).abs()), |(s, m), t| (s + t, m + t.abs()));
                let bound = (k.div_ceil(16) as f64 + 1.0) * per_step * mag;
                let err = (got[r * n + o] as f64 - exact).abs();
                assert!(err <= bound, "{rows}x{k}x{n} y[{r}][{o}]: error {err:e} over the bound {bound:e}");
                worst = worst.max(err / bound.max(f64::MIN_POSITIVE));
            }
        }
        println!("linear_bf16 {rows}x{k}x{n}: worst error {:.1}% of the bound", 100.0 * worst);
    }
}

#[test]
fn the_bf16_output_is_the_f32_output_rounded_bit_for_bit() {
    bf16_output_is_the_rounded_f32(&common::emu());
}

#[test]
fn q_k_and_v_in_one_launch_are_three_launches_bit_for_bit() {
    common::linear_bf16_checks::x3_is_three_launches(&common::emu());
}

#[test]
fn a_k_not_a_multiple_of_8_is_refused() {
    let gpu = emu();
    let s = LinearShape { rows: 2, in_features: 12, out_features: 3 };
    let x = gpu.upload(&[bf16::ZERO; 24]).unwrap();
    let w = gpu.upload(&[bf16::ZERO; 36]).unwrap();
    let mut y = gpu.alloc::<f32>(6).unwrap();
    let err = linear_fwd_bf16(&s, &x, &w, None, &mut y).unwrap_err().to_string();
    assert!(err.contains("multiple of 8"), "{err}");
}

#[test]
fn backward_small_integers_are_exact_and_bit_for_bit() {
    let _guard = common::emulator_settings();
    both_orders(&mut |gpu, order| exact_small_integers_bwd(gpu, order));
}

#[test]
fn backward_random_inputs_match_the_host_model_bit_for_bit_on_both_architectures() {
    common::on_both_archs(&mut |gpu, arch, order| matches_model_bwd(gpu, arch, order));
}

#[test]
fn backward_random_inputs_are_within_the_models_worst_case_bound_of_f64() {
    let _guard = common::emulator_settings();
    let gpu = emu();
    let mut rng = StdRng::seed_from_u64(20);
    for &(rows, k, n) in &BWD_SHAPES {
        let worst = within_bound_bwd(&gpu, &random_bwd_case(&mut rng, rows, k, n));
        println!("linear_bwd_bf16 {rows}x{k}x{n}: worst error {:.1}% of the bound", 100.0 * worst);
    }
}

#[test]
fn backward_features_not_a_multiple_of_8_are_refused() {
    let gpu = emu();
    for (k, n) in [(12, 8), (8, 12)] {
        let s = LinearShape { rows: 2, in_features: k, out_features: n };
        let (x, w, dy) = (
            gpu.upload(&vec![bf16::ZERO; 2 * k]).unwrap(),
            gpu.upload(&vec![bf16::ZERO; k * n]).unwrap(),
            gpu.upload(&vec![bf16::ZERO; 2 * n]).unwrap(),
        );
        let (mut dx, mut dw) = (gpu.alloc::<f32>(2 * k).unwrap(), gpu.alloc::<f32>(k * n).unwrap());
        let err = linear_bwd_input_bf16(&s, &dy, &w, &mut dx).unwrap_err().to_string();
        assert!(err.contains("multiple of 8") && !err.contains('\n'), "{err}");
        let err = linear_bwd_weight_bf16(&s, &x, &dy, &mut dw, None).unwrap_err().to_string();
        assert!(err.contains("multiple of 8") && !err.contains('\n'), "{err}");
    }
}

#[test]
fn backward_wrong_lengths_are_refused_and_empty_shapes_launch_nothing() {
    let gpu = emu();
    let s = LinearShape { rows: 3, in_features: 8, out_features: 16 };
    let (x, w, dy) = (
        gpu.upload(&[bf16::ONE; 24]).unwrap(),
        gpu.upload(&[bf16::ONE; 128]).unwrap(),
        gpu.upload(&[bf16::ONE; 48]).unwrap(),
    );
    let (mut dw, mut db) = (gpu.alloc::<f32>(128).unwrap(), gpu.alloc::<f32>(15).unwrap());
    let err = linear_bwd_weight_bf16(&s, &x, &dy, &mut dw, Some(&mut db)).unwrap_err().to_string();
    assert!(err.contains("db"), "{err}");
    let mut dx = gpu.alloc::<f32>(23).unwrap();
    assert!(linear_bwd_input_bf16(&s, &dy, &w, &mut dx).is_err());
    // rows 0: dx is empty (no launch); dW and db are sums of nothing, zeros.
    let s = LinearShape { rows: 0, in_features: 8, out_features: 16 };
    let (none, mut db) = (gpu.alloc::<bf16>(0).unwrap(), gpu.upload(&[f32::NAN; 16]).unwrap());
    let mut dw = gpu.upload(&[f32::NAN; 128]).unwrap();
    let mut dx = gpu.alloc::<f32>(0).unwrap();
    linear_bwd_input_bf16(&s, &none, &w, &mut dx).unwrap();
    linear_bwd_weight_bf16(&s, &none, &none, &mut dw, Some(&mut db)).unwrap();
    assert!(gpu.download(&dw).unwrap().iter().chain(&gpu.download(&db).unwrap()).all(|&v| v == 0.0));
}

#[test]
fn a_split_of_the_rows_that_leaves_a_block_empty_is_refused() {
    // 100 rows are 4 slices of 32: 4 splits take one each; 3 splits take 2, 2 and 0 (refused).
    let gpu = emu();
    let s = LinearShape { rows: 100, in_features: 8, out_features: 8 };
    let (x, dy) = (gpu.upload(&[bf16::ONE; 800]).unwrap(), gpu.upload(&[bf16::ONE; 800]).unwrap());
    let mut dw = gpu.alloc::<f32>(64).unwrap();
    for bad in [0, 3, 5] {
        let err = linear_bwd_weight_bf16_split(&s, &x, &dy, &mut dw, None, bad).unwrap_err().to_string();
        assert!(err.contains(&format!("split {bad} ways")) && !err.contains('\n'), "{err}");
    }
    linear_bwd_weight_bf16_split(&s, &x, &dy, &mut dw, None, 4).unwrap();
    assert!(gpu.download(&dw).unwrap().iter().all(|&v| v == 100.0));
}
