//! The fast CPU path: the same ops as the references in src/cpu, for f32 NHWC, written for speed
//! (GEMMs from the `gemm` crate, rayon over the machine's cores, fused loops, scratch reused
//! across calls instead of allocated per step). `FastCpuBackend` (src/backend/cpu_fast.rs) runs
//! them; every op is tested against its reference (tests/fast_*.rs, and on every backend in its
//! own test file) and has a criterion bench; docs/ops.md maps each op to its files.
//!
//! Results are not bit-identical to the references (sums run in other orders, in f32), but each
//! is deterministic: the same inputs give the same bits on every run and thread count.

pub mod amx;
pub mod attention;
pub mod bf16;
pub mod conv;
mod conv_backward;
pub mod elementwise;
pub mod gemm;
pub mod gemm_bf16;
pub mod group_norm;
pub mod linear;
pub mod optim;
pub mod pool;
pub mod resample;
pub mod scratch;
pub mod silu;
pub mod simd;
pub mod winograd;
pub mod winograd4;

/// The fast path's A/B switches, checked once at start-up so that a typo stops the command with
/// one line instead of being ignored (each switch is read where it acts, silently): DDPM_SIMD,
/// DDPM_WINOGRAD (2 or 4: src/fast/conv.rs) and DDPM_AMX (0 or 1: src/fast/amx.rs).
pub fn check_env() -> Result<(), String> {
    simd::SimdLevel::from_env().map_err(str::to_string)?;
    for (key, allowed) in [("DDPM_WINOGRAD", ["2", "4"]), ("DDPM_AMX", ["0", "1"])] {
        if let Ok(value) = std::env::var(key)
            && !allowed.contains(&value.as_str())
        {
            return Err(format!("{key}={value:?}: use {} or {}", allowed[0], allowed[1]));
        }
    }
    Ok(())
}
