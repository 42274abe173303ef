//! Per-thread scratch buffers that grow to the largest size asked for and are then reused, so
//! ops that need temporary space (a padded image, a block of attention scores) allocate only
//! on their first calls, never in a steady-state step.

use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with N scratch slices of the given lengths, contents unspecified (whatever an
/// earlier user left). Nested calls on the same thread get other buffers.
pub fn with_scratch<const N: usize, R>(lens: [usize; N], f: impl FnOnce([&mut [f32]; N]) -> R) -> R {
    let mut bufs: [Vec<f32>; N] = SCRATCH.with(|s| {
        let mut pool = s.borrow_mut();
        std::array::from_fn(|_| pool.pop().unwrap_or_default())
    });
    for (b, &len) in bufs.iter_mut().zip(&lens) {
        if b.len() < len {
            b.resize(len, 0.0);
        }
    }
    let r = {
        let mut it = bufs.iter_mut().zip(&lens);
        f(std::array::from_fn(|_| {
            let (b, &len) = it.next().expect("N buffers");
            &mut b[..len]
        }))
    };
    SCRATCH.with(|s| s.borrow_mut().extend(bufs));
    r
}
