//! Matrix products with bf16 operands on AVX-512 BF16 (`vdpbf16ps`: 32 bf16 products per
//! instruction, twice `vfmadd231ps`'s 16), for `--precision bf16` where the CPU has it.
//!
//! Both operands are rounded to bf16 (round to nearest even, src/fast/bf16.rs) while they are
//! packed, as pairs along k: one 32-bit word holds (x[k even], x[k odd]) in its (low, high)
//! halves, which is what `vdpbf16ps` multiplies lane by lane. Per output lane it computes, in
//! this order (Intel SDM, VDPBF16PS):
//!     c += a[odd] * b[odd];  c += a[even] * b[even]
//! each product exact in f32 (8-bit significands), each add rounded to nearest even (with
//! denormal inputs and results flushed to zero). So the result is the f32 sum of the exact
//! products of the rounded operands: the bf16 accuracy contract of src/fast/bf16.rs.
//!
//! (`Amx`, src/fast/amx.rs, multiplies the same pair words by AMX tiles, with its own row
//! blocks and left packing; this file dispatches to it.)
//!
//! One packing and blocking feeds two microkernels: `Native` (the instruction) and `Emulated`
//! (plain Rust, the same arithmetic in the same order), so that the packing, blocking, edges and
//! threading are tested on every machine (tests/bf16.rs) and only the few lines of the native
//! microkernel need an AVX-512 BF16 CPU. (Whether every vendor's instruction rounds exactly as
//! Intel describes is not assumed: both kernels are held to the contract, and where the native
//! one runs the tests print how many bits differ.)
//!
//! Blocking (Goto-style): the right operand is packed once per product, in panels of NR columns;
//! rows are split in blocks of MC run in parallel, each packing its rows of the left operand per
//! KC pairs of k and running MR x NR microkernels. Every output's sum runs over k in a fixed
//! order (k blocks in order, pairs in order), so results do not depend on the thread count.

use super::bf16::round;
use super::gemm::{Mat, MatMut, Threads, check_product};
use super::pool::PooledVec;
use crate::simd_dispatch;
use rayon::prelude::*;

/// Rows and columns of one microkernel's tile: 8 x 32 f32 accumulators are 16 zmm registers,
/// plus 2 for the packed right operand and 1 for the broadcast left pair (of 32).
pub const MR: usize = 8;
pub const NR: usize = 32;
/// Pairs of k per block: a panel block of the right operand (KC x NR words, 32 KiB) stays in L1/L2
/// while the MC / MR tiles of a row block reuse it.
pub const KC: usize = 256;
/// Rows per parallel block (its packed left block, MC x KC words, is 64 KiB).
pub const MC: usize = 64;

/// Which microkernel multiplies the packed pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// Plain Rust, the instruction's arithmetic: for tests and for machines without it.
    Emulated,
    /// `vdpbf16ps` (x86-64 with AVX-512F and AVX-512 BF16).
    Native,
    /// `tdpbf16ps` (AMX-BF16 tiles, src/fast/amx.rs; x86-64 Linux with AMX granted).
    Amx,
    /// The AMX kernel's packing and tile walk with the instruction's arithmetic in plain Rust
    /// (src/fast/amx.rs): for tests on any CPU.
    AmxEmulated,
    /// No products (every tile is zero): everything else (im2col, rounding, packing, stores) as
    /// the others do it, so that a bench can split an op's time into packing and products
    /// (benches/fast_conv.rs). Never chosen by [`crate::fast::bf16::kernel`]; its results are wrong.
    PackOnly,
}

impl Bf16Kernel {
    /// Native where the CPU has AVX-512 BF16 and the active SIMD level is AVX-512 (so
    /// `DDPM_SIMD=avx2` turns it off for A/B runs); None elsewhere (the bf16 path then rounds
    /// operands and multiplies with the f32 kernels).
    pub fn native() -> Option<Bf16Kernel> {
        use super::simd::SimdLevel;
        (SimdLevel::active() == SimdLevel::Avx512 && SimdLevel::has_avx512_bf16()).then_some(Bf16Kernel::Native)
    }

    /// Amx where the CPU has AMX-BF16 and the OS grants the tile state ([`super::amx::available`]),
    /// at the AVX-512 level (`DDPM_SIMD=avx2` turns it off too); None elsewhere.
    pub fn amx() -> Option<Bf16Kernel> {
        use super::simd::SimdLevel;
        (SimdLevel::active() == SimdLevel::Avx512 && super::amx::available()).then_some(Bf16Kernel::Amx)
    }
}

