//! The row-driven ops of a graphed training step (src/train/graph.rs). Each reads its per-step
//! constants from a [`crate::train::row`] row resident on the backend and, for the update, the
//! step's status (applied, clip scale, norm) that `clip_status` wrote there, so the sequence of
//! ops is the same at every step and a GPU captures it once as a CUDA graph.
//!
//! The provided methods are the reference: each reads the row and the status back and calls the
//! by-value op it stands for (so on the CPU backends a row-driven step is bitwise the op-by-op
//! step). The CUDA backend runs kernels/train_step.cu instead, with no copy to or from the host.

use super::{CpuBackend, CudaBackend, FastCpuBackend, FastCpuBf16Backend, Optimizer, SamplerOps};
use crate::cuda::train_step as k;
use crate::gpu::Buffer;
use crate::math::philox;
use crate::train::row::{HISTORY_WORDS, StepRow, clip_scale};
use anyhow::{Result, bail};

pub trait TrainOps: Optimizer + SamplerOps {
    /// buf = data, lengths equal (a host-to-device copy: before a replay, never inside a capture),
    /// in stream order with the ops around it.
    fn write(&self, buf: &mut Self::Buf, data: &[f32]) -> Result<()>;
    fn write_u32(&self, buf: &mut Self::Idx, data: &[u32]) -> Result<()>;

    /// The step's timesteps (images first.., as u32 and as the UNet's f32 time input) and its
    /// noise (normals from element first * per_image on), from the row's Philox stream.
    fn train_draw(
        &self,
        row: &Self::Idx,
        first: usize,
        t_max: u32,
        t: &mut Self::Idx,
        t_float: &mut Self::Buf,
        eps: &mut Self::Buf,
    ) -> Result<()> {
        let (_, _, seed, offset, _) = StepRow::decode(&self.download_u32(row)?, 1.0);
        let n_t = self.download_u32(t)?.len();
        let tv: Vec<u32> =
            (first..first + n_t).map(|i| philox::timestep(philox::word(seed, offset, i as u64), t_max)).collect();
        let mut noise = vec![0.0; Self::len(eps)];
        let per_image = noise.len() / n_t.max(1);
        philox::fill_normal(seed, offset + 1, (first * per_image) as u64, &mut noise);
        self.write_u32(t, &tv)?;
        self.write(t_float, &tv.iter().map(|&v| v as f32).collect::<Vec<_>>())?;
        self.write(eps, &noise)
    }

    /// Before a capture that will run `clip_status` on `grads`: lets a backend prepare what it
    /// needs to take their norm in one launch (CUDA: a table of the tensors, uploaded now because a
    /// capture may not copy from the host). Elsewhere nothing; without it, one launch per tensor.
    fn prepare_clip_status(&self, _grads: &[Self::Buf]) -> Result<()> {
        Ok(())
    }

    /// status = (applied, clip scale, global norm) of `grads` and the 1-element `loss`. Applied:
    /// both finite and, when `sticky`, the previous status applied too.
    fn clip_status(
        &self,
        grads: &[Self::Buf],
        loss: &Self::Buf,
        max_norm: Option<f32>,
        sticky: bool,
        status: &mut Self::Idx,
    ) -> Result<()> {
        let norm = self.global_norm(grads)?;
        let loss = self.download(loss)?[0];
        let before = self.download_u32(status)?;
        let ok = loss.is_finite() && norm.is_finite() && (!sticky || before[0] != 0);
        let bits = norm.to_bits();
        self.write_u32(status, &[ok as u32, clip_scale(max_norm, norm).to_bits(), bits as u32, (bits >> 32) as u32])
    }

    /// `adamw_step` with the row's constants and the status's clip scale, then, when `ema` is
    /// given, `ema_update` of it from the updated weight with the row's decay (one pass over the
    /// weight on CUDA, one launch per parameter instead of two); nothing when the status says the
    /// step is not applied.
    #[allow(clippy::too_many_arguments)]
    fn adamw_step_row(
        &self,
        p: &mut Self::Buf,
        g: &Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        ema: Option<&mut Self::Buf>,
        row: &Self::Idx,
        status: &Self::Idx,
    ) -> Result<()> {
        let st = self.download_u32(status)?;
        if st[0] == 0 {
            return Ok(());
        }
        let (s, decay, ..) = StepRow::decode(&self.download_u32(row)?, f32::from_bits(st[1]));
        self.adamw_step(p, g, m, v, &s)?;
        ema.map_or(Ok(()), |ema| self.ema_update(ema, p, decay))
    }

