//! Captured work, replayed with one call: a CUDA graph on a real device (stream capture, then
//! cuGraphLaunch), a recorded list of launches on the emulator. Between `begin_capture` and
//! `end_capture` launches are recorded, not run, on both; copies and synchronisation are refused
//! there (on a GPU they would break the capture), which is how the sampler proves its loop has
//! no host synchronisation in it.

use super::{Device, Gpu, KernelArgs, LaunchConfig, cuda_graph};
use anyhow::{Result, bail};

/// One emulated launch, kept for replay.
pub(crate) struct RecordedLaunch {
    pub kernel: String,
    pub cfg: LaunchConfig,
    pub args: KernelArgs,
}

pub(crate) enum Capture {
    /// The kernels captured so far, with each launch's block count (what `Graph::launches` lists).
    Cuda(Vec<(String, u64)>),
    Emulated(Vec<RecordedLaunch>),
}

enum Replay {
    Cuda(cuda_graph::CudaGraph),
    Emulated(Vec<RecordedLaunch>),
}

/// A captured sequence of launches. It holds the pool blocks its work used (see
/// `Pool::end_capture`) until dropped.
pub struct Graph {
    gpu: Gpu,
    replay: Replay,
    reserved: Vec<(u64, usize)>,
    launches: Vec<(String, u64)>,
}

impl Gpu {
    /// Starts capturing this device's launches into a graph.
    pub fn begin_capture(&self) -> Result<()> {
        let mut capture = self.inner.capture.lock().unwrap();
        if capture.is_some() {
            bail!("a graph capture is already in progress");
        }
        if let Device::Cuda(d) = &self.inner.device {
            d.begin_capture()?;
        }
        self.inner.pool.lock().unwrap().begin_capture();
        *capture = Some(match &self.inner.device {
            Device::Cuda(_) => Capture::Cuda(Vec::new()),
            Device::Emulator(_) => Capture::Emulated(Vec::new()),
        });
        Ok(())
    }

    /// Ends the capture and returns the graph, ready to launch.
    pub fn end_capture(&self) -> Result<Graph> {
        let capture = self.inner.capture.lock().unwrap().take();
        let reserved = self.inner.pool.lock().unwrap().end_capture();
        let (replay, launches) = match (capture, &self.inner.device) {
            (Some(Capture::Cuda(kernels)), Device::Cuda(d)) => (Replay::Cuda(d.end_capture()?), kernels),
            (Some(Capture::Emulated(launches)), Device::Emulator(e)) => {
                // The emulator checks every pointer argument against live buffers; the graph's
                // blocks stay live (to the graph) until it is dropped.
                for &(ptr, class) in &reserved {
                    e.register(ptr, class);
                }
                let listed = launches.iter().map(|l| (l.kernel.clone(), l.cfg.blocks())).collect();
                (Replay::Emulated(launches), listed)
            }
            _ => bail!("end_capture without begin_capture"),
        };
        Ok(Graph { gpu: self.clone(), replay, reserved, launches })
    }

    /// Whether launches are being captured now (copies and synchronisation are refused then).
    pub fn is_capturing(&self) -> bool {
        self.inner.capture.lock().unwrap().is_some()
    }

    pub(crate) fn refuse_while_capturing(&self, what: &str) -> Result<()> {
        if self.is_capturing() {
            bail!(
                "{what} while capturing a graph: a captured sequence may not copy to or from the host or wait for the device"
            );
        }
        Ok(())
    }

    /// Records an emulated launch if a capture is in progress; true if it did.
    pub(crate) fn record_if_capturing(&self, kernel: &str, cfg: &LaunchConfig, args: &KernelArgs) -> bool {
        match self.inner.capture.lock().unwrap().as_mut() {
            Some(Capture::Emulated(launches)) => {
                launches.push(RecordedLaunch { kernel: kernel.to_string(), cfg: *cfg, args: args.clone() });
                true
            }
            Some(Capture::Cuda(kernels)) => {
                kernels.push((kernel.to_string(), cfg.blocks()));
                false
            }
            None => false,
        }
    }
}

impl Graph {
    /// Each captured launch's kernel and block count, in launch order, on a GPU or the emulator
    /// (`ddpm bench --memory-only --launches`).
    pub fn launches(&self) -> &[(String, u64)] {
        &self.launches
    }

    /// Queues the whole captured sequence on the device's stream.
    pub fn launch(&self) -> Result<()> {
        self.gpu.refuse_while_capturing("launching a graph")?;
        match &self.replay {
            Replay::Cuda(g) => g.launch(),
            Replay::Emulated(launches) => {
                for l in launches {
                    self.gpu.launch(&l.kernel, l.cfg, &l.args)?;
                }
                Ok(())
            }
        }
    }

    /// Kernel launches in the graph.
    pub fn len(&self) -> usize {
        match &self.replay {
            Replay::Cuda(g) => g.nodes,
            Replay::Emulated(l) => l.len(),
        }
    }

    /// The kernels launched, in order, where the graph is an emulated one (a CUDA graph keeps
    /// only its node count): what a test counts to see which launches a change removed.
    pub fn kernels(&self) -> Option<Vec<&str>> {
        match &self.replay {
            Replay::Cuda(_) => None,
            Replay::Emulated(l) => Some(l.iter().map(|l| l.kernel.as_str()).collect()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        for &(ptr, class) in &self.reserved {
            self.gpu.release(ptr, class);
        }
    }
}
