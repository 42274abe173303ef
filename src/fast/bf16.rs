//! bf16 precision on the CPU (`--precision bf16`): the operands of every matrix product (the
//! convolutions', the linear layers', attention's q, k and v) are rounded to bf16, round to
//! nearest even, as autocast does; products of two bf16 values are exact in f32, and everything
//! else stays f32: accumulation, bias, GroupNorm statistics, softmax (its probabilities are not
//! rounded), the scheduler step, and the weights the optimizer updates (training keeps f32
//! master weights; each op rounds what it multiplies).
//!
//! So a bf16 op equals the f32 op applied to bf16-rounded operands, within the f32 op's own
//! tolerance: that is the accuracy contract, tested per op against the reference
//! (tests/bf16.rs), with the whole-UNet and sample-quality bounds stated there.
//!
//! Two ways to multiply, the same contract:
//! - portable (every CPU): operands are rounded into pooled scratch and multiplied by the f32
//!   GEMMs of src/fast/gemm.rs: bf16 accuracy, not bf16 speed (the rounding is an extra pass).
//! - packed (src/fast/gemm_bf16.rs): operands rounded as they are packed into bf16 pairs and
//!   multiplied by AMX tiles (`tdpbf16ps`, src/fast/amx.rs) where the CPU and OS allow it, else
//!   by `vdpbf16ps` (32 products per instruction) where the CPU has AVX-512 BF16: the
//!   forward convolutions (1x1 and im2col; no Winograd) and linear layers, which are all of
//!   sampling's products but attention's. [`kernel`] chooses; tests force the packed path with
//!   its emulated microkernel so that everything but the instruction is checked on any CPU.

use super::elementwise::CHUNK;
use super::gemm_bf16::Bf16Kernel;
use super::pool::PooledVec;
use crate::simd_dispatch;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU8, Ordering};

/// The packed kernel forced by [`force_kernel`]: 0 none, 1 portable (no packed kernel),
/// 2 emulated, 3 native, 4 AMX, 5 AMX emulated.
static FORCED: AtomicU8 = AtomicU8::new(0);

/// The packed kernel the bf16 forward ops use: AMX where the CPU and OS allow it and the user
/// opted in (`DDPM_AMX=1`: the AMX kernel has not yet run on AMX hardware, so it is not the
/// default until a run there passes tests/bf16_gemm.rs), else the native one where the CPU has
/// it and it pays ([`native_pays`]), else none (the portable path), unless forced.
pub fn kernel() -> Option<Bf16Kernel> {
    match FORCED.load(Ordering::Relaxed) {
        1 => None,
        2 => Some(Bf16Kernel::Emulated),
        3 => Some(Bf16Kernel::Native),
        4 => Some(Bf16Kernel::Amx),
        5 => Some(Bf16Kernel::AmxEmulated),
        _ => Bf16Kernel::amx()
            .filter(|_| super::amx::opted_in())
            .or_else(|| Bf16Kernel::native().filter(|_| native_pays())),
    }
}

/// The smallest measured gain of `vdpbf16ps` over `vfmadd231ps` ([`super::simd::vdpbf16ps_gain`])
/// at which the packed native kernel replaces rounding + the f32 GEMMs. Its packing costs what
/// the f32 GEMM's does and more (the pairs are interleaved lane by lane): on an AVX-512 BF16
/// Xeon measuring 0.5 (`cargo bench --bench fast_conv -- fast_conv_bf16`, docs/worklog.md)
/// packing alone took 38% of the f32 GEMM's time for a 1x1 conv (3.2 of 8.3 ms), and the
/// products at 0.5 made the op 2.3x slower than f32. At a gain of 1.5 the products alone
/// would take 2/3 of f32's time, so with packing the two are about even.
pub const NATIVE_MIN_GAIN: f64 = 1.5;

/// Whether the native kernel is the default where the CPU has it: `DDPM_BF16_NATIVE=1` or `=0`
/// decides (for A/B runs), else its measured gain against [`NATIVE_MIN_GAIN`].
pub fn native_pays() -> bool {
    native_pays_given(std::env::var("DDPM_BF16_NATIVE").ok().as_deref(), super::simd::vdpbf16ps_gain())
}

