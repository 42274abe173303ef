//! The fast CPU backend's buffers: host vectors recycled through a pool keyed by length, so a
//! training or sampling step that asks for the same sizes every step allocates nothing after
//! the first (no malloc, no page faults, no zeroing: at 16x16 the fresh-page traffic of plain
//! `Vec`s cost as much kernel time as the model's own arithmetic). The counters give the peak
//! memory of buffers in use, as the GPU pool does.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{LazyLock, Mutex};

/// Bytes of pooled buffers: in use now, at most in use, and held (in use or cached).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostPoolStats {
    pub in_use_bytes: usize,
    pub peak_in_use_bytes: usize,
    pub reserved_bytes: usize,
    /// Vectors obtained from the allocator (not from the pool).
    pub allocations: u64,
}

struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    stats: HostPoolStats,
}

static POOL: LazyLock<Mutex<Pool>> =
    LazyLock::new(|| Mutex::new(Pool { free: HashMap::new(), stats: HostPoolStats::default() }));

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pooled f32 vector; it goes back to the pool when dropped.
#[derive(Debug)]
pub struct PooledVec {
    v: Vec<f32>,
}

impl PooledVec {
    /// `len` elements with unspecified contents (NaN when freshly allocated, else whatever the
    /// last user left).
    pub fn uninit(len: usize) -> PooledVec {
        let bytes = len * 4;
        let mut p = pool();
        let v = match p.free.get_mut(&len).and_then(Vec::pop) {
            Some(v) => v,
            None => {
                p.stats.allocations += 1;
                p.stats.reserved_bytes += bytes;
                vec![f32::NAN; len]
            }
        };
        p.stats.in_use_bytes += bytes;
        p.stats.peak_in_use_bytes = p.stats.peak_in_use_bytes.max(p.stats.in_use_bytes);
        PooledVec { v }
    }

    /// A pooled copy of `data`.
    pub fn from_slice(data: &[f32]) -> PooledVec {
        let mut p = PooledVec::uninit(data.len());
        p.v.copy_from_slice(data);
        p
    }
}

impl Clone for PooledVec {
    fn clone(&self) -> Self {
        PooledVec::from_slice(&self.v)
    }
}

impl Drop for PooledVec {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.v);
        let mut p = pool();
        p.stats.in_use_bytes -= v.len() * 4;
        p.free.entry(v.len()).or_default().push(v);
    }
}

impl Deref for PooledVec {
    type Target = Vec<f32>;
    fn deref(&self) -> &Vec<f32> {
        &self.v
    }
}

impl DerefMut for PooledVec {
    fn deref_mut(&mut self) -> &mut Vec<f32> {
        &mut self.v
    }
}

impl AsRef<[f32]> for PooledVec {
    fn as_ref(&self) -> &[f32] {
        &self.v
    }
}

impl AsMut<[f32]> for PooledVec {
    fn as_mut(&mut self) -> &mut [f32] {
        &mut self.v
    }
}

/// The pool's counters.
pub fn stats() -> HostPoolStats {
    pool().stats
}

/// Frees every cached (unused) vector.
pub fn empty_cache() {
    let mut p = pool();
    let cached: usize = p.free.values().flatten().map(|v| v.len() * 4).sum();
    p.free.clear();
    p.stats.reserved_bytes -= cached;
}
