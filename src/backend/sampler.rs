//! The sampler's table-driven step ops and captured graphs. A denoising step reads its constants
//! from a [`StepTable`] resident on the backend at a step index that is also resident there and
//! advanced by an op, so the sequence of ops is the same at every step: on a GPU it is captured
//! once as a CUDA graph and replayed (src/sample.rs).

use super::{Backend, CpuBackend, CudaBackend, FastCpuBackend, FastCpuBf16Backend};
use crate::cpu;
use crate::diffusion::solver::apply_row;
use crate::diffusion::step_table::{Step, decode};
use crate::diffusion::{Noise, PhiloxStream, checks};
use crate::fast::pool::PooledVec;
use crate::gpu::{Buffer, Graph};
use anyhow::{Result, bail};

pub trait SamplerOps: Backend {
    /// What a captured sequence of ops becomes on this backend.
    type Graph;

    /// t[i] = step `step[0]`'s timestep, for every image.
    fn sampler_timesteps(&self, table: &Self::Idx, step: &Self::Idx, t: &mut Self::Buf) -> Result<()>;
    /// x = step `step[0]` of the scheduler applied to (x, model_out), in place; noise (if the step
    /// adds any) from Philox stream (seed, offset_base + step).
    fn sampler_step(
        &self,
        table: &Self::Idx,
        step: &Self::Idx,
        x: &mut Self::Buf,
        model_out: &Self::Buf,
        seed: u64,
        offset_base: u64,
    ) -> Result<()>;
    /// step[0] += 1
    fn sampler_advance(&self, step: &mut Self::Idx) -> Result<()>;

    /// out = step `step[0]`'s model input (its input scale times x), for the linear solvers
    /// (src/diffusion/solver/).
    fn solver_input(&self, table: &Self::Idx, step: &Self::Idx, x: &Self::Buf, out: &mut Self::Buf) -> Result<()>;
    /// x = solver row `step[0]` applied to (x, model_out) in place. `state` is [saved sample | a
    /// ring of converted outputs, as many slots as the plan's rows use (Plan::ring)], x's length
    /// each, zeroed before the first row. Noise, if the row adds any: `noise`, else Philox stream
    /// (seed, offset_base + step).
    #[allow(clippy::too_many_arguments)]
    fn solver_step(
        &self,
        table: &Self::Idx,
        step: &Self::Idx,
        x: &mut Self::Buf,
        model_out: &Self::Buf,
        state: &mut Self::Buf,
        noise: Option<&Self::Buf>,
        seed: u64,
        offset_base: u64,
    ) -> Result<()>;

    /// Whether [`SamplerOps::begin_capture`] works here.
    fn can_capture(&self) -> bool {
        false
    }
    /// Ops after this are recorded, not run, until `end_capture`.
    fn begin_capture(&self) -> Result<()> {
        bail!("{} cannot capture graphs", self.name())
    }
    fn end_capture(&self) -> Result<Self::Graph>;
    /// Runs a captured sequence.
    fn replay(&self, graph: &Self::Graph) -> Result<()>;
}

fn host_step(table: &[u32], step: &[u32]) -> Result<(usize, f32, Step)> {
    let k = *step.first().ok_or_else(|| anyhow::anyhow!("sampler step index buffer is empty"))? as usize;
    let (t, st) = decode(table, k)?;
    Ok((k, t, st))
}

/// The solver's model input on host slices.
fn host_solver_input(table: &[u32], step: &[u32], x: &[f32], out: &mut [f32]) -> Result<()> {
    checks::sampler_step(x.len(), out.len())?;
    let Step::Solver(row) = host_step(table, step)?.2 else { bail!("solver_input: this step is not a solver row") };
    for (o, &v) in out.iter_mut().zip(x) {
        *o = row.input_scale * v;
    }
    Ok(())
}

/// The solver's row on host slices, in place (the reference of kernels/diffusion.cu
/// solver_step_f32: the same f32 operations in the same order).
#[allow(clippy::too_many_arguments)]
fn host_solver_step(
    table: &[u32],
    step: &[u32],
    x: &mut [f32],
    model_out: &[f32],
    state: &mut [f32],
    noise: Option<&[f32]>,
    seed: u64,
    offset_base: u64,
) -> Result<()> {
    let ring = checks::solver_step(x.len(), model_out.len(), state.len(), noise.map(<[f32]>::len))?;
    let (k, _, st) = host_step(table, step)?;
    let Step::Solver(row) = st else { bail!("solver_step: step {k} is not a solver row") };
    if row.slots.extent() > ring {
        bail!("solver_step: row {k} uses ring slots up to {}, the state holds {ring}", row.slots.extent() - 1);
    }
    let noise = noise.map_or(Noise::Philox(PhiloxStream { seed, offset: offset_base + k as u64 }), Noise::Given);
    apply_row(&row, x, model_out, state, noise);
    Ok(())
}

/// The reference step on host slices, in place: `sample` receives a copy of x first (the
/// reference reads the sample and writes the result separately).
#[allow(clippy::too_many_arguments)]
fn host_sampler_step(
    table: &[u32],
    step: &[u32],
    x: &mut [f32],
    model_out: &[f32],
    seed: u64,
    offset_base: u64,
    sample: &mut [f32],
) -> Result<()> {
    checks::sampler_step(x.len(), model_out.len())?;
    let (k, _, st) = host_step(table, step)?;
    let noise = Noise::Philox(PhiloxStream { seed, offset: offset_base + k as u64 });
    sample.copy_from_slice(x);
    match st {
        Step::Ddpm(c) => cpu::diffusion::ddpm_step(&c, sample, model_out, noise, x),
        Step::Ddim(c) => cpu::diffusion::ddim_step(&c, sample, model_out, noise, x),
        Step::Solver(_) => bail!("sampler step {k} is a solver row: run it with solver_step"),
    }
    Ok(())
}

