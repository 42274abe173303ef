//! Fast GroupNorm (+SiLU) over NHWC: the ops of src/cpu/group_norm.rs.
//! (Placeholder bodies run the reference until the fused parallel version lands.)

use crate::cpu::group_norm as reference;
use crate::shapes::GroupNormShape;

#[allow(clippy::too_many_arguments)]
pub fn group_norm_fwd(s: &GroupNormShape, x: &[f32], gamma: Option<&[f32]>, beta: Option<&[f32]>, silu: bool, y: &mut [f32],
    mean: &mut [f32], rstd: &mut [f32]) {
    reference::group_norm_fwd(s, x, gamma, beta, silu, y, mean, rstd)
}
#[allow(clippy::too_many_arguments)]
pub fn group_norm_bwd(s: &GroupNormShape, x: &[f32], gamma: Option<&[f32]>, beta: Option<&[f32]>, mean: &[f32], rstd: &[f32],
    silu: bool, dy: &[f32], dx: &mut [f32], dgamma: Option<&mut [f32]>, dbeta: Option<&mut [f32]>) {
    reference::group_norm_bwd(s, x, gamma, beta, mean, rstd, silu, dy, dx, dgamma, dbeta)
}
