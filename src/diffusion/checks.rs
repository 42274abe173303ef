//! The argument checks of the diffusion-process ops (noising, loss, sampler steps), written once
//! for the CPU backends (src/backend/cpu.rs) and the kernel launchers (src/cuda/diffusion.rs), so
//! a wrong size is the same error everywhere. They take lengths, not buffers.

use super::solver::slots::MAX_RING;
use crate::shapes::same_len;
use anyhow::{Result, bail};

/// Given noise must have one value per output element.
pub fn noise(op: &str, noise: usize, output: usize) -> Result<()> {
    same_len(op, &[("noise", noise), ("output", output)])
}

/// x0 and xt have one length, which splits evenly into the `t` images.
pub fn q_sample(x0: usize, xt: usize, t: usize) -> Result<()> {
    same_len("q_sample", &[("x0", x0), ("xt", xt)])?;
    if t == 0 || !x0.is_multiple_of(t) {
        bail!("q_sample: {x0} elements do not split into {t} images");
    }
    Ok(())
}

pub fn mse_loss(pred: usize, loss: usize) -> Result<()> {
    if loss != 1 || pred == 0 {
        bail!("mse_loss: needs a non-empty prediction and a 1-element output");
    }
    Ok(())
}

pub fn mse_loss_bwd(pred: usize, grad: usize) -> Result<()> {
    same_len("mse_loss_bwd", &[("pred", pred), ("grad", grad)])
}

/// A DDPM or DDIM step reads the sample and the model output and writes the previous sample.
pub fn step(op: &str, sample: usize, model_out: usize, prev: usize) -> Result<()> {
    same_len(op, &[("sample", sample), ("model_output", model_out), ("prev_sample", prev)])
}

/// A table-driven sampler step updates the sample in place from the model output.
pub fn sampler_step(sample: usize, model_out: usize) -> Result<()> {
    same_len("sampler_step", &[("sample", sample), ("model_output", model_out)])
}

/// A solver row's buffers: model output and noise as long as the sample, the state a whole
/// number of samples (the saved one and a ring of 1 to MAX_RING slots). Returns the ring's size.
pub fn solver_step(sample: usize, model_out: usize, state: usize, noise: Option<usize>) -> Result<usize> {
    same_len("solver_step", &[("sample", sample), ("model_output", model_out)])?;
    let ring = state.checked_div(sample).map_or(1, |r| r.saturating_sub(1));
    if state != (1 + ring) * sample || !(1..=MAX_RING).contains(&ring) {
        bail!(
            "solver_step: the state needs (1 + ring) x {sample} floats (the saved sample and a ring of 1 to \
             {MAX_RING} slots), got {state}"
        );
    }
    if let Some(n) = noise {
        same_len("solver_step", &[("sample", sample), ("noise", n)])?;
    }
    Ok(ring)
}