impl SamplerOps for CpuBackend {
    type Graph = ();

    fn sampler_timesteps(&self, table: &Vec<u32>, step: &Vec<u32>, t: &mut Vec<f32>) -> Result<()> {
        t.fill(host_step(table, step)?.1);
        Ok(())
    }
    fn sampler_step(
        &self,
        table: &Vec<u32>,
        step: &Vec<u32>,
        x: &mut Vec<f32>,
        model_out: &Vec<f32>,
        seed: u64,
        offset_base: u64,
    ) -> Result<()> {
        let mut sample = vec![0.0; x.len()];
        host_sampler_step(table, step, x, model_out, seed, offset_base, &mut sample)
    }
    fn sampler_advance(&self, step: &mut Vec<u32>) -> Result<()> {
        step[0] += 1;
        Ok(())
    }
    fn solver_input(&self, table: &Vec<u32>, step: &Vec<u32>, x: &Vec<f32>, out: &mut Vec<f32>) -> Result<()> {
        host_solver_input(table, step, x, out)
    }
    fn solver_step(
        &self,
        table: &Vec<u32>,
        step: &Vec<u32>,
        x: &mut Vec<f32>,
        model_out: &Vec<f32>,
        state: &mut Vec<f32>,
        noise: Option<&Vec<f32>>,
        seed: u64,
        offset_base: u64,
    ) -> Result<()> {
        host_solver_step(table, step, x, model_out, state, noise.map(|v| v.as_slice()), seed, offset_base)
    }
    fn end_capture(&self) -> Result<()> {
        bail!("the CPU backend cannot capture graphs")
    }
    fn replay(&self, _: &()) -> Result<()> {
        bail!("the CPU backend cannot capture graphs")
    }
}

macro_rules! fast_sampler_ops {
    ($backend:ty) => {
        impl SamplerOps for $backend {
            type Graph = ();

            fn sampler_timesteps(&self, table: &Vec<u32>, step: &Vec<u32>, t: &mut PooledVec) -> Result<()> {
                CpuBackend.sampler_timesteps(table, step, t)
            }
            fn sampler_step(
                &self,
                table: &Vec<u32>,
                step: &Vec<u32>,
                x: &mut PooledVec,
                model_out: &PooledVec,
                seed: u64,
                offset_base: u64,
            ) -> Result<()> {
                // The copy of x from the pool: no allocation in the loop.
                let mut sample = PooledVec::uninit(x.len());
                host_sampler_step(table, step, x, model_out, seed, offset_base, &mut sample)
            }
            fn sampler_advance(&self, step: &mut Vec<u32>) -> Result<()> {
                CpuBackend.sampler_advance(step)
            }
            fn solver_input(
                &self,
                table: &Vec<u32>,
                step: &Vec<u32>,
                x: &PooledVec,
                out: &mut PooledVec,
            ) -> Result<()> {
                host_solver_input(table, step, x, out)
            }
            fn solver_step(
                &self,
                table: &Vec<u32>,
                step: &Vec<u32>,
                x: &mut PooledVec,
                model_out: &PooledVec,
                state: &mut PooledVec,
                noise: Option<&PooledVec>,
                seed: u64,
                offset_base: u64,
            ) -> Result<()> {
                host_solver_step(table, step, x, model_out, state, noise.map(|v| &v[..]), seed, offset_base)
            }
            fn end_capture(&self) -> Result<()> {
                CpuBackend.end_capture()
            }
            fn replay(&self, g: &()) -> Result<()> {
                CpuBackend.replay(g)
            }
        }
    };
}
fast_sampler_ops!(FastCpuBackend);
fast_sampler_ops!(FastCpuBf16Backend);

impl SamplerOps for CudaBackend {
    type Graph = Graph;

    fn sampler_timesteps(&self, table: &Buffer<u32>, step: &Buffer<u32>, t: &mut Buffer<f32>) -> Result<()> {
        crate::cuda::diffusion::sampler_timesteps_f32(table, step, t)
    }
    fn sampler_step(
        &self,
        table: &Buffer<u32>,
        step: &Buffer<u32>,
        x: &mut Buffer<f32>,
        model_out: &Buffer<f32>,
        seed: u64,
        offset_base: u64,
    ) -> Result<()> {
        crate::cuda::diffusion::sampler_step_f32(table, step, x, model_out, seed, offset_base)
    }
    fn sampler_advance(&self, step: &mut Buffer<u32>) -> Result<()> {
        crate::cuda::diffusion::sampler_advance_u32(step)
    }
    fn solver_input(
        &self,
        table: &Buffer<u32>,
        step: &Buffer<u32>,
        x: &Buffer<f32>,
        out: &mut Buffer<f32>,
    ) -> Result<()> {
        crate::cuda::diffusion::solver_input_f32(table, step, x, out)
    }
    fn solver_step(
        &self,
        table: &Buffer<u32>,
        step: &Buffer<u32>,
        x: &mut Buffer<f32>,
        model_out: &Buffer<f32>,
        state: &mut Buffer<f32>,
        noise: Option<&Buffer<f32>>,
        seed: u64,
        offset_base: u64,
    ) -> Result<()> {
        crate::cuda::diffusion::solver_step_f32(table, step, x, model_out, state, noise, seed, offset_base)
    }
    fn can_capture(&self) -> bool {
        true
    }
    fn begin_capture(&self) -> Result<()> {
        self.gpu.begin_capture()
    }
    fn end_capture(&self) -> Result<Graph> {
        self.gpu.end_capture()
    }
    fn replay(&self, graph: &Graph) -> Result<()> {
        graph.launch()
    }
}
