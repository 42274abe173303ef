//! The UNet's configuration and parameter list against diffusers' UNet2DModel.

mod common;
use common::fixtures::Fixture;
use ddpm::model::{UNetConfig, parameter_specs};

#[test]
fn parameter_names_and_shapes_match_diffusers_in_order() {
    let f = Fixture::load("unet_params.json");
    for (name, case) in f.json.as_object().unwrap() {
        let config = UNetConfig::from_json(&case["config"].to_string()).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let ours: Vec<(String, Vec<usize>)> = parameter_specs(&config).into_iter().map(|p| (p.name, p.shape)).collect();
        let theirs: Vec<(String, Vec<usize>)> = case["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_string(),
                    p[1].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect(),
                )
            })
            .collect();
        assert_eq!(ours.len(), theirs.len(), "{name}: parameter count");
        for (o, t) in ours.iter().zip(&theirs) {
            assert_eq!(o, t, "{name}");
        }
    }
}

#[test]
fn presets_round_trip_through_config_json() {
    for preset in ["tiny", "cifar10"] {
        let c = UNetConfig::preset(preset).unwrap();
        assert_eq!(UNetConfig::from_json(&c.to_json().to_string()).unwrap(), c, "{preset}");
    }
}

#[test]
fn unsupported_config_values_are_refused_naming_the_key() {
    let base = UNetConfig::cifar10().to_json();
    for (key, value) in [
        ("act_fn", serde_json::json!("gelu")),
        ("time_embedding_type", serde_json::json!("fourier")),
        ("resnet_time_scale_shift", serde_json::json!("scale_shift")),
        ("dropout", serde_json::json!(0.1)),
        ("down_block_types", serde_json::json!(["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"])),
        ("block_out_channels", serde_json::json!([128, 250, 256, 256])),
        ("layers_per_block", serde_json::json!("two")),
    ] {
        let mut c = base.clone();
        c[key] = value;
        let err = format!("{:#}", UNetConfig::from_json(&c.to_string()).unwrap_err());
        assert!(err.contains(key), "{key}: {err}");
    }
    assert!(UNetConfig::from_json("not json").is_err());
    assert!(UNetConfig::preset("huge").is_err());
}

#[test]
fn cifar10_forward_costs_about_six_gmacs_per_image() {
    // 12.1 GFLOP per 32x32 image is the figure PyTorch profiles for google/ddpm-cifar10-32.
    let unet = ddpm::model::unet::UNet::new(UNetConfig::cifar10()).unwrap();
    let gflop = 2.0 * unet.forward_macs() as f64 / 1e9;
    assert!((11.0..13.5).contains(&gflop), "{gflop} GFLOP");
}

/// diffusers' UNet2DModel reads an absent attention_head_dim as its default, 8, and a null one as
/// "one head over all channels"; absent and null keys elsewhere take the defaults.
#[test]
fn absent_and_null_keys_read_as_diffusers_reads_them() {
    let mut c = UNetConfig::cifar10().to_json();
    c["attention_head_dim"] = serde_json::Value::Null;
    c["norm_eps"] = serde_json::Value::Null;
    let parsed = UNetConfig::from_json(&c.to_string()).unwrap();
    assert_eq!(parsed.attention_head_dim, None);
    assert_eq!(parsed.norm_eps, 1e-5, "a null key takes diffusers' default");
    c.as_object_mut().unwrap().remove("attention_head_dim");
    assert_eq!(UNetConfig::from_json(&c.to_string()).unwrap().attention_head_dim, Some(8));
    // A wrong-typed value is named by its key, even inside a list.
    let mut c = UNetConfig::cifar10().to_json();
    c["block_out_channels"] = serde_json::json!([128, "256", 256, 256]);
    let err = format!("{:#}", UNetConfig::from_json(&c.to_string()).unwrap_err());
    assert!(err.starts_with("block_out_channels[1]: invalid type"), "{err}");
}
