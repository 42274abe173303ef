//! `--precision bf16` on the CUDA backend (src/backend/cuda_bf16.rs), on the emulator: the
//! operand-rounding kernel bit for bit, and a whole UNet's prediction, loss and gradients within
//! the bounds stated in tests/common/cuda_bf16_checks.rs (tests/gpu.rs runs both on a GPU).

mod common;
use common::cuda_bf16_checks::{fused_conv_epilogue_is_the_separate_adds, round_parity, unet_tracks_f32};

#[test]
fn round_bf16_kernel_is_nearest_even_bit_for_bit() {
    round_parity(&common::emu());
}

#[test]
fn resnet_adds_fused_into_the_conv_epilogue_are_bit_for_bit_the_separate_adds() {
    fused_conv_epilogue_is_the_separate_adds(&common::emu());
}

#[test]
fn unet_prediction_loss_and_gradients_track_f32() {
    let r = unet_tracks_f32(&common::emu());
    common::say(&format!(
        "bf16 on the emulator vs the f32 reference: prediction {:.2e} relative L2, loss {:.2e}; {} gradient tensors, \
         worst {} at {:.2e} relative L2 (cosine {:.6})",
        r.pred, r.loss, r.tensors, r.worst_grad.2, r.worst_grad.0, r.worst_grad.1
    ));
}
