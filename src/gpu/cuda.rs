//! Real CUDA devices through cudarc's driver API, loaded dynamically so the binary starts (and
//! reports a clear error) on machines with no NVIDIA driver.

use super::LaunchConfig;
use super::resources::{FATBIN, SELFTEST_FATBIN, SELFTEST_KERNELS};
use anyhow::{Context, Result, anyhow, bail};
use cudarc::driver::{result, sys};
use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::sync::Mutex;

/// Why no CUDA device could be opened when the machine has none to open (no driver library, a
/// driver that does not start, no GPU): the case GPU tests skip. Every other failure to open (a
/// module that does not load, no code for this GPU) is a plain error.
#[derive(Debug)]
pub struct NoCudaDevice(pub String);

impl std::fmt::Display for NoCudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no CUDA device: {}", self.0)
    }
}

impl std::error::Error for NoCudaDevice {}

pub struct CudaDevice {
    pub(super) ctx: sys::CUcontext,
    pub(super) stream: sys::CUstream,
    module: sys::CUmodule,
    /// The emulator self-test kernels' module (kernels/selftest), loaded from their own fatbin on
    /// the first launch of one of them: tests only, never part of the production module.
    selftest: Mutex<Option<sys::CUmodule>>,
    functions: Mutex<HashMap<String, sys::CUfunction>>,
    name: String,
    dev: sys::CUdevice,
    /// `DDPM_CUDA_SYNC=1`: wait for every launch outside a capture, so a fault is reported by the
    /// kernel that caused it rather than at the next synchronisation (a debug switch: it costs a
    /// host round trip per launch).
    pub sync_each_launch: bool,
    /// The last launch queued, named in a "CUDA error in queued work" report.
    last_launch: Mutex<String>,
}
// SAFETY: CUDA contexts, streams, modules and functions may be used from any thread once the
// context is made current there, which every entry point below does first.
unsafe impl Send for CudaDevice {}
unsafe impl Sync for CudaDevice {}

impl CudaDevice {
    pub fn open(ordinal: usize) -> Result<Self> {
        // SAFETY: only probes whether libcuda can be loaded.
        if !unsafe { sys::is_culib_present() } {
            return Err(
                NoCudaDevice("the NVIDIA driver library (libcuda.so) is not installed on this machine".into()).into()
            );
        }
        result::init().map_err(|e| NoCudaDevice(format!("the driver failed to initialise ({e})")))?;
        let count = result::device::get_count().map_err(|e| NoCudaDevice(e.to_string()))?;
        if count == 0 {
            return Err(NoCudaDevice("the driver reports no GPUs".into()).into());
        }
        if ordinal >= count as usize {
            bail!("CUDA device {ordinal} requested, but this machine has {count}");
        }
        if FATBIN.is_empty() {
            bail!(
                "this binary holds no GPU kernels: it was built without nvcc. \
                 Run scripts/install-cuda-toolchain (or set NVCC / CUDA_HOME) and rebuild."
            );
        }
        let dev = result::device::get(ordinal as i32)?;
        let name = result::device::get_name(dev)?;
        // SAFETY: dev is a valid device from device::get.
        let (major, minor) = unsafe {
            (
                result::device::get_attribute(
                    dev,
                    sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                )?,
                result::device::get_attribute(
                    dev,
                    sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                )?,
            )
        };
        // SAFETY: retaining the primary context of a valid device and making it current.
        let ctx = unsafe { result::primary_ctx::retain(dev)? };
        unsafe { result::ctx::set_current(ctx)? };
        let stream = result::stream::create(result::stream::StreamKind::NonBlocking)?;
        // The driver reads the fatbin header with aligned loads; include_bytes! gives no alignment.
        let mut image = vec![0u64; FATBIN.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut image)[..FATBIN.len()].copy_from_slice(FATBIN);
        // SAFETY: image holds the fatbin nvcc produced at build time.
        let module = unsafe { result::module::load_data(image.as_ptr() as *const c_void) }.with_context(|| {
            format!("loading the kernels on {name} (sm_{major}{minor}); this binary has sm_80 and sm_90a code and compute_80 PTX")
        })?;
        Ok(CudaDevice {
            ctx,
            stream,
            module,
            selftest: Mutex::default(),
            functions: Mutex::default(),
            name: format!("{name} (sm_{major}{minor})"),
            dev,
            sync_each_launch: std::env::var("DDPM_CUDA_SYNC").is_ok_and(|v| v == "1"),
            last_launch: Mutex::default(),
        })
    }

    pub fn name(&self) -> String {
        self.name.clone()
    }

    fn attribute(&self, a: sys::CUdevice_attribute) -> Result<i64> {
        // SAFETY: dev is a valid device handle from device::get.
        Ok(unsafe { result::device::get_attribute(self.dev, a)? } as i64)
    }

