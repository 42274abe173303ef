//! Fault injection: `ddpm train` is SIGKILLed at 20 seeded random moments, half of them timed from
//! a reference run's measured duration and half the instant a checkpoint write is seen in progress
//! (its temporary file exists); one round in three kills the resumed run as well. After each kill
//! the run directory loads, `--resume` finishes the run, the diffusers export loads, and the final
//! state, export and log equal those of a run that was never killed, bit for bit.

use ddpm::checkpoint::model::load_model;
use ddpm::checkpoint::read_tensors;
use ddpm::model::UNetConfig;
use ddpm::model::unet::UNet;
use ddpm::train::checkpoint::{self, PREV_STATE_FILE, STATE_FILE};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STEPS: u64 = 10;
const KILLS: usize = 20;

/// A model small enough that a 10-step run with a checkpoint after every step takes well under a
/// second on one core, so that 20 kill-and-resume rounds fit the test's budget.
fn small() -> UNetConfig {
    UNetConfig { sample_size: 8, block_out_channels: vec![16, 32], norm_num_groups: 8, ..UNetConfig::tiny() }
}

fn start(config: &Path, out: &Path, resume: bool) -> Child {
    let (config, out) = (config.to_string_lossy(), out.to_string_lossy());
    let steps = STEPS.to_string();
    let mut args = vec!["train", "--config", &config, "--device", "cpu", "--batch", "4", "--steps", &steps];
    args.extend(["--warmup", "3", "--lr", "1e-3", "--seed", "5", "--checkpoint-every", "1", "--samples", "1"]);
    args.extend(["--out", &out]);
    if resume {
        args.push("--resume");
    }
    Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args(&args)
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child, what: &str) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// splitmix64: the kill schedule depends on the seed alone.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Half-written files (`.NAME.tmp-PID`) in the run directory and its subfolders.
fn temps(dir: &Path) -> Vec<PathBuf> {
    [dir.to_path_buf(), dir.join("unet"), dir.join("scheduler")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains(".tmp-")))
        .collect()
}

/// Every tensor of a safetensors file as raw bits, by name.
fn bits(path: &Path) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    let mut t: Vec<_> = read_tensors(path)
        .unwrap()
        .into_iter()
        .map(|(name, (shape, data))| (name, shape, data.iter().map(|v| v.to_bits()).collect()))
        .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

/// What a finished run leaves: the training state, the exported EMA weights and the log.
type Finished = (Vec<(String, Vec<usize>, Vec<u32>)>, Vec<Vec<u32>>, String);

fn finished(dir: &Path) -> Finished {
    let export = load_model(dir).unwrap_or_else(|e| panic!("the export does not load: {e:#}"));
    let export = export.params.values.iter().map(|v| v.iter().map(|x| x.to_bits()).collect()).collect();
    (bits(&dir.join(STATE_FILE)), export, std::fs::read_to_string(dir.join("log.jsonl")).unwrap())
}

/// What a kill left must be usable: a state file that loads (the previous one too, behind it or,
/// killed between keeping it and writing the new state, the same), an export that loads beside it. Returns whether there was a checkpoint.
fn check_after_kill(dir: &Path, unet: &UNet, round: usize) -> bool {
    let state = dir.join(STATE_FILE);
    if !state.exists() {
        assert!(!dir.join(PREV_STATE_FILE).exists(), "round {round}: a previous state but no state");
        return false;
    }
    let now = checkpoint::load(&state, &unet.table).unwrap_or_else(|e| panic!("round {round}: {e:#}"));
    assert!((1..=STEPS).contains(&now.step), "round {round}: step {}", now.step);
    if dir.join(PREV_STATE_FILE).exists() {
        let prev = checkpoint::load(&dir.join(PREV_STATE_FILE), &unet.table)
            .unwrap_or_else(|e| panic!("round {round}: the previous state: {e:#}"));
        assert!(prev.step <= now.step, "round {round}: previous step {} vs {}", prev.step, now.step);
    }
    // The state is written last: where it is, the export beside it is complete.
    load_model(dir).unwrap_or_else(|e| panic!("round {round}: the export beside step {}: {e:#}", now.step));
    true
}

