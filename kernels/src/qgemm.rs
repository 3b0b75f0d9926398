//! Prefill products on quantized weights with exact integer block sums, on AMX int8 tiles.
//!
//! `out[t][r] = Σ_b dw[r][b]·da[t][b]·Σ_{k∈b} qw[r][k]·qa[t][k] + Σ_b mw[r][b]·sa[t][b]`
//!
//! where `b` runs over the blocks that share a weight scale (32 values; 16 for Q6_K), `qw` are the
//! weights' integer levels (as i8, offsets such as Q4_0's −8 applied), `dw` their per-block
//! scale and `mw` their per-block offset (Q4_1/Q5_1's `m`, the K-quants' `−dmin·m_j`), and `qa`,
//! `da`, `sa` the activations quantized to the weight type's vec-dot type as llama.cpp quantizes
//! them (Q8_0, Q8_1 with its `s = d·Σq`, Q8_K with its block sums). This is the sum llama.cpp's
//! `vec_dot` forms per block; only the order of the float additions differs. It is the fast
//! path's prefill where the CPU has AMX-INT8: no bf16 rounding of weights or activations (which
//! moved perplexity by 0.2-0.3%), and no dequantized f32 copy of the weights.
//!
//! Data flow per product:
//! - the activations are packed once into A tiles (16 tokens × one block of values), with their
//!   scales;
//! - each task unpacks 64 weight rows into `TDPBSSD`'s B layout (the "VNNI" layout: tile row `p`
//!   holds, for each of 16 rows, the 4 values at `4p..4p + 4` of the block) plus scales;
//! - per 16 tokens × 16 rows, each block's integer tile is scaled and added in f32 (AVX-512,
//!   lanes along the rows, so a token's 16 outputs are one store).
//!
//! [`dot`](crate::dot)'s scalar references are the spec; tests compare against them.

use crate::reference::{f16_at, u32_at};
use crate::GgmlType;
use rayon::prelude::*;
use std::cell::RefCell;

/// Tokens per tile (B columns) and weight rows per tile (A rows).
const T: usize = 16;
/// Weight rows unpacked per task.
const GROUP: usize = 4 * T;

/// Whether int8 AMX products run here: AMX with the tile state granted (see
/// [`crate::amx::available`], which `AUTOROUND_ISA` can turn off) and AMX-INT8.
pub fn available() -> bool {
    crate::amx::available() && crate::dispatch::Features::get().amx_int8
}

/// Whether [`matmul`] handles weights of `ty`.
pub fn supports(ty: GgmlType) -> bool {
    use GgmlType as G;
    matches!(
        ty,
        G::Q4_0 | G::Q4_1 | G::Q5_0 | G::Q5_1 | G::Q8_0 | G::Q4_K | G::Q5_K | G::Q6_K
    )
}

/// Values per scale block of `ty` (the K step of one integer tile product).
fn block_len(ty: GgmlType) -> usize {
    if ty == GgmlType::Q6_K {
        16
    } else {
        32
    }
}

/// Whether `ty`'s values carry a per-block offset (`mw`).
fn has_offset(ty: GgmlType) -> bool {
    use GgmlType as G;
    matches!(ty, G::Q4_1 | G::Q5_1 | G::Q4_K | G::Q5_K)
}

