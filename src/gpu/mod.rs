//! The device runtime: a [`Gpu`] is either a real CUDA device (through cudarc's driver API) or the
//! CPU emulator that runs the same kernel source as fibers. Both share one launch path: kernel
//! arguments are packed once as the `void**` array that `cuLaunchKernel` takes ([`KernelArgs`]),
//! and the emulator takes the same array. Memory comes from a caching pool, so a training step
//! does not call the driver's allocator per op.

mod buffer;
mod cuda;
mod cuda_graph;
mod emu;
mod graph;
mod launch;
pub mod mma_model;
pub mod nccl;
mod pool;
pub mod resources;
pub mod sass;
mod timing;

pub use buffer::{Buffer, DType};
pub use cuda::NoCudaDevice;
pub use emu::FiberOrder;
pub use graph::Graph;
pub use launch::{KernelArgs, LaunchConfig};
pub use pool::PoolStats;
pub use timing::{DeviceTimer, bf16_dense_peak, f32_simt_peak};

use anyhow::{Result, bail};
use std::sync::{Arc, Mutex};

/// Limits of the device the emulator pretends to be (an sm_90 part), also checked before real
/// launches so a bad launch gets the same clear error everywhere.
pub mod limits {
    pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
    pub const MAX_BLOCK_DIM: [u32; 3] = [1024, 1024, 64];
    pub const MAX_GRID_DIM: [u32; 3] = [i32::MAX as u32, 65535, 65535];
    /// Shared memory a block may use without opting in (static + dynamic).
    pub const DEFAULT_SHARED_BYTES: u32 = 48 * 1024;
    /// The most a kernel may opt in to with [`super::Gpu::set_max_dynamic_shared`] (sm_90).
    pub const OPTIN_SHARED_BYTES: u32 = 227 * 1024;
}

/// Split-K's per-tile arrival counters (kernels/gemm_bf16.cuh `gbf16_last_split`): zeroed once
/// when the device opens and left at zero by every launch that uses them, so no launch or graph
/// replay clears them. One per output tile of a split launch; K is split only when the tiles are
/// too few to fill the GPU (src/cuda/conv_bf16.rs: fewer than 132).
pub const SPLIT_COUNTERS: usize = 256;

pub(crate) enum Device {
    Cuda(cuda::CudaDevice),
    Emulator(emu::Emulator),
}

pub(crate) struct Inner {
    device: Device,
    pool: Mutex<pool::Pool>,
    /// Per-kernel dynamic shared memory opt-in, as set by cuFuncSetAttribute.
    shared_optin: Mutex<std::collections::HashMap<String, u32>>,
    /// The graph being captured, if any (src/gpu/graph.rs).
    capture: Mutex<Option<graph::Capture>>,
    /// Host copies of data queued by `copy_to_device_queued`, alive until the stream next waits.
    queued_host: Mutex<Vec<Vec<u8>>>,
    /// The address of SPLIT_COUNTERS u32 counters, outside the pool (its statistics and captures
    /// see none of it); freed when the device is.
    split_counters: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        match &self.device {
            Device::Cuda(d) => {
                // Queued kernels may still count in them.
                if d.synchronize().is_ok() {
                    d.raw_free(self.split_counters);
                }
            }
            Device::Emulator(e) => {
                e.unregister(self.split_counters);
                e.raw_free(self.split_counters);
            }
        }
    }
}

/// A device handle; cheap to clone (all clones share the device, its stream and its pool).
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<Inner>,
}

impl Gpu {
    /// Opens CUDA device `ordinal`. Fails with a clear message when there is no driver, no device,
    /// or this binary was built without GPU kernels.
    pub fn cuda(ordinal: usize) -> Result<Gpu> {
        Self::new(Device::Cuda(cuda::CudaDevice::open(ordinal)?))
    }

    /// The CPU emulator: runs the kernels' CUDA source on the host.
    pub fn emulator() -> Result<Gpu> {
        Self::new(Device::Emulator(emu::Emulator::new()?))
    }

    fn new(device: Device) -> Result<Gpu> {
        let zeros = [0u8; SPLIT_COUNTERS * 4];
        let split_counters = device.raw_alloc(zeros.len())?;
        match &device {
            Device::Cuda(d) => d.htod(&zeros, split_counters)?,
            Device::Emulator(e) => {
                e.register(split_counters, zeros.len());
                // SAFETY: raw_alloc just returned this live host allocation of zeros.len() bytes.
                unsafe { std::ptr::write_bytes(split_counters as *mut u8, 0, zeros.len()) };
            }
        }
        Ok(Gpu {
            inner: Arc::new(Inner {
                device,
                pool: Mutex::new(pool::Pool::default()),
                shared_optin: Mutex::new(Default::default()),
                capture: Mutex::new(None),
                queued_host: Mutex::new(Vec::new()),
                split_counters,
            }),
        })
    }

