//! The MPI transport (the `mpi` cargo feature): MPI's world communicator behind the Comm trait.
//!
//! Every call holds one lock, so MPI sees one thread at a time (MPI_THREAD_SERIALIZED): the
//! gradient buckets are summed on grad_sync's thread, the loss and the stop flag on the training
//! thread, never at once (the loop waits for the buckets first), and in the same order on every
//! rank, which collectives require.

use super::Comm;
use anyhow::{Result, bail};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use std::sync::Mutex;

pub struct MpiComm {
    /// Finalizes MPI when dropped (MPI_Finalize waits for every rank): kept until the process's
    /// last collective.
    _universe: Universe,
    world: SimpleCommunicator,
    local_rank: usize,
    lock: Mutex<()>,
}

// SAFETY: MPI handles are plain integers or pointers owned by the library; every use goes through
// `lock`, which is what MPI_THREAD_SERIALIZED (checked in init) asks of a multi-threaded process.
unsafe impl Send for MpiComm {}
unsafe impl Sync for MpiComm {}

impl MpiComm {
    pub fn init() -> Result<MpiComm> {
        let Some((universe, level)) = mpi::initialize_with_threading(mpi::Threading::Serialized) else {
            bail!("MPI was already initialised in this process");
        };
        if level < mpi::Threading::Serialized {
            bail!("this MPI library grants only {level:?} threading; ddpm needs Serialized");
        }
        let world = universe.world();
        // The ranks sharing this machine's memory, in world order: the local rank picks the GPU.
        let local_rank = world.split_shared(world.rank()).rank() as usize;
        Ok(MpiComm { _universe: universe, world, local_rank, lock: Mutex::new(()) })
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// A reduce-scatter, then an all-gather: each block of the sum is computed on one rank and
    /// copied to the others, so all ranks hold the same bits whichever reduction algorithm MPI
    /// picks (an MPI_Allreduce may sum in a different order on different ranks).
    fn sum_f32(&self, data: &mut [f32]) -> Result<()> {
        let n = self.size();
        let block = data.len().div_ceil(n);
        let mut padded = vec![0.0f32; block * n];
        padded[..data.len()].copy_from_slice(data);
        let mut mine = vec![0.0f32; block];
        let _held = self.locked();
        self.world.reduce_scatter_block_into(&padded[..], &mut mine[..], SystemOperation::sum());
        self.world.all_gather_into(&mine[..], &mut padded[..]);
        data.copy_from_slice(&padded[..data.len()]);
        Ok(())
    }

    fn sum_f64(&self, data: &mut [f64]) -> Result<()> {
        // Gathered and summed in rank order on every rank: identical everywhere, and cheap at
        // the handful of values this carries.
        let n = self.size();
        let mut all = vec![0.0f64; data.len() * n];
        {
            let _held = self.locked();
            self.world.all_gather_into(&data[..], &mut all[..]);
        }
        let len = data.len();
        for (i, v) in data.iter_mut().enumerate() {
            *v = (0..n).map(|r| all[r * len + i]).sum();
        }
        Ok(())
    }

    fn gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        let mut all = vec![0u64; self.size()];
        let _held = self.locked();
        self.world.all_gather_into(&value, &mut all[..]);
        Ok(all)
    }

    fn broadcast(&self, root: usize, data: &mut [u8]) -> Result<()> {
        let _held = self.locked();
        self.world.process_at_rank(root as i32).broadcast_into(data);
        Ok(())
    }

    fn quiet_barrier(&self) -> Result<()> {
        let mut request = {
            let _held = self.locked();
            self.world.immediate_barrier()
        };
        loop {
            let tested = {
                let _held = self.locked();
                request.test()
            };
            match tested {
                Ok(_) => return Ok(()),
                Err(pending) => request = pending,
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
