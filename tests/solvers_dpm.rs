//! The DPM-Solver++ plans (dpm++2m, dpm++3m, dpm++2m-sde, dpm++3m-sde, dpm++2s) against diffusers'
//! own scheduler loops on the stand-in model (tests/fixtures/make_solver_fixtures_dpm.py): same
//! timesteps, same evaluation count, same output within 1e-4 (the plan rounds its coefficients to
//! f32 and combines them in another order than torch's tensor expressions).

// Only the two shared modules this host-only test needs (all of tests/common would also build
// every device check).
#[allow(dead_code)]
#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "common/solver_model.rs"]
mod solver_model;

use ddpm::diffusion::SchedulerConfig;
use ddpm::diffusion::solver::{Plan, SolverOptions, dpm, dpm_single};
use fixtures::{Fixture, f32s, worst_error};
use serde_json::{Value, json};
use solver_model::{LEN, run};

fn plan_for(name: &str, config: &SchedulerConfig, steps: usize, opts: &SolverOptions) -> anyhow::Result<Plan> {
    match name {
        "dpm++2m" => dpm::plan(config, steps, opts, 2, false),
        "dpm++3m" => dpm::plan(config, steps, opts, 3, false),
        "dpm++2m-sde" => dpm::plan(config, steps, opts, 2, true),
        "dpm++3m-sde" => dpm::plan(config, steps, opts, 3, true),
        "dpm++2s" => dpm_single::plan(config, steps, opts),
        other => panic!("no DPM solver {other}"),
    }
}

/// The model folder's config of a case: DDPMScheduler's defaults (SchedulerConfig's), the
/// prediction type, and the case's own keys.
fn config_of(case: &Value) -> SchedulerConfig {
    let mut keys = case["config"].clone();
    keys["prediction_type"] = case["prediction"].clone();
    SchedulerConfig::from_json(&keys.to_string()).unwrap()
}

#[test]
fn every_case_matches_diffusers() {
    let fixture = Fixture::load("solvers_dpm.json");
    let mut failures = Vec::new();
    let mut worst_per_name: Vec<(String, f32)> = Vec::new();
    for case in fixture.json["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let steps = case["steps"].as_u64().unwrap() as usize;
        let what = format!("{name} {steps} steps {} karras={} {}", case["prediction"], case["karras"], case["config"]);
        let opts = SolverOptions { karras: case["karras"].as_bool().unwrap(), eta: None };
        let plan = plan_for(name, &config_of(case), steps, &opts).unwrap_or_else(|e| panic!("{what}: {e}"));
        let timesteps: Vec<i64> = plan.rows.iter().map(|(t, _)| *t as i64).collect();
        let want_timesteps: Vec<i64> =
            case["timesteps"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap()).collect();
        if plan.evaluations() as u64 != case["evaluations"].as_u64().unwrap() || timesteps != want_timesteps {
            failures.push(format!("{what}: timesteps {timesteps:?}, diffusers {want_timesteps:?}"));
        }
        // No output where the stand-in model is undefined (a timestep below 0).
        if case["out"].is_null() {
            println!("{what}: {} evaluations, timesteps only", plan.evaluations());
            continue;
        }
        let want = f32s(&case["out"]);
        assert_eq!(want.len(), LEN);
        let got = run(&plan, case["seed"].as_u64().unwrap());
        let err = worst_error(&got, &want);
        println!("{what}: {} evaluations, worst error {err:.3e}", plan.evaluations());
        // worst_error's f32::max would pass over a NaN.
        if err > 1e-4 || got.iter().any(|v| !v.is_finite()) {
            failures.push(format!("{what}: worst error {err:e}"));
        }
        match worst_per_name.iter_mut().find(|(n, _)| n == name) {
            Some((_, w)) => *w = w.max(err),
            None => worst_per_name.push((name.to_string(), err)),
        }
    }
    for (name, err) in &worst_per_name {
        println!("{name}: worst error over its cases {err:.3e}");
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

fn error_of(name: &str, keys: Value, steps: usize, opts: SolverOptions) -> String {
    let config = SchedulerConfig::from_json(&keys.to_string()).unwrap();
    match plan_for(name, &config, steps, &opts) {
        Ok(p) => {
            panic!("{name} {keys} {steps} steps {opts:?}: a plan of {} evaluations, not an error", p.evaluations())
        }
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_requests_are_errors() {
    let plain = SolverOptions::default();
    for name in ["dpm++2m", "dpm++3m", "dpm++2m-sde", "dpm++2s"] {
        for steps in [0, 1001] {
            let e = error_of(name, json!({}), steps, plain);
            assert!(e.contains("steps") && e.contains(name), "{e}");
        }
        let e = error_of(name, json!({}), 10, SolverOptions { karras: false, eta: Some(0.0) });
        assert!(e.contains("eta"), "{e}");
        // Karras timesteps of the cosine schedule start 998, 998, ...: diffusers starts at the
        // second match and runs past the end of its sigmas (IndexError).
        let e = error_of(
            name,
            json!({"beta_schedule": "squaredcos_cap_v2"}),
            12,
            SolverOptions { karras: true, eta: None },
        );
        assert!(e.contains("repeat the first timestep"), "{e}");
    }
    // "leading" at T steps: T // (T + 1) = 0, every timestep 0.
    let e = error_of("dpm++2m", json!({"num_train_timesteps": 100}), 100, plain);
    assert!(e.contains("repeat the first timestep"), "{e}");
    let config = SchedulerConfig::default();
    for order in [1, 4] {
        let e = dpm::plan(&config, 10, &plain, order, false).unwrap_err().to_string();
        assert!(e.contains("order"), "{e}");
    }
}

/// The longest runs. "linspace" at T steps rounds two timesteps alike (0.999 apart); the
/// multistep solvers then divide by a zero step (diffusers returns NaN: an error here), the
/// singlestep one meets it on a first-order step, harmless.
#[test]
fn steps_at_the_limits_are_planned() {
    let linspace = SchedulerConfig::from_json(r#"{"timestep_spacing": "linspace"}"#).unwrap();
    for name in ["dpm++2m", "dpm++3m", "dpm++2m-sde", "dpm++2s"] {
        for steps in [1, 2, 3, 999] {
            let plan = plan_for(name, &linspace, steps, &SolverOptions::default()).unwrap();
            assert_eq!(plan.evaluations(), steps, "{name} {steps}");
        }
        let karras = SolverOptions { karras: true, eta: None };
        assert_eq!(plan_for(name, &SchedulerConfig::default(), 999, &karras).unwrap().evaluations(), 999);
        match plan_for(name, &linspace, 1000, &SolverOptions::default()) {
            Ok(plan) => assert_eq!((name, plan.evaluations()), ("dpm++2s", 1000)),
            Err(e) => assert!(name != "dpm++2s" && e.to_string().contains("repeats"), "{name}: {e}"),
        }
    }
}
