//! The graphed training step (src/train/graph.rs) against the op-by-op step, and its row-driven
//! ops (kernels/train_step.cu) against their reference, on any device.

use ddpm::backend::{Backend, CpuBackend, CudaBackend, Layers, Optimizer, TrainOps};
use ddpm::diffusion::{NoiseSchedule, ScheduleTables, SchedulerConfig};
use ddpm::gpu::{Buffer, Gpu};
use ddpm::math::adamw::AdamWStep;
use ddpm::model::UNetConfig;
use ddpm::model::unet::UNet;
use ddpm::model::weights::HostParams;
use ddpm::testing::{assert_close, random_vec, rng_for};
use ddpm::train::graph::StepGraph;
use ddpm::train::row::{HISTORY_WORDS, ROW_WORDS, Recorded, StepRow};
use ddpm::train::schedule::LrSchedule;
use ddpm::train::step::{OptimConfig, StepStats, TrainState, train_step};

pub fn small() -> UNetConfig {
    UNetConfig { sample_size: 8, block_out_channels: vec![16, 32], norm_num_groups: 8, ..UNetConfig::tiny() }
}

pub fn opt() -> OptimConfig {
    // Warmup and clipping both active: the row's lr changes every step and the clip scale is < 1.
    OptimConfig {
        lr: 1e-3,
        warmup_steps: 3,
        schedule: LrSchedule::Cosine,
        total_steps: 10,
        max_grad_norm: Some(0.05),
        ..Default::default()
    }
}

pub struct Setup<B: Backend> {
    pub unet: UNet,
    pub tables: ScheduleTables<B::Buf>,
    pub init: Vec<Vec<f32>>,
    pub batches: Vec<Vec<f32>>,
}

pub const BATCH: usize = 3;

/// `steps` batches of BATCH images for the small model; `nan_at` puts a NaN in that batch.
pub fn setup<B: Layers>(b: &B, steps: usize, nan_at: Option<usize>) -> Setup<B> {
    let unet = UNet::new(small()).unwrap();
    let schedule = NoiseSchedule::new(&SchedulerConfig::default().beta_schedule, 1000).unwrap();
    let tables = b.schedule_tables(&schedule).unwrap();
    let mut rng = rng_for("graphed_train_step");
    let mut batches: Vec<Vec<f32>> = (0..steps).map(|_| random_vec(&mut rng, BATCH * 8 * 8 * 3, -1.0, 1.0)).collect();
    if let Some(k) = nan_at {
        batches[k][5] = f32::NAN;
    }
    let init = HostParams::init(&unet.table, 9).values;
    Setup { unet, tables, init, batches }
}

/// The buffers of a state, downloaded: params, moments, EMA, and the gradients `with_grads`
/// (scratch: after a stop the graph has computed later steps' gradients, which it did not apply).
fn host<B: Backend>(b: &B, s: &TrainState<B::Buf>, with_grads: bool) -> Vec<Vec<f32>> {
    let grads: &[B::Buf] = if with_grads { &s.grads } else { &[] };
    [&s.params[..], grads, &s.exp_avg, &s.exp_avg_sq, &s.ema]
        .iter()
        .flat_map(|v| v.iter().map(|t| b.download(t).unwrap()))
        .collect()
}

/// The op-by-op steps; a non-applied step counts (as `--skip-nonfinite` takes it) when `skip`.
pub fn op_by_op<B: Layers + Optimizer>(b: &B, s: &Setup<B>, skip: bool) -> (Vec<StepStats>, TrainState<B::Buf>) {
    let mut state = TrainState::new(b, &s.init).unwrap();
    let mut stats = Vec::new();
    for x in &s.batches {
        let x = b.upload(x).unwrap();
        let st = train_step(b, &s.unet, &s.tables, &mut state, &opt(), &x, BATCH, 21).unwrap();
        stats.push(st);
        if !st.applied {
            if !skip {
                break;
            }
            state.step += 1;
        }
    }
    (stats, state)
}

/// The graphed steps, read back every `window` steps.
pub fn graphed<B: Layers + TrainOps>(
    b: &B,
    s: &Setup<B>,
    skip: bool,
    window: usize,
) -> (Vec<StepStats>, TrainState<B::Buf>) {
    let state = TrainState::new(b, &s.init).unwrap();
    let mut g = StepGraph::new(b, state, BATCH, 8 * 8 * 3, !skip).unwrap();
    let mut stats = Vec::new();
    for x in &s.batches {
        g.step(b, &s.unet, &s.tables, &opt(), x, 21).unwrap();
        if g.pending() == window {
            stats.extend(g.drain(b).unwrap());
        }
        if stats.last().is_some_and(|s: &StepStats| !s.applied && !skip) {
            break;
        }
    }
    let (state, rest) = g.into_state(b).unwrap();
    stats.extend(rest);
    (stats, state)
}

