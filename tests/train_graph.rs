//! The whole training step captured once and replayed (src/train/graph.rs): bitwise the op-by-op
//! step on every backend, non-finite steps handled as op by op, and its row-driven kernels against
//! their reference.

mod common;
use common::train_graph_checks as checks;

on_every_backend!(
    graphed_step_is_the_op_by_op_step => checks::whole_step,
    graphed_step_handles_nonfinite_steps => checks::nonfinite,
);

#[test]
fn row_driven_kernels_match_the_reference_on_the_emulator() {
    checks::ops_parity(&common::emu());
}
