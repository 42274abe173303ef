//! The CPU emulator's Rust side: host memory standing in for device memory, a registry of live
//! buffers (to reject kernel arguments that point outside them), and the launch loop that spreads
//! a grid's blocks over rayon's worker threads. Each block runs in src/emu/runtime.cpp.

use super::{KernelArgs, LaunchConfig};
use anyhow::{Result, anyhow, bail};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, c_char, c_void};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// One entry of a generated kernel table (mirrors `ddpm_emu_kernel` in src/emu/registry.h).
#[repr(C)]
pub struct EmuKernelDesc {
    name: *const c_char,
    entry: *const c_void,
    n_params: u32,
    param_sizes: *const u32,
    param_is_pointer: *const u8,
}
// SAFETY: the descriptors are immutable statics of the C++ units.
unsafe impl Sync for EmuKernelDesc {}

#[allow(dead_code)]
mod tables {
    use super::EmuKernelDesc;
    include!(concat!(env!("OUT_DIR"), "/emu_kernels.rs"));
}

/// Mirrors `ddpm_emu_launch` in src/emu/runtime.cpp.
#[repr(C)]
struct RawLaunch {
    kernel: *const EmuKernelDesc,
    args: *mut *mut c_void,
    grid: [u32; 3],
    block: [u32; 3],
    dynamic_shared_bytes: u64,
    find_live: FindLiveFn,
    find_live_ctx: *const c_void,
    reverse_fibers: u32,
}

type FindLiveFn = unsafe extern "C" fn(ctx: *const c_void, addr: u64, start: *mut u64, len: *mut u64) -> i32;

/// cp.async's source check (src/emu/async_copy.cpp): the live buffer holding `addr`, if any.
///
/// # Safety
/// `ctx` is the launching `Emulator`, alive for the launch; `start` and `len` are writable.
unsafe extern "C" fn find_live(ctx: *const c_void, addr: u64, start: *mut u64, len: *mut u64) -> i32 {
    // SAFETY: per the contract above.
    let emu = unsafe { &*(ctx as *const Emulator) };
    match emu.live_buffer_at(addr) {
        Some((s, l)) => {
            // SAFETY: per the contract above.
            unsafe { (*start, *len) = (s, l as u64) };
            1
        }
        None => 0,
    }
}

/// The order in which the emulator runs a block's threads between barriers. `Reverse` runs the
/// last warp first, so a warp that reads shared memory another warp wrote without a
/// `__syncthreads` in between reads it before it is written (NaN, with cp.async's poison) at least
/// once. The default is `Reverse` when the environment sets `DDPM_EMU_REVERSE=1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FiberOrder {
    Forward,
    Reverse,
}
// SAFETY: blocks only read the launch description and the argument values, which outlive the
// launch; the memory the kernel writes is shared exactly as device memory is between GPU blocks.
unsafe impl Sync for RawLaunch {}

#[cfg(ddpm_emulator)]
unsafe extern "C" {
    fn ddpm_emu_run_block(l: *const RawLaunch, bx: u32, by: u32, bz: u32, err: *mut c_char, err_len: usize) -> i32;
}
#[cfg(not(ddpm_emulator))]
unsafe fn ddpm_emu_run_block(_: *const RawLaunch, _: u32, _: u32, _: u32, _: *mut c_char, _: usize) -> i32 {
    unreachable!("Emulator::new refuses to open without the emulator")
}

const ALIGN: usize = 256; // as cudaMalloc: vector loads of any width are aligned

pub struct Emulator {
    kernels: HashMap<&'static str, &'static EmuKernelDesc>,
    /// Buffers handed out by the pool: start address -> length in bytes.
    live: Mutex<BTreeMap<u64, usize>>,
    /// Raw allocations: start address -> layout size.
    raw: Mutex<HashMap<u64, usize>>,
    /// FiberOrder::Reverse when set.
    reverse: AtomicBool,
}

impl Emulator {
    pub fn new() -> Result<Self> {
        if !tables::EMULATOR_BUILT {
            bail!(
                "this binary holds no emulated kernels: it was built without the CUDA toolchain. \
                 Run scripts/install-cuda-toolchain and rebuild."
            );
        }
        let mut kernels = HashMap::new();
        for table in tables::emu_kernel_tables() {
            for desc in table.iter().take_while(|d| !d.name.is_null()) {
                // SAFETY: names are NUL-terminated string literals from the generated C++ tables.
                let name = unsafe { CStr::from_ptr(desc.name) }.to_str().expect("kernel names are ASCII");
                kernels.insert(name, desc);
            }
        }
        let reverse = std::env::var_os("DDPM_EMU_REVERSE").is_some_and(|v| v == "1");
        Ok(Emulator { kernels, live: Mutex::default(), raw: Mutex::default(), reverse: AtomicBool::new(reverse) })
    }

    pub fn name(&self) -> String {
        format!("CUDA emulator ({} worker threads)", rayon::current_num_threads())
    }

    /// Names of every kernel the emulator can run.
    pub fn kernel_names(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.kernels.keys().copied().collect();
        v.sort();
        v
    }

