//! GroupNorm(+SiLU) reading a bf16 input (kernels/group_norm_bf16.cu: a bf16 convolution's output,
//! issue #17), on the emulator (tests/group_norm.rs) and on a GPU (tests/gpu.rs). Widening bf16 to
//! f32 is exact, so each kernel must give the bits its f32 twin gives on the widened input; and,
//! as a check that does not lean on the f32 kernels, the CPU reference's values on that input
//! within the GroupNorm tolerance (tests/common/tolerance.rs).

use super::parity::bits;
use super::tolerance::{Report, check, check_at_scale};
use ddpm::backend::{CpuBackend, Layers};
use ddpm::cuda::group_norm::{
    Chunks, GroupNormIn, GroupNormOut, group_norm_bwd, group_norm_bwd_dx_chunked, group_norm_fwd_chunked,
};
use ddpm::gpu::{Buffer, Gpu};
use ddpm::shapes::GroupNormShape;
use ddpm::testing::{random_vec, rms, rng_for};
use half::bf16;

/// One case: the shape (batch, hw, channels, groups), SiLU, gamma and beta, the chunks wanted (0:
/// the shape's own) and an input offset.
struct Case {
    dims: (usize, usize, usize, usize),
    silu: bool,
    affine: bool,
    chunks: usize,
    offset: f32,
}

const fn case(dims: (usize, usize, usize, usize), silu: bool, affine: bool, chunks: usize, offset: f32) -> Case {
    Case { dims, silu, affine, chunks, offset }
}

/// Odd pixel and channel counts, one-element groups, split chunks ending mid-pixel, a one-element
/// chunk, and an offset group (mean 20) for the statistics' accuracy.
const CASES: &[Case] = &[
    case((2, 35, 32, 8), true, true, 0, 0.0),
    case((1, 9, 64, 32), false, false, 0, 0.0),
    case((3, 16, 24, 3), true, false, 0, 0.0),
    case((3, 7, 3, 3), true, true, 0, 0.0),
    case((1, 37, 9, 3), true, true, 4, 0.0),
    case((2, 7, 1, 1), false, true, 7, 0.0),
    case((2, 1024, 64, 2), true, true, 8, 20.0),
];

/// What one run of the forward and the backward gives, downloaded.
struct Outputs {
    y: Vec<f32>,
    y_bf16: Vec<u16>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    dx: Vec<f32>,
    /// dx at the shape's own chunking (what the layers run), beside the gamma/beta gradients.
    dx_own: Vec<f32>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
}

/// Runs every kernel on input `x` (f32 or bf16) into poisoned outputs, forward at `chunks` in both
/// output types and dx at `chunks`, gamma/beta gradients at the shape's chunking.
#[allow(clippy::too_many_arguments)]
fn run<X: GroupNormIn>(
    gpu: &Gpu,
    s: &GroupNormShape,
    x: &Buffer<X>,
    affine: Option<(&Buffer<f32>, &Buffer<f32>)>,
    silu: bool,
    dy: &Buffer<f32>,
    chunks: Chunks,
) -> Outputs {
    let poisoned = |n: usize| gpu.upload(&vec![f32::NAN; n]).unwrap();
    let (gamma, beta) = (affine.map(|a| a.0), affine.map(|a| a.1));
    let mut y = poisoned(s.len());
    let (mean, rstd) = fwd_into(s, x, gamma, beta, silu, &mut y, chunks, gpu);
    let mut yb = gpu.upload(&vec![bf16::NAN; s.len()]).unwrap();
    let stats_b = fwd_into(s, x, gamma, beta, silu, &mut yb, chunks, gpu);
    let dl = |b: &Buffer<f32>| gpu.download(b).unwrap();
    assert!(dl(&stats_b.0) == dl(&mean) && dl(&stats_b.1) == dl(&rstd), "{s:?}: the bf16 output's statistics differ");
    let mut dx = poisoned(s.len());
    group_norm_bwd_dx_chunked(s, x, gamma, beta, &mean, &rstd, silu, dy, &mut dx, chunks).unwrap();
    let (mut dx_all, mut dg, mut db) = (poisoned(s.len()), poisoned(s.channels), poisoned(s.channels));
    let (dgp, dbp) = if affine.is_some() { (Some(&mut dg), Some(&mut db)) } else { (None, None) };
    group_norm_bwd(s, x, gamma, beta, &mean, &rstd, silu, dy, &mut dx_all, dgp, dbp).unwrap();
    Outputs {
        y: dl(&y),
        y_bf16: gpu.download(&yb).unwrap().iter().map(|v| v.to_bits()).collect(),
        mean: dl(&mean),
        rstd: dl(&rstd),
        dx: dl(&dx),
        dx_own: dl(&dx_all),
        dgamma: if affine.is_some() { dl(&dg) } else { Vec::new() },
        dbeta: if affine.is_some() { dl(&db) } else { Vec::new() },
    }
}

