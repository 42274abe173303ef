//! The emulator's tensor-core arithmetic (src/emu/mma_model.cpp, integer arithmetic) against a
//! second, independent transcription of microsoft/MMA-Sim's `nv_fused_dot_add` written the way
//! the Python is (f64 significands, frexp, trunc), bit for bit on 10^5 random dot products per
//! architecture; plus the cases that pin the model down: exact integer sums, round toward zero,
//! sm_80's two k8 halves against sm_90's one k16 step, subnormals, NaN and infinities.

use ddpm::gpu::mma_model::{MmaArch, mma_dot_bf16, mma_m16n8k16_bf16};
use half::bf16;
use rand::{RngExt, SeedableRng, rngs::StdRng};

/// `x = significand * 2^exponent` with 1 <= |significand| < 2, the exponent clamped at -126 for
/// subnormals (significand below 1) and -999 for zero: MMA-Sim's extract_significand_exponent.
fn significand_exponent(x: f64) -> (f64, i32) {
    if x == 0.0 {
        return (0.0, -999);
    }
    let mut e = x.abs().log2().floor() as i32;
    // log2 can be off by one near powers of two: fix so that 1 <= |x| / 2^e < 2.
    while x.abs() / 2f64.powi(e) >= 2.0 {
        e += 1;
    }
    while x.abs() / 2f64.powi(e) < 1.0 {
        e -= 1;
    }
    let e = e.max(-126);
    (x / 2f64.powi(e), e)
}

/// MMA-Sim's nv_fused_dot_add for f32 output, transcribed: a NaN sum gives 0x7FFFFFFF, an
/// infinite one the infinity; else every term truncated at 2^(max exponent - F) and the f64 sum
/// (exact: at most 17 terms of 27 bits) rounded toward zero to f32.
fn reference_step(a: &[f32], b: &[f32], c: f32, frac_bits: i32) -> f32 {
    let f64_sum: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>() + c as f64;
    if f64_sum.is_nan() {
        return f32::from_bits(0x7fff_ffff);
    }
    if f64_sum.is_infinite() {
        return f64_sum as f32;
    }
    let mut terms = vec![significand_exponent(c as f64)];
    for (&x, &y) in a.iter().zip(b) {
        let ((sx, ex), (sy, ey)) = (significand_exponent(x as f64), significand_exponent(y as f64));
        terms.push((sx * sy, ex + ey));
    }
    let max_e = terms.iter().map(|t| t.1).max().unwrap();
    let scale = |e: i32| 2f64.powi(frac_bits + e - max_e);
    let sum: f64 = terms.iter().map(|&(s, e)| (s * scale(e)).trunc() * 2f64.powi(-frac_bits)).sum();
    let value = sum * 2f64.powi(max_e);
    if value == 0.0 {
        return 0.0;
    }
    let (s, e) = significand_exponent(value);
    let rz = (s * 2f64.powi(23)).trunc() * 2f64.powi(-23) * 2f64.powi(e);
    rz as f32 // exact, or an infinity past the f32 range
}

fn reference(arch: MmaArch, a: &[f32; 16], b: &[f32; 16], c: f32) -> f32 {
    match arch {
        MmaArch::Sm80 => reference_step(&a[8..], &b[8..], reference_step(&a[..8], &b[..8], c, 24), 24),
        MmaArch::Sm90 => reference_step(a, b, c, 25),
    }
}

fn bits(x: &[f32; 16]) -> [u16; 16] {
    x.map(|v| bf16::from_f32(v).to_bits())
}

/// A bf16 value with a random sign and exponent in [lo, hi] (subnormals below -126), or zero.
fn random_bf16(rng: &mut StdRng, lo: i32, hi: i32) -> f32 {
    if rng.random_bool(0.05) {
        return 0.0;
    }
    let e = rng.random_range(lo..=hi);
    let v = rng.random_range(1.0f64..2.0) * 2f64.powi(e) * if rng.random_bool(0.5) { -1.0 } else { 1.0 };
    bf16::from_f64(v).to_f32()
}

/// Skips (with one line) where the build has no emulator, hence no model.
fn model_available() -> bool {
    let ok = mma_dot_bf16(MmaArch::Sm90, &[0; 16], &[0; 16], 0.0).is_ok();
    if !ok {
        println!("skipped: no CUDA emulator in this build (the mma model is part of it)");
    }
    ok
}

#[test]
fn the_model_matches_an_independent_transcription_bit_for_bit() {
    if !model_available() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(15);
    // Exponent ranges: similar magnitudes (heavy cancellation), wide spreads (terms cut to 0),
    // and the subnormal range.
    for (arch, (lo, hi)) in
        [MmaArch::Sm80, MmaArch::Sm90].into_iter().flat_map(|a| [(-3, 3), (-40, 40), (-140, -110)].map(|r| (a, r)))
    {
        for _ in 0..100_000 / 3 {
            let a: [f32; 16] = std::array::from_fn(|_| random_bf16(&mut rng, lo, hi));
            let b: [f32; 16] = std::array::from_fn(|_| random_bf16(&mut rng, lo, hi));
            let c = if rng.random_bool(0.1) { 0.0 } else { random_bf16(&mut rng, 2 * lo, 2 * hi) * 1.000_123 };
            let got = mma_dot_bf16(arch, &bits(&a), &bits(&b), c).unwrap();
            let want = reference(arch, &a, &b, c);
            if got.to_bits() != want.to_bits() {
                panic!(
                    "{arch:?} exponents {lo}..{hi}: model {got:e} ({:#x}) vs reference {want:e} ({:#x})\na {a:?}\nb {b:?}\nc {c:e}",
                    got.to_bits(),
                    want.to_bits()
                );
            }
        }
    }
}

