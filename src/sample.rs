//! Sampling: start from Gaussian noise x_T and apply a scheduler's step with the UNet's noise
//! prediction until t = 0 (Ho et al. 2020, Algorithm 2, DDIM, or a fast solver's plan); then
//! images as diffusers makes them (clamp(x / 2 + 0.5, 0, 1) * 255, rounded) and PNG grids
//! (sample/png.rs).

use crate::backend::{Layers, SamplerOps};
use crate::diffusion::solver::Plan;
use crate::diffusion::{DdimScheduler, DdpmScheduler, Noise, PhiloxStream, Step, StepTable};
use crate::fast::prepared;
use crate::layout::nchw_to_nhwc;
use crate::math::torch_rng::TorchGenerator;
use crate::model::unet::UNet;
use crate::model::weights::HostParams;
use anyhow::{Result, bail};

mod png;
pub use png::{to_pixels, write_grid, write_png};

pub enum Sampler {
    Ddpm(DdpmScheduler),
    Ddim {
        scheduler: DdimScheduler,
        eta: f32,
    },
    /// One of the linear solvers (DPM-Solver++, UniPC, Euler, ...): its whole run as rows.
    Solver(Plan),
}

impl Sampler {
    /// UNet evaluations per batch (a Heun step is two).
    pub fn steps(&self) -> usize {
        match self {
            Sampler::Ddpm(s) => s.timesteps.len(),
            Sampler::Ddim { scheduler, .. } => scheduler.timesteps.len(),
            Sampler::Solver(p) => p.evaluations(),
        }
    }
}

/// Where sampling noise comes from.
pub enum NoiseSource {
    /// The engine's counter-based generator: x_T at offset 0, step k's noise at offset k + 1. The
    /// same seed gives the same images on every backend.
    Philox { seed: u64 },
    /// PyTorch's CPU generator, drawn in diffusers' pipeline order (x_T, then each step's noise as
    /// one NCHW tensor), so `generator=torch.manual_seed(seed)` images are reproduced.
    Torch(Box<TorchGenerator>),
}

/// How the denoising loop is launched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launch {
    /// Capture the first step as a graph and replay it for every step, where the backend can
    /// (CUDA); plain launches elsewhere.
    Graph,
    /// Launch every op of every step.
    Plain,
}

/// `n` samples, NHWC [n, size, size, out_channels], in model space. `x_t` optionally gives the
/// initial noise (NHWC); `progress` is called after each step.
#[allow(clippy::too_many_arguments)]
pub fn generate_with<B: Layers + SamplerOps>(
    b: &B,
    unet: &UNet,
    params: &[B::Buf],
    sampler: &Sampler,
    n: usize,
    noise: &mut NoiseSource,
    x_t: Option<&[f32]>,
    launch: Launch,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f32>> {
    let c = &unet.config;
    let len = n * c.sample_size * c.sample_size * c.in_channels;
    let mut x = match (x_t, &mut *noise) {
        (Some(given), _) => b.upload(given)?,
        (None, NoiseSource::Torch(g)) => torch_randn(b, g, unet, n)?,
        (None, NoiseSource::Philox { seed }) => {
            let mut x = b.alloc(len)?;
            b.fill_normal(&mut x, PhiloxStream { seed: *seed, offset: 0 })?;
            x
        }
    };
    match noise {
        NoiseSource::Philox { seed } => philox_loop(b, unet, params, sampler, n, *seed, &mut x, launch, progress)?,
        NoiseSource::Torch(g) => torch_loop(b, unet, params, sampler, n, g, &mut x, progress)?,
    }
    b.download(&x)
}

/// The Philox loop (see [`Denoiser`]).
#[allow(clippy::too_many_arguments)]
fn philox_loop<B: Layers + SamplerOps>(
    b: &B,
    unet: &UNet,
    params: &[B::Buf],
    sampler: &Sampler,
    n: usize,
    seed: u64,
    x: &mut B::Buf,
    launch: Launch,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    let start = std::mem::replace(x, b.alloc(0)?);
    let mut d = Denoiser::new(b, unet, params, sampler, n, seed, start, launch)?;
    for k in 0..d.steps {
        d.step()?;
        progress(k + 1, d.steps);
    }
    *x = d.into_sample();
    Ok(())
}

/// The Philox denoising loop, one step at a time. Every step is the same sequence of ops
/// (timesteps from the step table, the UNet, the scheduler step in place, advance the step
/// index), with all per-step data on the device. With [`Launch::Graph`] on a backend that
/// captures, the first call captures that sequence and every call replays it: no allocation, no
/// host-to-device copy and no synchronisation in the loop (a copy or a wait inside a capture is
/// an error). Step k's noise is Philox offset k + 1.
pub struct Denoiser<'a, B: Layers + SamplerOps> {
    b: &'a B,
    unet: &'a UNet,
    params: &'a [B::Buf],
    n: usize,
    seed: u64,
    table: B::Idx,
    step: B::Idx,
    t: B::Buf,
    x: B::Buf,
    /// The linear solvers' state ([saved | ring of Plan::ring slots], zeroed) and, when any row scales the
    /// model's input, the scaled input.
    solver: Option<(B::Buf, Option<B::Buf>)>,
    launch: Launch,
    graph: Option<B::Graph>,
    pub steps: usize,
    done: usize,
    /// The parameters, frozen for the run: the fast CPU ops compare their kept weights once.
    _pin: prepared::Frozen<'a>,
}