/// Same stats and the same state, bit for bit.
pub fn assert_same<B: Backend>(
    b: &B,
    what: &str,
    a: &(Vec<StepStats>, TrainState<B::Buf>),
    g: &(Vec<StepStats>, TrainState<B::Buf>),
) {
    assert_eq!(a.0.len(), g.0.len(), "{what}: steps reported");
    for (i, (x, y)) in a.0.iter().zip(&g.0).enumerate() {
        let same = x.loss.to_bits() == y.loss.to_bits() || (x.loss.is_nan() && y.loss.is_nan());
        assert!(same && x.lr == y.lr && x.applied == y.applied, "{what}: step {}: {x:?} vs {y:?}", i + 1);
        assert!(
            x.grad_norm.to_bits() == y.grad_norm.to_bits() || !x.applied,
            "{what}: step {} norm: {x:?} vs {y:?}",
            i + 1
        );
    }
    assert_eq!(a.1.step, g.1.step, "{what}: step counter");
    let with_grads = a.0.iter().all(|s| s.applied);
    for (i, (x, y)) in host(b, &a.1, with_grads).iter().zip(&host(b, &g.1, with_grads)).enumerate() {
        assert_close(&format!("{what}: state tensor {i}"), y, x, 0.0, 0.0);
    }
}

/// 3 steps graphed (read back every 2, then the rest) against 3 op-by-op steps: same bits
/// everywhere.
pub fn whole_step<B: Layers + TrainOps>(b: &B) {
    let s = setup(b, 3, None);
    let (a, g) = (op_by_op(b, &s, false), graphed(b, &s, false, 2));
    assert!(a.0.iter().all(|s| s.applied) && a.0.iter().any(|s| s.grad_norm > 0.05), "the run clips: {:?}", a.0);
    assert_same(b, &b.name(), &a, &g);
}

/// A NaN in batch 3 of 4 (one window): without skipping, the graph stops updating at step 3
/// (state of step 2, counter 2); with skipping, step 3 is skipped and step 4 taken, as op by op.
pub fn nonfinite<B: Layers + TrainOps>(b: &B) {
    let s = setup(b, 4, Some(2));
    for skip in [false, true] {
        let (a, g) = (op_by_op(b, &s, skip), graphed(b, &s, skip, 4));
        assert!(!a.0[2].applied, "step 3 is not finite");
        assert_same(b, &format!("{} skip={skip}", b.name()), &a, &g);
    }
}

