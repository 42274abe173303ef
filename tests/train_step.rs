//! The whole training step captured once and replayed (src/train/graph.rs): bitwise the op-by-op
//! step on every backend, non-finite steps handled as op by op, and its row-driven kernels against
//! their reference.

mod common;
use common::train_graph_checks as checks;

on_every_backend!(
    graphed_step_is_the_op_by_op_step => checks::whole_step,
    graphed_step_handles_nonfinite_steps => checks::nonfinite,
);

#[test]
fn replays_of_the_graphed_step_allocate_nothing_on_the_emulator() {
    checks::replays_allocate_nothing(&common::emu());
}

#[test]
fn row_driven_kernels_match_the_reference_on_the_emulator() {
    checks::ops_parity(&common::emu());
}

/// The training loop on the emulator, captured or op by op, on the small model.
fn run(graph: bool, lr: f32, steps: u64, checkpoint_every: u64, dir: &std::path::Path) -> anyhow::Result<()> {
    use ddpm::train::run::{RunConfig, train};
    let r = RunConfig {
        model: checks::small(),
        data: "builtin".into(),
        batch: 2,
        steps,
        seed: 3,
        opt: ddpm::train::step::OptimConfig { lr, warmup_steps: 2, total_steps: steps, ..Default::default() },
        flip: true,
        checkpoint_every,
        sample_every: 0,
        sample_count: 0,
        sample_steps: 2,
        show_progress: false,
        skip_nonfinite: false,
        graph,
    };
    let b = ddpm::backend::CudaBackend::new(common::emu());
    train(&b, &r, dir, false, &std::sync::atomic::AtomicBool::new(false)).map(|_| ())
}

/// What a run left: its log and every tensor of its last checkpoint (None where it wrote none).
/// Tensor names with their values' bits.
type Bits = Vec<(String, Vec<u32>)>;

fn left(dir: &std::path::Path) -> (String, Option<Bits>) {
    let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap_or_default();
    let state = dir.join(ddpm::train::checkpoint::STATE_FILE);
    let tensors = state.exists().then(|| {
        let mut t: Vec<_> = ddpm::checkpoint::read_tensors(&state)
            .unwrap()
            .into_iter()
            .map(|(name, (_, v))| (name, v.iter().map(|x| x.to_bits()).collect()))
            .collect();
        t.sort();
        t
    });
    (log, tensors)
}

#[test]
fn a_graphed_run_writes_what_an_op_by_op_run_writes() {
    let (a, g) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(false, 1e-3, 10, 4, a.path()).unwrap();
    run(true, 1e-3, 10, 4, g.path()).unwrap();
    let (la, sa) = left(a.path());
    let (lg, sg) = left(g.path());
    assert_eq!(la, lg, "log.jsonl differs between the graphed and the op-by-op run");
    assert_eq!(lg.lines().count(), 10);
    assert!(sa.is_some() && sa == sg, "the checkpoints differ");
    assert_eq!(ddpm::train::checkpoint::saved_step(g.path()), Some(10));
}

/// A learning rate that overflows the weights: both runs stop at the same step with the same
/// message, and leave the same last good checkpoint and log (the captured run learns of the bad
/// step only when it reads its window back, before anything is saved).
#[test]
fn a_diverging_graphed_run_stops_where_an_op_by_op_run_stops() {
    // Checkpoints every step (each save reads the window back first), and only at the end (the
    // graphed run queues steps past the bad one, which it must not apply or report).
    for every in [1, 100] {
        let (a, g) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ea = run(false, 1e30, 12, every, a.path()).unwrap_err().to_string();
        let eg = run(true, 1e30, 12, every, g.path()).unwrap_err().to_string();
        assert!(ea.contains("the loss is") && ea.contains("training stopped"), "{ea}");
        let dir = |d: &tempfile::TempDir, e: &str| e.replace(&d.path().display().to_string(), "DIR");
        assert_eq!(dir(&a, &ea), dir(&g, &eg));
        let (la, sa) = left(a.path());
        assert!(!la.is_empty() && sa.is_some() == (every == 1), "the run should diverge after a good step: {ea}");
        assert!(
            (la, sa) == left(g.path()),
            "checkpoint every {every}: the log or the checkpoint differs after the stop"
        );
        eprintln!("both stopped: {eg}");
    }
}

