//! Data-parallel training without MPI: shards of a global batch give the whole batch's loss and
//! gradients when averaged (each image's timestep and noise follow its global index), the bucketed
//! all-reduce hook sees every gradient once and hands back the mean, and the loader's shards tile
//! its batches. tests/mpi_train.rs runs the same under `mpirun -np 2`.

use anyhow::Result;
use ddpm::backend::{Backend, CpuBackend, FastCpuBackend, Layers};
use ddpm::data::loader;
use ddpm::diffusion::{NoiseSchedule, SchedulerConfig};
use ddpm::dist::grad_sync::GradSync;
use ddpm::dist::{Comm, Shard};
use ddpm::model::UNetConfig;
use ddpm::model::unet::UNet;
use ddpm::model::weights::HostParams;
use ddpm::testing::{assert_close, random_vec, rng_for};
use ddpm::train::step::{StepNoise, loss_and_grads_on};
use std::sync::{Arc, Mutex};

fn small() -> UNetConfig {
    UNetConfig { sample_size: 8, block_out_channels: vec![16, 32], norm_num_groups: 8, ..UNetConfig::tiny() }
}

/// `ranks` ranks that all hold the same values: a sum is `ranks` times each one (exact for a power
/// of two). Records each summed bucket's length.
struct Mirrored {
    ranks: usize,
    sums: Mutex<Vec<usize>>,
}

impl Comm for Mirrored {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        self.ranks
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn sum_f32(&self, data: &mut [f32]) -> Result<()> {
        data.iter_mut().for_each(|v| *v *= self.ranks as f32);
        self.sums.lock().unwrap().push(data.len());
        Ok(())
    }
    fn sum_f64(&self, data: &mut [f64]) -> Result<()> {
        data.iter_mut().for_each(|v| *v *= self.ranks as f64);
        Ok(())
    }
    fn gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        Ok(vec![value; self.ranks])
    }
    fn broadcast(&self, _: usize, _: &mut [u8]) -> Result<()> {
        Ok(())
    }
    fn quiet_barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

struct Setup<B: Backend> {
    unet: UNet,
    params: Vec<B::Buf>,
    tables: ddpm::diffusion::ScheduleTables<B::Buf>,
    x0: Vec<f32>,
}

fn setup<B: Layers>(b: &B, batch: usize) -> Setup<B> {
    let unet = UNet::new(small()).unwrap();
    let params = HostParams::init(&unet.table, 3).upload(b).unwrap();
    let schedule = NoiseSchedule::new(&SchedulerConfig::default().beta_schedule, 1000).unwrap();
    let tables = b.schedule_tables(&schedule).unwrap();
    let x0 = random_vec(&mut rng_for("data_parallel"), batch * 8 * 8 * 3, -1.0, 1.0);
    Setup { unet, params, tables, x0 }
}

/// The loss and gradients of images shard.first.. of the batch (no averaging over ranks).
fn shard_grads<B: Layers>(b: &B, s: &Setup<B>, shard: Shard, sync: Option<&mut GradSync<B>>) -> (f32, Vec<Vec<f32>>) {
    let per = s.x0.len() / shard.global;
    let x = b.upload(&s.x0[shard.first * per..(shard.first + shard.len) * per]).unwrap();
    let mut grads: Vec<B::Buf> = s.params.iter().map(|p| b.alloc(B::len(p)).unwrap()).collect();
    let noise = StepNoise::Philox { seed: 9, offset: 4 };
    let loss = loss_and_grads_on(b, &s.unet, &s.params, &s.tables, &x, shard, noise, &mut grads, sync).unwrap();
    (loss, grads.iter().map(|g| b.download(g).unwrap()).collect())
}

fn shards_average_to_the_batch<B: Layers>(b: &B, label: &str) {
    let s = setup(b, 6);
    let (loss, grads) = shard_grads(b, &s, Shard::whole(6), None);
    // Gradients that vanish analytically (a bias ahead of a GroupNorm) are rounding noise of the
    // size of the largest ones' rounding: the absolute tolerance scales with the largest gradient.
    let scale = grads.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    for ranks in [2, 3] {
        let parts: Vec<_> = (0..ranks).map(|r| shard_grads(b, &s, Shard::of(6, r, ranks).unwrap(), None)).collect();
        let mean_loss = parts.iter().map(|p| p.0).sum::<f32>() / ranks as f32;
        assert_close(&format!("{label} loss, {ranks} shards"), &[mean_loss], &[loss], 1e-6, 1e-5);
        for (i, g) in grads.iter().enumerate() {
            let mean: Vec<f32> =
                (0..g.len()).map(|k| parts.iter().map(|p| p.1[i][k]).sum::<f32>() / ranks as f32).collect();
            assert_close(&format!("{label} gradient {i}, {ranks} shards"), &mean, g, 1e-6 * scale, 1e-4);
        }
    }
}

#[test]
fn shards_average_to_the_batch_cpu_reference() {
    shards_average_to_the_batch(&CpuBackend, "cpu reference");
}

#[test]
fn shards_average_to_the_batch_fast_cpu() {
    shards_average_to_the_batch(&FastCpuBackend, "fast cpu");
}