/// The pair word of two f32 values, each rounded to bf16: (lo, hi) in the (low, high) halves.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    (round(lo).to_bits() >> 16) | (round(hi).to_bits() & 0xffff_0000)
}

/// A right operand [k, n] rounded and packed for [`matmul_packed`]: panels of NR columns, each
/// [pairs, NR] words, zeros past n and past an odd k.
pub struct PackedRhs {
    words: PooledVec,
    pub k: usize,
    pub n: usize,
    pub(super) pairs: usize,
}

impl PackedRhs {
    pub fn new(rhs: Mat) -> PackedRhs {
        let (k, n) = (rhs.rows, rhs.cols);
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut words = PooledVec::uninit(panels * pairs * NR);
        let out: &mut [u32] = bytemuck::cast_slice_mut(&mut words[..]);
        if pairs == 0 {
            return PackedRhs { words, k, n, pairs };
        }
        // Column c of rhs is lane c % NR of panel c / NR; its k run is contiguous when
        // row_stride is 1 (the weights of a conv or linear layer, viewed transposed).
        let view = Lanes { data: rhs.data, k_stride: rhs.row_stride, k };
        out.par_chunks_mut(pairs * NR).enumerate().for_each(|(panel, dst)| {
            let lane = |j: usize| {
                let c = panel * NR + j;
                (c < n).then(|| rhs.offset + c * rhs.col_stride)
            };
            view.pack::<NR>(lane, 0, pairs, dst);
        });
        PackedRhs { words, k, n, pairs }
    }

    pub(super) fn panel(&self, panel: usize) -> &[u32] {
        &bytemuck::cast_slice(&self.words[..])[panel * self.pairs * NR..][..self.pairs * NR]
    }
}

/// dst = lhs * rhs (or dst += when `accumulate`), lhs rounded to bf16 as it is packed.
pub fn matmul_packed(kernel: Bf16Kernel, dst: MatMut, lhs: Mat, rhs: &PackedRhs, accumulate: bool, threads: Threads) {
    check_product("gemm_bf16", [lhs.rows, lhs.cols], [rhs.k, rhs.n], [dst.rows, dst.cols]);
    // Once per product, not per microkernel tile: `micro`'s native branch relies on it.
    #[cfg(target_arch = "x86_64")]
    if kernel == Bf16Kernel::Native {
        assert!(
            super::simd::SimdLevel::has_avx512_bf16() && std::is_x86_feature_detected!("avx512f"),
            "gemm_bf16: no AVX-512 BF16"
        );
    }
    assert!(kernel != Bf16Kernel::Amx || super::amx::available(), "gemm_bf16: no AMX-BF16");
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    let last = dst.offset + (dst.rows - 1) * dst.row_stride + dst.cols - 1;
    assert!(last < dst.data.len(), "gemm_bf16: dst view reaches element {last} of {}", dst.data.len());
    if lhs.rows > 0 && lhs.cols > 0 {
        let last = lhs.offset + (lhs.rows - 1) * lhs.row_stride + (lhs.cols - 1) * lhs.col_stride;
        assert!(last < lhs.data.len(), "gemm_bf16: lhs view reaches element {last} of {}", lhs.data.len());
    }
    let (m, stride) = (dst.rows, dst.row_stride);
    // Block b owns rows [b*MC, b*MC + MC) of dst, which start at element b*MC*stride of the view.
    let rows = &mut dst.data[dst.offset..];
    let run = |(b, d): (usize, &mut [f32])| {
        let (r0, mb) = (b * MC, (m - b * MC).min(MC));
        match kernel {
            Bf16Kernel::Amx | Bf16Kernel::AmxEmulated => {
                super::amx::row_block(kernel == Bf16Kernel::Amx, d, stride, lhs, rhs, r0, mb, accumulate)
            }
            _ => row_block(kernel, d, stride, lhs, rhs, r0, mb, accumulate),
        }
    };
    let blocks = m.div_ceil(MC);
    if blocks == 1 {
        return run((0, rows));
    }
    assert!(stride >= dst.cols, "gemm_bf16: dst rows overlap (stride {stride} < {} columns)", dst.cols);
    if threads == Threads::All {
        rows.par_chunks_mut(MC * stride).take(blocks).enumerate().for_each(run);
    } else {
        rows.chunks_mut(MC * stride).take(blocks).enumerate().for_each(run);
    }
}

