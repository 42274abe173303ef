//! `ddpm bench --what train` under a launcher (`mpirun -np N`): the data-parallel training step at
//! global batch --batch, and, in the same run, one rank alone at the same batch (rank 0, with the
//! resources the launcher gave it, while the others sleep), so the report carries the speed-up,
//! the scaling efficiency and what the gradient all-reduce cost: its time in collectives and the
//! part the backward pass did not hide.

use super::{BenchArgs, Workload};
use crate::backend::{Layers, Optimizer};
use crate::cli::device::Device;
use crate::diffusion::{NoiseSchedule, SchedulerConfig};
use crate::dist::grad_sync::{GradSync, SyncStats};
use crate::dist::{Comm, Shard};
use crate::math::philox;
use crate::model::unet::UNet;
use crate::model::weights::HostParams;
use crate::train::step::{OptimConfig, TrainState, train_step_on};
use anyhow::{Result, bail};
use std::sync::Arc;
use std::time::Instant;

/// What one rank measured.
struct Measured {
    /// Median milliseconds of a step: all ranks, and one rank alone (rank 0 only).
    ranked_ms: f64,
    alone_ms: Option<f64>,
    stats: SyncStats,
}

pub(super) fn run(args: &BenchArgs, unet: &UNet, preset: &str, comm: Arc<dyn Comm>) -> Result<()> {
    if args.what != Workload::Train {
        bail!("under mpirun, `ddpm bench` times the training step only (--what train)");
    }
    let device = Device::open_with_on(args.device, args.precision, comm.local_rank())?;
    let m = crate::with_backend!(&device, b => measure(b, unet, args, &comm))?;
    let Some(alone_ms) = m.alone_ms else { return Ok(()) };
    let (n, iters) = (comm.size(), args.iters as f64);
    let speedup = alone_ms / m.ranked_ms;
    let comm_ms = 1e3 * m.stats.comm_seconds / iters;
    let exposed_ms = 1e3 * m.stats.wait_seconds / iters;
    let mb = m.stats.bytes as f64 / iters / 1e6;
    let buckets = m.stats.buckets as f64 / iters;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"engine": "ddpm", "device": device.name(), "preset": preset, "batch": args.batch,
                "what": args.what, "precision": device.precision(), "ranks": n, "median_ms": m.ranked_ms,
                "one_rank_ms": alone_ms, "speedup": speedup, "scaling_efficiency": speedup / n as f64,
                "allreduce_mb_per_step": mb, "buckets_per_step": buckets, "comm_ms_per_step": comm_ms,
                "exposed_comm_ms_per_step": exposed_ms, "runs": args.iters})
        );
        return Ok(());
    }
    println!(
        "ddpm  {preset:<9} train   batch {:>3} {:<4}  {n} ranks {:>10.3} ms  one rank {:.3} ms  speed-up {speedup:.2}x  scaling efficiency {:.0}%  ({} runs, {} per rank)",
        args.batch,
        device.precision().name(),
        m.ranked_ms,
        alone_ms,
        100.0 * speedup / n as f64,
        args.iters,
        device.name()
    );
    if m.stats.comm_seconds == 0.0 {
        // NCCL runs on the device's side stream: its time is inside the step's, not measured apart.
        println!("      all-reduce per step: {mb:.1} MB in {buckets:.0} buckets, on the device (NCCL)");
        return Ok(());
    }
    println!(
        "      all-reduce per step: {mb:.1} MB in {buckets:.0} buckets, {comm_ms:.2} ms in collectives ({:.1}% of the step), {exposed_ms:.2} ms not hidden by the backward pass ({:.1}%)",
        100.0 * comm_ms / m.ranked_ms,
        100.0 * exposed_ms / m.ranked_ms
    );
    Ok(())
}

fn measure<B: Layers + Optimizer>(b: &B, unet: &UNet, args: &BenchArgs, comm: &Arc<dyn Comm>) -> Result<Measured> {
    let shard = Shard::of(args.batch, comm.rank(), comm.size())?;
    let host = HostParams::init(&unet.table, 0);
    let tables = b.schedule_tables(&NoiseSchedule::new(&SchedulerConfig::default().beta_schedule, 1000)?)?;
    let c = &unet.config;
    let per_image = c.sample_size * c.sample_size * c.in_channels;
    let images = |s: Shard| -> Result<B::Buf> {
        let mut x = vec![0.0; s.len * per_image];
        philox::fill_normal(1, 0, (s.first * per_image) as u64, &mut x);
        b.upload(&x)
    };
    let opt = OptimConfig::default();
    // Times warm-up + iters steps on `shard`, each ending with the loss on the host.
    let timed = |shard: Shard, mut sync: Option<&mut GradSync<B>>| -> Result<f64> {
        let (x, mut state) = (images(shard)?, TrainState::new(b, &host.values)?);
        let mut times = Vec::new();
        for i in 0..args.warmup + args.iters {
            if i == args.warmup
                && let Some(s) = sync.as_deref_mut()
            {
                s.take_stats();
            }
            let t0 = Instant::now();
            train_step_on(b, unet, &tables, &mut state, &opt, &x, shard, 7, sync.as_deref_mut())?;
            times.push(1e3 * t0.elapsed().as_secs_f64());
        }
        let mut t = times.split_off(args.warmup);
        t.sort_by(f64::total_cmp);
        Ok(t[t.len() / 2])
    };
    let mut sync = b.grad_sync(comm.clone(), host.values.len())?;
    let ranked_ms = timed(shard, Some(&mut sync))?;
    let stats = sync.take_stats();
    drop(sync);
    comm.quiet_barrier()?;
    let alone_ms = match comm.rank() {
        0 => Some(timed(Shard::whole(args.batch), None)?),
        _ => None,
    };
    comm.quiet_barrier()?;
    Ok(Measured { ranked_ms, alone_ms, stats })
}
