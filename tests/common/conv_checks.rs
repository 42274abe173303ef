//! Checks of the conv ops written once over a device or backend: against PyTorch/diffusers'
//! fixtures (tests/fixtures/conv.json), and the CUDA backend against the CPU backend. Run on the
//! CPU backend and the emulator in tests/conv.rs, on a real GPU in tests/gpu.rs.

use super::fixtures::{Fixture, f32s};
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers};
use ddpm::gpu::Gpu;
use ddpm::layout::{nchw_to_nhwc, oihw_to_ohwi};
use ddpm::shapes::{Conv2dShape, Padding};
use ddpm::testing::{assert_close, random_vec, rng_for, tol};
use serde_json::Value;

/// The largest absolute and relative error of one tensor against its reference.
pub struct Worst {
    pub what: String,
    pub abs: f32,
    pub rel: f32,
}

fn worst(what: String, got: &[f32], want: &[f32]) -> Worst {
    let (mut abs, mut rel) = (0f32, 0f32);
    for (g, w) in got.iter().zip(want) {
        let e = (g - w).abs();
        abs = abs.max(e);
        if *w != 0.0 {
            rel = rel.max(e / w.abs());
        }
    }
    Worst { what, abs, rel }
}

fn fixture_shape(c: &Value) -> Conv2dShape {
    let u = |k: &str| c[k].as_u64().unwrap() as usize;
    let s = if c.get("downsample_padding").is_some() {
        Conv2dShape::downsample(u("batch"), u("h"), u("w"), u("in_c"), u("out_c"), u("downsample_padding"))
    } else {
        Conv2dShape {
            batch: u("batch"),
            in_h: u("h"),
            in_w: u("w"),
            in_c: u("in_c"),
            out_c: u("out_c"),
            kernel: u("kernel"),
            stride: u("stride"),
            pad: Padding::same(u("padding")),
        }
    };
    assert_eq!((s.out_h(), s.out_w()), (u("out_h"), u("out_w")), "{}: output size", c["name"]);
    s
}

/// PyTorch's CPU convolution sums in its own order (oneDNN's blocking), so neither side is
/// correctly rounded: rtol 1e-5 and an atol of 1e-5 times the tensor's RMS, for the elements
/// that cancel to near zero.
fn fixture_close(what: &str, got: &[f32], want: &[f32]) {
    let rms = (want.iter().map(|v| v * v).sum::<f32>() / want.len() as f32).sqrt();
    assert_close(what, got, want, 1e-5 * rms, 1e-5);
}

/// Every fixture case on `b`: y, dx, dw and db (of L = sum(r * y)) against PyTorch. Returns the
/// worst errors per tensor and case.
pub fn fixtures_match<B: Layers>(b: &B) -> Vec<Worst> {
    let f = Fixture::load("conv.json");
    let mut report = Vec::new();
    for c in f.json["cases"].as_array().unwrap() {
        let s = fixture_shape(c);
        let name = c["name"].as_str().unwrap();
        let (n, k) = (s.batch, s.kernel);
        let x = nchw_to_nhwc(&f32s(&c["x"]), n, s.in_c, s.in_h, s.in_w);
        let w = oihw_to_ohwi(&f32s(&c["weight"]), s.out_c, s.in_c, k, k);
        let r = nchw_to_nhwc(&f32s(&c["r"]), n, s.out_c, s.out_h(), s.out_w());
        let (bx, bw, bb, br) =
            (b.upload(&x).unwrap(), b.upload(&w).unwrap(), b.upload(&f32s(&c["bias"])).unwrap(), b.upload(&r).unwrap());

        let mut y = b.upload(&vec![f32::NAN; s.y_len()]).unwrap();
        b.conv2d_fwd(&s, &bx, &bw, Some(&bb), &mut y).unwrap();
        let mut dx = b.upload(&vec![f32::NAN; s.x_len()]).unwrap();
        b.conv2d_bwd_input(&s, &br, &bw, &mut dx).unwrap();
        let (mut dw, mut db) =
            (b.upload(&vec![f32::NAN; s.w_len()]).unwrap(), b.upload(&vec![f32::NAN; s.out_c]).unwrap());
        b.conv2d_bwd_weight(&s, &bx, &br, &mut dw, Some(&mut db)).unwrap();

        let want = [
            ("y", nchw_to_nhwc(&f32s(&c["y"]), n, s.out_c, s.out_h(), s.out_w()), y),
            ("dx", nchw_to_nhwc(&f32s(&c["dx"]), n, s.in_c, s.in_h, s.in_w), dx),
            ("dweight", oihw_to_ohwi(&f32s(&c["dweight"]), s.out_c, s.in_c, k, k), dw),
            ("dbias", f32s(&c["dbias"]), db),
        ];
        for (tensor, want, got) in want {
            let what = format!("{name} {tensor} on {}", b.name());
            let got = b.download(&got).unwrap();
            fixture_close(&what, &got, &want);
            report.push(worst(what, &got, &want));
        }
    }
    report
}

