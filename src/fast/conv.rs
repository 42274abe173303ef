//! Fast 2-D convolution, NHWC activations, OHWI weights: the ops of src/cpu/conv.rs.
//! (Placeholder bodies run the reference until the GEMM formulation lands.)

use crate::cpu::conv as reference;
use crate::shapes::Conv2dShape;

pub fn conv2d_fwd(s: &Conv2dShape, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) {
    reference::conv2d_fwd(s, x, w, b, y)
}
pub fn conv2d_bwd_input(s: &Conv2dShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    reference::conv2d_bwd_input(s, dy, w, dx)
}
pub fn conv2d_bwd_weight(s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32], db: Option<&mut [f32]>) {
    reference::conv2d_bwd_weight(s, x, dy, dw, db)
}
