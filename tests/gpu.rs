//! The GPU suite: the emulator's semantic checks and every op's parity test, on a real CUDA
//! device, one `#[test]` per check so that a failure hides nothing. Each check prints one line,
//! "PASS gpu NAME (s)" or "FAIL gpu NAME: why", which the harness does not capture.
//!
//! Device: CUDA device 0. Without one, each check returns after its one "skipped: no CUDA
//! device (why): gpu NAME" line, unless `DDPM_REQUIRE_GPU=1` (set by scripts/gpu-check), where that is a failure
//! with the driver's message. `DDPM_GPU_SUITE_DEVICE=emulator` runs the same checks on the
//! emulator: `scripts/gpu-check --dry-run`.
//!
//! Checks are grouped in modules in the order scripts/gpu-check runs them (libtest lists them
//! alphabetically; gpu-check orders by these groups): `mma` (the tensor cores against the
//! emulator's arithmetic model), `semantics` (what every kernel builds on),
//! `parity` (every op against the CPU reference), `fixtures` (every op and the whole UNet against
//! PyTorch/diffusers), `sampler`, `diffusers`, `runtime`.
//! scripts/gpu-check runs each check in its own process, so a fault that kills the context
//! (an illegal address is sticky) fails that check alone.
//!
//! `DDPM_GPU_PLANT=NAME` plants a fault in check NAME: before its body it launches `fill_f32`
//! through a pointer outside every buffer (the emulator refuses it naming the kernel; a GPU
//! would fault). It is how the dry run shows that a failed check is reported, named, and the
//! others still run.

mod common;
use common::diffusion_checks::{self, Reference};
use common::say;
use ddpm::backend::CudaBackend;
use ddpm::fast::bf16::Precision;
use ddpm::gpu::{Gpu, KernelArgs, LaunchConfig};
use std::sync::OnceLock;

