//! The CUDA transport: gradient buckets averaged in place on the device by NCCL, on a stream of
//! their own beside the backward pass (src/gpu/nccl.rs). The NCCL rendezvous token travels over
//! the host communicator (MPI), from rank 0 to the others.

use super::Comm;
use super::grad_sync::Transport;
use crate::backend::CudaBackend;
use crate::gpu::Buffer;
use crate::gpu::nccl::{NcclComm, unique_id};
use anyhow::Result;

/// Bucket size on the device: NCCL's bandwidth needs messages of megabytes, and the first
/// buckets must still leave early in the backward pass (docs/scaling.md).
pub const NCCL_BUCKET_BYTES: usize = 16 << 20;

pub struct NcclTransport {
    nccl: NcclComm,
}

impl NcclTransport {
    /// Joins every rank's CUDA device into one NCCL communicator (collective over `comm`).
    pub fn open(b: &CudaBackend, comm: &dyn Comm) -> Result<NcclTransport> {
        let mut id = if comm.rank() == 0 { unique_id()? } else { [0u8; 128] };
        comm.broadcast(0, &mut id)?;
        Ok(NcclTransport { nccl: NcclComm::open(&b.gpu, id, comm.rank(), comm.size())? })
    }
}

impl Transport<CudaBackend> for NcclTransport {
    fn send(&mut self, _: &CudaBackend, indices: Vec<usize>, grads: &[Buffer<f32>]) -> Result<()> {
        let bufs: Vec<&Buffer<f32>> = indices.iter().map(|&i| &grads[i]).collect();
        self.nccl.average_after_queued(&bufs)
    }

    /// The main stream waits for the averages; the host does not (the time shows in the step).
    fn wait(&mut self, _: &CudaBackend, _: &mut [Buffer<f32>]) -> Result<f64> {
        self.nccl.join()?;
        Ok(0.0)
    }
}
