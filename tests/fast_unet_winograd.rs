//! The fast CPU path's whole UNet at a size where its 3x3 convolutions take Winograd F(4x4, 3x3)
//! (src/fast/winograd4.rs: at least 256 4x4 tiles, so 32x32 at batch 4 here) against the f32
//! reference: prediction and every parameter gradient (the weight gradients of those convs by
//! F(4x4) too: src/fast/winograd_grad.rs). The op tests (tests/fast_conv.rs, fast_winograd.rs)
//! bound F(4x4)'s error per call; this checks that through a whole forward and backward the larger
//! rounding error of F(4x4) (about 19x F(2x2)'s in the worst tile corner) stays f32-sized.

mod common;
use common::cuda_bf16_checks::{Grads, compare, grads_on};
use ddpm::backend::{CpuBackend, FastCpuBackend};
use ddpm::model::UNetConfig;
use ddpm::model::unet::UNet;
use ddpm::model::weights::HostParams;
use ddpm::testing::{random_vec, rng_for};

#[test]
fn whole_unet_with_winograd_f4_matches_the_reference() {
    let config = UNetConfig { sample_size: 32, ..UNetConfig::tiny() };
    let unet = UNet::new(config.clone()).unwrap();
    let host = HostParams::init(&unet.table, 5);
    let mut rng = rng_for("fast unet winograd f4");
    let (n, len) = (4, 4 * 32 * 32 * config.in_channels);
    let x0 = random_vec(&mut rng, len, -1.0, 1.0);
    let eps = random_vec(&mut rng, len, -2.0, 2.0);
    let t = [11u32, 250, 600, 987];
    let reference: Grads = grads_on(&CpuBackend, &unet, &host, &x0, &eps, &t, n);
    let fast: Grads = grads_on(&FastCpuBackend, &unet, &host, &x0, &eps, &t, n);
    let (pred, _) = compare(&fast.0, &reference.0);
    let largest =
        reference.2.iter().map(|(_, g)| g.iter().map(|&v| (v as f64).powi(2)).sum::<f64>()).fold(0f64, f64::max);
    let mut worst = (0f64, String::new());
    for ((name, want), (_, got)) in reference.2.iter().zip(&fast.2) {
        if want.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() <= 1e-12 * largest {
            continue; // zero in exact arithmetic (a key projection's bias)
        }
        let (rel, _) = compare(got, want);
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
    }
    common::say(&format!(
        "fast f32 (Winograd F4) vs reference, tiny UNet 32x32 batch 4: prediction {pred:.2e}, worst gradient {} at {:.2e} \
         (relative L2)",
        worst.1, worst.0
    ));
    // f32-sized. Measured (2-core AMD EPYC, AVX2): prediction 3.2e-6 and worst gradient 5.0e-6
    // with F(4x4); 1.6e-6 and 2.5e-6 with DDPM_WINOGRAD=2 (so F(4x4) does run here) or im2col.
    // With the Winograd weight gradients (Xeon, AVX-512): 3.2e-6 and 5.5e-6; 1.6e-6 and 2.7e-6
    // with DDPM_WINOGRAD=2; 1.6e-6 and 2.6e-6 with DDPM_NO_WINOGRAD=1.
    assert!(pred < 1e-5, "prediction relative L2 {pred:.2e}");
    assert!(worst.0 < 1e-4, "gradient of {} relative L2 {:.2e}", worst.1, worst.0);
}
