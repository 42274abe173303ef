//! `mpirun --oversubscribe -np 2 ddpm train` on the CPU backend (built with `--features mpi`;
//! scripts/test installs Open MPI and runs this file): two ranks at a global batch match one
//! process at that batch, step by step and in the final weights; the ranks' weights are checked
//! identical after every step (--check-sync 1); a run resumes with another number of ranks; a batch
//! the ranks cannot share is refused in one line.
#![cfg(feature = "mpi")]

use ddpm::model::UNetConfig;
use ddpm::model::unet::UNet;
use ddpm::model::weights::HostParams;
use ddpm::train::checkpoint::{self, STATE_FILE};
use std::path::Path;
use std::process::{Command, Output};

const LR: f32 = 1e-3;
const SEED: u64 = 5;

fn small() -> UNetConfig {
    UNetConfig { sample_size: 8, block_out_channels: vec![16, 32], norm_num_groups: 8, ..UNetConfig::tiny() }
}

/// `ddpm train` on `ranks` processes (mpirun for more than one) with the test's settings.
fn train(ranks: usize, config: &Path, out: &Path, steps: u64, resume: bool, batch: usize) -> Output {
    let exe = env!("CARGO_BIN_EXE_ddpm");
    let (steps, batch, lr, seed) = (steps.to_string(), batch.to_string(), LR.to_string(), SEED.to_string());
    let mut args: Vec<&str> = vec!["train", "--config", config.to_str().unwrap(), "--device", "cpu"];
    args.extend(["--batch", &batch, "--steps", &steps, "--warmup", "2", "--lr", &lr, "--seed", &seed]);
    args.extend(["--checkpoint-every", "3", "--samples", "1", "--check-sync", "1", "--out", out.to_str().unwrap()]);
    if resume {
        args.push("--resume");
    }
    let mut cmd = match ranks {
        1 => Command::new(exe),
        n => {
            let mut c = Command::new("mpirun");
            c.args(["--oversubscribe", "-np", &n.to_string(), exe]);
            c
        }
    };
    // mpirun refuses root without these (CI containers run as root); harmless otherwise.
    cmd.args(&args).env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    cmd.env("RAYON_NUM_THREADS", "1").output().expect("mpirun runs (scripts/test installs Open MPI)")
}

fn ok(o: Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn losses(dir: &Path) -> Vec<(u64, f64, f64)> {
    let text = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap(), v["grad_norm"].as_f64().unwrap())
        })
        .collect()
}

/// The final state: weights, AdamW's two moments, the EMA.
fn state(dir: &Path) -> [Vec<Vec<f32>>; 4] {
    let table = UNet::new(small()).unwrap().table;
    checkpoint::load(&dir.join(STATE_FILE), &table).unwrap().groups.map(|g| g.values)
}

/// Same steps, and loss and gradient norm to 2e-6 relative: the ranks sum their shards'
/// gradients in another order than one process sums the whole batch, so the runs agree to
/// rounding, not bit for bit (a gradient summed instead of averaged would double the norm).
///
/// The weights are compared through what the run changed, AdamW's updates, in L2 over the whole
/// model: element by element they can differ by up to 2 lr a step where a gradient is near zero,
/// since AdamW normalises each element (its first step is lr * sign(g), and rounding decides the
/// sign of a vanishing g), so a max-norm bound would be either loose or flaky.
fn same_run(a: &Path, b: &Path, label: &str) {
    let (la, lb) = (losses(a), losses(b));
    assert_eq!(la.len(), lb.len(), "{label}: steps logged");
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!(x.0, y.0);
        assert!((x.1 - y.1).abs() <= 2e-6 * x.1.abs(), "{label}: loss at step {}: {} vs {}", x.0, x.1, y.1);
        assert!((x.2 - y.2).abs() <= 2e-6 * x.2.abs(), "{label}: grad norm at step {}: {} vs {}", x.0, x.2, y.2);
    }
    let init = HostParams::init(&UNet::new(small()).unwrap().table, SEED).values;
    let (sa, sb) = (state(a), state(b));
    for (g, name) in [(0, "weights"), (3, "ema")] {
        let (mut diff, mut moved, mut worst) = (0f64, 0f64, 0f32);
        for ((x, y), w0) in sa[g].iter().zip(&sb[g]).zip(&init) {
            for ((&x, &y), &w0) in x.iter().zip(y).zip(w0) {
                diff += ((y - x) as f64).powi(2);
                moved += ((x - w0) as f64).powi(2);
                worst = worst.max((y - x).abs());
            }
        }
        let rel = (diff / moved).sqrt();
        eprintln!("{label}: {name}: updates differ by {rel:.2e} relative L2, at most {worst:.2e} per element");
        assert!(rel <= 2e-3, "{label}: {name}: the updates differ by {rel:.3e} in relative L2");
        assert!(worst <= 2.0 * LR * la.len() as f32, "{label}: {name}: an element differs by {worst}");
    }
}

#[test]
fn two_ranks_match_one_process_and_resume_with_either_count() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, small().to_json().to_string()).unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    ok(train(1, &config, &one, 6, false, 8), "one process");
    ok(train(2, &config, &two, 6, false, 8), "two ranks");
    same_run(&one, &two, "2 ranks vs 1");
    // Only rank 0 writes: one log line per step.
    assert_eq!(losses(&two).len(), 6);

    // Half the run on two ranks, the rest on one, and the other way round.
    let (a, b) = (dir.path().join("2then1"), dir.path().join("1then2"));
    ok(train(2, &config, &a, 3, false, 8), "two ranks to step 3");
    ok(train(1, &config, &a, 6, true, 8), "one process resuming to step 6");
    ok(train(1, &config, &b, 3, false, 8), "one process to step 3");
    ok(train(2, &config, &b, 6, true, 8), "two ranks resuming to step 6");
    same_run(&one, &a, "2 ranks then 1");
    same_run(&one, &b, "1 rank then 2");
}

#[test]
fn a_batch_the_ranks_cannot_share_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, small().to_json().to_string()).unwrap();
    let o = train(2, &config, &dir.path().join("run"), 2, false, 7);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    // Every rank finds the error; the first to abort may end the others before they print.
    let line = err.lines().find(|l| l.starts_with("error (rank ")).unwrap_or_else(|| panic!("no error line:\n{err}"));
    assert!(line.contains("--batch 7 cannot be split equally over 2 ranks"), "{line}");
}
