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
/// At most this many k blocks per chunk of K walked by one panel before moving on (the chunks of
/// one product are made even: a short last chunk would load and store C for a few steps).
const CHUNK: usize = 32;

/// Where a packed operand's tiles lie: `tiles` row tiles (A) or column tiles (B), each with
/// `kbs` k blocks. The order follows the source's memory order so that packing reads it
/// front to back: tile-major (`[tile][k block]`) when a source row runs along k (A row-major, B
/// transposed), k-major (`[k block][tile]`) when it runs across the tiles (A transposed, B
/// row-major).
#[derive(Clone, Copy)]
struct Layout {
    tiles: usize,
    kbs: usize,
    k_major: bool,
}

impl Layout {
    /// Offset (in u16) of tile `t`, k block `kb`.
    fn at(&self, t: usize, kb: usize) -> usize {
        if self.k_major {
            (kb * self.tiles + t) * TILE
        } else {
            (t * self.kbs + kb) * TILE
        }
    }
    /// Distance from one k block of a tile to the next.
    fn step(&self) -> usize {
        if self.k_major {
            self.tiles * TILE
        } else {
            TILE
        }
    }
    /// One unit of packing work: a k block of every tile, or every k block of one tile.
    fn chunk(&self) -> usize {
        if self.k_major {
            self.tiles * TILE
        } else {
            self.kbs * TILE
        }
    }
    fn len(&self) -> usize {
        self.tiles * self.kbs * TILE
    }
}

/// Where `a`'s tiles go when it is packed as an A operand.
fn a_layout(a: &Mat<'_>) -> Layout {
    let (m, k) = a.shape();
    Layout {
        tiles: 2 * m.div_ceil(2 * T),
        kbs: k.div_ceil(KB),
        k_major: a.strides().1 != 1,
    }
}

/// Where `b`'s tiles go when it is packed as a B operand.
fn b_layout(b: &Mat<'_>) -> Layout {
    let (k, n) = b.shape();
    Layout {
        tiles: 2 * n.div_ceil(2 * T),
        kbs: k.div_ceil(KB),
        k_major: b.strides().1 == 1,
    }
}

/// Pack `a` (laid out as `la`) into `dst`, spread over the rayon pool with `parallel`.
fn pack_a(a: &Mat<'_>, la: Layout, dst: &mut [u16], parallel: bool) {
    use rayon::prelude::*;
    let unit = |(i, dst): (usize, &mut [u16])| {
        if la.k_major {
            pack_a_kblock(a, i, dst)
        } else {
            pack_a_rows(a, i, dst)
        }
    };
    if parallel {
        dst.par_chunks_mut(la.chunk()).enumerate().for_each(unit);
    } else {
        dst.chunks_mut(la.chunk()).enumerate().for_each(unit);
    }
}

/// Pack `b` (laid out as `lb`) into `dst`, spread over the rayon pool with `parallel`.
fn pack_b(b: &Mat<'_>, lb: Layout, dst: &mut [u16], parallel: bool) {
    use rayon::prelude::*;
    let unit = |(i, dst): (usize, &mut [u16])| {
        if lb.k_major {
            pack_b_kblock(b, i, dst)
        } else {
            pack_b_cols(b, i, dst)
        }
    };
    if parallel {
        dst.par_chunks_mut(lb.chunk()).enumerate().for_each(unit);
    } else {
        dst.chunks_mut(lb.chunk()).enumerate().for_each(unit);
    }
}

// The packed copies of a product reuse this thread's buffers from the last one (fresh pages and
// their zeroing cost more than the packing). The packers write every element, so the buffers
// only ever grow: zeroing them to a product's size would cost a memset per call.
thread_local! {
    static PACKED: std::cell::RefCell<(Vec<u16>, Vec<u16>)> = Default::default();
}

/// Runs `f` with this thread's two packing buffers, at least `na` and `nb` long.
fn with_buffers<R>(na: usize, nb: usize, f: impl FnOnce(&mut [u16], &mut [u16]) -> R) -> R {
    let (mut ap, mut bp) = PACKED.with(|p| std::mem::take(&mut *p.borrow_mut()));
    for (buf, len) in [(&mut ap, na), (&mut bp, nb)] {
        if buf.len() < len + ALIGN_SLACK {
            buf.resize(len + ALIGN_SLACK, 0);
        }
    }
    let r = f(aligned(&mut ap, na), aligned(&mut bp, nb));
    PACKED.with(|p| *p.borrow_mut() = (ap, bp));
    r
}

