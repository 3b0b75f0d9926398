//! bf16 matrix products on Intel AMX tiles, for the tuner's GEMMs when it computes in bf16 as
//! the reference does on CPUs with bf16 support: `C (+)= A·B` with A and B rounded to bf16
//! (round to nearest even) and the products accumulated in f32 inside the tiles.
//!
//! Layouts (all tiles are 16 rows of 64 bytes):
//! - an A tile holds 16 rows × 32 k-values of A in bf16, packed as `[row tile][k block][16][32]`;
//! - a B tile holds 32 k-values × 16 columns of B in the pair-interleaved ("VNNI") layout that
//!   `TDPBF16PS` reads: row `p` is `B[2p][0], B[2p+1][0], B[2p][1], B[2p+1][1], …`, packed as
//!   `[column tile][k block][16][32]`;
//! - a C tile is 16×16 f32.
//!
//! The micro-kernel keeps a 2×2 block of C tiles (32×32) in tmm0–3 and streams two A and two B
//! tiles per 32-wide k step through tmm4–7. Work is split over row panels of 32; each panel
//! walks K in chunks of 512 so its A chunk stays in L1 while it sweeps every column of the
//! chunk's B, which stays in L2. Rows, columns and K are zero-padded to the tile sizes.

use crate::gemm::Mat;

/// Round to the nearest bf16, ties to even (NaN stays NaN).
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// `x` rounded to bf16, as an f32.
#[inline(always)]
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits((bf16_bits(x) as u32) << 16)
}

/// Whether AMX bf16 products can run here: the CPU has AMX-TILE and AMX-BF16, the kernel granted
/// this process the tile state, and `AUTOROUND_ISA` does not pin a lower tier. Decided once.
pub fn available() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        if let Ok(isa) = std::env::var("AUTOROUND_ISA") {
            if !isa.is_empty() && isa != "amx" {
                return false;
            }
        }
        imp::request()
    })
}

/// Tile rows (and C tile columns).
const T: usize = 16;
/// bf16 values per A-tile row: one 32-wide k block.
const KB: usize = 32;
/// u16 elements per packed tile.
const TILE: usize = T * KB;
/// k blocks per chunk of K walked by one panel before moving on.
const CHUNK: usize = 16;

/// `C (+)= A·B` on AMX tiles. `c` is `m × n` with rows `c_stride` apart (checked by the
/// caller, [`crate::gemm::gemm`]); `parallel` spreads the row panels over the rayon pool.
/// Must only be called when [`available`] returned true.
pub(crate) fn gemm(
    a: Mat<'_>,
    b: Mat<'_>,
    c: &mut [f32],
    c_stride: usize,
    accumulate: bool,
    parallel: bool,
) {
    use rayon::prelude::*;
    let (m, k) = a.shape();
    let n = b.shape().1;
    let panels = m.div_ceil(2 * T);
    let pairs = n.div_ceil(2 * T);
    let kbs = k.div_ceil(KB);
    // The packed copies reuse this thread's buffers from the last product (fresh pages and
    // their zeroing cost more than the packing); the packers write every element.
    thread_local! {
        static PACKED: std::cell::RefCell<(Vec<u16>, Vec<u16>)> = Default::default();
    }
    let (mut ap, mut bp) = PACKED.with(|p| std::mem::take(&mut *p.borrow_mut()));
    ap.truncate(panels * 2 * kbs * TILE);
    ap.resize(panels * 2 * kbs * TILE, 0);
    bp.truncate(pairs * 2 * kbs * TILE);
    bp.resize(pairs * 2 * kbs * TILE, 0);
    let a_tile = |(it, dst): (usize, &mut [u16])| pack_a(&a, it, dst);
    let b_tile = |(jt, dst): (usize, &mut [u16])| pack_b(&b, jt, dst);
    if parallel {
        ap.par_chunks_mut(kbs * TILE).enumerate().for_each(a_tile);
        bp.par_chunks_mut(kbs * TILE).enumerate().for_each(b_tile);
    } else {
        ap.chunks_mut(kbs * TILE).enumerate().for_each(a_tile);
        bp.chunks_mut(kbs * TILE).enumerate().for_each(b_tile);
    }
    let need = (m - 1) * c_stride + n;
    let c = &mut c[..need];
    let panel = |(p, cp): (usize, &mut [f32])| {
        let rows = (m - p * 2 * T).min(2 * T);
        let a0 = &ap[2 * p * kbs * TILE..(2 * p + 2) * kbs * TILE];
        imp::with_tiles(|| {
            // Blocks on the ragged edge of C go through a 32×32 buffer.
            let mut buf = [0f32; 4 * T * T];
            for kc in (0..kbs).step_by(CHUNK) {
                let steps = CHUNK.min(kbs - kc);
                let set = kc == 0 && !accumulate;
                for q in 0..pairs {
                    let b0 = &bp[2 * q * kbs * TILE..(2 * q + 2) * kbs * TILE];
                    let cols = (n - q * 2 * T).min(2 * T);
                    if rows == 2 * T && cols == 2 * T {
                        // Whole block inside C: the tiles load and store C in place.
                        let dst = &mut cp[q * 2 * T..];
                        imp::kernel_2x2(a0, b0, kbs, kc, steps, dst, c_stride, !set);
                        continue;
                    }
                    imp::kernel_2x2(a0, b0, kbs, kc, steps, &mut buf, 2 * T, false);
                    for r in 0..rows {
                        let dst = &mut cp[r * c_stride + q * 2 * T..][..cols];
                        let src = &buf[r * 2 * T..][..cols];
                        if set {
                            dst.copy_from_slice(src);
                        } else {
                            for (y, &x) in dst.iter_mut().zip(src) {
                                *y += x;
                            }
                        }
                    }
                }
            }
        });
    };
    if parallel {
        c.par_chunks_mut(2 * T * c_stride)
            .enumerate()
            .for_each(panel);
    } else {
        c.chunks_mut(2 * T * c_stride).enumerate().for_each(panel);
    }
    PACKED.with(|p| *p.borrow_mut() = (ap, bp));
}

