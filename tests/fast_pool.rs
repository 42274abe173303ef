//! The fast CPU backend allocates nothing in a steady-state training step or sampling step: every
//! buffer comes back from its pool. One test in its own binary, because the pool is process-wide
//! and other tests running at the same time would move its counters.

use ddpm::backend::{Backend, FastCpuBackend};
use ddpm::diffusion::{DdpmScheduler, NoiseSchedule, SchedulerConfig};
use ddpm::fast::pool;
use ddpm::model::UNetConfig;
use ddpm::model::unet::UNet;
use ddpm::model::weights::HostParams;
use ddpm::sample::{Denoiser, Launch, Sampler};
use ddpm::testing::{random_vec, rng_for};
use ddpm::train::step::{OptimConfig, TrainState, train_step};

#[test]
fn steady_state_steps_allocate_nothing() {
    let b = FastCpuBackend;
    let unet = UNet::new(UNetConfig {
        sample_size: 8,
        block_out_channels: vec![16, 32],
        norm_num_groups: 8,
        ..UNetConfig::tiny()
    })
    .unwrap();
    let schedule = NoiseSchedule::new(&SchedulerConfig::default().beta_schedule, 1000).unwrap();
    let tables = b.schedule_tables(&schedule).unwrap();
    let host = HostParams::init(&unet.table, 3);
    let mut state = TrainState::new(&b, &host.values).unwrap();
    let x = b.upload(&random_vec(&mut rng_for("fast_pool"), 2 * 8 * 8 * 3, -1.0, 1.0)).unwrap();
    let mut counts = Vec::new();
    for step in 0..4 {
        train_step(&b, &unet, &tables, &mut state, &OptimConfig::default(), &x, 2, step).unwrap();
        counts.push(pool::stats().allocations);
    }
    assert!(counts[0] > 0, "the first step fills the pool");
    assert_eq!(counts[1], counts[3], "training steps after the first allocated: {counts:?}");

    let params = host.upload(&b).unwrap();
    let mut sched = DdpmScheduler::new(SchedulerConfig::default()).unwrap();
    sched.set_timesteps(6).unwrap();
    let x_t = b.upload(&random_vec(&mut rng_for("fast_pool x_T"), 2 * 8 * 8 * 3, -1.0, 1.0)).unwrap();
    let mut d = Denoiser::new(&b, &unet, &params, &Sampler::Ddpm(sched), 2, 1, x_t, Launch::Graph).unwrap();
    d.step().unwrap();
    d.step().unwrap();
    let before = pool::stats();
    for _ in 2..6 {
        d.step().unwrap();
    }
    let after = pool::stats();
    assert_eq!(after.allocations, before.allocations, "sampling steps after the second allocated");
    assert_eq!(after.in_use_bytes, before.in_use_bytes, "sampling steps leaked pooled buffers");
}
