//! GroupNorm and Linear checks written once over a backend or device: against PyTorch's numbers
//! (tests/fixtures/norm_linear.json), and the CUDA backend (emulated or real) against the CPU
//! backend. Run on the CPU backend and the emulator in tests/norm_linear.rs, on a GPU in tests/gpu.rs.

use super::fixtures::{Fixture, f32s};
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers};
use ddpm::gpu::Gpu;
use ddpm::layout::nchw_to_nhwc;
use ddpm::shapes::{GroupNormShape, LinearShape};
use ddpm::testing::{assert_close, random_vec, rms, rng_for, tol};
use rand::rngs::StdRng;
use serde_json::Value;

/// Tolerance of every comparison here: |got - want| <= ATOL_SCALE * rms(want) + F32_RTOL * |want|.
/// f32 rounding errors of these ops scale with the magnitude of the values they combine (sums of
/// products, normalised values), which the tensor's rms measures; 1e-5 of it leaves a wide
/// margin over the fixed-order f32 sums (a few ulps of the partial sums) while still failing any
/// wrong term. PyTorch's CPU math is not correctly rounded either, so the same rule serves both.
pub const ATOL_SCALE: f32 = 1e-5;

/// A tensor's typical magnitude: its root mean square.
/// The largest absolute error, the largest error relative to |want| (over nonzero want), and
/// the largest fraction of the allowed error any element used.
#[derive(Clone, Copy, Default, Debug)]
pub struct Errors {
    pub abs: f32,
    pub rel: f32,
    pub used: f32,
}

impl Errors {
    pub fn max(self, o: Errors) -> Errors {
        Errors { abs: self.abs.max(o.abs), rel: self.rel.max(o.rel), used: self.used.max(o.used) }
    }
}

/// Asserts every element within tolerance (see ATOL_SCALE) and returns the errors for the report.
#[track_caller]
pub fn check(what: &str, got: &[f32], want: &[f32]) -> Errors {
    check_at_scale(what, got, want, rms(want))
}

/// As [`check`], with atol = ATOL_SCALE * `scale` for a tensor whose own rms is not the scale of
/// its rounding errors (a mean of values near zero: its errors scale with the values averaged).
#[track_caller]
pub fn check_at_scale(what: &str, got: &[f32], want: &[f32], scale: f32) -> Errors {
    let atol = ATOL_SCALE * scale;
    assert_close(what, got, want, atol, tol::F32_RTOL);
    let mut e = Errors::default();
    for (&g, &w) in got.iter().zip(want) {
        let err = (g - w).abs();
        e.abs = e.abs.max(err);
        e.used = e.used.max(err / (atol + tol::F32_RTOL * w.abs()));
        if w != 0.0 {
            e.rel = e.rel.max(err / w.abs());
        }
    }
    e
}

/// Per-tensor errors, accumulated over cases, in first-seen order (for the report lines).
#[derive(Default)]
pub struct Report(pub Vec<(String, Errors)>);

impl Report {
    pub fn add(&mut self, name: &str, e: Errors) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, acc)) => *acc = acc.max(e),
            None => self.0.push((name.to_string(), e)),
        }
    }
    pub fn say(&self, title: &str) {
        for (name, e) in &self.0 {
            let used = 100.0 * e.used;
            super::say(&format!(
                "{title} {name}: largest abs error {:.3e}, rel {:.3e} ({used:.0}% of the tolerance)",
                e.abs, e.rel
            ));
        }
    }
}

fn nan<B: Backend>(b: &B, n: usize) -> B::Buf {
    b.upload(&vec![f32::NAN; n]).unwrap()
}

fn up<B: Backend>(b: &B, v: &[f32]) -> B::Buf {
    b.upload(v).unwrap()
}