impl<'a, B: Layers + SamplerOps> Denoiser<'a, B> {
    /// A run of `sampler`'s steps from x_T = `x` (n images, NHWC), owned until [`Self::into_sample`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        b: &'a B,
        unet: &'a UNet,
        params: &'a [B::Buf],
        sampler: &Sampler,
        n: usize,
        seed: u64,
        x: B::Buf,
        launch: Launch,
    ) -> Result<Self> {
        let table = b.upload_u32(&step_table(sampler)?.words)?;
        let (step, t) = (b.upload_u32(&[0])?, b.alloc(n)?);
        let solver = match sampler {
            Sampler::Solver(plan) => {
                let len = B::len(&x);
                let scaled = plan.rows.iter().any(|(_, r)| r.input_scale != 1.0);
                let state = b.upload(&vec![0.0; (1 + plan.ring()) * len])?;
                Some((state, if scaled { Some(b.alloc(len)?) } else { None }))
            }
            _ => None,
        };
        let steps = sampler.steps();
        let _pin = prepared::freeze(params.iter().filter_map(|p| B::host_f32(p)));
        Ok(Denoiser { b, unet, params, n, seed, table, step, t, x, solver, launch, graph: None, steps, done: 0, _pin })
    }

    /// Runs the next step (queued on a GPU: nothing waits for it).
    pub fn step(&mut self) -> Result<()> {
        self.step_with(None)
    }

    /// The next step with its noise given (the torch-compatible loop; plain launches), or from
    /// Philox when `noise` is None.
    pub fn step_with(&mut self, noise: Option<&B::Buf>) -> Result<()> {
        if self.done >= self.steps {
            bail!("all {} sampling steps have run", self.steps);
        }
        if noise.is_none() && self.launch == Launch::Graph && self.b.can_capture() {
            if self.graph.is_none() {
                self.b.begin_capture()?;
                let captured = self.ops(None);
                // End the capture even if an op failed, so the device is usable afterwards.
                let graph = self.b.end_capture();
                captured?;
                self.graph = Some(graph?);
            }
            self.b.replay(self.graph.as_ref().expect("captured above"))?;
        } else {
            self.ops(noise)?;
        }
        self.done += 1;
        Ok(())
    }

    fn ops(&mut self, noise: Option<&B::Buf>) -> Result<()> {
        let b = self.b;
        b.sampler_timesteps(&self.table, &self.step, &mut self.t)?;
        match &mut self.solver {
            Some((state, scaled)) => {
                let input = match scaled {
                    Some(buf) => {
                        b.solver_input(&self.table, &self.step, &self.x, buf)?;
                        &*buf
                    }
                    None => &self.x,
                };
                let out = self.unet.predict(b, self.params, input, &self.t, self.n)?;
                b.solver_step(&self.table, &self.step, &mut self.x, &out, state, noise, self.seed, 1)?;
            }
            None => {
                if noise.is_some() {
                    bail!("given noise is for the linear solvers; DDPM and DDIM take theirs in the torch loop");
                }
                let eps = self.unet.predict(b, self.params, &self.x, &self.t, self.n)?;
                b.sampler_step(&self.table, &self.step, &mut self.x, &eps, self.seed, 1)?;
            }
        }
        b.sampler_advance(&mut self.step)
    }

    /// The current sample (x_0 once every step has run), NHWC.
    pub fn sample(&self) -> &B::Buf {
        &self.x
    }

    pub fn into_sample(self) -> B::Buf {
        // The graph (which holds the blocks its steps used) goes first.
        drop(self.graph);
        self.x
    }
}

