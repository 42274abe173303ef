//! The tensor-core primitives (kernels/tensor_core.cuh) against their specification, on any device:
//! the mma against the arithmetic model bit for bit (on a GPU this is the check that confirms or
//! refutes the model), ldmatrix against the PTX ISA's fragment formulas written out here a second
//! time, and ldmatrix feeding mma as a GEMM kernel does.

use ddpm::gpu::mma_model::{MmaArch, mma_m16n8k16_bf16};
use ddpm::gpu::{Gpu, KernelArgs, LaunchConfig};
use half::bf16;
use rand::{RngExt, SeedableRng, rngs::StdRng};

/// Random bf16 bits with exponents in [lo, hi], signs mixed, a few zeros.
pub fn random_bf16(rng: &mut StdRng, n: usize, lo: i32, hi: i32) -> Vec<bf16> {
    (0..n)
        .map(|_| {
            if rng.random_bool(0.03) {
                return bf16::ZERO;
            }
            let v = rng.random_range(1.0f64..2.0) * 2f64.powi(rng.random_range(lo..=hi));
            bf16::from_f64(if rng.random_bool(0.5) { -v } else { v })
        })
        .collect()
}

fn bits(v: &[bf16]) -> Vec<u16> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `tiles` random m16n8k16 tiles, one warp each, compared bit for bit with the model for `arch`
/// (the emulator's own, or the GPU's). Returns the number of dot products compared.
pub fn mma_matches_model(gpu: &Gpu, arch: MmaArch, tiles: usize, seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    // Half the tiles with nearby exponents (cancellation), half with a wide spread (terms cut).
    let (lo, hi) = if seed.is_multiple_of(2) { (-4, 4) } else { (-30, 30) };
    let a = random_bf16(&mut rng, tiles * 256, lo, hi);
    let b = random_bf16(&mut rng, tiles * 128, lo, hi);
    let c: Vec<f32> =
        random_bf16(&mut rng, tiles * 128, 2 * lo, 2 * hi).iter().map(|x| x.to_f32() * 1.000_123).collect();
    let (da, db, dc) = (gpu.upload(&a).unwrap(), gpu.upload(&b).unwrap(), gpu.upload(&c).unwrap());
    let dd = gpu.upload(&vec![f32::NAN; tiles * 128]).unwrap();
    let blocks = tiles.div_ceil(4) as u32;
    let args = KernelArgs::new().buf(&da).buf(&db).buf(&dc).buf(&dd).u32(tiles as u32);
    gpu.launch("emu_test_mma_tiles", LaunchConfig::linear(blocks, 128), &args).unwrap();
    let got = gpu.download(&dd).unwrap();
    let (a, b) = (bits(&a), bits(&b));
    for t in 0..tiles {
        let want = mma_m16n8k16_bf16(
            arch,
            a[t * 256..][..256].try_into().unwrap(),
            b[t * 128..][..128].try_into().unwrap(),
            c[t * 128..][..128].try_into().unwrap(),
        )
        .unwrap();
        for (i, (g, w)) in got[t * 128..][..128].iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{arch:?} tile {t} D[{}][{}]: device {g:e}, model {w:e}",
                i / 8,
                i % 8
            );
        }
    }
    tiles * 128
}

/// What register `j` of lane `l` holds after ldmatrix of `n` matrices of M [4][8][8], by the PTX
/// ISA's formula (kernels/tensor_core.cuh), independently of the emulator's code.
fn ldmatrix_expected(m: &[u16], l: usize, j: usize, trans: bool) -> u32 {
    let (r, c) = (l >> 2, 2 * (l & 3));
    let at = |row: usize, col: usize| m[j * 64 + row * 8 + col] as u32;
    if trans { at(c, r) | at(c + 1, r) << 16 } else { at(r, c) | at(r, c + 1) << 16 }
}

