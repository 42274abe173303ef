//! The host build of the kernels for the CUDA emulator: one C++ translation unit per kernel file,
//! the file compiled as-is after `src/emu/cuda_host.h`, followed by a generated table that maps
//! each kernel's name to an entry point taking cuLaunchKernel's `void**` argument array.

use crate::kernel_sources::KernelFile;
use std::fmt::Write;
use std::path::Path;

/// Compiles the emulator runtime and every kernel file; returns the files whose tables exist.
pub fn build<'a>(root: &Path, cuda_include: &Path, sources: &'a [KernelFile], out: &Path) -> Vec<&'a KernelFile> {
    let emu = root.join("src/emu");
    let mut cc = cc::Build::new();
    cc.cpp(true)
        .std("c++17")
        .include(&emu)
        .include(root.join("kernels"))
        .include(cuda_include)
        .opt_level(2)
        // Fibers of one block share the worker's thread-locals; the library only ever links into
        // executables, so the cheap initial-exec TLS model is valid.
        .flag("-ftls-model=initial-exec")
        .flag("-fno-strict-aliasing")
        // Never fuse a*b+c behind the kernel's back: kernels that must match a reference bit for
        // bit spell their rounding with __fmul_rn/__fadd_rn/__fmaf_rn, which nvcc honours too.
        .flag("-ffp-contract=off")
        .warnings(false)
        .file(emu.join("runtime.cpp"))
        .file(emu.join("fiber.cpp"))
        .file(emu.join("warp.cpp"))
        .file(emu.join("async_copy.cpp"))
        .file(emu.join("mma_model.cpp"))
        .file(emu.join("warp_matrix.cpp"));
    // DDPM_EMU_ASAN=1: the emulator and the kernels built with AddressSanitizer (malloc, and so the
    // Rust side's allocations too, then go through ASan's allocator): finds kernels that read or
    // write outside their buffers, and heap misuse anywhere. fiber.cpp tells ASan about its fiber
    // stacks. Slow; a debugging aid, never the default.
    // DDPM_EMU_CONTRACT=1: the kernels built the way nvcc builds them by default (--fmad=true),
    // with a plain a*b+c fused into an FMA where the compiler sees fit; the _rn intrinsics stay
    // unfused (src/emu/cuda_host.h), as nvcc guarantees. A kernel whose bits depend on a product
    // rounded alone then fails here too. gcc's choices of what to fuse are not nvcc's: a check.
    println!("cargo::rerun-if-env-changed=DDPM_EMU_CONTRACT");
    if std::env::var_os("DDPM_EMU_CONTRACT").is_some_and(|v| v != "0") {
        cc.flag("-mfma").flag("-ffp-contract=fast");
    }
    println!("cargo::rerun-if-env-changed=DDPM_EMU_ASAN");
    if std::env::var_os("DDPM_EMU_ASAN").is_some_and(|v| v != "0") {
        cc.flag("-fsanitize=address").flag("-fno-omit-frame-pointer");
        // rustc links with -nodefaultlibs, so the compiler driver's -fsanitize=address adds no
        // runtime: name it (run with ASAN_OPTIONS=verify_asan_link_order=0, or LD_PRELOAD it).
        println!("cargo::rustc-link-arg=-Wl,--push-state,--no-as-needed,-lasan,--pop-state");
    }
    for f in sources {
        let unit = out.join(format!("emu_{}.cpp", f.stem));
        let mut body = String::new();
        writeln!(body, "#include \"cuda_host.h\"").unwrap();
        writeln!(body, "#include \"{}\"", f.path.display()).unwrap();
        writeln!(body, "#include \"registry.h\"").unwrap();
        writeln!(body, "extern \"C\" const ddpm_emu_kernel ddpm_emu_kernels_{}[] = {{", f.stem).unwrap();
        for k in &f.kernels {
            writeln!(body, "  DDPM_EMU_KERNEL({k}),").unwrap();
        }
        writeln!(body, "  ddpm_emu_kernel{{nullptr, nullptr, 0, nullptr, nullptr}}\n}};").unwrap();
        std::fs::write(&unit, body).unwrap();
        cc.file(unit);
    }
    cc.compile("ddpm_emu");
    sources.iter().collect()
}

/// Writes `emu_kernels.rs`: the extern declarations of every table and a list of them.
pub fn write_rust(out: &Path, files: &[&KernelFile]) {
    let mut rs = String::from("unsafe extern \"C\" {\n");
    for f in files {
        writeln!(rs, "    static ddpm_emu_kernels_{}: [EmuKernelDesc; {}];", f.stem, f.kernels.len() + 1).unwrap();
    }
    rs.push_str("}\n/// Every emulated kernel table (each ends with a null entry).\n");
    rs.push_str("#[allow(unused_unsafe)]\npub fn emu_kernel_tables() -> Vec<&'static [EmuKernelDesc]> {\n    // SAFETY: the tables are immutable statics defined by the generated C++ units.\n    unsafe { vec![");
    for f in files {
        write!(rs, "&ddpm_emu_kernels_{}[..], ", f.stem).unwrap();
    }
    rs.push_str("] }\n}\n");
    rs.push_str(&format!("pub const EMULATOR_BUILT: bool = {};\n", !files.is_empty()));
    std::fs::write(out.join("emu_kernels.rs"), rs).unwrap();
}
