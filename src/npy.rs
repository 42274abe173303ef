//! NumPy .npy files for interchange with Python (noise, raw samples, `ddpm grads` inputs), via the
//! npyz crate. Arrays are read as f32 whatever their float or integer dtype; errors name the file.

use anyhow::{Context, Result, bail};
use npyz::WriterBuilder;
use std::path::Path;

/// Shape and data (C order) of an .npy file, as f32.
pub fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..]).with_context(|| format!("{} is not a valid .npy file", path.display()))?;
    if npy.order() != npyz::Order::C {
        bail!("{}: Fortran-ordered arrays are not supported (save with np.ascontiguousarray)", path.display());
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let type_str = npy.dtype().descr();
    let ctx = || format!("{}: cannot read the {type_str} data", path.display());
    let data: Vec<f32> = match type_str.trim_matches('\'').trim_start_matches(['<', '|', '=']) {
        "f4" => npy.into_vec::<f32>().with_context(ctx)?,
        "f8" => npy.into_vec::<f64>().with_context(ctx)?.into_iter().map(|v| v as f32).collect(),
        "i8" => npy.into_vec::<i64>().with_context(ctx)?.into_iter().map(|v| v as f32).collect(),
        "i4" => npy.into_vec::<i32>().with_context(ctx)?.into_iter().map(|v| v as f32).collect(),
        other => bail!("{}: dtype {other} is not supported (float32, float64, int32, int64)", path.display()),
    };
    if data.len() != shape.iter().product::<usize>() {
        bail!("{}: truncated ({} values for shape {shape:?})", path.display(), data.len());
    }
    Ok((shape, data))
}

/// Writes a float32 C-order array, atomically.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let mut bytes = Vec::new();
    let shape64: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape64).writer(&mut bytes).begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()?;
    crate::checkpoint::atomic_write(path, &bytes)
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
}
