//! Gradients summed over the ranks in buckets while the backward pass still runs.
//!
//! The backward pass finishes the last layers' gradients first. As each step of it ends, the
//! gradients it finished join the open bucket; a full bucket is copied to the host and handed to
//! this rank's communication thread, which sums it over the ranks while the training thread goes
//! on with the next layers. `finish` sends the rest, waits for every bucket and writes the
//! averages back. Buckets are cut from the same sequence of steps on every rank, so the ranks'
//! collectives line up.
//!
//! The host copy makes this transport work for every backend (on the CPU backends it is a copy
//! within memory); CUDA ranks with NCCL sum on the device instead (src/dist/nccl.rs).

use super::Comm;
use crate::backend::Backend;
use anyhow::{Context, Result, bail};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Instant;

/// Bucket size: large enough that per-message latency is small against the transfer, small
/// enough that the first buckets leave while most of the backward pass is still to run.
pub const DEFAULT_BUCKET_BYTES: usize = 4 << 20;

/// What the summing cost, over the steps since `take_stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SyncStats {
    /// Seconds spent in collectives on the host transport's thread (overlapped or not); 0 where
    /// the device runs them (NCCL), whose time shows only in `wait_seconds`.
    pub comm_seconds: f64,
    /// Seconds the training thread waited for buckets after its backward pass: what overlap hid not.
    pub wait_seconds: f64,
    pub buckets: u64,
    pub bytes: u64,
}

/// How buckets travel: started as they fill, all awaited at the end of the backward pass.
pub trait Transport<B: Backend>: Send {
    /// Starts averaging gradients `indices` over the ranks.
    fn send(&mut self, b: &B, indices: Vec<usize>, grads: &[B::Buf]) -> Result<()>;
    /// Waits for every bucket sent; the gradients then hold their means. Returns the seconds
    /// spent in collectives that the transport measured itself.
    fn wait(&mut self, b: &B, grads: &mut [B::Buf]) -> Result<f64>;
}

/// Buckets cut from the backward pass's steps, on a transport.
pub struct GradSync<B: Backend> {
    comm: Arc<dyn Comm>,
    transport: Box<dyn Transport<B>>,
    bucket_floats: usize,
    open: Vec<usize>,
    open_floats: usize,
    /// Per parameter: already in a bucket this step.
    sent: Vec<bool>,
    stats: SyncStats,
    /// Set before a step: whether this rank wants to stop; after it, whether any rank does.
    pub stop_vote: bool,
}

impl<B: Backend> GradSync<B> {
    /// Over the host transport (every backend).
    pub fn new(comm: Arc<dyn Comm>, params: usize, bucket_bytes: usize) -> Result<Self> {
        let transport = Box::new(HostTransport::start(comm.clone())?);
        Ok(Self::with_transport(comm, transport, params, bucket_bytes))
    }

    pub fn with_transport(
        comm: Arc<dyn Comm>,
        transport: Box<dyn Transport<B>>,
        params: usize,
        bucket_bytes: usize,
    ) -> Self {
        GradSync {
            comm,
            transport,
            bucket_floats: (bucket_bytes / 4).max(1),
            open: Vec::new(),
            open_floats: 0,
            sent: vec![false; params],
            stats: SyncStats::default(),
            stop_vote: false,
        }
    }

    /// The backward pass finished gradients `indices`: they join the open bucket, which leaves
    /// when full.
    pub fn ready(&mut self, b: &B, indices: &[usize], grads: &[B::Buf]) -> Result<()> {
        for &i in indices {
            match self.sent.get(i) {
                None => bail!("gradient {i} is not one of the model's {} parameters", self.sent.len()),
                Some(true) => bail!("gradient {i} was reported finished twice in one backward pass"),
                Some(false) => {}
            }
            self.sent[i] = true;
            self.open.push(i);
            self.open_floats += B::len(&grads[i]);
        }
        if self.open_floats >= self.bucket_floats { self.send(b, grads) } else { Ok(()) }
    }

    fn send(&mut self, b: &B, grads: &[B::Buf]) -> Result<()> {
        self.stats.buckets += 1;
        self.stats.bytes += 4 * self.open_floats as u64;
        self.open_floats = 0;
        self.transport.send(b, std::mem::take(&mut self.open), grads)
    }

