//! Kept bf16 weight copies (src/backend/cuda_weights.rs) on any device: training and sampling
//! with them give the bits of rounding each weight at each use, the copies are the current weights
//! rounded after every optimizer step, and the forward then launches no weight rounding.

use super::train_graph_checks::{BATCH, assert_same, graphed, op_by_op, opt, setup, small};
use ddpm::backend::{Backend, CudaBackend, Layers};
use ddpm::fast::bf16::Precision;
use ddpm::gpu::Gpu;
use ddpm::model::params::ParamKind;
use ddpm::model::unet::UNet;
use ddpm::model::weights::HostParams;
use ddpm::sample::{Job, Launch, NoiseSource, Sampler};
use ddpm::train::graph::StepGraph;
use ddpm::train::step::TrainState;
use half::bf16;

/// The bf16 backend on `gpu`, keeping weights or rounding them at each use.
pub fn backend(gpu: &Gpu, keep: bool) -> CudaBackend {
    CudaBackend::with_precision(gpu.clone(), Precision::Bf16).keeping_weights(keep)
}

/// Every convolution and linear weight of `params` has a copy on `b`, equal to the weight rounded
/// (nearest even) bit for bit; nothing else has one. Returns the number of copies.
fn assert_copies_current(b: &CudaBackend, unet: &UNet, params: &[ddpm::gpu::Buffer<f32>], what: &str) -> usize {
    let mut kept = 0;
    for (p, spec) in params.iter().zip(&unet.table.specs) {
        let product = matches!(spec.kind, ParamKind::ConvWeight | ParamKind::LinearWeight);
        match b.kept_weight(p).unwrap() {
            Some(copy) => {
                assert!(product, "{what}: {} has a copy", spec.name);
                let want: Vec<u16> = b.download(p).unwrap().iter().map(|&v| bf16::from_f32(v).to_bits()).collect();
                let got: Vec<u16> = copy.iter().map(|v| v.to_bits()).collect();
                let stale = want.iter().zip(&got).filter(|(w, g)| w != g).count();
                assert_eq!(
                    stale,
                    0,
                    "{what}: {stale} of {} elements of {}'s copy are not its weight rounded",
                    got.len(),
                    spec.name
                );
                kept += 1;
            }
            None => assert!(!product, "{what}: {} has no copy", spec.name),
        }
    }
    kept
}

/// 3 training steps of the small model (warmup, clipping), op by op and graphed, keeping weights:
/// the bits of the same steps rounding every weight at each use; the copies after them are the
/// final weights rounded. Returns the copies per state.
pub fn train_as_rounding_at_each_use(gpu: &Gpu) -> usize {
    let (keep, each) = (backend(gpu, true), backend(gpu, false));
    let s = setup(&keep, 3, None);
    let reference = op_by_op(&each, &s, false);
    assert_eq!(each.kept_weight_elements(), 0, "a backend told not to keep weights kept some");
    let kept = op_by_op(&keep, &s, false);
    assert_same(&keep, "bf16, kept weights vs rounded at each use, op by op", &reference, &kept);
    let n = assert_copies_current(&keep, &s.unet, &kept.1.params, "op by op");
    let graph = graphed(&keep, &s, false, 2);
    assert_same(&keep, "bf16, kept weights graphed vs rounded at each use op by op", &reference, &graph);
    assert_eq!(assert_copies_current(&keep, &s.unet, &graph.1.params, "graphed"), n);
    n
}

/// Rounding launches of one captured call of `run` on `b`.
fn rounding_launches(b: &CudaBackend, run: impl FnOnce()) -> usize {
    b.gpu.begin_capture().unwrap();
    run();
    let graph = b.gpu.end_capture().unwrap();
    graph.kernels().expect("an emulated graph lists its launches").iter().filter(|k| **k == "round_bf16_f32").count()
}

