//! The sampler's graph path against its plain path, on any CUDA backend (the emulator here, a
//! GPU in the GPU suite): the same bits, no allocation and no host copy inside the loop.

use ddpm::backend::Backend;
use ddpm::backend::{CpuBackend, CudaBackend, SamplerOps};
use ddpm::diffusion::solver::{Eval, Lin, Plan};
use ddpm::diffusion::{DdimScheduler, DdpmScheduler, PhiloxStream, PredictionType, SchedulerConfig, Step, StepTable};
use ddpm::fast::bf16::Precision;
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
    vec![
        ("ddpm", Sampler::Ddpm(ddpm)),
        ("ddim eta 0.5", Sampler::Ddim { scheduler: ddim, eta: 0.5 }),
        ("linear solver rows", Sampler::Solver(synthetic_plan(6))),
    ]
}

/// A plan of `rows` solver rows with every feature on in some row: a model-input scale, a saved
/// sample written and read, all ring slots read once full, noise on every other row, and from row
/// 5 on, reads of older outputs than the three before (rows 0 and 1 kept alive, as PNDM keeps
/// its warm-up's outputs), so the ring's slots are assigned by liveness. The
/// coefficients are arbitrary but keep the sample's scale (a real solver's come from its math:
/// src/diffusion/solver/, checked against diffusers in tests/solvers_*.rs).
pub fn synthetic_plan(rows: usize) -> Plan {
    let mut plan = Plan::new("synthetic", rows, 1.5);
    for k in 0..rows {
        let kf = k as f64;
        let next =
            Lin::X * 0.6 + Lin::D * 0.3 + Lin::S * (0.05 * kf) + Lin::h(1) * 0.04 - Lin::h(2) * 0.03 + Lin::h(3) * 0.02;
        let reads = if k >= 5 {
            [Some(k - 1), Some(1), Some(0)]
        } else {
            [k.checked_sub(1), k.checked_sub(2), k.checked_sub(3)]
        };
        plan.push_reading(
            Eval {
                t: 900.0 - 150.0 * kf,
                input_scale: 1.0 / (1.0 + 0.1 * kf),
                p: 0.8,
                q: -0.5 - 0.01 * kf,
                next,
                save: (k % 2 == 0).then_some(Lin::X * 0.9 + Lin::D * 0.1),
                noise_std: (k % 2 == 1).then_some(0.2 + 0.01 * kf),
            },
            reads,
        )
        .unwrap();
    }
    plan
}

/// The solver kernels (solver_input, solver_step) against the CPU reference, row by row through
/// a synthetic plan, with Philox and with given noise, on odd lengths: the same f32 operations in
/// the same order, so the same bits wherever the noise is the same (given); Philox's normals
/// within f32 rounding, as for the other step kernels.
pub fn solver_ops_match_cpu(gpu: &Gpu) {
    let b = CudaBackend::new(gpu.clone());
    let mut rng = rng_for("solver table ops");
    let plan = synthetic_plan(7);
    let ring = plan.ring();
    let table = StepTable::new(plan.rows.iter().map(|&(t, r)| (t, Step::Solver(r))));
    for given in [false, true] {
        for n in [1usize, 1003] {
            let x0 = random_vec(&mut rng, n, -1.5, 1.5);
            let (dt, mut step) = (b.upload_u32(&table.words).unwrap(), b.upload_u32(&[0]).unwrap());
            let (mut dx, mut dstate) = (b.upload(&x0).unwrap(), b.upload(&vec![0.0; (1 + ring) * n]).unwrap());
            let (mut cx, mut cstate, mut cstep) = (x0.clone(), vec![0.0f32; (1 + ring) * n], vec![0u32]);
            for k in 0..plan.rows.len() {
                let model_out = random_vec(&mut rng, n, -1.5, 1.5);
                let noise = random_vec(&mut rng, n, -2.0, 2.0);
                let (dm, dn) = (b.upload(&model_out).unwrap(), b.upload(&noise).unwrap());
                let mut din = b.upload(&vec![f32::NAN; n]).unwrap();
                b.solver_input(&dt, &step, &dx, &mut din).unwrap();
                let mut cin = vec![f32::NAN; n];
                CpuBackend.solver_input(&table.words, &cstep, &cx, &mut cin).unwrap();
                assert_eq!(b.download(&din).unwrap(), cin, "row {k} n={n}: model input");
                let what = format!("row {k} n={n} given noise {given}");
                b.solver_step(&dt, &step, &mut dx, &dm, &mut dstate, given.then_some(&dn), 4, 1).unwrap();
                let cn = given.then_some(&noise);
                CpuBackend.solver_step(&table.words, &cstep, &mut cx, &model_out, &mut cstate, cn, 4, 1).unwrap();
                let (gx, gs) = (b.download(&dx).unwrap(), b.download(&dstate).unwrap());
                if given {
                    assert_eq!(gx, cx, "{what}: sample");
                    assert_eq!(gs, cstate, "{what}: state");
                } else {
                    assert_close(&format!("{what}: sample"), &gx, &cx, tol::F32_ATOL, tol::F32_RTOL);
                    assert_close(&format!("{what}: state"), &gs, &cstate, tol::F32_ATOL, tol::F32_RTOL);
                }
                b.sampler_advance(&mut step).unwrap();
                CpuBackend.sampler_advance(&mut cstep).unwrap();
            }
            // A state that is not a whole number of samples, or has no ring, is an error, not a
            // read past the end.
            let mut short = b.upload(&vec![0.0; if n == 1 { 1 } else { 3 * n - 1 }]).unwrap();
            let dm = b.upload(&vec![0.0; n]).unwrap();
            let reset = b.upload_u32(&[0]).unwrap();
            assert!(b.solver_step(&dt, &reset, &mut dx, &dm, &mut short, None, 4, 1).is_err());
            // A row using a slot past the state's ring: an error where the row is read (the CPU).
            let (mut x, m, mut small) = (vec![0.0; n], vec![0.0; n], vec![0.0; ring * n]);
            let widest = plan.rows.iter().position(|(_, r)| r.slots.extent() == ring).unwrap();
            let widest_step = vec![widest as u32];
            let err =
                CpuBackend.solver_step(&table.words, &widest_step, &mut x, &m, &mut small, None, 4, 1).unwrap_err();
            assert!(err.to_string().contains("ring slots"), "{err}");
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

pub fn graph_matches_plain(gpu: &Gpu) {
    graph_matches_plain_in(gpu, Precision::F32);
}

/// `graph_matches_plain` with `precision`'s kernels (bf16: the tensor-core convolutions,
/// linears and attention).
pub fn graph_matches_plain_in(gpu: &Gpu, precision: Precision) {
    let b = CudaBackend::with_precision(gpu.clone(), precision);
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
        let config = SchedulerConfig { prediction_type: prediction, clip_sample: Some(true), ..Default::default() };
        let mut ddpm = DdpmScheduler::new(config.clone()).unwrap();
        ddpm.set_timesteps(5).unwrap();
        let mut ddim = DdimScheduler::new(config).unwrap();
        ddim.set_timesteps(4).unwrap();
        let mut rows: Vec<(usize, Step)> =
            ddpm.timesteps.iter().map(|&t| (t, Step::Ddpm(ddpm.step_params(t).unwrap()))).collect();
        rows.extend(ddim.timesteps.iter().map(|&t| (t, Step::Ddim(ddim.step_params(t, 0.5, true).unwrap()))));
        let table = StepTable::new(rows.iter().map(|&(t, st)| (t as f32, st)));
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
