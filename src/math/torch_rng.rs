//! PyTorch's CPU generator: MT19937 seeded as `torch.manual_seed(seed)` seeds it, and
//! `torch.randn` as its CPU kernel computes it, so `ddpm sample --rng torch --seed S` draws the
//! same noise as diffusers' pipelines with `generator=torch.manual_seed(S)`.
//!
//! torch.randn(n) takes one of two paths (ATen/native/cpu/DistributionTemplates.h):
//! - n >= 16 (contiguous float): n uniforms in float32 from 24-bit draws, then Box-Muller on each
//!   block of 16 (u1 = 1 - data[j], u2 = data[j + 8]) in float32; if n % 16 != 0, the last 16
//!   elements are redrawn and transformed again;
//! - n < 16: per element, normal_distribution<double> from 53-bit draws, with the second
//!   Box-Muller value cached in the generator for the next draw.
//!
//! In the n >= 16 path PyTorch's math depends on the CPU it runs on: x86 CPUs with AVX2 or
//! AVX-512 (every recent one) use the Cephes approximations of avx_mathfun.h, and others the C
//! library's logf/cosf/sinf. [`RandnKernel`] picks either; the default is the x86 one, which is
//! what diffusers gets on the machines it usually runs on.

use super::cephes_f32;

const N: usize = 624;
const M: usize = 397;

/// The Mersenne Twister, MT19937 (32-bit), as in at::mt19937.
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    next: usize,
}

impl Mt19937 {
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = seed as u32; // torch keeps seed & 0xffffffff
        for j in 1..N {
            state[j] = 1_812_433_253u32.wrapping_mul(state[j - 1] ^ (state[j - 1] >> 30)).wrapping_add(j as u32);
        }
        Mt19937 { state, next: N }
    }

    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % N] & 0x7fff_ffff);
            let mut v = self.state[(i + M) % N] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.state[i] = v;
        }
        self.next = 0;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.next >= N {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

/// Which of PyTorch's CPU kernels to reproduce for torch.randn of 16 or more elements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RandnKernel {
    /// x86 with AVX2 or AVX-512: Cephes log/sincos in float32 (avx_mathfun.h).
    #[default]
    X86Avx2,
    /// Other CPUs: the C library's float32 logf/cosf/sinf.
    Scalar,
}

/// torch's CPU Generator: the engine plus the cached second normal of the scalar path.
#[derive(Clone)]
pub struct TorchGenerator {
    engine: Mt19937,
    next_double_normal: Option<f64>,
    kernel: RandnKernel,
}

impl TorchGenerator {
    /// As `torch.manual_seed(seed)`.
    pub fn manual_seed(seed: u64) -> Self {
        TorchGenerator { engine: Mt19937::new(seed), next_double_normal: None, kernel: RandnKernel::default() }
    }

    /// Reproduces `kernel` for randn of 16 or more elements.
    pub fn with_kernel(mut self, kernel: RandnKernel) -> Self {
        self.kernel = kernel;
        self
    }

    fn uniform_f32(&mut self) -> f32 {
        (self.engine.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    fn uniform_f64(&mut self) -> f64 {
        let hi = self.engine.next_u32() as u64;
        let lo = self.engine.next_u32() as u64;
        (((hi << 32) | lo) & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// at::normal_distribution<double>: Box-Muller from two doubles, caching r sin(theta).
    fn normal_f64(&mut self) -> f64 {
        if let Some(v) = self.next_double_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `torch.randn(n)` (float32, contiguous).
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        let fill = match self.kernel {
            RandnKernel::X86Avx2 => normal_fill_16_avx2,
            RandnKernel::Scalar => normal_fill_16_scalar,
        };
        for chunk in 0..n / 16 {
            fill(&mut data[chunk * 16..chunk * 16 + 16]);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut data[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            fill(tail);
        }
        data
    }
}

/// Box-Muller on 16 uniforms in place as NormalFill16<float, AVX2>: float32 throughout, with the
/// Cephes log and sincos, theta = float(2 pi) * u2.
fn normal_fill_16_avx2(d: &mut [f32]) {
    const TWO_PI: f32 = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let radius = (-2.0f32 * cephes_f32::log(1.0 - d[j])).sqrt();
        let (sin, cos) = cephes_f32::sincos(TWO_PI * d[j + 8]);
        d[j] = radius * cos;
        d[j + 8] = radius * sin;
    }
}

/// Box-Muller on 16 uniforms in place, in float32 as torch's scalar NormalFill16<float>: theta is
/// computed in double and rounded to float, log/sqrt/cos/sin are the float versions.
fn normal_fill_16_scalar(d: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - d[j];
        let u2 = d[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = (2.0f32 as f64 * std::f64::consts::PI * u2 as f64) as f32;
        d[j] = radius * theta.cos();
        d[j + 8] = radius * theta.sin();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference MT19937 sequence for init_genrand(5489) starts 3499211612, 581869302, ...
    #[test]
    fn mt19937_matches_the_reference_sequence() {
        let mut mt = Mt19937::new(5489);
        assert_eq!([mt.next_u32(), mt.next_u32(), mt.next_u32()], [3_499_211_612, 581_869_302, 3_890_346_734]);
        let mut mt = Mt19937::new(5489);
        let v: Vec<u32> = (0..10_000).map(|_| mt.next_u32()).collect();
        assert_eq!(v[9999], 4_123_659_995, "the 10000th output of the default seed (C++ std::mt19937 check value)");
    }
}