/// Every GroupNorm (and GroupNorm + SiLU) case of the fixture on `b`, forward and backward.
pub fn group_norm_matches_pytorch<B: Layers>(b: &B) -> Report {
    let f = Fixture::load("norm_linear.json");
    let gn = &f.json["group_norm"];
    let dims: Vec<usize> = gn["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let (n, c, h, w) = (dims[0], dims[1], dims[2], dims[3]);
    let nhwc = |v: &Value| nchw_to_nhwc(&f32s(v), n, c, h, w);
    let (x, dy) = (up(b, &nhwc(&gn["x"])), up(b, &nhwc(&gn["r"])));
    let mut report = Report::default();
    for case in gn["cases"].as_array().unwrap() {
        let groups = case["num_groups"].as_u64().unwrap() as usize;
        let s = GroupNormShape { batch: n, hw: h * w, channels: c, groups, eps: case["eps"].as_f64().unwrap() as f32 };
        let silu = case["silu"].as_bool().unwrap();
        let affine = case["affine"].as_bool().unwrap();
        let what = format!("group_norm G={groups} eps={} silu={silu} affine={affine}", s.eps);
        let (gamma, beta) =
            if affine { (Some(up(b, &f32s(&case["gamma"]))), Some(up(b, &f32s(&case["beta"])))) } else { (None, None) };
        let (mut y, mut mean, mut rstd) = (nan(b, s.len()), nan(b, s.stats_len()), nan(b, s.stats_len()));
        b.group_norm_fwd(&s, &x, gamma.as_ref(), beta.as_ref(), silu, &mut y, &mut mean, &mut rstd).unwrap();
        let mut cmp = |name: &str, got: &B::Buf, want: Vec<f32>| {
            report.add(name, check(&format!("{what}: {name}"), &b.download(got).unwrap(), &want));
        };
        cmp("y", &y, nhwc(&case["y"]));
        cmp("mean", &mean, f32s(&case["mean"]));
        cmp("rstd", &rstd, f32s(&case["rstd"]));
        let mut dx = nan(b, s.len());
        let (mut dgamma, mut dbeta) = if affine { (Some(nan(b, c)), Some(nan(b, c))) } else { (None, None) };
        b.group_norm_bwd(
            &s,
            &x,
            gamma.as_ref(),
            beta.as_ref(),
            &mean,
            &rstd,
            silu,
            &dy,
            &mut dx,
            dgamma.as_mut(),
            dbeta.as_mut(),
        )
        .unwrap();
        cmp("dx", &dx, nhwc(&case["dx"]));
        if affine {
            cmp("dgamma", dgamma.as_ref().unwrap(), f32s(&case["dgamma"]));
            cmp("dbeta", dbeta.as_ref().unwrap(), f32s(&case["dbeta"]));
        }
    }
    report
}

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

/// Which of gamma and beta a GroupNorm parity case has (and whose gradients it asks for).
#[derive(Clone, Copy, Debug)]
struct Affine {
    gamma: bool,
    beta: bool,
}

/// One GroupNorm shape: forward and backward on the GPU against the CPU backend, outputs
/// poisoned; the backward runs twice and must give the same bits.
fn group_norm_case(
    g: &CudaBackend,
    rng: &mut StdRng,
    s: GroupNormShape,
    silu: bool,
    affine: Affine,
    offset: f32,
    report: &mut Report,
) {
    let what = format!("group_norm {s:?} silu={silu} {affine:?}");
    let x: Vec<f32> = random_vec(rng, s.len(), -2.0, 2.0).iter().map(|v| v + offset).collect();
    let dy = random_vec(rng, s.len(), -1.0, 1.0);
    let gamma = affine.gamma.then(|| random_vec(rng, s.channels, -1.5, 1.5));
    let beta = affine.beta.then(|| random_vec(rng, s.channels, -1.0, 1.0));
    let cpu = CpuBackend;
    let (mut y, mut mean, mut rstd) =
        (vec![f32::NAN; s.len()], vec![f32::NAN; s.stats_len()], vec![f32::NAN; s.stats_len()]);
    cpu.group_norm_fwd(&s, &x, gamma.as_ref(), beta.as_ref(), silu, &mut y, &mut mean, &mut rstd).unwrap();
    let (mut dx, mut dgamma, mut dbeta) =
        (vec![f32::NAN; s.len()], vec![f32::NAN; s.channels], vec![f32::NAN; s.channels]);
    let (dg_want, db_want) = (affine.gamma.then_some(&mut dgamma), affine.beta.then_some(&mut dbeta));
    cpu.group_norm_bwd(&s, &x, gamma.as_ref(), beta.as_ref(), &mean, &rstd, silu, &dy, &mut dx, dg_want, db_want)
        .unwrap();

    let (gx, gdy) = (up(g, &x), up(g, &dy));
    let (ggamma, gbeta) = (gamma.as_ref().map(|v| up(g, v)), beta.as_ref().map(|v| up(g, v)));
    let (mut gy, mut gmean, mut grstd) = (nan(g, s.len()), nan(g, s.stats_len()), nan(g, s.stats_len()));
    g.group_norm_fwd(&s, &gx, ggamma.as_ref(), gbeta.as_ref(), silu, &mut gy, &mut gmean, &mut grstd).unwrap();
    let gmean = g.download(&gmean).unwrap();
    report.add("fwd mean", check_at_scale(&format!("{what}: fwd mean"), &gmean, &mean, rms(&x)));
    let mut cmp =
        |name: &str, got: &[f32], want: &[f32]| report.add(name, check(&format!("{what}: {name}"), got, want));
    cmp("fwd y", &g.download(&gy).unwrap(), &y);
    cmp("fwd rstd", &g.download(&grstd).unwrap(), &rstd);

    // The backward from the reference's statistics, so its errors are its own.
    let (smean, srstd) = (up(g, &mean), up(g, &rstd));
    let run_bwd = || {
        let mut gdx = nan(g, s.len());
        let (mut gdg, mut gdb) = (affine.gamma.then(|| nan(g, s.channels)), affine.beta.then(|| nan(g, s.channels)));
        g.group_norm_bwd(
            &s,
            &gx,
            ggamma.as_ref(),
            gbeta.as_ref(),
            &smean,
            &srstd,
            silu,
            &gdy,
            &mut gdx,
            gdg.as_mut(),
            gdb.as_mut(),
        )
        .unwrap();
        let down = |v: Option<GpuBuf>| v.map(|v| g.download(&v).unwrap());
        (g.download(&gdx).unwrap(), down(gdg), down(gdb))
    };
    let first = run_bwd();
    cmp("bwd dx", &first.0, &dx);
    if let Some(got) = &first.1 {
        cmp("bwd dgamma", got, &dgamma);
    }
    if let Some(got) = &first.2 {
        cmp("bwd dbeta", got, &dbeta);
    }
    let second = run_bwd();
    assert!(bits(&first.0) == bits(&second.0), "{what}: dx differs between two runs");
    assert!(first.1.as_deref().map(bits) == second.1.as_deref().map(bits), "{what}: dgamma differs between two runs");
    assert!(first.2.as_deref().map(bits) == second.2.as_deref().map(bits), "{what}: dbeta differs between two runs");
}

type GpuBuf = ddpm::gpu::Buffer<f32>;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
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

/// (channels, groups): groups in {1, 3, 32} where they divide the channels.
const GN_CHANNELS: &[(usize, usize)] = &[(1, 1), (3, 1), (3, 3), (32, 1), (32, 32), (96, 1), (96, 3), (96, 32)];
const GN_HW: &[usize] = &[1, 7, 35, 256];
const LINEAR_ROWS: &[usize] = &[1, 7, 256];
const LINEAR_FEATURES: &[usize] = &[1, 5, 33, 130];

pub fn group_norm_parity(gpu: &Gpu) -> Report {
    let g = CudaBackend::new(gpu.clone());
    let mut rng = rng_for("group_norm_parity");
    let mut report = Report::default();
    // (silu, gamma, beta), cycled so that every channel/group pair meets each combination twice.
    let modes = [(false, true, true), (true, true, true), (false, false, false), (true, false, false)];
    let mut i = 0;
    for &(channels, groups) in GN_CHANNELS {
        for &hw in GN_HW {
            for batch in [1, 3] {
                let (silu, gamma, beta) = modes[i % modes.len()];
                i += 1;
                let s = GroupNormShape { batch, hw, channels, groups, eps: 1e-5 };
                group_norm_case(&g, &mut rng, s, silu, Affine { gamma, beta }, 0.0, &mut report);
            }
        }
    }
    // gamma without beta, and beta without gamma (each asks only for its own gradient).
    let s = GroupNormShape { batch: 3, hw: 35, channels: 96, groups: 3, eps: 1e-6 };
    group_norm_case(&g, &mut rng, s, true, Affine { gamma: true, beta: false }, 0.0, &mut report);
    group_norm_case(&g, &mut rng, s, false, Affine { gamma: false, beta: true }, 0.0, &mut report);
    // One large group, so each reduction spans every thread of the block and many pixel chunks;
    // offset inputs (mean 20, spread 2) exercise the accuracy of the statistics (the variance
    // as E[x^2] - E[x]^2 in f32 fails this).
    let s = GroupNormShape { batch: 2, hw: 1024, channels: 64, groups: 2, eps: 1e-5 };
    group_norm_case(&g, &mut rng, s, true, Affine { gamma: true, beta: true }, 20.0, &mut report);
    report
}

pub fn linear_parity(gpu: &Gpu) -> Report {
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

/// Every group-norm and linear kernel on `gpu` (emulated or real) against the CPU backend.
pub fn parity(gpu: &Gpu) {
    group_norm_parity(gpu).say("group_norm vs CPU reference:");
    linear_parity(gpu).say("linear vs CPU reference:");
}
