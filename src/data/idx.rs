//! IDX image files (MNIST, Fashion-MNIST), plain or gzip-compressed: magic 0x00000803, then
//! three big-endian u32 dimensions (count, rows, cols) and the pixels.

use super::InMemory;
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::Path;

pub fn load(path: &Path) -> Result<InMemory> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: corrupt gzip data", path.display()))?;
        out
    } else {
        raw
    };
    parse(&bytes).with_context(|| format!("{} is not a usable IDX image file", path.display()))
}

pub fn parse(bytes: &[u8]) -> Result<InMemory> {
    if bytes.len() < 16 {
        bail!("truncated: {} bytes, the header alone is 16", bytes.len());
    }
    let word = |i: usize| u32::from_be_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
    match word(0) {
        0x0000_0803 => {}
        0x0000_0801 => bail!("this is an IDX label file (magic 0x00000801); give the images file"),
        m => bail!("bad magic {m:#010x} (IDX images have 0x00000803)"),
    }
    let (count, rows, cols) = (word(1), word(2), word(3));
    if rows != cols || rows == 0 {
        bail!("images are {rows}x{cols}; only square images are supported");
    }
    let want = 16 + count * rows * cols;
    if bytes.len() != want {
        bail!("wrong size: {count} images of {rows}x{cols} need {want} bytes, the file has {}", bytes.len());
    }
    Ok(InMemory { size: rows, channels: 1, pixels: bytes[16..].to_vec() })
}