    /// Before a capture that will run `adamw_steps_row` on these buffers: lets a backend prepare
    /// one launch for all of them (CUDA: a table of the buffers). Elsewhere nothing.
    fn prepare_adamw_steps(
        &self,
        _params: &[Self::Buf],
        _grads: &[Self::Buf],
        _m: &[Self::Buf],
        _v: &[Self::Buf],
        _ema: &[Self::Buf],
    ) -> Result<()> {
        Ok(())
    }

    /// `adamw_step_row` of every parameter, each with its EMA: one launch each, or one for all
    /// where the backend prepared them (`prepare_adamw_steps`).
    #[allow(clippy::too_many_arguments)]
    fn adamw_steps_row(
        &self,
        params: &mut [Self::Buf],
        grads: &[Self::Buf],
        m: &mut [Self::Buf],
        v: &mut [Self::Buf],
        ema: &mut [Self::Buf],
        row: &Self::Idx,
        status: &Self::Idx,
    ) -> Result<()> {
        adamw_steps_each(self, params, grads, m, v, ema, row, status)
    }

    /// history[row's slot] = (loss, applied, norm).
    fn record_step(
        &self,
        row: &Self::Idx,
        status: &Self::Idx,
        loss: &Self::Buf,
        history: &mut Self::Idx,
    ) -> Result<()> {
        let (st, mut h) = (self.download_u32(status)?, self.download_u32(history)?);
        let slots = h.len() / HISTORY_WORDS;
        if slots == 0 {
            bail!("record_step: the history holds no slot");
        }
        let at = (StepRow::decode(&self.download_u32(row)?, 1.0).4 as usize % slots) * HISTORY_WORDS;
        h[at..at + HISTORY_WORDS].copy_from_slice(&[self.download(loss)?[0].to_bits(), st[0], st[2], st[3]]);
        self.write_u32(history, &h)
    }
}

macro_rules! host_train_ops {
    ($($backend:ty),*) => {$(
        impl TrainOps for $backend {
            fn write(&self, buf: &mut Self::Buf, data: &[f32]) -> Result<()> {
                crate::shapes::same_len("write", &[("buffer", buf.len()), ("data", data.len())])?;
                buf.copy_from_slice(data);
                Ok(())
            }
            fn write_u32(&self, buf: &mut Vec<u32>, data: &[u32]) -> Result<()> {
                crate::shapes::same_len("write_u32", &[("buffer", buf.len()), ("data", data.len())])?;
                buf.copy_from_slice(data);
                Ok(())
            }
        }
    )*};
}
host_train_ops!(CpuBackend, FastCpuBackend, FastCpuBf16Backend);

