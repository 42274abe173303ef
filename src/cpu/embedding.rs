//! Reference of kernels/embedding.cu: diffusers' sinusoidal timestep embedding
//! (`get_timestep_embedding`, scale 1, max_period 10000), operation for operation in its float32
//! order, with exp, sin and cos correctly rounded (evaluated in f64, rounded once). PyTorch's
//! CPU float32 exp/sin/cos are within an ulp or so of those; CUDA's expf/sinf/cosf are within two,
//! so the kernel evaluates them in double as well and matches this bit for bit on any device.

use super::Real;

/// -ln(max_period) as diffusers writes it: a Python float, which PyTorch rounds to float32 when it
/// multiplies the float32 `arange`.
pub fn neg_log_max_period() -> f32 {
    -(10000f64.ln()) as f32
}

/// `half_dim - downscale_freq_shift`, computed as a Python float, then rounded to float32 by the
/// division with the float32 exponent.
pub fn freq_denominator(dim: usize, freq_shift: f32) -> f32 {
    ((dim / 2) as f64 - freq_shift as f64) as f32
}

/// y[i, :] = [sin(t_i f), cos(t_i f)] (halves swapped when `flip_sin_to_cos`), with frequencies
/// f_k = exp(-ln(10000) k / (dim / 2 - freq_shift)), k < dim / 2, and a zero last column when
/// `dim` is odd.
pub fn timestep_embedding<T: Real>(t: &[T], dim: usize, flip_sin_to_cos: bool, freq_shift: f32, y: &mut [T]) {
    let half = dim / 2;
    let c = T::from_f64(neg_log_max_period() as f64);
    let d = T::from_f64(freq_denominator(dim, freq_shift) as f64);
    let freqs: Vec<T> = (0..half).map(|k| T::from_f64((c * T::from_f64(k as f64) / d).to_f64().exp())).collect();
    for (&t, y) in t.iter().zip(y.chunks_exact_mut(dim)) {
        for (k, &f) in freqs.iter().enumerate() {
            let arg = (t * f).to_f64();
            let (sin, cos) = (T::from_f64(arg.sin()), T::from_f64(arg.cos()));
            let (first, second) = if flip_sin_to_cos { (cos, sin) } else { (sin, cos) };
            y[k] = first;
            y[half + k] = second;
        }
        y[2 * half..].fill(T::ZERO);
    }
}
