//! Launch configuration and kernel arguments, shared by the CUDA and emulator paths.

use super::{Buffer, DType, limits};
use anyhow::{Result, bail};
use std::ffi::c_void;

/// Grid and block dimensions and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

impl LaunchConfig {
    /// A 1-D launch of `blocks` blocks of `threads` threads.
    pub fn linear(blocks: u32, threads: u32) -> Self {
        LaunchConfig { grid: [blocks, 1, 1], block: [threads, 1, 1], shared_bytes: 0 }
    }

    /// Enough blocks of `threads` to give each of `n` elements a thread, capped so that very large
    /// `n` is covered by grid-stride loops instead of a huge grid.
    pub fn for_elements(n: usize, threads: u32) -> Self {
        let blocks = n.div_ceil(threads as usize).clamp(1, 65535) as u32;
        Self::linear(blocks, threads)
    }

    pub fn with_shared(mut self, bytes: u32) -> Self {
        self.shared_bytes = bytes;
        self
    }

    pub fn threads_per_block(&self) -> u64 {
        self.block.iter().map(|&d| d as u64).product()
    }

    pub fn blocks(&self) -> u64 {
        self.grid.iter().map(|&d| d as u64).product()
    }

    /// Checks the launch against the device's limits; `optin` is the kernel's dynamic shared
    /// memory opt-in, if any.
    pub(crate) fn check(&self, kernel: &str, optin: Option<u32>) -> Result<()> {
        let threads = self.threads_per_block();
        if threads == 0 || self.grid.contains(&0) {
            bail!("{kernel}: empty launch (grid {:?}, block {:?})", self.grid, self.block);
        }
        if threads > limits::MAX_THREADS_PER_BLOCK as u64 {
            bail!(
                "{kernel}: launch with {threads} threads per block (block {:?}) exceeds the device limit of {}",
                self.block,
                limits::MAX_THREADS_PER_BLOCK
            );
        }
        for (axis, ((&b, &g), (&max_b, &max_g))) in
            self.block.iter().zip(&self.grid).zip(limits::MAX_BLOCK_DIM.iter().zip(&limits::MAX_GRID_DIM)).enumerate()
        {
            if b > max_b || g > max_g {
                bail!(
                    "{kernel}: block {:?} / grid {:?} exceeds the device limit on axis {axis}",
                    self.block,
                    self.grid
                );
            }
        }
        let static_bytes = super::resources::static_shared_bytes(kernel);
        let limit = optin.map_or(limits::DEFAULT_SHARED_BYTES, |o| o.max(limits::DEFAULT_SHARED_BYTES));
        if static_bytes + self.shared_bytes > limit {
            bail!(
                "{kernel}: {} bytes of shared memory per block ({static_bytes} static + {} dynamic) exceed the limit of {limit}{}",
                static_bytes + self.shared_bytes,
                self.shared_bytes,
                if optin.is_none() { " (raise it with Gpu::set_max_dynamic_shared)" } else { "" }
            );
        }
        Ok(())
    }
}

/// Kernel arguments in order, each stored by value. [`KernelArgs::param_array`] turns them into the
/// array of pointers-to-values that cuLaunchKernel (and the emulator) take.
///
/// Do not call a closure that takes `KernelArgs` by value twice with the same fresh value
/// (`f(KernelArgs::new())` twice): rustc 1.95.0 miscompiles that in release builds (MIR GVN turns
/// both arguments into one local, the closure call hands the callee that local itself, the callee
/// pushes into it, and the second call sees the first call's since-freed vectors: a double free).
/// rust-lang/rust#155241, a compiler bug (it needs no `unsafe`; gone on nightly 1.97.0 of 2026-05-19). Use a plain
/// function, as src/cuda/group_norm.rs does; tests/rustc_closure_arg_miscompile.rs keeps a
/// reproduction and fails if the pattern comes back in src/.
#[derive(Clone, Default)]
pub struct KernelArgs {
    values: Vec<u64>,
    sizes: Vec<u32>,
    pointers: Vec<bool>,
}

impl KernelArgs {
    pub fn new() -> Self {
        Self::default()
    }
    fn push(mut self, bits: u64, size: u32, pointer: bool) -> Self {
        self.values.push(bits);
        self.sizes.push(size);
        self.pointers.push(pointer);
        self
    }
    /// A buffer, passed as a device pointer (`T*` in the kernel).
    pub fn buf<T: DType>(self, b: &Buffer<T>) -> Self {
        self.push(b.device_ptr(), 8, true)
    }
    /// A null pointer, for optional inputs.
    pub fn null(self) -> Self {
        self.push(0, 8, true)
    }
    /// An optional input: its pointer, or null.
    pub fn opt<T: DType>(self, b: Option<&Buffer<T>>) -> Self {
        match b {
            Some(b) => self.buf(b),
            None => self.null(),
        }
    }
    pub fn f32(self, v: f32) -> Self {
        self.push(v.to_bits() as u64, 4, false)
    }
    pub fn u32(self, v: u32) -> Self {
        self.push(v as u64, 4, false)
    }
    pub fn i32(self, v: i32) -> Self {
        self.push(v as u32 as u64, 4, false)
    }
    pub fn u64(self, v: u64) -> Self {
        self.push(v, 8, false)
    }
    /// A raw pointer value (for tests that must hand a kernel a pointer outside any buffer).
    pub fn raw_pointer(self, address: u64) -> Self {
        self.push(address, 8, true)
    }

    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }
    pub(crate) fn size(&self, i: usize) -> u32 {
        self.sizes[i]
    }
    pub(crate) fn is_pointer(&self, i: usize) -> bool {
        self.pointers[i]
    }
    pub(crate) fn value(&self, i: usize) -> u64 {
        self.values[i]
    }

    /// Pointers to each stored value. Every value lives in its own 8-byte slot, little-endian, so a
    /// 4-byte parameter reads its bytes from the start of the slot as the kernel expects.
    pub(crate) fn param_array(&self) -> Vec<*mut c_void> {
        self.values.iter().map(|v| v as *const u64 as *mut c_void).collect()
    }
}
