//! Prefill products on quantized weights with exact integer block sums, on AMX int8 tiles.
//!
//! `out[t][r] = Σ_b dw[r][b]·da[t][b]·Σ_{k∈b} qw[r][k]·qa[t][k] + Σ_b mw[r][b]·sa[t][b]`
//!
//! where `b` runs over the blocks that share a weight scale (32 values; for Q6_K the 256 of a
//! super-block, its 16-value integer scales folded into `qw`: see `Layout`), `qw` are the
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
//! - each task unpacks 64 weight rows, 16 at a time, and transposes them into `TDPBSSD`'s B
//!   layout (the "VNNI" layout: tile row `p` holds, for each of 16 rows, the 4 values at
//!   `4p..4p + 4` of the block) plus scales;
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

/// How a type's weights go onto the tiles.
#[derive(Clone, Copy)]
struct Layout {
    /// Values per integer tile product (K): one scale block of 32, or 64 for Q6_K.
    len: usize,
    /// Weight planes: 1 (the levels), or 2 for Q6_K, whose values are `sc·q = 128·hi + lo`
    /// (its 16-value scales folded into the integers, split into two i8 planes).
    planes: usize,
    /// Tile products per scale block: 1, or 4 for Q6_K (one f16 `d` per 256 values).
    per_scale: usize,
    /// Token tiles per pass over a row tile's weights: 1, or 2 for Q6_K (whose B tiles are
    /// twice the bytes, so each is used against two A tiles).
    tokens: usize,
}

fn layout(ty: GgmlType) -> Layout {
    if ty == GgmlType::Q6_K {
        // Its scales come in blocks of 16: tiles of K = 16 would cost as many tile stores and
        // float steps as tile products. Folded into the integers instead, one super-block is
        // four K = 64 products per plane and a single float step.
        Layout {
            len: 64,
            planes: 2,
            per_scale: 4,
            tokens: 2,
        }
    } else {
        Layout {
            len: 32,
            planes: 1,
            per_scale: 1,
            tokens: 1,
        }
    }
}

/// Whether `ty`'s values carry a per-block offset (`mw`).
fn has_offset(ty: GgmlType) -> bool {
    use GgmlType as G;
    matches!(ty, G::Q4_1 | G::Q5_1 | G::Q4_K | G::Q5_K)
}