/// dst rows [r0, r0 + mb) (given as `d`, rows `stride` apart) for every column.
#[allow(clippy::too_many_arguments)]
fn row_block(
    kernel: Bf16Kernel,
    d: &mut [f32],
    stride: usize,
    lhs: Mat,
    rhs: &PackedRhs,
    r0: usize,
    mb: usize,
    accumulate: bool,
) {
    let tiles = mb.div_ceil(MR);
    let mut a = PooledVec::uninit(tiles * KC * MR);
    let a: &mut [u32] = bytemuck::cast_slice_mut(&mut a[..]);
    // Row r of lhs is lane r % MR of tile r / MR; its k run is contiguous when col_stride is 1
    // (im2col rows, activations).
    let view = Lanes { data: lhs.data, k_stride: lhs.col_stride, k: lhs.cols };
    let mut tile = [[0f32; NR]; MR];
    let pairs = rhs.pairs;
    if pairs == 0 && !accumulate {
        for r in 0..mb {
            d[r * stride..][..rhs.n].fill(0.0);
        }
    }
    for (blk, p0) in (0..pairs).step_by(KC).enumerate() {
        let kc = KC.min(pairs - p0);
        // Pack rows [r0, r0 + mb) x pairs [p0, p0 + kc): tile-major, then pair, then row.
        for t in 0..tiles {
            let lane = |r: usize| {
                let row = t * MR + r;
                (row < mb).then(|| lhs.offset + (r0 + row) * lhs.row_stride)
            };
            view.pack::<MR>(lane, p0, kc, &mut a[t * kc * MR..][..kc * MR]);
        }
        for panel in 0..rhs.n.div_ceil(NR) {
            let b = &rhs.panel(panel)[p0 * NR..][..kc * NR];
            let cols = NR.min(rhs.n - panel * NR);
            for t in 0..tiles {
                micro(kernel, &a[t * kc * MR..][..kc * MR], b, &mut tile);
                for r in 0..MR.min(mb - t * MR) {
                    let out = &mut d[(t * MR + r) * stride + panel * NR..][..cols];
                    if blk == 0 && !accumulate {
                        out.copy_from_slice(&tile[r][..cols]);
                    } else {
                        for (o, &v) in out.iter_mut().zip(&tile[r]) {
                            *o += v;
                        }
                    }
                }
            }
        }
    }
}

/// A matrix seen as lanes (rows of the left operand, columns of the right) that run along k:
/// element k of the lane starting at `start` is `data[start + k * k_stride]`, for k < `k`.
#[derive(Clone, Copy)]
pub(super) struct Lanes<'a> {
    pub(super) data: &'a [f32],
    pub(super) k_stride: usize,
    pub(super) k: usize,
}

/// Pairs packed per pass of [`Lanes::pack`]: the L lanes' words of one pass (L x 64 words, 8 KiB
/// at L = NR) stay in L1 while every lane writes its column of them.
const PACK_PAIRS: usize = 64;

impl Lanes<'_> {
    /// out[p * L + l] = the pair word of elements 2(p0 + p) and 2(p0 + p) + 1 of lane l (zeros
    /// past k, and for lanes that `lane` gives no start: rows past the block, columns past n),
    /// for p < kc. Contiguous lanes (k_stride 1, the common case) are rounded and paired a run
    /// at a time (`pair_run`, vectorised), then spread to their column of `out`; the
    /// element-by-element loop of the general case cost as much as the products at batch 1.
    pub(super) fn pack<const L: usize>(
        &self,
        lane: impl Fn(usize) -> Option<usize>,
        p0: usize,
        kc: usize,
        out: &mut [u32],
    ) {
        assert_eq!(out.len(), kc * L, "gemm_bf16: packed block length");
        let mut run = [0u32; PACK_PAIRS];
        for q0 in (0..kc).step_by(PACK_PAIRS) {
            let q = PACK_PAIRS.min(kc - q0);
            let (k0, dst) = (2 * (p0 + q0), &mut out[q0 * L..][..q * L]);
            for l in 0..L {
                let run = &mut run[..q];
                match lane(l) {
                    None => run.fill(0),
                    Some(start) if self.k_stride == 1 => {
                        // Elements [k0, k0 + 2q) of the lane, those before k; the rest is zero.
                        let have = self.k.saturating_sub(k0).min(2 * q);
                        let src = &self.data[start + k0.min(self.k)..][..have];
                        pair_run(&src[..have & !1], &mut run[..have / 2]);
                        if have % 2 == 1 {
                            run[have / 2] = pair(src[have - 1], 0.0);
                        }
                        run[have.div_ceil(2)..].fill(0);
                    }
                    Some(start) => {
                        let at = |k: usize| if k < self.k { self.data[start + k * self.k_stride] } else { 0.0 };
                        for (p, w) in run.iter_mut().enumerate() {
                            *w = pair(at(k0 + 2 * p), at(k0 + 2 * p + 1));
                        }
                    }
                }
                for (p, &w) in run.iter().enumerate() {
                    dst[p * L + l] = w;
                }
            }
        }
    }
}

