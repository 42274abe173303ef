//! Sampling: start from Gaussian noise x_T and apply a scheduler's step with the UNet's noise
//! prediction until t = 0 (Ho et al. 2020, Algorithm 2, or DDIM); then images as diffusers makes
//! them (clamp(x / 2 + 0.5, 0, 1) * 255, rounded) and PNG grids.

use crate::backend::Layers;
use crate::cpu::torch_rng::TorchGenerator;
use crate::diffusion::{DdimScheduler, DdpmScheduler, Noise, PhiloxStream};
use crate::layout::nchw_to_nhwc;
use crate::model::unet::UNet;
use anyhow::{Context, Result};
use std::path::Path;

pub enum Sampler {
    Ddpm(DdpmScheduler),
    Ddim { scheduler: DdimScheduler, eta: f32 },
}

impl Sampler {
    fn timesteps(&self) -> &[usize] {
        match self {
            Sampler::Ddpm(s) => &s.timesteps,
            Sampler::Ddim { scheduler, .. } => &scheduler.timesteps,
        }
    }
}

/// Where sampling noise comes from.
pub enum NoiseSource {
    /// The engine's counter-based generator: x_T at offset 0, step k's noise at offset k + 1. The
    /// same seed gives the same images on every backend.
    Philox { seed: u64 },
    /// PyTorch's CPU generator, drawn in diffusers' pipeline order (x_T, then each step's noise as
    /// one NCHW tensor), so `generator=torch.manual_seed(seed)` images are reproduced.
    Torch(TorchGenerator),
}

/// `n` samples, NHWC [n, size, size, out_channels], in model space. `x_t` optionally gives the
/// initial noise (NHWC); `progress` is called after each step.
#[allow(clippy::too_many_arguments)]
pub fn generate_with<B: Layers>(b: &B, unet: &UNet, params: &[B::Buf], sampler: &Sampler, n: usize, noise: &mut NoiseSource,
    x_t: Option<&[f32]>, progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<f32>> {
    let c = &unet.config;
    let (size, ch) = (c.sample_size, c.in_channels);
    let len = n * size * size * ch;
    // PyTorch draws NCHW tensors; the engine is NHWC.
    let torch_randn = |g: &mut TorchGenerator| -> Result<B::Buf> { b.upload(&nchw_to_nhwc(&g.randn(len), n, ch, size, size)) };
    let mut x = match (x_t, &mut *noise) {
        (Some(given), _) => b.upload(given)?,
        (None, NoiseSource::Torch(g)) => torch_randn(g)?,
        (None, NoiseSource::Philox { seed }) => {
            let mut x = b.alloc(len)?;
            b.fill_normal(&mut x, PhiloxStream { seed: *seed, offset: 0 })?;
            x
        }
    };
    let mut next = b.alloc(len)?;
    let steps = sampler.timesteps().to_vec();
    for (k, &t) in steps.iter().enumerate() {
        let tb = b.upload(&vec![t as f32; n])?;
        let eps = unet.predict(b, params, &x, &tb, n)?;
        let adds_noise = match sampler {
            Sampler::Ddpm(_) => t > 0,
            Sampler::Ddim { eta, .. } => *eta > 0.0,
        };
        let drawn = match &mut *noise {
            NoiseSource::Torch(g) if adds_noise => Some(torch_randn(g)?),
            _ => None,
        };
        let step_noise = match (&*noise, &drawn) {
            (_, Some(d)) => Noise::Given(d),
            (NoiseSource::Philox { seed }, None) => Noise::Philox(PhiloxStream { seed: *seed, offset: k as u64 + 1 }),
            (NoiseSource::Torch(_), None) => Noise::Philox(PhiloxStream { seed: 0, offset: 0 }), // not read: no noise this step
        };
        match sampler {
            Sampler::Ddpm(s) => b.ddpm_step(&s.step_params(t)?, &x, &eps, step_noise, &mut next)?,
            Sampler::Ddim { scheduler, eta } => b.ddim_step(&scheduler.step_params(t, *eta, false)?, &x, &eps, step_noise, &mut next)?,
        }
        std::mem::swap(&mut x, &mut next);
        progress(k + 1, steps.len());
    }
    b.download(&x)
}

/// `n` samples from Philox stream `seed` (see [`generate_with`]).
pub fn generate<B: Layers>(b: &B, unet: &UNet, params: &[B::Buf], sampler: &Sampler, n: usize, seed: u64,
    progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<f32>> {
    generate_with(b, unet, params, sampler, n, &mut NoiseSource::Philox { seed }, None, progress)
}

/// Pixels as diffusers' pipelines make them: round(clamp(x / 2 + 0.5, 0, 1) * 255).
pub fn to_pixels(x: &[f32]) -> Vec<u8> {
    x.iter().map(|&v| ((v / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8).collect()
}

/// Writes one NHWC image (1 or 3 channels) as a PNG.
pub fn write_png(path: &Path, x: &[f32], size: usize, channels: usize) -> Result<()> {
    write_grid_with_border(path, x, 1, size, channels, 1, 0)
}

/// Writes `n` NHWC images (1 or 3 channels) as a PNG grid with `cols` columns.
pub fn write_grid(path: &Path, x: &[f32], n: usize, size: usize, channels: usize, cols: usize) -> Result<()> {
    write_grid_with_border(path, x, n, size, channels, cols, 1)
}

fn write_grid_with_border(path: &Path, x: &[f32], n: usize, size: usize, channels: usize, cols: usize, border: usize) -> Result<()> {
    let pixels = to_pixels(x);
    let rows = n.div_ceil(cols);
    let cell = size + 2 * border;
    let (w, h) = ((cols * cell) as u32, (rows * cell) as u32);
    let mut img = image::RgbImage::new(w, h);
    for i in 0..n {
        let (gx, gy) = ((i % cols) * cell + border, (i / cols) * cell + border);
        for y in 0..size {
            for xx in 0..size {
                let p = (i * size * size + y * size + xx) * channels;
                let rgb = if channels == 1 { [pixels[p]; 3] } else { [pixels[p], pixels[p + 1], pixels[p + 2]] };
                img.put_pixel((gx + xx) as u32, (gy + y) as u32, image::Rgb(rgb));
            }
        }
    }
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).context("encoding the PNG")?;
    crate::checkpoint::atomic_write(path, &bytes)
}
