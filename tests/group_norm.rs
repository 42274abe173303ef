//! GroupNorm (with and without fused SiLU): the CPU reference's backward against f64 finite
//! differences, PyTorch's numbers on every backend, the kernels on the emulator against the CPU
//! reference, and length errors.

mod common;
use common::grad_checks::{assert_grad, dot, random_f64};
use common::group_norm_checks;
use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers};
use ddpm::cpu::group_norm;
use ddpm::shapes::GroupNormShape;
use ddpm::testing::rng_for;

/// L = sum(r * GroupNorm(x)) in f64; gradients of x, gamma and beta.
fn group_norm_grad_check(s: GroupNormShape, silu: bool, affine: bool, seed: &str) {
    let mut rng = rng_for(seed);
    let x = random_f64(&mut rng, s.len(), -2.0, 3.0);
    let r = random_f64(&mut rng, s.len(), -1.0, 1.0);
    let (gamma, beta) = (random_f64(&mut rng, s.channels, -1.5, 1.5), random_f64(&mut rng, s.channels, -1.0, 1.0));
    let (g, b) = if affine { (Some(gamma.as_slice()), Some(beta.as_slice())) } else { (None, None) };
    let loss = |x: &[f64], g: Option<&[f64]>, b: Option<&[f64]>| {
        let (mut y, mut m, mut rs) = (vec![0.0; s.len()], vec![0.0; s.stats_len()], vec![0.0; s.stats_len()]);
        group_norm::group_norm_fwd(&s, x, g, b, silu, &mut y, &mut m, &mut rs);
        dot(&r, &y)
    };
    let (mut y, mut mean, mut rstd) = (vec![0.0; s.len()], vec![0.0; s.stats_len()], vec![0.0; s.stats_len()]);
    group_norm::group_norm_fwd(&s, &x, g, b, silu, &mut y, &mut mean, &mut rstd);
    let (mut dx, mut dgamma, mut dbeta) =
        (vec![f64::NAN; s.len()], vec![f64::NAN; s.channels], vec![f64::NAN; s.channels]);
    group_norm::group_norm_bwd(&s, &x, g, b, &mean, &rstd, silu, &r, &mut dx, Some(&mut dgamma), Some(&mut dbeta));
    let what = format!("group_norm {s:?} silu={silu} affine={affine}");
    assert_grad(&format!("{what} dx"), &dx, &x, |x| loss(x, g, b));
    if affine {
        assert_grad(&format!("{what} dgamma"), &dgamma, &gamma, |gm| loss(&x, Some(gm), b));
        assert_grad(&format!("{what} dbeta"), &dbeta, &beta, |bt| loss(&x, g, Some(bt)));
    }
}

#[test]
fn group_norm_backward_matches_finite_differences() {
    for (i, (batch, hw, channels, groups)) in
        [(2, 3, 4, 2), (1, 5, 6, 3), (3, 2, 3, 1), (2, 1, 4, 4)].into_iter().enumerate()
    {
        for silu in [false, true] {
            for affine in [true, false] {
                let s = GroupNormShape { batch, hw, channels, groups, eps: 1e-5 };
                group_norm_grad_check(s, silu, affine, &format!("gn_grad_{i}_{silu}_{affine}"));
            }
        }
    }
}

on_every_backend! {
    group_norm_matches_pytorch => |b| {
        group_norm_checks::group_norm_matches_pytorch(b).say(&format!("group_norm vs PyTorch ({}):", Backend::name(b)))
    },
}

#[test]
fn group_norm_kernels_match_cpu_reference_on_emulator() {
    group_norm_checks::kernels_match(&common::emu()).say("group_norm vs CPU reference (emulator):");
}

#[test]
fn group_norm_on_a_bf16_input_is_its_f32_twin_on_the_emulator() {
    common::group_norm_bf16_checks::parity(&common::emu());
}