/// The parity shapes: channel counts 1, 3, 5, 33, H != W, batch 1 and 3, every padding kind;
/// out_c up to 8 takes the narrow weight-gradient kernel.
fn parity_shapes() -> Vec<Conv2dShape> {
    let odd = Conv2dShape {
        batch: 3,
        in_h: 11,
        in_w: 8,
        in_c: 3,
        out_c: 5,
        kernel: 5,
        stride: 3,
        pad: Padding { top: 2, bottom: 0, left: 1, right: 3 },
    };
    vec![
        Conv2dShape::conv3x3(1, 7, 5, 1, 3),
        Conv2dShape::conv3x3(3, 9, 12, 5, 33),
        Conv2dShape::conv3x3(1, 7, 5, 33, 1),
        Conv2dShape::conv1x1(3, 7, 5, 33, 5),
        Conv2dShape::conv1x1(1, 9, 12, 3, 1),
        Conv2dShape::downsample(3, 9, 12, 5, 33, 1),
        Conv2dShape::downsample(1, 7, 5, 33, 3, 1),
        Conv2dShape::downsample(3, 7, 5, 3, 5, 0),
        Conv2dShape::downsample(1, 9, 12, 33, 1, 0),
        odd,
        // Several row and column tiles, and a weight gradient split into pixel chunks.
        Conv2dShape::conv3x3(2, 16, 16, 64, 64),
        // A UNet's conv_out in small: 3 output channels take the narrow weight-gradient kernel
        // (kernels/conv.cu), here over 8 pixel chunks and 3 blocks of columns.
        Conv2dShape::conv3x3(2, 16, 16, 64, 3),
    ]
}

/// f32 sums of `terms` products of values in [-1, 1], in a different order (tiles, FMA, pixel
/// chunks) than the CPU reference. Each side's rounding error is a random walk with a standard
/// deviation of about 2^-24 * terms / 7 for such inputs; 2e-7 per term is over ten of those for
/// the difference, while a dropped or misplaced term (|x w| ~ 0.25) is still a gross failure.
fn parity_atol(terms: usize) -> f32 {
    1e-6 + 2e-7 * terms as f32
}

