//! The whole UNet against diffusers: a tiny UNet2DModel with random weights
//! (tests/fixtures/make_unet_fixtures.py), its noised batch, output, loss and every parameter
//! gradient, reproduced by the engine on the CPU backend and on the emulated CUDA kernels.

mod common;
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers};
use ddpm::checkpoint::read_tensors;
use ddpm::diffusion::{NoiseSchedule, SchedulerConfig};
use ddpm::layout::nchw_to_nhwc;
use ddpm::model::UNetConfig;
use ddpm::model::unet::UNet;
use ddpm::model::weights::HostParams;
use ddpm::train::step::{StepNoise, loss_and_grads};
use std::collections::HashMap;

struct Case {
    unet: UNet,
    params: HostParams,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

fn load() -> Case {
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

/// Largest |got - want| relative to the largest |want| of the tensor, floored at 1e-4 of the
/// largest gradient anywhere: the key projection's bias has a gradient of exactly zero in exact
/// arithmetic (softmax ignores a per-row constant), so both sides hold only rounding noise there.
fn scaled_error(got: &[f32], want: &[f32], global: f32) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-4 * global);
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max) / scale
}

fn check<B: Layers>(b: &B) {
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
    let mut grads: Vec<B::Buf> = case.params.values.iter().map(|v| b.alloc(v.len()).unwrap()).collect();
    let loss =
        loss_and_grads(b, &case.unet, &params, &tables, &x0, n, StepNoise::Given { t: &t, eps: &eps }, &mut grads)
            .unwrap();
    let want_loss = case.tensors["loss"].1[0];
    assert!((loss - want_loss).abs() <= 1e-5 * want_loss.abs(), "loss {loss} vs diffusers {want_loss}");
    let host = HostParams::download(b, &grads).unwrap();
    let global = case
        .tensors
        .iter()
        .filter(|(k, _)| k.starts_with("grad."))
        .flat_map(|(_, v)| v.1.iter())
        .fold(0f32, |m, v| m.max(v.abs()));
    let mut worst = (0f32, String::new());
    for (name, shape, g) in host.to_torch(&case.unet.table) {
        let want = &case.tensors[&format!("grad.{name}")];
        assert_eq!(shape, want.0, "{name}");
        let err = scaled_error(&g, &want.1, global);
        assert!(err <= 1e-4, "gradient of {name}: error {err:e} relative to its largest element");
        if err > worst.0 {
            worst = (err, name);
        }
    }
    common::say(&format!(
        "{}: loss {loss} (diffusers {want_loss}); worst gradient {} at {:e} of its scale",
        b.name(),
        worst.1,
        worst.0
    ));
}

#[test]
fn loss_and_every_gradient_match_diffusers_on_cpu() {
    check(&CpuBackend);
}

#[test]
fn loss_and_every_gradient_match_diffusers_on_the_emulator() {
    check(&CudaBackend::new(common::emu()));
}

#[test]
fn inference_forward_gives_the_training_forwards_output_bit_for_bit() {
    let case = load();
    let c = &case.unet.config;
    let b = CpuBackend;
    let x = b
        .upload(&ddpm::testing::random_vec(
            &mut ddpm::testing::rng_for("predict"),
            2 * c.sample_size * c.sample_size * c.in_channels,
            -1.0,
            1.0,
        ))
        .unwrap();
    let t = b.upload(&[3.0, 700.0]).unwrap();
    let params = case.params.upload(&b).unwrap();
    let tape = case.unet.forward(&b, &params, &x, &t, 2).unwrap();
    let eps = case.unet.predict(&b, &params, &x, &t, 2).unwrap();
    assert_eq!(tape.output(), &eps);
}
