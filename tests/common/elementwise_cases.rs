//! Every elementwise, SiLU and resample op of the fast path and its reference on the same
//! inputs: shared by tests/fast_ops.rs (determinism) and tests/simd_levels.rs (every SIMD level).

use ddpm::cpu::{elementwise as ref_elementwise, resample as ref_resample, silu as ref_silu};
use ddpm::fast::{elementwise, resample, silu};
use ddpm::shapes::ImageShape;
use ddpm::testing::random_vec;
use rand::rngs::StdRng;

fn nan(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

/// Lengths: one chunk or less (serial path), and several chunks with a ragged end (parallel).
pub const LENGTHS: [usize; 2] = [1001, 3 * elementwise::CHUNK + 17];

/// Every elementwise op's outputs for one set of inputs.
pub fn elementwise_outputs(rng: &mut StdRng, len: usize) -> Vec<(String, Vec<f32>, Vec<f32>)> {
    let (x, y0, d) =
        (random_vec(rng, len, -9.0, 9.0), random_vec(rng, len, -2.0, 2.0), random_vec(rng, len, -1.0, 1.0));
    let mut cases = Vec::new();
    let mut case = |name: &str, got: Vec<f32>, want: Vec<f32>| cases.push((format!("{name} len {len}"), got, want));

    let (mut got, mut want) = (nan(len), nan(len));
    elementwise::fill(&mut got, 0.37);
    ref_elementwise::fill(&mut want, 0.37);
    case("fill", got, want);
    let (mut got, mut want) = (y0.clone(), y0.clone());
    elementwise::axpy(-0.7, &x, &mut got);
    ref_elementwise::axpy(-0.7, &x, &mut want);
    case("axpy", got, want);
    let (mut got, mut want) = (nan(len), nan(len));
    silu::silu_fwd(&x, &mut got);
    ref_silu::silu_fwd(&x, &mut want);
    case("silu_fwd", got, want);
    let (mut got, mut want) = (nan(len), nan(len));
    silu::silu_bwd(&x, &d, &mut got);
    ref_silu::silu_bwd(&x, &d, &mut want);
    case("silu_bwd", got, want);
    let (mut got, mut want) = (nan(len), nan(len));
    elementwise::add_scaled(&x, &y0, std::f32::consts::SQRT_2, &mut got);
    ref_elementwise::add_scaled(&x, &y0, std::f32::consts::SQRT_2, &mut want);
    case("add_scaled", got, want);
    let (mut got, mut want) = (nan(len), nan(len));
    elementwise::div_scalar(&x, 3.0, &mut got);
    ref_elementwise::div_scalar(&x, 3.0, &mut want);
    case("div_scalar", got, want);
    cases
}

/// Every image op's outputs on an odd NHWC shape.
pub fn image_outputs(rng: &mut StdRng, s: ImageShape) -> Vec<(String, Vec<f32>, Vec<f32>)> {
    let (x, v, dy4) = (
        random_vec(rng, s.len(), -1.0, 1.0),
        random_vec(rng, s.batch * s.c, -1.0, 1.0),
        random_vec(rng, 4 * s.len(), -1.0, 1.0),
    );
    let mut cases = Vec::new();
    let mut case = |name: &str, got: Vec<f32>, want: Vec<f32>| cases.push((format!("{name} {s:?}"), got, want));

    let (mut got, mut want) = (nan(s.len()), nan(s.len()));
    elementwise::add_channel_bias(&s, &x, &v, &mut got);
    ref_elementwise::add_channel_bias(&s, &x, &v, &mut want);
    case("add_channel_bias", got, want);
    let (mut got, mut want) = (nan(s.batch * s.c), nan(s.batch * s.c));
    elementwise::channel_sum(&s, &x, &mut got);
    ref_elementwise::channel_sum(&s, &x, &mut want);
    case("channel_sum", got, want);
    let (mut got, mut want) = (nan(4 * s.len()), nan(4 * s.len()));
    resample::upsample_nearest2x_fwd(&s, &x, &mut got);
    ref_resample::upsample_nearest2x_fwd(&s, &x, &mut want);
    case("upsample_nearest2x_fwd", got, want);
    let (mut got, mut want) = (nan(s.len()), nan(s.len()));
    resample::upsample_nearest2x_bwd(&s, &dy4, &mut got);
    ref_resample::upsample_nearest2x_bwd(&s, &dy4, &mut want);
    case("upsample_nearest2x_bwd", got, want);

    let (rows, c1, c2) = (s.batch * s.h * s.w, s.c, 19);
    let b = random_vec(rng, rows * c2, -1.0, 1.0);
    let (mut got, mut want) = (nan(rows * (c1 + c2)), nan(rows * (c1 + c2)));
    elementwise::concat_channels(rows, c1, c2, &x, &b, &mut got);
    ref_elementwise::concat_channels(rows, c1, c2, &x, &b, &mut want);
    let y = got.clone();
    case("concat_channels", got, want);
    let (mut ga, mut gb, mut wa, mut wb) = (nan(rows * c1), nan(rows * c2), nan(rows * c1), nan(rows * c2));
    elementwise::split_channels(rows, c1, c2, &y, &mut ga, &mut gb);
    ref_elementwise::split_channels(rows, c1, c2, &y, &mut wa, &mut wb);
    case("split_channels a", ga, wa);
    case("split_channels b", gb, wb);
    cases
}

/// Image shapes: small (serial), and batch 3 with an odd number of pixels and channels over
/// several parallel tasks.
pub const IMAGES: [ImageShape; 2] =
    [ImageShape { batch: 1, h: 3, w: 5, c: 24 }, ImageShape { batch: 3, h: 17, w: 13, c: 136 }];