/// One weight row of `ty` as i8 levels `q` (`planes × cols`: see [`Layout`]), per-scale-block
/// scales `dw` and offsets `mw`.
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
            // w = sc·(q − 32) in [−4096, 4064] as 128·hi + lo, hi in [−32, 32], lo in [−64, 63]
            let (hi, lo) = q.split_at_mut(q.len() / 2);
            let hi = hi.as_chunks_mut::<256>().0;
            let lo = lo.as_chunks_mut::<256>().0;
            for (((blk, hi), lo), dw) in src.chunks_exact(bs).zip(hi).zip(lo).zip(dw) {
                *dw = f16_at(blk, 208);
                imp::split_q6_k(blk.try_into().expect("210-byte block"), hi, lo);
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
            for j in 0..T.min(n.saturating_sub(tt * T)) {
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

/// One task's scratch: its weight rows unpacked, and the C tiles.
#[derive(Default)]
struct Rows {
    /// The task's row tiles in B-tile order (see [`Tiles`]).
    tiles: Tiles,
    /// 16 unpacked rows (`[row][plane][cols]`) and one row's per-scale-block values.
    row: Vec<i8>,
    row_dw: Vec<f32>,
    row_mw: Vec<f32>,
    /// The integer tiles of two groups of four blocks (16 tokens × 16 rows of i32 each).
    c: Vec<i32>,
}

/// Weight row tiles (16 rows each) in the layout the tile products read.
#[derive(Default)]
struct Tiles {
    /// `[row tile][chunk of len][plane][len/4][16 rows][4]` (the "VNNI" layout `TDPBSSD`
    /// reads).
    b: Vec<i8>,
    /// `[row tile][scale block][16 rows]`; `mw` is empty for types without offsets.
    dw: Vec<f32>,
    mw: Vec<f32>,
}

thread_local! {
    static ROWS: RefCell<Rows> = RefCell::new(Rows::default());
}

/// A pointer to the output that tasks write disjoint columns of.
struct Out(*mut f32);
// SAFETY: every task writes only the columns of its own rows (see `matmul`).
unsafe impl Sync for Out {}

/// Bytes of one row tile's B values and scale slots for `ty` with `cols` values per row.
fn tile_sizes(ty: GgmlType, cols: usize) -> (usize, usize) {
    let lay = layout(ty);
    (lay.planes * cols * T, cols / lay.len / lay.per_scale * T)
}

/// Unpacks weight rows `r0 .. r0 + nr` of `w` (`ty`, `cols` values each) into `tiles` (room
/// for `nr.div_ceil(16)` row tiles); rows past `nr` in the last tile get zero weights and
/// scales. `row`, `row_dw`, `row_mw` are scratch.
#[allow(clippy::too_many_arguments)]
fn unpack_tiles(
    ty: GgmlType,
    cols: usize,
    w: &[u8],
    r0: usize,
    nr: usize,
    tiles: (&mut [i8], &mut [f32], &mut [f32]),
    row: &mut Vec<i8>,
    row_dw: &mut Vec<f32>,
    row_mw: &mut Vec<f32>,
) {
    let lay = layout(ty);
    let len = lay.len;
    let scales = cols / len / lay.per_scale;
    let rb = ty.row_bytes(cols as u64).expect("whole blocks") as usize;
    let (tile_b, tile_s) = tile_sizes(ty, cols);
    let (b, dw, mw) = tiles;
    let offsets = !mw.is_empty();
    let rts = nr.div_ceil(T);
    let pc = lay.planes * cols;
    row.resize(T * pc, 0);
    row_dw.resize(scales, 0.0);
    row_mw.resize(scales, 0.0);
    if !nr.is_multiple_of(T) {
        dw[(rts - 1) * tile_s..rts * tile_s].fill(0.0);
        if offsets {
            mw[(rts - 1) * tile_s..rts * tile_s].fill(0.0);
        }
    }
    for rt in 0..rts {
        let here = T.min(nr - rt * T);
        for j in 0..here {
            let r = r0 + rt * T + j;
            let y = &mut row[j * pc..(j + 1) * pc];
            unpack_row(ty, &w[r * rb..(r + 1) * rb], y, row_dw, row_mw);
            for k in 0..scales {
                dw[rt * tile_s + k * T + j] = row_dw[k];
                if offsets {
                    mw[rt * tile_s + k * T + j] = row_mw[k];
                }
            }
        }
        row[here * pc..].fill(0);
        // B tiles: 4-value group `p4` of a chunk of row `j` goes to tile row `p4`, slot `j`;
        // the chunks' planes are consecutive, so group `g` of the row's planes lands in tile
        // row `g` for one plane, or below for Q6_K's two
        let bq = b[rt * tile_b..(rt + 1) * tile_b].as_chunks_mut::<4>().0;
        let rq = row.as_chunks::<4>().0;
        let (groups, per) = (len / 4, cols / 4);
        for (g, line) in bq.chunks_exact_mut(T).enumerate() {
            // line g = chunk blk, plane pl, group p4
            let (blk, pl, p4) = (g / groups / lay.planes, g / groups % lay.planes, g % groups);
            let at = pl * per + blk * groups + p4;
            for (j, v) in line.iter_mut().enumerate() {
                *v = rq[j * pc / 4 + at];
            }
        }
    }
}

/// The tile products of every token tile of `packed` against row tiles `tiles` (weight rows
/// `r0 .. r0 + nr`), written to `o` (rows `out_stride` apart). `c` is scratch.
#[allow(clippy::too_many_arguments)]
fn row_tile_products(
    ty: GgmlType,
    cols: usize,
    packed: &Packed,
    n: usize,
    tiles: (&[i8], &[f32], &[f32]),
    r0: usize,
    nr: usize,
    o: &Out,
    out_stride: usize,
    c: &mut Vec<i32>,
) {
    let lay = layout(ty);
    let (tile_b, tile_s) = tile_sizes(ty, cols);
    let (b, dw, mw) = tiles;
    let rts = nr.div_ceil(T);
    c.resize(8 * T * T + 16, 0);
    // 64-byte aligned room for two groups of four C tiles
    let skip = c.as_ptr().align_offset(64);
    let c = &mut c[skip..skip + 8 * T * T];
    imp::with_tiles(lay, || {
        let mut tt = 0;
        while tt < packed.tiles {
            // the type's token tiles per pass, or what is left
            let k = lay.tokens.min(packed.tiles - tt);
            let toks = (k * T).min(n - tt * T);
            for rt in 0..rts {
                let cols_here = T.min(nr - rt * T);
                // SAFETY: token rows tt·16 .. tt·16 + toks ≤ n and columns
                // r0 + rt·16 .. + cols_here ≤ rows ≤ out_stride lie inside `out`
                // (the caller asserted); this task alone writes columns r0..r0 + nr.
                let dst = unsafe { o.0.add(tt * T * out_stride + r0 + rt * T) };
                imp::tile_product(
                    packed,
                    tt,
                    k,
                    &b[rt * tile_b..(rt + 1) * tile_b],
                    &dw[rt * tile_s..(rt + 1) * tile_s],
                    (!mw.is_empty()).then(|| &mw[rt * tile_s..(rt + 1) * tile_s]),
                    lay,
                    c,
                    dst,
                    out_stride,
                    toks,
                    cols_here,
                );
            }
            tt += k;
        }
    });
}

/// Checks a product's sizes; returns the activations packed into A tiles, or `None` when there
/// is nothing to compute.
fn check_and_pack(
    ty: GgmlType,
    cols: usize,
    rows: usize,
    act: &[u8],
    n: usize,
    out: &[f32],
    out_stride: usize,
) -> Option<Packed> {
    assert!(available(), "int8 AMX products are not available here");
    assert!(supports(ty), "{ty}: no int8 AMX product");
    let vt = crate::reference::vec_dot_type(ty);
    assert_eq!(
        act.len(),
        n * vt.row_bytes(cols as u64).expect("whole blocks") as usize,
        "activation rows"
    );
    assert!(n == 0 || (out_stride >= rows && out.len() >= (n - 1) * out_stride + rows));
    if n == 0 || rows == 0 {
        return None;
    }
    let lay = layout(ty);
    Some(pack_activations(vt, act, n, cols, lay.len))
}

/// `out[t·out_stride + r] = Σ_c w[r][c]·x[t][c]` for `t < n`, `r < rows`, where `w` holds
/// `rows` rows of `cols` values of `ty` and `act` the `n` activation rows quantized to
/// [`crate::reference::vec_dot_type`]`(ty)` as llama.cpp quantizes them. The weights are
/// unpacked into tiles on the way, 64 rows per task; [`WeightTiles`] keeps them unpacked
/// instead, for products that run many times on few tokens.
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
    let rb = ty.row_bytes(cols as u64).expect("whole blocks") as usize;
    assert_eq!(w.len(), rb * rows, "{ty}: weight rows");
    let Some(packed) = check_and_pack(ty, cols, rows, act, n, out, out_stride) else {
        return;
    };
    let (tile_b, tile_s) = tile_sizes(ty, cols);
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
                tiles,
                row,
                row_dw,
                row_mw,
                c,
            } = &mut *buf;
            tiles.b.resize(rts * tile_b, 0);
            tiles.dw.resize(rts * tile_s, 0.0);
            tiles.mw.resize(if offsets { rts * tile_s } else { 0 }, 0.0);
            let t = (&mut tiles.b[..], &mut tiles.dw[..], &mut tiles.mw[..]);
            unpack_tiles(ty, cols, w, r0, nr, t, row, row_dw, row_mw);
            let t = (&tiles.b[..], &tiles.dw[..], &tiles.mw[..]);
            row_tile_products(ty, cols, &packed, n, t, r0, nr, o, out_stride, c);
        });
    });
}

