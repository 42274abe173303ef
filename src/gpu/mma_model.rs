//! The tensor cores' arithmetic for bf16 mma.sync m16n8k16 with f32 accumulators, as the emulator
//! executes it: the model of microsoft/MMA-Sim (products exact, terms aligned to the largest
//! exponent and cut to F fraction bits, an exact sum, rounded toward zero to f32; sm_80 in two k8
//! halves with F = 24, sm_90 in one k16 step with F = 25). The code is src/emu/mma_model.cpp,
//! shared with the emulator so that host models of a kernel's k order and the emulated kernel use
//! the same bits. It is built with the emulator (so only where nvcc was found at build time).

use anyhow::{Result, bail};

/// Whose tensor cores: they round differently (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmaArch {
    /// A100 (Ampere).
    Sm80,
    /// H100 / H200 (Hopper): the default, the target GPU is an H200.
    Sm90,
}

impl MmaArch {
    fn number(self) -> i32 {
        match self {
            MmaArch::Sm80 => 80,
            MmaArch::Sm90 => 90,
        }
    }
}

#[cfg(ddpm_emulator)]
unsafe extern "C" {
    fn ddpm_mma_dot_bf16(arch: i32, a: *const u16, b: *const u16, c: f32) -> f32;
    fn ddpm_mma_m16n8k16_bf16(arch: i32, a: *const u16, b: *const u16, c: *const f32, d: *mut f32);
    fn ddpm_emu_set_mma_arch(arch: i32) -> i32;
}

/// Which architecture's mma arithmetic the emulator's tensor-core collectives reproduce (sm_90,
/// the H200's, until this is called). Applies to launches that start after the call.
pub fn set_emulator_mma_arch(arch: MmaArch) -> Result<()> {
    require_model()?;
    #[cfg(ddpm_emulator)]
    // SAFETY: a plain setter of an atomic; 80 and 90 are the values it accepts.
    unsafe {
        ddpm_emu_set_mma_arch(arch.number())
    };
    #[cfg(not(ddpm_emulator))]
    let _ = arch;
    Ok(())
}

fn require_model() -> Result<()> {
    if !cfg!(ddpm_emulator) {
        bail!("the mma model is part of the CUDA emulator, which this build lacks (no nvcc at build time)");
    }
    Ok(())
}

/// `c + sum over k of a[k] * b[k]` (bf16 bits) as one mma accumulates one element of D.
pub fn mma_dot_bf16(arch: MmaArch, a: &[u16; 16], b: &[u16; 16], c: f32) -> Result<f32> {
    require_model()?;
    #[cfg(ddpm_emulator)]
    // SAFETY: the pointers cover the 16 elements the function reads.
    return Ok(unsafe { ddpm_mma_dot_bf16(arch.number(), a.as_ptr(), b.as_ptr(), c) });
    #[cfg(not(ddpm_emulator))]
    unreachable!("{arch:?} {a:?} {b:?} {c}")
}

/// D = A B + C for row-major A [16][16], B [16][8] (bf16 bits) and C, D [16][8] (f32).
pub fn mma_m16n8k16_bf16(arch: MmaArch, a: &[u16; 256], b: &[u16; 128], c: &[f32; 128]) -> Result<[f32; 128]> {
    require_model()?;
    let mut d = [0f32; 128];
    #[cfg(ddpm_emulator)]
    // SAFETY: the pointers cover the sizes the function reads and writes.
    unsafe {
        ddpm_mma_m16n8k16_bf16(arch.number(), a.as_ptr(), b.as_ptr(), c.as_ptr(), d.as_mut_ptr())
    };
    #[cfg(not(ddpm_emulator))]
    let _ = (arch, a, b, c);
    Ok(d)
}
