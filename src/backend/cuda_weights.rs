//! bf16 copies of the weights (issue #17): at `--precision bf16` a convolution or linear reads
//! its weight rounded to bf16, and without a copy it rounds it at each use: a pass (4 bytes read,
//! 2 written per element, one launch) in every layer's forward and again in its backward, every
//! step. A trainer or a sampler whose weights only the optimizer writes keeps a copy instead
//! (`Layers::keep_product_weights`): rounded once here, then rewritten by `adamw_step` in the
//! same pass that updates the weight (kernels/optim.cu), so it always holds the weight's current
//! bits rounded, the bits the layer would round itself.
//!
//! Copies are keyed by the weight buffer's id (`Buffer::id`), never its address: the pool hands a
//! freed address out again, an id it does not. They are never dropped while the backend lives,
//! because a captured graph holds their addresses; a process keeps one set per model it trains or
//! samples (2 bytes per weight element).

use super::cuda_bf16::rounded as round;
use crate::gpu::Buffer;
use anyhow::Result;
use half::bf16;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

type V = Buffer<f32>;

/// The kept copies, shared by the clones of a backend.
#[derive(Clone, Default)]
pub struct KeptWeights {
    copies: Arc<Mutex<HashMap<u64, Arc<Buffer<bf16>>>>>,
    /// Keep nothing: every product rounds its weight (tests and A/B runs; `DDPM_NO_KEPT_WEIGHTS`).
    pub off: bool,
}

impl KeptWeights {
    /// Keeps a rounded copy of each weight that has none yet (those kept already are current:
    /// only `adamw_step` writes a kept weight, and it writes the copy too).
    pub fn keep(&self, weights: &[&V]) -> Result<()> {
        if self.off {
            return Ok(());
        }
        let mut copies = self.copies.lock().expect("kept weights: a thread panicked holding the lock");
        for w in weights {
            if let Entry::Vacant(slot) = copies.entry(w.id()) {
                slot.insert(Arc::new(round(w)?));
            }
        }
        Ok(())
    }

    /// `w`'s copy, if it is kept.
    pub fn get(&self, w: &V) -> Option<Arc<Buffer<bf16>>> {
        self.copies.lock().expect("kept weights: a thread panicked holding the lock").get(&w.id()).cloned()
    }

    /// A one-line error for an op that would write a kept weight in place (other than
    /// `adamw_step`): its copy would go stale, and the products would read old weights.
    pub fn refuse_write(&self, op: &str, w: &V) -> Result<()> {
        if self.get(w).is_some() {
            anyhow::bail!(
                "{op}: this buffer is a kept product weight (keep_product_weights); only adamw_step may write it"
            );
        }
        Ok(())
    }

    /// Elements held in copies.
    pub fn len(&self) -> usize {
        self.copies.lock().expect("kept weights: a thread panicked holding the lock").values().map(|c| c.len()).sum()
    }
}

/// A weight in bf16 for one product: its kept copy, or rounded now.
pub enum WeightBf16 {
    Kept(Arc<Buffer<bf16>>),
    Rounded(Buffer<bf16>),
}

impl WeightBf16 {
    pub fn of(kept: &KeptWeights, w: &V) -> Result<Self> {
        Ok(match kept.get(w) {
            Some(copy) => WeightBf16::Kept(copy),
            None => WeightBf16::Rounded(round(w)?),
        })
    }
}

impl Deref for WeightBf16 {
    type Target = Buffer<bf16>;
    fn deref(&self) -> &Buffer<bf16> {
        match self {
            WeightBf16::Kept(c) => c,
            WeightBf16::Rounded(r) => r,
        }
    }
}
