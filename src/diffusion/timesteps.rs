//! Inference timesteps, descending, as diffusers' `set_timesteps` computes them with numpy
//! (float64 linspace/arange, round half to even).

use super::config::TimestepSpacing;
use anyhow::{Result, bail};

pub fn inference_timesteps(
    spacing: TimestepSpacing,
    train_steps: usize,
    steps: usize,
    steps_offset: usize,
) -> Result<Vec<usize>> {
    if steps == 0 || steps > train_steps {
        bail!("the number of sampling steps must be between 1 and num_train_timesteps ({train_steps}), got {steps}");
    }
    let t = match spacing {
        TimestepSpacing::Linspace => {
            // np.linspace(0, T - 1, n): i * step + start, the last value set to stop exactly.
            let stop = (train_steps - 1) as f64;
            let step = if steps > 1 { stop / (steps - 1) as f64 } else { 0.0 };
            let mut v: Vec<usize> = (0..steps)
                .map(|i| if i + 1 == steps && steps > 1 { stop } else { i as f64 * step }.round_ties_even() as usize)
                .collect();
            v.reverse();
            v
        }
        TimestepSpacing::Leading => {
            let ratio = train_steps / steps;
            (0..steps).rev().map(|i| i * ratio + steps_offset).collect()
        }
        TimestepSpacing::Trailing => {
            // np.arange(T, 0, -T/n): numpy fills start + i * delta with delta = (start + step) - start.
            let start = train_steps as f64;
            let step = -(train_steps as f64 / steps as f64);
            let len = ((0.0 - start) / step).ceil() as usize;
            let delta = (start + step) - start;
            (0..len).map(|i| (start + i as f64 * delta).round_ties_even() as usize - 1).collect()
        }
    };
    if let Some(&max) = t.iter().max()
        && max >= train_steps
    {
        bail!("steps_offset {steps_offset} puts timestep {max} beyond num_train_timesteps ({train_steps})");
    }
    Ok(t)
}