/// A weight matrix unpacked once into the tiles [`matmul`] unpacks on every call: about one
/// byte per weight (two for Q6_K) plus 4 (8 with offsets) per scale block of 32 (256 for
/// Q6_K). Products on it skip the unpacking, which dominates at a few tokens (decode of many
/// sequences together) and costs a few percent of a long prompt's.
pub struct WeightTiles {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    tiles: Tiles,
}

impl std::fmt::Debug for WeightTiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WeightTiles({} {}x{}, {} bytes)",
            self.ty,
            self.rows,
            self.cols,
            self.bytes()
        )
    }
}

impl WeightTiles {
    /// Unpacks `rows` rows of `cols` values of `ty` (in parallel on rayon's pool).
    ///
    /// # Panics
    /// If [`available`] or [`supports`] is false, or `w` does not hold the rows.
    pub fn new(ty: GgmlType, cols: usize, w: &[u8], rows: usize) -> WeightTiles {
        // (Q6_K's unpacking is AVX-512BW code, which AMX CPUs have)
        assert!(available(), "int8 AMX products are not available here");
        assert!(supports(ty), "{ty}: no int8 AMX product");
        let rb = ty.row_bytes(cols as u64).expect("whole blocks") as usize;
        assert_eq!(w.len(), rb * rows, "{ty}: weight rows");
        let (tile_b, tile_s) = tile_sizes(ty, cols);
        let rts = rows.div_ceil(T);
        let offsets = has_offset(ty);
        let mut tiles = Tiles {
            b: vec![0; rts * tile_b],
            dw: vec![0.0; rts * tile_s],
            mw: vec![0.0; if offsets { rts * tile_s } else { 0 }],
        };
        let per = GROUP / T;
        let mut mw_chunks: Vec<&mut [f32]> = if offsets {
            tiles.mw.chunks_mut(per * tile_s).collect()
        } else {
            (0..rows.div_ceil(GROUP)).map(|_| &mut [][..]).collect()
        };
        tiles
            .b
            .par_chunks_mut(per * tile_b)
            .zip(tiles.dw.par_chunks_mut(per * tile_s))
            .zip(mw_chunks.par_iter_mut())
            .enumerate()
            .for_each(|(g, ((b, dw), mw))| {
                let r0 = g * GROUP;
                let nr = GROUP.min(rows - r0);
                let (mut row, mut row_dw, mut row_mw) = (Vec::new(), Vec::new(), Vec::new());
                let t = (b, dw, &mut **mw);
                unpack_tiles(ty, cols, w, r0, nr, t, &mut row, &mut row_dw, &mut row_mw);
            });
        WeightTiles {
            ty,
            rows,
            cols,
            tiles,
        }
    }