/// The torch-compatible loop: diffusers' order of draws from PyTorch's CPU generator (x_T, then
/// each noisy step's noise as one NCHW tensor), uploaded per step; plain launches.
#[allow(clippy::too_many_arguments)]
fn torch_loop<B: Layers + SamplerOps>(
    b: &B,
    unet: &UNet,
    params: &[B::Buf],
    sampler: &Sampler,
    n: usize,
    g: &mut TorchGenerator,
    x: &mut B::Buf,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    let steps = match sampler {
        Sampler::Ddpm(s) => s.timesteps.clone(),
        Sampler::Ddim { scheduler, .. } => scheduler.timesteps.clone(),
        Sampler::Solver(_) => return torch_solver_loop(b, unet, params, sampler, n, g, x, progress),
    };
    let mut next = b.alloc(B::len(x))?;
    for (k, &t) in steps.iter().enumerate() {
        let tb = b.upload(&vec![t as f32; n])?;
        let eps = unet.predict(b, params, x, &tb, n)?;
        let adds_noise = match sampler {
            Sampler::Ddpm(_) => t > 0,
            Sampler::Ddim { eta, .. } => *eta > 0.0,
            Sampler::Solver(_) => unreachable!("the solvers run torch_solver_loop"),
        };
        let drawn = if adds_noise { Some(torch_randn(b, g, unet, n)?) } else { None };
        // Without noise this step never reads it; any stream will do.
        let step_noise = drawn.as_ref().map_or(Noise::Philox(PhiloxStream { seed: 0, offset: 0 }), Noise::Given);
        match sampler {
            Sampler::Ddpm(s) => b.ddpm_step(&s.step_params(t)?, x, &eps, step_noise, &mut next)?,
            Sampler::Ddim { scheduler, eta } => {
                b.ddim_step(&scheduler.step_params(t, *eta, false)?, x, &eps, step_noise, &mut next)?
            }
            Sampler::Solver(_) => unreachable!("the solvers run torch_solver_loop"),
        }
        std::mem::swap(x, &mut next);
        progress(k + 1, steps.len());
    }
    Ok(())
}

/// The linear solvers with torch's draws: the same table-driven ops as the Philox loop, plain
/// launches, each noisy row's noise drawn (one NCHW tensor, diffusers' order) and uploaded.
#[allow(clippy::too_many_arguments)]
fn torch_solver_loop<B: Layers + SamplerOps>(
    b: &B,
    unet: &UNet,
    params: &[B::Buf],
    sampler: &Sampler,
    n: usize,
    g: &mut TorchGenerator,
    x: &mut B::Buf,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    let Sampler::Solver(plan) = sampler else { bail!("torch_solver_loop runs the linear solvers only") };
    let start = std::mem::replace(x, b.alloc(0)?);
    let mut d = Denoiser::new(b, unet, params, sampler, n, 0, start, Launch::Plain)?;
    for (k, (_, row)) in plan.rows.iter().enumerate() {
        let noise = if row.noise_std.is_some() { Some(torch_randn(b, g, unet, n)?) } else { None };
        d.step_with(noise.as_ref())?;
        progress(k + 1, d.steps);
    }
    *x = d.into_sample();
    Ok(())
}