/// The suite's device, opened once per process, or the line to print when skipping.
fn device() -> Result<Gpu, String> {
    static DEVICE: OnceLock<Result<Result<Gpu, String>, String>> = OnceLock::new();
    let opened = DEVICE.get_or_init(|| match std::env::var("DDPM_GPU_SUITE_DEVICE").as_deref() {
        Ok("emulator") => Gpu::emulator().map(Ok).map_err(|e| format!("{e:#}")),
        Ok("cuda") | Err(_) => ddpm::testing::cuda_or_skip_line().map_err(|e| format!("{e:#}")),
        Ok(other) => Err(format!("DDPM_GPU_SUITE_DEVICE={other:?}: use cuda or emulator")),
    });
    match opened {
        Ok(gpu) => gpu.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Runs one check and prints its PASS/FAIL line; a failure is re-raised for the harness.
fn run_check(name: &str, check: fn(&Gpu)) {
    let start = std::time::Instant::now();
    let result = std::panic::catch_unwind(|| {
        let gpu = match device() {
            Ok(gpu) => gpu,
            Err(skip) => {
                say(&format!("{skip}: gpu {name}"));
                return false;
            }
        };
        if std::env::var("DDPM_GPU_PLANT").is_ok_and(|p| p == name) {
            plant_fault(&gpu);
        }
        check(&gpu);
        true
    });
    match result {
        Ok(true) => say(&format!("PASS gpu {name} ({:.1} s)", start.elapsed().as_secs_f64())),
        Ok(false) => {}
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("panicked");
            say(&format!("FAIL gpu {name}: {}", why.lines().next().unwrap_or("")));
            std::panic::resume_unwind(panic);
        }
    }
}

fn cuda(gpu: &Gpu) -> CudaBackend {
    CudaBackend::new(gpu.clone())
}

/// `fill_f32` launched through a pointer outside every buffer, then a synchronisation: refused
/// at launch by the emulator, an illegal address on a GPU.
fn wild_launch(gpu: &Gpu) -> anyhow::Result<()> {
    let args = KernelArgs::new().raw_pointer(0xdead_0000).f32(1.0).u32(1 << 20);
    gpu.launch("fill_f32", LaunchConfig::for_elements(1 << 20, 256), &args)?;
    gpu.synchronize()
}

fn plant_fault(gpu: &Gpu) {
    if let Err(e) = wild_launch(gpu) {
        panic!("planted fault (DDPM_GPU_PLANT): {e:#}");
    }
}

/// One `#[test]` per check, in modules: `group { name => check, ... }`.
macro_rules! gpu_checks {
    ($($group:ident { $($name:ident => $check:expr),* $(,)? })*) => {
        $(mod $group {
            #[allow(unused_imports)]
            use super::*;
            $(#[test]
            fn $name() {
                run_check(concat!(stringify!($group), "::", stringify!($name)), $check);
            })*
        })*
    };
}

gpu_checks! {
    // First: whether the device's tensor cores round as the emulator's model says (issue #15).
    mma {
        model_bit_for_bit => common::tensor_core_checks::mma_model_check,
        ldmatrix_layouts => common::tensor_core_checks::ldmatrix_layouts,
        linear_bf16 => |g| {
            common::linear_bf16_checks::exact_small_integers(g, "device order");
            common::linear_bf16_checks::matches_model(g, common::tensor_core_checks::device_arch(g), "device order");
            common::linear_bf16_checks::bf16_output_is_the_rounded_f32(g);
            common::linear_bf16_checks::x3_is_three_launches(g);
        },
        linear_bwd_bf16 => |g| {
            common::linear_bf16_checks::exact_small_integers_bwd(g, "device order");
            common::linear_bf16_checks::matches_model_bwd(g, common::tensor_core_checks::device_arch(g), "device order");
        },
        ldmatrix_feeds_mma => common::tensor_core_checks::ldmatrix_feeds_mma,
        conv_bf16 => |g| {
            common::conv_bf16_checks::exact_small_integers(g, "device order");
            common::conv_bf16_checks::matches_model(g, common::tensor_core_checks::device_arch(g), "device order");
        },
        conv_bwd_bf16 => |g| {
            common::conv_bwd_bf16_checks::exact_small_integers(g, "device order");
            common::conv_bwd_bf16_checks::matches_model(g, common::tensor_core_checks::device_arch(g), "device order");
            common::conv_bwd_bf16_checks::input_grad_tiles_agree(g, "device order");
            common::conv_bwd_bf16_checks::weight_grad_tiles_agree(g, "device order");
        },
        attention_bf16 => |g| {
            common::attention_bf16_checks::exact_one_hot(g, "device order");
            common::attention_bf16_checks::within_bound_of_f64(g, "device order");
            common::attention_bf16_checks::deterministic(g, "device order");
        },
        attention_bwd_bf16 => |g| {
            common::attention_bf16_bwd_checks::bwd_within_bound_of_f64(g, "device order");
            common::attention_bf16_bwd_checks::bwd_deterministic(g, "device order");
        },
        attention_bf16_output => common::attention_bf16_out_checks::bf16_output,
        round_bf16 => common::cuda_bf16_checks::round_parity,
        kept_bf16_weights => |g| {
            let n = common::kept_weights_checks::train_as_rounding_at_each_use(g);
            common::kept_weights_checks::sample_as_rounding_at_each_use(g);
            println!("kept bf16 weights: {n} copies current; training and sampling bit for bit rounding at each use");
        },
        conv_bf16_fused_epilogue => common::cuda_bf16_checks::fused_conv_epilogue_is_the_separate_adds,
        group_norm_to_bf16 => common::cuda_bf16_checks::group_norm_to_bf16_is_the_rounded_f32,
        unet_bf16_tracks_f32 => |g| {
            use common::cuda_bf16_checks::{F32Path, cifar10_case, tiny_case, unet_case_tracks_f32};
            let mut cases = vec![tiny_case()];
            // The cifar10 UNet at 32x32, batch 4, against the device's own f32 kernels. Not in the
            // dry run: the emulator takes minutes per image (tests/cuda_bf16.rs runs it at 16x16).
            if g.is_emulator() {
                println!("unet_bf16_tracks_f32: the cifar10 case runs on a GPU only (emulator: tests/cuda_bf16.rs)");
            } else {
                cases.push(cifar10_case(32, vec![10, 250, 500, 990], F32Path::SameDevice));
            }
            for case in &cases {
                let r = unet_case_tracks_f32(g, case);
                println!(
                    "{}: bf16 vs f32: prediction {:.2e}, loss {:.2e}, worst of {} gradients {} at {:.2e} (cosine {:.6})",
                    case.what, r.pred, r.loss, r.tensors, r.worst_grad.2, r.worst_grad.0, r.worst_grad.1
                );
            }
        },
    }
    semantics {
        indices => common::semantics::indices,
        static_shared => common::semantics::static_shared,
        dynamic_shared => common::semantics::dynamic_shared,
        dynamic_shared_optin => common::semantics::dynamic_shared_optin,
        shuffles => common::semantics::shuffles,
        shuffle_half_mask => common::semantics::shuffle_half_mask,
        votes => common::semantics::votes,
        sync_reductions => common::semantics::sync_reductions,
        atomics => common::semantics::atomics,
        math => common::semantics::math,
        vector_types => common::semantics::vector_types,
        half_bf16 => common::semantics::half_bf16,
    }
    parity {
        fill => common::elementwise_checks::fill,
        axpy => common::elementwise_checks::axpy,
        silu => common::silu_checks::parity,
        conv2d => common::conv_checks::parity,
        group_norm => common::group_norm_checks::parity,
        group_norm_bf16_input => common::group_norm_bf16_checks::parity,
        linear => common::linear_checks::parity,
        elementwise => common::elementwise_checks::layer_parity,
        resample => common::resample_checks::parity,
        resample_bf16_output => common::resample_checks::bf16_output,
        stream_bf16_kernels => common::stream_checks::kernels,
        stream_bf16_ops => |g| {
            common::stream_checks::backend_ops(g);
            common::stream_checks::widened_where_no_bf16_kernel(g);
        },
        embedding => common::embedding_checks::parity,
        attention => common::attention_checks::parity,
        optimizer => common::optim_checks::parity,
        train_step_row_ops => common::train_graph_checks::ops_parity,
        philox_rng => common::diffusion_checks::rng_parity,
        diffusion_process => common::diffusion_checks::process_parity,
    }
    // The fixture checks assert every element themselves; their returned error reports are
    // for printing, which tests/{conv,attention,...}.rs do.
    fixtures {
        conv_vs_pytorch => |g| {
            let _report = common::conv_checks::fixtures_match(&cuda(g));
        },
        attention_vs_pytorch => |g| {
            let _report = common::attention_checks::fixtures_match(&cuda(g), 1e-5);
        },
        group_norm_vs_pytorch => |g| {
            let _report = common::group_norm_checks::group_norm_matches_pytorch(&cuda(g));
        },
        linear_vs_pytorch => |g| {
            let _report = common::linear_checks::linear_matches_pytorch(&cuda(g));
        },
        elementwise_vs_pytorch => |g| {
            let _report = common::elementwise_checks::ops_match_torch(&cuda(g));
        },
        upsample_vs_pytorch => |g| {
            let _report = common::resample_checks::upsample_matches_torch(&cuda(g));
        },
        timestep_embedding_vs_diffusers => |g| {
            let _report = common::embedding_checks::embedding_matches_diffusers(&cuda(g));
        },
        unet_vs_diffusers => |g| common::unet_checks::check(&cuda(g)),
    }
    sampler {
        table_step_kernels_vs_cpu => common::sampler_checks::table_ops_match_cpu,
        graph_vs_plain_launches => common::sampler_checks::graph_matches_plain,
        graph_vs_plain_launches_bf16 => |g| common::sampler_checks::graph_matches_plain_in(g, Precision::Bf16),
        solver_step_kernels_vs_cpu => common::sampler_checks::solver_ops_match_cpu,
        capture_refuses_host_copies => common::sampler_checks::capture_refuses_host_copies,
        bf16_sample_quality => |g| {
            // Over a minute on the emulator, where tests/training.rs samples the same model in bf16
            // against the fast CPU path's f32; the dry run (twice in scripts/test) leaves it to that.
            if g.is_emulator() {
                println!("bf16_sample_quality: runs on a GPU only (emulator: tests/training.rs)");
                return;
            }
            let (f32_score, bf16_score, noise) = common::sample_quality::cuda_bf16_quality(g);
            println!("same noise: f32 samples score {f32_score:.4}, bf16 {bf16_score:.4} (pure noise {noise:.4})");
        },
    }
    diffusers {
        steps_bit_for_bit => |g| {
            let b = CudaBackend::new(g.clone());
            diffusion_checks::steps_match_diffusers(&b, Reference::DiffusersIeee, 0.0);
            diffusion_checks::add_noise_matches_diffusers(&b, Reference::DiffusersIeee, 0.0);
        },
    }
    runtime {
        faults_are_named => check_fault_reports,
        // The whole training step captured as one CUDA graph, against the op-by-op step: same
        // bits in f32 and in bf16, non-finite steps stopped or skipped as op by op.
        graphed_train_step => |g| {
            common::train_graph_checks::whole_step(&cuda(g));
            common::train_graph_checks::nonfinite(&cuda(g));
            common::train_graph_checks::whole_step(&CudaBackend::with_precision(g.clone(), Precision::Bf16));
            common::train_graph_checks::replays_allocate_nothing(g);
        },
        nccl_one_rank_average => common::dist_checks::one_rank_sync_is_identity,
    }
}

/// A launch that faults is reported with its kernel's name, in a child process per mode (a
/// fault on a GPU ends the context): with `DDPM_CUDA_SYNC=1` by the launch itself, without it
/// at the next synchronisation ("the last kernel queued was ..."). The emulator refuses the
/// pointer at launch in both modes, naming the kernel too.
fn check_fault_reports(gpu: &Gpu) {
    if let Ok(mode) = std::env::var("DDPM_GPU_FAULT_CHILD") {
        // The child: fault, and print what was reported.
        let err = wild_launch(gpu).expect_err("a launch through a wild pointer must fail");
        say(&format!("fault report ({mode}): {err:#}"));
        return;
    }
    for (mode, sync) in [("sync", "1"), ("async", "0")] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "runtime::faults_are_named", "--nocapture", "--test-threads", "1"])
            .env("DDPM_GPU_FAULT_CHILD", mode)
            .env("DDPM_CUDA_SYNC", sync)
            .env_remove("DDPM_GPU_PLANT")
            .output()
            .expect("the suite can run itself");
        let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        let report = text
            .lines()
            .find(|l| l.starts_with("fault report"))
            .unwrap_or_else(|| panic!("no fault report from the {mode} child:\n{text}"));
        assert!(report.contains("fill_f32"), "the {mode} report names no kernel: {report}");
        if !gpu.is_emulator() {
            let expected = if sync == "1" { "kernel fill_f32 (grid" } else { "the last kernel queued was fill_f32" };
            assert!(report.contains(expected), "the {mode} report lacks {expected:?}: {report}");
        }
    }
}
