//! Fast multi-head attention with saved log-sum-exp: the ops of src/cpu/attention.rs.
//! (Placeholder bodies run the reference until the blocked GEMM version lands.)

use crate::cpu::attention as reference;
use crate::shapes::AttentionShape;

pub fn attention_fwd(s: &AttentionShape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], lse: &mut [f32]) {
    reference::attention_fwd(s, q, k, v, out, lse)
}
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd(s: &AttentionShape, q: &[f32], k: &[f32], v: &[f32], out: &[f32], lse: &[f32], dout: &[f32], dq: &mut [f32],
    dk: &mut [f32], dv: &mut [f32]) {
    reference::attention_bwd(s, q, k, v, out, lse, dout, dq, dk, dv)
}
