//! Finds the kernel sources and the `extern "C" __global__` entry points each one defines.

use std::path::{Path, PathBuf};

pub struct KernelFile {
    pub path: PathBuf,
    /// File name without `.cu`, a valid C identifier (used in generated symbol names).
    pub stem: String,
    pub kernels: Vec<String>,
}

pub fn collect(dir: &Path) -> Vec<KernelFile> {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "cu" || ext == "cuh" {
            // Headers included: editing any of them must rebuild.
            println!("cargo:rerun-if-changed={}", path.display());
        }
        if ext != "cu" {
            continue;
        }
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        assert!(
            stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "kernel file name {stem:?} must be a C identifier"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let kernels = entry_points(&strip_comments(&text), &path);
        files.push(KernelFile { path, stem, kernels });
    }
    files
}

fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i + 1 < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Names of the functions declared `__global__`. Each must be `extern "C"`: the runtime finds
/// kernels by their unmangled names in the fatbin and in the emulator's tables.
fn entry_points(src: &str, path: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = src;
    while let Some(at) = rest.find("__global__") {
        let before = &rest[..at];
        let line_start = before.rfind([';', '}']).map_or(0, |p| p + 1);
        let after = &rest[at + "__global__".len()..];
        let paren = after.find('(').expect("__global__ without a parameter list");
        let mut head = &after[..paren];
        // Skip `__launch_bounds__(...)`, whose own parentheses come before the name.
        let mut consumed = paren;
        if head.contains("__launch_bounds__") {
            let close = after[paren..].find(')').unwrap() + paren;
            let next = after[close..].find('(').unwrap() + close;
            head = &after[close + 1..next];
            consumed = next;
        }
        let name = head.split_whitespace().last().unwrap_or("").trim_start_matches('*').to_string();
        assert!(
            before[line_start..].contains("extern \"C\""),
            "{}: kernel `{name}` must be declared extern \"C\" __global__",
            path.display()
        );
        names.push(name);
        rest = &after[consumed..];
    }
    names
}
