//! Samples as images: pixels as diffusers' pipelines make them, PNG files and grids.

use anyhow::{Context, Result};
use std::path::Path;

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

fn write_grid_with_border(
    path: &Path,
    x: &[f32],
    n: usize,
    size: usize,
    channels: usize,
    cols: usize,
    border: usize,
) -> Result<()> {
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
