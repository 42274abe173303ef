//! The `ddpm` command line.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ddpm", version, about = "DDPM diffusion models on hand-written CUDA kernels")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a small UNet on the built-in shapes, sample a grid (samples.png) and print its
    /// quality score: the whole engine in one command.
    Demo(ddpm::cli::demo::DemoArgs),
    /// Print each GPU kernel's registers, shared memory, stack and spills per architecture, as
    /// reported by ptxas when this binary was built; with --check/--bench OP, the kernel
    /// workbench: every variant of an op checked against the CPU reference or timed side by side.
    Kernels(ddpm::cli::kernels::KernelsArgs),
    /// Show the devices this binary can run on: the CUDA device (if any), the CPU emulator, and
    /// the CPU fast path's SIMD kernels (DDPM_SIMD=portable|avx2|avx512 caps them for A/B runs).
    Devices,
    /// The loss and every parameter gradient of a model for a given batch x0, timesteps and noise
    /// (NumPy files in PyTorch layouts), written as safetensors under diffusers' names.
    Grads(ddpm::cli::grads::GradsArgs),
    /// Train a DDPM UNet (built-in shapes, MNIST/Fashion-MNIST IDX, CIFAR-10 or an image folder);
    /// the run directory is a diffusers pipeline folder plus the state to --resume.
    Train(ddpm::cli::train::TrainArgs),
    /// Generate images from a trained model (run directory or diffusers folder) with DDPM or DDIM;
    /// `--rng torch` reproduces diffusers' pipelines image for image.
    Sample(ddpm::cli::sample::SampleArgs),
    /// Time the training step or the sampling step of a preset on a device (median, FLOP/s);
    /// benches/pytorch_reference.py prints the same for PyTorch.
    Bench(ddpm::cli::bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    // A bad DDPM_SIMD, DDPM_WINOGRAD or DDPM_AMX (the CPU fast path's A/B switches) stops every
    // command at once.
    if let Err(e) = ddpm::fast::check_env() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    // Only training (and its bench) is data parallel; N copies of the rest would write the same
    // files at once.
    let one_process = matches!(cli.command, Command::Demo(_) | Command::Grads(_) | Command::Sample(_));
    let ranks = ddpm::dist::launched_ranks();
    if one_process && ranks > 1 {
        eprintln!(
            "error: only `ddpm train` and `ddpm bench` run as ranks; start this command without mpirun/srun (it was one of {ranks})"
        );
        std::process::exit(1);
    }
    let result = match cli.command {
        Command::Demo(args) => ddpm::cli::demo::run(args),
        Command::Kernels(args) => ddpm::cli::kernels::run(args),
        Command::Devices => devices(),
        Command::Grads(args) => ddpm::cli::grads::run(args),
        Command::Train(args) => ddpm::cli::train::run(args),
        Command::Sample(args) => ddpm::cli::sample::run(args),
        Command::Bench(args) => ddpm::cli::bench::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn devices() -> anyhow::Result<()> {
    match ddpm::gpu::Gpu::cuda(0) {
        Ok(gpu) => println!(
            "cuda:0     {}",
            gpu.facts().unwrap_or_else(|e| format!("{} (device facts unavailable: {e:#})", gpu.name()))
        ),
        Err(e) => println!("cuda       unavailable: {e:#}"),
    }
    match ddpm::gpu::Gpu::emulator() {
        Ok(gpu) => println!("emulator   {}", gpu.name()),
        Err(e) => println!("emulator   unavailable: {e:#}"),
    }
    println!("cpu        fast path: {}", ddpm::fast::simd::SimdLevel::describe());
    println!("cpu        --precision bf16: {}", ddpm::fast::bf16::path_name());
    Ok(())
}
