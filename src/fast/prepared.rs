//! Weights prepared once and reused while they stay the same: the transposed [k, out] copy that
//! lets the GEMM read a layer's weights without packing them, and the Winograd-transformed
//! filters, each from the weights as they are or rounded to bf16 (`--precision bf16`). Sampling multiplies the same weights at every step; re-deriving these per call cost a
//! quarter of a cifar10 batch-1 step (the gemm crate packing [out, k] weights on every call:
//! 24% of the samples in `perf`), because at batch 1 the weights outweigh the activations.
//!
//! No caller says when weights change, so the cache finds out by content: a buffer seen for the
//! first time only has its xxh3 hash recorded (training, whose weights change every step, pays
//! one read of them and keeps nothing); seen again with the same hash, it is prepared and kept
//! with an exact copy of the weights; every later use compares the weights with that copy
//! element by element (a memcmp on every core, ~1/20 of the preparation) and prepares again on
//! any difference, except where a [`Frozen`] borrow shows that nothing can have written them
//! since the last compare.
//! So a result never comes from stale weights, and the prepared data are computed by the same
//! code as without the cache: the bits are the same either way (tests/prepared.rs).
//!
//! Memory: the copies and the prepared forms are kept up to `DDPM_PREPARED_MB` (default 2048;
//! 0 turns the cache off, for A/B runs); past it a buffer is prepared per call as before.

use super::bf16::{Precision, round_into};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use xxhash_rust::xxh3::xxh3_64;

/// What was derived from the weights (with the dimensions that shape it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// [rows, cols] row-major weights as [cols, rows] row-major.
    Transposed { rows: usize, cols: usize },
    /// F(2x2, 3x3) forward filters of OHWI weights (src/fast/winograd.rs).
    WinogradF2 { cin: usize, cout: usize },
    /// F(4x4, 3x3) forward filters (src/fast/winograd4.rs).
    WinogradF4 { cin: usize, cout: usize },
}

/// Where a buffer lives: its address, length and what is derived from it, from the weights as
/// they are (f32) or rounded to bf16 first (src/fast/bf16.rs).
type Key = (usize, usize, Kind, Precision);

struct Entry {
    source: Arc<Vec<f32>>,
    prepared: Arc<Vec<f32>>,
    /// The [`Frozen`] under which the weights were last found equal to `source`.
    verified_in: Option<u64>,
}

#[derive(Default)]
struct Cache {
    /// The hash of each buffer seen once.
    seen: HashMap<Key, u64>,
    kept: HashMap<Key, Entry>,
    bytes: usize,
    /// The buffers each live [`Frozen`] borrows: (address, bytes, its id).
    frozen: Vec<(usize, usize, u64)>,
    /// Bit compares run (tests: a frozen buffer is compared once).
    compares: u64,
}

/// Buffers borrowed for as long as this lives, so that nothing (safe) writes them meanwhile: an
/// entry found unchanged once under it needs no compare until it is dropped. The sampler holds
/// one over its parameters for a whole run (src/sample.rs), which takes the compares (a read of
/// the whole model and its copy, 10% of a cifar10 batch-1 step) out of every step but the first.
/// Dropping it ends the freeze; a guard leaked with `mem::forget` would leave its buffers frozen
/// after the borrow ends, so none is (only `Denoiser` holds one).
pub struct Frozen<'a> {
    id: u64,
    _borrow: std::marker::PhantomData<&'a [f32]>,
}

/// Freezes `bufs` for the life of the returned guard (see [`Frozen`]).
pub fn freeze<'a>(bufs: impl IntoIterator<Item = &'a [f32]>) -> Frozen<'a> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
    c.frozen.extend(bufs.into_iter().map(|b| (b.as_ptr() as usize, 4 * b.len(), id)));
    Frozen { id, _borrow: std::marker::PhantomData }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        cache().lock().unwrap_or_else(|e| e.into_inner()).frozen.retain(|r| r.2 != self.id);
    }
}

