//! Linear checks written once over a backend or device: against PyTorch's numbers
//! (tests/fixtures/norm_linear.json), and the CUDA backend (emulated or real) against the CPU
//! backend. Run on every backend in tests/linear.rs, on a GPU in tests/gpu.rs.

use super::fixtures::{Fixture, f32s};
use super::parity::bits;
use super::tolerance::{Report, check, nan, up};
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers};
use ddpm::gpu::Gpu;
use ddpm::shapes::LinearShape;
use ddpm::testing::{random_vec, rng_for};
use rand::rngs::StdRng;

/// Every torch.nn.Linear case of the fixture on `b` (a 3-D input is its rows, flattened).
pub fn linear_matches_pytorch<B: Layers>(b: &B) -> Report {
    let f = Fixture::load("norm_linear.json");
    let mut report = Report::default();
    for case in f.json["linear"].as_array().unwrap() {
        let x_shape: Vec<usize> =
            case["x_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let (k, o) = (case["in"].as_u64().unwrap() as usize, case["out"].as_u64().unwrap() as usize);
        let s = LinearShape { rows: x_shape[..x_shape.len() - 1].iter().product(), in_features: k, out_features: o };
        let bias = case["bias"].as_bool().unwrap();
        let what = format!("linear x{x_shape:?} bias={bias}");
        let (x, wt, dy) = (up(b, &f32s(&case["x"])), up(b, &f32s(&case["w"])), up(b, &f32s(&case["r"])));
        let bv = bias.then(|| up(b, &f32s(&case["b"])));
        let mut y = nan(b, s.rows * o);
        b.linear_fwd(&s, &x, &wt, bv.as_ref(), &mut y).unwrap();
        let (mut dx, mut dw, mut db) = (nan(b, s.rows * k), nan(b, o * k), bias.then(|| nan(b, o)));
        b.linear_bwd_input(&s, &dy, &wt, &mut dx).unwrap();
        b.linear_bwd_weight(&s, &x, &dy, &mut dw, db.as_mut()).unwrap();
        let mut cmp = |name: &str, got: &B::Buf, want: Vec<f32>| {
            report.add(name, check(&format!("{what}: {name}"), &b.download(got).unwrap(), &want));
        };
        cmp("y", &y, f32s(&case["y"]));
        cmp("dx", &dx, f32s(&case["dx"]));
        cmp("dw", &dw, f32s(&case["dw"]));
        if let Some(db) = &db {
            cmp("db", db, f32s(&case["db"]));
        }
    }
    report
}

/// One Linear shape: all three ops on the GPU against the CPU backend, outputs poisoned; the
/// weight gradient runs twice and must give the same bits.
fn linear_case(g: &CudaBackend, rng: &mut StdRng, s: LinearShape, bias: bool, report: &mut Report) {
    let what = format!("linear {s:?} bias={bias}");
    let (k, o) = (s.in_features, s.out_features);
    let (x, w, dy) = (
        random_vec(rng, s.rows * k, -1.0, 1.0),
        random_vec(rng, o * k, -1.0, 1.0),
        random_vec(rng, s.rows * o, -1.0, 1.0),
    );
    let b = bias.then(|| random_vec(rng, o, -1.0, 1.0));
    let cpu = CpuBackend;
    let (mut y, mut dx, mut dw, mut db) =
        (vec![f32::NAN; s.rows * o], vec![f32::NAN; s.rows * k], vec![f32::NAN; o * k], vec![f32::NAN; o]);
    cpu.linear_fwd(&s, &x, &w, b.as_ref(), &mut y).unwrap();
    cpu.linear_bwd_input(&s, &dy, &w, &mut dx).unwrap();
    cpu.linear_bwd_weight(&s, &x, &dy, &mut dw, bias.then_some(&mut db)).unwrap();

    let (gx, gw, gdy, gb) = (up(g, &x), up(g, &w), up(g, &dy), b.as_ref().map(|v| up(g, v)));
    let (mut gy, mut gdx) = (nan(g, s.rows * o), nan(g, s.rows * k));
    g.linear_fwd(&s, &gx, &gw, gb.as_ref(), &mut gy).unwrap();
    g.linear_bwd_input(&s, &gdy, &gw, &mut gdx).unwrap();
    let run_bwd_weight = || {
        let (mut gdw, mut gdb) = (nan(g, o * k), bias.then(|| nan(g, o)));
        g.linear_bwd_weight(&s, &gx, &gdy, &mut gdw, gdb.as_mut()).unwrap();
        (g.download(&gdw).unwrap(), gdb.map(|v| g.download(&v).unwrap()))
    };
    let (first, second) = (run_bwd_weight(), run_bwd_weight());
    let mut cmp =
        |name: &str, got: &[f32], want: &[f32]| report.add(name, check(&format!("{what}: {name}"), got, want));
    cmp("fwd y", &g.download(&gy).unwrap(), &y);
    cmp("bwd_input dx", &g.download(&gdx).unwrap(), &dx);
    cmp("bwd_weight dw", &first.0, &dw);
    if let Some(got) = &first.1 {
        cmp("bwd_weight db", got, &db);
    }
    assert!(bits(&first.0) == bits(&second.0), "{what}: dw differs between two runs");
    assert!(first.1.as_deref().map(bits) == second.1.as_deref().map(bits), "{what}: db differs between two runs");
}

const LINEAR_ROWS: &[usize] = &[1, 7, 256];
const LINEAR_FEATURES: &[usize] = &[1, 5, 33, 130];

pub fn kernels_match(gpu: &Gpu) -> Report {
    let g = CudaBackend::new(gpu.clone());
    let mut rng = rng_for("linear_parity");
    let mut report = Report::default();
    for (ri, &rows) in LINEAR_ROWS.iter().enumerate() {
        for (ii, &in_features) in LINEAR_FEATURES.iter().enumerate() {
            for (oi, &out_features) in LINEAR_FEATURES.iter().enumerate() {
                // Each (in, out) pair runs with and without bias across the row counts.
                let bias = (ri + ii + oi) % 2 == 0;
                linear_case(&g, &mut rng, LinearShape { rows, in_features, out_features }, bias, &mut report);
            }
        }
    }
    report
}

/// Every linear kernel on `gpu` (emulated or real) against the CPU backend, reported.
pub fn parity(gpu: &Gpu) {
    kernels_match(gpu).say("linear vs CPU reference:");
}
