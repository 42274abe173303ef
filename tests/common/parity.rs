//! What the parity checks share (tests/common/*_checks.rs): each op on the CUDA backend (emulated
//! or real) against the CPU backend, on fresh random inputs of odd sizes, outputs poisoned with NaN
//! before the run, every element compared.

use ddpm::backend::{Backend, CudaBackend};
use ddpm::shapes::ImageShape;

pub type Buf = <CudaBackend as Backend>::Buf;

/// Sizes that are not multiples of 32 or of the 256-thread blocks, plus a few that are.
pub const SIZES: &[usize] = &[1, 7, 31, 32, 33, 255, 256, 257, 1000, 4099, 65_537, 300_001];

/// Every op but channel_sum does the same correctly rounded f32 operations in the same order on
/// both backends (copies, one add, one true division; the embedding's exp/sin/cos evaluated in
/// double and rounded once), so they must agree bit for bit.
pub const EXACT: f32 = 0.0;

/// Channels 1, 3, 33 and 64 (not multiples of 32; more than one 32-channel tile), H != W, batch 1
/// and 3, and one image batch spanning hundreds of 256-thread blocks.
pub const IMAGES: &[ImageShape] = &[
    ImageShape { batch: 1, h: 1, w: 1, c: 1 },
    ImageShape { batch: 3, h: 5, w: 7, c: 1 },
    ImageShape { batch: 1, h: 4, w: 9, c: 3 },
    ImageShape { batch: 3, h: 6, w: 3, c: 33 },
    ImageShape { batch: 2, h: 32, w: 32, c: 64 },
];

pub fn poisoned(b: &CudaBackend, n: usize) -> Buf {
    b.upload(&vec![f32::NAN; n]).unwrap()
}

pub fn cpu_out(n: usize, run: impl FnOnce(&mut Vec<f32>)) -> Vec<f32> {
    let mut out = vec![f32::NAN; n];
    run(&mut out);
    out
}

pub fn dev_out(b: &CudaBackend, n: usize, run: impl FnOnce(&mut Buf)) -> Vec<f32> {
    let mut out = poisoned(b, n);
    run(&mut out);
    b.download(&out).unwrap()
}

pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
