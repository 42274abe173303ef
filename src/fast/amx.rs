//! The AMX microkernel of the packed bf16 GEMM (src/fast/gemm_bf16.rs), `Bf16Kernel::Amx`:
//! `tdpbf16ps` multiplies a tile of 16 rows x 16 pair words (32 bf16 of k a row) by a tile of 16
//! pairs of k x 16 columns of pair words into a 16 x 16 f32 tile, 8192 products per instruction
//! (`vdpbf16ps` does 32). Sapphire Rapids issues one every 16 cycles: 512 products a cycle.
//!
//! The microkernel computes TM x NR = 32 x 32 outputs in four C tiles (tmm0: rows 0-15 x
//! columns 0-15, tmm1: 0-15 x 16-31, tmm2: 16-31 x 0-15, tmm3: 16-31 x 16-31) from two A tiles
//! (tmm4, tmm5: rows 0-15, 16-31) and two B tiles (tmm6, tmm7: columns 0-15, 16-31), stepping
//! through k 16 pairs (one "chunk") at a time. Every tile is 16 rows x 64 bytes (config below).
//! - A (packed here, [`pack_rows`]): per TM rows and chunk, the rows' 16 pair words each, row
//!   after row: 32 x 64 bytes; A0 at the chunk, A1 1024 bytes on, stride 64 bytes.
//! - B: the right operand's panel as [`PackedRhs`] holds it: NR = 32 words per pair (a row of
//!   the VNNI layout tdpbf16ps reads: column n's word is (b[2p][n], b[2p+1][n])), so stride 128
//!   bytes, B0 at the chunk's first pair, B1 64 bytes on. A last chunk of fewer than 16 pairs is
//!   copied into a zeroed 16 x 32 buffer, so that every tile load is whole.
//! - C: stored to a 32 x 32 f32 scratch (stride 128 bytes), whose valid part is added or copied
//!   into dst as the other kernels' tiles are. Rows past the block are zero rows of A.
//!
//! Arithmetic, per the Intel SDM's TDPBF16PS pseudo-code: per output and instruction, the even
//! products and the odd products are summed over the chunk's 16 pairs in two f32 chains from
//! zero (each add rounded to nearest even, denormals flushed), then the chains are added, then
//! that sum to the accumulator. That is an order of the same exact products, so the result meets
//! the bf16 contract (src/fast/bf16.rs) as the `vdpbf16ps` order does; its bits differ from
//! `Emulated`'s. `AmxEmulated` runs this file's packing, padding, tile walk and stores with the
//! pseudo-code in plain Rust, so that all of the AMX path but the instructions is tested on any
//! CPU; where AMX runs, the tests print how many bits the instruction differs from it.
//!
//! Linux hands out the 8 KiB tile state only to a process that asks (arch_prctl
//! ARCH_REQ_XCOMP_PERM, once, process-wide); [`available`] asks, and says no where it is refused.

use super::gemm::Mat;
use super::gemm_bf16::{KC, Lanes, NR, PackedRhs};
use super::pool::PooledVec;

/// Rows of one microkernel's tile (two A tiles).
pub const TM: usize = 32;
/// Pairs of k per tile step (64 bytes of pair words).
const KT: usize = 16;
/// Words of one chunk of packed A: TM rows x KT pairs.
const A_CHUNK: usize = TM * KT;
/// Word offsets and strides of the tiles, shared by the instructions (x4 for bytes) and the
/// emulation: A1 after A0's 16 rows, B1 16 columns after B0.
const A1: usize = 16 * KT;
const B1: usize = 16;

type Tile<T> = [[T; 16]; 16];

