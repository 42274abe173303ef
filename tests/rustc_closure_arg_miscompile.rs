//! rustc 1.95.0 miscompiles a closure that takes a heap-owning struct by value when it is called
//! twice with the same freshly built value, as `inputs(KernelArgs::new())` twice: MIR GVN merges the
//! two identical argument aggregates into one local, and the closure call (`extern "rust-call"`,
//! the argument passed by pointer) hands the callee that local itself instead of a copy. The callee
//! pushes into it in place, so the second call starts from the first call's vectors, which the
//! first call has since reallocated: the second call writes into freed memory and the program
//! aborts with "free(): double free detected in tcache 2". No `unsafe` is involved: this is
//! rust-lang/rust#155241 (MIR GVN half fixed by rust-lang/rust#155296, the rust-call codegen half
//! by #155291). It reproduced in src/cuda/group_norm.rs's backward launcher (group_norm tests on the
//! emulator aborted in release builds), which is why that file builds the shared arguments with a
//! plain function.
//!
//! Two tests: the reproduction itself, run in a child process (so an affected compiler shows as a
//! report, not as a crash of the suite), and a check that no closure in src/ taking `KernelArgs` by
//! value is called twice with the same argument expression, the pattern that triggers it.

use std::path::Path;
use std::process::Command;

/// A copy of `ddpm::gpu::KernelArgs`'s layout and builder (three vectors, push by value).
#[derive(Default)]
struct Args {
    values: Vec<u64>,
    sizes: Vec<u32>,
    pointers: Vec<bool>,
}

impl Args {
    fn new() -> Self {
        Self::default()
    }
    fn push(mut self, bits: u64, size: u32, pointer: bool) -> Self {
        self.values.push(bits);
        self.sizes.push(size);
        self.pointers.push(pointer);
        self
    }
    fn buf(self, p: &u64) -> Self {
        self.push(*p, 8, true)
    }
}

fn opt(a: Args, b: Option<&u64>) -> Args {
    match b {
        Some(b) => a.buf(b),
        None => a.push(0, 8, true),
    }
}

#[inline(never)]
fn launch(a: &Args) {
    std::hint::black_box(a);
}

/// group_norm_bwd_f32's old shape: one closure builds the shared inputs of two launches.
#[inline(never)]
fn two_launches(x: &u64, g: Option<&u64>, b: Option<&u64>, m: &u64, r: &u64, dy: &u64, dx: &u64) -> (usize, usize) {
    let inputs = |a: Args| opt(opt(a.buf(x), g), b).buf(m).buf(r).buf(dy);
    let first = inputs(Args::new()).buf(dx);
    launch(&first);
    let second = inputs(Args::new()).buf(dx).buf(dx);
    launch(&second);
    assert!(first.sizes.len() == first.values.len() && first.pointers.len() == first.values.len());
    (first.values.len(), second.values.len())
}

const CHILD: &str = "DDPM_RUSTC_155241_CHILD";

#[test]
fn closure_called_twice_with_a_fresh_by_value_argument() {
    if std::env::var_os(CHILD).is_some() {
        let v: Vec<u64> = std::hint::black_box((1..8).collect());
        let (first, second) = two_launches(&v[0], Some(&v[1]), Some(&v[2]), &v[3], &v[4], &v[5], &v[6]);
        println!("lengths {first} {second}");
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "closure_called_twice_with_a_fresh_by_value_argument", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("the test binary runs itself");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let correct = stdout.contains("lengths 7 8");
    let verdict = if out.status.success() && correct {
        "not affected: both calls start from empty argument vectors"
    } else {
        "AFFECTED by rust-lang/rust#155241: the second call started from the first call's (freed) vectors"
    };
    eprintln!(
        "rustc closure-argument miscompile, {} build: {verdict} (child: {}, {}{})",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        out.status,
        stdout.lines().find(|l| l.starts_with("lengths")).unwrap_or("no lengths printed"),
        stderr.lines().find(|l| l.contains("free")).map(|l| format!(", {l}")).unwrap_or_default()
    );
    // Affected or not, a run that finished must have the right answer: a silently wrong result
    // (no crash) would be the worst outcome.
    if out.status.success() {
        assert!(correct, "the reproduction finished with wrong argument counts: {stdout}");
    }
}

/// The argument expressions of every call `name(...)` in `text`.
fn call_arguments(text: &str, name: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    let pattern = format!("{name}(");
    let mut from = 0;
    while let Some(at) = text[from..].find(&pattern) {
        let start = from + at;
        from = start + pattern.len();
        let before = text[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == ':') {
            continue;
        }
        let mut depth = 1;
        let mut end = from;
        while end < bytes.len() && depth > 0 {
            match bytes[end] {
                b'(' => depth += 1,
                b')' => depth -= 1,
                _ => {}
            }
            end += 1;
        }
        found.push(text[from..end - 1].split_whitespace().collect::<Vec<_>>().join(" "));
    }
    found
}

/// Closures bound with `let` whose parameter is a `KernelArgs` taken by value.
fn by_value_kernel_args_closures(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.trim_start().strip_prefix("let ") else { continue };
        let rest = rest.strip_prefix("mut ").unwrap_or(rest);
        let Some((name, value)) = rest.split_once('=') else { continue };
        let value = value.trim_start();
        let value = value.strip_prefix("move").map(str::trim_start).unwrap_or(value);
        let Some(params) = value.strip_prefix('|').and_then(|v| v.split_once('|')).map(|(p, _)| p) else { continue };
        if params.split(',').any(|p| p.split_once(':').is_some_and(|(_, ty)| ty.trim() == "KernelArgs")) {
            names.push(name.trim().to_string());
        }
    }
    names
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_closure_in_src_is_called_twice_with_the_same_kernel_args() {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    let mut closures = 0;
    let mut offenders = Vec::new();
    for file in &files {
        // Code only: comments may quote the pattern.
        let text: String = std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .map(|l| l.split("//").next().unwrap_or("").to_string() + "\n")
            .collect();
        for name in by_value_kernel_args_closures(&text) {
            closures += 1;
            let mut args = call_arguments(&text, &name);
            args.sort();
            let mut repeated: Vec<_> = args.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0].clone()).collect();
            repeated.dedup();
            for arg in repeated {
                let n = args.iter().filter(|a| **a == arg).count();
                offenders.push(format!("{}: {name}({arg}) is called {n} times", file.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "closures taking KernelArgs by value, called twice with the same argument (rustc 1.95.0 \
         miscompiles this, rust-lang/rust#155241; use a plain fn as src/cuda/group_norm.rs does):\n{}",
        offenders.join("\n")
    );
    assert!(
        closures > 0,
        "the scan found no KernelArgs closures at all (src/cuda/attention.rs has one): is it broken?"
    );
}