/// PyTorch draws NCHW tensors; the engine is NHWC.
fn torch_randn<B: Layers>(b: &B, g: &mut TorchGenerator, unet: &UNet, n: usize) -> Result<B::Buf> {
    let c = &unet.config;
    let (size, ch) = (c.sample_size, c.in_channels);
    b.upload(&nchw_to_nhwc(&g.randn(n * size * size * ch), n, ch, size, size))
}

/// Every step of a run as rows of the device-resident step table.
fn step_table(sampler: &Sampler) -> Result<StepTable> {
    let timesteps = match sampler {
        Sampler::Ddpm(s) => &s.timesteps,
        Sampler::Ddim { scheduler, .. } => &scheduler.timesteps,
        Sampler::Solver(plan) => return Ok(StepTable::new(plan.rows.iter().map(|&(t, r)| (t, Step::Solver(r))))),
    };
    let mut rows = Vec::new();
    for &t in timesteps {
        rows.push((
            t as f32,
            match sampler {
                Sampler::Ddpm(s) => Step::Ddpm(s.step_params(t)?),
                Sampler::Ddim { scheduler, eta } => Step::Ddim(scheduler.step_params(t, *eta, false)?),
                Sampler::Solver(_) => unreachable!("returned above"),
            },
        ));
    }
    Ok(StepTable::new(rows))
}

/// `n` samples from Philox stream `seed` (see [`generate_with`]).
pub fn generate<B: Layers + SamplerOps>(
    b: &B,
    unet: &UNet,
    params: &[B::Buf],
    sampler: &Sampler,
    n: usize,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f32>> {
    generate_with(b, unet, params, sampler, n, &mut NoiseSource::Philox { seed }, None, Launch::Graph, progress)
}

/// What to sample: `n` images, `batch` per denoising loop.
pub struct Job<'a> {
    pub unet: &'a UNet,
    pub params: &'a HostParams,
    pub sampler: &'a Sampler,
    pub n: usize,
    pub batch: usize,
    /// The initial noise of all `n` images (NHWC), if given.
    pub x_t: Option<&'a [f32]>,
    pub launch: Launch,
}

/// Philox seed of the batch whose first image is `start`: every batch its own stream, so a seed
/// and a batch size give the same images on every backend, whatever the device.
fn batch_seed(seed: u64, start: usize) -> u64 {
    seed.wrapping_add(start as u64 * 0x9E37_79B9)
}

/// All `job.n` images (NHWC, model space), `job.batch` at a time, with the weights uploaded
/// once. A torch generator continues its stream from batch to batch, as diffusers' pipelines do
/// over a loop of calls; Philox gives each batch the stream [`batch_seed`]. `progress` is called
/// after every step of every batch.
pub fn generate_batches<B: Layers + SamplerOps>(
    b: &B,
    job: &Job,
    noise: &mut NoiseSource,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f32>> {
    let params = job.params.upload(b)?;
    // Only this function holds these weights: a backend may keep them converted (bf16).
    job.unet.keep_product_weights(b, &params)?;
    let c = &job.unet.config;
    let per = c.in_channels * c.sample_size * c.sample_size;
    let seed = match noise {
        NoiseSource::Philox { seed } => Some(*seed),
        NoiseSource::Torch(_) => None,
    };
    let mut images = Vec::with_capacity(job.n * per);
    for start in (0..job.n).step_by(job.batch.max(1)) {
        let m = job.batch.min(job.n - start);
        let given = job.x_t.map(|x| &x[start * per..(start + m) * per]);
        let mut batch_noise = seed.map(|s| NoiseSource::Philox { seed: batch_seed(s, start) });
        let source = batch_noise.as_mut().unwrap_or(&mut *noise);
        images.extend(generate_with(b, job.unet, &params, job.sampler, m, source, given, job.launch, progress)?);
    }
    Ok(images)
}
