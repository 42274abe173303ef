//! The whole UNet against diffusers: a tiny UNet2DModel with random weights
//! (tests/fixtures/make_unet_fixtures.py), its noised batch, prediction, loss and every
//! parameter gradient, compared element by element (tests/unet_parity.rs runs it on every
//! backend, tests/gpu.rs on a GPU).

use ddpm::backend::Layers;
use ddpm::checkpoint::read_tensors;
use ddpm::diffusion::{Noise, NoiseSchedule, SchedulerConfig};
use ddpm::layout::nchw_to_nhwc;
use ddpm::model::UNetConfig;
use ddpm::model::unet::UNet;
use ddpm::model::weights::HostParams;
use ddpm::testing::assert_close;
use ddpm::train::step::{StepNoise, loss_and_grads};
use std::collections::HashMap;

pub struct Case {
    pub unet: UNet,
    pub params: HostParams,
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

pub fn load() -> Case {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet_tiny.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let config = UNetConfig::from_json(&meta.metadata().as_ref().unwrap()["config"]).unwrap();
    let unet = UNet::new(config).unwrap();
    let tensors = read_tensors(&path).unwrap();
    let torch_params = tensors
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("param.").map(|name| (name.to_string(), v.clone())))
        .collect();
    let params = HostParams::from_torch(&unet.table, torch_params).unwrap();
    Case { unet, params, tensors }
}

/// Element-wise tolerances against diffusers (float32 PyTorch on the CPU), each
/// |got - want| <= atol + rtol * |want|. The noisy input is one fused multiply-add per element.
/// The prediction and the gradients are sums over thousands of terms, so they get an absolute
/// floor relative to the tensor family's largest element, since entries near zero carry only
/// the rounding noise of terms much larger than themselves. (The key projection's bias has an
/// exactly zero gradient in exact arithmetic: softmax ignores a per-row constant.)
const NOISY: (f32, f32) = (1e-6, 1e-5);
const PRED_RTOL: f32 = 1e-4;
const PRED_ATOL_OF_MAX: f32 = 1e-5;
const GRAD_RTOL: f32 = 1e-4;
const GRAD_ATOL_OF_MAX: f32 = 1e-6;

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// Noisy input, prediction, loss and every gradient on `b` against the fixture.
pub fn check<B: Layers>(b: &B) {
    let case = load();
    let c = &case.unet.config;
    let (n, h) = (2, c.sample_size);
    let nhwc = |name: &str, ch: usize| nchw_to_nhwc(&case.tensors[name].1, n, ch, h, h);
    let x0 = b.upload(&nhwc("x0", c.in_channels)).unwrap();
    let eps = b.upload(&nhwc("eps", c.out_channels)).unwrap();
    let t: Vec<u32> = case.tensors["t"].1.iter().map(|&v| v as u32).collect();
    let schedule = NoiseSchedule::new(&SchedulerConfig::default().beta_schedule, 1000).unwrap();
    let tables = b.schedule_tables(&schedule).unwrap();
    let params = case.params.upload(b).unwrap();

    // The intermediate tensors first: a wrong noising or forward pass is named there, before
    // it shows up in every gradient.
    let mut xt = b.alloc(B::len(&x0)).unwrap();
    b.q_sample(&x0, &b.upload_u32(&t).unwrap(), &tables, Noise::Given(&eps), &mut xt).unwrap();
    let want_noisy = nhwc("noisy", c.in_channels);
    assert_close(&format!("{}: noisy input", b.name()), &b.download(&xt).unwrap(), &want_noisy, NOISY.0, NOISY.1);
    let t_float = b.upload(&t.iter().map(|&v| v as f32).collect::<Vec<_>>()).unwrap();
    let pred = b.download(&case.unet.predict(b, &params, &xt, &t_float, n).unwrap()).unwrap();
    let want_pred = nhwc("pred", c.out_channels);
    assert_close(
        &format!("{}: prediction", b.name()),
        &pred,
        &want_pred,
        PRED_ATOL_OF_MAX * max_abs(&want_pred),
        PRED_RTOL,
    );

    let mut grads: Vec<B::Buf> = case.params.values.iter().map(|v| b.alloc(v.len()).unwrap()).collect();
    let loss =
        loss_and_grads(b, &case.unet, &params, &tables, &x0, n, StepNoise::Given { t: &t, eps: &eps }, &mut grads)
            .unwrap();
    let want_loss = case.tensors["loss"].1[0];
    assert!((loss - want_loss).abs() <= 1e-5 * want_loss.abs(), "loss {loss} vs diffusers {want_loss}");
    let host = HostParams::download(b, &grads).unwrap();
    let global =
        case.tensors.iter().filter(|(k, _)| k.starts_with("grad.")).fold(0f32, |m, (_, v)| m.max(max_abs(&v.1)));
    let atol = GRAD_ATOL_OF_MAX * global;
    let (mut worst, mut worst_name) = (0f32, String::new());
    for (name, shape, g) in host.to_torch(&case.unet.table) {
        let want = &case.tensors[&format!("grad.{name}")];
        assert_eq!(shape, want.0, "{name}");
        assert_close(&format!("{}: gradient of {name}", b.name()), &g, &want.1, atol, GRAD_RTOL);
        // How close to the bound it came: the largest error over its allowance.
        let used =
            g.iter().zip(&want.1).map(|(g, w)| (g - w).abs() / (atol + GRAD_RTOL * w.abs())).fold(0f32, f32::max);
        if used > worst {
            (worst, worst_name) = (used, name);
        }
    }
    super::say(&format!(
        "{}: loss {loss} (diffusers {want_loss}); noisy, prediction and every gradient element within bounds; \
         closest gradient {worst_name} at {:.0}% of its allowance",
        b.name(),
        100.0 * worst
    ));
}