/// SIGKILLs `child` at `at` after its start or, `in_save`, at the first checkpoint write seen
/// from then on. None if it finished first; otherwise whether the kill left a half-written file.
fn kill_at(mut child: Child, dir: &Path, at: Duration, in_save: bool) -> Option<bool> {
    let t = Instant::now();
    while t.elapsed() < at {
        std::thread::sleep(Duration::from_micros(200));
    }
    if in_save {
        while temps(dir).is_empty() && child.try_wait().unwrap().is_none() {}
    }
    if child.try_wait().unwrap().is_some() {
        return None;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    Some(!temps(dir).is_empty())
}

#[test]
fn sigkill_at_random_moments_then_resume_is_bit_exact() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.json");
    std::fs::write(&config, small().to_json().to_string()).unwrap();
    let unet = UNet::new(small()).unwrap();

    let reference = tmp.path().join("reference");
    let t0 = Instant::now();
    finish(start(&config, &reference, false), "the reference run");
    let duration = t0.elapsed();
    let want = finished(&reference);
    assert_eq!(want.2.lines().count() as u64, STEPS);

    let mut rng = Rng(0x6b69_6c6c);
    let (mut survived, mut mid_write, mut before_first, mut attempts, mut twice) = (0, 0, 0, 0, 0);
    while survived < KILLS {
        attempts += 1;
        assert!(attempts <= 3 * KILLS, "only {survived} of {attempts} kills landed while the run was alive");
        let dir = tmp.path().join(format!("run{attempts}"));
        // Even rounds: a moment drawn over the reference run's duration. Odd rounds: the first
        // checkpoint write seen after a moment drawn over its first 90%.
        let in_save = attempts % 2 == 1;
        let at = duration.mul_f64(rng.unit() * if in_save { 0.9 } else { 1.0 });
        let Some(mid) = kill_at(start(&config, &dir, false), &dir, at, in_save) else {
            continue; // it finished first: not a kill
        };
        survived += 1;
        mid_write += usize::from(mid);
        let mut resumable = check_after_kill(&dir, &unet, survived);
        before_first += usize::from(!resumable);
        // One round in three kills the resumed run too (its clean-up of what the first kill left
        // included), at a moment drawn over the half of the run it may still have to do.
        if rng.next().is_multiple_of(3) && survived < KILLS {
            let at = duration.mul_f64(rng.unit() * 0.5);
            match kill_at(start(&config, &dir, resumable), &dir, at, rng.next().is_multiple_of(2)) {
                Some(mid) => {
                    survived += 1;
                    twice += 1;
                    mid_write += usize::from(mid);
                    resumable = check_after_kill(&dir, &unet, survived);
                }
                // It finished first (on a loaded machine a run can take half the reference's
                // time): the directory now holds a whole run, which only --resume may touch.
                None => resumable = dir.join(STATE_FILE).exists(),
            }
        }
        finish(start(&config, &dir, resumable), &format!("round {survived}: the resumed run"));
        let got = finished(&dir);
        if let Some(d) = got.0.iter().zip(&want.0).find(|(g, w)| g != w) {
            panic!("round {survived}: {} differs from the run never killed", d.0.0);
        }
        assert_eq!(got.0.len(), want.0.len(), "round {survived}: tensors in the training state");
        assert!(got.1 == want.1, "round {survived}: the exported weights differ from the run never killed");
        assert_eq!(got.2, want.2, "round {survived}: log.jsonl differs from the run never killed");
        assert!(temps(&dir).is_empty(), "round {survived}: temporary files left: {:?}", temps(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }
    println!(
        "kills survived: {survived} of {KILLS} ({mid_write} inside a checkpoint write, {before_first} before the \
         first checkpoint, {twice} of a resumed run), reference run {:.2} s, test {:.1} s",
        duration.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(mid_write >= KILLS / 4, "only {mid_write} kills landed inside a checkpoint write");
}

/// The instant the kill test hits only by chance: killed after the previous state was linked to
/// the current one and before the new state replaced it, `prev` and the state are one file, and
/// the next save's rename of a link onto `prev` does nothing (POSIX), which left its temporary.
#[test]
fn a_kill_between_keeping_the_previous_state_and_writing_the_new_one_leaves_nothing_behind() {
    use ddpm::backend::FastCpuBackend;
    use ddpm::train::run::{RunConfig, train};
    use ddpm::train::step::OptimConfig;
    let r = |steps| RunConfig {
        model: small(),
        data: "builtin".into(),
        batch: 2,
        steps,
        seed: 5,
        opt: OptimConfig { total_steps: steps, ..Default::default() },
        flip: true,
        checkpoint_every: 1,
        sample_every: 0,
        sample_count: 1,
        sample_steps: 2,
        show_progress: false,
        skip_nonfinite: false,
        graph: true,
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let dir = tempfile::tempdir().unwrap();
    train(&FastCpuBackend, &r(2), dir.path(), false, &stop).unwrap();
    let (state, prev) = (dir.path().join(STATE_FILE), dir.path().join(PREV_STATE_FILE));
    std::fs::remove_file(&prev).unwrap();
    std::fs::hard_link(&state, &prev).unwrap();
    train(&FastCpuBackend, &r(3), dir.path(), true, &stop).unwrap();
    assert!(temps(dir.path()).is_empty(), "temporary files left: {:?}", temps(dir.path()));
    let unet = UNet::new(small()).unwrap();
    assert_eq!(checkpoint::load(&prev, &unet.table).unwrap().step, 2);
    assert_eq!(checkpoint::load(&state, &unet.table).unwrap().step, 3);
}