/// The 64-byte tile configuration `ldtilecfg` loads: palette 1, start_row 0, then per tile colsb
/// (u16 at byte 16 + 2 t) and rows (u8 at byte 48 + t). Tiles 0-7: 16 rows x 64 bytes; 8-15
/// unused (zero, as the reserved bytes 2-15 must be).
pub fn tile_config() -> [u8; 64] {
    let mut cfg = [0u8; 64];
    cfg[0] = 1;
    for t in 0..8 {
        cfg[16 + 2 * t..][..2].copy_from_slice(&64u16.to_le_bytes());
        cfg[48 + t] = 16;
    }
    cfg
}

/// Whether the user asked for AMX by default (`DDPM_AMX=1`); see [`super::bf16::kernel`].
pub fn opted_in() -> bool {
    std::env::var("DDPM_AMX").is_ok_and(|v| v == "1")
}

/// Whether this process can run AMX-BF16: the CPU has AMX-TILE and AMX-BF16, the OS enables the
/// tile state (XCR0 bits 17 and 18) and grants it to this process (asked once, here); and
/// `DDPM_NO_AMX` is not set (for A/B runs against vdpbf16ps).
pub fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| std::env::var_os("DDPM_NO_AMX").is_none() && detect())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    if __cpuid_count(0, 0).eax < 7 {
        return false;
    }
    // CPUID.(7,0):EDX bit 22 AMX-BF16, bit 24 AMX-TILE; CPUID.1:ECX bit 27 OSXSAVE.
    let edx = __cpuid_count(7, 0).edx;
    let osxsave = __cpuid_count(1, 0).ecx & (1 << 27) != 0;
    if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 || !osxsave {
        return false;
    }
    let xcr0: u32;
    // SAFETY: OSXSAVE is set, so xgetbv with ecx = 0 reads XCR0 (low half in eax).
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0, out("eax") xcr0, out("edx") _, options(nomem, nostack, preserves_flags));
    }
    const XTILECFG_XTILEDATA: u32 = 0b11 << 17;
    if xcr0 & XTILECFG_XTILEDATA != XTILECFG_XTILEDATA {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes this process's permitted xsave state.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// dst rows [r0, r0 + mb) (given as `d`, rows `stride` apart) for every column, as
/// `gemm_bf16::row_block` with the AMX microkernel (`native`: the instructions, which the caller
/// has checked are [`available`]; else their emulation).
#[allow(clippy::too_many_arguments)]
pub(super) fn row_block(
    native: bool,
    d: &mut [f32],
    stride: usize,
    lhs: Mat,
    rhs: &PackedRhs,
    r0: usize,
    mb: usize,
    accumulate: bool,
) {
    let tiles = mb.div_ceil(TM);
    let mut a = PooledVec::uninit(tiles * KC * TM);
    let a: &mut [u32] = bytemuck::cast_slice_mut(&mut a[..]);
    let view = Lanes { data: lhs.data, k_stride: lhs.col_stride, k: lhs.cols };
    let (pairs, n) = (rhs.pairs, rhs.n);
    if pairs == 0 && !accumulate {
        for r in 0..mb {
            d[r * stride..][..n].fill(0.0);
        }
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller checked that AMX is available when `native`.
    let tiles_cfg = native.then(|| unsafe { native::Config::load() });
    let mut c = [[0f32; NR]; TM];
    let mut b_tail = [0u32; KT * NR];
    for (blk, p0) in (0..pairs).step_by(KC).enumerate() {
        let (kc, chunks) = (KC.min(pairs - p0), KC.min(pairs - p0).div_ceil(KT));
        let a = &mut a[..tiles * chunks * A_CHUNK];
        for (t, at) in a.chunks_exact_mut(chunks * A_CHUNK).enumerate() {
            let lane = |r: usize| {
                let row = t * TM + r;
                (row < mb).then(|| lhs.offset + (r0 + row) * lhs.row_stride)
            };
            pack_rows(&view, lane, p0, kc, at);
        }
        for panel in 0..n.div_ceil(NR) {
            let b = &rhs.panel(panel)[p0 * NR..][..kc * NR];
            let full = kc / KT * KT * NR;
            b_tail[..b.len() - full].copy_from_slice(&b[full..]);
            b_tail[b.len() - full..].fill(0);
            let b_chunk = |q: usize| if (q + 1) * KT * NR <= full { &b[q * KT * NR..][..KT * NR] } else { &b_tail[..] };
            let cols = NR.min(n - panel * NR);
            for (t, at) in a.chunks_exact(chunks * A_CHUNK).enumerate() {
                #[cfg(target_arch = "x86_64")]
                match &tiles_cfg {
                    Some(cfg) => cfg.product(at, b_chunk, &mut c),
                    None => product_emulated(at, b_chunk, &mut c),
                }
                #[cfg(not(target_arch = "x86_64"))]
                product_emulated(at, b_chunk, &mut c);
                for r in 0..TM.min(mb - t * TM) {
                    let out = &mut d[(t * TM + r) * stride + panel * NR..][..cols];
                    if blk == 0 && !accumulate {
                        out.copy_from_slice(&c[r][..cols]);
                    } else {
                        out.iter_mut().zip(&c[r]).for_each(|(o, &v)| *o += v);
                    }
                }
            }
        }
    }
}

/// Packs pairs [p0, p0 + kc) of TM lanes (rows; zeros for those `lane` gives no start) in the
/// layout of the A tiles: per chunk of KT pairs, lane after lane, KT words each; zeros past kc.
pub(super) fn pack_rows(view: &Lanes, lane: impl Fn(usize) -> Option<usize>, p0: usize, kc: usize, out: &mut [u32]) {
    let chunks = kc.div_ceil(KT);
    assert!(kc <= KC && out.len() == chunks * A_CHUNK, "amx: packed block length");
    let mut run = [0u32; KC];
    let run = &mut run[..chunks * KT];
    for l in 0..TM {
        view.pack::<1>(|_| lane(l), p0, kc, &mut run[..kc]);
        run[kc..].fill(0);
        for (q, words) in run.chunks_exact(KT).enumerate() {
            out[q * A_CHUNK + l * KT..][..KT].copy_from_slice(words);
        }
    }
}

/// c = the TM x NR products of the packed A chunks in `a` and the B chunks `b(q)` (KT x NR words
/// each), tile by tile as the instructions do it (`tileloadd`, `tdpbf16ps`, `tilestored`).
fn product_emulated<'b>(a: &[u32], b: impl Fn(usize) -> &'b [u32], c: &mut [[f32; NR]; TM]) {
    let mut acc = [[[0f32; 16]; 16]; 4];
    for (q, a) in a.chunks_exact(A_CHUNK).enumerate() {
        let b = b(q);
        let at = [tile_load(a, 0, KT), tile_load(a, A1, KT)];
        let bt = [tile_load(b, 0, NR), tile_load(b, B1, NR)];
        for (i, acc) in acc.iter_mut().enumerate() {
            tdpbf16ps(acc, &at[i / 2], &bt[i % 2]);
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        for (m, row) in acc.iter().enumerate() {
            c[i / 2 * 16 + m][i % 2 * 16..][..16].copy_from_slice(row);
        }
    }
}

/// `tileloadd`: 16 rows of 16 words, row m at word `at + m * stride`.
fn tile_load(mem: &[u32], at: usize, stride: usize) -> Tile<u32> {
    std::array::from_fn(|m| mem[at + m * stride..][..16].try_into().unwrap())
}

/// `tdpbf16ps c, a, b` as the SDM's pseudo-code: per output, the even and the odd products in two
/// chains from zero over a's 16 pairs, their sum, then c plus that (each add rounded, in f32).
fn tdpbf16ps(c: &mut Tile<f32>, a: &Tile<u32>, b: &Tile<u32>) {
    let lo = |w: u32| f32::from_bits(w << 16);
    let hi = |w: u32| f32::from_bits(w & 0xffff_0000);
    for (crow, arow) in c.iter_mut().zip(a) {
        let (mut even, mut odd) = ([0f32; 16], [0f32; 16]);
        for (&aw, brow) in arow.iter().zip(b) {
            for n in 0..16 {
                even[n] += lo(aw) * lo(brow[n]);
                odd[n] += hi(aw) * hi(brow[n]);
            }
        }
        for n in 0..16 {
            crow[n] += even[n] + odd[n];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod native {
    use super::{A_CHUNK, A1, B1, KT, NR, TM};
    use std::arch::asm;

    /// Bytes of the offsets and strides (words x 4).
    const A_STRIDE: usize = KT * 4;
    const A1_BYTES: usize = A1 * 4;
    const B_STRIDE: usize = NR * 4;
    const B1_BYTES: usize = B1 * 4;
    const C_STRIDE: usize = NR * 4;
    /// C tiles (i, j) at rows 16 i, columns 16 j of the 32 x 32 f32 scratch.
    const C01: usize = 16 * 4;
    const C10: usize = 16 * C_STRIDE;
    const C11: usize = C10 + C01;

    #[repr(C, align(64))]
    struct TileCfg([u8; 64]);

    /// The tile configuration loaded on this thread (`ldtilecfg`) until dropped (`tilerelease`);
    /// neither Send nor Sync, so it cannot leave the thread that loaded it.
    pub struct Config(std::marker::PhantomData<*const ()>);

    impl Config {
        /// # Safety
        /// The CPU has AMX-TILE and AMX-BF16 and the OS granted this process the tile state
        /// ([`super::available`]).
        pub unsafe fn load() -> Config {
            let cfg = TileCfg(super::tile_config());
            // SAFETY: the caller's contract; cfg is 64 bytes, 64-aligned.
            unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly)) };
            Config(std::marker::PhantomData)
        }

        /// As `product_emulated`, with the instructions.
        pub fn product<'b>(&self, a: &[u32], b: impl Fn(usize) -> &'b [u32], c: &mut [[f32; NR]; TM]) {
            // SAFETY: tiles 0-7 are configured (self exists); every load reads 16 rows within
            // the chunk's slices (asserted lengths: A_CHUNK words of a, KT x NR of b), and the
            // stores write 16 rows of 64 bytes within c's 32 x 32 floats.
            unsafe {
                asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
                for (q, a) in a.chunks_exact(A_CHUNK).enumerate() {
                    let b = b(q);
                    assert_eq!(b.len(), KT * NR, "amx: B chunk length");
                    asm!(
                        "tileloadd tmm4, [{a} + {sa} * 1]",
                        "tileloadd tmm5, [{a} + {sa} * 1 + {a1}]",
                        "tileloadd tmm6, [{b} + {sb} * 1]",
                        "tileloadd tmm7, [{b} + {sb} * 1 + {b1}]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a = in(reg) a.as_ptr(),
                        b = in(reg) b.as_ptr(),
                        sa = in(reg) A_STRIDE,
                        sb = in(reg) B_STRIDE,
                        a1 = const A1_BYTES,
                        b1 = const B1_BYTES,
                        options(nostack, readonly),
                    );
                }
                asm!(
                    "tilestored [{c} + {s} * 1], tmm0",
                    "tilestored [{c} + {s} * 1 + {c01}], tmm1",
                    "tilestored [{c} + {s} * 1 + {c10}], tmm2",
                    "tilestored [{c} + {s} * 1 + {c11}], tmm3",
                    c = in(reg) c.as_mut_ptr(),
                    s = in(reg) C_STRIDE,
                    c01 = const C01,
                    c10 = const C10,
                    c11 = const C11,
                    options(nostack),
                );
            }
        }
    }

    impl Drop for Config {
        fn drop(&mut self) {
            // SAFETY: a configuration was loaded (by `load`); releasing it only zeroes the tiles.
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }
    }
}
