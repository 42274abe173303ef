//! Reference of kernels/silu.cu: SiLU(x) = x * sigmoid(x).

use super::Real;

fn sigmoid<T: Real>(x: T) -> T {
    T::ONE / (T::ONE + (-x).exp())
}

pub fn silu<T: Real>(x: T) -> T {
    x * sigmoid(x)
}

/// d SiLU / dx = s (1 + x (1 - s)), s = sigmoid(x).
pub fn silu_grad<T: Real>(x: T) -> T {
    let s = sigmoid(x);
    s * (T::ONE + x * (T::ONE - s))
}

pub fn silu_fwd<T: Real>(x: &[T], y: &mut [T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = silu(x);
    }
}

pub fn silu_bwd<T: Real>(x: &[T], dy: &[T], dx: &mut [T]) {
    for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
        *dx = dy * silu_grad(x);
    }
}
