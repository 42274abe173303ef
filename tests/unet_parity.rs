//! The whole UNet against diffusers: a tiny UNet2DModel with random weights
//! (tests/fixtures/make_unet_fixtures.py), its noised batch, output, loss and every parameter
//! gradient, reproduced by the engine on every backend (the CPU reference, the fast CPU path, the
//! emulated CUDA kernels, a GPU when present), compared element by element.

mod common;
use common::unet_checks::{check, load};
use ddpm::backend::{Backend, CpuBackend};

on_every_backend!(loss_and_every_gradient_match_diffusers => check);

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
