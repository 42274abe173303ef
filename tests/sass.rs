//! Static checks of the kernels' machine code, without a GPU (issue #15, item 5): every
//! tensor-core kernel (a kernels/*.cu file that includes tensor_core.cuh or gemm_bf16.cuh) has HMMA, LDSM and LDGSTS
//! in its sm_80 and sm_90a code and no local memory (LDL/STL: spills); and
//! the tensor-core self-tests show the instructions their PTX asks for, which is what shows the
//! counting itself works. Needs cuobjdump (scripts/install-cuda-toolchain installs it into
//! .cuda/sass); where it is missing the tests say so in one line, except under
//! DDPM_REQUIRE_NVCC=1 (scripts/test), where that is a failure.

use ddpm::gpu::sass::{Fatbin, SassCounts, counts};
use std::path::Path;

const ARCHS: [&str; 2] = ["sm_80", "sm_90a"];

fn listing(which: Fatbin) -> Option<Vec<SassCounts>> {
    if ddpm::gpu::sass::cuobjdump().is_none() && std::env::var("DDPM_REQUIRE_NVCC").as_deref() != Ok("1") {
        println!("skipped: no cuobjdump (run scripts/install-cuda-toolchain)");
        return None;
    }
    Some(counts(which).unwrap())
}

fn find<'a>(all: &'a [SassCounts], kernel: &str, arch: &str) -> &'a SassCounts {
    all.iter()
        .find(|c| c.kernel == kernel && c.arch == arch)
        .unwrap_or_else(|| panic!("{kernel} on {arch} not in the listing"))
}

#[test]
fn tensor_core_self_tests_hold_the_instructions_their_ptx_asks_for() {
    let Some(all) = listing(Fatbin::SelfTest) else { return };
    for arch in ARCHS {
        let tiles = find(&all, "emu_test_mma_tiles", arch);
        assert!(tiles.hmma >= 1 && tiles.ldsm == 0, "{tiles:?}");
        let fed = find(&all, "emu_test_ldmatrix_mma", arch);
        assert!(fed.hmma >= 1 && fed.ldsm >= 2, "{fed:?}");
        let forms = find(&all, "emu_test_ldmatrix", arch);
        assert!(forms.ldsm >= 6 && forms.hmma == 0, "{forms:?}");
    }
}

/// Kernel names (extern "C" __global__) of the kernels/*.cu files that include tensor_core.cuh,
/// directly or through the GEMM core (gemm_bf16.cuh).
fn tensor_core_kernels() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if path.extension().is_some_and(|e| e == "cu")
            && ["tensor_core.cuh", "gemm_bf16.cuh"].iter().any(|h| text.contains(&format!("#include \"{h}\"")))
        {
            for piece in text.split("extern \"C\" __global__").skip(1) {
                let head = piece.split('(').collect::<Vec<_>>();
                // `void __launch_bounds__(...) name(` or `void name(`: the identifier before the
                // parameter list's parenthesis.
                let before = if head[0].contains("__launch_bounds__") {
                    head[1].split(')').nth(1).unwrap_or("")
                } else {
                    head[0]
                };
                let name = before.split_whitespace().last().unwrap_or("").to_string();
                // Split-K's second pass (`*_finish`) is a plain f32 reduction beside its GEMM.
                if !name.ends_with("_finish") {
                    names.push(name);
                }
            }
        }
    }
    names
}

#[test]
fn every_tensor_core_kernel_uses_hmma_ldsm_and_ldgsts_on_both_architectures() {
    let Some(all) = listing(Fatbin::Production) else { return };
    let kernels = tensor_core_kernels();
    for k in &kernels {
        for arch in ARCHS {
            let c = find(&all, k, arch);
            assert!(c.hmma > 0 && c.ldsm > 0 && c.ldgsts > 0, "{k} on {arch}: {c:?}");
            assert!(c.local_loads + c.local_stores == 0, "{k} on {arch} uses local memory (spills): {c:?}");
        }
    }
    println!("{} tensor-core kernels in the production fatbin checked on {ARCHS:?}", kernels.len());
}

/// The listing reaches every kernel of ptxas's resource table on both architectures (so a
/// tensor-core kernel cannot escape the check above by being missed), and says which kernels
/// touch local memory: today only those calling double sin/cos/log, whose slow argument
/// reduction (libdevice's Payne-Hanek) keeps a small array there; ptxas reports no spills
/// (tests/kernel_resources.rs).
#[test]
fn the_listing_covers_every_kernel_and_names_local_memory_users() {
    let Some(all) = listing(Fatbin::Production) else { return };
    for r in ddpm::gpu::resources::KERNEL_RESOURCES {
        find(&all, r.kernel, r.arch);
    }
    let local: Vec<String> = all
        .iter()
        .filter(|c| c.local_loads + c.local_stores > 0)
        .map(|c| format!("{} ({})", c.kernel, c.arch))
        .collect();
    println!("kernels with local memory (double trig range reduction): {}", local.join(", "));
    let tc = tensor_core_kernels();
    assert!(
        local.iter().all(|l| !tc.iter().any(|k| l.starts_with(&format!("{k} ")))),
        "a tensor-core kernel uses local memory: {local:?}"
    );
}
