//! `ddpm bench --memory-only --launches`: the captured graph's launches grouped by kernel, with
//! each kernel's block counts. At batch 1 most launches cannot fill a GPU (132 SMs on an
//! H100/H200), and each one costs its launch and ramp whatever its size; this table shows where
//! fusing launches or splitting work would pay, without a GPU (the emulator captures the same
//! launches with the same grids).

use std::collections::BTreeMap;

/// The SM count below which a launch leaves an H100/H200 partly idle even at one block per SM.
const SMS: u64 = 132;

pub fn print(launches: &[(String, u64)]) {
    let mut by_kernel: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (kernel, blocks) in launches {
        by_kernel.entry(kernel).or_default().push(*blocks);
    }
    let mut rows: Vec<_> = by_kernel.into_iter().collect();
    rows.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    println!(
        "{:<48} {:>8} {:>10} {:>10} {:>12}",
        "kernel",
        "launches",
        "min blocks",
        "max blocks",
        format!("< {SMS} blocks")
    );
    for (kernel, blocks) in &rows {
        let (min, max) = (blocks.iter().min().unwrap_or(&0), blocks.iter().max().unwrap_or(&0));
        let small = blocks.iter().filter(|&&b| b < SMS).count();
        println!("{kernel:<48} {:>8} {min:>10} {max:>10} {small:>12}", blocks.len());
    }
    let small = launches.iter().filter(|(_, b)| *b < SMS).count();
    println!("{} launches of {} kernels; {small} of them under {SMS} blocks", launches.len(), rows.len());
}