    /// The split-K counters' address (SPLIT_COUNTERS of them), for a launch's arguments.
    pub(crate) fn split_counters(&self) -> u64 {
        self.inner.split_counters
    }

    /// Names of the kernels this device can launch (every `extern "C" __global__` in kernels/).
    pub fn kernel_names(&self) -> Vec<&'static str> {
        match &self.inner.device {
            Device::Cuda(_) => resources::KERNEL_RESOURCES
                .iter()
                .map(|r| r.kernel)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            Device::Emulator(e) => e.kernel_names(),
        }
    }

    /// On the emulator, the order its blocks' threads run in between barriers (see FiberOrder);
    /// nothing on a GPU, whose order is its own.
    pub fn set_fiber_order(&self, order: FiberOrder) {
        if let Device::Emulator(e) = &self.inner.device {
            e.set_fiber_order(order);
        }
    }

    pub fn is_emulator(&self) -> bool {
        matches!(self.inner.device, Device::Emulator(_))
    }

    /// A human-readable device name, e.g. "NVIDIA H200 (sm_90)" or "CUDA emulator (2 threads)".
    pub fn name(&self) -> String {
        match &self.inner.device {
            Device::Cuda(d) => d.name(),
            Device::Emulator(e) => e.name(),
        }
    }

    /// A buffer of `len` elements with unspecified contents (NaN-poisoned on the emulator, so a
    /// kernel that reads what it never wrote shows up in the results).
    pub fn alloc<T: DType>(&self, len: usize) -> Result<Buffer<T>> {
        let bytes = (len * std::mem::size_of::<T>()).max(1);
        let ptr = self.inner.pool.lock().unwrap().acquire(bytes, &self.inner.device)?;
        if let Device::Emulator(e) = &self.inner.device {
            e.register(ptr, bytes);
            // SAFETY: the pool just handed out `ptr`, a live host allocation of at least `bytes`.
            unsafe { std::ptr::write_bytes(ptr as *mut u8, 0xff, bytes) };
        }
        Ok(Buffer::new(self.clone(), ptr, len))
    }

    pub(crate) fn release(&self, ptr: u64, len_bytes: usize) {
        if let Device::Emulator(e) = &self.inner.device {
            e.unregister(ptr);
        }
        self.inner.pool.lock().unwrap().release(ptr, len_bytes.max(1));
    }

    /// Copies host data into a new device buffer.
    pub fn upload<T: DType>(&self, data: &[T]) -> Result<Buffer<T>> {
        let mut buf = self.alloc(data.len())?;
        self.copy_to_device(data, &mut buf)?;
        Ok(buf)
    }

    /// Copies `src` into `dst`, which must have the same length.
    pub fn copy_to_device<T: DType>(&self, src: &[T], dst: &mut Buffer<T>) -> Result<()> {
        if src.len() != dst.len() {
            bail!("copy_to_device: {} host elements into a buffer of {}", src.len(), dst.len());
        }
        self.refuse_while_capturing("copy_to_device")?;
        let bytes: &[u8] = bytemuck::cast_slice(src);
        match &self.inner.device {
            Device::Cuda(d) => {
                d.htod(bytes, dst.device_ptr())?;
                self.synchronised();
                Ok(())
            }
            // SAFETY: dst is a live allocation of exactly bytes.len() bytes (lengths checked above).
            Device::Emulator(_) => unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.device_ptr() as *mut u8, bytes.len());
                Ok(())
            },
        }
    }

    /// `copy_to_device` without waiting: the copy is queued on the stream after the work before
    /// it (so a replayed graph that reads `dst` sees the old contents, and the next the new) and
    /// the host goes on. The data are first copied into memory kept until the stream next waits.
    pub fn copy_to_device_queued<T: DType>(&self, src: &[T], dst: &mut Buffer<T>) -> Result<()> {
        let Device::Cuda(d) = &self.inner.device else { return self.copy_to_device(src, dst) };
        if src.len() != dst.len() {
            bail!("copy_to_device: {} host elements into a buffer of {}", src.len(), dst.len());
        }
        self.refuse_while_capturing("copy_to_device")?;
        let kept: Vec<u8> = bytemuck::cast_slice(src).to_vec();
        // SAFETY: `kept` moves into queued_host (its heap block does not move) and is dropped only
        // after the stream has been synchronised (`synchronised`).
        unsafe { d.htod_queued(&kept, dst.device_ptr())? };
        self.inner.queued_host.lock().unwrap().push(kept);
        Ok(())
    }

    /// The stream has been waited for: the data of queued copies may go.
    fn synchronised(&self) {
        self.inner.queued_host.lock().unwrap().clear();
    }

    /// Copies a device buffer back to the host, waiting for the work queued before it.
    pub fn download<T: DType>(&self, src: &Buffer<T>) -> Result<Vec<T>> {
        self.refuse_while_capturing("download")?;
        let mut out = vec![T::zeroed(); src.len()];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
        match &self.inner.device {
            Device::Cuda(d) => {
                d.dtoh(src.device_ptr(), bytes)?;
                self.synchronised();
            }
            // SAFETY: src is a live allocation of exactly bytes.len() bytes.
            Device::Emulator(_) => unsafe {
                std::ptr::copy_nonoverlapping(src.device_ptr() as *const u8, bytes.as_mut_ptr(), bytes.len());
            },
        }
        Ok(out)
    }

    /// Launches `kernel` (an `extern "C" __global__` function in kernels/) on this device's stream.
    pub fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &KernelArgs) -> Result<()> {
        let optin = self.inner.shared_optin.lock().unwrap().get(kernel).copied();
        cfg.check(kernel, optin)?;
        if self.record_if_capturing(kernel, &cfg, args) {
            return Ok(());
        }
        let mut params = args.param_array();
        match &self.inner.device {
            Device::Cuda(d) => {
                d.launch(kernel, &cfg, &mut params)?;
                if d.sync_each_launch && !self.is_capturing() {
                    d.check_launch(kernel, &cfg)?;
                }
                Ok(())
            }
            // Emulated launches run to completion here, and a failure names its kernel and block.
            Device::Emulator(e) => e.launch(kernel, &cfg, &mut params, args),
        }
    }

    /// Lets `kernel` use up to `bytes` of dynamic shared memory (above the 48 KiB default). The
    /// attribute is only ever raised: it applies to every later launch of the function, replayed
    /// graph nodes included, so lowering it for a smaller launch would break a graph captured
    /// with a larger one.
    pub fn set_max_dynamic_shared(&self, kernel: &str, bytes: u32) -> Result<()> {
        if bytes > limits::OPTIN_SHARED_BYTES {
            bail!(
                "{kernel}: {bytes} bytes of dynamic shared memory requested, the device allows {}",
                limits::OPTIN_SHARED_BYTES
            );
        }
        let mut optin = self.inner.shared_optin.lock().unwrap();
        if optin.get(kernel).is_some_and(|&high| high >= bytes) {
            return Ok(());
        }
        if let Device::Cuda(d) = &self.inner.device {
            d.set_max_dynamic_shared(kernel, bytes)?;
        }
        optin.insert(kernel.to_string(), bytes);
        Ok(())
    }

    /// The dynamic shared memory `kernel` may use now (its opt-in high-water mark), if raised.
    pub fn max_dynamic_shared(&self, kernel: &str) -> Option<u32> {
        self.inner.shared_optin.lock().unwrap().get(kernel).copied()
    }

    /// One line of facts about the device: SMs, clocks, memory, L2, driver (a GPU); what it
    /// emulates (the emulator).
    pub fn facts(&self) -> Result<String> {
        match &self.inner.device {
            Device::Cuda(d) => d.facts(),
            Device::Emulator(e) => Ok(format!(
                "{}: emulates an sm_90 part's limits ({} KiB shared memory per block opt-in); timings are the host's",
                e.name(),
                limits::OPTIN_SHARED_BYTES >> 10
            )),
        }
    }

    /// Waits until all queued work on this device's stream has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.refuse_while_capturing("synchronize")?;
        if let Device::Cuda(d) = &self.inner.device {
            d.synchronize()?;
            self.synchronised();
        }
        Ok(())
    }

    /// Allocation statistics of the caching pool.
    pub fn memory_stats(&self) -> PoolStats {
        self.inner.pool.lock().unwrap().stats()
    }

    /// Returns cached, unused memory to the device (after the queued work that used it).
    /// Refused while a graph is being captured.
    pub fn empty_cache(&self) -> Result<()> {
        self.inner.pool.lock().unwrap().trim(&self.inner.device)
    }

    /// An event recorded now on this device's stream; two of them time the work between them.
    pub fn record_event(&self) -> Result<Event> {
        match &self.inner.device {
            Device::Cuda(d) => Ok(Event::Cuda(d.record_event()?)),
            Device::Emulator(_) => Ok(Event::Host(std::time::Instant::now())),
        }
    }
}

/// A point in a device's stream of work.
pub enum Event {
    Cuda(cuda::CudaEvent),
    Host(std::time::Instant),
}

impl Event {
    /// Milliseconds from `self` to `later`, waiting for `later` to complete.
    pub fn elapsed_ms(&self, later: &Event) -> Result<f32> {
        match (self, later) {
            (Event::Cuda(a), Event::Cuda(b)) => a.elapsed_ms(b),
            (Event::Host(a), Event::Host(b)) => Ok(b.duration_since(*a).as_secs_f32() * 1e3),
            _ => bail!("events from different kinds of device"),
        }
    }
}