/// The forward into `y` of either type; its statistics.
#[allow(clippy::too_many_arguments)]
fn fwd_into<X: GroupNormIn, T: GroupNormOut>(
    s: &GroupNormShape,
    x: &Buffer<X>,
    gamma: Option<&Buffer<f32>>,
    beta: Option<&Buffer<f32>>,
    silu: bool,
    y: &mut Buffer<T>,
    chunks: Chunks,
    gpu: &Gpu,
) -> (Buffer<f32>, Buffer<f32>) {
    let poisoned = || gpu.upload(&vec![f32::NAN; s.stats_len()]).unwrap();
    let (mut m, mut r) = (poisoned(), poisoned());
    group_norm_fwd_chunked(s, x, gamma, beta, silu, y, &mut m, &mut r, chunks).unwrap();
    (m, r)
}

/// Every case: the bf16-input kernels bit for bit their f32 twins on the widened input, and within
/// tolerance of the CPU reference on it.
pub fn bf16_input(gpu: &Gpu) -> Report {
    let mut rng = rng_for("group_norm_bf16_input");
    let mut report = Report::default();
    for &Case { dims: (batch, hw, channels, groups), silu, affine, chunks: want, offset } in CASES {
        let s = GroupNormShape { batch, hw, channels, groups, eps: 1e-5 };
        let chunks = if want == 0 { Chunks::for_shape(&s) } else { Chunks::forced(&s, want) };
        let what = format!("group_norm bf16 input {s:?} {chunks:?} silu={silu} affine={affine}");
        let xb: Vec<bf16> =
            random_vec(&mut rng, s.len(), -2.0, 2.0).iter().map(|v| bf16::from_f32(v + offset)).collect();
        let xw: Vec<f32> = xb.iter().map(|v| v.to_f32()).collect();
        let dy = random_vec(&mut rng, s.len(), -1.0, 1.0);
        let (gamma, beta) = (random_vec(&mut rng, channels, -1.5, 1.5), random_vec(&mut rng, channels, -1.0, 1.0));
        let up = |v: &[f32]| gpu.upload(v).unwrap();
        let (gdy, gg, gb) = (up(&dy), up(&gamma), up(&beta));
        let aff = affine.then_some((&gg, &gb));
        let got = run(gpu, &s, &gpu.upload(&xb).unwrap(), aff, silu, &gdy, chunks);
        let twin = run(gpu, &s, &up(&xw), aff, silu, &gdy, chunks);
        for (name, a, b) in [
            ("y", &got.y, &twin.y),
            ("mean", &got.mean, &twin.mean),
            ("rstd", &got.rstd, &twin.rstd),
            ("dx", &got.dx, &twin.dx),
            ("dx at the shape's chunking", &got.dx_own, &twin.dx_own),
            ("dgamma", &got.dgamma, &twin.dgamma),
            ("dbeta", &got.dbeta, &twin.dbeta),
        ] {
            assert!(bits(a) == bits(b), "{what}: {name} is not the f32 kernel's on the widened input");
        }
        assert!(got.y_bf16 == twin.y_bf16, "{what}: the bf16 output is not the f32 kernel's");
        let rounded: Vec<u16> = got.y.iter().map(|&v| bf16::from_f32(v).to_bits()).collect();
        assert!(got.y_bf16 == rounded, "{what}: the bf16 output is not the f32 output rounded");

        let cpu = CpuBackend;
        let (g, b) = if affine { (Some(&gamma), Some(&beta)) } else { (None, None) };
        let (mut y, mut mean, mut rstd) = (vec![0.0; s.len()], vec![0.0; s.stats_len()], vec![0.0; s.stats_len()]);
        cpu.group_norm_fwd(&s, &xw, g, b, silu, &mut y, &mut mean, &mut rstd).unwrap();
        let (mut dx, mut dg, mut db) = (vec![0.0; s.len()], vec![0.0; channels], vec![0.0; channels]);
        let (dgp, dbp) = if affine { (Some(&mut dg), Some(&mut db)) } else { (None, None) };
        cpu.group_norm_bwd(&s, &xw, g, b, &mean, &rstd, silu, &dy, &mut dx, dgp, dbp).unwrap();
        report.add("bf16-input mean", check_at_scale(&format!("{what}: mean"), &got.mean, &mean, rms(&xw)));
        report.add("bf16-input rstd", check(&format!("{what}: rstd"), &got.rstd, &rstd));
        report.add("bf16-input y", check(&format!("{what}: y"), &got.y, &y));
        report.add("bf16-input dx", check(&format!("{what}: dx"), &got.dx, &dx));
        if affine {
            report.add("bf16-input dgamma", check(&format!("{what}: dgamma"), &got.dgamma, &dg));
            report.add("bf16-input dbeta", check(&format!("{what}: dbeta"), &got.dbeta, &db));
        }
    }
    report
}

/// The checks, reported.
pub fn parity(gpu: &Gpu) {
    bf16_input(gpu).say("group_norm on a bf16 input vs its f32 twin and the CPU reference:");
}