/// Every conv kernel (forward, both backwards, with and without bias) on `gpu` against the CPU
/// backend, on fresh random data with NaN-poisoned outputs. Weight gradients must be the same
/// bits on a second run.
pub fn parity(gpu: &Gpu) {
    let b = CudaBackend::new(gpu.clone());
    let mut rng = rng_for("conv2d_parity");
    let poisoned = |n: usize| b.upload(&vec![f32::NAN; n]).unwrap();
    // Worst error per op over all shapes, for the report.
    let mut report: Vec<Worst> = ["conv2d_fwd", "conv2d_bwd_input", "conv2d_bwd_weight dw", "conv2d_bwd_weight db"]
        .iter()
        .map(|op| Worst { what: op.to_string(), abs: 0.0, rel: 0.0 })
        .collect();
    let mut note = |i: usize, got: &[f32], want: &[f32]| {
        let w = worst(String::new(), got, want);
        report[i].abs = report[i].abs.max(w.abs);
        report[i].rel = report[i].rel.max(w.rel);
    };
    for (case, s) in parity_shapes().into_iter().enumerate() {
        let bias = case % 2 == 0;
        let x = random_vec(&mut rng, s.x_len(), -1.0, 1.0);
        let w = random_vec(&mut rng, s.w_len(), -1.0, 1.0);
        let bv = random_vec(&mut rng, s.out_c, -1.0, 1.0);
        let dy = random_vec(&mut rng, s.y_len(), -1.0, 1.0);
        let (gx, gw, gb, gdy) =
            (b.upload(&x).unwrap(), b.upload(&w).unwrap(), b.upload(&bv).unwrap(), b.upload(&dy).unwrap());
        let what = |op: &str| format!("{op} {s:?} bias={bias}");

        let mut want = vec![f32::NAN; s.y_len()];
        CpuBackend.conv2d_fwd(&s, &x, &w, bias.then_some(&bv), &mut want).unwrap();
        let mut y = poisoned(s.y_len());
        b.conv2d_fwd(&s, &gx, &gw, bias.then_some(&gb), &mut y).unwrap();
        let fwd_terms = s.kernel * s.kernel * s.in_c;
        let y = b.download(&y).unwrap();
        assert_close(&what("conv2d_fwd"), &y, &want, parity_atol(fwd_terms), tol::F32_RTOL);
        note(0, &y, &want);

        let mut want = vec![f32::NAN; s.x_len()];
        CpuBackend.conv2d_bwd_input(&s, &dy, &w, &mut want).unwrap();
        let mut dx = poisoned(s.x_len());
        b.conv2d_bwd_input(&s, &gdy, &gw, &mut dx).unwrap();
        let dx_terms = s.kernel * s.kernel * s.out_c;
        let dx = b.download(&dx).unwrap();
        assert_close(&what("conv2d_bwd_input"), &dx, &want, parity_atol(dx_terms), tol::F32_RTOL);
        note(1, &dx, &want);

        let (mut want_dw, mut want_db) = (vec![f32::NAN; s.w_len()], vec![f32::NAN; s.out_c]);
        CpuBackend.conv2d_bwd_weight(&s, &x, &dy, &mut want_dw, bias.then_some(&mut want_db)).unwrap();
        let run = || {
            let (mut dw, mut db) = (poisoned(s.w_len()), poisoned(s.out_c));
            b.conv2d_bwd_weight(&s, &gx, &gdy, &mut dw, bias.then_some(&mut db)).unwrap();
            (b.download(&dw).unwrap(), b.download(&db).unwrap())
        };
        let (dw, db) = run();
        let dw_terms = s.batch * s.out_h() * s.out_w();
        assert_close(&what("conv2d_bwd_weight dw"), &dw, &want_dw, parity_atol(dw_terms), tol::F32_RTOL);
        note(2, &dw, &want_dw);
        if bias {
            assert_close(&what("conv2d_bwd_weight db"), &db, &want_db, parity_atol(dw_terms), tol::F32_RTOL);
            note(3, &db, &want_db);
        } else {
            assert!(db.iter().all(|v| v.is_nan()), "{}: db written without a bias", what("conv2d_bwd_weight"));
        }
        let (dw2, db2) = run();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&dw), bits(&dw2), "{}: dw bits differ between runs", what("conv2d_bwd_weight"));
        assert_eq!(bits(&db), bits(&db2), "{}: db bits differ between runs", what("conv2d_bwd_weight"));
    }
    for w in report {
        super::say(&format!(
            "conv parity on {}: {} largest abs error {:.3e}, rel {:.3e}",
            gpu.name(),
            w.what,
            w.abs,
            w.rel
        ));
    }
}