/// The rounding launches of a forward (predict) and of a whole captured training step, rounding
/// weights at each use and keeping them: (each, kept) for both. The forward with kept weights
/// launches one rounding fewer per weight of a tensor-core product: every kept weight but
/// conv_in's, whose 3 input channels take the f32 kernel (src/backend/cuda_bf16.rs).
pub fn rounding_launches_removed(gpu: &Gpu) -> [(usize, usize); 2] {
    let unet = UNet::new(small()).unwrap();
    let host = HostParams::init(&unet.table, 4);
    let x: Vec<f32> = (0..BATCH * 8 * 8 * 3).map(|i| (i as f32 * 0.37).sin()).collect();
    let forward = |keep: bool| {
        let b = backend(gpu, keep);
        let params = host.upload(&b).unwrap();
        unet.keep_product_weights(&b, &params).unwrap();
        let (x, t) = (b.upload(&x).unwrap(), b.upload(&[10.0, 500.0, 990.0]).unwrap());
        let n = rounding_launches(&b, || drop(unet.predict(&b, &params, &x, &t, BATCH).unwrap()));
        (n, b.kept_weight_elements())
    };
    let ((each, _), (kept, elements)) = (forward(false), forward(true));
    let copies = unet.table.specs.iter().filter(|s| matches!(s.kind, ParamKind::ConvWeight | ParamKind::LinearWeight));
    let weights: usize = copies.clone().map(|s| s.numel()).sum();
    assert_eq!(elements, weights, "kept elements");
    assert_eq!(each - kept, copies.count() - 1, "forward rounding launches: {each} rounding at each use, {kept} kept");
    let step = |keep: bool| {
        let b = backend(gpu, keep);
        let s = setup(&b, 1, None);
        let state = TrainState::new(&b, &s.init).unwrap();
        let mut g = StepGraph::new(&b, state, BATCH, 8 * 8 * 3, true).unwrap();
        g.capture(&b, &s.unet, &s.tables, &opt()).unwrap();
        let kernels = g.graph().unwrap().kernels().unwrap();
        kernels.iter().filter(|k| **k == "round_bf16_f32").count()
    };
    let (step_each, step_kept) = (step(false), step(true));
    assert!(
        step_kept < step_each - (each - kept),
        "training step: {step_kept} kept vs {step_each} rounding at each use"
    );
    [(each, kept), (step_each, step_kept)]
}

/// DDIM-3 samples of the small model (4 images, captured sampler): keeping the weights (what
/// `generate_batches` does) gives the bits of rounding them at each use.
pub fn sample_as_rounding_at_each_use(gpu: &Gpu) {
    let unet = UNet::new(small()).unwrap();
    let params = HostParams::init(&unet.table, 6);
    let mut sched = ddpm::diffusion::DdimScheduler::new(ddpm::diffusion::SchedulerConfig::default()).unwrap();
    sched.set_timesteps(3).unwrap();
    let sampler = Sampler::Ddim { scheduler: sched, eta: 0.0 };
    let job = Job { unet: &unet, params: &params, sampler: &sampler, n: 4, batch: 4, x_t: None, launch: Launch::Graph };
    let run = |keep: bool| {
        let b = backend(gpu, keep);
        let x = ddpm::sample::generate_batches(&b, &job, &mut NoiseSource::Philox { seed: 5 }, &mut |_, _| {}).unwrap();
        assert_eq!(b.kept_weight_elements() > 0, keep, "kept copies");
        x
    };
    let (each, kept) = (run(false), run(true));
    assert!(each.iter().all(|v| v.is_finite()), "samples not finite");
    let differ = each.iter().zip(&kept).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differ, 0, "{differ} of {} sample elements differ with kept weights", each.len());
}

/// An op other than adamw_step that would write a kept weight is refused with one line.
pub fn writes_to_kept_weights_are_refused(gpu: &Gpu) {
    use ddpm::backend::Optimizer;
    let b = backend(gpu, true);
    let mut w = b.upload(&[1.0, 2.0]).unwrap();
    let p = b.upload(&[3.0, 4.0]).unwrap();
    b.keep_product_weights(&[&w]).unwrap();
    let err = b.ema_update(&mut w, &p, 0.5).unwrap_err().to_string();
    assert!(err.contains("kept product weight") && !err.contains('\n'), "{err}");
}
