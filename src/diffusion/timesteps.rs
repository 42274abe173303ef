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
            let t: Vec<i64> = (0..len).map(|i| (start + i as f64 * delta).round_ties_even() as i64 - 1).collect();
            // Some step counts (61 of 1000) round the last value to 0, giving timestep -1, which
            // diffusers then indexes from the end of its tables: refused rather than copied.
            if t.iter().any(|&v| v < 0) {
                bail!(
                    "trailing spacing with {steps} of {train_steps} steps gives timestep -1; choose another step count"
                );
            }
            t.into_iter().map(|v| v as usize).collect()
        }
    };
    if let Some(&max) = t.iter().max()
        && max >= train_steps
    {
        bail!("steps_offset {steps_offset} puts timestep {max} beyond num_train_timesteps ({train_steps})");
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_spacing_that_reaches_minus_one_is_refused() {
        // np.arange(1000, 0, -1000/61) has 62 values, the last rounding to 0.
        let err = inference_timesteps(TimestepSpacing::Trailing, 1000, 61, 0).unwrap_err().to_string();
        assert!(err.contains("-1") && !err.contains('\n'), "{err}");
        let t = inference_timesteps(TimestepSpacing::Trailing, 1000, 50, 0).unwrap();
        assert_eq!((t.len(), t[0], t[49]), (50, 999, 19));
    }
}
