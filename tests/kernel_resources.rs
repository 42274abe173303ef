//! Build-time resource usage of the GPU kernels (ptxas -v): no kernel may spill registers on
//! sm_90a, and the fatbin and the emulator must hold the same kernels, except the emulator's
//! self-tests (kernels/selftest), which stay out of the production fatbin.

mod common;
use ddpm::gpu::Gpu;
use ddpm::gpu::resources::{KERNEL_RESOURCES, NVCC_VERSION, SELFTEST_FATBIN, SELFTEST_KERNELS};

#[test]
fn no_kernel_spills_registers_on_sm_90a() {
    if NVCC_VERSION.is_none() {
        common::say("skipped: built without nvcc, so there is no ptxas report to check");
        return;
    }
    let sm90: Vec<_> = KERNEL_RESOURCES.iter().filter(|r| r.arch == "sm_90a").collect();
    assert!(!sm90.is_empty(), "nvcc ran but reported no sm_90a kernels");
    let spilling: Vec<String> = sm90
        .iter()
        .filter(|r| r.spill_stores > 0 || r.spill_loads > 0)
        .map(|r| format!("{} ({} B stores, {} B loads)", r.kernel, r.spill_stores, r.spill_loads))
        .collect();
    assert!(spilling.is_empty(), "kernels spilling registers on sm_90a: {}", spilling.join(", "));
}

#[test]
fn fatbin_and_emulator_hold_the_same_kernels_for_both_archs() {
    if NVCC_VERSION.is_none() {
        common::say("skipped: built without nvcc, so there is no fatbin to compare");
        return;
    }
    let mut emulated = Gpu::emulator().unwrap().kernel_names();
    emulated.retain(|k| !SELFTEST_KERNELS.contains(k));
    assert!(emulated.len() >= 5, "too few emulated kernels: {emulated:?}");
    for arch in ["sm_80", "sm_90a"] {
        let mut compiled: Vec<&str> = KERNEL_RESOURCES.iter().filter(|r| r.arch == arch).map(|r| r.kernel).collect();
        compiled.sort();
        assert_eq!(compiled, emulated, "{arch}");
    }
}

#[test]
fn selftest_kernels_are_emulated_but_not_in_the_production_fatbin() {
    if NVCC_VERSION.is_none() {
        common::say("skipped: built without nvcc, so there is no fatbin to check");
        return;
    }
    assert!(SELFTEST_KERNELS.contains(&"emu_test_indices"), "{SELFTEST_KERNELS:?}");
    let emulated = Gpu::emulator().unwrap().kernel_names();
    for k in SELFTEST_KERNELS {
        assert!(emulated.contains(k), "{k} is not emulated");
        assert!(KERNEL_RESOURCES.iter().all(|r| r.kernel != *k), "{k} is in the production fatbin");
    }
    let table = ddpm::gpu::resources::table();
    assert!(!table.contains("emu_test_"), "{table}");
    // Their own fatbin, for tests/gpu.rs on a GPU.
    assert!(!SELFTEST_FATBIN.is_empty(), "no self-test fatbin although nvcc ran");
}

#[test]
fn kernels_table_lists_registers_shared_memory_and_spills() {
    let table = ddpm::gpu::resources::table();
    if NVCC_VERSION.is_none() {
        assert!(table.contains("no GPU kernels") && table.contains("install-cuda-toolchain"), "{table}");
        return;
    }
    for column in ["regs", "smem", "spill"] {
        assert!(table.contains(column), "missing column {column}:\n{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("sum_squares_f32") && l.contains("sm_90a"))
        .expect("row for the optimizer's sum of squares");
    // The reduction has a 32-float static scratch (block_sum's): 128 bytes of shared memory.
    assert!(row.split_whitespace().any(|w| w == "128"), "{row}");
}
