//! A folder of PNG/JPEG images: each resized so its shorter side is `size` (bilinear), then
//! centre-cropped to size x size, as RGB.

use super::InMemory;
use anyhow::{Context, Result, bail};
use image::imageops::FilterType;
use std::path::Path;

pub fn load(dir: &Path, size: usize) -> Result<InMemory> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
            matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no .png, .jpg or .jpeg images", dir.display());
    }
    let mut pixels = Vec::with_capacity(files.len() * size * size * 3);
    for f in files {
        let img = image::open(&f).with_context(|| format!("{}: unreadable image", f.display()))?.to_rgb8();
        let (w, h) = img.dimensions();
        let scale = size as f64 / w.min(h) as f64;
        let (nw, nh) = (
            ((w as f64 * scale).round() as u32).max(size as u32),
            ((h as f64 * scale).round() as u32).max(size as u32),
        );
        let resized = image::imageops::resize(&img, nw, nh, FilterType::Triangle);
        let (x0, y0) = ((nw - size as u32) / 2, (nh - size as u32) / 2);
        let crop = image::imageops::crop_imm(&resized, x0, y0, size as u32, size as u32).to_image();
        pixels.extend_from_slice(crop.as_raw());
    }
    Ok(InMemory { size, channels: 3, pixels })
}
