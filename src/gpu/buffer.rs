//! Typed device buffers. The pointer is a device address on CUDA and a host address on the
//! emulator; either way it is what kernels receive.

use super::Gpu;
use std::sync::atomic::{AtomicU64, Ordering};

/// The next buffer's id (`Buffer::id`).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Element types a buffer may hold.
pub trait DType: bytemuck::Pod + Send + Sync + 'static {
    const NAME: &'static str;
}
impl DType for f32 {
    const NAME: &'static str = "f32";
}
impl DType for half::bf16 {
    const NAME: &'static str = "bf16";
}
impl DType for u32 {
    const NAME: &'static str = "u32";
}
impl DType for i32 {
    const NAME: &'static str = "i32";
}

/// `len` elements of `T` on a device; returned to the device's pool when dropped.
pub struct Buffer<T: DType> {
    gpu: Gpu,
    ptr: u64,
    len: usize,
    id: u64,
    _t: std::marker::PhantomData<T>,
}

impl<T: DType> Buffer<T> {
    pub(crate) fn new(gpu: Gpu, ptr: u64, len: usize) -> Self {
        Buffer { gpu, ptr, len, id: NEXT_ID.fetch_add(1, Ordering::Relaxed), _t: std::marker::PhantomData }
    }
    /// This allocation's number, unique in the process: a freed buffer's address comes back from
    /// the pool, its id never does (what src/backend/cuda_weights.rs keys its copies by).
    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }
    /// The address kernels receive.
    pub fn device_ptr(&self) -> u64 {
        self.ptr
    }
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
}

impl<T: DType> Drop for Buffer<T> {
    fn drop(&mut self) {
        self.gpu.release(self.ptr, self.bytes());
    }
}
