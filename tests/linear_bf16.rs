//! The tensor-core linear forward (kernels/linear_bf16.cu) on the emulator, each check with the
//! block's fibers in forward and in reversed order (races between warps show in one of them):
//! (a) small-integer inputs, where every sum is exact, bit for bit against the f32 reference: a
//!     layout slip fails with zero tolerance;
//! (b) random inputs, bit for bit against a host model that replays the kernel's k order through
//!     the mma arithmetic model (src/emu/mma_model.cpp), on both architectures;
//! (c) random inputs against an f64 reference from the same bf16 values, within the worst-case
//!     bound of the model: (K/16) (17 2^-24 + 2^-23) (sum |a b| + |bias|).
//! Shapes: odd rows and columns (not multiples of the 64 tile), batch 1, K not a multiple of the
//! 32-wide slice, and more slices than pipeline stages.

mod common;
use common::emu;
use common::linear_bf16_checks::{SHAPES, exact_small_integers, matches_model, random_case, run};
use ddpm::cuda::linear::linear_fwd_bf16;
use ddpm::gpu::mma_model::{MmaArch, set_emulator_mma_arch};
use ddpm::gpu::{FiberOrder, Gpu};
use ddpm::shapes::LinearShape;
use half::bf16;
use rand::{SeedableRng, rngs::StdRng};
use std::sync::Mutex;

/// The emulator's mma architecture is process-wide: one test at a time.
static SETTINGS: Mutex<()> = Mutex::new(());

/// Runs `check` with the fibers forward and reversed.
fn both_orders(check: &mut dyn FnMut(&Gpu, &str)) {
    let gpu = emu();
    for (order, name) in [(FiberOrder::Forward, "forward"), (FiberOrder::Reverse, "reversed")] {
        gpu.set_fiber_order(order);
        check(&gpu, name);
    }
}

#[test]
fn small_integers_are_exact_and_bit_for_bit() {
    let _guard = SETTINGS.lock().unwrap();
    both_orders(&mut |gpu, order| exact_small_integers(gpu, order));
}

#[test]
fn random_inputs_match_the_host_model_bit_for_bit_on_both_architectures() {
    let _guard = SETTINGS.lock().unwrap();
    for arch in [MmaArch::Sm90, MmaArch::Sm80] {
        set_emulator_mma_arch(arch).unwrap();
        both_orders(&mut |gpu, order| matches_model(gpu, arch, order));
    }
    set_emulator_mma_arch(MmaArch::Sm90).unwrap();
}

#[test]
fn random_inputs_are_within_the_models_worst_case_bound_of_f64() {
    let _guard = SETTINGS.lock().unwrap();
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
fn a_k_not_a_multiple_of_8_is_refused() {
    let gpu = emu();
    let s = LinearShape { rows: 2, in_features: 12, out_features: 3 };
    let x = gpu.upload(&[bf16::ZERO; 24]).unwrap();
    let w = gpu.upload(&[bf16::ZERO; 36]).unwrap();
    let mut y = gpu.alloc::<f32>(6).unwrap();
    let err = linear_fwd_bf16(&s, &x, &w, None, &mut y).unwrap_err().to_string();
    assert!(err.contains("multiple of 8"), "{err}");
}