    /// Bytes of L2 cache (what a benchmark must overwrite to start from a cold cache).
    pub fn l2_bytes(&self) -> Result<usize> {
        Ok(self.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)? as usize)
    }

    /// (SMs, the highest SM clock in kHz, compute capability): what a peak rate is computed from.
    pub fn compute_units(&self) -> Result<(i64, i64, (i64, i64))> {
        use sys::CUdevice_attribute as A;
        let cc = (
            self.attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            self.attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        );
        Ok((
            self.attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
            self.attribute(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)?,
            cc,
        ))
    }

    /// The facts a first run on a machine should record: SMs, clocks, memory, L2, shared memory,
    /// driver. Peak bandwidth is computed from the memory clock and bus width (double data rate).
    pub fn facts(&self) -> Result<String> {
        use sys::CUdevice_attribute as A;
        let sms = self.attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let sm_khz = self.attribute(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)?;
        let mem_khz = self.attribute(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)?;
        let bus_bits = self.attribute(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH)?;
        let smem_optin = self.attribute(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        // SAFETY: dev is a valid device handle.
        let total = unsafe { result::device::total_mem(self.dev)? };
        let mut driver = 0i32;
        // SAFETY: writes one int.
        unsafe { sys::cuDriverGetVersion(&mut driver) }.result()?;
        let peak_gbs = 2.0 * mem_khz as f64 * 1e3 * (bus_bits as f64 / 8.0) / 1e9;
        Ok(format!(
            "{}: {sms} SMs at up to {} MHz; {:.1} GiB memory, {bus_bits}-bit bus at {} MHz ({peak_gbs:.0} GB/s peak); \
             {} MiB L2; {} KiB shared memory per block (opt-in); driver API {}.{}",
            self.name,
            sm_khz / 1000,
            total as f64 / (1u64 << 30) as f64,
            mem_khz / 1000,
            self.l2_bytes()? >> 20,
            smem_optin >> 10,
            driver / 1000,
            driver % 1000 / 10
        ))
    }

    pub(super) fn make_current(&self) -> Result<()> {
        // SAFETY: ctx is the retained primary context, alive as long as self.
        unsafe { result::ctx::set_current(self.ctx)? };
        Ok(())
    }

    fn function(&self, kernel: &str) -> Result<sys::CUfunction> {
        let mut map = self.functions.lock().unwrap();
        if let Some(&f) = map.get(kernel) {
            return Ok(f);
        }
        let module = if SELFTEST_KERNELS.contains(&kernel) { self.selftest_module()? } else { self.module };
        // SAFETY: module is loaded and alive as long as self.
        let f = unsafe { result::module::get_function(module, CString::new(kernel)?) }
            .map_err(|e| anyhow!("no kernel named {kernel:?} in the fatbin ({e})"))?;
        map.insert(kernel.to_string(), f);
        Ok(f)
    }

    /// The self-test module, loaded from its own fatbin on first use.
    fn selftest_module(&self) -> Result<sys::CUmodule> {
        let mut slot = self.selftest.lock().unwrap();
        if let Some(m) = *slot {
            return Ok(m);
        }
        if SELFTEST_FATBIN.is_empty() {
            bail!("this binary was built without the self-test fatbin");
        }
        // Aligned for the driver, as in `open`.
        let mut image = vec![0u64; SELFTEST_FATBIN.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut image)[..SELFTEST_FATBIN.len()].copy_from_slice(SELFTEST_FATBIN);
        // SAFETY: image holds the self-test fatbin nvcc produced at build time.
        let m = unsafe { result::module::load_data(image.as_ptr() as *const c_void) }
            .context("loading the self-test kernels")?;
        *slot = Some(m);
        Ok(m)
    }

    pub fn launch(&self, kernel: &str, cfg: &LaunchConfig, params: &mut [*mut c_void]) -> Result<()> {
        self.make_current()?;
        let f = self.function(kernel)?;
        let [gx, gy, gz] = cfg.grid;
        let [bx, by, bz] = cfg.block;
        // SAFETY: params points at argument values that live until this call returns (the driver
        // copies them at launch); their count and types follow the kernel's signature, which the
        // emulator checks for every launcher in the test suite.
        unsafe { result::launch_kernel(f, (gx, gy, gz), (bx, by, bz), cfg.shared_bytes, self.stream, params) }
            .map_err(|e| anyhow!("launching {kernel}: {e}"))?;
        *self.last_launch.lock().unwrap() = launch_description(kernel, cfg);
        Ok(())
    }

    /// After a launch under `DDPM_CUDA_SYNC=1`: waits for it and names it if it failed.
    pub fn check_launch(&self, kernel: &str, cfg: &LaunchConfig) -> Result<()> {
        self.make_current()?;
        // SAFETY: stream belongs to this context.
        unsafe { result::stream::synchronize(self.stream) }
            .map_err(|e| anyhow!("kernel {} failed: {e}", launch_description(kernel, cfg)))
    }

    pub fn set_max_dynamic_shared(&self, kernel: &str, bytes: u32) -> Result<()> {
        self.make_current()?;
        let f = self.function(kernel)?;
        // SAFETY: f is a function of the loaded module.
        unsafe {
            result::function::set_function_attribute(
                f,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes as i32,
            )?
        };
        Ok(())
    }

    pub fn raw_alloc(&self, bytes: usize) -> Result<u64> {
        self.make_current()?;
        // SAFETY: plain device allocation in the current context.
        unsafe { result::malloc_sync(bytes) }.map_err(|e| anyhow!("cuMemAlloc of {bytes} bytes: {e}"))
    }

    pub fn raw_free(&self, ptr: u64) {
        if self.make_current().is_ok() {
            // The pool synchronises the stream before it frees (Pool::trim), so no queued work
            // still uses the block.
            // SAFETY: ptr came from raw_alloc and the pool frees it once.
            let _ = unsafe { result::free_sync(ptr) };
        }
    }

    pub fn htod(&self, src: &[u8], dst: u64) -> Result<()> {
        // SAFETY: the synchronise below keeps src borrowed until the copy has completed.
        unsafe { self.htod_queued(src, dst)? };
        self.synchronize()
    }

    /// Queues a copy of `src` to `dst`, a live allocation of at least src.len() bytes, on the
    /// stream (after the work queued before it) and returns without waiting.
    ///
    /// # Safety
    /// `src` must stay alive and unchanged until the stream has been synchronised.
    pub unsafe fn htod_queued(&self, src: &[u8], dst: u64) -> Result<()> {
        self.make_current()?;
        // SAFETY: dst as stated; src's lifetime is the caller's promise.
        unsafe { result::memcpy_htod_async(dst, src, self.stream)? };
        Ok(())
    }

    pub fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        self.make_current()?;
        // SAFETY: src is a live allocation of at least dst.len() bytes; synchronised before return.
        unsafe { result::memcpy_dtoh_async(dst, src, self.stream)? };
        self.synchronize()
    }

    pub fn synchronize(&self) -> Result<()> {
        self.make_current()?;
        // SAFETY: stream belongs to this context.
        unsafe { result::stream::synchronize(self.stream) }.map_err(|e| {
            let last = self.last_launch.lock().unwrap();
            anyhow!(
                "CUDA error in queued work: {e} (the last kernel queued was {last}; rerun with DDPM_CUDA_SYNC=1 to name the kernel that failed)"
            )
        })
    }

    /// Overwrites `bytes` at `ptr` on the stream (the L2 flush of src/gpu/timing.rs).
    pub fn memset_async(&self, ptr: u64, bytes: usize) -> Result<()> {
        self.make_current()?;
        // SAFETY: ptr is a live allocation of at least `bytes` bytes, used on this stream.
        unsafe { result::memset_d8_async(ptr, 0, bytes, self.stream)? };
        Ok(())
    }

    /// This device's stream, its context made current: for a library that queues its own work (NCCL).
    pub(crate) fn current_stream(&self) -> Result<sys::CUstream> {
        self.make_current()?;
        Ok(self.stream)
    }

    pub fn record_event(&self) -> Result<CudaEvent> {
        self.make_current()?;
        let event = result::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)?;
        // SAFETY: event and stream belong to this context.
        unsafe { result::event::record(event, self.stream)? };
        Ok(CudaEvent { event })
    }
}

/// "NAME (grid [..], block [..], N B dynamic shared)": how a failed launch is named.
pub(crate) fn launch_description(kernel: &str, cfg: &LaunchConfig) -> String {
    format!("{kernel} (grid {:?}, block {:?}, {} B dynamic shared)", cfg.grid, cfg.block, cfg.shared_bytes)
}

pub struct CudaEvent {
    event: sys::CUevent,
}
// SAFETY: events are plain driver handles, usable from any thread with the context current.
unsafe impl Send for CudaEvent {}
unsafe impl Sync for CudaEvent {}

impl CudaEvent {
    pub fn elapsed_ms(&self, later: &CudaEvent) -> Result<f32> {
        // SAFETY: both events were recorded; synchronising on `later` makes the time available.
        unsafe {
            result::event::synchronize(later.event)?;
            Ok(result::event::elapsed(self.event, later.event)?)
        }
    }
}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        // SAFETY: the event is not used after drop.
        let _ = unsafe { result::event::destroy(self.event) };
    }
}