    pub fn raw_alloc(&self, bytes: usize) -> Result<u64> {
        let layout = std::alloc::Layout::from_size_align(bytes, ALIGN)?;
        // SAFETY: layout has non-zero size (the pool's smallest class is 256 bytes).
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            bail!("emulator: out of host memory allocating {bytes} bytes");
        }
        self.raw.lock().unwrap().insert(p as u64, bytes);
        Ok(p as u64)
    }

    pub fn raw_free(&self, ptr: u64) {
        let bytes = self.raw.lock().unwrap().remove(&ptr).expect("freeing an unknown emulator allocation");
        // SAFETY: ptr came from raw_alloc with this exact layout.
        unsafe { std::alloc::dealloc(ptr as *mut u8, std::alloc::Layout::from_size_align(bytes, ALIGN).unwrap()) };
    }

    pub fn register(&self, ptr: u64, bytes: usize) {
        self.live.lock().unwrap().insert(ptr, bytes);
    }
    pub fn unregister(&self, ptr: u64) {
        self.live.lock().unwrap().remove(&ptr);
    }

    pub fn set_fiber_order(&self, order: FiberOrder) {
        self.reverse.store(order == FiberOrder::Reverse, Ordering::Relaxed);
    }

    /// The live buffer (start, length) that holds address `p`.
    fn live_buffer_at(&self, p: u64) -> Option<(u64, usize)> {
        let live = self.live.lock().unwrap();
        live.range(..=p).next_back().map(|(&s, &l)| (s, l)).filter(|&(s, l)| p < s + l as u64)
    }

    fn points_into_live_buffer(&self, p: u64) -> bool {
        self.live_buffer_at(p).is_some()
    }

    /// Checks the arguments against the kernel's signature: count, byte sizes, and that every
    /// pointer is null or points into a live buffer.
    fn check_args(&self, kernel: &str, desc: &EmuKernelDesc, args: &KernelArgs) -> Result<()> {
        let n = desc.n_params as usize;
        if args.len() != n {
            bail!("{kernel}: launched with {} arguments, the kernel takes {n}", args.len());
        }
        // SAFETY: both arrays hold n_params (+1) elements, per the generated table.
        let (sizes, is_ptr) = unsafe {
            (std::slice::from_raw_parts(desc.param_sizes, n), std::slice::from_raw_parts(desc.param_is_pointer, n))
        };
        for i in 0..n {
            if args.size(i) != sizes[i] || args.is_pointer(i) != (is_ptr[i] != 0) {
                bail!(
                    "{kernel}: argument {i} is a {}-byte {}, the kernel expects a {}-byte {}",
                    args.size(i),
                    if args.is_pointer(i) { "pointer" } else { "value" },
                    sizes[i],
                    if is_ptr[i] != 0 { "pointer" } else { "value" }
                );
            }
            let p = args.value(i);
            if args.is_pointer(i) && p != 0 && !self.points_into_live_buffer(p) {
                bail!(
                    "{kernel}: argument {i} is the pointer {p:#x}, which is not inside any live buffer of this device"
                );
            }
        }
        Ok(())
    }

    pub fn launch(
        &self,
        kernel: &str,
        cfg: &LaunchConfig,
        params: &mut [*mut c_void],
        args: &KernelArgs,
    ) -> Result<()> {
        let desc = *self.kernels.get(kernel).ok_or_else(|| anyhow!("no kernel named {kernel:?} in the emulator"))?;
        self.check_args(kernel, desc, args)?;
        let launch = RawLaunch {
            kernel: desc,
            args: params.as_mut_ptr(),
            grid: cfg.grid,
            block: cfg.block,
            dynamic_shared_bytes: cfg.shared_bytes as u64,
            find_live,
            find_live_ctx: self as *const Emulator as *const c_void,
            reverse_fibers: self.reverse.load(Ordering::Relaxed) as u32,
        };
        let [gx, gy, gz] = cfg.grid.map(|d| d as usize);
        let first_error: Mutex<Option<(usize, String)>> = Mutex::new(None);
        let failed = AtomicBool::new(false);
        use rayon::prelude::*;
        (0..gx * gy * gz).into_par_iter().for_each(|b| {
            if failed.load(Ordering::Relaxed) {
                return;
            }
            let (bx, by, bz) = (b % gx, (b / gx) % gy, b / (gx * gy));
            let mut err = [0 as c_char; 1024];
            // SAFETY: `launch` points at a kernel entry from the generated tables and at argument
            // values that outlive this call; the arguments were checked against its signature.
            let rc =
                unsafe { ddpm_emu_run_block(&launch, bx as u32, by as u32, bz as u32, err.as_mut_ptr(), err.len()) };
            if rc != 0 {
                failed.store(true, Ordering::Relaxed);
                // SAFETY: the runtime NUL-terminates the message within the buffer.
                let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
                let mut slot = first_error.lock().unwrap();
                if slot.as_ref().is_none_or(|(blk, _)| b < *blk) {
                    *slot = Some((b, msg));
                }
            }
        });
        if let Some((b, msg)) = first_error.into_inner().unwrap() {
            bail!("kernel {kernel} failed in block ({}, {}, {}): {msg}", b % gx, (b / gx) % gy, b / (gx * gy));
        }
        Ok(())
    }
}
