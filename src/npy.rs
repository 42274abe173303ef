//! NumPy .npy files for interchange with Python (noise, raw samples, `ddpm grads` inputs), via the
//! npyz crate. Arrays are read as f32 whatever their float or integer dtype; errors name the file.

use anyhow::{Context, Result, bail};
use npyz::WriterBuilder;
use std::path::Path;

/// Shape and data (C order) of an .npy file, as f32. NaN and infinities are refused (see
/// crate::finite): every .npy this engine reads is an input (noise, `ddpm grads` arrays).
pub fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_f32(&bytes, &path.display().to_string())
}

/// [`read_f32`] on the bytes of a file; `name` names it in errors.
pub fn parse_f32(bytes: &[u8], name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    check_header_len(bytes).with_context(|| format!("{name} is not a valid .npy file"))?;
    let npy = npyz::NpyFile::new(bytes)
        .map_err(|e| anyhow::anyhow!("{name} is not a valid .npy file: {}", crate::oneline::one_line(&e)))?;
    if npy.order() != npyz::Order::C {
        bail!("{name}: Fortran-ordered arrays are not supported (save with np.ascontiguousarray)");
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| usize::try_from(d).unwrap_or(usize::MAX)).collect();
    let type_str = npy.dtype().descr();
    let dtype = type_str.trim_matches('\'').trim_start_matches(['<', '|', '=']).to_string();
    let item = match dtype.as_str() {
        "f4" | "i4" => 4,
        "f8" | "i8" => 8,
        other => bail!("{name}: dtype {other} is not supported (float32, float64, int32, int64)"),
    };
    // The header's shape is checked against the file's size before npyz sizes its buffer from it:
    // a 60-byte file claiming 10^12 elements must not allocate terabytes.
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count.and_then(|n| n.checked_mul(item)).is_none_or(|b| b > bytes.len()) {
        bail!("{name}: truncated (shape {shape:?} of {dtype} does not fit in its {} bytes)", bytes.len());
    }
    let ctx = || format!("{name}: cannot read the {type_str} data");
    let data: Vec<f32> = match dtype.as_str() {
        "f4" => npy.into_vec::<f32>().with_context(ctx)?,
        "f8" => npy.into_vec::<f64>().with_context(ctx)?.into_iter().map(|v| v as f32).collect(),
        "i8" => npy.into_vec::<i64>().with_context(ctx)?.into_iter().map(|v| v as f32).collect(),
        _ => npy.into_vec::<i32>().with_context(ctx)?.into_iter().map(|v| v as f32).collect(),
    };
    if Some(data.len()) != count {
        bail!("{name}: truncated ({} values for shape {shape:?})", data.len());
    }
    crate::finite::check(&data, name)?;
    Ok((shape, data))
}

/// The header length field (u16 in version 1, u32 after) against the file's size: npyz allocates
/// a buffer of that length before reading it, so 20 bytes could otherwise claim 4 GB. Then the
/// header's nesting depth.
fn check_header_len(bytes: &[u8]) -> Result<()> {
    let (at, width) = match bytes.get(..7) {
        Some([0x93, b'N', b'U', b'M', b'P', b'Y', 1]) => (8, 2),
        Some([0x93, b'N', b'U', b'M', b'P', b'Y', _]) => (8, 4),
        _ => return Ok(()), // npyz refuses it with its own message
    };
    let mut field = [0u8; 4];
    match bytes.get(at..at + width) {
        Some(f) => field[..width].copy_from_slice(f),
        None => bail!("truncated header"),
    }
    let len = u32::from_le_bytes(field) as usize;
    if len > bytes.len() - (at + width) {
        bail!("its header claims {len} bytes, the file has {}", bytes.len());
    }
    // npyz's header parser (py_literal, a pest grammar) backtracks exponentially in the nesting
    // depth: 120 bytes of "{{{{{(" took seconds (found by cargo fuzz). A header is a flat dict
    // holding a shape tuple (a structured dtype nests a little deeper, and is refused anyway).
    let mut depth = 0usize;
    for &b in &bytes[at + width..at + width + len] {
        match b {
            b'{' | b'[' | b'(' => depth += 1,
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_HEADER_DEPTH {
            bail!("its header nests deeper than {MAX_HEADER_DEPTH} brackets");
        }
    }
    Ok(())
}

/// Brackets a header may nest: a dict, a shape tuple, and room for a simple structured dtype.
const MAX_HEADER_DEPTH: usize = 4;

/// Writes a float32 C-order array, atomically.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    crate::checkpoint::atomic_write(path, &to_bytes(shape, data)?)
}

/// The bytes of a float32 C-order .npy file.
pub fn to_bytes(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let shape64: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape64).writer(&mut bytes).begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_f32(&p, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap();
        assert_eq!(read_f32(&p).unwrap(), (vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]));
        std::fs::write(dir.path().join("bad.npy"), b"nope").unwrap();
        assert!(format!("{:#}", read_f32(&dir.path().join("bad.npy")).unwrap_err()).contains("bad.npy"));
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(dir.path().join("cut.npy"), &bytes[..bytes.len() - 5]).unwrap();
        assert!(read_f32(&dir.path().join("cut.npy")).is_err());
    }

    #[test]
    fn deeply_nested_headers_are_refused_at_once() {
        // cargo fuzz's timeout input (fuzz/artifacts/npy/timeout-7d73...): seconds in npyz's parser.
        let mut bytes = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
        bytes.extend_from_slice(
            b"{'descr': 'f4', 'fortsan_order': False, 'shape': {{{{{(1, 1,{'descr': '<f4', 'fortrnae': ",
        );
        bytes.extend_from_slice(b"{{{{{(1, 1,{'descr': '<f4'   *        ");
        bytes.extend_from_slice(&[0xc0, 0, 0, 0x60, 0x40, 0, 0, 0, 0, 0, 0, 0xa0, 0, 0, 0xa0, 0x40, 0, 0, 0xc0, 0x40]);
        let start = std::time::Instant::now();
        let err = format!("{:#}", parse_f32(&bytes, "deep.npy").unwrap_err());
        assert!(err.contains("deep.npy") && err.contains("nests"), "{err}");
        assert!(start.elapsed().as_millis() < 100);
    }
}