// dst[p] = the pair word of src[2p], src[2p + 1]: contiguous in and out, so it vectorises.
simd_dispatch!(
    fn pair_run(src: &[f32], dst: &mut [u32]) {
        for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
            *d = pair(s[0], s[1]);
        }
    }
);

/// tile = the MR x NR sums over the kc pairs of `a` ([kc, MR] words) and `b` ([kc, NR] words).
fn micro(kernel: Bf16Kernel, a: &[u32], b: &[u32], tile: &mut [[f32; NR]; MR]) {
    assert!(a.len() / MR == b.len() / NR && a.len().is_multiple_of(MR) && b.len().is_multiple_of(NR));
    match kernel {
        Bf16Kernel::Emulated => micro_emulated(a, b, tile),
        Bf16Kernel::PackOnly => *tile = [[0.0; NR]; MR],
        #[cfg(target_arch = "x86_64")]
        Bf16Kernel::Native => {
            // SAFETY: the CPU has AVX-512F and AVX-512 BF16 (asserted in matmul_packed, the only
            // caller's caller); a and b hold kc pair rows (asserted above).
            unsafe { native::micro(a.len() / MR, a.as_ptr(), b.as_ptr(), tile) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Bf16Kernel::Native => unreachable!("gemm_bf16: Native exists on x86-64 only"),
        Bf16Kernel::Amx | Bf16Kernel::AmxEmulated => {
            unreachable!("gemm_bf16: the AMX kernels have their own row blocks")
        }
    }
}

/// The instruction's arithmetic in plain Rust: per lane, c += hi(a) hi(b), then c += lo(a) lo(b)
/// (the products are exact in f32, so a separate multiply and add round once, as the instruction).
fn micro_emulated(a: &[u32], b: &[u32], tile: &mut [[f32; NR]; MR]) {
    let hi = |w: u32| f32::from_bits(w & 0xffff_0000);
    let lo = |w: u32| f32::from_bits(w << 16);
    *tile = [[0.0; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for (row, &aw) in tile.iter_mut().zip(ap) {
            let (ah, al) = (hi(aw), lo(aw));
            for (c, &bw) in row.iter_mut().zip(bp) {
                *c += ah * hi(bw);
                *c += al * lo(bw);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod native {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// `kc` pairs: per pair, two loads of 16 words of b and MR broadcasts of a's pair word.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn micro(kc: usize, a: *const u32, b: *const u32, tile: &mut [[f32; NR]; MR]) {
        let mut c = [[_mm512_setzero_ps(); 2]; MR];
        for p in 0..kc {
            // SAFETY (all pointer reads): p < kc, and the caller's slices hold kc * NR words of b
            // and kc * MR of a.
            let (b0, b1) = unsafe {
                (
                    _mm512_loadu_si512(b.add(p * NR) as *const __m512i),
                    _mm512_loadu_si512(b.add(p * NR + 16) as *const __m512i),
                )
            };
            let (b0, b1): (__m512bh, __m512bh) = (bh(b0), bh(b1));
            for (r, acc) in c.iter_mut().enumerate() {
                let ar = bh(_mm512_set1_epi32(unsafe { *a.add(p * MR + r) } as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], ar, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], ar, b1);
            }
        }
        for (row, acc) in tile.iter_mut().zip(&c) {
            // SAFETY: each row holds NR = 32 floats.
            unsafe {
                _mm512_storeu_ps(row.as_mut_ptr(), acc[0]);
                _mm512_storeu_ps(row.as_mut_ptr().add(16), acc[1]);
            }
        }
    }

    /// The 32 bf16 halves of 16 pair words, as the instruction's operand type.
    #[inline(always)]
    fn bh(v: __m512i) -> __m512bh {
        // SAFETY: both are 512-bit plain-data vectors.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
    }
}
