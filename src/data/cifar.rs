//! CIFAR-10 binary batches (data_batch_1.bin ... data_batch_5.bin): records of one label byte and
//! 3072 pixel bytes, channel-planar (1024 R, 1024 G, 1024 B), 32x32.

use super::InMemory;
use anyhow::{Context, Result, bail};
use std::path::Path;

const RECORD: usize = 1 + 3 * 32 * 32;

pub fn load(dir: &Path) -> Result<InMemory> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("data_batch") && n.ends_with(".bin"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no data_batch_*.bin files (the CIFAR-10 binary version)", dir.display());
    }
    let mut pixels = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
        decode(&bytes, &f.display().to_string(), &mut pixels)?;
    }
    Ok(InMemory { size: 32, channels: 3, pixels })
}

/// Appends the pixels (HWC) of one batch file's bytes to `pixels`; `name` names it in errors.
pub fn decode(bytes: &[u8], name: &str, pixels: &mut Vec<u8>) -> Result<()> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        bail!("{name}: {} bytes is not a whole number of {RECORD}-byte CIFAR-10 records (truncated?)", bytes.len());
    }
    pixels.reserve(bytes.len() / RECORD * (RECORD - 1));
    for rec in bytes.chunks_exact(RECORD) {
        let planes = &rec[1..];
        for p in 0..1024 {
            pixels.extend([planes[p], planes[1024 + p], planes[2048 + p]]);
        }
    }
    Ok(())
}