/// Bit compares run so far (for tests).
pub fn compares() -> u64 {
    cache().lock().unwrap_or_else(|e| e.into_inner()).compares
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// A budget set by [`set_budget`]; `usize::MAX` when none is.
static FORCED_BUDGET: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The byte budget: [`set_budget`]'s, else `DDPM_PREPARED_MB`'s (checked by
/// [`super::check_env`]), else 2 GiB.
fn budget() -> usize {
    static FROM_ENV: OnceLock<usize> = OnceLock::new();
    match FORCED_BUDGET.load(Ordering::Relaxed) {
        usize::MAX => *FROM_ENV.get_or_init(|| {
            std::env::var("DDPM_PREPARED_MB").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(2048) << 20
        }),
        forced => forced,
    }
}

/// For tests and A/B runs: `Some(bytes)` sets the budget (0: off), `None` returns to the
/// environment's. Process-wide; either way the results are the same bits.
pub fn set_budget(bytes: Option<usize>) {
    FORCED_BUDGET.store(bytes.unwrap_or(usize::MAX), Ordering::Relaxed);
}

/// Bytes held now (the copies and the prepared forms), for tests and reports.
pub fn held_bytes() -> usize {
    cache().lock().unwrap_or_else(|e| e.into_inner()).bytes
}

/// Drops everything kept (tests; a long-lived process switching models); live freezes stay.
pub fn clear() {
    let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
    let frozen = std::mem::take(&mut c.frozen);
    *c = Cache { frozen, ..Cache::default() };
}

/// `w` prepared as `kind` (`len` floats, written by `make`, which must depend only on `w` and
/// `kind`): the kept copy when `w` is unchanged since it was prepared, else made now and kept
/// when this is its second sighting and the budget allows; None otherwise.
pub fn kept(
    w: &[f32],
    kind: Kind,
    precision: Precision,
    len: usize,
    make: impl Fn(&[f32], &mut [f32]),
) -> Option<Arc<Vec<f32>>> {
    if budget() == 0 {
        return None;
    }
    let key = (w.as_ptr() as usize, w.len(), kind, precision);
    // The compare runs without the lock: it runs on rayon's threads, and a thread waiting for
    // it may pick up another op's task that asks the cache.
    let (frozen, found) = {
        let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
        let (start, bytes) = (key.0, 4 * w.len());
        let frozen = c.frozen.iter().find(|r| r.0 <= start && start + bytes <= r.0 + r.1).map(|r| r.2);
        let found = c.kept.get(&key).map(|e| (e.verified_in, Arc::clone(&e.source), Arc::clone(&e.prepared)));
        if let Some((verified_in, _, prepared)) = &found
            && frozen.is_some()
            && *verified_in == frozen
        {
            return Some(Arc::clone(prepared));
        }
        c.compares += found.is_some() as u64;
        (frozen, found)
    };
    if let Some((_, source, prepared)) = found
        && same_bits(&source, w)
    {
        let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = c.kept.get_mut(&key).filter(|e| Arc::ptr_eq(&e.prepared, &prepared)) {
            e.verified_in = frozen;
        }
        return Some(prepared);
    }
    let hash = xxh3_64(bytemuck::cast_slice(w));
    let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
    let again = c.seen.insert(key, hash) == Some(hash);
    if let Some(old) = c.kept.remove(&key) {
        c.bytes -= 4 * (old.source.len() + old.prepared.len());
    }
    let bytes = 4 * (w.len() + len);
    if !again || c.bytes + bytes > budget() {
        return None;
    }
    c.bytes += bytes;
    drop(c);
    let mut prepared = vec![0.0; len];
    make_as(precision, w, &mut prepared, make);
    let prepared = Arc::new(prepared);
    let entry = Entry { source: Arc::new(w.to_vec()), prepared: Arc::clone(&prepared), verified_in: None };
    let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
    // Another thread may have kept the same buffer meanwhile: count one of the two.
    if let Some(old) = c.kept.insert(key, entry) {
        c.bytes -= 4 * (old.source.len() + old.prepared.len());
    }
    Some(prepared)
}

/// Bit equality (NaN weights compare equal to themselves, so they stay cached too), on all of
/// rayon's threads: at batch 1 the compares read the whole model each step (10% of a cifar10
/// step's samples in `perf` on one thread).
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    const CHUNK: usize = 1 << 16;
    let (a, b) = (bytemuck::cast_slice::<f32, u32>(a), bytemuck::cast_slice::<f32, u32>(b));
    a.len() == b.len() && a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)).all(|(x, y)| x == y)
}

/// Runs `use_` on `w` prepared as `kind`: the kept copy ([`kept`]), else prepared into scratch
/// for this call. Either way the same values, so the same bits: a caller that used the
/// unprepared weights when nothing is kept could differ in the last bits from one that hits
/// (the gemm crate's packed and unpacked paths sum some shapes in another order: 3 output
/// channels did, tests/prepared.rs).
pub fn with_prepared<R>(
    w: &[f32],
    kind: Kind,
    precision: Precision,
    len: usize,
    make: impl Fn(&[f32], &mut [f32]),
    use_: impl FnOnce(&[f32]) -> R,
) -> R {
    match kept(w, kind, precision, len, &make) {
        Some(prepared) => use_(&prepared),
        None => super::scratch::with_scratch([len], |[buf]| {
            make_as(precision, w, buf, make);
            use_(buf)
        }),
    }
}

/// `make` on `w`, or on `w` rounded to bf16.
fn make_as(precision: Precision, w: &[f32], out: &mut [f32], make: impl Fn(&[f32], &mut [f32])) {
    match precision {
        Precision::F32 => make(w, out),
        Precision::Bf16 => super::scratch::with_scratch([w.len()], |[r]| {
            round_into(w, r);
            make(r, out)
        }),
    }
}
