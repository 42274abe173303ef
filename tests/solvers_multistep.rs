//! UniPC, DEIS and PNDM plans against diffusers' own loops (tests/fixtures/solvers_multistep.json,
//! made by make_solver_fixtures_multistep.py) on the stand-in model, from a DDPM model folder's
//! config: same evaluation count, same timesteps, same final sample within 1e-4.

// Only the two shared modules this host-only test needs (all of tests/common would also build
// every device check).
#[allow(dead_code)]
#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "common/solver_model.rs"]
mod solver_model;

use ddpm::diffusion::config::{PredictionType, SchedulerConfig};
use ddpm::diffusion::solver::{Plan, SolverOptions, deis, pndm, unipc};
use fixtures::{Fixture, f32s, worst_error};
use serde_json::Value;
use solver_model::{LEN, run};

const TOLERANCE: f32 = 1e-4;

fn config(prediction: &str) -> SchedulerConfig {
    let prediction_type = match prediction {
        "epsilon" => PredictionType::Epsilon,
        "v_prediction" => PredictionType::VPrediction,
        other => panic!("no fixture prediction type {other}"),
    };
    // The fixtures' model folder holds DDPMScheduler's config, whose keys all take their defaults.
    SchedulerConfig { prediction_type, ..SchedulerConfig::default() }
}

fn plan_for(case: &Value) -> anyhow::Result<Plan> {
    let steps = case["steps"].as_u64().unwrap() as usize;
    let opts = SolverOptions { karras: case["karras"].as_bool().unwrap(), eta: None };
    let c = config(case["prediction_type"].as_str().unwrap());
    match case["name"].as_str().unwrap() {
        "unipc" => unipc::plan(&c, steps, &opts),
        "deis" => deis::plan(&c, steps, &opts),
        "pndm" => pndm::plan(&c, steps, &opts),
        "pndm_plms" => pndm::plms_plan(&c, steps, &opts),
        other => panic!("no solver {other}"),
    }
}

fn label(case: &Value) -> String {
    format!(
        "{} steps={} {}{}",
        case["name"].as_str().unwrap(),
        case["steps"],
        case["prediction_type"].as_str().unwrap(),
        if case["karras"].as_bool().unwrap() { " karras" } else { "" }
    )
}

/// Checks every fixture case of `name`; returns the worst error over them.
fn check_cases(name: &str) -> f32 {
    let fixture = Fixture::load("solvers_multistep.json");
    let cases: Vec<&Value> =
        fixture.json["cases"].as_array().unwrap().iter().filter(|c| c["name"].as_str() == Some(name)).collect();
    assert!(!cases.is_empty(), "no {name} cases in the fixture");
    let mut worst = 0f32;
    for case in cases {
        let what = label(case);
        let plan = plan_for(case).unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert_eq!(plan.evaluations() as u64, case["evaluations"].as_u64().unwrap(), "{what}: evaluations");
        let times: Vec<f32> = plan.rows.iter().map(|(t, _)| *t).collect();
        let want_times: Vec<f32> =
            case["timesteps"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap() as f32).collect();
        assert_eq!(times, want_times, "{what}: timesteps");
        let want = f32s(&case["out"]);
        assert_eq!(want.len(), LEN);
        let got = run(&plan, case["seed"].as_u64().unwrap());
        let err = worst_error(&got, &want);
        println!("{what}: worst abs error {err:.3e} over {} evaluations", plan.evaluations());
        assert!(err <= TOLERANCE, "{what}: worst abs error {err} > {TOLERANCE}");
        worst = worst.max(err);
    }
    worst
}

#[test]
fn unipc_matches_diffusers() {
    println!("unipc worst {:.3e}", check_cases("unipc"));
}

#[test]
fn deis_matches_diffusers() {
    println!("deis worst {:.3e}", check_cases("deis"));
}

#[test]
fn pndm_plms_matches_diffusers() {
    println!("pndm_plms worst {:.3e}", check_cases("pndm_plms"));
}

#[test]
fn bad_combinations_are_one_line_errors() {
    let c = SchedulerConfig::default();
    let plain = SolverOptions::default();
    let karras = SolverOptions { karras: true, eta: None };
    let eta = SolverOptions { karras: false, eta: Some(0.5) };
    type PlanFn = fn(&SchedulerConfig, usize, &SolverOptions) -> anyhow::Result<Plan>;
    let solvers: [(&str, PlanFn); 3] = [("unipc", unipc::plan), ("deis", deis::plan), ("pndm", pndm::plms_plan)];
    for (name, plan) in solvers {
        for (steps, opts, why) in [(0, plain, "no steps"), (1001, plain, "more steps than T"), (10, eta, "eta")] {
            let err = plan(&c, steps, &opts).err().unwrap_or_else(|| panic!("{name}: {why} accepted"));
            let msg = format!("{err:#}");
            assert!(!msg.contains('\n'), "{name}: {why}: {msg}");
        }
    }
    for steps in [1, 2, 3, 1000] {
        assert!(unipc::plan(&c, steps, &karras).is_ok(), "unipc {steps} steps");
        assert!(deis::plan(&c, steps, &karras).is_ok(), "deis {steps} steps");
    }
    // PNDM has no Karras sigmas in diffusers.
    let err = pndm::plms_plan(&c, 10, &karras).unwrap_err().to_string();
    assert!(err.contains("karras"), "{err}");
    let err = pndm::plan(&c, 10, &karras).unwrap_err().to_string();
    assert!(err.contains("karras"), "{err}");
    for steps in [1, 2, 3, 1000] {
        assert!(pndm::plms_plan(&c, steps, &plain).is_ok(), "pndm {steps} steps");
    }
    // The warm-up spans the last four timesteps, so it needs four steps (diffusers fails below).
    for steps in [1, 3] {
        let err = format!("{:#}", pndm::plan(&c, steps, &plain).unwrap_err());
        assert!(err.contains("at least 4 steps") && !err.contains('\n'), "{err}");
    }
    assert_eq!(pndm::plan(&c, 4, &plain).unwrap().evaluations(), 13);
    let skip = SchedulerConfig { skip_prk_steps: true, ..c.clone() };
    assert_eq!(pndm::plan(&skip, 10, &plain).unwrap().evaluations(), 11, "skip_prk_steps is PLMS alone");
    let sample = SchedulerConfig { prediction_type: PredictionType::Sample, ..c.clone() };
    let err = pndm::plms_plan(&sample, 10, &plain).unwrap_err().to_string();
    assert!(err.contains("sample"), "{err}");
    assert!(unipc::plan(&sample, 10, &plain).is_ok() && deis::plan(&sample, 10, &plain).is_ok());
}

/// diffusers' default PNDM: the Runge-Kutta warm-up (12 evaluations) and PLMS after it.
#[test]
fn pndm_matches_diffusers() {
    println!("pndm worst {:.3e}", check_cases("pndm"));
}
