//! The sigma-space plans (euler, euler-a, heun, with --karras where diffusers has it) against
//! diffusers' own loop on the stand-in model (tests/fixtures/solvers_sigma.json, written by
//! make_solver_fixtures_sigma.py), and the option combinations diffusers has no class for.

// Only the two shared modules this host-only test needs (all of tests/common would also build
// every device check).
mod common {
    #![allow(dead_code)]
    pub mod fixtures;
    pub mod solver_model;
}

use common::fixtures::{Fixture, f32s, worst_error};
use common::solver_model::{LEN, run};
use ddpm::diffusion::solver::{Plan, SolverOptions, euler, heun};
use ddpm::diffusion::{PredictionType, SchedulerConfig, TimestepSpacing};
use serde_json::Value;

type Planner = fn(&SchedulerConfig, usize, &SolverOptions) -> anyhow::Result<Plan>;

fn planner(name: &str) -> Planner {
    match name {
        "euler" => euler::plan,
        "euler-a" => euler::plan_ancestral,
        "heun" => heun::plan,
        other => panic!("no scheduler {other}"),
    }
}

/// The DDPM config the fixture's class was made from, with the case's overrides.
fn config(case: &Value) -> SchedulerConfig {
    let prediction = match case["prediction"].as_str().unwrap() {
        "epsilon" => PredictionType::Epsilon,
        "v_prediction" => PredictionType::VPrediction,
        "sample" => PredictionType::Sample,
        other => panic!("prediction {other}"),
    };
    let timestep_spacing = match case["spacing"].as_str().unwrap() {
        "leading" => TimestepSpacing::Leading,
        "linspace" => TimestepSpacing::Linspace,
        "trailing" => TimestepSpacing::Trailing,
        other => panic!("spacing {other}"),
    };
    let clip_sample = Some(case["clip_sample"].as_bool().unwrap());
    SchedulerConfig { prediction_type: prediction, timestep_spacing, clip_sample, ..SchedulerConfig::default() }
}

#[test]
fn plans_match_diffusers() {
    let fixture = Fixture::load("solvers_sigma.json");
    let mut failures = Vec::new();
    for case in fixture.json["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let steps = case["steps"].as_u64().unwrap() as usize;
        let opts = SolverOptions { karras: case["karras"].as_bool().unwrap(), eta: None };
        let what = format!(
            "{name} {steps} steps {} {} karras={}",
            case["prediction"].as_str().unwrap(),
            case["spacing"].as_str().unwrap(),
            opts.karras
        );
        let plan = planner(name)(&config(case), steps, &opts).unwrap_or_else(|e| panic!("{what}: {e:#}"));
        let want = f32s(&case["out"]);
        assert_eq!(want.len(), LEN);
        let got = run(&plan, case["seed"].as_u64().unwrap());
        let worst = worst_error(&got, &want);
        let evals = case["evals"].as_u64().unwrap() as usize;
        println!("{what}: worst error {worst:.3e}, {} evaluations", plan.evaluations());
        assert_eq!(plan.steps, steps, "{what}");
        if plan.evaluations() != evals {
            failures.push(format!("{what}: {} evaluations, diffusers {evals}", plan.evaluations()));
        }
        // worst_error's max skips NaN, so non-finite outputs are caught on their own.
        if got.iter().any(|v| !v.is_finite()) || worst > 1e-4 {
            failures.push(format!("{what}: worst error {worst:e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn combinations_diffusers_lacks_are_one_line_errors() {
    let base = SchedulerConfig { clip_sample: Some(false), ..SchedulerConfig::default() };
    let eta = SolverOptions { karras: false, eta: Some(0.5) };
    let karras = SolverOptions { karras: true, eta: None };
    let plain = SolverOptions::default();
    let sample = SchedulerConfig { prediction_type: PredictionType::Sample, ..base.clone() };
    let bad: Vec<(&str, &SchedulerConfig, usize, SolverOptions)> = vec![
        ("euler", &base, 10, eta),
        ("euler-a", &base, 10, eta),
        ("heun", &base, 10, eta),
        ("euler-a", &base, 10, karras),
        ("euler-a", &sample, 10, plain),
        ("euler", &base, 0, plain),
        ("euler-a", &base, 1001, plain),
        ("heun", &base, 0, karras),
    ];
    for (name, config, steps, opts) in bad {
        let err = match planner(name)(config, steps, &opts) {
            Ok(_) => panic!("{name} {steps} steps {opts:?} {:?}: no error", config.prediction_type),
            Err(e) => format!("{e:#}"),
        };
        assert!(!err.contains('\n'), "{name}: a multi-line error: {err}");
        println!("{name} {steps} steps {opts:?}: {err}");
    }
    // Heun clamps x0 when the config says clip_sample (a DDPM config does): every row clamps d
    // (tests/solvers_unet.rs runs it against diffusers on the tiny UNet).
    let clipped = SchedulerConfig { clip_sample: Some(true), ..base.clone() };
    let plan = heun::plan(&clipped, 10, &plain).unwrap();
    assert!(plan.rows.iter().all(|(_, r)| r.clip == Some(1.0)), "heun with clip_sample clamps every row's d");
    // A config without the key: HeunDiscreteScheduler's own default, no clamping (DDPM's is true).
    let unsaid = heun::plan(&SchedulerConfig::default(), 10, &plain).unwrap();
    assert!(unsaid.rows.iter().all(|(_, r)| r.clip.is_none()), "heun without clip_sample in the config clamps");
    // The edges that are allowed: one step, and all of the training timesteps.
    for name in ["euler", "euler-a", "heun"] {
        for steps in [1, 1000] {
            let plan = planner(name)(&base, steps, &plain).unwrap();
            let evals = if name == "heun" { 2 * steps - 1 } else { steps };
            assert_eq!(plan.evaluations(), evals, "{name} {steps}");
        }
    }
}
