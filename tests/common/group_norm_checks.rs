//! GroupNorm (with and without fused SiLU) checks written once over a backend or device: against
//! PyTorch's numbers (tests/fixtures/norm_linear.json), and the CUDA backend (emulated or real)
//! against the CPU backend. Run on every backend in tests/group_norm.rs, on a GPU in tests/gpu.rs.

use super::fixtures::{Fixture, f32s};
use super::parity::bits;
use super::tolerance::{Report, check, check_at_scale, nan, up};
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers};
use ddpm::gpu::Gpu;
use ddpm::layout::nchw_to_nhwc;
use ddpm::shapes::GroupNormShape;
use ddpm::testing::{random_vec, rms, rng_for};
use rand::rngs::StdRng;
use serde_json::Value;

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

/// (channels, groups): groups in {1, 3, 32} where they divide the channels.
const GN_CHANNELS: &[(usize, usize)] = &[(1, 1), (3, 1), (3, 3), (32, 1), (32, 32), (96, 1), (96, 3), (96, 32)];
const GN_HW: &[usize] = &[1, 7, 35, 256];

pub fn kernels_match(gpu: &Gpu) -> Report {
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
    for &case in SPLIT_CASES {
        split_case(gpu, &mut rng, case, &mut report);
    }
    report
}

/// The split path (kernels/group_norm.cu: several blocks per (image, group)) at forced chunkings:
/// (batch, hw, channels, groups, chunks wanted, input offset). Chunk lengths that end mid-pixel
/// (28 elements of 3 channels), one element per chunk, a short last chunk, 63 chunks, and an
/// offset group (mean 20) for the accuracy of the combined statistics.
const SPLIT_CASES: &[(usize, usize, usize, usize, usize, f32)] = &[
    (1, 37, 9, 3, 4, 0.0),
    (2, 7, 1, 1, 7, 0.0),
    (3, 256, 96, 32, 5, 0.0),
    (1, 1000, 2, 2, 64, 0.0),
    (2, 1024, 64, 2, 8, 20.0),
];

/// The split forward and dx against the CPU reference, each run twice for the same bits, and the
/// bf16 forward against the f32 forward rounded, at the same chunking.
fn split_case(gpu: &Gpu, rng: &mut StdRng, case: (usize, usize, usize, usize, usize, f32), report: &mut Report) {
    use ddpm::cuda::group_norm::{Chunks, group_norm_bwd_dx_chunked, group_norm_fwd_chunked};
    let (batch, hw, channels, groups, want, offset) = case;
    let s = GroupNormShape { batch, hw, channels, groups, eps: 1e-5 };
    let chunks = Chunks::forced(&s, want);
    assert!(chunks.count > 1, "{s:?}: {chunks:?} is not split");
    let silu = want % 2 == 1;
    let what = format!("group_norm split {s:?} {chunks:?} silu={silu}");
    let x: Vec<f32> = random_vec(rng, s.len(), -2.0, 2.0).iter().map(|v| v + offset).collect();
    let (dy, gamma, beta) = (
        random_vec(rng, s.len(), -1.0, 1.0),
        random_vec(rng, channels, -1.5, 1.5),
        random_vec(rng, channels, -1.0, 1.0),
    );
    let cpu = CpuBackend;
    let (mut y, mut mean, mut rstd) = (vec![0.0; s.len()], vec![0.0; s.stats_len()], vec![0.0; s.stats_len()]);
    cpu.group_norm_fwd(&s, &x, Some(&gamma), Some(&beta), silu, &mut y, &mut mean, &mut rstd).unwrap();
    let mut dx = vec![0.0; s.len()];
    cpu.group_norm_bwd(&s, &x, Some(&gamma), Some(&beta), &mean, &rstd, silu, &dy, &mut dx, None, None).unwrap();

    let up = |v: &[f32]| gpu.upload(v).unwrap();
    let (gx, gdy, gg, gb, smean, srstd) = (up(&x), up(&dy), up(&gamma), up(&beta), up(&mean), up(&rstd));
    let poisoned = |n: usize| up(&vec![f32::NAN; n]);
    let fwd = || {
        let (mut y, mut m, mut r) = (poisoned(s.len()), poisoned(s.stats_len()), poisoned(s.stats_len()));
        group_norm_fwd_chunked(&s, &gx, Some(&gg), Some(&gb), silu, &mut y, &mut m, &mut r, chunks).unwrap();
        (gpu.download(&y).unwrap(), gpu.download(&m).unwrap(), gpu.download(&r).unwrap())
    };
    let bwd = || {
        let mut gdx = poisoned(s.len());
        group_norm_bwd_dx_chunked(&s, &gx, Some(&gg), Some(&gb), &smean, &srstd, silu, &gdy, &mut gdx, chunks).unwrap();
        gpu.download(&gdx).unwrap()
    };
    let (got, got_dx) = (fwd(), bwd());
    report.add("split mean", check_at_scale(&format!("{what}: mean"), &got.1, &mean, rms(&x)));
    report.add("split rstd", check(&format!("{what}: rstd"), &got.2, &rstd));
    report.add("split y", check(&format!("{what}: y"), &got.0, &y));
    report.add("split dx", check(&format!("{what}: dx"), &got_dx, &dx));
    let again = fwd();
    assert!(bits(&got.0) == bits(&again.0) && bits(&got.2) == bits(&again.2), "{what}: two runs differ");
    assert!(bits(&got_dx) == bits(&bwd()), "{what}: dx differs between two runs");

    let mut yb = gpu.upload(&vec![half::bf16::NAN; s.len()]).unwrap();
    let (mut m, mut r) = (poisoned(s.stats_len()), poisoned(s.stats_len()));
    group_norm_fwd_chunked(&s, &gx, Some(&gg), Some(&gb), silu, &mut yb, &mut m, &mut r, chunks).unwrap();
    let rounded: Vec<u16> = got.0.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect();
    let yb: Vec<u16> = gpu.download(&yb).unwrap().iter().map(|v| v.to_bits()).collect();
    assert!(yb == rounded, "{what}: the bf16 output is not the f32 output rounded");
}

/// Every group-norm kernel on `gpu` (emulated or real) against the CPU backend, reported.
pub fn parity(gpu: &Gpu) {
    kernels_match(gpu).say("group_norm vs CPU reference:");
}