/// Row tile `it` of A (rows `16·it ..`), every k block, into `dst` (one tile per k block),
/// zeros where the tile reaches past A.
fn pack_a(a: &Mat<'_>, it: usize, dst: &mut [u16]) {
    let (m, k) = a.shape();
    let (rs, cs) = a.strides();
    let (rs, cs) = (rs as usize, cs as usize);
    let rows = m.saturating_sub(it * T).min(T);
    if rows < T || k % KB != 0 {
        dst.fill(0);
    }
    if rows == 0 {
        return; // a padding tile of the last row panel
    }
    if cs == 1 {
        for r in 0..rows {
            let i = it * T + r;
            let src = &a.data[i * rs..i * rs + k];
            for (kb, chunk) in src.chunks(KB).enumerate() {
                imp::cvt_run(chunk, &mut dst[kb * TILE + r * KB..][..chunk.len()]);
            }
        }
    } else if rs == 1 && rows == T {
        // A transposed view: each k is a contiguous run of the tile's 16 rows. Two runs
        // (kk, kk + 1) convert into the (row, pair) interleave, each row's pair one u32 of the
        // tile row.
        let mut tmp = [0u16; 2 * T];
        for kk in (0..k).step_by(2) {
            let row0 = &a.data[kk * cs + it * T..][..T];
            let row1 = if kk + 1 < k {
                &a.data[(kk + 1) * cs + it * T..][..T]
            } else {
                &[]
            };
            imp::cvt_pairs(row0, row1, &mut tmp);
            let d = &mut dst[(kk / KB) * TILE + kk % KB..];
            for (r, pair) in tmp.chunks_exact(2).enumerate() {
                d[r * KB..r * KB + 2].copy_from_slice(pair);
            }
        }
    } else {
        for kk in 0..k {
            let src = &a.data[kk * cs + it * T * rs..];
            let d = &mut dst[(kk / KB) * TILE + kk % KB..];
            for r in 0..rows {
                d[r * KB] = bf16_bits(src[r * rs]);
            }
        }
    }
}