#[test]
fn exact_sums_rounding_toward_zero_and_the_two_architectures() {
    if !model_available() {
        return;
    }
    let dot = |arch, a: [f32; 16], b: [f32; 16], c: f32| mma_dot_bf16(arch, &bits(&a), &bits(&b), c).unwrap();
    // Small integers: every sum exact on both architectures.
    let a: [f32; 16] = std::array::from_fn(|k| k as f32 - 7.0);
    let b: [f32; 16] = std::array::from_fn(|k| (k % 5) as f32 - 2.0);
    let exact: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>() + 3.0;
    for arch in [MmaArch::Sm80, MmaArch::Sm90] {
        assert_eq!(dot(arch, a, b, 3.0), exact, "{arch:?}");
    }
    // 1 + 2^-24 + 2^-24: on sm_90 (F = 25) both small terms survive the alignment and the sum
    // 1 + 2^-23 is representable; each is below f32's last place of 1, so a rounding per term
    // (an FMA chain) would lose them, and round toward zero keeps the exact result as it is.
    let mut a = [0f32; 16];
    let mut b = [0f32; 16];
    (a[0], b[0], a[1], b[1]) = (2f32.powi(-12), 2f32.powi(-12), 2f32.powi(-12), 2f32.powi(-12));
    assert_eq!(dot(MmaArch::Sm90, a, b, 1.0), 1.0 + 2f32.powi(-23));
    // sm_80 with F = 24 also keeps 2^-24 at scale 2^0: same result; with the terms in different k8
    // halves (a[8]) the first half rounds 1 + 2^-24 toward zero to 1, and the second again.
    assert_eq!(dot(MmaArch::Sm80, a, b, 1.0), 1.0 + 2f32.powi(-23));
    (a[1], b[1], a[8], b[8]) = (0.0, 0.0, 2f32.powi(-12), 2f32.powi(-12));
    assert_eq!(dot(MmaArch::Sm80, a, b, 1.0), 1.0);
    assert_eq!(dot(MmaArch::Sm90, a, b, 1.0), 1.0 + 2f32.powi(-23));
    // Round toward zero, not to nearest: 1 - 2^-25 lies halfway between 1 - 2^-24 and 1, and RNE
    // would give 1. A term below the aligned last bit (-2^-26 at F = 25) is cut to nothing.
    let (mut a, mut b) = ([0f32; 16], [0f32; 16]);
    (a[0], b[0]) = (-(2f32.powi(-13)), 2f32.powi(-12));
    assert_eq!(dot(MmaArch::Sm90, a, b, 1.0), 1.0 - 2f32.powi(-24));
    b[0] = 2f32.powi(-13);
    assert_eq!(dot(MmaArch::Sm90, a, b, 1.0), 1.0);
    // NaN is 0x7FFFFFFF; inf * 0 is NaN; an infinity passes through.
    let (mut a, mut b) = ([0f32; 16], [0f32; 16]);
    a[3] = f32::INFINITY;
    assert_eq!(dot(MmaArch::Sm90, a, b, 1.0).to_bits(), 0x7fff_ffff);
    b[3] = -2.0;
    assert_eq!(dot(MmaArch::Sm90, a, b, 1.0), f32::NEG_INFINITY);
    assert_eq!(dot(MmaArch::Sm80, [0.0; 16], [0.0; 16], f32::NAN).to_bits(), 0x7fff_ffff);
}

#[test]
fn the_whole_mma_is_the_dot_product_of_each_row_and_column() {
    if !model_available() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(16);
    let a: [u16; 256] = std::array::from_fn(|_| bf16::from_f32(random_bf16(&mut rng, -5, 5)).to_bits());
    let b: [u16; 128] = std::array::from_fn(|_| bf16::from_f32(random_bf16(&mut rng, -5, 5)).to_bits());
    let c: [f32; 128] = std::array::from_fn(|_| random_bf16(&mut rng, -5, 5) * 1.5);
    for arch in [MmaArch::Sm80, MmaArch::Sm90] {
        let d = mma_m16n8k16_bf16(arch, &a, &b, &c).unwrap();
        for i in 0..16 {
            for j in 0..8 {
                let row: [u16; 16] = std::array::from_fn(|k| a[i * 16 + k]);
                let col: [u16; 16] = std::array::from_fn(|k| b[k * 8 + j]);
                let want = mma_dot_bf16(arch, &row, &col, c[i * 8 + j]).unwrap();
                assert_eq!(d[i * 8 + j].to_bits(), want.to_bits(), "{arch:?} D[{i}][{j}]");
            }
        }
    }
}
