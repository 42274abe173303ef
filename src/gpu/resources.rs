//! Per-kernel resource usage reported by ptxas at build time (`-Xptxas -v`), and the embedded
//! fatbin. Empty when the crate was built without nvcc.

/// Registers, shared memory, stack and spills of one kernel on one architecture.
#[derive(Clone, Copy, Debug)]
pub struct KernelResources {
    pub kernel: &'static str,
    pub arch: &'static str,
    pub registers: u32,
    pub shared_bytes: u32,
    pub stack_bytes: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

include!(concat!(env!("OUT_DIR"), "/gpu_kernels.rs"));

/// Static shared memory of `kernel` as compiled for sm_90a (0 when unknown).
pub fn static_shared_bytes(kernel: &str) -> u32 {
    KERNEL_RESOURCES.iter().find(|r| r.kernel == kernel && r.arch == "sm_90a").map_or(0, |r| r.shared_bytes)
}

/// The table `ddpm kernels` prints.
pub fn table() -> String {
    let mut s = String::new();
    if KERNEL_RESOURCES.is_empty() {
        s.push_str("this binary holds no GPU kernels: it was built without nvcc.\n");
        s.push_str("Run scripts/install-cuda-toolchain (or set NVCC / CUDA_HOME) and rebuild.\n");
        return s;
    }
    s.push_str(&format!("GPU kernels compiled by nvcc ({})\n", NVCC_VERSION.unwrap_or("unknown version")));
    s.push_str(&format!(
        "{:<32} {:<7} {:>5} {:>10} {:>7} {:>12} {:>11}\n",
        "kernel", "arch", "regs", "smem (B)", "stack", "spill st (B)", "spill ld (B)"
    ));
    let mut rows: Vec<&KernelResources> = KERNEL_RESOURCES.iter().collect();
    rows.sort_by(|a, b| (a.kernel, a.arch).cmp(&(b.kernel, b.arch)));
    for r in rows {
        s.push_str(&format!(
            "{:<32} {:<7} {:>5} {:>10} {:>7} {:>12} {:>11}\n",
            r.kernel, r.arch, r.registers, r.shared_bytes, r.stack_bytes, r.spill_stores, r.spill_loads
        ));
    }
    s
}