/// The row-driven kernels on `gpu` against the reference ops on the same row; the clip norm in
/// one launch against one per tensor.
pub fn ops_parity(gpu: &Gpu) {
    let d = CudaBackend::new(gpu.clone());
    let c = CpuBackend;
    let mut rng = rng_for("train_step_ops");
    let adamw = AdamWStep::new(3e-4, 0.9, 0.999, 1e-8, 1e-2, 4, 1.0);
    let row = StepRow { adamw, ema_decay: 0.75, seed: 0x1234_5678_9abc, offset: 6, slot: 2 }.words();
    assert_eq!(row.len(), ROW_WORDS);
    let (drow, crow) = (d.upload_u32(&row).unwrap(), row.to_vec());
    // Draws: 3 images of 7 elements from image 2 on (a shard's view of the stream).
    let (mut dt, mut dtf, mut deps) = (d.upload_u32(&[9; 3]).unwrap(), d.alloc(3).unwrap(), d.alloc(21).unwrap());
    let (mut ct, mut ctf, mut ceps) = (vec![9u32; 3], vec![0.0; 3], vec![0.0; 21]);
    d.train_draw(&drow, 2, 1000, &mut dt, &mut dtf, &mut deps).unwrap();
    c.train_draw(&crow, 2, 1000, &mut ct, &mut ctf, &mut ceps).unwrap();
    assert_eq!(d.download_u32(&dt).unwrap(), ct, "timesteps");
    assert_close("t as f32", &d.download(&dtf).unwrap(), &ctf, 0.0, 0.0);
    // Box-Muller in f64 may differ from the host by 1 f32 ulp near a rounding boundary.
    assert_close("noise", &d.download(&deps).unwrap(), &ceps, 0.0, 2.4e-7);
    for (n, loss, sticky_before) in [(1usize, 0.5f32, 1u32), (70_001, 0.25, 1), (300_007, f32::NAN, 1), (1000, 0.5, 0)]
    {
        let grads = [random_vec(&mut rng, n, -0.1, 0.1), random_vec(&mut rng, 33, -1.0, 1.0)];
        let dgrads: Vec<_> = grads.iter().map(|g| d.upload(g).unwrap()).collect();
        for (max_norm, sticky) in [(Some(0.5f32), true), (None, false), (Some(1e6), true)] {
            let mut dst = d.upload_u32(&[sticky_before, 7, 7, 7]).unwrap();
            let mut cst = vec![sticky_before, 7, 7, 7];
            d.clip_status(&dgrads, &d.upload(&[loss]).unwrap(), max_norm, sticky, &mut dst).unwrap();
            c.clip_status(&grads, &vec![loss], max_norm, sticky, &mut cst).unwrap();
            let got = d.download_u32(&dst).unwrap();
            let ok = loss.is_finite() && (!sticky || sticky_before != 0);
            assert_eq!((got[0], cst[0]), (ok as u32, ok as u32), "applied n={n} {max_norm:?} sticky={sticky}");
            let (gn, cn) = (ddpm::train::row::status_norm(&got), ddpm::train::row::status_norm(&cst));
            assert!((gn - cn).abs() <= 1e-5 * cn, "norm n={n}: {gn} vs {cn}");
            let (gs, cs) = (f32::from_bits(got[1]), f32::from_bits(cst[1]));
            assert!((gs - cs).abs() <= 1e-5 * cs && (max_norm.is_some() || gs == 1.0), "scale n={n}: {gs} vs {cs}");
            update_parity(&d, &drow, &dst, &crow, n, &mut rng);
        }
    }
    let (mut dh, mut ch) = (d.upload_u32(&[0; 4 * HISTORY_WORDS]).unwrap(), vec![0u32; 4 * HISTORY_WORDS]);
    let st = [1u32, 0, 0x1111, 0x2222];
    d.record_step(&drow, &d.upload_u32(&st).unwrap(), &d.upload(&[0.125]).unwrap(), &mut dh).unwrap();
    c.record_step(&crow, &st.to_vec(), &vec![0.125], &mut ch).unwrap();
    assert_eq!(d.download_u32(&dh).unwrap(), ch, "history");
    let r = Recorded::from_words(&ch[2 * HISTORY_WORDS..3 * HISTORY_WORDS]);
    assert_eq!((r.loss, r.applied, r.grad_norm.to_bits()), (0.125, true, 0x2222_0000_1111), "slot 2");
    clip_norm_in_one_launch(gpu);
}

/// `clip_status` after `prepare_clip_status`: the norm's partials of every gradient in one launch
/// (sum_squares_many_f32), the status of one launch per tensor bit for bit.
fn clip_norm_in_one_launch(gpu: &Gpu) {
    let mut rng = rng_for("clip_many");
    // One partial, several, a tail after the 4-deep loop, the most (512) and a few more tensors.
    let sizes = [1usize, 33, 16 * 1024 + 1, 70_001, 9_000_000, 5, 300_007];
    let (each, one) = (CudaBackend::new(gpu.clone()), CudaBackend::new(gpu.clone()));
    let grads: Vec<_> = sizes.iter().map(|&n| each.upload(&random_vec(&mut rng, n, -0.1, 0.1)).unwrap()).collect();
    let loss = each.upload(&[0.5]).unwrap();
    one.prepare_clip_status(&grads).unwrap();
    let status = |b: &CudaBackend| {
        let mut st = b.upload_u32(&[1, 7, 7, 7]).unwrap();
        gpu.begin_capture().unwrap();
        b.clip_status(&grads, &loss, Some(0.5), true, &mut st).unwrap();
        let graph = gpu.end_capture().unwrap();
        graph.launch().unwrap();
        let kernels = graph.kernels().map(|k| k.iter().filter(|k| k.starts_with("sum_squares")).count());
        (b.download_u32(&st).unwrap(), kernels)
    };
    let ((want, each_launches), (got, one_launches)) = (status(&each), status(&one));
    assert_eq!(got, want, "clip status with the gradients' partials in one launch vs one per tensor");
    if let (Some(e), Some(o)) = (each_launches, one_launches) {
        assert_eq!((e, o), (sizes.len(), 1), "sum-of-squares launches, one per tensor vs prepared");
    }
}

