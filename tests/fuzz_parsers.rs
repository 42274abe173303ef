//! A bounded, seeded mutation fuzzer over every input parser (ddpm::fuzz), run with the suite:
//! start from valid seeds, flip bits, truncate, extend, splice, overwrite length fields and
//! numbers with huge values; a fixed seed and a fixed number of executions per target, so a
//! failure reproduces. Asserts no panic, every error one line naming the input, no input slower
//! than a bound, and no single allocation beyond what the input's size allows (a counting
//! allocator: a header claiming 10^12 elements must be refused before allocating).
//!
//! DDPM_FUZZ_EXECS=N runs N executions per target instead (longer runs by hand);
//! DDPM_FUZZ_SEED=S changes the seed; DDPM_FUZZ_TARGETS=npy,idx runs only those; DDPM_FUZZ_WRITE_SEEDS=DIR writes the seeds to
//! DIR/<target>/ (the cargo-fuzz corpora in fuzz/corpus come from there).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Records the largest single allocation made on this thread while armed.
struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static BIGGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: the allocator also runs while thread-locals are being torn down.
    let _ = ARMED.try_with(|a| {
        if a.get() {
            let _ = BIGGEST.try_with(|b| b.set(b.get().max(size)));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The largest single allocation an input of `len` bytes may cause.
fn alloc_limit(len: usize) -> usize {
    64 * len + (1 << 20)
}

/// No input may take longer (release build, on a loaded 2-core machine).
const SLOW: Duration = Duration::from_secs(2);

/// Executions per target in the suite: 4.4 s for all of them together measured on 2 quiet cores
/// in release, about 25 s on loaded ones (a train state is 20 KB of tensors copied into four tables, the others
/// are cheaper).
fn execs(target: &str) -> usize {
    match target {
        "train_state" => 3000,
        "safetensors" => 10000,
        _ => 20000,
    }
}

/// xorshift64*: a fixed, dependency-free stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

const HUGE: [u64; 8] = [u64::MAX, 1 << 63, u32::MAX as u64, 1 << 31, 1_000_000_000_000, 1 << 40, 0, 0x7fff_ffff];
const NUMBERS: [&[u8]; 10] = [
    b"1000000000000",
    b"18446744073709551615",
    b"-1",
    b"0",
    b"1e300",
    b"-1e300",
    b"4294967296",
    b"99999999",
    b"0.5",
    b"null",
];
const TOKENS: [&[u8]; 8] = [b"[", b"]", b"{", b"}", b"\"", b",", b":", b"\\u0000"];

/// One mutation of `input`; `other` is another corpus entry for splicing.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    let len = input.len();
    match rng.below(10) {
        0 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            input[i] = [0, 0xff, 0x7f, 0x80, rng.next() as u8][rng.below(5)];
        }
        2 => input.truncate(rng.below(len + 1)),
        3 => {
            let n = 1 + rng.below(64);
            let at = rng.below(len + 1);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            input.splice(at..at, bytes);
        }
        4 if len > 0 => {
            // Duplicate a chunk: repeated records, repeated JSON keys.
            let (a, n) = (rng.below(len), 1 + rng.below(256));
            let chunk = input[a..(a + n).min(len)].to_vec();
            let at = rng.below(len + 1);
            input.splice(at..at, chunk);
        }
        5 => {
            let (a, b) = (rng.below(len + 1), rng.below(other.len() + 1));
            input.truncate(a);
            input.extend_from_slice(&other[b..]);
        }
        6 if len > 0 => {
            // A length or dimension field: 4 or 8 bytes, either endianness, at a header offset
            // (the first 64 bytes) more often than not.
            let v = HUGE[rng.below(HUGE.len())];
            let bytes = match rng.below(4) {
                0 => v.to_le_bytes().to_vec(),
                1 => v.to_be_bytes().to_vec(),
                2 => (v as u32).to_le_bytes().to_vec(),
                _ => (v as u32).to_be_bytes().to_vec(),
            };
            let at = if rng.below(3) > 0 { rng.below(len.min(64)) } else { rng.below(len) };
            for (k, b) in bytes.into_iter().enumerate() {
                if at + k < len {
                    input[at + k] = b;
                }
            }
        }
        7 => {
            // A number in text (JSON, the .npy header's dict, safetensors' header) made huge,
            // negative or fractional.
            let digits: Vec<usize> = (0..len).filter(|&i| input[i].is_ascii_digit()).collect();
            if let Some(&start) = digits.get(rng.below(digits.len())) {
                let end = (start..len).find(|&i| !input[i].is_ascii_digit()).unwrap_or(len);
                input.splice(start..end, NUMBERS[rng.below(NUMBERS.len())].iter().copied());
            }
        }
        8 => {
            let at = rng.below(len + 1);
            input.splice(at..at, TOKENS[rng.below(TOKENS.len())].iter().copied());
        }
        _ if len > 0 => {
            let (a, b) = (rng.below(len), rng.below(len));
            input.swap(a, b);
        }
        _ => input.push(rng.next() as u8),
    }
}

/// A failure, with the input that caused it.
fn fail(target: &str, exec: usize, input: &[u8], what: String) -> String {
    let dir = std::env::temp_dir().join("ddpm-fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{target}-{exec}.bin"));
    let _ = std::fs::write(&path, input);
    format!("{target} (execution {exec}, input saved as {}): {what}", path.display())
}

