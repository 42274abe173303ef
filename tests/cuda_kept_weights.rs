//! Kept bf16 weight copies at `--precision bf16` on CUDA (src/backend/cuda_weights.rs), on the
//! emulator: the same bits as rounding each weight at each use, in training (op by op and
//! graphed) and sampling; copies current after every AdamW step; fewer rounding launches
//! (tests/gpu.rs runs the same checks on a GPU).

mod common;
use common::kept_weights_checks as checks;

#[test]
fn training_with_kept_weights_is_bit_for_bit_rounding_at_each_use() {
    let copies = checks::train_as_rounding_at_each_use(&common::emu());
    common::say(&format!("small UNet, 3 bf16 steps op by op and graphed: {copies} kept copies, all current"));
}

#[test]
fn sampling_with_kept_weights_is_bit_for_bit_rounding_at_each_use() {
    checks::sample_as_rounding_at_each_use(&common::emu());
}

#[test]
fn kept_weights_remove_the_weight_rounding_launches() {
    let [(fwd_each, fwd_kept), (step_each, step_kept)] = checks::rounding_launches_removed(&common::emu());
    common::say(&format!(
        "small UNet batch 3, round_bf16_f32 launches: forward {fwd_each} -> {fwd_kept}, training step {step_each} -> \
         {step_kept}"
    ));
}

#[test]
fn ops_other_than_adamw_may_not_write_a_kept_weight() {
    checks::writes_to_kept_weights_are_refused(&common::emu());
}
