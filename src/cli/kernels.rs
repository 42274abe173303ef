//! `ddpm kernels`: the ptxas resource table, and the kernel workbench (src/workbench):
//! `--check OP` runs every registered variant of OP against the CPU reference, `--bench OP`
//! times them side by side.

use crate::gpu::Gpu;
use crate::workbench::{self, BenchOptions, CheckOptions};
use anyhow::{Result, bail};

const AFTER_HELP: &str = "\
Kernel workbench (docs/kernels.md): each op registers its kernel variants in a static table in
src/workbench/ (the first one is the production kernel); a variant is one kernel file in kernels/
plus one registration line.

  ddpm kernels                         ptxas's registers/shared memory/spills per kernel
  ddpm kernels --sass                  HMMA/LDSM/LDGSTS/LDL/STL counts per kernel and architecture
  ddpm kernels --check conv_fwd        every variant against the CPU reference (src/cpu) on fresh
                                       random inputs, outputs NaN-poisoned, several shapes (odd
                                       ones too); one PASS/FAIL line per variant x shape, exit
                                       status 1 if any fails
  ddpm kernels --bench conv_fwd --shape 1,32,16,16,32,3,1
                                       time every variant side by side: one table of time, GFLOP/s
                                       and the ratio to the first variant (median of --iters runs;
                                       on a GPU each run is timed by device events after an L2
                                       flush; on the emulator the table says the times are
                                       emulator times, not GPU times)

Ops: conv_fwd (conv2d forward; --shape b,cin,h,w,cout,k,stride[,pad], pad P on every side or A+B
for A top/left and B bottom/right, default k/2; without --shape a default set: UNet shapes on a
GPU, small ones on the emulator).

DDPM_WORKBENCH_PLANT=VARIANT perturbs one output element of that variant in --check, which must
then fail: it shows the comparison bites.";

#[derive(clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct KernelsArgs {
    /// Check every variant of OP against the CPU reference (see --help).
    #[arg(long, value_name = "OP", conflicts_with = "bench")]
    check: Option<String>,
    /// Time every variant of OP side by side (see --help).
    #[arg(long, value_name = "OP")]
    bench: Option<String>,
    /// A --bench shape in the op's syntax (conv_fwd: b,cin,h,w,cout,k,stride[,pad]); repeatable.
    #[arg(long, value_name = "SHAPE", requires = "bench")]
    shape: Vec<String>,
    /// Where the workbench runs.
    #[arg(long, value_enum, default_value_t = WorkbenchDevice::Auto)]
    device: WorkbenchDevice,
    /// Seed of the random inputs (default: a fresh one, printed for reruns).
    #[arg(long)]
    seed: Option<u64>,
    /// Timed runs per variant and shape for --bench (default: 20 on a GPU, 3 on the emulator).
    #[arg(long)]
    iters: Option<usize>,
    /// Count HMMA (tensor-core mma), LDSM (ldmatrix), LDGSTS (cp.async) and LDL/STL (local
    /// memory, i.e. spills) per kernel and architecture in this binary's machine code (cuobjdump
    /// from .cuda/sass, installed by scripts/install-cuda-toolchain).
    #[arg(long, conflicts_with_all = ["check", "bench"])]
    sass: bool,
}

pub fn run(args: KernelsArgs) -> Result<()> {
    if args.sass {
        print!("{}", crate::gpu::sass::table(&crate::gpu::sass::counts(crate::gpu::sass::Fatbin::Production)?));
        return Ok(());
    }
    let (op, checking) = match (&args.check, &args.bench) {
        (Some(op), _) => (op, true),
        (None, Some(op)) => (op, false),
        (None, None) => {
            print!("{}", crate::gpu::resources::table());
            return Ok(());
        }
    };
    let op = workbench::find(op)?;
    let gpu = open(args.device)?;
    let seed = args.seed.unwrap_or_else(fresh_seed);
    if checking {
        check(op, &gpu, seed)
    } else {
        let iters = args.iters.unwrap_or(if gpu.is_emulator() { 3 } else { 20 });
        let rows = (op.bench)(&gpu, &args.shape, &BenchOptions { seed, iters })?;
        print!("{}", workbench::bench_table(op, &gpu, iters, &rows));
        Ok(())
    }
}

fn check(op: &workbench::Op, gpu: &Gpu, seed: u64) -> Result<()> {
    println!(
        "{}: {} variants ({}) against the CPU reference on the {}, seed {seed}",
        op.name,
        (op.variant_names)().len(),
        (op.variant_names)().join(", "),
        gpu.name()
    );
    let lines = (op.check)(gpu, &CheckOptions { seed, plant: CheckOptions::plant_from_env() })?;
    for l in &lines {
        println!("{l}");
    }
    let failed = lines.iter().filter(|l| !l.passed()).count();
    if failed > 0 {
        bail!("{} check: {failed} of {} variant x shape runs failed (seed {seed})", op.name, lines.len());
    }
    println!("{}: all {} variant x shape runs passed", op.name, lines.len());
    Ok(())
}

/// `--device` of the workbench: the kernels run on a GPU or on the emulator, never on the CPU path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkbenchDevice {
    /// CUDA device 0 if there is one, else the emulator.
    Auto,
    /// CUDA device 0.
    Cuda,
    /// The CUDA emulator.
    Emulator,
}

fn open(device: WorkbenchDevice) -> Result<Gpu> {
    match device {
        WorkbenchDevice::Cuda => Gpu::cuda(0),
        WorkbenchDevice::Emulator => Gpu::emulator(),
        WorkbenchDevice::Auto => Gpu::cuda(0).or_else(|e| {
            // No GPU is the common case; a GPU that does not open is news.
            if e.downcast_ref::<crate::gpu::NoCudaDevice>().is_none() {
                eprintln!("warning: running on the emulator: the CUDA device did not open: {e:#}");
            }
            Gpu::emulator()
        }),
    }
}

fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
}