/// u16 elements of slack that let a buffer start a packed operand on a 64-byte boundary.
const ALIGN_SLACK: usize = 32;

/// The `len` elements of `buf` from its first 64-byte boundary on (`buf` holds `len` plus
/// [`ALIGN_SLACK`]). Tile loads that straddle cache lines run at a third of the speed: every
/// packed tile (1 KiB) must start on a cache line.
fn aligned(buf: &mut [u16], len: usize) -> &mut [u16] {
    let off = buf.as_ptr().align_offset(64);
    assert!(off < ALIGN_SLACK && off + len <= buf.len());
    &mut buf[off..off + len]
}

/// `C (+)= A·B` on AMX tiles. `c` is `m × n` with rows `c_stride` apart (checked by the
/// caller, [`crate::gemm::gemm`]); `parallel` spreads the packing and the row panels over the
/// rayon pool. Must only be called when [`available`] returned true.
pub(crate) fn gemm(
    a: Mat<'_>,
    b: Mat<'_>,
    c: &mut [f32],
    c_stride: usize,
    accumulate: bool,
    parallel: bool,
) {
    let (la, lb) = (a_layout(&a), b_layout(&b));
    let (m, n) = (a.shape().0, b.shape().1);
    with_buffers(la.len(), lb.len(), |ap, bp| {
        pack_a(&a, la, ap, parallel);
        pack_b(&b, lb, bp, parallel);
        compute(m, n, (ap, la), (bp, lb), c, c_stride, accumulate, parallel);
    });
}

