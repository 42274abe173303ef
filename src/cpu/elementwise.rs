//! Reference of kernels/elementwise.cu.

pub fn fill(out: &mut [f32], value: f32) {
    out.fill(value);
}

/// y = a * x + y, with a fused multiply-add as the kernel does.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = a.mul_add(x, *y);
    }
}