/// The split path's policy: only when batch x groups blocks are too few and the groups large.
#[test]
fn group_norm_splits_only_large_groups_with_few_blocks() {
    use ddpm::cuda::group_norm::Chunks;
    let shape = |batch, hw, channels| GroupNormShape { batch, hw, channels, groups: 32, eps: 1e-5 };
    let count = |batch, hw, channels| Chunks::for_shape(&shape(batch, hw, channels)).count;
    // The cifar10 UNet at batch 1: its 32 x 32 levels (4096 to 12288 elements per group).
    assert_eq!([count(1, 1024, 128), count(1, 1024, 256), count(1, 1024, 384)], [1, 2, 3]);
    assert_eq!([count(1, 256, 256), count(1, 64, 256), count(1, 16, 512)], [1, 1, 1]);
    // A 256 x 256 UNet's top level: 16 chunks of 16384 elements, 512 blocks; 64 at most.
    assert_eq!(Chunks::for_shape(&shape(1, 65536, 128)), Chunks { len: 16384, count: 16 });
    assert_eq!(Chunks::for_shape(&GroupNormShape { groups: 1, ..shape(1, 65536, 128) }).count, 64);
    // Batch 16 already gives 512 blocks; batch 8 gets 2 chunks each.
    assert_eq!([count(16, 65536, 128), count(8, 65536, 128)], [1, 2]);
    // Forced chunkings never leave an empty chunk.
    for (group, want) in [(7, 7), (9, 4), (111, 4), (1000, 64), (5, 100)] {
        let c = Chunks::forced(&GroupNormShape { batch: 1, hw: group, channels: 1, groups: 1, eps: 1e-5 }, want);
        assert!((c.count - 1) * c.len < group && c.count * c.len >= group, "{group} in {want}: {c:?}");
    }
}

#[test]
fn wrong_buffer_lengths_are_errors_not_panics() {
    let s = GroupNormShape { batch: 2, hw: 3, channels: 4, groups: 2, eps: 1e-5 };
    let cpu = CpuBackend;
    let (x, mut y, mut stats) = (vec![0.5; s.len()], vec![0.0; s.len() - 1], vec![0.0; s.stats_len()]);
    let mut rstd = stats.clone();
    let err = cpu.group_norm_fwd(&s, &x, None, None, false, &mut y, &mut stats, &mut rstd).unwrap_err();
    assert!(format!("{err:#}").contains("y has"), "{err:#}");

    let g = CudaBackend::new(common::emu());
    let up = |v: &[f32]| g.upload(v).unwrap();
    let (gx, gamma_short, mut gy, mut gm, mut gr) =
        (up(&x), up(&[1.0; 3]), up(&vec![0.0; s.len()]), up(&stats), up(&stats));
    assert!(g.group_norm_fwd(&s, &gx, Some(&gamma_short), None, true, &mut gy, &mut gm, &mut gr).is_err());
    let (gdy, mut gdx, mut dgamma_short) = (up(&x), up(&x), up(&[0.0; 5]));
    let r = g.group_norm_bwd(&s, &gx, None, None, &gm, &gr, false, &gdy, &mut gdx, Some(&mut dgamma_short), None);
    assert!(r.is_err());
    // A chunking that leaves part of each 6-element group out, or an empty chunk, is refused.
    use ddpm::cuda::group_norm::{Chunks, group_norm_bwd_dx_chunked, group_norm_fwd_chunked};
    for bad in [Chunks { len: 2, count: 2 }, Chunks { len: 3, count: 3 }, Chunks { len: 0, count: 2 }] {
        let err = group_norm_fwd_chunked(&s, &gx, None, None, false, &mut gy, &mut gm, &mut gr, bad).unwrap_err();
        assert!(format!("{err:#}").contains("does not tile a group of 6 elements"), "{err:#}");
        let err = group_norm_bwd_dx_chunked(&s, &gx, None, None, &gm, &gr, false, &gdy, &mut gdx, bad).unwrap_err();
        assert!(format!("{err:#}").contains("does not tile"), "{err:#}");
    }
}
