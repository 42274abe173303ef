//! nvcc: finding it, compiling all kernels into one fatbin, and keeping ptxas's resource usage.

use crate::kernel_sources::KernelFile;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// GPU targets: machine code for Ampere (sm_80) and Hopper (sm_90a: the H100/H200 the benches run
/// on; every kernel today is f32 SIMT code), and compute_80 PTX so newer GPUs can JIT. The `-arch=sm_90a` shorthand misbehaves on nvcc 13.0.
const GENCODE: &[&str] = &[
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90a,code=sm_90a",
    "-gencode=arch=compute_80,code=compute_80",
];

pub struct Toolkit {
    pub nvcc: PathBuf,
    pub include_dir: PathBuf,
    pub version: String,
}

/// Looks for nvcc in $NVCC, $CUDA_HOME/bin (and $CUDA_PATH), the project's .cuda/bin, then PATH.
pub fn find(root: &Path) -> Option<Toolkit> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(p) = std::env::var("NVCC") {
        candidates.push(p.into());
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(home) = std::env::var(var) {
            candidates.push(Path::new(&home).join("bin/nvcc"));
        }
    }
    candidates.push(root.join(".cuda/bin/nvcc"));
    if let Ok(path) = std::env::var("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nvcc")));
    }
    let nvcc = candidates.into_iter().find(|p| p.is_file())?;
    let out = Command::new(&nvcc).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.lines().find(|l| l.contains("release")).unwrap_or("unknown").trim().to_string();
    let bin = std::fs::canonicalize(&nvcc).unwrap_or(nvcc.clone());
    let include_dir = bin.parent().and_then(Path::parent).map(|p| p.join("include")).unwrap();
    Some(Toolkit { nvcc, include_dir, version })
}

pub struct GpuBuild {
    child: Child,
    out_dir: PathBuf,
    name: String,
}

/// Starts nvcc on one translation unit that includes every file of `sources`, so `{name}.fatbin` is
/// a single module; it runs while the host compiler builds the emulator.
pub fn spawn(tk: &Toolkit, sources: &[KernelFile], out: &Path, name: &str) -> GpuBuild {
    let unit = out.join(format!("all_{name}.cu"));
    let body: String = sources.iter().map(|f| format!("#include \"{}\"\n", f.path.display())).collect();
    std::fs::write(&unit, body).unwrap();
    let child = Command::new(&tk.nvcc)
        .args(["-fatbin", "-O3", "-std=c++17", "--threads", "0", "-Xptxas", "-v"])
        .args(GENCODE)
        .arg("-o")
        .arg(out.join(format!("{name}.fatbin")))
        .arg(&unit)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tk.nvcc.display()));
    GpuBuild { child, out_dir: out.to_path_buf(), name: name.to_string() }
}

#[derive(Default, Clone)]
pub struct Resources {
    pub kernel: String,
    pub arch: String,
    pub registers: u32,
    pub shared_bytes: u32,
    pub stack_bytes: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

impl GpuBuild {
    pub fn wait(self) -> Vec<Resources> {
        let out = self.child.wait_with_output().unwrap();
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        std::fs::write(self.out_dir.join(format!("ptxas_{}.log", self.name)), &log).unwrap();
        if !out.status.success() {
            panic!("nvcc failed to compile the {} fatbin:\n{log}", self.name);
        }
        parse_ptxas(&log)
    }
}

/// Parses `-Xptxas -v` output: an "entry function 'k' for 'sm_XX'" line, then the stack/spill
/// line and the "Used N registers ... smem" line for that kernel.
fn parse_ptxas(log: &str) -> Vec<Resources> {
    let mut all = Vec::new();
    let mut cur: Option<Resources> = None;
    let number_before = |line: &str, unit: &str| -> u32 {
        let at = match line.find(unit) {
            Some(a) => a,
            None => return 0,
        };
        line[..at].trim_end().rsplit([' ', ',']).next().and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            if let Some(done) = cur.take() {
                all.push(done);
            }
            let kernel = rest.split('\'').next().unwrap().to_string();
            let arch = rest.split("for '").nth(1).and_then(|a| a.split('\'').next()).unwrap_or("").to_string();
            cur = Some(Resources { kernel, arch, ..Default::default() });
        } else if let Some(r) = cur.as_mut() {
            if line.contains("bytes stack frame") {
                r.stack_bytes = number_before(line, "bytes stack frame");
                r.spill_stores = number_before(line, "bytes spill stores");
                r.spill_loads = number_before(line, "bytes spill loads");
            } else if line.contains("Used") && line.contains("registers") {
                r.registers = number_before(line, "registers");
                r.shared_bytes = number_before(line, "bytes smem");
            }
        }
    }
    all.extend(cur);
    all
}

/// Writes `gpu_kernels.rs`: the fatbin (empty without nvcc), the nvcc version, the table, and the
/// self-test kernels with their own fatbin (a separate module, loaded only when one is launched).
pub fn write_rust(out: &Path, tk: Option<&Toolkit>, resources: &[Resources], selftest_kernels: &[String]) {
    let fatbin = out.join("kernels.fatbin");
    if tk.is_none() {
        std::fs::write(&fatbin, []).unwrap();
    }
    let mut rs = String::new();
    rs.push_str(&format!("pub static FATBIN: &[u8] = include_bytes!({:?});\n", fatbin.display().to_string()));
    rs.push_str(&format!("pub const NVCC_VERSION: Option<&str> = {:?};\n", tk.map(|t| t.version.clone())));
    rs.push_str("pub static KERNEL_RESOURCES: &[KernelResources] = &[\n");
    for r in resources {
        rs.push_str(&format!(
            "    KernelResources {{ kernel: {:?}, arch: {:?}, registers: {}, shared_bytes: {}, stack_bytes: {}, spill_stores: {}, spill_loads: {} }},\n",
            r.kernel, r.arch, r.registers, r.shared_bytes, r.stack_bytes, r.spill_stores, r.spill_loads
        ));
    }
    rs.push_str("];\n");
    let selftest = out.join("selftest.fatbin");
    if tk.is_none() {
        std::fs::write(&selftest, []).unwrap();
    }
    rs.push_str(&format!(
        "pub static SELFTEST_FATBIN: &[u8] = include_bytes!({:?});\n",
        selftest.display().to_string()
    ));
    rs.push_str(&format!("pub static SELFTEST_KERNELS: &[&str] = &{selftest_kernels:?};\n"));
    std::fs::write(out.join("gpu_kernels.rs"), rs).unwrap();
}
