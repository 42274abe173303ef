//! Attention: the CPU reference's backward against finite differences, both backends against
//! PyTorch's scaled_dot_product_attention, the kernels on the emulator against the CPU backend,
//! and the errors for wrong sizes.

mod common;
use common::attention_checks::{self, fixtures_match, report_fixture_errors};
use ddpm::backend::{CpuBackend, CudaBackend, Layers};
use ddpm::cpu::attention::{attention_bwd, attention_fwd};
use ddpm::shapes::AttentionShape;
use ddpm::testing::{GRAD_CHECK_STEP, assert_gradient, central_difference, random_vec, rng_for};

fn f64s(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f64> {
    random_vec(rng, n, -1.5, 1.5).into_iter().map(f64::from).collect()
}

/// L = sum(r * out) for the f64 reference.
fn loss(s: &AttentionShape, q: &[f64], k: &[f64], v: &[f64], r: &[f64]) -> f64 {
    let (mut out, mut lse) = (vec![0.0; s.len()], vec![0.0; s.lse_len()]);
    attention_fwd(s, q, k, v, &mut out, &mut lse);
    out.iter().zip(r).map(|(o, r)| o * r).sum()
}

#[test]
fn backward_matches_finite_differences() {
    let mut rng = rng_for("attention_grad");
    for s in [
        AttentionShape { batch: 2, tokens: 3, heads: 2, head_dim: 3 },
        AttentionShape { batch: 1, tokens: 5, heads: 1, head_dim: 4 },
        AttentionShape { batch: 1, tokens: 1, heads: 3, head_dim: 2 },
    ] {
        let mut inputs = [f64s(&mut rng, s.len()), f64s(&mut rng, s.len()), f64s(&mut rng, s.len())];
        let r = f64s(&mut rng, s.len());
        let (mut out, mut lse) = (vec![0.0; s.len()], vec![0.0; s.lse_len()]);
        attention_fwd(&s, &inputs[0], &inputs[1], &inputs[2], &mut out, &mut lse);
        let mut grads = [vec![f64::NAN; s.len()], vec![f64::NAN; s.len()], vec![f64::NAN; s.len()]];
        let [dq, dk, dv] = &mut grads;
        attention_bwd(&s, &inputs[0], &inputs[1], &inputs[2], &out, &lse, &r, dq, dk, dv);
        for (t, name) in ["q", "k", "v"].iter().enumerate() {
            for i in 0..s.len() {
                let numeric = central_difference(
                    &mut inputs,
                    GRAD_CHECK_STEP,
                    |x| &mut x[t][i],
                    |x| loss(&s, &x[0], &x[1], &x[2], &r),
                );
                assert_gradient(format_args!("d{name}[{i}] {s:?}"), grads[t][i], numeric);
            }
        }
    }
}

/// Scores of +-1e4, far outside exp's range: subtracting the row max keeps the reference exact.
#[test]
fn forward_is_stable_for_huge_scores() {
    let s = AttentionShape { batch: 1, tokens: 2, heads: 1, head_dim: 1 };
    let (q, k, v) = (vec![100.0f32, 100.0], vec![100.0f32, -100.0], vec![1.0f32, 2.0]);
    let (mut out, mut lse) = (vec![0.0; 2], vec![0.0; 2]);
    attention_fwd(&s, &q, &k, &v, &mut out, &mut lse);
    assert_eq!(out, [1.0, 1.0]);
    assert_eq!(lse, [1e4, 1e4]);
}

/// Every PyTorch attention fixture (forward, log-sum-exp and the gradients) on a backend.
fn matches_pytorch<B: Layers>(b: &B) {
    let worst = fixtures_match(b, 1e-5);
    report_fixture_errors(&b.name(), &worst);
}

on_every_backend!(attention_matches_pytorch => matches_pytorch);

#[test]
fn emulated_kernels_match_cpu() {
    attention_checks::parity(&common::emu());
}

#[test]
fn wrong_sizes_are_errors() {
    let s = AttentionShape { batch: 2, tokens: 5, heads: 1, head_dim: 4 };
    let emu = CudaBackend::new(common::emu());
    fn run<B: Layers>(b: &B, s: &AttentionShape, short: &str) -> anyhow::Result<()> {
        let buf = |n: usize, name: &str| b.upload(&vec![0.5; if name == short { n - 1 } else { n }]).unwrap();
        let (q, k, v) = (buf(s.len(), "q"), buf(s.len(), "k"), buf(s.len(), "v"));
        let (mut out, mut lse) = (buf(s.len(), "out"), buf(s.lse_len(), "lse"));
        b.attention_fwd(s, &q, &k, &v, &mut out, &mut lse)?;
        let (mut dq, mut dk, mut dv) = (buf(s.len(), "dq"), buf(s.len(), "dk"), buf(s.len(), "dv"));
        b.attention_bwd(s, &q, &k, &v, &out, &lse, &buf(s.len(), "dout"), &mut dq, &mut dk, &mut dv)
    }
    for short in ["q", "lse", "dout", "dv"] {
        let e = run(&CpuBackend, &s, short).unwrap_err().to_string();
        assert!(e.contains(short), "{e}");
        let e = run(&emu, &s, short).unwrap_err().to_string();
        assert!(e.contains(short), "{e}");
    }
    run(&emu, &s, "none").unwrap();
    // The kernels' accumulators hold head_dim <= 512; the CPU reference has no limit.
    let wide = AttentionShape { batch: 1, tokens: 3, heads: 1, head_dim: 513 };
    let e = run(&emu, &wide, "none").unwrap_err().to_string();
    assert!(e.contains("head_dim 513"), "{e}");
    run(&CpuBackend, &wide, "none").unwrap();
    let empty = AttentionShape { batch: 1, tokens: 0, heads: 1, head_dim: 4 };
    assert!(run(&emu, &empty, "none").is_err());
}
