//! What the training loop steps: the op-by-op step (every backend, and every data-parallel run)
//! or the whole step captured once and replayed (src/train/graph.rs; a backend that can capture,
//! one process, unless `--no-graph`). Both report each step's stats; the captured one reports them
//! when its window of queued steps is read back, so the host does not wait for every step.

use super::graph::StepGraph;
use super::step::{OptimConfig, StepStats, TrainState, train_step_on};
use crate::backend::{Layers, TrainOps};
use crate::diffusion::ScheduleTables;
use crate::dist::Shard;
use crate::dist::grad_sync::GradSync;
use crate::model::unet::UNet;
use anyhow::Result;

/// Steps a captured run queues before reading their stats back (the host then waits for the
/// device once): at most a few dozen milliseconds of GPU work at cifar10 sizes.
pub const READ_BACK_EVERY: usize = 16;

pub enum Stepper<B: Layers + TrainOps> {
    OpByOp { state: TrainState<B::Buf>, sync: Option<GradSync<B>>, sticky: bool },
    Graph(StepGraph<B>),
}

impl<B: Layers + TrainOps> Stepper<B> {
    /// The captured step when `graph` is asked for, the backend can capture and no gradients
    /// travel between ranks; otherwise op by op. `sticky`: stop updating at the first
    /// non-finite step (the run will stop there) rather than skip it.
    pub fn new(
        b: &B,
        state: TrainState<B::Buf>,
        sync: Option<GradSync<B>>,
        graph: bool,
        shard: Shard,
        image_len: usize,
        sticky: bool,
    ) -> Result<Self> {
        if graph && b.can_capture() && sync.is_none() {
            return Ok(Stepper::Graph(StepGraph::new(b, state, shard.len, image_len, sticky)?));
        }
        Ok(Stepper::OpByOp { state, sync, sticky })
    }

    pub fn state(&self) -> &TrainState<B::Buf> {
        match self {
            Stepper::OpByOp { state, .. } => state,
            Stepper::Graph(g) => g.state(),
        }
    }

    pub fn is_graph(&self) -> bool {
        matches!(self, Stepper::Graph(_))
    }

    /// The gradient averaging of a data-parallel run (it carries the ranks' stop vote).
    pub fn sync_mut(&mut self) -> Option<&mut GradSync<B>> {
        match self {
            Stepper::OpByOp { sync, .. } => sync.as_mut(),
            Stepper::Graph(_) => None,
        }
    }

    /// Takes the next step on the host `batch` (this rank's shard). Returns the stats now known:
    /// op by op, this step's; captured, the window's when it is full, else none. A step that is
    /// not applied counts as taken when skipping; when sticky the state stays at the step before
    /// it (and the caller stops the run).
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        b: &B,
        unet: &UNet,
        tables: &ScheduleTables<B::Buf>,
        opt: &OptimConfig,
        batch: &[f32],
        shard: Shard,
        seed: u64,
    ) -> Result<Vec<StepStats>> {
        match self {
            Stepper::OpByOp { state, sync, sticky } => {
                let x0 = b.upload(batch)?;
                let s = train_step_on(b, unet, tables, state, opt, &x0, shard, seed, sync.as_mut())?;
                if !s.applied && !*sticky {
                    state.step = s.step; // skipped: the batch is spent, so the step counts
                }
                Ok(vec![s])
            }
            Stepper::Graph(g) => {
                g.step(b, unet, tables, opt, batch, seed)?;
                if g.pending() < READ_BACK_EVERY { Ok(Vec::new()) } else { g.drain(b) }
            }
        }
    }

    /// The stats of every step not yet reported (waits for the device).
    pub fn flush(&mut self, b: &B) -> Result<Vec<StepStats>> {
        match self {
            Stepper::OpByOp { .. } => Ok(Vec::new()),
            Stepper::Graph(g) => g.drain(b),
        }
    }
}
