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
        let bytes = std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
        pixels.extend(decode(&bytes, &f.display().to_string(), size, MAX_ALLOC)?);
    }
    Ok(InMemory { size, channels: 3, pixels })
}

/// What one image may allocate while decoding (the image crate's default): a few bytes of PNG
/// can announce a 60000x60000 image.
pub const MAX_ALLOC: u64 = 512 << 20;

/// One image file's bytes (PNG or JPEG, told by content) as size x size x 3 RGB bytes, decoding
/// allocations capped at `max_alloc`; `name` names it in errors.
pub fn decode(bytes: &[u8], name: &str, size: usize, max_alloc: u64) -> Result<Vec<u8>> {
    let unreadable = || format!("{name}: unreadable image");
    if size == 0 || size > u32::MAX as usize / 4 {
        bail!("{name}: cannot resize to {size}x{size}");
    }
    let mut reader =
        image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().with_context(unreadable)?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_alloc);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| anyhow::anyhow!("{}: {}", unreadable(), crate::oneline::one_line(&e)))?;
    let mut img = img.to_rgb8();
    let (mut w, mut h) = img.dimensions();
    if w == 0 || h == 0 {
        bail!("{name}: the image is {w}x{h}");
    }
    // Past 2:1, only the centred 2:1 part can reach the crop: cut it first, or a 1x60000 image
    // would be resized to 32x1920000 before cropping.
    let (cw, ch) = (w.min(h.saturating_mul(2)), h.min(w.saturating_mul(2)));
    if (cw, ch) != (w, h) {
        img = image::imageops::crop_imm(&img, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image();
        (w, h) = (cw, ch);
    }
    let scale = size as f64 / w.min(h) as f64;
    let (nw, nh) =
        (((w as f64 * scale).round() as u32).max(size as u32), ((h as f64 * scale).round() as u32).max(size as u32));
    let resized = image::imageops::resize(&img, nw, nh, FilterType::Triangle);
    let (x0, y0) = ((nw - size as u32) / 2, (nh - size as u32) / 2);
    Ok(image::imageops::crop_imm(&resized, x0, y0, size as u32, size as u32).to_image().into_raw())
}
