//! NCCL on a CUDA device: one communicator per rank and a side stream of its own, so gradient
//! buckets are averaged over the ranks while the device's main stream goes on with the backward
//! pass. Each bucket waits (an event) for the work queued before it on the main stream; the main
//! stream waits (another event) for every bucket before it touches a gradient again. NCCL is
//! loaded when first used, like the driver: a machine without it gets a one-line error.

use super::{Buffer, Device, Gpu};
use anyhow::{Context, Result, anyhow, bail};
use cudarc::driver::{result as cu, sys as cusys};
use cudarc::nccl::{result as nccl, sys as ncclsys};

/// The rendezvous token rank 0 makes and every rank passes to [`NcclComm::open`].
pub type UniqueId = [u8; 128];

pub fn unique_id() -> Result<UniqueId> {
    library_present()?;
    let id = nccl::get_uniqueid().map_err(|e| anyhow!("ncclGetUniqueId: {e:?}"))?;
    Ok(id.internal.map(|c| c as u8))
}

fn library_present() -> Result<()> {
    // SAFETY: only tries to load the library.
    if !unsafe { ncclsys::is_culib_present() } {
        bail!("NCCL (libnccl.so) is not on the library path; CUDA ranks need it (set LD_LIBRARY_PATH)");
    }
    Ok(())
}

pub struct NcclComm {
    gpu: Gpu,
    comm: ncclsys::ncclComm_t,
    side: cusys::CUstream,
    /// Recorded on the main stream before a bucket, and on the side stream after the last one.
    before: cusys::CUevent,
    after: cusys::CUevent,
    ranks: usize,
}

// SAFETY: the handles belong to `gpu`'s context, which every method makes current first; the
// training loop drives one NcclComm from one thread at a time (it is not Sync).
unsafe impl Send for NcclComm {}

impl NcclComm {
    /// Joins the communicator `id` as `rank` of `ranks` on `gpu` (a CUDA device, not the emulator).
    pub fn open(gpu: &Gpu, id: UniqueId, rank: usize, ranks: usize) -> Result<NcclComm> {
        let Device::Cuda(d) = &gpu.inner.device else { bail!("NCCL runs on CUDA devices, not on the emulator") };
        library_present()?;
        d.current_stream()?;
        let side = cu::stream::create(cu::stream::StreamKind::NonBlocking)?;
        let flags = cusys::CUevent_flags::CU_EVENT_DISABLE_TIMING;
        let (before, after) = (cu::event::create(flags)?, cu::event::create(flags)?);
        let mut comm = std::ptr::null_mut();
        let id = ncclsys::ncclUniqueId { internal: id.map(|b| b as std::ffi::c_char) };
        // SAFETY: comm is an out-pointer; every rank passes the same id, its own rank and the count.
        unsafe { nccl::comm_init_rank(&mut comm, ranks as i32, id, rank as i32) }
            .map_err(|e| anyhow!("ncclCommInitRank (rank {rank} of {ranks}): {e:?}"))?;
        Ok(NcclComm { gpu: gpu.clone(), comm, side, before, after, ranks })
    }

    pub fn ranks(&self) -> usize {
        self.ranks
    }

    fn main_stream(&self) -> Result<cusys::CUstream> {
        match &self.gpu.inner.device {
            Device::Cuda(d) => d.current_stream(),
            Device::Emulator(_) => unreachable!("open refuses the emulator"),
        }
    }

    /// Queues the in-place average over the ranks of `bufs` on the side stream, after everything
    /// queued on the main stream so far (the backward steps that wrote them).
    pub fn average_after_queued(&self, bufs: &[&Buffer<f32>]) -> Result<()> {
        let main = self.main_stream()?;
        let side = self.side as ncclsys::cudaStream_t;
        // SAFETY: events and streams belong to this context; the buffers are live device memory of
        // `gpu`, not written by the main stream again before `join` (their backward steps are done).
        unsafe {
            cu::event::record(self.before, main)?;
            cu::stream::wait_event(self.side, self.before, cusys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT)?;
            nccl::group_start().map_err(|e| anyhow!("ncclGroupStart: {e:?}"))?;
            for b in bufs {
                let p = b.device_ptr() as *mut std::ffi::c_void;
                let (f32_, avg) = (ncclsys::ncclDataType_t::ncclFloat32, ncclsys::ncclRedOp_t::ncclAvg);
                nccl::all_reduce(p, p, b.len(), f32_, avg, self.comm, side)
                    .map_err(|e| anyhow!("ncclAllReduce of {} floats: {e:?}", b.len()))?;
            }
            nccl::group_end().map_err(|e| anyhow!("ncclGroupEnd: {e:?}"))?;
        }
        Ok(())
    }

    /// Makes the main stream wait for every average queued so far.
    pub fn join(&self) -> Result<()> {
        let main = self.main_stream()?;
        // SAFETY: as in average_after_queued.
        unsafe {
            cu::event::record(self.after, self.side)?;
            cu::stream::wait_event(main, self.after, cusys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT)
        }
        .context("joining the NCCL stream")
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        if self.main_stream().is_ok() {
            // SAFETY: nothing is queued on the side stream after this synchronisation.
            unsafe {
                let _ = cu::stream::synchronize(self.side);
                let _ = nccl::comm_destroy(self.comm);
                let _ = cu::event::destroy(self.before);
                let _ = cu::event::destroy(self.after);
                let _ = cu::stream::destroy(self.side);
            }
        }
    }
}
