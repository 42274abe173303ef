//! Every fast sampler against diffusers' own loop on the tiny UNet of the fixtures
//! (tests/fixtures/make_solver_unet_fixtures.py): 10 and 25 steps, the weights read as an epsilon
//! and as a v_prediction model, Karras sigmas where the class has them, torch's generator for the
//! initial noise and for every noisy step. The raw output must be within 1e-4 of diffusers' on the
//! CPU reference backend and the fast CPU backend for every case, and on the emulated kernels
//! (graph-captured) for one case per sampler, whose rows are the same: tests/sampler_graph.rs
//! checks the kernels row for row against the CPU reference, and tests/solvers_*.rs check every
//! case of every solver's plan against diffusers on a stand-in model.

mod common;
use common::fixtures::{Fixture, f32s, worst_error};
use ddpm::backend::{CpuBackend, CudaBackend, FastCpuBackend, Layers, SamplerOps};
use ddpm::checkpoint::read_tensors;
use ddpm::diffusion::solver::{SolverOptions, plan_named};
use ddpm::diffusion::{PredictionType, SchedulerConfig};
use ddpm::gpu::Gpu;
use ddpm::layout::nhwc_to_nchw;
use ddpm::math::torch_rng::TorchGenerator;
use ddpm::model::UNetConfig;
use ddpm::model::unet::UNet;
use ddpm::model::weights::{HostParams, ParamTable};
use ddpm::sample::{Launch, NoiseSource, Sampler, generate_with};
use serde_json::Value;

/// The bound, 1e-4 absolute, holds as it stands where samples have a trained model's
/// scale: the v_prediction cases (|x| < 5) agree within 2.4e-6. Read as an epsilon model, the
/// random tiny UNet predicts x0 = (x - sigma eps) / alpha far off the data, and the samples end
/// at |x| up to 500, where one f32 ulp is 3e-5 and the UNet's own f32 rounding (1e-6 relative,
/// different summation orders from PyTorch's) is amplified by 1 / alpha: there the bound is
/// 1e-4 + 1e-5 |ref| (the DDIM fixture's test, tests/cli_sample.rs, allows 1e-4 relative). A
/// wrong coefficient is off by far more: the planted bugs of tests/solvers_*.rs gave 0.09 to 8.
const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-5;

fn tiny_unet() -> (UNet, HostParams) {
    let path = common::fixtures::fixture_path("unet_tiny.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let config = UNetConfig::from_json(&meta.metadata().as_ref().unwrap()["config"]).unwrap();
    let table = ParamTable::new(&config);
    let t = read_tensors(&path).unwrap();
    let params = t.iter().filter_map(|(k, v)| k.strip_prefix("param.").map(|n| (n.to_string(), v.clone()))).collect();
    (UNet::new(config).unwrap(), HostParams::from_torch(&table, params).unwrap())
}

struct Case {
    name: String,
    prediction: PredictionType,
    steps: usize,
    karras: bool,
    seed: u64,
    evaluations: usize,
    raw: Vec<f32>,
}

impl Case {
    fn from_json(v: &Value) -> Case {
        let prediction = match v["prediction"].as_str().unwrap() {
            "epsilon" => PredictionType::Epsilon,
            "v_prediction" => PredictionType::VPrediction,
            p => panic!("fixture prediction {p}"),
        };
        Case {
            name: v["name"].as_str().unwrap().to_string(),
            prediction,
            steps: v["steps"].as_u64().unwrap() as usize,
            karras: v["karras"].as_bool().unwrap(),
            seed: v["seed"].as_u64().unwrap(),
            evaluations: v["evaluations"].as_u64().unwrap() as usize,
            raw: f32s(&v["raw"]),
        }
    }

    fn label(&self) -> String {
        format!("{} {:?} {} steps{}", self.name, self.prediction, self.steps, if self.karras { " karras" } else { "" })
    }

    fn sampler(&self) -> Sampler {
        // The fixtures' folder config is DDPMScheduler's with every key written: clip_sample true.
        let config =
            SchedulerConfig { prediction_type: self.prediction, clip_sample: Some(true), ..Default::default() };
        let opts = SolverOptions { karras: self.karras, eta: None };
        let plan =
            plan_named(&self.name, &config, self.steps, &opts).unwrap_or_else(|e| panic!("{}: {e}", self.label()));
        assert_eq!(plan.evaluations(), self.evaluations, "{}: model evaluations vs diffusers' loop", self.label());
        Sampler::Solver(plan)
    }
}

fn cases() -> (usize, Vec<Case>) {
    let f = Fixture::load("solvers_unet.json");
    let n = f.json["n"].as_u64().unwrap() as usize;
    (n, f.json["cases"].as_array().unwrap().iter().map(Case::from_json).collect())
}

/// The case on backend `b`: its worst absolute error against diffusers' raw output, and its worst
/// error as a share of the bound (above 1 fails).
fn run<B: Layers + SamplerOps>(b: &B, unet: &UNet, host: &HostParams, n: usize, case: &Case) -> (f32, f32) {
    let params = host.upload(b).unwrap();
    let mut noise = NoiseSource::Torch(Box::new(TorchGenerator::manual_seed(case.seed)));
    let sampler = case.sampler();
    let x = generate_with(b, unet, &params, &sampler, n, &mut noise, None, Launch::Graph, &mut |_, _| {}).unwrap();
    let c = &unet.config;
    let got = nhwc_to_nchw(&x, n, c.in_channels, c.sample_size, c.sample_size);
    assert!(got.iter().all(|v| v.is_finite()), "{}: non-finite output", case.label());
    let share = got.iter().zip(&case.raw).map(|(g, w)| (g - w).abs() / (ATOL + RTOL * w.abs())).fold(0.0, f32::max);
    (worst_error(&got, &case.raw), share)
}

fn check_all<B: Layers + SamplerOps>(b: &B, backend: &str) {
    let (unet, host) = tiny_unet();
    let (n, cases) = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let (err, share) = run(b, &unet, &host, n, case);
        common::say(&format!(
            "{backend}: {} vs diffusers: largest abs error {err:.2e} ({:.0}% of the bound)",
            case.label(),
            100.0 * share
        ));
        if share.is_nan() || share > 1.0 {
            failures.push(format!("{}: {err:e} ({:.0}% of the bound)", case.label(), 100.0 * share));
        }
    }
    assert!(failures.is_empty(), "{backend}: {} cases out of bounds:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_solver_matches_diffusers_on_the_cpu_reference() {
    check_all(&CpuBackend, "cpu reference");
}

#[test]
fn every_solver_matches_diffusers_on_the_fast_cpu_backend() {
    check_all(&FastCpuBackend, "fast cpu");
}

#[test]
fn every_solver_matches_diffusers_on_the_emulator() {
    let b = CudaBackend::new(Gpu::emulator().unwrap());
    let (unet, host) = tiny_unet();
    let (n, cases) = cases();
    let mut seen = std::collections::HashSet::new();
    // The first case of each sampler (epsilon, 10 steps, no Karras): the emulator is slow, and the
    // rows are the same on every backend.
    for case in cases.iter().filter(|c| seen.insert(c.name.clone())) {
        let (err, share) = run(&b, &unet, &host, n, case);
        common::say(&format!(
            "emulator: {} vs diffusers: largest abs error {err:.2e} ({:.0}% of the bound)",
            case.label(),
            100.0 * share
        ));
        assert!(share <= 1.0, "emulator: {}: {err:e} ({:.0}% of the bound)", case.label(), 100.0 * share);
    }
    assert_eq!(seen.len(), 10, "a case for each of the ten solvers");
}
