//! Batches from a dataset on a background thread, so the device never waits on decoding: a
//! shuffled order per epoch (a Fisher-Yates shuffle driven by Philox, so the order depends only
//! on the seed and the epoch, and a resumed run sees the same batches), optional random
//! horizontal flips.

use super::Dataset;
use crate::dist::Shard;
use crate::math::philox;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

/// The dataset index order of `epoch`.
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        let j = philox::timestep(philox::word(seed, 0x5348_5546_0000 + epoch, i as u64), (i + 1) as u32) as usize;
        order.swap(i, j);
    }
    order
}

/// Image `k` of batch `b` (counting from the start of training): which dataset image, flipped or not.
pub fn pick(len: usize, batch: usize, step: u64, k: usize, seed: u64, order: &mut (u64, Vec<usize>)) -> (usize, bool) {
    let global = step as usize * batch + k;
    let epoch = (global / len) as u64;
    if order.0 != epoch || order.1.is_empty() {
        *order = (epoch, epoch_order(len, seed, epoch));
    }
    let flip = philox::word(seed, 0x464c_4950, global as u64) & 1 == 1;
    (order.1[global % len], flip)
}

fn flip_horizontal(img: &mut [f32], size: usize, channels: usize) {
    for row in img.chunks_exact_mut(size * channels) {
        for x in 0..size / 2 {
            for c in 0..channels {
                row.swap(x * channels + c, (size - 1 - x) * channels + c);
            }
        }
    }
}

/// Assembles batch number `step` (0-based): [batch, size, size, channels].
pub fn make_batch(
    data: &dyn Dataset,
    batch: usize,
    step: u64,
    seed: u64,
    flip: bool,
    order: &mut (u64, Vec<usize>),
) -> Vec<f32> {
    make_shard(data, Shard::whole(batch), step, seed, flip, order)
}

/// One rank's shard of global batch `step`: images shard.first.. of it, picked and flipped as
/// in the whole batch.
pub fn make_shard(
    data: &dyn Dataset,
    shard: Shard,
    step: u64,
    seed: u64,
    flip: bool,
    order: &mut (u64, Vec<usize>),
) -> Vec<f32> {
    let (size, ch) = (data.size(), data.channels());
    let mut out = Vec::with_capacity(shard.len * size * size * ch);
    for k in shard.first..shard.first + shard.len {
        let (i, flipped) = pick(data.len(), shard.global, step, k, seed, order);
        let mut img = data.image(i);
        if flip && flipped {
            flip_horizontal(&mut img, size, ch);
        }
        out.extend_from_slice(&img);
    }
    out
}

/// This rank's shards of batches `first_step..` from a background thread, two in flight.
pub fn spawn(data: Arc<dyn Dataset>, shard: Shard, first_step: u64, seed: u64, flip: bool) -> Receiver<Vec<f32>> {
    let (tx, rx) = sync_channel(2);
    std::thread::spawn(move || {
        let mut order = (u64::MAX, Vec::new());
        for step in first_step.. {
            if tx.send(make_shard(data.as_ref(), shard, step, seed, flip, &mut order)).is_err() {
                return; // the trainer is gone
            }
        }
    });
    rx
}
