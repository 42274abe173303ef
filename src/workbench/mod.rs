//! The kernel workbench, in the spirit of llm.c's dev/cuda: each op registers its kernel variants
//! in a static table (one line per variant, in the op's module here), and `ddpm kernels --check
//! OP` / `--bench OP` run every variant of it against the CPU reference (src/cpu) or side by side.
//! docs/kernels.md says how to add a variant.

pub mod conv_fwd;

use crate::gpu::Gpu;
use anyhow::{Result, bail};

/// One op the workbench knows.
pub struct Op {
    pub name: &'static str,
    pub about: &'static str,
    /// The `--shape` syntax (for --help and errors).
    pub shape_syntax: &'static str,
    pub variant_names: fn() -> Vec<&'static str>,
    /// Every variant on every check shape, inputs drawn from `seed`.
    pub check: fn(&Gpu, &CheckOptions) -> Result<Vec<CheckLine>>,
    /// Every variant on the given shapes (the op's defaults for this device when empty).
    pub bench: fn(&Gpu, &[String], &BenchOptions) -> Result<Vec<BenchRow>>,
}

/// Every op of the workbench.
pub static OPS: &[&Op] = &[&conv_fwd::OP];

/// The op named `name`, or a one-line error that lists the known ones.
pub fn find(name: &str) -> Result<&'static Op> {
    match OPS.iter().copied().find(|op| op.name == name) {
        Some(op) => Ok(op),
        None => {
            let known: Vec<&str> = OPS.iter().map(|op| op.name).collect();
            bail!("unknown workbench op {name:?}; known ops: {}", known.join(", "))
        }
    }
}

pub struct CheckOptions {
    pub seed: u64,
    /// `DDPM_WORKBENCH_PLANT=VARIANT`: one output element of that variant is perturbed after it
    /// ran, so the check must fail (it proves the comparison bites).
    pub plant: Option<String>,
}

impl CheckOptions {
    /// The plant named by DDPM_WORKBENCH_PLANT, if set and not empty.
    pub fn plant_from_env() -> Option<String> {
        std::env::var("DDPM_WORKBENCH_PLANT").ok().filter(|v| !v.is_empty())
    }
}

/// One variant on one shape: `Ok(max abs err)` or the mismatch report.
pub struct CheckLine {
    pub op: &'static str,
    pub variant: &'static str,
    pub shape: String,
    pub outcome: Result<f32, String>,
}

impl CheckLine {
    pub fn passed(&self) -> bool {
        self.outcome.is_ok()
    }
}

impl std::fmt::Display for CheckLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head = format!("{} {:<12} {:<26}", self.op, self.variant, self.shape);
        match &self.outcome {
            Ok(err) => write!(f, "PASS {head} max abs err {err:.2e}"),
            Err(m) => write!(f, "FAIL {head} {m}"),
        }
    }
}

pub struct BenchOptions {
    pub seed: u64,
    /// Timed runs per variant and shape (the median is reported); one untimed run comes first.
    pub iters: usize,
}

/// One variant on one shape: the median time of one launch and the FLOPs it does.
pub struct BenchRow {
    pub variant: &'static str,
    pub shape: String,
    pub seconds: f64,
    pub flops: f64,
}

/// The table `--bench` prints: one row per variant and shape, the ratio to the first variant
/// (the registry's first, the production kernel) on the same shape.
pub fn bench_table(op: &Op, gpu: &Gpu, iters: usize, rows: &[BenchRow]) -> String {
    let mut s = if gpu.is_emulator() {
        format!(
            "{} on the {}: EMULATOR TIMES (the kernels run as C++ on the CPU), not GPU times; median of {iters} runs\n",
            op.name,
            gpu.name()
        )
    } else {
        format!("{} on {}: device time, L2 flushed before each run; median of {iters} runs\n", op.name, gpu.name())
    };
    let first = rows.first().map_or("", |r| r.variant);
    s.push_str(&format!(
        "{:<12} {:<26} {:>12} {:>10} {:>14}\n",
        "variant",
        "shape",
        "time (ms)",
        "GFLOP/s",
        format!("vs {first}")
    ));
    for r in rows {
        let base = rows.iter().find(|b| b.shape == r.shape && b.variant == first).map_or(r.seconds, |b| b.seconds);
        s.push_str(&format!(
            "{:<12} {:<26} {:>12.4} {:>10.2} {:>13.2}x\n",
            r.variant,
            r.shape,
            r.seconds * 1e3,
            r.flops / r.seconds / 1e9,
            base / r.seconds
        ));
    }
    s.push_str(&format!("(vs {first}: its time over this variant's; above 1 is faster)\n"));
    s
}

/// The median of `v` (sorted in place); 0 for none.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}