    /// The memory the tiles take.
    pub fn bytes(&self) -> usize {
        self.tiles.b.len() + 4 * (self.tiles.dw.len() + self.tiles.mw.len())
    }

    /// As [`matmul`] on the weights these tiles were made from.
    ///
    /// # Panics
    /// If [`available`] is false, or the sizes do not fit.
    pub fn matmul(&self, act: &[u8], n: usize, out: &mut [f32], out_stride: usize) {
        let (ty, cols, rows) = (self.ty, self.cols, self.rows);
        let Some(packed) = check_and_pack(ty, cols, rows, act, n, out, out_stride) else {
            return;
        };
        let (tile_b, tile_s) = tile_sizes(ty, cols);
        let per = GROUP / T;
        let o = Out(out.as_mut_ptr());
        let o = &o;
        (0..rows.div_ceil(GROUP)).into_par_iter().for_each(|g| {
            let r0 = g * GROUP;
            let nr = GROUP.min(rows - r0);
            let rts = nr.div_ceil(T);
            let (t0, t1) = (g * per, g * per + rts);
            let mw = &self.tiles.mw;
            let t = (
                &self.tiles.b[t0 * tile_b..t1 * tile_b],
                &self.tiles.dw[t0 * tile_s..t1 * tile_s],
                if mw.is_empty() {
                    &mw[..]
                } else {
                    &mw[t0 * tile_s..t1 * tile_s]
                },
            );
            ROWS.with(|buf| {
                let c = &mut buf.borrow_mut().c;
                row_tile_products(ty, cols, &packed, n, t, r0, nr, o, out_stride, c);
            });
        });
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::{Layout, Packed, T};
    use std::arch::asm;
    use std::arch::x86_64::*;

    /// One Q6_K super-block's values `sc_j·(q − 32)` as `128·hi + lo` (see [`super::Layout`]).
    pub(super) fn split_q6_k(blk: &[u8; 210], hi: &mut [i8; 256], lo: &mut [i8; 256]) {
        // SAFETY: runs only on the AMX path (`available()`), and every AMX CPU has AVX-512BW
        // (`amx::available` requires it); all accesses are within the arrays.
        unsafe { split_q6_k_avx512(blk, hi, lo) }
    }

    #[target_feature(enable = "avx512bw")]
    unsafe fn split_q6_k_avx512(blk: &[u8; 210], hi: &mut [i8; 256], lo: &mut [i8; 256]) {
        let m4 = _mm256_set1_epi8(15);
        let m2 = _mm256_set1_epi8(3 << 4);
        let r64 = _mm512_set1_epi16(64);
        let p = blk.as_ptr();
        for n in 0..2 {
            // SAFETY: offsets below 192 + 16 ≤ 210 and 128·n + 128 ≤ 256.
            unsafe {
                let ql0 = _mm256_loadu_si256(p.add(64 * n) as *const __m256i);
                let ql1 = _mm256_loadu_si256(p.add(64 * n + 32) as *const __m256i);
                let h = _mm256_loadu_si256(p.add(128 + 32 * n) as *const __m256i);
                // levels of values 128n + 32m .. + 32, as llama.cpp's dequantize_row_q6_K
                let levels = [
                    _mm256_or_si256(
                        _mm256_and_si256(ql0, m4),
                        _mm256_and_si256(_mm256_slli_epi16::<4>(h), m2),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(ql1, m4),
                        _mm256_and_si256(_mm256_slli_epi16::<2>(h), m2),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                        _mm256_and_si256(h, m2),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(h), m2),
                    ),
                ];
                for (m, lv) in levels.into_iter().enumerate() {
                    let at = 128 * n + 32 * m;
                    let q = _mm512_sub_epi16(_mm512_cvtepu8_epi16(lv), _mm512_set1_epi16(32));
                    // scales of the two 16-value halves
                    let (s0, s1) = (blk[192 + at / 16] as i8, blk[193 + at / 16] as i8);
                    let sc = _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(_mm256_set1_epi16(s0 as i16)),
                        _mm256_set1_epi16(s1 as i16),
                    );
                    let w = _mm512_mullo_epi16(sc, q);
                    let h = _mm512_srai_epi16::<7>(_mm512_add_epi16(w, r64));
                    let l = _mm512_sub_epi16(w, _mm512_slli_epi16::<7>(h));
                    _mm256_storeu_si256(
                        hi.as_mut_ptr().add(at) as *mut __m256i,
                        _mm512_cvtepi16_epi8(h),
                    );
                    _mm256_storeu_si256(
                        lo.as_mut_ptr().add(at) as *mut __m256i,
                        _mm512_cvtepi16_epi8(l),
                    );
                }
            }
        }
    }

    /// Runs `f` with this module's tiles configured for `lay`. Blocks of 32: tmm0/tmm6 A
    /// (16 tokens × 32 bytes), tmm1/tmm7 B (8 rows × 64 bytes), tmm2-5 C. Q6_K's split planes:
    /// tmm0/tmm7 A, tmm1/tmm2 the two B planes, tmm3-6 C, all 16 rows × 64 bytes.
    pub(super) fn with_tiles(lay: Layout, f: impl FnOnce()) {
        // callers run only where `available()` holds (AMX-TILE/INT8, tile state granted)
        let (a, b) = (lay.len as u16, (lay.len / 4) as u8);
        let (colsb, rows) = if lay.planes == 1 {
            (
                [a, 64, 64, 64, 64, 64, a, 64, 0, 0, 0, 0, 0, 0, 0, 0],
                [16, b, 16, 16, 16, 16, 16, b, 0, 0, 0, 0, 0, 0, 0, 0],
            )
        } else {
            debug_assert_eq!(lay.len, 64);
            (
                [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
                [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
            )
        };
        crate::amx::with_config(colsb, rows, f)
    }

    /// Token tiles `tt .. tt + k` of `p` (`k` ≤ `lay.tokens`) times one row tile (`b`, `dw`,
    /// `mw` as in `Tiles`): writes `toks` output rows of `cols` values at `dst`, `stride`
    /// apart. `c` is 64-byte aligned room for eight C tiles.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tile_product(
        p: &Packed,
        tt: usize,
        k: usize,
        b: &[i8],
        dw: &[f32],
        mw: Option<&[f32]>,
        lay: Layout,
        c: &mut [i32],
        dst: *mut f32,
        stride: usize,
        toks: usize,
        cols: usize,
    ) {
        let len = lay.len;
        let blocks = dw.len() / T * lay.per_scale;
        assert!(b.len() == blocks * lay.planes * len * T);
        assert!(mw.is_none_or(|m| m.len() == dw.len()));
        let end = tt + k;
        assert!((1..=lay.tokens).contains(&k));
        assert!(end <= p.tiles && p.a.len() >= end * blocks * len * T);
        assert!(p.da.len() >= end * blocks * T && p.sa.len() == p.da.len());
        assert!(c.len() == 8 * T * T && c.as_ptr().align_offset(64) == 0);
        assert!(toks <= k * T && cols <= T);
        // SAFETY: with_tiles configured the tiles for `lay` (callers run inside it); AVX-512F
        // is part of every AMX CPU (`amx::available` requires it); the asserts bound every
        // access but `dst`, which the caller vouches for.
        unsafe {
            match (lay.planes, mw) {
                (2, None) if len == 64 && lay.per_scale == 4 && k == 2 => {
                    tile_split_avx512::<true>(p, tt, b, dw, c, dst, stride, toks, cols)
                }
                (2, None) if len == 64 && lay.per_scale == 4 && k == 1 => {
                    tile_split_avx512::<false>(p, tt, b, dw, c, dst, stride, toks, cols)
                }
                (1, Some(m)) if lay.per_scale == 1 && k == 1 => {
                    tile_avx512::<true>(p, tt, b, dw, m, len, c, dst, stride, toks, cols)
                }
                (1, None) if lay.per_scale == 1 && k == 1 => {
                    tile_avx512::<false>(p, tt, b, dw, dw, len, c, dst, stride, toks, cols)
                }
                _ => unreachable!("no tile product for this layout"),
            }
        }
    }

    /// Blocks ahead of the ones being multiplied whose B tiles are fetched.
    const AHEAD: usize = 8;

    /// Fetches the cache lines of `len` bytes at `p` (a hint: any address may be given).
    #[inline(always)]
    unsafe fn prefetch(p: *const i8, len: usize) {
        for off in (0..len).step_by(64) {
            // SAFETY: a prefetch never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off)) };
        }
    }

    /// Stores the C tiles tmm2-5 (16 × 16 i32 each) at `cp`, one after another.
    ///
    /// # Safety
    /// Tiles configured by `with_tiles`; `cp` points at 4 KiB of writable memory.
    #[inline(always)]
    unsafe fn store_c4(cp: *mut u8) {
        // SAFETY: the caller's contract.
        unsafe {
            asm!(
                "tilestored [{c} + {bs}*1], tmm2",
                "tilestored [{c} + {bs}*1 + 1024], tmm3",
                "tilestored [{c} + {bs}*1 + 2048], tmm4",
                "tilestored [{c} + {bs}*1 + 3072], tmm5",
                c = in(reg) cp,
                bs = in(reg) 64usize,
                options(nostack),
            );
        }
    }

    /// [`tile_avx512`] for Q6_K's two planes (see [`Layout`]), two token tiles at a time: per
    /// super-block, four K = 64 products per plane and token tile accumulate `Σ hi·a` and
    /// `Σ lo·a` in C tiles; the exact `128·Σhi·a + Σlo·a` is then scaled once by `d·d_a`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_split_avx512<const TWO: bool>(
        p: &Packed,
        tt: usize,
        b: &[i8],
        dw: &[f32],
        c: &mut [i32],
        dst: *mut f32,
        stride: usize,
        toks: usize,
        cols: usize,
    ) {
        const TILE: usize = 64 * T; // bytes per A or B tile
        let sbs = dw.len() / T;
        let mut acc = [[_mm512_setzero_ps(); T]; 2];
        let pairs = if TWO { 2 } else { 1 };
        // SAFETY (whole body): bounds asserted by `tile_product`.
        unsafe {
            let a0 = p.a.as_ptr().add(tt * 4 * sbs * TILE);
            // (the second token tile's, used only when TWO)
            let a1 = a0.wrapping_add(4 * sbs * TILE);
            let da = [
                p.da.as_ptr().add(tt * 4 * sbs * T),
                p.da.as_ptr().wrapping_add((tt + 1) * 4 * sbs * T),
            ];
            // Super-block `sb`: tmm0/tmm1 the two token tiles' A, tmm6/tmm7 the B planes,
            // tmm2/tmm3 the first token tile's hi/lo sums, tmm4/tmm5 the second's.
            let launch = |sb: usize| {
                let bb = b.as_ptr().add(8 * sb * TILE);
                for i in 0..4 {
                    if !TWO {
                        asm!(
                            "tileloadd tmm6, [{b} + {s}*1]",
                            "tileloadd tmm0, [{a0} + {s}*1]",
                            "tdpbssd tmm2, tmm0, tmm6",
                            "tileloadd tmm7, [{b} + {s}*1 + 1024]",
                            "tdpbssd tmm3, tmm0, tmm7",
                            a0 = in(reg) a0.add((4 * sb + i) * TILE),
                            b = in(reg) bb.add(2 * i * TILE),
                            s = in(reg) 64usize,
                            out("tmm0") _, out("tmm6") _, out("tmm7") _,
                            options(nostack),
                        );
                        continue;
                    }
                    asm!(
                        "tileloadd tmm6, [{b} + {s}*1]",
                        "tileloadd tmm0, [{a0} + {s}*1]",
                        "tdpbssd tmm2, tmm0, tmm6",
                        "tileloadd tmm7, [{b} + {s}*1 + 1024]",
                        "tdpbssd tmm3, tmm0, tmm7",
                        "tileloadd tmm1, [{a1} + {s}*1]",
                        "tdpbssd tmm4, tmm1, tmm6",
                        "tdpbssd tmm5, tmm1, tmm7",
                        a0 = in(reg) a0.add((4 * sb + i) * TILE),
                        a1 = in(reg) a1.add((4 * sb + i) * TILE),
                        b = in(reg) bb.add(2 * i * TILE),
                        s = in(reg) 64usize,
                        out("tmm0") _, out("tmm1") _, out("tmm6") _, out("tmm7") _,
                        options(nostack),
                    );
                }
            };
            let zero = || {
                asm!(
                    "tilezero tmm2",
                    "tilezero tmm3",
                    "tilezero tmm4",
                    "tilezero tmm5",
                    out("tmm2") _, out("tmm3") _, out("tmm4") _, out("tmm5") _,
                    options(nostack),
                );
            };
            let mut post = |ct: *const i32, sb: usize| {
                let dwv = _mm512_loadu_ps(dw.as_ptr().add(sb * T));
                for (k, (acc, da)) in acc.iter_mut().zip(da).take(pairs).enumerate() {
                    let ct = ct.add(2 * k * T * T);
                    for (t, acc) in acc.iter_mut().enumerate() {
                        let hi = _mm512_load_si512(ct.add(t * T) as *const _);
                        let lo = _mm512_load_si512(ct.add(T * T + t * T) as *const _);
                        let ci =
                            _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32::<7>(hi), lo));
                        let s = _mm512_mul_ps(dwv, _mm512_set1_ps(*da.add(4 * sb * T + t)));
                        *acc = _mm512_fmadd_ps(ci, s, *acc);
                    }
                }
            };
            // Software-pipelined as in `tile_avx512`: the tile unit works on super-block
            // sb + 1 while the vector units scale sb's stored sums.
            if sbs > 0 {
                zero();
                launch(0);
            }
            for sb in 0..sbs {
                let cp = c.as_mut_ptr().add((sb % 2) * 4 * T * T) as *mut u8;
                store_c4(cp);
                prefetch(
                    b.as_ptr().wrapping_add(8 * (sb + AHEAD / 8) * TILE),
                    8 * TILE,
                );
                if sb + 1 < sbs {
                    zero();
                    launch(sb + 1);
                }
                post(cp as *const i32, sb);
            }
            let mask: __mmask16 = if cols == T { !0 } else { (1u16 << cols) - 1 };
            for t in 0..toks {
                _mm512_mask_storeu_ps(dst.add(t * stride), mask, acc[t / T][t % T]);
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
                store_c4(cp);
                // With one token tile the B tiles are a stream from memory: fetch ahead.
                prefetch(b.as_ptr().wrapping_add((4 * g + AHEAD) * tile), 4 * tile);
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
    use super::{Layout, Packed};
    pub(super) fn split_q6_k(_blk: &[u8; 210], _hi: &mut [i8; 256], _lo: &mut [i8; 256]) {
        unreachable!("int8 AMX products are only dispatched on x86-64")
    }
    pub(super) fn with_tiles(_lay: Layout, _f: impl FnOnce()) {
        unreachable!("int8 AMX products are only dispatched on x86-64")
    }
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tile_product(
        _p: &Packed,
        _tt: usize,
        _k: usize,
        _b: &[i8],
        _dw: &[f32],
        _mw: Option<&[f32]>,
        _lay: Layout,
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
            (G::Q6_K, 20, 768, 18),
            (G::Q6_K, 33, 1280, 40),
            (G::Q6_K, 16, 256, 7),
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
            // weights unpacked once give the same bits
            let tiles = WeightTiles::new(ty, cols, &w, rows);
            let mut again = vec![f32::NAN; n * stride];
            tiles.matmul(&act, n, &mut again, stride);
            for (i, (a, b)) in out.iter().zip(&again).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits(),
                    "{ty} at {i}: {a} vs {b} (tiles)"
                );
            }
        }
    }
}
