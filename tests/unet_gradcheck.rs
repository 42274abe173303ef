//! The whole UNet's backward against central finite differences in f64: a tiny config (8x8
//! images, two resolutions, multi-head attention), every parameter tensor sampled.

mod common;
use ddpm::backend::{Backend, CpuF64Backend};
use ddpm::model::UNetConfig;
use ddpm::model::unet::UNet;
use ddpm::model::weights::HostParams;
use ddpm::testing::{assert_gradient, central_difference, random_vec, rng_for};
use rand::RngExt;

fn tiny_config() -> UNetConfig {
    UNetConfig {
        sample_size: 8,
        block_out_channels: vec![8, 16],
        norm_num_groups: 4,
        attention_head_dim: Some(4),
        norm_eps: 1e-5,
        flip_sin_to_cos: true,
        freq_shift: 0.0,
        downsample_padding: 1,
        mid_block_scale_factor: 1.3,
        ..UNetConfig::tiny()
    }
}

#[test]
fn every_parameter_tensor_matches_finite_differences_in_f64() {
    let b = CpuF64Backend;
    let unet = UNet::new(tiny_config()).unwrap();
    let mut rng = rng_for("unet_gradcheck");
    let mut host = HostParams::init(&unet.table, 7);
    for (spec, v) in unet.table.specs.iter().zip(host.values.iter_mut()) {
        if spec.name.contains("norm") {
            // Random affine GroupNorm parameters, so their gradients are not a special case.
            let noise = random_vec(&mut rng, v.len(), -0.3, 0.3);
            v.iter_mut().zip(noise).for_each(|(p, n)| *p += n);
        }
    }
    let batch = 2;
    let c = &unet.config;
    let n_in = batch * c.sample_size * c.sample_size * c.in_channels;
    let x = b.upload(&random_vec(&mut rng, n_in, -1.5, 1.5)).unwrap();
    let t = b.upload(&[17.0, 803.0]).unwrap();
    let r: Vec<f64> = random_vec(&mut rng, batch * c.sample_size * c.sample_size * c.out_channels, -1.0, 1.0)
        .into_iter()
        .map(f64::from)
        .collect();
    let loss = |params: &[Vec<f64>]| -> f64 {
        let tape = unet.forward(&b, params, &x, &t, batch).unwrap();
        b.download_f64(tape.output()).iter().zip(&r).map(|(y, r)| y * r).sum()
    };
    let mut params: Vec<Vec<f64>> = host.upload(&b).unwrap();
    let tape = unet.forward(&b, &params, &x, &t, batch).unwrap();
    let mut grads: Vec<Vec<f64>> = params.iter().map(|p| vec![f64::NAN; p.len()]).collect();
    unet.backward(&b, &params, &x, tape, r.clone(), &mut grads).unwrap();

    let h = 1e-5;
    let mut checked = 0;
    for (i, spec) in unet.table.specs.iter().enumerate() {
        let n = params[i].len();
        let picks: Vec<usize> = [0, n - 1].into_iter().chain((0..2).map(|_| rng.random_range(0..n))).collect();
        for k in picks {
            let numeric = central_difference(params.as_mut_slice(), h, |p| &mut p[i][k], loss);
            assert_gradient(format_args!("{}[{k}]", spec.name), grads[i][k], numeric);
            checked += 1;
        }
    }
    common::say(&format!("whole-UNet gradient check: {checked} parameters from all {} tensors", unet.table.len()));
}
