//! Datasets: the built-in procedural shapes (no files needed), IDX files (MNIST, Fashion-MNIST,
//! plain or gzip), CIFAR-10 binary batches and folders of PNG/JPEG images. Every dataset yields
//! images as NHWC f32 in [-1, 1]; bad files are errors naming the file and what is wrong.

pub mod builtin;
pub mod cifar;
pub mod folder;
pub mod idx;
pub mod loader;
pub mod quality;

use anyhow::{Result, bail};
use std::path::Path;

/// A fixed set of square images.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Side of the (square) images.
    fn size(&self) -> usize;
    fn channels(&self) -> usize;
    /// Image `i` as [size, size, channels] in [-1, 1].
    fn image(&self, i: usize) -> Vec<f32>;
}

/// Images decoded into memory as bytes (0..=255), HWC. Every file format decodes to these bytes,
/// so a dataset's images are finite by construction: unlike .npy and safetensors inputs
/// (crate::finite), there is nothing to refuse after decoding.
pub struct InMemory {
    pub size: usize,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

impl std::fmt::Debug for InMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InMemory({} images of {}x{}x{})", self.len(), self.size, self.size, self.channels)
    }
}

impl Dataset for InMemory {
    fn len(&self) -> usize {
        self.pixels.len() / (self.size * self.size * self.channels)
    }
    fn size(&self) -> usize {
        self.size
    }
    fn channels(&self) -> usize {
        self.channels
    }
    fn image(&self, i: usize) -> Vec<f32> {
        let n = self.size * self.size * self.channels;
        self.pixels[i * n..(i + 1) * n].iter().map(|&p| p as f32 / 127.5 - 1.0).collect()
    }
}

/// Opens `builtin`, `idx:PATH`, `cifar10:DIR` or `folder:DIR` (images resized to `size`).
pub fn open(spec: &str, size: usize, seed: u64) -> Result<Box<dyn Dataset>> {
    let (kind, arg) = spec.split_once(':').unwrap_or((spec, ""));
    let need_path = |what: &str| -> Result<&Path> {
        if arg.is_empty() {
            bail!("--data {kind}: needs a path, as {kind}:{what}");
        }
        Ok(Path::new(arg))
    };
    Ok(match kind {
        "builtin" => Box::new(builtin::Shapes::new(size, 10_000, seed)),
        "idx" => Box::new(idx::load(need_path("FILE")?)?),
        "cifar10" => Box::new(cifar::load(need_path("DIR")?)?),
        "folder" => Box::new(folder::load(need_path("DIR")?, size)?),
        other => bail!("unknown dataset {other:?}: use builtin, idx:PATH, cifar10:DIR or folder:DIR"),
    })
}