/// One weight row of `ty` as i8 levels `q` (`cols`), per-block scales `dw` and offsets `mw`
/// (`cols / block_len`).
fn unpack_row(ty: GgmlType, src: &[u8], q: &mut [i8], dw: &mut [f32], mw: &mut [f32]) {
    use GgmlType as G;
    let bs = ty.type_size();
    match ty {
        G::Q4_0 | G::Q4_1 | G::Q5_0 | G::Q5_1 | G::Q8_0 => {
            for (b, blk) in src.chunks_exact(bs).enumerate() {
                let y = &mut q[32 * b..32 * b + 32];
                dw[b] = f16_at(blk, 0);
                match ty {
                    G::Q8_0 => y
                        .iter_mut()
                        .zip(&blk[2..34])
                        .for_each(|(y, &x)| *y = x as i8),
                    G::Q4_0 | G::Q4_1 => {
                        let (qs, off) = if ty == G::Q4_0 {
                            (&blk[2..18], 8)
                        } else {
                            (&blk[4..20], 0)
                        };
                        for j in 0..16 {
                            y[j] = (qs[j] & 15) as i8 - off;
                            y[j + 16] = (qs[j] >> 4) as i8 - off;
                        }
                    }
                    _ => {
                        let (qh, qs, off) = if ty == G::Q5_0 {
                            (u32_at(blk, 2), &blk[6..22], 16)
                        } else {
                            (u32_at(blk, 4), &blk[8..24], 0)
                        };
                        for j in 0..16 {
                            let h0 = (((qh >> j) & 1) << 4) as u8;
                            let h1 = (((qh >> (j + 16)) & 1) << 4) as u8;
                            y[j] = ((qs[j] & 15) | h0) as i8 - off;
                            y[j + 16] = ((qs[j] >> 4) | h1) as i8 - off;
                        }
                    }
                }
                if has_offset(ty) {
                    mw[b] = f16_at(blk, 2);
                }
            }
        }
        G::Q4_K | G::Q5_K => {
            let high = ty == G::Q5_K;
            for (sb, blk) in src.chunks_exact(bs).enumerate() {
                let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
                let qs = if high { &blk[48..176] } else { &blk[16..144] };
                for j in 0..8 {
                    let (sc, m) = crate::reference::kquants::get_scale_min_k4(j, &blk[4..16]);
                    dw[8 * sb + j] = d * sc as f32;
                    mw[8 * sb + j] = -(dmin * m as f32);
                }
                for c in 0..4 {
                    let y = &mut q[256 * sb + 64 * c..256 * sb + 64 * c + 64];
                    for l in 0..32 {
                        let x = qs[32 * c + l];
                        let (mut lo, mut hi) = (x & 15, x >> 4);
                        if high {
                            let h = blk[16 + l];
                            lo |= ((h >> (2 * c)) & 1) << 4;
                            hi |= ((h >> (2 * c + 1)) & 1) << 4;
                        }
                        y[l] = lo as i8;
                        y[l + 32] = hi as i8;
                    }
                }
            }
        }
        G::Q6_K => {
            for (sb, blk) in src.chunks_exact(bs).enumerate() {
                let d = f16_at(blk, 208);
                for j in 0..16 {
                    dw[16 * sb + j] = d * (blk[192 + j] as i8) as f32;
                }
                for n in 0..2 {
                    let y = &mut q[256 * sb + 128 * n..256 * sb + 128 * n + 128];
                    let (ql, qh) = (&blk[64 * n..64 * n + 64], &blk[128 + 32 * n..160 + 32 * n]);
                    for l in 0..32 {
                        let h = qh[l];
                        y[l] = ((ql[l] & 15) | ((h & 3) << 4)) as i8 - 32;
                        y[l + 32] = ((ql[l + 32] & 15) | (((h >> 2) & 3) << 4)) as i8 - 32;
                        y[l + 64] = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
                        y[l + 96] = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
                    }
                }
            }
        }
        _ => unreachable!("{ty}: not supported (supports)"),
    }
}

/// The activations in A-tile order: per token tile and block, 16 tokens × `len` values, plus
/// each block's `da` and `sa` per token (`[tile][block][16]`). Tokens past `n` are zero.
struct Packed {
    a: Vec<i8>,
    da: Vec<f32>,
    sa: Vec<f32>,
    tiles: usize,
}

/// Packs `n` rows of activations quantized to `vt` (`cols` values each) for blocks of `len`.
fn pack_activations(vt: GgmlType, act: &[u8], n: usize, cols: usize, len: usize) -> Packed {
    let row_bytes = act.len() / n;
    let blocks = cols / len;
    let tiles = n.div_ceil(T);
    let mut p = Packed {
        a: vec![0; tiles * blocks * len * T],
        da: vec![0.0; tiles * blocks * T],
        sa: vec![0.0; tiles * blocks * T],
        tiles,
    };
    let tile_a = blocks * len * T;
    let tile_s = blocks * T;
    p.a.par_chunks_mut(tile_a)
        .zip(p.da.par_chunks_mut(tile_s))
        .zip(p.sa.par_chunks_mut(tile_s))
        .enumerate()
        .for_each(|(tt, ((a, da), sa))| {
            for j in 0..T.min(n - tt * T) {
                let row = &act[(tt * T + j) * row_bytes..(tt * T + j + 1) * row_bytes];
                for blk in 0..blocks {
                    let (qs, d, s): (&[u8], f32, f32) = match vt {
                        GgmlType::Q8_0 => {
                            let x = &row[34 * blk..34 * blk + 34];
                            (&x[2..], f16_at(x, 0), 0.0)
                        }
                        GgmlType::Q8_1 => {
                            let x = &row[36 * blk..36 * blk + 36];
                            (&x[4..], f16_at(x, 0), f16_at(x, 2))
                        }
                        _ => {
                            // Q8_K: f32 scale, 256 values, 16 sums of 16 (i16)
                            let (sb, k) = (blk * len / 256, blk * len % 256);
                            let x = &row[292 * sb..292 * sb + 292];
                            let d = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
                            let bsum =
                                |i: usize| i16::from_le_bytes([x[260 + 2 * i], x[261 + 2 * i]]);
                            let s = (k / 16..(k + len) / 16)
                                .map(|i| bsum(i) as i32)
                                .sum::<i32>();
                            (&x[4 + k..4 + k + len], d, d * s as f32)
                        }
                    };
                    let at = (blk * T + j) * len;
                    for (d, &v) in a[at..at + len].iter_mut().zip(qs) {
                        *d = v as i8;
                    }
                    da[blk * T + j] = d;
                    sa[blk * T + j] = s;
                }
            }
        });
    p
}