struct Stats {
    execs: usize,
    ok: usize,
    slowest: Duration,
    /// The largest single allocation as a share of its limit.
    biggest_share: f64,
}

fn run_target(
    name: &str,
    target: fn(&[u8]) -> anyhow::Result<()>,
    execs: usize,
    seed: u64,
    failures: &mut Vec<String>,
) -> Stats {
    let mut corpus = ddpm::fuzz::seeds(name).unwrap();
    let seeds = corpus.len();
    let mut rng =
        Rng(seed ^ name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)));
    let mut stats = Stats { execs: 0, ok: 0, slowest: Duration::ZERO, biggest_share: 0.0 };
    for exec in 0..execs {
        // The seeds themselves first (they must parse), then mutants of the corpus.
        let input = if exec < seeds {
            corpus[exec].clone()
        } else {
            let mut input = corpus[rng.below(corpus.len())].clone();
            let other = corpus[rng.below(corpus.len())].clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut rng, &mut input, &other);
            }
            input
        };
        BIGGEST.with(|b| b.set(0));
        ARMED.with(|a| a.set(true));
        let start = Instant::now();
        let result = std::panic::catch_unwind(|| target(&input));
        let took = start.elapsed();
        ARMED.with(|a| a.set(false));
        let biggest = BIGGEST.with(Cell::get);
        stats.execs += 1;
        stats.slowest = stats.slowest.max(took);
        stats.biggest_share = stats.biggest_share.max(biggest as f64 / alloc_limit(input.len()) as f64);
        let mut problem = |what: String| failures.push(fail(name, exec, &input, what));
        if biggest > alloc_limit(input.len()) {
            problem(format!("allocated {biggest} bytes at once for a {}-byte input", input.len()));
        }
        if took > SLOW {
            problem(format!("took {took:?}"));
        }
        match result {
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                problem(format!("panicked: {msg} at {}", LAST_PANIC.with(|p| p.take())));
            }
            Ok(Ok(())) => {
                stats.ok += 1;
                // Inputs that parse are kept to mutate further (a small corpus, no coverage).
                if exec >= seeds && corpus.len() < 64 {
                    corpus.push(input.clone());
                }
            }
            Ok(Err(e)) if exec < seeds => problem(format!("a seed was refused: {e:#}")),
            Ok(Err(e)) => {
                let text = format!("{e:#}");
                if !text.contains(ddpm::fuzz::NAME) || text.contains('\n') {
                    problem(format!("error not one line naming the input: {text:?}"));
                }
            }
        }
        if failures.len() > 20 {
            break;
        }
    }
    stats
}

thread_local! {
    static LAST_PANIC: Cell<String> = const { Cell::new(String::new()) };
}

#[test]
fn every_parser_survives_mutated_inputs() {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let execs = env("DDPM_FUZZ_EXECS").map(|n| n as usize);
    let seed = env("DDPM_FUZZ_SEED").unwrap_or(0x5eed);
    if let Ok(dir) = std::env::var("DDPM_FUZZ_WRITE_SEEDS") {
        for (name, _) in ddpm::fuzz::TARGETS {
            let d = std::path::Path::new(&dir).join(name);
            std::fs::create_dir_all(&d).unwrap();
            for (i, s) in ddpm::fuzz::seeds(name).unwrap().iter().enumerate() {
                std::fs::write(d.join(format!("seed-{i}")), s).unwrap();
            }
        }
    }
    // Panics are caught and reported with their input; the hook only keeps the location.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        LAST_PANIC.with(|p| p.set(info.location().map(|l| l.to_string()).unwrap_or_default()));
    }));
    let mut failures = Vec::new();
    let all = Instant::now();
    let only = std::env::var("DDPM_FUZZ_TARGETS").ok();
    for (name, target) in ddpm::fuzz::TARGETS {
        if only.as_deref().is_some_and(|o| !o.split(',').any(|t| t == name)) {
            continue;
        }
        let start = Instant::now();
        let s = run_target(name, target, execs.unwrap_or_else(|| self::execs(name)), seed, &mut failures);
        println!(
            "fuzz {name:16} {:6} executions ({:5} parsed) in {:6.2} s, slowest {:5.1} ms, largest allocation {:4.1}% of its limit",
            s.execs,
            s.ok,
            start.elapsed().as_secs_f64(),
            s.slowest.as_secs_f64() * 1e3,
            s.biggest_share * 100.0
        );
    }
    println!("fuzz: all targets in {:.2} s", all.elapsed().as_secs_f64());
    std::panic::set_hook(default_hook);
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