/// [`native_pays`]' rule, given `DDPM_BF16_NATIVE` and the measured gain (for tests).
pub fn native_pays_given(env: Option<&str>, gain: Option<f64>) -> bool {
    match env {
        Some("1") => true,
        Some("0") => false,
        _ => gain.is_some_and(|g| g >= NATIVE_MIN_GAIN),
    }
}

/// The kernel of a bf16 convolution forward: [`kernel`], except that a 3x3 convolution the f32
/// path computes by Winograd stays on the portable path (rounded operands, f32 Winograd) unless
/// a kernel is forced or AMX was chosen: Winograd's fewer products beat vdpbf16ps' im2col even
/// where the instruction issues at twice the FMA's rate. On the Xeon above, im2col and
/// packing alone took 90% of f32 Winograd's whole time (3x3, 128 channels, 32x32, b16: 13.8
/// of 15.3 ms), so no gain up to 2 could make the packed path win.
pub fn conv_fwd_kernel(s: &crate::shapes::Conv2dShape) -> Option<Bf16Kernel> {
    conv_fwd_choice(kernel(), FORCED.load(Ordering::Relaxed) != 0, super::conv::uses_winograd(s))
}

/// [`conv_fwd_kernel`]'s rule, given the kernel, whether it was forced and whether the f32 path
/// would use Winograd (for tests on any CPU).
pub fn conv_fwd_choice(k: Option<Bf16Kernel>, forced: bool, winograd: bool) -> Option<Bf16Kernel> {
    if !forced && winograd && k == Some(Bf16Kernel::Native) { None } else { k }
}

/// How the bf16 path multiplies here, for `ddpm devices` and bench output.
pub fn path_name() -> &'static str {
    match kernel() {
        Some(Bf16Kernel::Native) => {
            "bf16 operands, vdpbf16ps in the conv/linear forward (f32 products in Winograd convs)"
        }
        Some(Bf16Kernel::Emulated) => "bf16 operands, emulated vdpbf16ps",
        Some(Bf16Kernel::Amx) => "bf16 operands, AMX-BF16 (tdpbf16ps) in the conv/linear forward",
        Some(Bf16Kernel::AmxEmulated) => "bf16 operands, emulated AMX-BF16 (tdpbf16ps)",
        Some(Bf16Kernel::PackOnly) => "bf16 operands packed, no products (bench only)",
        None => "bf16 operands rounded, f32 products",
    }
}

/// For tests: `Some(None)` forces the portable path, `Some(Some(k))` the packed path with `k`
/// (the native kernel only where the CPU has it), `None` lifts the force. Process-wide; every
/// choice meets the same contract, so concurrent tests comparing with tolerances are unaffected.
pub fn force_kernel(choice: Option<Option<Bf16Kernel>>) {
    let code = match choice {
        None => 0,
        Some(None) => 1,
        Some(Some(Bf16Kernel::Emulated)) => 2,
        Some(Some(Bf16Kernel::Native)) => {
            assert!(Bf16Kernel::native().is_some(), "bf16::force_kernel: this CPU lacks AVX-512 BF16");
            3
        }
        Some(Some(Bf16Kernel::Amx)) => {
            assert!(Bf16Kernel::amx().is_some(), "bf16::force_kernel: no AMX-BF16 here (CPU, OS or DDPM_SIMD)");
            4
        }
        Some(Some(Bf16Kernel::AmxEmulated)) => 5,
        Some(Some(Bf16Kernel::PackOnly)) => panic!("bf16::force_kernel: PackOnly computes nothing (benches only)"),
    };
    FORCED.store(code, Ordering::Relaxed);
}

/// Whether the matrix-product operands of the fast CPU path are f32 or rounded to bf16.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// `x` rounded to the nearest bf16 (ties to even), as an f32: the high 16 bits, rounded. NaN
/// stays NaN (quietened, so rounding cannot carry it into infinity); values past bf16's largest
/// finite value round to infinity, as IEEE rounding does. Branch-free, so loops vectorise.
#[inline(always)]
pub fn round(x: f32) -> f32 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) & 0xffff_0000;
    let nan = (bits | 0x0040_0000) & 0xffff_0000;
    f32::from_bits(if x.is_nan() { nan } else { rounded })
}

