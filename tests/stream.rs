//! The residual stream in bf16 (issue #17) on the emulator: its kernels bit for bit against their
//! f32 twins rounded, and the CUDA backend's `Stream` ops at both precisions
//! (tests/common/stream_checks.rs; the same checks run on a GPU in tests/gpu.rs).

mod common;
use common::{emu, stream_checks};

#[test]
fn stream_kernels_are_their_f32_twins_rounded() {
    stream_checks::kernels(&emu());
}

#[test]
fn stream_ops_store_the_f32_result_rounded_at_bf16_and_itself_at_f32() {
    stream_checks::backend_ops(&emu());
}

#[test]
fn a_bf16_stream_tensor_is_widened_for_a_convolution_without_a_bf16_kernel() {
    stream_checks::widened_where_no_bf16_kernel(&emu());
}
