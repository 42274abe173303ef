//! IDX image files (MNIST, Fashion-MNIST), plain or gzip-compressed: magic 0x00000803, then
//! three big-endian u32 dimensions (count, rows, cols) and the pixels.

use super::InMemory;
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::Path;

pub fn load(path: &Path) -> Result<InMemory> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    decode(&raw, &path.display().to_string())
}

/// [`load`] on the bytes of a file (plain or gzip); `name` names it in errors.
pub fn decode(raw: &[u8], name: &str) -> Result<InMemory> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return parse(raw).with_context(|| format!("{name} is not a usable IDX image file"));
    }
    // Decompressed in two reads, the header then exactly the pixels it announces (and one byte
    // more, to notice trailing data), so a small gzip bomb cannot make us inflate gigabytes.
    let mut gz = flate2::read::GzDecoder::new(raw);
    let mut out = Vec::new();
    let corrupt = || format!("{name}: corrupt gzip data");
    (&mut gz).take(16).read_to_end(&mut out).with_context(corrupt)?;
    let want = header(&out).map(|(_, _, n)| n).with_context(|| format!("{name} is not a usable IDX image file"))?;
    (&mut gz).take(want as u64 - 15).read_to_end(&mut out).with_context(corrupt)?;
    parse(&out).with_context(|| format!("{name} is not a usable IDX image file"))
}

/// Count, side and total size in bytes that an IDX header announces.
fn header(bytes: &[u8]) -> Result<(usize, usize, usize)> {
    if bytes.len() < 16 {
        bail!("truncated: {} bytes, the header alone is 16", bytes.len());
    }
    let word = |i: usize| u32::from_be_bytes([bytes[i * 4], bytes[i * 4 + 1], bytes[i * 4 + 2], bytes[i * 4 + 3]]);
    match word(0) {
        0x0000_0803 => {}
        0x0000_0801 => bail!("this is an IDX label file (magic 0x00000801); give the images file"),
        m => bail!("bad magic {m:#010x} (IDX images have 0x00000803)"),
    }
    let (count, rows, cols) = (word(1) as usize, word(2) as usize, word(3) as usize);
    if rows != cols || rows == 0 {
        bail!("images are {rows}x{cols}; only square images are supported");
    }
    // Checked: three u32 factors overflow usize (and wrapped, a bogus header could pass the size test).
    let want = rows.checked_mul(cols).and_then(|p| count.checked_mul(p)).and_then(|n| n.checked_add(16));
    let want = want.with_context(|| format!("{count} images of {rows}x{cols} is too many bytes to address"))?;
    Ok((count, rows, want))
}

pub fn parse(bytes: &[u8]) -> Result<InMemory> {
    let (count, rows, want) = header(bytes)?;
    if bytes.len() != want {
        bail!("wrong size: {count} images of {rows}x{rows} need {want} bytes, the file has {}", bytes.len());
    }
    Ok(InMemory { size: rows, channels: 1, pixels: bytes[16..].to_vec() })
}