    /// After the backward pass: sends what is left (any gradient never reported goes too, so a
    /// missed report costs overlap, not correctness), waits for every bucket; each gradient then
    /// holds its mean over the ranks.
    pub fn finish(&mut self, b: &B, grads: &mut [B::Buf]) -> Result<()> {
        let missed: Vec<usize> = (0..self.sent.len()).filter(|&i| !self.sent[i]).collect();
        self.ready(b, &missed, grads)?;
        if !self.open.is_empty() {
            self.send(b, grads)?;
        }
        let t0 = Instant::now();
        self.stats.comm_seconds += self.transport.wait(b, grads)?;
        self.stats.wait_seconds += t0.elapsed().as_secs_f64();
        self.sent.fill(false);
        Ok(())
    }

    /// The mean of the ranks' losses, and whether any rank voted to stop (`stop_vote`), in one
    /// collective; called after `finish`, so nothing else is in flight.
    pub fn agree(&mut self, loss: f32) -> Result<f32> {
        let mut v = [loss as f64, self.stop_vote as u8 as f64];
        self.comm.sum_f64(&mut v)?;
        self.stop_vote = v[1] > 0.0;
        Ok((v[0] / self.comm.size() as f64) as f32)
    }

    /// The costs since the last call.
    pub fn take_stats(&mut self) -> SyncStats {
        std::mem::take(&mut self.stats)
    }
}

/// One bucket on its way: which gradients, their values end to end, and the seconds the sum took.
struct Bucket {
    indices: Vec<usize>,
    data: Vec<f32>,
    seconds: f64,
}

/// Buckets copied to the host and summed by `Comm::sum_f32` on a thread of their own.
pub struct HostTransport {
    size: usize,
    jobs: Option<Sender<Bucket>>,
    done: Receiver<Result<Bucket>>,
    thread: Option<JoinHandle<()>>,
    in_flight: usize,
}

impl HostTransport {
    pub fn start(comm: Arc<dyn Comm>) -> Result<Self> {
        let (jobs, inbox) = channel::<Bucket>();
        let (outbox, done) = channel();
        let size = comm.size();
        let thread = std::thread::Builder::new()
            .name("grad-sync".into())
            .spawn(move || {
                for mut bucket in inbox {
                    let t0 = Instant::now();
                    let r = comm.sum_f32(&mut bucket.data);
                    bucket.seconds = t0.elapsed().as_secs_f64();
                    if outbox.send(r.map(|_| bucket)).is_err() {
                        return;
                    }
                }
            })
            .context("cannot start the gradient communication thread")?;
        Ok(HostTransport { size, jobs: Some(jobs), done, thread: Some(thread), in_flight: 0 })
    }
}

impl<B: Backend> Transport<B> for HostTransport {
    fn send(&mut self, b: &B, indices: Vec<usize>, grads: &[B::Buf]) -> Result<()> {
        let mut data = Vec::new();
        for &i in &indices {
            data.extend_from_slice(&b.download(&grads[i])?);
        }
        let jobs = self.jobs.as_ref().expect("the sender lives until drop");
        jobs.send(Bucket { indices, data, seconds: 0.0 }).context("the gradient communication thread stopped")?;
        self.in_flight += 1;
        Ok(())
    }

    fn wait(&mut self, b: &B, grads: &mut [B::Buf]) -> Result<f64> {
        let (scale, mut seconds) = (1.0 / self.size as f32, 0.0);
        while self.in_flight > 0 {
            let bucket = self.done.recv().context("the gradient communication thread stopped")??;
            self.in_flight -= 1;
            seconds += bucket.seconds;
            let mut at = 0;
            for &i in &bucket.indices {
                let n = B::len(&grads[i]);
                let mean: Vec<f32> = bucket.data[at..at + n].iter().map(|v| v * scale).collect();
                grads[i] = b.upload(&mean)?;
                at += n;
            }
        }
        Ok(seconds)
    }
}

impl Drop for HostTransport {
    fn drop(&mut self) {
        self.jobs = None; // ends the thread's loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
