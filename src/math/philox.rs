//! Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), the
//! counter-based generator behind all of the engine's noise. The same (seed, offset, element
//! index) gives the same bits here, on the emulator and on a GPU (kernels/philox.cuh is the same
//! arithmetic), so training and sampling are reproducible across backends.
//!
//! Layout: element i of a stream reads block i / 4 of the generator, with counter
//! (block low, block high, offset low, offset high) and key (seed low, seed high):
//! - uniform i is word i % 4 of that block;
//! - normal i comes from the Box-Muller pair (words 0, 1) for i % 4 in {0, 1} or (2, 3) for
//!   {2, 3}: the cosine branch for even i, the sine branch for odd i.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// The 4 words Philox4x32-10 gives for a counter and a key.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = M0 as u64 * c[0] as u64;
        let p1 = M1 as u64 * c[2] as u64;
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
    }
    c
}

/// The block of 4 words holding element `index` of stream (seed, offset).
pub fn block(seed: u64, offset: u64, index: u64) -> [u32; 4] {
    let b = index / 4;
    philox4x32_10(
        [b as u32, (b >> 32) as u32, offset as u32, (offset >> 32) as u32],
        [seed as u32, (seed >> 32) as u32],
    )
}

/// The 32-bit word for element `index`.
pub fn word(seed: u64, offset: u64, index: u64) -> u32 {
    block(seed, offset, index)[(index % 4) as usize]
}

/// 24 random bits as a float in [0, 1): exact, hence bitwise equal on every backend.
pub fn to_unit(w: u32) -> f32 {
    (w >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Uniform in [0, 1) for element `index`.
pub fn uniform(seed: u64, offset: u64, index: u64) -> f32 {
    to_unit(word(seed, offset, index))
}

/// Standard normal for element `index`. Box-Muller evaluated in f64 and rounded once to f32: the
/// device computes the same in f64 with CUDA's accurate log/sin/cos (no fast intrinsics), so the
/// two agree to the last bit except when an f64 result lies within a few f64 ulps of an f32
/// rounding boundary, and then by 1 ulp.
pub fn normal(seed: u64, offset: u64, index: u64) -> f32 {
    let w = block(seed, offset, index);
    let pair = ((index % 4) / 2) as usize;
    box_muller(w[2 * pair], w[2 * pair + 1], index % 2 == 1)
}

/// One branch of Box-Muller from two words: u1 in (0, 1] (so the log is finite), u2 in [0, 1).
pub fn box_muller(w1: u32, w2: u32, sine: bool) -> f32 {
    let u1 = ((w1 >> 8) as f64 + 1.0) * (1.0 / 16_777_216.0);
    let u2 = (w2 >> 8) as f64 * (1.0 / 16_777_216.0);
    let r = (-2.0 * u1.ln()).sqrt();
    let theta = 2.0 * std::f64::consts::PI * u2;
    (if sine { r * theta.sin() } else { r * theta.cos() }) as f32
}

/// Fills `out` with normals for indices start.. of stream (seed, offset). Each value depends on
/// its index alone, so chunks fill in parallel (a training step's noise, a sampling step's: on
/// the critical path otherwise) with the same bits.
pub fn fill_normal(seed: u64, offset: u64, start: u64, out: &mut [f32]) {
    use rayon::prelude::*;
    const CHUNK: usize = 4096;
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, out)| {
        let first = start + (c * CHUNK) as u64;
        for (i, v) in out.iter_mut().enumerate() {
            *v = normal(seed, offset, first + i as u64);
        }
    });
}

/// A timestep in [0, t_max) from a word: the high half of word * t_max, i.e. floor(u * t_max) for
/// u = word / 2^32, which is uniform up to a bias below t_max / 2^32.
pub fn timestep(w: u32, t_max: u32) -> u32 {
    ((w as u64 * t_max as u64) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors).
    #[test]
    fn philox_known_answers() {
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
        assert_eq!(
            philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn normals_have_unit_moments_and_streams_differ() {
        let n = 200_000;
        let mut v = vec![0f32; n];
        fill_normal(7, 0, 0, &mut v);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.01, "mean {mean} var {var}");
        assert_ne!(normal(7, 0, 5), normal(7, 1, 5));
        assert_ne!(normal(7, 0, 5), normal(8, 0, 5));
    }

    #[test]
    fn timesteps_cover_the_range_uniformly() {
        let mut counts = [0u32; 10];
        for i in 0..100_000 {
            counts[timestep(word(3, 0, i), 10) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_500..10_500).contains(&c)), "{counts:?}");
    }
}