/// `ddpm bench --memory-only` captures the training step without running it (seconds, even on
/// the emulator) and reports the pool's peak: smaller in bf16, whose GroupNorm outputs for the
/// matrix products are kept at half the bytes. One model evaluation's launches likewise. Asked of
/// a whole run, one line, no panic.
#[test]
fn bench_memory_only_reports_the_captured_steps_peak() {
    let bench = |extra: &[&str]| {
        let mut args = vec!["bench", "--device", "emulator", "--preset", "tiny", "--batch", "8", "--memory-only"];
        args.extend(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_ddpm")).args(&args).output().unwrap()
    };
    let peak = |p: &str| -> f64 {
        let out = bench(&["--what", "train", "--precision", p]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        let at = text.find("peak memory ").unwrap_or_else(|| panic!("no peak in {text}")) + "peak memory ".len();
        text[at..].split(' ').next().unwrap().parse().unwrap()
    };
    let (f32_mib, bf16_mib) = (peak("f32"), peak("bf16"));
    assert!(bf16_mib < f32_mib, "bf16 peak {bf16_mib} MiB, f32 {f32_mib} MiB");
    // One model evaluation: in bf16 the kept weight copies (src/backend/cuda_weights.rs) remove
    // a rounding launch per product weight, so it launches fewer kernels than rounding at each use.
    let launches = |keep: &str| -> usize {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ddpm"))
            .args(["bench", "--device", "emulator", "--preset", "tiny", "--batch", "1", "--memory-only"])
            .args(["--what", "sample", "--precision", "bf16"])
            .env("DDPM_NO_KEPT_WEIGHTS", keep)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        let words: Vec<&str> = text.split(' ').collect();
        let at = words.iter().position(|w| *w == "kernel").unwrap_or_else(|| panic!("no launches in {text}"));
        words[at - 1].parse().unwrap()
    };
    let (kept, each) = (launches("0"), launches("1"));
    assert!(kept < each, "one evaluation: {kept} launches with kept weights, {each} rounding at each use");
    let out = bench(&["--what", "run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.trim().lines().count() == 1 && !err.contains("panicked"), "{err}");
}

/// `--launches` lists the captured evaluation's launches by kernel: the rows add up to the launch
/// count of the summary line, with attention's q, k and v in one launch at bf16 (the tiny preset
/// has attention). Without `--memory-only` it is a one-line usage error.
#[test]
fn bench_launches_table_adds_up_to_the_captured_launches() {
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ddpm"))
            .args(["bench", "--device", "emulator", "--preset", "tiny", "--batch", "1", "--what", "sample"])
            .args(["--precision", "bf16"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--memory-only", "--launches"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    let words: Vec<&str> = lines[0].split(' ').collect();
    let at = words.iter().position(|w| *w == "kernel").unwrap_or_else(|| panic!("no launches in {text}"));
    let total: usize = words[at - 1].parse().unwrap();
    let header = lines.iter().position(|l| l.starts_with("kernel ")).unwrap_or_else(|| panic!("no table in {text}"));
    let rows: Vec<(&str, usize)> = lines[header + 1..]
        .iter()
        .take_while(|l| !l.contains(" launches of "))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0], cols[1].parse().unwrap())
        })
        .collect();
    assert_eq!(rows.iter().map(|r| r.1).sum::<usize>(), total, "{text}");
    let x3 = rows.iter().find(|r| r.0 == "linear_fwd_bf16_to_bf16_x3").map(|r| r.1);
    assert!(x3.is_some_and(|n| n > 0), "no q/k/v launch in {text}");
    assert!(!rows.iter().any(|r| r.0 == "linear_fwd_bf16_to_bf16"), "a separate q/k/v projection in {text}");
    let out = run(&["--launches"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--memory-only") && !err.contains("panicked"), "{err}");
}