/// Every ldmatrix form (x1, x2, x4, each with and without .trans) against the formula; registers
/// beyond n must come back as they went in.
pub fn ldmatrix_layouts(gpu: &Gpu) {
    let m: Vec<u16> = (0..256).map(|i| 0x3f80 + i as u16).collect();
    let dm = gpu.upload(&m.iter().map(|&x| bf16::from_bits(x)).collect::<Vec<_>>()).unwrap();
    for mode in 0..6u32 {
        let (n, trans) = ([1, 2, 4][mode as usize % 3], mode >= 3);
        let sentinel = 0xdead_beef_u32;
        let out = gpu.upload(&vec![sentinel; 32 * 4]).unwrap();
        let cfg = LaunchConfig::linear(1, 32).with_shared(32 * 48);
        gpu.launch("emu_test_ldmatrix", cfg, &KernelArgs::new().buf(&dm).buf(&out).u32(mode)).unwrap();
        let got = gpu.download(&out).unwrap();
        for l in 0..32 {
            for j in 0..4 {
                let want = if j < n { ldmatrix_expected(&m, l, j, trans) } else { sentinel };
                assert_eq!(got[l * 4 + j], want, "ldmatrix x{n} trans {trans}: lane {l} register {j}");
            }
        }
    }
}

/// A [16][16] by ldmatrix.x4 and B by ldmatrix.x2 (stored [n][k], or [k][n] with .trans), then
/// mma: small integers, so every sum is exact and a layout slip shows with zero tolerance.
pub fn ldmatrix_feeds_mma(gpu: &Gpu) {
    let a: Vec<f32> = (0..256).map(|i| ((i * 7 + 3) % 9) as f32 - 4.0).collect();
    let b: Vec<f32> = (0..128).map(|i| ((i * 5 + 1) % 7) as f32 - 3.0).collect(); // [k][n]
    let c: Vec<f32> = (0..128).map(|i| (i % 5) as f32).collect();
    let want: Vec<f32> =
        (0..128).map(|o| (0..16).map(|k| a[(o / 8) * 16 + k] * b[k * 8 + o % 8]).sum::<f32>() + c[o]).collect();
    let bt: Vec<f32> = (0..128).map(|i| b[(i % 16) * 8 + i / 16]).collect(); // [n][k]
    let to_dev = |v: &[f32]| gpu.upload(&v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>()).unwrap();
    let (da, dc) = (to_dev(&a), gpu.upload(&c).unwrap());
    for (b_dev, k_by_n) in [(to_dev(&bt), 0u32), (to_dev(&b), 1)] {
        let dd = gpu.upload(&vec![f32::NAN; 128]).unwrap();
        let cfg = LaunchConfig::linear(1, 32).with_shared(32 * 48);
        let args = KernelArgs::new().buf(&da).buf(&b_dev).buf(&dc).buf(&dd).u32(k_by_n);
        gpu.launch("emu_test_ldmatrix_mma", cfg, &args).unwrap();
        assert_eq!(gpu.download(&dd).unwrap(), want, "B stored {}", if k_by_n == 1 { "[k][n]" } else { "[n][k]" });
    }
}

/// The mma arithmetic a device should show: the emulator's setting (sm_90 unless a test changed
/// it), or the GPU's architecture by its name, "... (sm_80)" for Ampere; Hopper and later use the
/// sm_90 model (MMA-Sim: F = 25, no k split, for Hopper and Blackwell).
pub fn device_arch(gpu: &Gpu) -> MmaArch {
    if !gpu.is_emulator() && gpu.name().contains("(sm_8") { MmaArch::Sm80 } else { MmaArch::Sm90 }
}

/// The GPU suite's model check: 782 tiles = 100,096 dot products, half with nearby exponents and
/// half with a wide spread, bit for bit against the model of the device's architecture.
pub fn mma_model_check(gpu: &Gpu) {
    let arch = device_arch(gpu);
    let n = mma_matches_model(gpu, arch, 391, 0) + mma_matches_model(gpu, arch, 391, 1);
    super::say(&format!("mma model ({arch:?}) on {}: {n} dot products bit for bit", gpu.name()));
}
