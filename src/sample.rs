//! Sampling: start from Gaussian noise x_T and apply a scheduler's step with the UNet's noise
//! prediction until t = 0 (Ho et al. 2020, Algorithm 2, or DDIM); then images as diffusers makes
//! them (clamp(x / 2 + 0.5, 0, 1) * 255, rounded) and PNG grids.

use crate::backend::Layers;
use crate::diffusion::{DdimScheduler, DdpmScheduler, Noise, PhiloxStream};
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

/// `n` samples, NHWC [n, size, size, out_channels], in model space. Noise from Philox stream
/// `seed`: x_T at offset 0, step k's noise at offset k + 1; `progress` is called after each step.
pub fn generate<B: Layers>(b: &B, unet: &UNet, params: &[B::Buf], sampler: &Sampler, n: usize, seed: u64,
    progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<f32>> {
    let c = &unet.config;
    let len = n * c.sample_size * c.sample_size * c.in_channels;
    let mut x = b.alloc(len)?;
    b.fill_normal(&mut x, PhiloxStream { seed, offset: 0 })?;
    let mut next = b.alloc(len)?;
    let steps = sampler.timesteps().to_vec();
    for (k, &t) in steps.iter().enumerate() {
        let tb = b.upload(&vec![t as f32; n])?;
        let tape = unet.forward(b, params, &x, &tb, n)?;
        let noise = Noise::Philox(PhiloxStream { seed, offset: k as u64 + 1 });
        match sampler {
            Sampler::Ddpm(s) => b.ddpm_step(&s.step_params(t)?, &x, tape.output(), noise, &mut next)?,
            Sampler::Ddim { scheduler, eta } => b.ddim_step(&scheduler.step_params(t, *eta, false)?, &x, tape.output(), noise, &mut next)?,
        }
        std::mem::swap(&mut x, &mut next);
        progress(k + 1, steps.len());
    }
    b.download(&x)
}

/// Pixels as diffusers' pipelines make them: round(clamp(x / 2 + 0.5, 0, 1) * 255).
pub fn to_pixels(x: &[f32]) -> Vec<u8> {
    x.iter().map(|&v| ((v / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8).collect()
}

/// Writes `n` NHWC images (1 or 3 channels) as a PNG grid with `cols` columns.
pub fn write_grid(path: &Path, x: &[f32], n: usize, size: usize, channels: usize, cols: usize) -> Result<()> {
    let pixels = to_pixels(x);
    let rows = n.div_ceil(cols);
    let (w, h) = ((cols * (size + 2)) as u32, (rows * (size + 2)) as u32);
    let mut img = image::RgbImage::new(w, h);
    for i in 0..n {
        let (gx, gy) = ((i % cols) * (size + 2) + 1, (i / cols) * (size + 2) + 1);
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