/// One task's weight rows in B-tile order.
#[derive(Default)]
struct Rows {
    /// `[row tile][block][len/4][16 rows][4]` (the "VNNI" layout `TDPBSSD` reads).
    b: Vec<i8>,
    /// `[row tile][block][16 rows]`.
    dw: Vec<f32>,
    mw: Vec<f32>,
    /// One unpacked row and its per-block values.
    row: Vec<i8>,
    row_dw: Vec<f32>,
    row_mw: Vec<f32>,
    /// The integer tiles of two groups of four blocks (16 tokens × 16 rows of i32 each).
    c: Vec<i32>,
}

thread_local! {
    static ROWS: RefCell<Rows> = RefCell::new(Rows::default());
}

/// A pointer to the output that tasks write disjoint columns of.
struct Out(*mut f32);
// SAFETY: every task writes only the columns of its own rows (see `matmul`).
unsafe impl Sync for Out {}

/// `out[t·out_stride + r] = Σ_c w[r][c]·x[t][c]` for `t < n`, `r < rows`, where `w` holds
/// `rows` rows of `cols` values of `ty` and `act` the `n` activation rows quantized to
/// [`crate::reference::vec_dot_type`]`(ty)` as llama.cpp quantizes them.
///
/// # Panics
/// If [`available`] or [`supports`] is false, or the sizes do not fit.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    ty: GgmlType,
    cols: usize,
    w: &[u8],
    rows: usize,
    act: &[u8],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    assert!(available(), "int8 AMX products are not available here");
    assert!(supports(ty), "{ty}: no int8 AMX product");
    let vt = crate::reference::vec_dot_type(ty);
    let rb = ty.row_bytes(cols as u64).expect("whole blocks") as usize;
    assert_eq!(w.len(), rb * rows, "{ty}: weight rows");
    assert_eq!(
        act.len(),
        n * vt.row_bytes(cols as u64).expect("whole blocks") as usize,
        "activation rows"
    );
    assert!(n == 0 || (out_stride >= rows && out.len() >= (n - 1) * out_stride + rows));
    if n == 0 || rows == 0 {
        return;
    }
    let len = block_len(ty);
    let blocks = cols / len;
    let packed = pack_activations(vt, act, n, cols, len);
    let offsets = has_offset(ty);
    let o = Out(out.as_mut_ptr());
    let o = &o;
    (0..rows.div_ceil(GROUP)).into_par_iter().for_each(|g| {
        let r0 = g * GROUP;
        let nr = GROUP.min(rows - r0);
        let rts = nr.div_ceil(T);
        ROWS.with(|buf| {
            let mut buf = buf.borrow_mut();
            let Rows {
                b,
                dw,
                mw,
                row,
                row_dw,
                row_mw,
                c,
            } = &mut *buf;
            let tile_b = blocks * len * T;
            let tile_s = blocks * T;
            b.resize(rts * tile_b, 0);
            dw.resize(rts * tile_s, 0.0);
            mw.resize(rts * tile_s, 0.0);
            row.resize(cols, 0);
            row_dw.resize(blocks, 0.0);
            row_mw.resize(blocks, 0.0);
            c.resize(8 * T * T + 16, 0);
            // rows past `nr` in the last tile: zero weights and scales
            if !nr.is_multiple_of(T) {
                b[(rts - 1) * tile_b..].fill(0);
                dw[(rts - 1) * tile_s..].fill(0.0);
                mw[(rts - 1) * tile_s..].fill(0.0);
            }
            for r in 0..nr {
                unpack_row(
                    ty,
                    &w[(r0 + r) * rb..(r0 + r + 1) * rb],
                    row,
                    row_dw,
                    row_mw,
                );
                let (rt, j) = (r / T, r % T);
                for blk in 0..blocks {
                    let tile = rt * tile_b + blk * len * T;
                    for p4 in 0..len / 4 {
                        let at = tile + p4 * 4 * T + 4 * j;
                        b[at..at + 4]
                            .copy_from_slice(&row[blk * len + 4 * p4..blk * len + 4 * p4 + 4]);
                    }
                    dw[rt * tile_s + blk * T + j] = row_dw[blk];
                    mw[rt * tile_s + blk * T + j] = row_mw[blk];
                }
            }
            // 64-byte aligned room for two groups of four C tiles
            let skip = c.as_ptr().align_offset(64);
            let c = &mut c[skip..skip + 8 * T * T];
            imp::with_tiles(len, || {
                for tt in 0..packed.tiles {
                    let toks = T.min(n - tt * T);
                    for rt in 0..rts {
                        let cols_here = T.min(nr - rt * T);
                        // SAFETY: token rows tt·16 .. tt·16 + toks < n and columns
                        // r0 + rt·16 .. + cols_here ≤ rows ≤ out_stride lie inside `out`
                        // (asserted above); this task alone writes columns r0..r0 + nr.
                        let dst = unsafe { o.0.add(tt * T * out_stride + r0 + rt * T) };
                        imp::tile_product(
                            &packed,
                            tt,
                            &b[rt * tile_b..(rt + 1) * tile_b],
                            &dw[rt * tile_s..(rt + 1) * tile_s],
                            offsets.then(|| &mw[rt * tile_s..(rt + 1) * tile_s]),
                            len,
                            c,
                            dst,
                            out_stride,
                            toks,
                            cols_here,
                        );
                    }
                }
            });
        });
    });
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::{Packed, T};
    use std::arch::asm;
    use std::arch::x86_64::*;

    /// Runs `f` with this module's tiles configured for blocks of `len` (16 or 32) values:
    /// tmm0/tmm6 A (16 tokens × `len` bytes), tmm1/tmm7 B (`len/4` rows × 64 bytes), tmm2-5 C.
    pub(super) fn with_tiles(len: usize, f: impl FnOnce()) {
        // callers run only where `available()` holds (AMX-TILE/INT8, tile state granted)
        let (a, b) = (len as u16, (len / 4) as u8);
        crate::amx::with_config(
            [a, 64, 64, 64, 64, 64, a, 64, 0, 0, 0, 0, 0, 0, 0, 0],
            [16, b, 16, 16, 16, 16, 16, b, 0, 0, 0, 0, 0, 0, 0, 0],
            f,
        )
    }

    /// Token tile `tt` of `p` times one row tile (`b`, `dw`, `mw` as in `Rows`): writes
    /// `toks` output rows of `cols` values at `dst`, `stride` apart. `c` is 64-byte aligned
    /// room for eight C tiles.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tile_product(
        p: &Packed,
        tt: usize,
        b: &[i8],
        dw: &[f32],
        mw: Option<&[f32]>,
        len: usize,
        c: &mut [i32],
        dst: *mut f32,
        stride: usize,
        toks: usize,
        cols: usize,
    ) {
        let blocks = dw.len() / T;
        assert!(b.len() == blocks * len * T && mw.is_none_or(|m| m.len() == dw.len()));
        assert!(tt < p.tiles && p.a.len() >= (tt + 1) * blocks * len * T);
        assert!(p.da.len() >= (tt + 1) * blocks * T && p.sa.len() == p.da.len());
        assert!(c.len() == 8 * T * T && c.as_ptr().align_offset(64) == 0);
        assert!(toks <= T && cols <= T);
        // SAFETY: with_tiles configured the tiles (callers run inside it); AVX-512F is part of
        // every AMX CPU (`amx::available` requires it); the asserts bound every access but
        // `dst`, which the caller vouches for.
        unsafe {
            match mw {
                Some(m) => tile_avx512::<true>(p, tt, b, dw, m, len, c, dst, stride, toks, cols),
                None => tile_avx512::<false>(p, tt, b, dw, dw, len, c, dst, stride, toks, cols),
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_avx512<const OFF: bool>(
        p: &Packed,
        tt: usize,
        b: &[i8],
        dw: &[f32],
        mw: &[f32],
        len: usize,
        c: &mut [i32],
        dst: *mut f32,
        stride: usize,
        toks: usize,
        cols: usize,
    ) {
        let blocks = dw.len() / T;
        let tile = len * T; // bytes per A or B tile
        let mut acc = [_mm512_setzero_ps(); T];
        // SAFETY (whole body): bounds asserted by `tile_product`.
        unsafe {
            let abase = p.a.as_ptr().add(tt * blocks * tile);
            let da = p.da.as_ptr().add(tt * blocks * T);
            let sa = p.sa.as_ptr().add(tt * blocks * T);
            // Four blocks at a time, software-pipelined: the tile unit multiplies group g + 1
            // while the vector units scale group g (the C tiles are stored first, then the next
            // products are issued, then the stored group is read back).
            let groups = blocks / 4;
            let launch = |blk: usize| {
                let a = abase.add(blk * tile);
                let bb = b.as_ptr().add(blk * tile);
                asm!(
                    "tileloadd tmm0, [{a0} + {s}*1]",
                    "tileloadd tmm1, [{b0} + {bs}*1]",
                    "tilezero tmm2",
                    "tdpbssd tmm2, tmm0, tmm1",
                    "tileloadd tmm6, [{a1} + {s}*1]",
                    "tileloadd tmm7, [{b1} + {bs}*1]",
                    "tilezero tmm3",
                    "tdpbssd tmm3, tmm6, tmm7",
                    "tileloadd tmm0, [{a2} + {s}*1]",
                    "tileloadd tmm1, [{b2} + {bs}*1]",
                    "tilezero tmm4",
                    "tdpbssd tmm4, tmm0, tmm1",
                    "tileloadd tmm6, [{a3} + {s}*1]",
                    "tileloadd tmm7, [{b3} + {bs}*1]",
                    "tilezero tmm5",
                    "tdpbssd tmm5, tmm6, tmm7",
                    a0 = in(reg) a,
                    a1 = in(reg) a.add(tile),
                    a2 = in(reg) a.add(2 * tile),
                    a3 = in(reg) a.add(3 * tile),
                    b0 = in(reg) bb,
                    b1 = in(reg) bb.add(tile),
                    b2 = in(reg) bb.add(2 * tile),
                    b3 = in(reg) bb.add(3 * tile),
                    s = in(reg) len,
                    bs = in(reg) 64usize,
                    out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _,
                    out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _,
                    options(nostack),
                );
            };
            let mut post = |ct: *const i32, k: usize| {
                let dwv = _mm512_loadu_ps(dw.as_ptr().add(k * T));
                let mwv = if OFF {
                    _mm512_loadu_ps(mw.as_ptr().add(k * T))
                } else {
                    dwv
                };
                for (t, acc) in acc.iter_mut().enumerate() {
                    let ci = _mm512_cvtepi32_ps(_mm512_load_si512(ct.add(t * T) as *const _));
                    let s = _mm512_mul_ps(dwv, _mm512_set1_ps(*da.add(k * T + t)));
                    *acc = _mm512_fmadd_ps(ci, s, *acc);
                    if OFF {
                        *acc = _mm512_fmadd_ps(mwv, _mm512_set1_ps(*sa.add(k * T + t)), *acc);
                    }
                }
            };
            if groups > 0 {
                launch(0);
            }
            for g in 0..groups {
                let cp = c.as_mut_ptr().add((g % 2) * 4 * T * T) as *mut u8;
                asm!(
                    "tilestored [{c} + {bs}*1], tmm2",
                    "tilestored [{c} + {bs}*1 + 1024], tmm3",
                    "tilestored [{c} + {bs}*1 + 2048], tmm4",
                    "tilestored [{c} + {bs}*1 + 3072], tmm5",
                    c = in(reg) cp,
                    bs = in(reg) 64usize,
                    options(nostack),
                );
                if g + 1 < groups {
                    launch(4 * (g + 1));
                }
                for j in 0..4 {
                    post((cp as *const i32).add(j * T * T), 4 * g + j);
                }
            }
            for k in 4 * groups..blocks {
                let cp = c.as_mut_ptr() as *mut u8;
                asm!(
                    "tileloadd tmm0, [{a} + {s}*1]",
                    "tileloadd tmm1, [{b} + {bs}*1]",
                    "tilezero tmm2",
                    "tdpbssd tmm2, tmm0, tmm1",
                    "tilestored [{c} + {bs}*1], tmm2",
                    a = in(reg) abase.add(k * tile),
                    b = in(reg) b.as_ptr().add(k * tile),
                    c = in(reg) cp,
                    s = in(reg) len,
                    bs = in(reg) 64usize,
                    out("tmm0") _, out("tmm1") _, out("tmm2") _,
                    options(nostack),
                );
                post(cp as *const i32, k);
            }
            let mask: __mmask16 = if cols == T { !0 } else { (1u16 << cols) - 1 };
            for (t, a) in acc.iter().enumerate().take(toks) {
                _mm512_mask_storeu_ps(dst.add(t * stride), mask, *a);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use super::Packed;
    pub(super) fn with_tiles(_len: usize, _f: impl FnOnce()) {
        unreachable!("int8 AMX products are only dispatched on x86-64")
    }
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tile_product(
        _p: &Packed,
        _tt: usize,
        _b: &[i8],
        _dw: &[f32],
        _mw: Option<&[f32]>,
        _len: usize,
        _c: &mut [i32],
        _dst: *mut f32,
        _stride: usize,
        _toks: usize,
        _cols: usize,
    ) {
        unreachable!("int8 AMX products are only dispatched on x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;

    /// Against the reference `vec_dot` of every (row, token) pair, on random weights quantized
    /// to each type, with ragged token and row counts (partial tiles), a zero activation row
    /// and an outlier.
    #[test]
    fn int8_products_match_the_reference_dots() {
        if !available() {
            eprintln!("skipped: this CPU has no AMX-INT8 (or the tile state was refused)");
            return;
        }
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut unit = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2_000_001) as f32 / 1_000_000.0 - 1.0
        };
        use GgmlType as G;
        for (ty, rows, cols, n) in [
            (G::Q4_0, 70, 320, 37),
            (G::Q4_1, 33, 256, 16),
            (G::Q5_0, 17, 512, 5),
            (G::Q5_1, 64, 288, 20),
            (G::Q8_0, 130, 576, 33),
            (G::Q4_K, 40, 512, 19),
            (G::Q5_K, 16, 768, 17),
            (G::Q6_K, 50, 512, 21),
        ] {
            let wf: Vec<f32> = (0..rows * cols).map(|_| unit()).collect();
            let rb = ty.row_bytes(cols as u64).unwrap() as usize;
            let mut w = vec![0u8; rb * rows];
            crate::quantize::quantize_rows(ty, &wf, cols, None, &mut w).unwrap();
            let mut x: Vec<f32> = (0..n * cols).map(|_| unit()).collect();
            x[..cols].fill(0.0);
            x[cols + 3] = 40.0;
            let vt = reference::vec_dot_type(ty);
            let ab = vt.row_bytes(cols as u64).unwrap() as usize;
            let mut act = vec![0u8; ab * n];
            for (xr, ar) in x.chunks(cols).zip(act.chunks_mut(ab)) {
                reference::engine_quantize_fn(vt).unwrap()(xr, ar);
            }
            let stride = rows + 3;
            let mut out = vec![f32::NAN; n * stride];
            matmul(ty, cols, &w, rows, &act, n, &mut out, stride);
            let dot = reference::vec_dot_fn(ty).unwrap();
            let mut wd = vec![0f32; cols];
            for r in 0..rows {
                reference::dequantize_fn(ty).unwrap()(&w[r * rb..(r + 1) * rb], &mut wd);
                for t in 0..n {
                    let want = dot(cols, &w[r * rb..(r + 1) * rb], &act[t * ab..(t + 1) * ab]);
                    let got = out[t * stride + r];
                    let mag: f32 = wd
                        .iter()
                        .zip(&x[t * cols..])
                        .map(|(a, b)| (a * b).abs())
                        .sum();
                    assert!(
                        (got - want).abs() <= 2e-6 * mag + 1e-6,
                        "{ty} row {r} token {t}: {got} vs {want}"
                    );
                }
            }
            // the padding columns are left alone
            assert!(
                out[rows..stride].iter().all(|v| v.is_nan()),
                "{ty}: wrote past rows"
            );
        }
    }
}
