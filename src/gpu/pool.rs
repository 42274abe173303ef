//! A caching allocator. Freed blocks go to a free list keyed by size class and are handed out
//! again without calling the driver, so a training step that allocates the same sizes every step
//! reaches a steady state with no driver allocations at all.

use super::Device;
use anyhow::{Result, bail};
use std::collections::HashMap;

/// Counters of the pool, in bytes of size classes (what the device actually holds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub in_use_bytes: usize,
    pub peak_in_use_bytes: usize,
    /// Bytes held from the device, in use or cached.
    pub reserved_bytes: usize,
    pub device_allocations: u64,
    pub device_frees: u64,
}

#[derive(Default)]
pub(crate) struct Pool {
    free: HashMap<usize, Vec<u64>>,
    stats: PoolStats,
    /// While a graph is being captured: every block handed out, as (pointer, size class).
    captured: Option<Vec<(u64, usize)>>,
}

/// Size classes: powers of two from 256 B to 1 MiB (small buffers are many and varied), whole
/// MiB above that (large activations repeat exactly, so rounding them further only wastes memory).
pub(crate) fn size_class(bytes: usize) -> usize {
    const MIB: usize = 1 << 20;
    if bytes <= MIB { bytes.next_power_of_two().max(256) } else { bytes.div_ceil(MIB) * MIB }
}

impl Pool {
    pub fn acquire(&mut self, bytes: usize, device: &Device) -> Result<u64> {
        let class = size_class(bytes);
        let ptr = match self.free.get_mut(&class).and_then(Vec::pop) {
            Some(p) => p,
            None => {
                let p = match device.raw_alloc(class) {
                    Ok(p) => p,
                    // Out of memory with blocks cached: give them back and try once more; not while
                    // a graph is being captured, whose recorded work may use those blocks.
                    Err(_) if self.captured.is_none() => {
                        self.trim(device)?;
                        device.raw_alloc(class)?
                    }
                    Err(e) => return Err(e.context(
                        "out of device memory while capturing a graph (cached blocks are not freed during a capture)",
                    )),
                };
                self.stats.device_allocations += 1;
                self.stats.reserved_bytes += class;
                p
            }
        };
        if let Some(c) = &mut self.captured {
            c.push((ptr, class));
        }
        self.stats.in_use_bytes += class;
        self.stats.peak_in_use_bytes = self.stats.peak_in_use_bytes.max(self.stats.in_use_bytes);
        Ok(ptr)
    }

    pub fn release(&mut self, ptr: u64, bytes: usize) {
        let class = size_class(bytes);
        self.stats.in_use_bytes -= class;
        self.free.entry(class).or_default().push(ptr);
    }

    /// Starts recording the blocks handed out, for a graph capture.
    pub fn begin_capture(&mut self) {
        self.captured = Some(Vec::new());
    }

    /// Ends a capture. A captured graph keeps reading and writing the blocks its work used, so the
    /// ones released during the capture are taken off the free list and returned (the graph holds
    /// them until it is dropped, then gives them back with [`Pool::release`]). Blocks still owned
    /// by live buffers stay with their owners, who must keep them alive while the graph runs.
    pub fn end_capture(&mut self) -> Vec<(u64, usize)> {
        let mut touched = self.captured.take().unwrap_or_default();
        touched.sort_unstable();
        touched.dedup();
        let mut reserved = Vec::new();
        for (ptr, class) in touched {
            let list = self.free.entry(class).or_default();
            if let Some(i) = list.iter().position(|&p| p == ptr) {
                list.swap_remove(i);
                self.stats.in_use_bytes += class;
                reserved.push((ptr, class));
            }
        }
        self.stats.peak_in_use_bytes = self.stats.peak_in_use_bytes.max(self.stats.in_use_bytes);
        reserved
    }

    /// Frees every cached block. Refused while a graph is being captured (its recorded work may
    /// use them when replayed); on a GPU it first waits for the queued work that used them.
    pub fn trim(&mut self, device: &Device) -> Result<()> {
        if self.captured.is_some() {
            bail!("emptying the memory cache while capturing a graph: the graph's work may use the cached blocks");
        }
        if self.free.values().all(Vec::is_empty) {
            return Ok(());
        }
        if let Device::Cuda(d) = device {
            d.synchronize()?;
        }
        for (class, ptrs) in self.free.drain() {
            for p in ptrs {
                device.raw_free(p);
                self.stats.device_frees += 1;
                self.stats.reserved_bytes -= class;
            }
        }
        Ok(())
    }

    pub fn stats(&self) -> PoolStats {
        self.stats
    }
}

impl Device {
    pub(super) fn raw_alloc(&self, bytes: usize) -> Result<u64> {
        match self {
            Device::Cuda(d) => d.raw_alloc(bytes),
            Device::Emulator(e) => e.raw_alloc(bytes),
        }
    }
    fn raw_free(&self, ptr: u64) {
        match self {
            Device::Cuda(d) => d.raw_free(ptr),
            Device::Emulator(e) => e.raw_free(ptr),
        }
    }
}
