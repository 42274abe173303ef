//! `--device auto|cpu|cuda|emulator`: which backend a command runs on.

use crate::backend::{CudaBackend, FastCpuBackend, FastCpuBf16Backend};
use crate::fast::bf16::Precision;
use crate::gpu::Gpu;
use anyhow::Result;

/// `--device`: where a command runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceName {
    /// The CUDA device when this binary holds kernels and one is present, else the CPU.
    Auto,
    /// The fast CPU path.
    Cpu,
    /// CUDA device 0.
    Cuda,
    /// The CUDA kernels on the CPU emulator (slow; for checking kernels without a GPU).
    Emulator,
}

pub enum Device {
    Cpu(FastCpuBackend),
    /// The CPU path with bf16 matrix-product operands (`--precision bf16`).
    CpuBf16(FastCpuBf16Backend),
    Cuda(CudaBackend),
}

impl Device {
    /// `auto` takes a GPU when the binary holds kernels and one is present, else the CPU backend.
    pub fn open(name: DeviceName) -> Result<Device> {
        Self::open_on(name, 0)
    }

    /// As [`Device::open`], on CUDA device `ordinal` (a data-parallel rank's local rank).
    pub fn open_on(name: DeviceName, ordinal: usize) -> Result<Device> {
        Ok(match name {
            DeviceName::Cpu => Device::Cpu(FastCpuBackend),
            DeviceName::Cuda => Device::Cuda(CudaBackend::new(Gpu::cuda(ordinal)?)),
            DeviceName::Emulator => Device::Cuda(CudaBackend::new(Gpu::emulator()?)),
            DeviceName::Auto => match Gpu::cuda(ordinal) {
                Ok(gpu) => Device::Cuda(CudaBackend::new(gpu)),
                Err(e) => {
                    // No GPU is the common case and says nothing; a GPU that fails to open is news.
                    if e.downcast_ref::<crate::gpu::NoCudaDevice>().is_none() {
                        eprintln!("warning: running on the CPU: the CUDA device did not open: {e:#}");
                    }
                    Device::Cpu(FastCpuBackend)
                }
            },
        })
    }

    /// As [`Device::open`], at a precision: bf16 is the CPU path's bf16 backend, or on CUDA (and
    /// the emulator) the tensor-core products of src/backend/cuda_bf16.rs.
    /// `precision` None: bf16 on a CUDA device (its tensor cores), f32 on the CPU and the
    /// emulator (the references every check compares against).
    pub fn open_with(name: DeviceName, precision: Option<Precision>) -> Result<Device> {
        Self::open_with_on(name, precision, 0)
    }

    pub fn open_with_on(name: DeviceName, precision: Option<Precision>, ordinal: usize) -> Result<Device> {
        let device = Device::open_on(name, ordinal)?;
        let precision = precision.unwrap_or(match &device {
            Device::Cuda(b) if !b.gpu.is_emulator() => Precision::Bf16,
            _ => Precision::F32,
        });
        Ok(match (device, precision) {
            (device, Precision::F32) => device,
            (Device::Cpu(_) | Device::CpuBf16(_), Precision::Bf16) => Device::CpuBf16(FastCpuBf16Backend),
            (Device::Cuda(b), Precision::Bf16) => Device::Cuda(CudaBackend::with_precision(b.gpu, Precision::Bf16)),
        })
    }

    /// The precision the device runs at.
    pub fn precision(&self) -> Precision {
        match self {
            Device::Cpu(_) => Precision::F32,
            Device::CpuBf16(_) => Precision::Bf16,
            Device::Cuda(b) => b.precision,
        }
    }

    pub fn name(&self) -> String {
        use crate::backend::Backend;
        match self {
            Device::Cpu(b) => b.name(),
            Device::CpuBf16(b) => b.name(),
            Device::Cuda(b) => b.name(),
        }
    }
}

/// Runs `$body` with `$b` bound to the device's backend (a generic body, monomorphised per backend);
/// on the CPU backends and the CUDA emulator (whose blocks run on rayon's workers), through
/// [`on_cpu`].
#[macro_export]
macro_rules! with_backend {
    ($device:expr, $b:ident => $body:expr) => {
        match $device {
            $crate::cli::device::Device::Cpu($b) => $crate::cli::device::on_cpu(|| $body),
            $crate::cli::device::Device::CpuBf16($b) => $crate::cli::device::on_cpu(|| $body),
            $crate::cli::device::Device::Cuda($b) if $b.gpu.is_emulator() => $crate::cli::device::on_cpu(|| $body),
            $crate::cli::device::Device::Cuda($b) => $body,
        }
    };
}

/// A command's CPU work, run on a rayon worker with the others kept awake between ops where
/// [`crate::fast::threads::spin_enabled`] allows (src/fast/threads.rs).
pub fn on_cpu<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    crate::fast::threads::hot(crate::fast::threads::spin_enabled(), f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_defaults_to_f32_off_cuda_and_follows_the_flag() {
        assert_eq!(Device::open_with(DeviceName::Cpu, None).unwrap().precision(), Precision::F32);
        assert_eq!(Device::open_with(DeviceName::Emulator, None).unwrap().precision(), Precision::F32);
        for name in [DeviceName::Cpu, DeviceName::Emulator] {
            let d = Device::open_with(name, Some(Precision::Bf16)).unwrap();
            assert_eq!(d.precision(), Precision::Bf16, "{name:?}");
        }
    }
}
