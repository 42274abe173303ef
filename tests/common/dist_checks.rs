//! Data-parallel gradient averaging on a CUDA backend, one rank: on a GPU through NCCL on its
//! side stream (src/gpu/nccl.rs), on the emulator through the host transport. The mean over one
//! rank is the gradient itself, so the synced pass must equal the plain one bit for bit: what this
//! catches is the device side of the transport (a bucket averaged before its gradients were
//! written, a gradient read before the main stream waited for its bucket, a missed gradient).
//! Small buckets make a dozen of them leave during the backward pass.

use ddpm::backend::{Backend, CudaBackend};
use ddpm::diffusion::{NoiseSchedule, SchedulerConfig};
use ddpm::dist::grad_sync::GradSync;
use ddpm::dist::nccl::NcclTransport;
use ddpm::dist::{Shard, Solo};
use ddpm::gpu::Gpu;
use ddpm::model::UNetConfig;
use ddpm::model::unet::UNet;
use ddpm::model::weights::HostParams;
use ddpm::testing::{random_vec, rng_for};
use ddpm::train::step::{StepNoise, loss_and_grads_on};
use std::sync::Arc;

pub fn one_rank_sync_is_identity(gpu: &Gpu) {
    let b = CudaBackend::new(gpu.clone());
    let config =
        UNetConfig { sample_size: 8, block_out_channels: vec![16, 32], norm_num_groups: 8, ..UNetConfig::tiny() };
    let unet = UNet::new(config).unwrap();
    let params = HostParams::init(&unet.table, 3).upload(&b).unwrap();
    let tables =
        b.schedule_tables(&NoiseSchedule::new(&SchedulerConfig::default().beta_schedule, 1000).unwrap()).unwrap();
    let x = b.upload(&random_vec(&mut rng_for("one_rank_sync"), 2 * 8 * 8 * 3, -1.0, 1.0)).unwrap();
    let comm = Arc::new(Solo);
    let mut sync: GradSync<CudaBackend> = if gpu.is_emulator() {
        GradSync::new(comm, params.len(), 16 << 10).unwrap()
    } else {
        let nccl = Box::new(NcclTransport::open(&b, &Solo).unwrap());
        GradSync::with_transport(comm, nccl, params.len(), 16 << 10)
    };
    let run = |sync: Option<&mut GradSync<CudaBackend>>| {
        let mut grads: Vec<_> = params.iter().map(|p| b.alloc(CudaBackend::len(p)).unwrap()).collect();
        let noise = StepNoise::Philox { seed: 9, offset: 4 };
        let loss =
            loss_and_grads_on(&b, &unet, &params, &tables, &x, Shard::whole(2), noise, &mut grads, sync).unwrap();
        (loss, grads.iter().map(|g| b.download(g).unwrap()).collect::<Vec<_>>())
    };
    let (loss, plain) = run(None);
    for round in 0..2 {
        let (l, synced) = run(Some(&mut sync));
        assert_eq!(l.to_bits(), loss.to_bits(), "round {round}: loss");
        for (i, (a, b)) in synced.iter().zip(&plain).enumerate() {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "round {round}: gradient {i} changed through a one-rank average");
        }
        let stats = sync.take_stats();
        assert!(stats.buckets > 8, "16 KiB buckets leave during the backward pass: {}", stats.buckets);
    }
}
