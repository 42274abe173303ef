//! Non-finite values (NaN, +-inf) refused where data enters the engine: a NaN in noise, weights or
//! inputs otherwise flows through every kernel and comes out as a plausible-looking file of
//! garbage with exit status 0. The error names the first bad index so it can be found in Python.

use anyhow::{Result, bail};

/// Index of the first NaN or infinity, if any.
pub fn first_non_finite(data: &[f32]) -> Option<usize> {
    data.iter().position(|v| !v.is_finite())
}

/// Refuses `data` if it holds a non-finite value; `what` names it (file, tensor) in the error.
pub fn check(data: &[f32], what: &str) -> Result<()> {
    if let Some(i) = first_non_finite(data) {
        bail!("{what}: non-finite value {} at index {i}", data[i]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_first_bad_index() {
        assert!(super::check(&[1.0, 2.0], "x").is_ok());
        let err = super::check(&[1.0, f32::INFINITY, f32::NAN], "x.npy").unwrap_err().to_string();
        assert_eq!(err, "x.npy: non-finite value inf at index 1");
    }
}
