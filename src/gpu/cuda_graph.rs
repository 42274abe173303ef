//! CUDA graphs on a real device: stream capture into a graph, instantiated once and launched
//! on the device's stream (src/gpu/graph.rs is the device-neutral side).

use super::cuda::CudaDevice;
use anyhow::{Result, anyhow, bail};
use cudarc::driver::{result, sys};

impl CudaDevice {
    /// Starts capturing this device's stream. Relaxed mode: the caching pool may still call
    /// cuMemAlloc while the sampler's first step is captured.
    pub fn begin_capture(&self) -> Result<()> {
        self.make_current()?;
        // SAFETY: stream belongs to this context.
        unsafe { result::stream::begin_capture(self.stream, sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED) }
            .map_err(|e| anyhow!("starting a CUDA graph capture: {e}"))
    }

    /// Ends the capture and instantiates the graph.
    pub fn end_capture(&self) -> Result<CudaGraph> {
        self.make_current()?;
        // SAFETY: a capture was begun on this stream by begin_capture.
        let graph = unsafe { result::stream::end_capture(self.stream) }
            .map_err(|e| anyhow!("ending a CUDA graph capture: {e}"))?;
        let mut nodes = 0usize;
        // SAFETY: graph is the valid graph just captured; a null node array asks only for the count.
        unsafe { sys::cuGraphGetNodes(graph, std::ptr::null_mut(), &mut nodes) }.result()?;
        // SAFETY: graph is valid; the flags are the defaults.
        let exec = unsafe { result::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) };
        let exec = match exec {
            Ok(e) => e,
            Err(err) => {
                // SAFETY: graph is valid and no longer needed.
                let _ = unsafe { result::graph::destroy(graph) };
                bail!("instantiating a CUDA graph: {err}");
            }
        };
        Ok(CudaGraph { graph, exec, stream: self.stream, ctx: self.ctx, nodes })
    }
}

/// An instantiated CUDA graph, launched on the device's stream.
pub struct CudaGraph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
    stream: sys::CUstream,
    ctx: sys::CUcontext,
    pub nodes: usize,
}
// SAFETY: graph handles are plain driver handles, used with the context made current.
unsafe impl Send for CudaGraph {}
unsafe impl Sync for CudaGraph {}

impl CudaGraph {
    pub fn launch(&self) -> Result<()> {
        // SAFETY: ctx is the device's retained context; exec and stream belong to it.
        unsafe {
            result::ctx::set_current(self.ctx)?;
            result::graph::launch(self.exec, self.stream)
        }
        .map_err(|e| anyhow!("launching a CUDA graph: {e}"))
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: exec and graph are not used after drop; the context is made current first.
        unsafe {
            let _ = result::ctx::set_current(self.ctx);
            let _ = result::graph::exec_destroy(self.exec);
            let _ = result::graph::destroy(self.graph);
        }
    }
}