simd_dispatch!(
    fn round_chunk(src: &[f32], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = round(s);
        }
    }
);

/// dst = round(src), elementwise, on rayon's threads for large tensors.
pub fn round_into(src: &[f32], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "bf16::round_into: lengths differ");
    if src.len() <= CHUNK {
        return round_chunk(src, dst);
    }
    dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| round_chunk(s, d));
}

/// `src` rounded to bf16, in a buffer from the pool (no allocation in a steady state).
pub fn rounded(src: &[f32]) -> PooledVec {
    let mut out = PooledVec::uninit(src.len());
    round_into(src, &mut out);
    out
}

/// The convolution with bf16 operands (x and w; dy in the backward ops), as src/fast/conv.rs.
pub mod conv {
    use super::rounded;
    use crate::fast::conv as f32_conv;
    use crate::shapes::Conv2dShape;

    pub fn conv2d_fwd(s: &Conv2dShape, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) {
        match super::conv_fwd_kernel(s) {
            Some(k) => f32_conv::conv2d_fwd_bf16(k, s, x, w, b, y),
            None => f32_conv::conv2d_fwd_as(s, &rounded(x), w, super::Precision::Bf16, b, y),
        }
    }
    pub fn conv2d_bwd_input(s: &Conv2dShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
        f32_conv::conv2d_bwd_input(s, &rounded(dy), &rounded(w), dx)
    }
    /// The bias gradient sums dy in f32, unrounded (it is a sum, not a product).
    pub fn conv2d_bwd_weight(s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32], db: Option<&mut [f32]>) {
        let dy_r = rounded(dy);
        f32_conv::conv2d_bwd_weight(s, &rounded(x), &dy_r, dw, None);
        if let Some(db) = db {
            f32_conv::bias_grad(s.out_c, dy, db);
        }
    }
}

/// The linear layer with bf16 operands, as src/fast/linear.rs.
pub mod linear {
    use super::{kernel, rounded};
    use crate::fast::linear as f32_linear;
    use crate::shapes::LinearShape;

    pub fn linear_fwd(s: &LinearShape, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) {
        match kernel() {
            Some(k) => f32_linear::linear_fwd_bf16(k, s, x, w, b, y),
            None => f32_linear::linear_fwd_as(s, &rounded(x), w, super::Precision::Bf16, b, y),
        }
    }
    pub fn linear_bwd_input(s: &LinearShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
        f32_linear::linear_bwd_input(s, &rounded(dy), &rounded(w), dx)
    }
    /// The bias gradient sums dy in f32, unrounded.
    pub fn linear_bwd_weight(s: &LinearShape, x: &[f32], dy: &[f32], dw: &mut [f32], db: Option<&mut [f32]>) {
        f32_linear::linear_bwd_weight(s, &rounded(x), &rounded(dy), dw, None);
        if let Some(db) = db {
            f32_linear::bias_grad(s, dy, db);
        }
    }
}

/// Attention with bf16 q, k and v (and dout in the backward); the softmax and its
/// probabilities stay f32, as src/fast/attention.rs computes them.
pub mod attention {
    use super::rounded;
    use crate::fast::attention as f32_attention;
    use crate::shapes::AttentionShape;

    pub fn attention_fwd(s: &AttentionShape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], lse: &mut [f32]) {
        f32_attention::attention_fwd(s, &rounded(q), &rounded(k), &rounded(v), out, lse)
    }
    /// `out` is the forward's output (f32 arithmetic on the rounded operands), used as is.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_bwd(
        s: &AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &[f32],
        lse: &[f32],
        dout: &[f32],
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
    ) {
        f32_attention::attention_bwd(s, &rounded(q), &rounded(k), &rounded(v), out, lse, &rounded(dout), dq, dk, dv)
    }
}
