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
pub mod prepared;
pub mod resample;
pub mod scratch;
pub mod silu;
pub mod simd;
pub mod threads;
pub mod winograd;
pub mod winograd4;
mod winograd4_grad;
pub mod winograd_grad;

/// The fast path's A/B switches, checked once at start-up so that a typo stops the command with
/// one line instead of being ignored (each switch is read where it acts, silently): DDPM_SIMD,
/// DDPM_WINOGRAD (2 or 4: src/fast/conv.rs), DDPM_AMX, DDPM_BF16_NATIVE and DDPM_SPIN (0 or 1:
/// src/fast/amx.rs, src/fast/bf16.rs, src/fast/threads.rs) and DDPM_PREPARED_MB (megabytes: src/fast/prepared.rs).
pub fn check_env() -> Result<(), String> {
    simd::SimdLevel::from_env().map_err(str::to_string)?;
    if let Ok(value) = std::env::var("DDPM_PREPARED_MB")
        && value.parse::<usize>().is_err()
    {
        return Err(format!("DDPM_PREPARED_MB={value:?}: use a whole number of megabytes (0 turns the cache off)"));
    }
    let switches = [
        ("DDPM_WINOGRAD", ["2", "4"]),
        ("DDPM_AMX", ["0", "1"]),
        ("DDPM_BF16_NATIVE", ["0", "1"]),
        ("DDPM_SPIN", ["0", "1"]),
    ];
    for (key, allowed) in switches {
        if let Ok(value) = std::env::var(key)
            && !allowed.contains(&value.as_str())
        {
            return Err(format!("{key}={value:?}: use {} or {}", allowed[0], allowed[1]));
        }
    }
    Ok(())
}
