//! What the bf16 tests share (tests/bf16.rs, tests/bf16_gemm.rs): bf16-rounded operands, the
//! bound of contract 2, the f32 tolerances it is added to, and running a check on each bf16 path.

use super::say;
use ddpm::fast::bf16;
use ddpm::fast::gemm_bf16::Bf16Kernel;
use std::sync::Mutex;

pub fn rounded(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| bf16::round(v)).collect()
}
pub fn abs64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v.abs() as f64).collect()
}
pub fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Each product of two bf16-rounded operands errs by at most (1 + 2^-9)^2 - 1 relative.
pub const PRODUCT_REL: f64 = 1.0 / 256.0 + 1.0 / 131_072.0;

/// Checks the bound of contract 2 against the exact (f64) answer from unrounded operands:
/// |got - exact| <= PRODUCT_REL * magnitude + f32_atol, with `magnitude` = sum |a||b|.
pub fn assert_within_bf16_bound(what: &str, got: &[f32], exact: &[f64], magnitude: &[f64], f32_atol: f32) {
    let mut worst = 0.0f64;
    for (i, ((&g, &e), &m)) in got.iter().zip(exact).zip(magnitude).enumerate() {
        let bound = PRODUCT_REL * m + f32_atol as f64;
        let err = (g as f64 - e).abs();
        assert!(err <= bound, "{what}: element {i}: got {g}, exact {e}, error {err:e} > bound {bound:e}");
        worst = worst.max(err / bound);
    }
    // An f32 product's error is ~1e-5 of this bound; bf16's reaches a good part of it.
    assert!(worst > 1e-3, "{what}: errors at most {worst:e} of the bf16 bound: no rounding happened");
}

/// 4 eps (1/3) K: the f32 budget of a product sum of K terms of uniform [-1, 1) values (see
/// tests/fast_conv.rs).
pub fn sum_atol(k: usize) -> f32 {
    4.0 * f32::EPSILON * (1.0 / 3.0) * k as f32
}
pub const RTOL: f32 = 4.0 * f32::EPSILON;

/// Held by every test that forces the bf16 kernel (process-wide).
pub static KERNEL: Mutex<()> = Mutex::new(());

/// The packed kernels this CPU can run: the emulated ones (vdpbf16ps's and AMX's arithmetic in
/// plain Rust) everywhere; the native one where the CPU has AVX-512 BF16, AMX where the CPU has
/// AMX-BF16 and the OS grants it (each said once when skipped).
pub fn packed_kernels() -> Vec<Bf16Kernel> {
    let mut kernels = vec![Bf16Kernel::Emulated, Bf16Kernel::AmxEmulated];
    static SAID: std::sync::Once = std::sync::Once::new();
    let mut skipped = Vec::new();
    match Bf16Kernel::native() {
        Some(k) => kernels.push(k),
        None => skipped
            .push("skipped: the native bf16 kernel (vdpbf16ps): this CPU lacks AVX-512 BF16 or runs below AVX-512"),
    }
    match Bf16Kernel::amx() {
        Some(k) => kernels.push(k),
        None => skipped.push("skipped: no AMX-BF16 (tdpbf16ps): the CPU lacks AMX-BF16/AMX-TILE, the OS refused the tile state, DDPM_NO_AMX is set, or the level is below AVX-512"),
    }
    SAID.call_once(|| skipped.iter().for_each(|line| say(line)));
    kernels
}

/// Runs `f` with each bf16 path forced in turn: portable, then each packed kernel.
pub fn on_every_bf16_path(f: impl Fn(&str)) {
    let _guard = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    bf16::force_kernel(Some(None));
    f("portable");
    for k in packed_kernels() {
        bf16::force_kernel(Some(Some(k)));
        f(&format!("packed {k:?}"));
    }
    bf16::force_kernel(None);
}
