//! `--device auto|cpu|cuda|emulator`: which backend a command runs on.

use crate::backend::{CudaBackend, FastCpuBackend};
use crate::gpu::Gpu;
use anyhow::{Result, bail};

pub enum Device {
    Cpu(FastCpuBackend),
    Cuda(CudaBackend),
}

impl Device {
    /// `auto` takes a GPU when the binary holds kernels and one is present, else the CPU backend.
    pub fn open(spec: &str) -> Result<Device> {
        Ok(match spec {
            "cpu" => Device::Cpu(FastCpuBackend),
            "cuda" => Device::Cuda(CudaBackend::new(Gpu::cuda(0)?)),
            "emulator" => Device::Cuda(CudaBackend::new(Gpu::emulator()?)),
            "auto" => match Gpu::cuda(0) {
                Ok(gpu) => Device::Cuda(CudaBackend::new(gpu)),
                Err(_) => Device::Cpu(FastCpuBackend),
            },
            other => bail!("unknown device {other:?}: use auto, cpu, cuda or emulator"),
        })
    }

    pub fn name(&self) -> String {
        use crate::backend::Backend;
        match self {
            Device::Cpu(b) => b.name(),
            Device::Cuda(b) => b.name(),
        }
    }
}

/// Runs `$body` with `$b` bound to the device's backend (a generic body, monomorphised per backend).
#[macro_export]
macro_rules! with_backend {
    ($device:expr, $b:ident => $body:expr) => {
        match $device {
            $crate::cli::device::Device::Cpu($b) => $body,
            $crate::cli::device::Device::Cuda($b) => $body,
        }
    };
}
