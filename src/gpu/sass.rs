//! The kernels' machine code, checked without a GPU: cuobjdump disassembles the fatbins embedded in
//! this binary and the instructions that decide a tensor-core kernel's speed are counted per kernel
//! and architecture: HMMA (tensor-core mma), LDSM (ldmatrix), LDGSTS (cp.async), and LDL/STL
//! (local memory: register spills). cuobjdump comes from the pinned PyPI wheels that
//! scripts/install-cuda-toolchain puts in .cuda/sass (13.2, the oldest on PyPI; it reads the 13.0
//! toolchain's cubins), or from DDPM_CUOBJDUMP, or from PATH; `-sass` also needs nvdisasm beside it.

use super::resources::{FATBIN, SELFTEST_FATBIN};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// Which embedded fatbin: the production kernels, or the emulator self-tests (tests only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fatbin {
    Production,
    SelfTest,
}

/// Instruction counts of one kernel on one architecture (static counts: instructions in the code,
/// not executions).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SassCounts {
    pub kernel: String,
    pub arch: String,
    pub hmma: usize,
    pub ldsm: usize,
    pub ldgsts: usize,
    pub local_loads: usize,
    pub local_stores: usize,
}

/// cuobjdump: $DDPM_CUOBJDUMP, the pinned wheel in .cuda/sass, or PATH.
pub fn cuobjdump() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DDPM_CUOBJDUMP") {
        return Some(PathBuf::from(p));
    }
    let pinned = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cuda/sass/bin/cuobjdump");
    if pinned.is_file() {
        return Some(pinned);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("cuobjdump")).find(|p| p.is_file())
}

/// Every kernel of `which`, counted from `cuobjdump -sass`.
pub fn counts(which: Fatbin) -> Result<Vec<SassCounts>> {
    let bytes = match which {
        Fatbin::Production => FATBIN,
        Fatbin::SelfTest => SELFTEST_FATBIN,
    };
    if bytes.is_empty() {
        bail!("this binary holds no GPU kernels (built without nvcc)");
    }
    let tool = cuobjdump().context("no cuobjdump: run scripts/install-cuda-toolchain (it installs the pinned wheels into .cuda/sass) or set DDPM_CUOBJDUMP")?;
    // cuobjdump reads files only: the fatbin goes to a per-process temporary file, removed after.
    let file = std::env::temp_dir().join(format!("ddpm-{}-{which:?}.fatbin", std::process::id()));
    std::fs::write(&file, bytes).with_context(|| format!("writing {}", file.display()))?;
    // nvdisasm, which -sass runs, sits beside cuobjdump in the wheels.
    let mut path = vec![tool.parent().map(PathBuf::from).unwrap_or_default()];
    path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    let out = Command::new(&tool).arg("-sass").arg(&file).env("PATH", std::env::join_paths(path)?).output();
    let _ = std::fs::remove_file(&file);
    let out = out.with_context(|| format!("running {}", tool.display()))?;
    if !out.status.success() {
        bail!("{} -sass failed: {}", tool.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(parse(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses cuobjdump's listing: `arch = sm_XX` opens an architecture's code, `Function : NAME` a
/// kernel, then one instruction per line after its `/*address*/` (predicate `@P0` first, if any).
pub fn parse(listing: &str) -> Vec<SassCounts> {
    let (mut all, mut arch) = (Vec::<SassCounts>::new(), String::new());
    for line in listing.lines() {
        let t = line.trim();
        if let Some(a) = t.strip_prefix("arch = ") {
            arch = a.trim().to_string();
        } else if let Some(name) = t.strip_prefix("Function : ") {
            all.push(SassCounts { kernel: name.trim().to_string(), arch: arch.clone(), ..Default::default() });
        } else if let (Some(k), Some(code)) = (all.last_mut(), t.strip_prefix("/*").and_then(|r| r.split_once("*/"))) {
            let mut words = code.1.split_whitespace().skip_while(|w| w.starts_with('@'));
            let op = words.next().unwrap_or("").trim_end_matches(';');
            let counter = match op.split('.').next().unwrap_or("") {
                "HMMA" => &mut k.hmma,
                "LDSM" => &mut k.ldsm,
                "LDGSTS" => &mut k.ldgsts,
                "LDL" => &mut k.local_loads,
                "STL" => &mut k.local_stores,
                _ => continue,
            };
            *counter += 1;
        }
    }
    all
}

/// The table `ddpm kernels --sass` prints.
pub fn table(counts: &[SassCounts]) -> String {
    let mut s = format!(
        "{:<36} {:<7} {:>5} {:>5} {:>6} {:>4} {:>4}\n",
        "kernel", "arch", "HMMA", "LDSM", "LDGSTS", "LDL", "STL"
    );
    for c in counts {
        s += &format!(
            "{:<36} {:<7} {:>5} {:>5} {:>6} {:>4} {:>4}\n",
            c.kernel, c.arch, c.hmma, c.ldsm, c.ldgsts, c.local_loads, c.local_stores
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_architectures_functions_and_predicated_instructions() {
        let listing = "\tarch = sm_80\n\t\tFunction : k1\n        /*0050*/  @P0 LDSM.16.MT88.2 R2, [R16+0x300] ;  /* 0x0 */\n        /*0060*/  HMMA.16816.F32.BF16 R4, R12, R2, R4 ;  /* 0x0 */\n        /*0070*/  LDL R1, [R1] ;\n\tarch = sm_90a\n\t\tFunction : k1\n        /*0010*/  LDGSTS.E.BYPASS.128 [R2], desc[UR4][R4.64] ;\n        /*0020*/  STL [R1], R2 ;\n";
        let c = parse(listing);
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].arch.as_str(), c[0].hmma, c[0].ldsm, c[0].local_loads), ("sm_80", 1, 1, 1));
        assert_eq!((c[1].arch.as_str(), c[1].ldgsts, c[1].local_stores, c[1].hmma), ("sm_90a", 1, 1, 0));
    }
}
