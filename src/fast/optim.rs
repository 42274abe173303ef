//! Fast optimizer ops (AdamW, EMA, sum of squares, scale): the ops of src/cpu/optim.rs.
//! (Placeholder bodies run the reference until the parallel versions land.)

use crate::cpu::optim::{self as reference, AdamWStep};

pub fn adamw_step(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamWStep) {
    reference::adamw_step(p, g, m, v, s)
}
pub fn ema_update(ema: &mut [f32], p: &[f32], decay: f32) {
    reference::ema_update(ema, p, decay)
}
pub fn sum_squares(x: &[f32]) -> f32 {
    reference::sum_squares(x)
}
pub fn scale(x: &mut [f32], s: f32) {
    reference::scale(x, s)
}
