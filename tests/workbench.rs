//! The kernel workbench (src/workbench, `ddpm kernels --check/--bench`): every conv_fwd variant
//! passes its check on the emulator, and a wrong variant or a planted fault fails it, by name.

mod common;
use ddpm::gpu::Buffer;
use ddpm::shapes::{Conv2dShape, Padding};
use ddpm::workbench::conv_fwd::{self, VARIANTS, Variant, check_shapes, check_variants, parse_shape};
use ddpm::workbench::{CheckLine, CheckOptions};
use std::process::Command;

fn opts(plant: Option<&str>) -> CheckOptions {
    CheckOptions { seed: 14, plant: plant.map(String::from) }
}

fn failed(lines: &[CheckLine]) -> Vec<String> {
    lines.iter().filter(|l| !l.passed()).map(|l| format!("{} {}", l.variant, l.shape)).collect()
}

#[test]
fn every_conv_fwd_variant_passes_its_check_on_the_emulator() {
    assert!(VARIANTS.len() >= 2, "the workbench compares at least two conv_fwd variants");
    let shapes = check_shapes();
    assert!(shapes.iter().any(|s| s.kernel == 1) && shapes.iter().any(|s| s.kernel == 3 && s.stride == 2));
    assert!(shapes.iter().any(|s| s.in_c % 2 == 1 && s.out_c > 64), "odd shapes across the 64-wide tiles");
    let lines = check_variants(&common::emu(), VARIANTS, &shapes, &opts(None)).unwrap();
    assert_eq!(lines.len(), VARIANTS.len() * shapes.len());
    assert!(failed(&lines).is_empty(), "{}", lines.iter().map(|l| format!("{l}\n")).collect::<String>());
}

#[test]
fn a_planted_fault_fails_that_variant_only() {
    let lines = check_variants(&common::emu(), VARIANTS, &check_shapes(), &opts(Some("naive"))).unwrap();
    for l in &lines {
        assert_eq!(l.passed(), l.variant != "naive", "{l}");
        if !l.passed() {
            assert!(l.to_string().starts_with("FAIL conv_fwd naive") && l.to_string().contains("planted fault"), "{l}");
        }
    }
    let err = check_variants(&common::emu(), VARIANTS, &check_shapes(), &opts(Some("nope"))).err().unwrap();
    assert!(err.to_string().contains("tiled_simt, naive"), "{err}");
}

/// A deliberately wrong variant: the production kernel, but its launcher drops the bias.
fn forgets_the_bias(
    s: &Conv2dShape,
    x: &Buffer<f32>,
    w: &Buffer<f32>,
    _: Option<&Buffer<f32>>,
    y: &mut Buffer<f32>,
) -> anyhow::Result<()> {
    ddpm::cuda::conv::conv2d_fwd_f32(s, x, w, None, y)
}

#[test]
fn a_wrong_variant_fails_the_check_on_the_shapes_that_show_it() {
    let variants = [VARIANTS[0], Variant::launcher("no_bias", "conv2d_fwd_f32", forgets_the_bias)];
    let lines = check_variants(&common::emu(), &variants, &check_shapes(), &opts(None)).unwrap();
    let bad = failed(&lines);
    assert!(!bad.is_empty() && bad.iter().all(|l| l.starts_with("no_bias") && l.ends_with("+bias")), "{bad:?}");
    // A kernel that is not there fails its lines instead of stopping the check.
    let missing = [Variant::per_output("missing", "conv2d_fwd_no_such_kernel")];
    let lines = check_variants(&common::emu(), &missing, &check_shapes()[..1], &opts(None)).unwrap();
    assert!(lines[0].to_string().contains("did not run"), "{}", lines[0]);
}

#[test]
fn shapes_parse_and_print_in_the_same_syntax() {
    for s in check_shapes() {
        assert_eq!(parse_shape(&conv_fwd::label(&s)).unwrap(), s);
    }
    let s = parse_shape("2,3,9,9,5,3,2,0+1").unwrap();
    assert_eq!(s.pad, Padding { top: 0, left: 0, bottom: 1, right: 1 });
    assert_eq!(parse_shape("1,4,8,8,4,3,1").unwrap().pad, Padding::same(1));
    for bad in ["1,2,3", "1,4,8,8,4,3,x", "1,4,8,8,4,3,1,1,1", "1,0,8,8,4,3,1", "1,4,2,2,4,5,1,0"] {
        let e = parse_shape(bad).unwrap_err();
        assert!(format!("{e:#}").contains("b,cin,h,w,cout,k,stride"), "{bad}: {e:#}");
    }
}

fn ddpm(args: &[&str], plant: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ddpm"));
    cmd.args(args).env_remove("DDPM_WORKBENCH_PLANT");
    if let Some(p) = plant {
        cmd.env("DDPM_WORKBENCH_PLANT", p);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn cli_check_prints_a_line_per_variant_and_shape_and_fails_on_a_plant() {
    let (ok, out, err) = ddpm(&["kernels", "--check", "conv_fwd", "--device", "emulator"], None);
    assert!(ok, "{out}{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("PASS conv_fwd ")).count(), VARIANTS.len() * check_shapes().len());
    let (ok, out, err) = ddpm(&["kernels", "--check", "conv_fwd", "--device", "emulator"], Some("tiled_simt"));
    assert!(!ok, "{out}");
    assert!(out.lines().any(|l| l.starts_with("FAIL conv_fwd tiled_simt")), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("FAIL conv_fwd naive")), "{out}");
    assert!(err.contains("failed"), "{err}");
    let (ok, _, err) = ddpm(&["kernels", "--check", "conv_bogus"], None);
    assert!(!ok && err.trim().lines().count() == 1 && err.contains("known ops: conv_fwd"), "{err}");
}

#[test]
fn cli_bench_prints_one_table_that_says_it_holds_emulator_times() {
    let args = ["kernels", "--bench", "conv_fwd", "--device", "emulator", "--shape", "1,5,7,7,6,3,2", "--iters", "1"];
    let (ok, out, err) = ddpm(&args, None);
    assert!(ok, "{out}{err}");
    assert!(out.lines().next().unwrap().contains("EMULATOR TIMES"), "{out}");
    assert!(out.contains("GFLOP/s") && out.contains("vs tiled_simt"), "{out}");
    for v in VARIANTS {
        assert!(out.lines().any(|l| l.starts_with(v.name) && l.contains("1,5,7,7,6,3,2,1")), "{}: {out}", v.name);
    }
}

#[test]
fn kernels_without_flags_still_prints_the_resource_table() {
    let (ok, out, _) = ddpm(&["kernels"], None);
    assert!(ok && (out.contains("regs") || out.contains("no GPU kernels")), "{out}");
    assert!(!out.contains("emu_test_"), "self-test kernels are not in the production fatbin:\n{out}");
}
