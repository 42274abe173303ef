//! Data-parallel training across processes (`mpirun -np N ddpm train`, `srun ddpm train`): the
//! ranks, each rank's shard of a global batch, and the collectives the training loop needs.
//!
//! Every rank holds the whole model and takes a contiguous batch/N slice of every global batch;
//! the gradients are summed over the ranks (grad_sync.rs, in buckets while the backward pass
//! runs) and divided by N, so each rank applies the same update to the same weights. The MPI
//! transport (mpi_comm.rs) exists only with the `mpi` cargo feature: a plain build runs one rank
//! and refuses, in one line, to run as one of several ranks of a launcher.

pub mod grad_sync;
#[cfg(feature = "mpi")]
pub mod mpi_comm;
pub mod nccl;

use anyhow::{Result, bail};
use std::sync::Arc;

/// The collectives of data-parallel training. Every method is collective: all ranks call it in
/// the same order, and every rank ends with identical bits (the training loop relies on that to
/// keep the ranks' weights identical without ever sending them).
pub trait Comm: Send + Sync {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// The rank among those on this machine (which GPU a CUDA rank takes).
    fn local_rank(&self) -> usize;
    /// Element-wise sum over the ranks, in place.
    fn sum_f32(&self, data: &mut [f32]) -> Result<()>;
    /// Element-wise sum over the ranks, in place (the loss and the stop flag: few values).
    fn sum_f64(&self, data: &mut [f64]) -> Result<()>;
    /// Every rank's `value`, in rank order.
    fn gather_u64(&self, value: u64) -> Result<Vec<u64>>;
    /// Rank `root`'s bytes into every rank's `data` (same length everywhere).
    fn broadcast(&self, root: usize, data: &mut [u8]) -> Result<()>;
    /// Waits for every rank, sleeping rather than spinning (a rank idling beside a busy one on a
    /// small machine would otherwise steal its core).
    fn quiet_barrier(&self) -> Result<()>;
    /// Ends every rank's process at once (an error on one rank would leave the others waiting in
    /// the next collective for ever).
    fn abort(&self, code: i32) -> !;
}

/// The one rank of a plain run.
pub struct Solo;

impl Comm for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn sum_f32(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn sum_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        Ok(vec![value])
    }
    fn broadcast(&self, _: usize, _: &mut [u8]) -> Result<()> {
        Ok(())
    }
    fn quiet_barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// The number of processes a launcher started, read from its environment (Open MPI, MPICH/PMI,
/// srun); 1 outside a launcher.
pub fn launched_ranks() -> usize {
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse::<usize>().ok());
    // SLURM_STEP_NUM_TASKS only inside an srun step: SLURM_NTASKS is also set for the batch script.
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS"].iter().find_map(|k| var(k)).unwrap_or(1)
}

/// This process's communicator: MPI's world when built with the `mpi` feature and started by a
/// launcher, else one rank. A build without the feature refuses to run as one of several ranks
/// (N copies of a single-process run would write the same run directory).
pub fn open() -> Result<Arc<dyn Comm>> {
    let n = launched_ranks();
    #[cfg(feature = "mpi")]
    if n > 1 {
        return Ok(Arc::new(mpi_comm::MpiComm::init()?));
    }
    if n > 1 {
        bail!(
            "started as one of {n} ranks, but this ddpm was built without MPI; rebuild with `cargo build --release --features mpi`"
        );
    }
    Ok(Arc::new(Solo))
}

/// The images of a global batch that one rank takes: `len` of them from index `first`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub first: usize,
    pub len: usize,
    /// The global batch.
    pub global: usize,
}

impl Shard {
    /// The whole batch (one rank).
    pub fn whole(batch: usize) -> Self {
        Shard { first: 0, len: batch, global: batch }
    }

    /// Rank `rank`'s equal slice of a global batch; a batch the ranks cannot share equally is
    /// refused (unequal shards would weigh images unequally in the averaged gradient).
    pub fn of(batch: usize, rank: usize, ranks: usize) -> Result<Self> {
        if ranks == 0 || !batch.is_multiple_of(ranks) || batch < ranks {
            bail!("--batch {batch} cannot be split equally over {ranks} ranks; use a multiple of {ranks}");
        }
        let len = batch / ranks;
        Ok(Shard { first: rank * len, len, global: batch })
    }

    pub fn is_whole(&self) -> bool {
        self.len == self.global
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_tile_the_batch_and_unequal_splits_are_refused() {
        let shards: Vec<Shard> = (0..4).map(|r| Shard::of(12, r, 4).unwrap()).collect();
        assert_eq!(shards.iter().map(|s| (s.first, s.len)).collect::<Vec<_>>(), [(0, 3), (3, 3), (6, 3), (9, 3)]);
        assert!(Shard::of(12, 0, 1).unwrap().is_whole());
        assert!(!shards[1].is_whole());
        let e = Shard::of(10, 0, 4).unwrap_err().to_string();
        assert!(e.contains("multiple of 4"), "{e}");
        assert!(Shard::of(2, 0, 4).is_err());
    }
}
