//! The sampler's graph path against its plain path, on any CUDA backend (the emulator here, a
//! GPU in the GPU suite): the same bits, no allocation and no host copy inside the loop.

use ddpm::backend::Backend;
use ddpm::backend::{CpuBackend, CudaBackend, SamplerOps};
use ddpm::diffusion::{DdimScheduler, DdpmScheduler, PhiloxStream, PredictionType, SchedulerConfig, Step, StepTable};
use ddpm::gpu::Gpu;
use ddpm::model::UNetConfig;
use ddpm::model::unet::UNet;
use ddpm::model::weights::{HostParams, ParamTable};
use ddpm::sample::{Denoiser, Launch, Sampler};
use ddpm::testing::{assert_close, random_vec, rng_for, tol};

/// The tiny random UNet of the fixtures (8x8, two resolutions, attention), random weights.
pub fn tiny_unet() -> (UNet, HostParams) {
    let path = super::fixtures::fixture_path("unet_tiny.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let config = UNetConfig::from_json(&meta.metadata().as_ref().unwrap()["config"]).unwrap();
    let params = HostParams::init(&ParamTable::new(&config), 3);
    (UNet::new(config).unwrap(), params)
}

fn samplers() -> Vec<(&'static str, Sampler)> {
    let mut ddpm = DdpmScheduler::new(SchedulerConfig::default()).unwrap();
    ddpm.set_timesteps(4).unwrap();
    let mut ddim = DdimScheduler::new(SchedulerConfig::default()).unwrap();
    ddim.set_timesteps(3).unwrap();
    vec![("ddpm", Sampler::Ddpm(ddpm)), ("ddim eta 0.5", Sampler::Ddim { scheduler: ddim, eta: 0.5 })]
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

pub fn graph_matches_plain(gpu: &Gpu) {
    let b = CudaBackend::new(gpu.clone());
    let (unet, host) = tiny_unet();
    let params = host.upload(&b).unwrap();
    let n = 2;
    let len = n * unet.config.sample_size * unet.config.sample_size * unet.config.in_channels;
    for (name, sampler) in samplers() {
        let run = |launch: Launch| {
            let mut x = b.alloc(len).unwrap();
            b.fill_normal(&mut x, PhiloxStream { seed: 11, offset: 0 }).unwrap();
            let mut d = Denoiser::new(&b, &unet, &params, &sampler, n, 11, x, launch).unwrap();
            d.step().unwrap(); // the graph path captures here
            let before = gpu.memory_stats();
            for _ in 1..d.steps {
                d.step().unwrap();
            }
            let after = gpu.memory_stats();
            assert!(d.step().is_err(), "{name}: a step past the end must be refused");
            (b.download(&d.into_sample()).unwrap(), before, after)
        };
        let (plain, _, _) = run(Launch::Plain);
        let (graph, before, after) = run(Launch::Graph);
        assert!(plain.iter().all(|v| v.is_finite()), "{name}: non-finite samples");
        assert_eq!(bits(&graph), bits(&plain), "{name}: graph replay and plain launches differ");
        // Replays allocate nothing: not from the driver and not from the pool.
        assert_eq!(after.device_allocations, before.device_allocations, "{name}: the loop allocated device memory");
        assert_eq!(after.in_use_bytes, before.in_use_bytes, "{name}: the loop took blocks from the pool");
    }
}

/// Host copies and waits are refused inside a capture (they would break a CUDA graph), and the
/// device works normally after the capture ends.
pub fn capture_refuses_host_copies(gpu: &Gpu) {
    let mut buf = gpu.upload(&[1.0f32, 2.0]).unwrap();
    gpu.begin_capture().unwrap();
    let up = gpu.copy_to_device(&[3.0f32, 4.0], &mut buf).unwrap_err().to_string();
    let down = gpu.download(&buf).unwrap_err().to_string();
    let sync = gpu.synchronize().unwrap_err().to_string();
    let graph = gpu.end_capture().unwrap();
    for e in [up, down, sync] {
        assert!(e.contains("while capturing a graph"), "{e}");
    }
    assert!(graph.is_empty());
    graph.launch().unwrap();
    assert_eq!(gpu.download(&buf).unwrap(), vec![1.0, 2.0]);
}

/// The table-driven step kernels (sampler_timesteps, sampler_step, sampler_advance) against the
/// CPU reference, step by step through tables of DDPM and DDIM rows (every prediction type,
/// clipping, noisy and noiseless steps), on odd lengths with poisoned outputs.
pub fn table_ops_match_cpu(gpu: &Gpu) {
    let b = CudaBackend::new(gpu.clone());
    let mut rng = rng_for("sampler table ops");
    for prediction in [PredictionType::Epsilon, PredictionType::Sample, PredictionType::VPrediction] {
        let config = SchedulerConfig { prediction_type: prediction, clip_sample: true, ..Default::default() };
        let mut ddpm = DdpmScheduler::new(config.clone()).unwrap();
        ddpm.set_timesteps(5).unwrap();
        let mut ddim = DdimScheduler::new(config).unwrap();
        ddim.set_timesteps(4).unwrap();
        let mut rows: Vec<(usize, Step)> =
            ddpm.timesteps.iter().map(|&t| (t, Step::Ddpm(ddpm.step_params(t).unwrap()))).collect();
        rows.extend(ddim.timesteps.iter().map(|&t| (t, Step::Ddim(ddim.step_params(t, 0.5, true).unwrap()))));
        let table = StepTable::new(rows.clone());
        for n in [1usize, 1003] {
            let x0 = random_vec(&mut rng, n, -1.5, 1.5);
            let model_out = random_vec(&mut rng, n, -1.5, 1.5);
            let (dt, dstep, dm) =
                (b.upload_u32(&table.words).unwrap(), b.upload_u32(&[0]).unwrap(), b.upload(&model_out).unwrap());
            let (mut dx, mut step) = (b.upload(&x0).unwrap(), dstep);
            let (mut cx, mut cstep) = (x0.clone(), vec![0u32]);
            for (k, (t, _)) in rows.iter().enumerate() {
                let mut ts = b.upload(&[f32::NAN; 3]).unwrap();
                b.sampler_timesteps(&dt, &step, &mut ts).unwrap();
                assert_eq!(b.download(&ts).unwrap(), vec![*t as f32; 3], "{prediction:?} step {k}: timesteps");
                b.sampler_step(&dt, &step, &mut dx, &dm, 9, 1).unwrap();
                CpuBackend.sampler_step(&table.words, &cstep, &mut cx, &model_out, 9, 1).unwrap();
                assert_close(
                    &format!("{prediction:?} step {k} ({t}) n={n}"),
                    &b.download(&dx).unwrap(),
                    &cx,
                    tol::F32_ATOL,
                    tol::F32_RTOL,
                );
                b.sampler_advance(&mut step).unwrap();
                CpuBackend.sampler_advance(&mut cstep).unwrap();
            }
            assert_eq!(b.download_u32(&step).unwrap(), vec![rows.len() as u32]);
            // The CPU path refuses a step past the table's end; kernels trust the sampler to stop.
            assert!(CpuBackend.sampler_step(&table.words, &cstep, &mut cx, &model_out, 9, 1).is_err());
        }
    }
}