impl TrainOps for CudaBackend {
    /// Queued, not waited for: the host goes on to the next step while the device runs this one.
    fn write(&self, buf: &mut Buffer<f32>, data: &[f32]) -> Result<()> {
        self.gpu.copy_to_device_queued(data, buf)
    }
    fn write_u32(&self, buf: &mut Buffer<u32>, data: &[u32]) -> Result<()> {
        self.gpu.copy_to_device_queued(data, buf)
    }
    fn train_draw(
        &self,
        row: &Buffer<u32>,
        first: usize,
        t_max: u32,
        t: &mut Buffer<u32>,
        t_float: &mut Buffer<f32>,
        eps: &mut Buffer<f32>,
    ) -> Result<()> {
        k::train_draw_f32(row, first, t_max, t, t_float, eps)
    }
    fn prepare_clip_status(&self, grads: &[Buffer<f32>]) -> Result<()> {
        let mut tables = self.sum_tables.lock().expect("sum tables: a thread panicked holding the lock");
        if let std::collections::hash_map::Entry::Vacant(slot) = tables.entry(ids(grads))
            && let Some(t) = crate::cuda::optim::SumTable::new(grads)?
        {
            slot.insert(std::sync::Arc::new(t));
        }
        Ok(())
    }
    fn prepare_adamw_steps(
        &self,
        params: &[Buffer<f32>],
        grads: &[Buffer<f32>],
        m: &[Buffer<f32>],
        v: &[Buffer<f32>],
        ema: &[Buffer<f32>],
    ) -> Result<()> {
        let key = ids_of_all([params, grads, m, v, ema]);
        let mut tables = self.adamw_tables.lock().expect("adamw tables: a thread panicked holding the lock");
        if tables.contains_key(&key) {
            return Ok(());
        }
        let n = params.len();
        same_counts(n, grads.len(), m.len(), v.len(), ema.len())?;
        // The copies the per-parameter launches would write (kept before this is prepared).
        let copies: Vec<_> = params.iter().map(|p| self.kept.get(p)).collect();
        let mut rows = Vec::with_capacity(n);
        for i in 0..n {
            self.kept.refuse_write("ema_update", &ema[i])?;
            rows.push((&params[i], &grads[i], &m[i], &v[i], copies[i].as_deref(), &ema[i]));
        }
        if let Some(t) = k::AdamwTable::new(&rows)? {
            tables.insert(key, std::sync::Arc::new(t));
        }
        Ok(())
    }
    fn adamw_steps_row(
        &self,
        params: &mut [Buffer<f32>],
        grads: &[Buffer<f32>],
        m: &mut [Buffer<f32>],
        v: &mut [Buffer<f32>],
        ema: &mut [Buffer<f32>],
        row: &Buffer<u32>,
        status: &Buffer<u32>,
    ) -> Result<()> {
        let key = ids_of_all([params, grads, m, v, ema]);
        let table =
            self.adamw_tables.lock().expect("adamw tables: a thread panicked holding the lock").get(&key).cloned();
        match table {
            Some(t) => k::adamw_step_many_row_f32(&t, row, status),
            None => adamw_steps_each(self, params, grads, m, v, ema, row, status),
        }
    }
    fn clip_status(
        &self,
        grads: &[Buffer<f32>],
        loss: &Buffer<f32>,
        max_norm: Option<f32>,
        sticky: bool,
        status: &mut Buffer<u32>,
    ) -> Result<()> {
        let table =
            self.sum_tables.lock().expect("sum tables: a thread panicked holding the lock").get(&ids(grads)).cloned();
        k::clip_status_f32(grads, table.as_deref(), loss, max_norm, sticky, status)
    }
    fn adamw_step_row(
        &self,
        p: &mut Buffer<f32>,
        g: &Buffer<f32>,
        m: &mut Buffer<f32>,
        v: &mut Buffer<f32>,
        ema: Option<&mut Buffer<f32>>,
        row: &Buffer<u32>,
        status: &Buffer<u32>,
    ) -> Result<()> {
        if let Some(ema) = ema.as_deref() {
            self.kept.refuse_write("ema_update", ema)?;
        }
        let copy = self.kept.get(p);
        k::adamw_step_row_f32(p, g, m, v, copy.as_deref(), ema, row, status)
    }
    fn record_step(
        &self,
        row: &Buffer<u32>,
        status: &Buffer<u32>,
        loss: &Buffer<f32>,
        history: &mut Buffer<u32>,
    ) -> Result<()> {
        k::record_step_u32(row, status, loss, history)
    }
}

/// The buffers' ids: what a prepared table is looked up by (ids, unlike addresses, are never
/// reused, so a table is never taken for other buffers).
fn ids(tensors: &[Buffer<f32>]) -> Vec<u64> {
    tensors.iter().map(Buffer::id).collect()
}

/// `prepare_clip_status`'s tables by the gradients' ids, shared by a backend's clones. Kept while
/// the backend lives: a captured graph holds their addresses.
pub type SumTables =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Vec<u64>, std::sync::Arc<crate::cuda::optim::SumTable>>>>;

/// As many gradients, moments and EMAs as parameters, for `adamw_steps_row` and its preparation.
fn same_counts(n: usize, grads: usize, m: usize, v: usize, ema: usize) -> Result<()> {
    if grads != n || m != n || v != n || ema != n {
        bail!("adamw_steps: {n} parameters but {grads} gradients, {m} and {v} moments, {ema} EMAs");
    }
    Ok(())
}

/// `adamw_steps_row` one parameter at a time.
#[allow(clippy::too_many_arguments)]
fn adamw_steps_each<B: TrainOps + ?Sized>(
    b: &B,
    params: &mut [B::Buf],
    grads: &[B::Buf],
    m: &mut [B::Buf],
    v: &mut [B::Buf],
    ema: &mut [B::Buf],
    row: &B::Idx,
    status: &B::Idx,
) -> Result<()> {
    let n = params.len();
    same_counts(n, grads.len(), m.len(), v.len(), ema.len())?;
    for i in 0..n {
        b.adamw_step_row(&mut params[i], &grads[i], &mut m[i], &mut v[i], Some(&mut ema[i]), row, status)?;
    }
    Ok(())
}

/// `prepare_adamw_steps`'s tables by the ids of every buffer they point to, shared by a backend's
/// clones and kept while it lives (a captured graph holds their addresses).
pub type AdamwTables =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Vec<u64>, std::sync::Arc<k::AdamwTable>>>>;

fn ids_of_all(groups: [&[Buffer<f32>]; 5]) -> Vec<u64> {
    groups.iter().flat_map(|g| ids(g)).collect()
}
