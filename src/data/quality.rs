//! A sample-quality score for the built-in dataset, whose true distribution is known: the
//! Frechet distance between diagonal Gaussians fitted to simple image features (per-channel mean
//! and spread, background fraction, foreground colour, edge energy) of generated samples and of
//! fresh images from the generator. 0 is a perfect match; lower is better. Not FID (no Inception
//! network, no files): a cheap, deterministic yardstick that separates shapes from noise.

const FEATURES: usize = 11;

/// Features of one [size, size, 3] image in [-1, 1].
pub fn features(img: &[f32], size: usize) -> [f64; FEATURES] {
    let px: Vec<[f64; 3]> =
        img.chunks_exact(3).map(|p| [0, 1, 2].map(|c| ((p[c] as f64 + 1.0) / 2.0).clamp(0.0, 1.0))).collect();
    let n = px.len() as f64;
    let mut f = [0.0; FEATURES];
    for c in 0..3 {
        let mean = px.iter().map(|p| p[c]).sum::<f64>() / n;
        f[c] = mean;
        f[3 + c] = (px.iter().map(|p| (p[c] - mean).powi(2)).sum::<f64>() / n).sqrt();
    }
    let fg: Vec<&[f64; 3]> = px.iter().filter(|p| p.iter().sum::<f64>() > 0.45).collect();
    f[6] = 1.0 - fg.len() as f64 / n;
    for c in 0..3 {
        f[7 + c] = if fg.is_empty() { 0.0 } else { fg.iter().map(|p| p[c]).sum::<f64>() / fg.len() as f64 };
    }
    let mut edge = 0.0;
    for y in 0..size {
        for x in 0..size - 1 {
            let (a, b) = (&px[y * size + x], &px[y * size + x + 1]);
            edge += (0..3).map(|c| (a[c] - b[c]).abs()).sum::<f64>();
        }
    }
    f[10] = edge / (size * size) as f64;
    f
}

fn moments(feats: &[[f64; FEATURES]]) -> ([f64; FEATURES], [f64; FEATURES]) {
    let n = feats.len() as f64;
    let mut mean = [0.0; FEATURES];
    let mut sd = [0.0; FEATURES];
    for k in 0..FEATURES {
        mean[k] = feats.iter().map(|f| f[k]).sum::<f64>() / n;
        sd[k] = (feats.iter().map(|f| (f[k] - mean[k]).powi(2)).sum::<f64>() / n).sqrt();
    }
    (mean, sd)
}

/// Frechet distance between the feature distributions of `samples` and `reference` (each a list
/// of [size, size, 3] images).
pub fn shape_frechet_distance(samples: &[Vec<f32>], reference: &[Vec<f32>], size: usize) -> f64 {
    let (ma, sa) = moments(&samples.iter().map(|i| features(i, size)).collect::<Vec<_>>());
    let (mb, sb) = moments(&reference.iter().map(|i| features(i, size)).collect::<Vec<_>>());
    (0..FEATURES).map(|k| (ma[k] - mb[k]).powi(2) + (sa[k] - sb[k]).powi(2)).sum()
}

/// Scores `n` generated NHWC RGB images (in model space) against 256 fresh images from the
/// built-in generator, next to the score of `n` images of clamped Gaussian noise: (samples, noise).
pub fn score_against_generator(x: &[f32], n: usize, size: usize, seed: u64) -> (f64, f64) {
    use crate::data::{Dataset, builtin::Shapes};
    let per = size * size * 3;
    let samples: Vec<Vec<f32>> =
        x.chunks_exact(per).take(n).map(|c| c.iter().map(|v| v.clamp(-1.0, 1.0)).collect()).collect();
    let truth = Shapes::new(size, 256, seed.wrapping_add(1_000_003));
    let reference: Vec<Vec<f32>> = (0..truth.len()).map(|i| truth.image(i)).collect();
    let noise: Vec<Vec<f32>> = (0..n as u64)
        .map(|i| (0..per as u64).map(|k| crate::math::philox::normal(seed ^ 0xabc, i, k).clamp(-1.0, 1.0)).collect())
        .collect();
    (shape_frechet_distance(&samples, &reference, size), shape_frechet_distance(&noise, &reference, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Dataset, builtin::Shapes};

    #[test]
    fn real_shapes_score_far_better_than_noise() {
        let size = 16;
        let real = Shapes::new(size, 400, 1);
        let other = Shapes::new(size, 400, 2);
        let a: Vec<_> = (0..400).map(|i| real.image(i)).collect();
        let b: Vec<_> = (0..400).map(|i| other.image(i)).collect();
        let noise: Vec<Vec<f32>> = (0..400)
            .map(|i| {
                (0..size * size * 3).map(|k| crate::math::philox::normal(9, i, k as u64).clamp(-1.0, 1.0)).collect()
            })
            .collect();
        let (same, vs_noise) = (shape_frechet_distance(&b, &a, size), shape_frechet_distance(&noise, &a, size));
        assert!(same * 20.0 < vs_noise, "same distribution {same}, noise {vs_noise}");
    }
}
