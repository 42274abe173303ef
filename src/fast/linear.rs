//! Fast linear layer (y = x W^T + b, W [out, in]): the ops of src/cpu/linear.rs.
//! (Placeholder bodies run the reference until the GEMM formulation lands.)

use crate::cpu::linear as reference;
use crate::shapes::LinearShape;

pub fn linear_fwd(s: &LinearShape, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) {
    reference::linear_fwd(s, x, w, b, y)
}
pub fn linear_bwd_input(s: &LinearShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    reference::linear_bwd_input(s, dy, w, dx)
}
pub fn linear_bwd_weight(s: &LinearShape, x: &[f32], dy: &[f32], dw: &mut [f32], db: Option<&mut [f32]>) {
    reference::linear_bwd_weight(s, x, dy, dw, db)
}