/// AdamW and EMA from the row and a status (whose scale the device chose), kernel vs reference;
/// the EMA in AdamW's pass the bits of the by-value EMA kernel on the updated weight, and AdamW's
/// own results the same with and without it.
fn update_parity(
    d: &CudaBackend,
    drow: &Buffer<u32>,
    dst: &Buffer<u32>,
    crow: &Vec<u32>,
    n: usize,
    rng: &mut rand::rngs::StdRng,
) {
    let c = CpuBackend;
    // The reference takes the device's status, so both apply the same scale.
    let cst_dev = d.download_u32(dst).unwrap();
    let (p0, g) = (random_vec(rng, n, -1.0, 1.0), random_vec(rng, n, -0.1, 0.1));
    let (m0, v0) = (random_vec(rng, n, -0.01, 0.01), random_vec(rng, n, 0.0, 0.01));
    let (mut cp, mut cm, mut cv, mut ce) = (p0.clone(), m0.clone(), v0.clone(), m0.clone());
    c.adamw_step_row(&mut cp, &g, &mut cm, &mut cv, Some(&mut ce), crow, &cst_dev).unwrap();
    let up = |v: &Vec<f32>| d.upload(v).unwrap();
    let (mut dp, dg, mut dm, mut dv, mut de) = (up(&p0), up(&g), up(&m0), up(&v0), up(&m0));
    d.adamw_step_row(&mut dp, &dg, &mut dm, &mut dv, Some(&mut de), drow, dst).unwrap();
    for (what, x, want) in [("param", &dp, &cp), ("exp_avg", &dm, &cm), ("exp_avg_sq", &dv, &cv), ("ema", &de, &ce)] {
        assert_close(&format!("{what} row n={n} applied={}", cst_dev[0]), &d.download(x).unwrap(), want, 1e-7, 1e-6);
    }
    let (mut alone, mut m_alone, mut v_alone, mut ema_apart) = (up(&p0), up(&m0), up(&v0), up(&m0));
    d.adamw_step_row(&mut alone, &dg, &mut m_alone, &mut v_alone, None, drow, dst).unwrap();
    if cst_dev[0] != 0 {
        d.ema_update(&mut ema_apart, &dp, StepRow::decode(crow, 1.0).1).unwrap();
    }
    for (what, x, y) in [("param", &alone, &dp), ("exp_avg", &m_alone, &dm), ("exp_avg_sq", &v_alone, &dv)] {
        assert_close(
            &format!("{what} row without the EMA n={n}"),
            &d.download(x).unwrap(),
            &d.download(y).unwrap(),
            0.0,
            0.0,
        );
    }
    assert_close(
        &format!("ema in AdamW's pass vs apart n={n}"),
        &d.download(&de).unwrap(),
        &d.download(&ema_apart).unwrap(),
        0.0,
        0.0,
    );
    let kept = super::optim_checks::kept_adamw(&d.gpu, [&p0, &g, &m0, &v0], |k, [p, g, m, v]| {
        k.adamw_step_row(p, g, m, v, None, drow, dst)
    });
    for (what, k, x) in [("param", &kept.0, &dp), ("exp_avg", &kept.1, &dm), ("exp_avg_sq", &kept.2, &dv)] {
        assert_close(&format!("{what} row with a kept copy n={n}"), k, &d.download(x).unwrap(), 0.0, 0.0);
    }
    if cst_dev[0] == 0 {
        assert_close("a skipped step writes nothing", &d.download(&dp).unwrap(), &p0, 0.0, 0.0);
    }
}

/// After the step that captures, replays take nothing from the driver or the pool, and a graph
/// of the whole step holds the same kernel launches however many steps run.
pub fn replays_allocate_nothing(gpu: &Gpu) {
    let b = CudaBackend::new(gpu.clone());
    let s = setup(&b, 4, None);
    let mut g = StepGraph::new(&b, TrainState::new(&b, &s.init).unwrap(), BATCH, 8 * 8 * 3, true).unwrap();
    g.step(&b, &s.unet, &s.tables, &opt(), &s.batches[0], 21).unwrap();
    let before = gpu.memory_stats();
    for x in &s.batches[1..] {
        g.step(&b, &s.unet, &s.tables, &opt(), x, 21).unwrap();
    }
    let stats = g.drain(&b).unwrap();
    let after = gpu.memory_stats();
    assert!(stats.len() == 4 && stats.iter().all(|s| s.applied), "{stats:?}");
    assert_eq!(after.device_allocations, before.device_allocations, "the replays allocated device memory");
    assert_eq!(after.in_use_bytes, before.in_use_bytes, "the replays took blocks from the pool");
}
