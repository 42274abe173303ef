//! The tensor-core attention (kernels/attention_bf16.cu) on the emulator, each check with the
//! block's fibers in forward and in reversed order (races between warps show in one of them);
//! the checks and the forward's derived bound are in tests/common/attention_bf16_checks.rs:
//! (a) random inputs, every element within the bound of the f64 reference from the same bf16 values;
//! (b) two runs (and the two fiber orders) give the same bits;
//! (c) one-hot scores that make softmax exactly 0 or uniform: out bit for bit, zero tolerance;
//! (d) the output stored in bf16: the f32 output rounded, and the backward from it the f32-out
//!     backward's bits on it widened (tests/common/attention_bf16_out_checks.rs).

mod common;
use common::attention_bf16_bwd_checks::{bwd_deterministic, bwd_within_bound_of_f64};
use common::attention_bf16_bwd_model::{bwd_exact_one_hot, bwd_matches_model};
use common::attention_bf16_checks::{deterministic, exact_one_hot, within_bound_of_f64};
use common::{both_orders, emu};
use ddpm::cuda::attention_bf16::attention_fwd_bf16;
use ddpm::shapes::AttentionShape;
use half::bf16;

#[test]
fn forward_is_within_the_derived_bound_of_f64() {
    let worst = both_orders(&mut |gpu, order| within_bound_of_f64(gpu, order));
    println!("attention_fwd_bf16: worst error {:.1}% / {:.1}% of the bound", 100.0 * worst[0], 100.0 * worst[1]);
}

#[test]
fn forward_one_hot_scores_are_exact() {
    both_orders(&mut |gpu, order| exact_one_hot(gpu, order));
}

#[test]
fn forward_is_deterministic_in_either_fiber_order() {
    let [a, b] = both_orders(&mut |gpu, order| deterministic(gpu, order));
    assert!(a == b, "the fiber orders give different bits");
}

#[test]
fn unsupported_head_dims_are_refused_in_one_line() {
    let gpu = emu();
    for (d, want) in [(512, "exceeds"), (12, "multiple of 8")] {
        let s = AttentionShape { batch: 1, tokens: 2, heads: 1, head_dim: d };
        let x = || gpu.upload(&vec![bf16::ZERO; s.len()]).unwrap();
        let (q, k, v) = (x(), x(), x());
        let (mut out, mut lse) = (gpu.alloc::<f32>(s.len()).unwrap(), gpu.alloc::<f32>(s.lse_len()).unwrap());
        let err = attention_fwd_bf16(&s, &q, &k, &v, &mut out, &mut lse).unwrap_err().to_string();
        assert!(err.contains(want) && !err.contains('\n'), "{err}");
    }
}

#[test]
fn backward_is_within_the_derived_bound_of_f64() {
    let worst = both_orders(&mut |gpu, order| bwd_within_bound_of_f64(gpu, order));
    println!("attention_bwd_bf16: worst error {:.1}% / {:.1}% of the bound", 100.0 * worst[0], 100.0 * worst[1]);
}

#[test]
fn backward_is_deterministic_in_either_fiber_order() {
    let [a, b] = both_orders(&mut |gpu, order| bwd_deterministic(gpu, order));
    assert!(a == b, "the fiber orders give different bits");
}

#[test]
fn backward_matches_the_host_model_bit_for_bit() {
    both_orders(&mut |gpu, order| bwd_matches_model(gpu, order));
}

#[test]
fn backward_one_hot_scores_are_exact() {
    both_orders(&mut |gpu, order| bwd_exact_one_hot(gpu, order));
}

#[test]
fn a_bf16_output_is_the_f32_output_rounded_and_its_backward_the_same_bits() {
    both_orders(&mut |gpu, _| common::attention_bf16_out_checks::bf16_output(gpu));
}