/// The products of [`crate::gemm::gemm_shared`] (checked and non-trivial): `shared` is every
/// product's A (`shared_is_a`) or B, packed once; each entry is (the other operand, C, C's row
/// stride, accumulate, parallel). The shared operand is packed in parallel when any product is.
pub(crate) fn gemm_shared(
    shared: Mat<'_>,
    shared_is_a: bool,
    products: &mut [(Mat<'_>, &mut [f32], usize, bool, bool)],
) {
    if products.is_empty() {
        return;
    }
    let parallel = products.iter().any(|p| p.4);
    let ls = if shared_is_a {
        a_layout(&shared)
    } else {
        b_layout(&shared)
    };
    let others: Vec<Layout> = products
        .iter()
        .map(|p| {
            if shared_is_a {
                b_layout(&p.0)
            } else {
                a_layout(&p.0)
            }
        })
        .collect();
    let most = others.iter().map(Layout::len).max().unwrap_or(0);
    let (na, nb) = if shared_is_a {
        (ls.len(), most)
    } else {
        (most, ls.len())
    };
    with_buffers(na, nb, |ap, bp| {
        if shared_is_a {
            pack_a(&shared, ls, ap, parallel);
        } else {
            pack_b(&shared, ls, bp, parallel);
        }
        for (p, &lo) in products.iter_mut().zip(&others) {
            let (other, c, c_stride, accumulate, par) = (p.0, &mut *p.1, p.2, p.3, p.4);
            if shared_is_a {
                let bp = &mut bp[..lo.len()];
                pack_b(&other, lo, bp, par);
                let (m, n) = (shared.shape().0, other.shape().1);
                compute(m, n, (ap, ls), (bp, lo), c, c_stride, accumulate, par);
            } else {
                let ap = &mut ap[..lo.len()];
                pack_a(&other, lo, ap, par);
                let (m, n) = (other.shape().0, shared.shape().1);
                compute(m, n, (ap, lo), (bp, ls), c, c_stride, accumulate, par);
            }
        }
    });
}

/// A B operand (`k × n`) packed once for several products that use its leading rows and
/// columns: the attention's keys and values, shared by every query row block of their head.
pub(crate) struct PackedB {
    data: Vec<u16>,
    /// Where the 64-byte-aligned packed tiles begin in `data`.
    start: usize,
    layout: Layout,
    k: usize,
    n: usize,
}

impl PackedB {
    /// Pack `b` on the calling thread. Must only be called when [`available`] returned true.
    pub(crate) fn new(b: Mat<'_>) -> PackedB {
        let lb = b_layout(&b);
        let mut data = vec![0u16; lb.len() + ALIGN_SLACK];
        let start = data.as_ptr().align_offset(64);
        pack_b(&b, lb, aligned(&mut data, lb.len()), false);
        let (k, n) = b.shape();
        PackedB {
            data,
            start,
            layout: lb,
            k,
            n,
        }
    }

    /// (rows, columns) of the packed matrix.
    pub(crate) fn shape(&self) -> (usize, usize) {
        (self.k, self.n)
    }
}

/// `C (+)= A·B[..k, ..n]` on the calling thread, `A` being `m × k` with `k ≤` B's rows and `n ≤`
/// B's columns (checked by the caller, [`crate::gemm::gemm_prepacked`]). B's rows past `k` meet
/// A's zero padding in the last k block, so they add nothing as long as they are finite.
pub(crate) fn gemm_prepacked(
    a: Mat<'_>,
    b: &PackedB,
    n: usize,
    c: &mut [f32],
    c_stride: usize,
    accumulate: bool,
) {
    let la = a_layout(&a);
    let m = a.shape().0;
    with_buffers(la.len(), 0, |ap, _| {
        pack_a(&a, la, ap, false);
        compute(
            m,
            n,
            (ap, la),
            (&b.data[b.start..], b.layout),
            c,
            c_stride,
            accumulate,
            false,
        );
    });
}

/// The tile loops over packed operands: C's `m × n` block (`c_stride` apart) gets the product
/// over A's k blocks (B may hold more k blocks and more column tiles; they are not read).
#[allow(clippy::too_many_arguments)]
fn compute(
    m: usize,
    n: usize,
    (ap, la): (&[u16], Layout),
    (bp, lb): (&[u16], Layout),
    c: &mut [f32],
    c_stride: usize,
    accumulate: bool,
    parallel: bool,
) {
    use rayon::prelude::*;
    let pairs = n.div_ceil(2 * T);
    let kbs = la.kbs;
    debug_assert!(lb.kbs >= kbs && lb.tiles >= 2 * pairs);
    let need = (m - 1) * c_stride + n;
    let c = &mut c[..need];
    let panel = |(p, cp): (usize, &mut [f32])| {
        let rows = (m - p * 2 * T).min(2 * T);
        imp::with_tiles(|| {
            // Blocks on the ragged edge of C go through a 32×32 buffer.
            let mut buf = [0f32; 4 * T * T];
            let chunk = kbs.div_ceil(kbs.div_ceil(CHUNK));
            for kc in (0..kbs).step_by(chunk) {
                let steps = chunk.min(kbs - kc);
                let set = kc == 0 && !accumulate;
                let ta = Operand {
                    data: ap,
                    first: la.at(2 * p, kc),
                    second: la.at(2 * p + 1, kc),
                    step: la.step(),
                };
                for q in 0..pairs {
                    let tb = Operand {
                        data: bp,
                        first: lb.at(2 * q, kc),
                        second: lb.at(2 * q + 1, kc),
                        step: lb.step(),
                    };
                    let cols = (n - q * 2 * T).min(2 * T);
                    if rows == 2 * T && cols == 2 * T {
                        // Whole block inside C: the tiles load and store C in place.
                        let dst = &mut cp[q * 2 * T..];
                        imp::kernel_2x2(&ta, &tb, steps, dst, c_stride, !set);
                        continue;
                    }
                    imp::kernel_2x2(&ta, &tb, steps, &mut buf, 2 * T, false);
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
}

/// Two tiles' runs of k blocks inside a packed buffer, as the micro-kernel reads them: the
/// first tile's blocks start at `first`, the second's at `second`, each next block `step`
/// further on.
struct Operand<'a> {
    data: &'a [u16],
    first: usize,
    second: usize,
    step: usize,
}

/// Row tile `it` of a row-major A (rows `16·it ..`), every k block, into `dst` (one tile per
/// k block), zeros where the tile reaches past A.
fn pack_a_rows(a: &Mat<'_>, it: usize, dst: &mut [u16]) {
    let (m, k) = a.shape();
    let rs = a.strides().0 as usize;
    let rows = m.saturating_sub(it * T).min(T);
    if rows < T || k % KB != 0 {
        dst.fill(0);
    }
    for r in 0..rows {
        let i = it * T + r;
        imp::cvt_blocks(&a.data[i * rs..i * rs + k], &mut dst[r * KB..], TILE);
    }
}

/// Pairs of source runs of one k block, converted 16 at a time: for runs `kk` and `kk + 1` of
/// k block `kb` (each `len` values, run `r` starting at `data[r·stride]`) and each 16-wide piece
/// `t` of them, `put(kk, t, pairs)` gets `pairs[2j] = bf16(run kk[16t + j])` and
/// `pairs[2j + 1] = bf16(run kk+1[16t + j])` (0 past the end of K).
fn for_pair_pieces(
    data: &[f32],
    stride: usize,
    len: usize,
    k: usize,
    kb: usize,
    mut put: impl FnMut(usize, usize, &[u16]),
) {
    let (k0, kn) = (kb * KB, (k - kb * KB).min(KB));
    let mut tmp = [0u16; 2 * T];
    for kk in (0..kn).step_by(2) {
        let run0 = &data[(k0 + kk) * stride..][..len];
        let run1 = if kk + 1 < kn {
            &data[(k0 + kk + 1) * stride..][..len]
        } else {
            &[]
        };
        for t in 0..len.div_ceil(T) {
            let w = (len - t * T).min(T);
            let r1 = if run1.is_empty() {
                run1
            } else {
                &run1[t * T..t * T + w]
            };
            imp::cvt_pairs(&run0[t * T..t * T + w], r1, &mut tmp[..2 * w]);
            put(kk, t, &tmp[..2 * w]);
        }
    }
}

/// k block `kb` of a transposed A (each k a contiguous run of rows), every row tile, into
/// `dst` (one tile per row tile), zeros where the tiles reach past A. Each row's pair of k
/// values is one u32 of its tile row.
fn pack_a_kblock(a: &Mat<'_>, kb: usize, dst: &mut [u16]) {
    let (m, k) = a.shape();
    let stride = a.strides().1 as usize;
    if k - kb * KB < KB || m < dst.len() / TILE * T {
        dst.fill(0);
    }
    // whole tiles of a whole k block: 16 rows × 32 k at a time, transposed in registers
    let full = if k - kb * KB >= KB { m / T } else { 0 };
    imp::pack_transposed_tiles(&a.data[kb * KB * stride..], stride, full, dst);
    if full * T == m {
        return;
    }
    // the rest (a ragged k block, or the rows past the last whole tile) pair by pair
    let off = full * T;
    for_pair_pieces(&a.data[off..], stride, m - off, k, kb, |kk, it, pairs| {
        let d = &mut dst[(full + it) * TILE + kk..];
        for (r, pair) in pairs.chunks_exact(2).enumerate() {
            d[r * KB..r * KB + 2].copy_from_slice(pair);
        }
    });
}

/// Column tile `jt` of a transposed B (each column a contiguous run of k), every k block, into
/// `dst` in the pair-interleaved layout: (kk, j) goes to k block kk/32, tile row (kk%32)/2,
/// slot 2j + kk%2. Zeros where the tile reaches past B.
fn pack_b_cols(b: &Mat<'_>, jt: usize, dst: &mut [u16]) {
    let (k, n) = b.shape();
    let cs = b.strides().1 as usize;
    let cols = n.saturating_sub(jt * T).min(T);
    if cols < T || k % KB != 0 {
        dst.fill(0);
    }
    // a whole tile of columns: 16 columns × 32 k at a time, transposed in registers
    let full = if cols == T { k / KB } else { 0 };
    if full > 0 {
        imp::pack_column_tiles(&b.data[jt * T * cs..], cs, full, dst);
    }
    let mut tmp = [0u16; KB];
    for j in 0..cols {
        let col = jt * T + j;
        let src = &b.data[col * cs..col * cs + k];
        for (kb, chunk) in src.chunks(KB).enumerate().skip(full) {
            imp::cvt_run(chunk, &mut tmp[..chunk.len()]);
            let d = &mut dst[kb * TILE + 2 * j..];
            for (e, &v) in tmp[..chunk.len()].iter().enumerate() {
                d[(e / 2) * KB + (e & 1)] = v;
            }
        }
    }
}

/// k block `kb` of a row-major B, every column tile, into `dst` (one tile per column tile) in
/// the pair-interleaved layout: rows kk and kk + 1 become one tile row. Zeros where the tiles
/// reach past B.
fn pack_b_kblock(b: &Mat<'_>, kb: usize, dst: &mut [u16]) {
    let (k, n) = b.shape();
    if k - kb * KB < KB || n < dst.len() / TILE * T {
        dst.fill(0);
    }
    for_pair_pieces(b.data, b.strides().0 as usize, n, k, kb, |kk, jt, pairs| {
        dst[jt * TILE + (kk / 2) * KB..][..pairs.len()].copy_from_slice(pairs);
    });
}

#[cfg(target_arch = "x86_64")]
pub(crate) use imp::with_config;

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::{Operand, KB, T, TILE};
    use std::arch::asm;

    /// `ldtilecfg`'s 64-byte operand (palette 1).
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

    /// The CPU has AMX-TILE and AMX-BF16, and Linux grants the tile data state to the process.
    pub(super) fn request() -> bool {
        let f = crate::dispatch::Features::get();
        // The packers convert with AVX-512 BF16; every AMX CPU has it, but check.
        if !(f.amx_tile && f.amx_bf16 && f.avx512bf16 && f.avx512bw) {
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

    /// `src` in runs of 32 (the last may be shorter), run `i` rounded to bf16 into
    /// `dst[i·stride ..]`.
    pub(super) fn cvt_blocks(src: &[f32], dst: &mut [u16], stride: usize) {
        let runs = src.len().div_ceil(KB);
        assert!(
            stride >= KB
                && (runs == 0 || dst.len() >= (runs - 1) * stride + src.len() - (runs - 1) * KB)
        );
        // SAFETY: as in `cvt_run`; the assert covers every store.
        unsafe { cvt_blocks_avx512(src, dst, stride) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn cvt_blocks_avx512(src: &[f32], dst: &mut [u16], stride: usize) {
        use std::arch::x86_64::*;
        let whole = src.len() / KB;
        for i in 0..whole {
            // SAFETY: run i is src[32i .. 32i + 32] and dst[i·stride ..][..32], inside both
            // slices (checked by the caller).
            unsafe {
                let s = src.as_ptr().add(i * KB);
                let v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s.add(16)), _mm512_loadu_ps(s));
                _mm512_storeu_si512(
                    dst.as_mut_ptr().add(i * stride).cast(),
                    std::mem::transmute::<__m512bh, __m512i>(v),
                );
            }
        }
        let tail = &src[whole * KB..];
        if !tail.is_empty() {
            for (y, &x) in dst[whole * stride..][..tail.len()].iter_mut().zip(tail) {
                *y = super::bf16_bits(x);
            }
        }
    }

    /// The 16 × 16 transpose of 32-bit lanes: on return `r[j]` lane `i` is the old `r[i]` lane
    /// `j`.
    #[target_feature(enable = "avx512f")]
    fn transpose16(r: &mut [std::arch::x86_64::__m512i; 16]) {
        use std::arch::x86_64::*;
        // pairs of rows interleaved: t[4g..4g+4] from rows 4g .. 4g+3
        let mut t = [_mm512_setzero_si512(); 16];
        for i in (0..16).step_by(2) {
            t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
        }
        // u[4g + c]: columns c, c+4, c+8, c+12 (one per 128-bit lane) of rows 4g .. 4g+3
        let mut u = [_mm512_setzero_si512(); 16];
        for g in (0..16).step_by(4) {
            u[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]);
            u[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
            u[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
            u[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
        }
        for c in 0..4 {
            // lanes [col c rows 0-3, col c+8 rows 0-3, col c rows 4-7, col c+8 rows 4-7], ...
            let v0 = _mm512_shuffle_i32x4::<0b10_00_10_00>(u[c], u[4 + c]);
            let v1 = _mm512_shuffle_i32x4::<0b10_00_10_00>(u[8 + c], u[12 + c]);
            let w0 = _mm512_shuffle_i32x4::<0b11_01_11_01>(u[c], u[4 + c]);
            let w1 = _mm512_shuffle_i32x4::<0b11_01_11_01>(u[8 + c], u[12 + c]);
            r[c] = _mm512_shuffle_i32x4::<0b10_00_10_00>(v0, v1);
            r[c + 8] = _mm512_shuffle_i32x4::<0b11_01_11_01>(v0, v1);
            r[c + 4] = _mm512_shuffle_i32x4::<0b10_00_10_00>(w0, w1);
            r[c + 12] = _mm512_shuffle_i32x4::<0b11_01_11_01>(w0, w1);
        }
    }

    /// B operand tiles from 16 contiguous runs (columns of B, `stride` apart in `data`): for each
    /// of `kbs` whole k blocks, tile row `i` gets every column's k pair `(2i, 2i + 1)`, in
    /// `dst[kb·TILE ..]`.
    pub(super) fn pack_column_tiles(data: &[f32], stride: usize, kbs: usize, dst: &mut [u16]) {
        if kbs == 0 {
            return;
        }
        assert!(data.len() >= 15 * stride + kbs * KB && dst.len() >= kbs * TILE);
        // SAFETY: as in `cvt_run`; the assert covers every load and store.
        unsafe { pack_column_tiles_avx512(data, stride, kbs, dst) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn pack_column_tiles_avx512(data: &[f32], stride: usize, kbs: usize, dst: &mut [u16]) {
        use std::arch::x86_64::*;
        for kb in 0..kbs {
            // SAFETY: column j's run is data[j·stride + 32kb ..][..32] and tile row i is
            // dst[kb·TILE + 32i ..][..32], inside the slices (checked by the caller).
            unsafe {
                let mut r = [_mm512_setzero_si512(); 16];
                for (j, r) in r.iter_mut().enumerate() {
                    let s = data.as_ptr().add(j * stride + kb * KB);
                    let v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s.add(16)), _mm512_loadu_ps(s));
                    *r = std::mem::transmute::<__m512bh, __m512i>(v);
                }
                transpose16(&mut r);
                for (i, v) in r.iter().enumerate() {
                    _mm512_storeu_si512(dst.as_mut_ptr().add(kb * TILE + i * KB).cast(), *v);
                }
            }
        }
    }

    /// A operand tiles of one whole k block from a transposed source (`data` row `p` holds k
    /// index `p` of every A row, `stride` apart): tile `t` (A rows `16t ..`) row `r` gets A row
    /// `16t + r`'s 32 k values, in `dst[t·TILE ..]`, for `tiles` tiles.
    pub(super) fn pack_transposed_tiles(
        data: &[f32],
        stride: usize,
        tiles: usize,
        dst: &mut [u16],
    ) {
        if tiles == 0 {
            return;
        }
        assert!(data.len() >= (KB - 1) * stride + tiles * T && dst.len() >= tiles * TILE);
        // SAFETY: as in `cvt_run`; the assert covers every load and store.
        unsafe { pack_transposed_tiles_avx512(data, stride, tiles, dst) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn pack_transposed_tiles_avx512(data: &[f32], stride: usize, tiles: usize, dst: &mut [u16]) {
        use std::arch::x86_64::*;
        // lane i of the result takes u16 lane IDX[i] of [row p (0..16), row p + 1 (16..32)]
        const IDX: [u16; 32] = [
            0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23, 8, 24, 9, 25, 10, 26, 11, 27,
            12, 28, 13, 29, 14, 30, 15, 31,
        ];
        // SAFETY: the index table is 64 bytes.
        let idx = unsafe { _mm512_loadu_si512(IDX.as_ptr().cast()) };
        for t in 0..tiles {
            // SAFETY: source rows p < 32 at columns 16t .. 16t + 16 and tile rows
            // dst[t·TILE + 32r ..][..32] are inside the slices (checked by the caller).
            unsafe {
                let mut r = [_mm512_setzero_si512(); 16];
                for (pp, r) in r.iter_mut().enumerate() {
                    let s = data.as_ptr().add(2 * pp * stride + t * T);
                    let v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s.add(stride)), _mm512_loadu_ps(s));
                    *r = _mm512_permutexvar_epi16(idx, std::mem::transmute::<__m512bh, __m512i>(v));
                }
                transpose16(&mut r);
                for (i, v) in r.iter().enumerate() {
                    _mm512_storeu_si512(dst.as_mut_ptr().add(t * TILE + i * KB).cast(), *v);
                }
            }
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

    /// Runs `f` with this module's tile configuration loaded on this thread (every tile 16 rows
    /// of 64 bytes), releasing the tiles after.
    pub(super) fn with_tiles(f: impl FnOnce()) {
        with_config(
            [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
            [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
            f,
        )
    }

    /// Runs `f` with tiles `i` configured as `rows[i]` rows of `colsb[i]` bytes (palette 1) on
    /// this thread, releasing the tiles after. Must only be called where [`super::available`]
    /// holds (AMX, and the OS granted the tile state); the shapes must be valid (at most 16
    /// rows of 64 bytes).
    pub(crate) fn with_config(colsb: [u16; 16], rows: [u8; 16], f: impl FnOnce()) {
        assert!(colsb.iter().all(|&c| c <= 64) && rows.iter().all(|&r| r <= 16));
        let cfg = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb,
            rows,
        };
        // SAFETY: only reached after `available()` confirmed AMX and the OS permission; the
        // operand is a valid 64-byte palette-1 configuration (shapes checked above).
        unsafe {
            asm!("ldtilecfg [{0}]", in(reg) &cfg as *const TileConfig, options(nostack, readonly));
        }
        f();
        // SAFETY: as above; releases the tile state this thread loaded.
        unsafe {
            asm!("tilerelease", options(nostack, nomem));
        }
    }

    /// The 2×2 C tiles of one 32-row panel (`a`: its two A row tiles) times one 32-column pair
    /// (`b`: two B column tiles), over `steps` k blocks. The 32×32 result is the row-major
    /// block at the start of `c` (rows `c_stride` apart); with `load` it is added to what `c`
    /// holds, otherwise it replaces it.
    pub(super) fn kernel_2x2(
        a: &Operand<'_>,
        b: &Operand<'_>,
        steps: usize,
        c: &mut [f32],
        c_stride: usize,
        load: bool,
    ) {
        assert!(steps > 0);
        for o in [a, b] {
            let last = (steps - 1) * o.step + TILE;
            assert!(o.first + last <= o.data.len() && o.second + last <= o.data.len());
        }
        assert!(c_stride >= 2 * T && c.len() >= (2 * T - 1) * c_stride + 2 * T);
        // SAFETY: the asserts above keep every tile access inside the slices: the loop reads
        // `steps` tiles of each of the four runs, TILE u16 = 1 KiB each with rows 64 bytes
        // apart, `step` u16 apart; the C tiles are rows 0..32 × columns 0..32 of `c` with rows
        // `4·c_stride` bytes apart. The tile configuration was loaded by `with_tiles` (every
        // caller runs inside it).
        unsafe {
            let a0 = a.data.as_ptr().add(a.first);
            let a1 = a.data.as_ptr().add(a.second);
            let b0 = b.data.as_ptr().add(b.first);
            let b1 = b.data.as_ptr().add(b.second);
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
                "add {a0}, {as}",
                "add {a1}, {as}",
                "add {b0}, {bs}",
                "add {b1}, {bs}",
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
                as = in(reg) 2 * a.step,
                bs = in(reg) 2 * b.step,
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

    pub(super) fn cvt_blocks(_src: &[f32], _dst: &mut [u16], _stride: usize) {
        unreachable!("AMX products are only dispatched on x86-64")
    }

    pub(super) fn pack_column_tiles(_data: &[f32], _stride: usize, _kbs: usize, _dst: &mut [u16]) {
        unreachable!("AMX products are only dispatched on x86-64")
    }

    pub(super) fn pack_transposed_tiles(
        _data: &[f32],
        _stride: usize,
        _tiles: usize,
        _dst: &mut [u16],
    ) {
        unreachable!("AMX products are only dispatched on x86-64")
    }

    pub(super) fn with_tiles(_f: impl FnOnce()) {
        unreachable!("AMX products are only dispatched on x86-64")
    }

    pub(super) fn kernel_2x2(
        _a: &super::Operand<'_>,
        _b: &super::Operand<'_>,
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
    use crate::gemm::tests::{fill, transpose, view};
    use crate::gemm::{gemm as product, Precision, Threads};

    /// Packed operands start on cache lines whatever the allocator hands out (tile loads that
    /// straddle lines run at a third of the speed).
    #[test]
    fn packed_buffers_start_on_cache_lines() {
        for (na, nb) in [(1, 1), (512, 4096), (100_003, 7), (0, 3)] {
            with_buffers(na, nb, |a, b| {
                assert_eq!((a.len(), b.len()), (na, nb));
                assert_eq!(a.as_ptr() as usize % 64, 0);
                assert_eq!(b.as_ptr() as usize % 64, 0);
            });
        }
        let b = fill(70 * 40, 3);
        if available() {
            let p = PackedB::new(Mat::new(&b, 70, 40));
            assert_eq!(p.data[p.start..].as_ptr() as usize % 64, 0);
        }
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
                let (am, bm) = (view(&a, &at, m, k, ta), view(&b, &bt, k, n, tb));
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
