//! Builds every `kernels/*.cu` twice:
//! - with nvcc into one fatbin (sm_80 and sm_90a machine code plus compute_80 PTX) embedded in the
//!   binary, keeping ptxas's per-kernel resource usage for `ddpm kernels`;
//! - with the host C++ compiler into the CUDA emulator (src/emu), so every kernel also runs on a
//!   machine without a GPU.
//!
//! The emulator's self-test kernels (`kernels/selftest/*.cu`, run by tests/emulator.rs and on a GPU
//! by tests/gpu.rs) go into the emulator too, but not into the production fatbin: nvcc compiles them
//! into a fatbin of their own (embedded too, so a binary carried to a GPU machine still has them),
//! which the CUDA runtime loads as a second module only when a self-test kernel is launched
//! (src/gpu/cuda.rs); `ddpm kernels` does not list them.
//!
//! Without nvcc a plain `cargo build` still succeeds (no GPU kernels, one warning); with
//! DDPM_REQUIRE_NVCC=1 a missing nvcc fails the build. A kernel that does not compile always fails.

#[path = "build/emulator.rs"]
mod emulator;
#[path = "build/kernel_sources.rs"]
mod kernel_sources;
#[path = "build/nvcc.rs"]
mod nvcc;

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "DDPM_REQUIRE_NVCC", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=build");
    println!("cargo:rerun-if-changed=src/emu");
    println!("cargo:rerun-if-changed=.cuda/.installed");

    let sources = kernel_sources::collect(&root.join("kernels"));
    let selftests = kernel_sources::collect(&root.join("kernels/selftest"));
    let require = std::env::var("DDPM_REQUIRE_NVCC").is_ok_and(|v| v == "1");
    let toolkit = nvcc::find(&root);

    let gpu_build = match &toolkit {
        Some(tk) => Some((nvcc::spawn(tk, &sources, &out, "kernels"), nvcc::spawn(tk, &selftests, &out, "selftest"))),
        None if require => panic!(
            "DDPM_REQUIRE_NVCC=1 but no nvcc was found (looked at $NVCC, $CUDA_HOME/bin, .cuda/bin, PATH). \
             Run scripts/install-cuda-toolchain."
        ),
        None => {
            println!(
                "cargo:warning=no nvcc found: building without GPU kernels or the CUDA emulator. \
                 Run scripts/install-cuda-toolchain (or set NVCC / CUDA_HOME) and rebuild to get them."
            );
            None
        }
    };

    println!("cargo::rustc-check-cfg=cfg(ddpm_emulator)");
    let selftest_kernels: Vec<String> = selftests.iter().flat_map(|f| f.kernels.clone()).collect();
    let all: Vec<_> = sources.into_iter().chain(selftests).collect();
    let emulated = toolkit.as_ref().map(|tk| emulator::build(&root, &tk.include_dir, &all, &out));
    if emulated.is_some() {
        println!("cargo::rustc-cfg=ddpm_emulator");
    }
    let resources = gpu_build
        .map(|(production, selftest)| {
            selftest.wait();
            production.wait()
        })
        .unwrap_or_default();
    nvcc::write_rust(&out, toolkit.as_ref(), &resources, &selftest_kernels);
    emulator::write_rust(&out, emulated.as_deref().unwrap_or(&[]));
}
