//! Reading diffusers' JSON configs (config.json, scheduler_config.json) into serde-derived key
//! structs. serde alone reports a wrong-typed value by line and column; diffusers' configs are one
//! flat object, so the key's name is the useful part, and serde_path_to_error supplies it:
//! `layers_per_block: invalid type: string "two", expected usize`.

use anyhow::{Result, anyhow, bail};
use serde::de::{Deserialize, DeserializeOwned, Deserializer};
use serde_json::Value;

/// Parses `text` (named `what` in errors) as a JSON object into `T`. Keys `T` does not name are
/// ignored (diffusers adds keys over versions, and `_class_name` and friends); a key whose value
/// has the wrong type or an unsupported name is an error naming that key.
pub fn parse<T: DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    let v: Value = serde_json::from_str(text).map_err(|e| anyhow!("{what} is not valid JSON: {e}"))?;
    if !v.is_object() {
        bail!("{what} must be a JSON object");
    }
    serde_path_to_error::deserialize(v).map_err(|e| anyhow!("{}: {}", e.path(), e.inner()))
}

/// For `#[serde(default, deserialize_with = "present")]`: a key that is there, even as `null`,
/// is `Some(value)`; only an absent key is `None`. Used where diffusers' meaning of `null`
/// differs from its default (e.g. attention_head_dim: absent means 8, null means one head).
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}