/// A planted fault: a later shard drawing the noise from the start of the stream (as if it were the
/// whole batch) no longer averages to the batch.
#[test]
fn shard_noise_must_follow_the_global_index() {
    let b = CpuBackend;
    let s = setup(&b, 4);
    let (loss, _) = shard_grads(&b, &s, Shard::whole(4), None);
    let second = shard_grads(&b, &s, Shard::of(4, 1, 2).unwrap(), None).0;
    let first = shard_grads(&b, &s, Shard::of(4, 0, 2).unwrap(), None).0;
    let wrong = Shard { first: 0, len: 2, global: 2 };
    let per = s.x0.len() / 4;
    let x = b.upload(&s.x0[2 * per..]).unwrap();
    let mut grads: Vec<Vec<f32>> = s.params.iter().map(|p| vec![0.0; p.len()]).collect();
    let noise = StepNoise::Philox { seed: 9, offset: 4 };
    let planted = loss_and_grads_on(&b, &s.unet, &s.params, &s.tables, &x, wrong, noise, &mut grads, None).unwrap();
    assert!(((first + second) / 2.0 - loss).abs() <= 1e-5 * loss.abs());
    assert!(((first + planted) / 2.0 - loss).abs() > 1e-3 * loss.abs(), "the planted fault went unnoticed");
}

#[test]
fn bucketed_sync_returns_the_mean_and_sends_buckets_during_the_backward() {
    let b = FastCpuBackend;
    let s = setup(&b, 2);
    let (loss, grads) = shard_grads(&b, &s, Shard::whole(2), None);
    let comm = Arc::new(Mirrored { ranks: 4, sums: Mutex::new(Vec::new()) });
    let mut sync: GradSync<FastCpuBackend> = GradSync::new(comm.clone(), s.params.len(), 16 << 10).unwrap();
    for round in 0..2 {
        let (l, g) = shard_grads(&b, &s, Shard::whole(2), Some(&mut sync));
        assert_eq!(l.to_bits(), loss.to_bits(), "round {round}: the mean loss of identical ranks");
        for (i, (got, want)) in g.iter().zip(&grads).enumerate() {
            assert!(got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()), "round {round}, gradient {i}");
        }
        let stats = sync.take_stats();
        let total: usize = s.params.iter().map(|p| p.len()).sum();
        assert_eq!(stats.bytes, 4 * total as u64, "every gradient is sent once");
        assert!(stats.buckets > 3, "16 KiB buckets leave as the backward pass goes: {}", stats.buckets);
    }
    let sums = comm.sums.lock().unwrap();
    assert!(sums[..sums.len() - 1].iter().all(|&n| n >= 4096), "every bucket but the last is full: {sums:?}");
}

#[test]
fn a_gradient_reported_twice_is_an_error_and_unreported_ones_are_still_sent() {
    let b = CpuBackend;
    let comm = Arc::new(Mirrored { ranks: 2, sums: Mutex::new(Vec::new()) });
    let mut sync: GradSync<CpuBackend> = GradSync::new(comm.clone(), 3, 1 << 20).unwrap();
    let mut grads = vec![vec![1.0f32, 2.0], vec![3.0], vec![4.0, 5.0, 6.0]];
    sync.ready(&b, &[1], &grads).unwrap();
    let e = sync.ready(&b, &[1], &grads).unwrap_err().to_string();
    assert!(e.contains("twice"), "{e}");
    assert!(sync.ready(&b, &[7], &grads).is_err());
    sync.finish(&b, &mut grads).unwrap();
    assert_eq!(grads, [vec![1.0, 2.0], vec![3.0], vec![4.0, 5.0, 6.0]]);
    assert_eq!(sync.take_stats().bytes, 24);
}

#[test]
fn loader_shards_tile_the_batch() {
    let data = ddpm::data::open("builtin", 8, 3).unwrap();
    let (mut o1, mut o2) = ((u64::MAX, Vec::new()), (u64::MAX, Vec::new()));
    for step in [0, 7] {
        let whole = loader::make_batch(data.as_ref(), 6, step, 3, true, &mut o1);
        let parts: Vec<f32> = (0..3)
            .flat_map(|r| loader::make_shard(data.as_ref(), Shard::of(6, r, 3).unwrap(), step, 3, true, &mut o2))
            .collect();
        assert_eq!(parts, whole, "step {step}");
    }
}

/// A build without the `mpi` feature, started as one of several ranks (the launcher's variables
/// set), refuses in one line rather than running N copies into the same run directory.
#[cfg(not(feature = "mpi"))]
#[test]
fn a_plain_build_refuses_to_run_as_one_of_several_ranks() {
    let dir = tempfile::tempdir().unwrap();
    for var in ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ddpm"))
            .args(["train", "--device", "cpu", "--steps", "1", "--out"])
            .arg(dir.path().join("run"))
            .env(var, "2")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.lines().count() == 1, "{var}: {err}");
        assert!(err.contains("one of 2 ranks") && err.contains("--features mpi"), "{var}: {err}");
        assert!(!dir.path().join("run").exists(), "{var}: the run directory was written");
    }
}

/// Commands that are not data parallel refuse to run as one of several ranks, in any build.
#[test]
fn sample_grads_and_demo_refuse_to_run_as_ranks() {
    for args in [
        &["sample", "--model", "nowhere"][..],
        &["grads", "--model", "a", "--x0", "b", "--t", "c", "--noise", "d", "--out", "e"],
        &["demo"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ddpm"))
            .args(args)
            .env("OMPI_COMM_WORLD_SIZE", "3")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.lines().count() == 1, "{args:?}: {err}");
        assert!(
            err.contains("only `ddpm train` and `ddpm bench` run as ranks") && err.contains("one of 3"),
            "{args:?}: {err}"
        );
    }
}