/// Column tile `jt` of B (columns `16·jt ..`), every k block, into `dst` in the pair-interleaved
/// layout, zeros where the tile reaches past B.
fn pack_b(b: &Mat<'_>, jt: usize, dst: &mut [u16]) {
    let (k, n) = b.shape();
    let (rs, cs) = b.strides();
    let (rs, cs) = (rs as usize, cs as usize);
    let cols = n.saturating_sub(jt * T).min(T);
    if cols < T || k % KB != 0 {
        dst.fill(0);
    }
    if cols == 0 {
        return; // a padding tile of the last column pair
    }
    if cs == 1 {
        // Rows kk and kk + 1 of the tile's columns become one interleaved tile row.
        for kk in (0..k).step_by(2) {
            let row0 = &b.data[kk * rs + jt * T..][..cols];
            let row1 = if kk + 1 < k {
                &b.data[(kk + 1) * rs + jt * T..][..cols]
            } else {
                &[]
            };
            let d = &mut dst[(kk / KB) * TILE + ((kk % KB) / 2) * KB..][..2 * cols];
            imp::cvt_pairs(row0, row1, d);
        }
    } else {
        // B transposed view: each column is a contiguous run of k; (kk, j) goes to k block
        // kk/32, tile row (kk%32)/2, slot 2j + kk%2.
        let mut tmp = [0u16; KB];
        for j in 0..cols {
            let col = jt * T + j;
            let src = &b.data[col * cs..col * cs + k];
            for (kb, chunk) in src.chunks(KB).enumerate() {
                imp::cvt_run(chunk, &mut tmp[..chunk.len()]);
                let d = &mut dst[kb * TILE + 2 * j..];
                for (e, &v) in tmp[..chunk.len()].iter().enumerate() {
                    d[(e / 2) * KB + (e & 1)] = v;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::{T, TILE};
    use std::arch::asm;

    /// `ldtilecfg`'s 64-byte operand: palette 1, every tile 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;

    /// CPUID says AMX-TILE and AMX-BF16, and Linux grants the tile data state to the process.
    pub(super) fn request() -> bool {
        let max_leaf = std::arch::x86_64::__cpuid(0).eax;
        let edx = if max_leaf >= 7 {
            std::arch::x86_64::__cpuid_count(7, 0).edx
        } else {
            0
        };
        let amx_bf16 = edx & (1 << 22) != 0;
        let amx_tile = edx & (1 << 24) != 0;
        // The packers convert with AVX-512 BF16; every AMX CPU has it, but check.
        let avx512 = std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512bw");
        if max_leaf < 7 || !amx_bf16 || !amx_tile || !avx512 {
            return false;
        }
        // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM) only changes the process's permitted xsave
        // features; it reads no memory of ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        r == 0
    }

    /// `dst[i] = bf16(src[i])` (`dst.len() == src.len()`).
    pub(super) fn cvt_run(src: &[f32], dst: &mut [u16]) {
        assert_eq!(src.len(), dst.len());
        // SAFETY: the AMX products (the only callers) run after `request()` checked AVX-512
        // BF16 and BW.
        unsafe { cvt_run_avx512(src, dst) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn cvt_run_avx512(src: &[f32], dst: &mut [u16]) {
        use std::arch::x86_64::*;
        let n32 = src.len() / 32 * 32;
        for (s, d) in src[..n32]
            .chunks_exact(32)
            .zip(dst[..n32].chunks_exact_mut(32))
        {
            // SAFETY: `s` holds 32 f32 and `d` 32 u16, exactly what the loads and store touch.
            unsafe {
                let lo = _mm512_loadu_ps(s.as_ptr());
                let hi = _mm512_loadu_ps(s.as_ptr().add(16));
                let v = _mm512_cvtne2ps_pbh(hi, lo);
                _mm512_storeu_si512(
                    d.as_mut_ptr().cast(),
                    std::mem::transmute::<__m512bh, __m512i>(v),
                );
            }
        }
        for (y, &x) in dst[n32..].iter_mut().zip(&src[n32..]) {
            *y = super::bf16_bits(x);
        }
    }

    /// `dst[2j] = bf16(row0[j])`, `dst[2j + 1] = bf16(row1[j])` (0 where `row1` is empty),
    /// for the up to 16 values of `row0`.
    pub(super) fn cvt_pairs(row0: &[f32], row1: &[f32], dst: &mut [u16]) {
        assert!(row0.len() <= T && dst.len() == 2 * row0.len());
        assert!(row1.is_empty() || row1.len() == row0.len());
        if row0.len() == T && row1.len() == T {
            // SAFETY: as in `cvt_run`.
            unsafe { cvt_pairs_avx512(row0, row1, dst) }
        } else {
            for (j, &x) in row0.iter().enumerate() {
                dst[2 * j] = super::bf16_bits(x);
                dst[2 * j + 1] = row1.get(j).map_or(0, |&y| super::bf16_bits(y));
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn cvt_pairs_avx512(row0: &[f32], row1: &[f32], dst: &mut [u16]) {
        use std::arch::x86_64::*;
        // Lane i of the result takes u16 lane IDX[i] of [row0 as bf16 (0..16), row1 (16..32)].
        const IDX: [u16; 32] = [
            0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23, 8, 24, 9, 25, 10, 26, 11, 27,
            12, 28, 13, 29, 14, 30, 15, 31,
        ];
        // SAFETY: the caller checked 16 values in each row and 32 slots in `dst`.
        unsafe {
            let v = _mm512_cvtne2ps_pbh(
                _mm512_loadu_ps(row1.as_ptr()),
                _mm512_loadu_ps(row0.as_ptr()),
            );
            let idx = _mm512_loadu_si512(IDX.as_ptr().cast());
            let out = _mm512_permutexvar_epi16(idx, std::mem::transmute::<__m512bh, __m512i>(v));
            _mm512_storeu_si512(dst.as_mut_ptr().cast(), out);
        }
    }

    /// Runs `f` with the tile configuration loaded on this thread, releasing the tiles after.
    pub(super) fn with_tiles(f: impl FnOnce()) {
        let cfg = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
            rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        // SAFETY: only reached after `available()` confirmed AMX and the OS permission; the
        // operand is a valid 64-byte palette-1 configuration.
        unsafe {
            asm!("ldtilecfg [{0}]", in(reg) &cfg as *const TileConfig, options(nostack, readonly));
        }
        f();
        // SAFETY: as above; releases the tile state this thread loaded.
        unsafe {
            asm!("tilerelease", options(nostack, nomem));
        }
    }

    /// The 2×2 C tiles of one 32-row panel (`a`: its two A row tiles, each `kbs` tiles long)
    /// times one 32-column pair (`b`: two B column tiles), over k blocks `kc .. kc + steps`.
    /// The 32×32 result is the row-major block at the start of `c` (rows `c_stride` apart);
    /// with `load` it is added to what `c` holds, otherwise it replaces it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn kernel_2x2(
        a: &[u16],
        b: &[u16],
        kbs: usize,
        kc: usize,
        steps: usize,
        c: &mut [f32],
        c_stride: usize,
        load: bool,
    ) {
        assert!(steps > 0 && kc + steps <= kbs);
        assert!(a.len() >= 2 * kbs * TILE && b.len() >= 2 * kbs * TILE);
        assert!(c_stride >= 2 * T && c.len() >= (2 * T - 1) * c_stride + 2 * T);
        // SAFETY: the asserts above keep every tile access inside the slices: the loop reads
        // tiles kc..kc+steps of both halves of `a` and `b`, each TILE u16 = 1 KiB with rows 64
        // bytes apart; the C tiles are rows 0..32 × columns 0..32 of `c` with rows
        // `4·c_stride` bytes apart. The tile configuration was loaded by `with_tiles` (every
        // caller runs inside it).
        unsafe {
            let a0 = a.as_ptr().add(kc * TILE);
            let a1 = a.as_ptr().add((kbs + kc) * TILE);
            let b0 = b.as_ptr().add(kc * TILE);
            let b1 = b.as_ptr().add((kbs + kc) * TILE);
            let c0 = c.as_mut_ptr();
            let c1 = c0.add(T * c_stride);
            asm!(
                "test {load}, {load}",
                "jz 3f",
                "tileloadd tmm0, [{c0} + {cs}*1]",
                "tileloadd tmm1, [{c0} + {cs}*1 + 64]",
                "tileloadd tmm2, [{c1} + {cs}*1]",
                "tileloadd tmm3, [{c1} + {cs}*1 + 64]",
                "jmp 2f",
                "3:",
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "2:",
                "tileloadd tmm4, [{a0} + {s}*1]",
                "tileloadd tmm6, [{b0} + {s}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {s}*1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {s}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a0}, 1024",
                "add {a1}, 1024",
                "add {b0}, 1024",
                "add {b1}, 1024",
                "dec {n}",
                "jnz 2b",
                "tilestored [{c0} + {cs}*1], tmm0",
                "tilestored [{c0} + {cs}*1 + 64], tmm1",
                "tilestored [{c1} + {cs}*1], tmm2",
                "tilestored [{c1} + {cs}*1 + 64], tmm3",
                a0 = inout(reg) a0 => _,
                a1 = inout(reg) a1 => _,
                b0 = inout(reg) b0 => _,
                b1 = inout(reg) b1 => _,
                n = inout(reg) steps => _,
                c0 = in(reg) c0,
                c1 = in(reg) c1,
                cs = in(reg) 4 * c_stride,
                s = in(reg) 64usize,
                load = in(reg) load as usize,
                out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _,
                out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _,
                options(nostack),
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    pub(super) fn request() -> bool {
        false
    }

    pub(super) fn cvt_run(_src: &[f32], _dst: &mut [u16]) {
        unreachable!("AMX products are only dispatched on x86-64")
    }

    pub(super) fn cvt_pairs(_row0: &[f32], _row1: &[f32], _dst: &mut [u16]) {
        unreachable!("AMX products are only dispatched on x86-64")
    }

    pub(super) fn with_tiles(_f: impl FnOnce()) {
        unreachable!("AMX products are only dispatched on x86-64")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn kernel_2x2(
        _a: &[u16],
        _b: &[u16],
        _kbs: usize,
        _kc: usize,
        _steps: usize,
        _c: &mut [f32],
        _c_stride: usize,
        _load: bool,
    ) {
        unreachable!("AMX products are only dispatched on x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::{gemm as product, Precision, Threads};

    fn fill(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn transpose(x: &[f32], r: usize, c: usize) -> Vec<f32> {
        let mut t = vec![0f32; r * c];
        for i in 0..r {
            for j in 0..c {
                t[j * r + i] = x[i * c + j];
            }
        }
        t
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(1.0 + 1.5 / 256.0), 0x3f81);
        assert_eq!(bf16_bits(-2.0), 0xc000);
        assert_eq!(bf16_bits(f32::INFINITY), 0x7f80);
        assert_eq!(
            bf16_bits(f32::MAX),
            0x7f80,
            "rounds up to infinity like torch"
        );
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(
            round_bf16(1e-40),
            f32::from_bits(0x0001_0000),
            "denormals stay denormal"
        );
    }

    /// Every transpose combination, ragged sizes around the tile edges, K longer than a chunk,
    /// strided output and accumulation, against f64 sums of the bf16-rounded inputs. Runs on
    /// AMX where the CPU has it, otherwise checks the rounded f32 fallback.
    #[test]
    fn bf16_product_matches_rounded_inputs() {
        if !available() {
            eprintln!("AMX bf16 not available here: checking the rounded-f32 fallback only");
        }
        for &(m, k, n) in &[
            (1, 1, 1),
            (17, 33, 15),
            (70, 65, 129),
            (33, 1100, 48),
            (128, 64, 64),
            (5, 40, 20),
        ] {
            let a = fill(m * k, 7);
            let b = fill(k * n, 8);
            let mut want = vec![0f64; m * n];
            let mut mag = vec![0f64; m * n];
            for i in 0..m {
                for j in 0..n {
                    for p in 0..k {
                        let t = round_bf16(a[i * k + p]) as f64 * round_bf16(b[p * n + j]) as f64;
                        want[i * n + j] += t;
                        mag[i * n + j] += t.abs();
                    }
                }
            }
            let at = transpose(&a, m, k);
            let bt = transpose(&b, k, n);
            let stride = n + 3;
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let am = if ta {
                    Mat::new(&at, k, m).t()
                } else {
                    Mat::new(&a, m, k)
                };
                let bm = if tb {
                    Mat::new(&bt, n, k).t()
                } else {
                    Mat::new(&b, k, n)
                };
                for threads in [Threads::One, Threads::Pool] {
                    let mut c = vec![5f32; m * stride];
                    product(am, bm, &mut c, stride, false, threads, Precision::Bf16);
                    product(am, bm, &mut c, stride, true, threads, Precision::Bf16);
                    for i in 0..m {
                        for j in 0..n {
                            let (got, w) = (c[i * stride + j] as f64, 2.0 * want[i * n + j]);
                            let tol = 2.0 * mag[i * n + j] * 1e-6 + 1e-30;
                            assert!(
                                (got - w).abs() <= tol,
                                "{m}x{k}x{n} ta={ta} tb={tb} {threads:?}: C[{i}][{j}] = {got}, want {w}"
                            );
                        }
                        for j in n..stride.min(c.len() - i * stride) {
                            assert_eq!(c[i * stride + j], 5.0, "padding column {j} was written");
                        }
                    }
                }
            }
        }
    }
}
