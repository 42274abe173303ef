//! safetensors files: reading every tensor as f32 (F32, F16, BF16 and F64 accepted, as published
//! checkpoints use), writing f32 tensors, and atomic file replacement so a crash never leaves a
//! half-written file where a good one was.

use anyhow::{Context, Result, bail};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// A tensor as PyTorch lays it out: shape and row-major f32 data.
pub type Tensor = (Vec<usize>, Vec<f32>);

/// Every tensor of a safetensors file, by name.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_tensors(&bytes).with_context(|| format!("{} is not a valid safetensors file", path.display()))
}

/// The tensors of a safetensors file's bytes. A NaN or infinity in any tensor is refused, naming
/// the tensor and the index (weights and optimizer moments are inputs; see crate::finite).
pub fn parse_tensors(bytes: &[u8]) -> Result<HashMap<String, Tensor>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = to_f32(&view).with_context(|| format!("tensor {name}"))?;
        crate::finite::check(&data, &format!("tensor {name}"))?;
        out.insert(name, (view.shape().to_vec(), data));
    }
    Ok(out)
}

fn to_f32(view: &TensorView) -> Result<Vec<f32>> {
    let d = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => d.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => d.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F64 => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        Dtype::I64 => d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        Dtype::I32 => d.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        other => bail!("unsupported dtype {other:?}"),
    })
}

/// Serialises f32 tensors (in the given order) with optional string metadata.
pub fn serialize_tensors(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(data))
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, metadata).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Replaces `path` with `bytes` atomically: write a temporary file beside it, fsync it, rename it
/// over the target, fsync the directory. Readers see the old file or the new one, never a mix.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all().with_context(|| format!("cannot sync {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all(); // persist the rename; not every filesystem supports it
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `atomic_write`, skipped where the file already holds `bytes`: the configs a run directory
/// rewrites at every checkpoint never change, and each write costs two fsyncs.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    atomic_write(path, bytes)
}

pub fn write_tensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    atomic_write(path, &serialize_tensors(tensors, metadata)?)
}

/// Maps the attention names older diffusers DDPM checkpoints use (google/ddpm-* were saved with
/// them) to the current ones: query/key/value/proj_attn -> to_q/to_k/to_v/to_out.0.
pub fn modernize_name(name: &str) -> String {
    const LEGACY: [(&str, &str); 4] =
        [(".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0.")];
    for (old, new) in LEGACY {
        if name.contains(".attentions.") && name.contains(old) {
            return name.replacen(old, new, 1);
        }
    }
    name.to_string()
}
