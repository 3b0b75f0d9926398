//! x86-64 row kernels for [`super::dot_rows`]: AVX2+FMA+F16C, and the same code with AVX-512
//! VNNI's `vpdpbusd` (on 256-bit vectors) for the 32-element block types.
//!
//! Every kernel forms, per block, the exact integer sum the reference forms, then adds
//! `scale × sum` into eight f32 lanes with fused multiply-adds; one horizontal sum ends the row.
//!
//! Integer tricks, and why they are exact:
//! - signed weights × signed activations (`dot_s8`): `|w|` × `sign(a, w)`, llama.cpp's trick,
//!   exact while no activation is -128 (our Q8_0/Q8_1/Q8_K quantizers stay within ±127);
//! - unsigned weights × signed activations (`dot_u8`): `maddubs` pairs stay below 2¹⁵ because the
//!   unsigned values are at most 63 (2·63·128 < 32767); `vpdpbusd` does not saturate at all;
//! - Q6_K's 6-bit values are used unsigned and `32 × Σ scale·Σa` (from Q8_K's block sums) is
//!   taken off the integer sum, which needs no assumption about the activations at all.

use super::Act;
use crate::GgmlType;
use std::arch::x86_64::*;

/// # Safety
/// The CPU must have AVX2, FMA and F16C, and with `vnni` also AVX-512 F/BW/VL/VNNI. The buffers
/// must have the sizes [`super::dot_rows`] checks.
pub unsafe fn dot_rows(
    vnni: bool,
    ty: GgmlType,
    cols: usize,
    w: &[u8],
    act: Act<'_>,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if vnni {
            rows_avx512(ty, cols, w, act, out)
        } else {
            rows_avx2(ty, cols, w, act, out)
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2(ty: GgmlType, cols: usize, w: &[u8], act: Act<'_>, out: &mut [f32]) {
    // SAFETY: the features are enabled; sizes are the caller's contract.
    unsafe { rows::<false>(ty, cols, w, act, out) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_avx512(ty: GgmlType, cols: usize, w: &[u8], act: Act<'_>, out: &mut [f32]) {
    // SAFETY: the features are enabled; sizes are the caller's contract.
    unsafe { rows::<true>(ty, cols, w, act, out) }
}

#[inline(always)]
unsafe fn rows<const VNNI: bool>(
    ty: GgmlType,
    cols: usize,
    w: &[u8],
    act: Act<'_>,
    out: &mut [f32],
) {
    use GgmlType as T;
    // SAFETY (all arms): `dot_rows` checked that `w` holds `out.len()` rows of `cols` elements
    // of `ty` and that the activation row has the bytes (or floats) of `cols` elements; every
    // kernel reads only inside those.
    unsafe {
        match (ty, act) {
            (T::F16, Act::F32(a)) => float_rows::<2>(cols, w, a, out),
            (T::BF16, Act::F32(a)) => float_rows::<1>(cols, w, a, out),
            (T::F32, Act::F32(a)) => float_rows::<4>(cols, w, a, out),
            (T::Q4_0, Act::Quant(a)) => legacy_rows::<VNNI, Q4_0>(cols, w, a, out),
            (T::Q4_1, Act::Quant(a)) => legacy_rows::<VNNI, Q4_1>(cols, w, a, out),
            (T::Q5_0, Act::Quant(a)) => legacy_rows::<VNNI, Q5_0>(cols, w, a, out),
            (T::Q5_1, Act::Quant(a)) => legacy_rows::<VNNI, Q5_1>(cols, w, a, out),
            (T::Q8_0, Act::Quant(a)) => legacy_rows::<VNNI, Q8_0>(cols, w, a, out),
            (T::Q4_K, Act::Quant(a)) => q45_k_rows::<false>(cols, w, a, out),
            (T::Q5_K, Act::Quant(a)) => q45_k_rows::<true>(cols, w, a, out),
            (T::Q6_K, Act::Quant(a)) => q6_k_rows(cols, w, a, out),
            (T::Q2_K, Act::Quant(a)) => q2_k_rows(cols, w, a, out),
            (T::Q3_K, Act::Quant(a)) => q3_k_rows(cols, w, a, out),
            _ => unreachable!("{ty}: no x86 kernel (has_simd)"),
        }
    }
}

#[inline(always)]
pub(crate) unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller points at two readable bytes.
    let bits = unsafe { (p as *const u16).read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Prefetch the `len` bytes starting `PREFETCH` bytes after `p` into L2 (a hint: never faults).
/// L2 rather than L1: an L1 prefetch holds one of the core's few line-fill buffers until the
/// line arrives, which capped one thread near 10 GB/s; through L2, synth-1b Q8_0 decode went
/// from 8.8 to 10.2 tokens/s on one thread and 16.1 to 19.3 on two (tg32, measured here).
#[inline(always)]
pub(crate) unsafe fn prefetch_ahead(p: *const u8, len: usize) {
    let ahead = p.wrapping_add(PREFETCH);
    for l in 0..len.div_ceil(64) {
        _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * l) as *const i8);
    }
}

#[inline(always)]
pub(crate) unsafe fn hsum(v: __m256) -> f32 {
    let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_movehdup_ps(h));
    _mm_cvtss_f32(h)
}

/// The sum of eight i32 lanes.
#[inline(always)]
pub(crate) unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    _mm_cvtsi128_si32(s)
}

#[inline(always)]
pub(crate) unsafe fn load32(p: *const u8) -> __m256i {
    // SAFETY: the caller points at 32 readable bytes.
    unsafe { _mm256_loadu_si256(p as *const __m256i) }
}

/// Unsigned bytes (at most 63, or any with VNNI) times signed bytes: eight i32 sums of four.
#[inline(always)]
pub(crate) unsafe fn dot_u8<const VNNI: bool>(u: __m256i, a: __m256i) -> __m256i {
    if VNNI {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, a)
    } else {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), _mm256_set1_epi16(1))
    }
}

/// Signed bytes times signed bytes (no activation -128): eight i32 sums of four.
#[inline(always)]
pub(crate) unsafe fn dot_s8<const VNNI: bool>(w: __m256i, a: __m256i) -> __m256i {
    // SAFETY: same features as the caller.
    unsafe { dot_u8::<VNNI>(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w)) }
}

/// The 4-bit halves of 16 bytes as 32 bytes: low nibbles (elements 0..16), then high (16..32).
#[inline(always)]
pub(crate) unsafe fn nibbles16(p: *const u8) -> __m256i {
    // SAFETY: the caller points at 16 readable bytes.
    let q = unsafe { _mm_loadu_si128(p as *const __m128i) };
    let m4 = _mm_set1_epi8(0x0F);
    _mm256_set_m128i(
        _mm_and_si128(_mm_srli_epi16(q, 4), m4),
        _mm_and_si128(q, m4),
    )
}

/// Byte `k` is 0xFF where bit `k` of `x` is set, else 0.
#[inline(always)]
pub(crate) unsafe fn bytes_from_bits(x: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

#[inline(always)]
pub(crate) unsafe fn read_u32(p: *const u8) -> u32 {
    // SAFETY: the caller points at four readable bytes.
    unsafe { (p as *const u32).read_unaligned() }
}

/// f16 at `p` converted and broadcast to eight lanes.
#[inline(always)]
pub(crate) unsafe fn f16_splat(p: *const u8) -> __m256 {
    // SAFETY: the caller points at two readable bytes.
    let bits = unsafe { (p as *const i16).read_unaligned() };
    _mm256_cvtph_ps(_mm_set1_epi16(bits))
}

/// Rows taken together by the 32-element kernels: they share each activation block's load and
/// scale, and their independent accumulators hide the fused multiply-add latency.
const ROWS: usize = 4;

/// How far ahead of the bytes being read the kernels prefetch. Without it the hardware prefetchers
/// leave the decode path at about 60% of the memory's bandwidth (measured on SmolLM2); 4 and
/// 12 KiB were slower than 8 (synth-1b and SmolLM2 Q8_0, Q4_K_M).
const PREFETCH: usize = 8192;

/// The 32-element block types, as the const parameter of [`legacy_rows`].
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q5_1: u8 = 3;
const Q8_0: u8 = 4;

/// Bytes per weight block and per activation block (Q8_0, or Q8_1 for the types with a min).
const fn block_bytes(kind: u8) -> (usize, usize) {
    match kind {
        Q4_0 => (18, 34),
        Q4_1 => (20, 36),
        Q5_0 => (22, 34),
        Q5_1 => (24, 36),
        _ => (34, 34),
    }
}

/// The i32 lanes of one weight block at `x` against the activation block at `y`.
#[inline(always)]
unsafe fn block_lanes<const VNNI: bool, const KIND: u8>(x: *const u8, y: *const u8) -> __m256i {
    // SAFETY: `x` and `y` point at whole blocks of the kind's sizes.
    unsafe {
        match KIND {
            Q4_0 => {
                let wv = _mm256_sub_epi8(nibbles16(x.add(2)), _mm256_set1_epi8(8));
                dot_s8::<VNNI>(wv, load32(y.add(2)))
            }
            Q4_1 => dot_u8::<VNNI>(nibbles16(x.add(4)), load32(y.add(4))),
            Q5_0 => {
                // (nibble | h << 4) - 16: the nibble itself where h = 1, nibble - 16 where h = 0
                let hb = bytes_from_bits(read_u32(x.add(2)));
                let wv = _mm256_or_si256(
                    nibbles16(x.add(6)),
                    _mm256_andnot_si256(hb, _mm256_set1_epi8(0xF0u8 as i8)),
                );
                dot_s8::<VNNI>(wv, load32(y.add(2)))
            }
            Q5_1 => {
                let hb = bytes_from_bits(read_u32(x.add(4)));
                let wv = _mm256_or_si256(
                    nibbles16(x.add(8)),
                    _mm256_and_si256(hb, _mm256_set1_epi8(0x10)),
                );
                dot_u8::<VNNI>(wv, load32(y.add(4)))
            }
            _ => dot_s8::<VNNI>(load32(x.add(2)), load32(y.add(2))),
        }
    }
}

/// Rows of a 32-element block type against Q8_0/Q8_1 activations: per block, the exact i32
/// lanes times `f16(x.d) · f16(y.d)` into eight f32 lanes; Q4_1/Q5_1 add `m · s` (weight min
/// times the activation block's `d · Σa`) outside the lanes.
#[inline(always)]
unsafe fn legacy_rows<const VNNI: bool, const KIND: u8>(
    cols: usize,
    w: &[u8],
    a: &[u8],
    out: &mut [f32],
) {
    let (wb, ab) = block_bytes(KIND);
    let has_min = KIND == Q4_1 || KIND == Q5_1;
    let nb = cols / 32;
    let mut groups = out.chunks_exact_mut(ROWS);
    let mut r0 = 0;
    for o in &mut groups {
        // SAFETY: rows r0..r0+ROWS and their blocks lie inside `w`, block b of the activations
        // inside `a`.
        unsafe {
            let rows: [*const u8; ROWS] =
                std::array::from_fn(|i| w.as_ptr().add((r0 + i) * nb * wb));
            let mut acc = [_mm256_setzero_ps(); ROWS];
            let mut more = [0f32; ROWS];
            for b in 0..nb {
                // the group's bytes are contiguous: fetch ahead of where the four rows read
                prefetch_ahead(rows[0].wrapping_add(b * ROWS * wb), ROWS * wb);
                let y = a.as_ptr().add(b * ab);
                let dy = f16_splat(y);
                for i in 0..ROWS {
                    let x = rows[i].add(b * wb);
                    let d = _mm256_mul_ps(f16_splat(x), dy);
                    let lanes = block_lanes::<VNNI, KIND>(x, y);
                    acc[i] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc[i]);
                    if has_min {
                        more[i] += f16_at(x.add(2)) * f16_at(y.add(2));
                    }
                }
            }
            for i in 0..ROWS {
                o[i] = hsum(acc[i]) + more[i];
            }
        }
        r0 += ROWS;
    }
    for o in groups.into_remainder() {
        // SAFETY: as above, one row.
        unsafe {
            let row = w.as_ptr().add(r0 * nb * wb);
            let mut acc = _mm256_setzero_ps();
            let mut more = 0f32;
            for b in 0..nb {
                let (x, y) = (row.add(b * wb), a.as_ptr().add(b * ab));
                prefetch_ahead(x, wb);
                let d = _mm256_mul_ps(f16_splat(x), f16_splat(y));
                let lanes = block_lanes::<VNNI, KIND>(x, y);
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc);
                if has_min {
                    more += f16_at(x.add(2)) * f16_at(y.add(2));
                }
            }
            *o = hsum(acc) + more;
        }
        r0 += 1;
    }
}

/// The signed or unsigned weight bytes of one block at `x` (the first half of
/// [`block_lanes`]), and where its activation bytes start.
#[inline(always)]
unsafe fn block_weights<const KIND: u8>(x: *const u8) -> __m256i {
    // SAFETY: `x` points at a whole block of the kind's size.
    unsafe {
        match KIND {
            Q4_0 => _mm256_sub_epi8(nibbles16(x.add(2)), _mm256_set1_epi8(8)),
            Q4_1 => nibbles16(x.add(4)),
            Q5_0 => {
                let hb = bytes_from_bits(read_u32(x.add(2)));
                _mm256_or_si256(
                    nibbles16(x.add(6)),
                    _mm256_andnot_si256(hb, _mm256_set1_epi8(0xF0u8 as i8)),
                )
            }
            Q5_1 => {
                let hb = bytes_from_bits(read_u32(x.add(4)));
                _mm256_or_si256(
                    nibbles16(x.add(8)),
                    _mm256_and_si256(hb, _mm256_set1_epi8(0x10)),
                )
            }
            _ => load32(x.add(2)),
        }
    }
}

/// The i32 lanes of weights `wv` (from [`block_weights`]) against the activation block at `y`:
/// together the same integers as [`block_lanes`].
#[inline(always)]
unsafe fn weights_lanes<const VNNI: bool, const KIND: u8>(wv: __m256i, y: *const u8) -> __m256i {
    // SAFETY: `y` points at a whole activation block.
    unsafe {
        match KIND {
            Q4_1 | Q5_1 => dot_u8::<VNNI>(wv, load32(y.add(4))),
            _ => dot_s8::<VNNI>(wv, load32(y.add(2))),
        }
    }
}

/// [`legacy_rows`] for `NT` activation rows at once (several sequences decoded together): each
/// weight block is read and unpacked once for all of them. For every (row, token) the float
/// operations are `legacy_rows`'s, in its order, so each result is bit-identical to that
/// token's alone.
#[inline(always)]
unsafe fn legacy_rows_multi<const VNNI: bool, const KIND: u8, const NT: usize>(
    cols: usize,
    w: &[u8],
    acts: [&[u8]; NT],
    outs: &mut [&mut [f32]; NT],
) {
    let (wb, _) = block_bytes(KIND);
    let nb = cols / 32;
    let rows = outs[0].len();
    let mut r0 = 0;
    while r0 + 2 <= rows {
        // SAFETY: rows r0, r0 + 1 lie inside `w`.
        let sums = unsafe {
            let p = w.as_ptr().add(r0 * nb * wb);
            multi_block_rows::<VNNI, KIND, NT, 2>(nb, [p, p.add(nb * wb)], &acts)
        };
        for (i, s) in sums.iter().enumerate() {
            for t in 0..NT {
                outs[t][r0 + i] = s[t];
            }
        }
        r0 += 2;
    }
    if r0 < rows {
        // SAFETY: row r0 lies inside `w`.
        let sums = unsafe {
            multi_block_rows::<VNNI, KIND, NT, 1>(nb, [w.as_ptr().add(r0 * nb * wb)], &acts)
        };
        for t in 0..NT {
            outs[t][r0] = sums[0][t];
        }
    }
}

/// `R` weight rows (starting at `rows`) against `NT` activation rows: the sums of
/// [`legacy_rows_multi`], all in registers.
#[inline(always)]
unsafe fn multi_block_rows<const VNNI: bool, const KIND: u8, const NT: usize, const R: usize>(
    nb: usize,
    rows: [*const u8; R],
    acts: &[&[u8]; NT],
) -> [[f32; NT]; R] {
    let (wb, ab) = block_bytes(KIND);
    let has_min = KIND == Q4_1 || KIND == Q5_1;
    let mut acc = [[_mm256_setzero_ps(); NT]; R];
    let mut more = [[0f32; NT]; R];
    // SAFETY: every row has `nb` blocks, every activation row `nb` blocks.
    unsafe {
        for b in 0..nb {
            // the rows' bytes are contiguous: fetch ahead of where they read
            prefetch_ahead(rows[0].wrapping_add(b * R * wb), R * wb);
            // (loops, not closures: closures do not get this function's target features)
            let mut ys = [std::ptr::null::<u8>(); NT];
            let mut dys = [_mm256_setzero_ps(); NT];
            for t in 0..NT {
                ys[t] = acts[t].as_ptr().add(b * ab);
                dys[t] = f16_splat(ys[t]);
            }
            for i in 0..R {
                let x = rows[i].add(b * wb);
                let wv = block_weights::<KIND>(x);
                let dx = f16_splat(x);
                for t in 0..NT {
                    let d = _mm256_mul_ps(dx, dys[t]);
                    let lanes = weights_lanes::<VNNI, KIND>(wv, ys[t]);
                    acc[i][t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc[i][t]);
                    if has_min {
                        more[i][t] += f16_at(x.add(2)) * f16_at(ys[t].add(2));
                    }
                }
            }
        }
        let mut sums = [[0f32; NT]; R];
        for i in 0..R {
            for t in 0..NT {
                sums[i][t] = hsum(acc[i][t]) + more[i][t];
            }
        }
        sums
    }
}

/// # Safety
/// As [`dot_rows`]; every activation row has the bytes of `cols` elements of the vec-dot type
/// and every output the same length. Returns false (doing nothing) where `ty` has no
/// several-token kernel; the caller then runs [`dot_rows`] per token.
pub unsafe fn dot_rows_multi(
    vnni: bool,
    ty: GgmlType,
    cols: usize,
    w: &[u8],
    acts: &[&[u8]],
    outs: &mut [&mut [f32]],
) -> bool {
    // SAFETY: forwarded from the caller.
    unsafe {
        if vnni {
            multi_avx512(ty, cols, w, acts, outs)
        } else {
            multi_avx2(ty, cols, w, acts, outs)
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn multi_avx2(
    ty: GgmlType,
    cols: usize,
    w: &[u8],
    a: &[&[u8]],
    o: &mut [&mut [f32]],
) -> bool {
    // SAFETY: the features are enabled; sizes are the caller's contract.
    unsafe { multi::<false>(ty, cols, w, a, o) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn multi_avx512(
    ty: GgmlType,
    cols: usize,
    w: &[u8],
    a: &[&[u8]],
    o: &mut [&mut [f32]],
) -> bool {
    // SAFETY: the features are enabled; sizes are the caller's contract.
    unsafe { multi::<true>(ty, cols, w, a, o) }
}

/// Tokens in groups of up to eight (AVX-512) or four (AVX2) through [`legacy_rows_multi`],
/// or the K-quants' `*_rows_multi`; false (doing nothing) for types without one.
#[inline(always)]
unsafe fn multi<const VNNI: bool>(
    ty: GgmlType,
    cols: usize,
    w: &[u8],
    acts: &[&[u8]],
    outs: &mut [&mut [f32]],
) -> bool {
    // `$kernel::<$g.., NT>` on each group of tokens; a lone token takes `$one`
    macro_rules! groups {
        ($one:expr, $kernel:ident [$($g:tt),*]) => {{
            // AVX-512 has the registers for eight tokens' sums of two rows, AVX2 for four
            let most = if VNNI { 8 } else { 4 };
            for (a, o) in acts.chunks(most).zip(outs.chunks_mut(most)) {
                macro_rules! nt {
                    ($nt:literal) => {{
                        let a: [&[u8]; $nt] = std::array::from_fn(|t| a[t]);
                        let o: &mut [&mut [f32]; $nt] = o.try_into().expect("group size");
                        $kernel::<$($g,)* $nt>(cols, w, a, o)
                    }};
                }
                // SAFETY: forwarded from the caller.
                unsafe {
                    match a.len() {
                        1 => $one(cols, w, a[0], &mut *o[0]),
                        2 => nt!(2),
                        3 => nt!(3),
                        4 => nt!(4),
                        5 => nt!(5),
                        6 => nt!(6),
                        7 => nt!(7),
                        _ => nt!(8),
                    }
                }
            }
        }};
    }
    use GgmlType as T;
    match ty {
        T::Q4_0 => groups!(legacy_rows::<VNNI, Q4_0>, legacy_rows_multi[VNNI, Q4_0]),
        T::Q4_1 => groups!(legacy_rows::<VNNI, Q4_1>, legacy_rows_multi[VNNI, Q4_1]),
        T::Q5_0 => groups!(legacy_rows::<VNNI, Q5_0>, legacy_rows_multi[VNNI, Q5_0]),
        T::Q5_1 => groups!(legacy_rows::<VNNI, Q5_1>, legacy_rows_multi[VNNI, Q5_1]),
        T::Q4_K => groups!(q45_k_rows::<false>, q45_k_rows_multi[false]),
        T::Q5_K => groups!(q45_k_rows::<true>, q45_k_rows_multi[true]),
        T::Q6_K => groups!(q6_k_rows, q6_k_rows_multi[]),
        T::Q2_K => groups!(q2_k_rows, q2_k_rows_multi[]),
        T::Q3_K => groups!(q3_k_rows, q3_k_rows_multi[]),
        T::Q8_0 => groups!(legacy_rows::<VNNI, Q8_0>, legacy_rows_multi[VNNI, Q8_0]),
        _ => return false,
    }
    true
}

/// Q4_K/Q5_K's eight 6-bit scales and eight 6-bit mins, unpacked from their 12 bytes at `p`:
/// bytes 0..4 hold scales 0..4 (low 6 bits), 4..8 mins 0..4; bytes 8..12 hold the low 4 bits of
/// scales 4..8 (low nibbles) and mins 4..8 (high nibbles), whose top 2 bits are the top bits of
/// bytes 0..8. Returns (scales, mins) as eight bytes each.
#[inline(always)]
unsafe fn scales_mins_k4(p: *const u8) -> (u64, u64) {
    // SAFETY: the caller points at 12 readable bytes.
    let (w0, w1, w2) = unsafe { (read_u32(p), read_u32(p.add(4)), read_u32(p.add(8))) };
    let (low6, low4, top2) = (0x3f3f_3f3fu32, 0x0f0f_0f0fu32, 0x0303_0303u32);
    let sc_hi = (w2 & low4) | ((w0 >> 6) & top2) << 4;
    let mn_hi = ((w2 >> 4) & low4) | ((w1 >> 6) & top2) << 4;
    let sc = (w0 & low6) as u64 | (sc_hi as u64) << 32;
    let mn = (w1 & low6) as u64 | (mn_hi as u64) << 32;
    (sc, mn)
}

/// Shuffle masks that broadcast 16-bit word `k` of a 128-bit lane to all its eight words.
#[inline(always)]
unsafe fn word_splat_mask(k: i8) -> __m128i {
    let (lo, hi) = (2 * k, 2 * k + 1);
    _mm_setr_epi8(
        lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi,
    )
}

/// Q4_K (`HIGH == false`) and Q5_K (`HIGH == true`) rows against Q8_K activations: the one-token
/// case of [`q45_k_rows_multi`].
#[inline(always)]
unsafe fn q45_k_rows<const HIGH: bool>(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe { q45_k_rows_multi::<HIGH, 1>(cols, w, [a], &mut [out]) }
}

/// Q4_K/Q5_K rows against `NT` Q8_K activation rows (tokens decoded together): each weight
/// super-block is read and unpacked once for all of them, and every token's float operations
/// are those of one token alone, in the same order, so its results are the same bits.
///
/// Per super-block: `d·d8·Σ_j sc_j·Σ(q·a) − dmin·d8·Σ_j m_j·Σa`, the second sum from Q8_K's
/// block sums (each 16-element sum appears once per 32-element sub-block pair of mins).
#[inline(always)]
unsafe fn q45_k_rows_multi<const HIGH: bool, const NT: usize>(
    cols: usize,
    w: &[u8],
    acts: [&[u8]; NT],
    outs: &mut [&mut [f32]; NT],
) {
    let nb = cols / 256;
    let wb = if HIGH { 176 } else { 144 };
    let qs_off = if HIGH { 48 } else { 16 };
    let m4 = _mm256_set1_epi8(0x0F);
    let one = _mm256_set1_epi8(1);
    // SAFETY: constant shuffles only.
    let splat: [__m256i; 8] =
        unsafe { std::array::from_fn(|k| _mm256_broadcastsi128_si256(word_splat_mask(k as i8))) };
    for r in 0..outs[0].len() {
        // SAFETY: super-block b of row r lies inside `w` (wb bytes each), activation super-block
        // b inside each activation row (292 bytes each: f32 scale, 256 quants, 16 i16 sums at
        // 260).
        unsafe {
            let row = w.as_ptr().add(r * nb * wb);
            let mut acc = [_mm256_setzero_ps(); NT];
            let mut accm = [_mm256_setzero_ps(); NT];
            for b in 0..nb {
                let x = row.add(b * wb);
                prefetch_ahead(x, wb);
                let (sc, mn) = scales_mins_k4(x.add(4));
                // mins: each repeated for the two 16-element sums of its sub-block
                let mn = _mm_cvtsi64_si128(mn as i64);
                let mn16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mn, mn));
                let sc16 =
                    _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
                let qh = if HIGH {
                    load32(x.add(16))
                } else {
                    _mm256_setzero_si256()
                };
                // the super-block's 256 values (sub-block j = 2c + h) and their scales
                let mut v = [_mm256_setzero_si256(); 8];
                let mut s = [_mm256_setzero_si256(); 8];
                for c in 0..4 {
                    let q = load32(x.add(qs_off + 32 * c));
                    let mut lo = _mm256_and_si256(q, m4);
                    let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                    if HIGH {
                        let bit = |k: usize| {
                            let s = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(k as i32));
                            _mm256_slli_epi16(_mm256_and_si256(s, one), 4)
                        };
                        lo = _mm256_or_si256(lo, bit(2 * c));
                        hi = _mm256_or_si256(hi, bit(2 * c + 1));
                    }
                    v[2 * c] = lo;
                    v[2 * c + 1] = hi;
                    s[2 * c] = _mm256_shuffle_epi8(sc16, splat[2 * c]);
                    s[2 * c + 1] = _mm256_shuffle_epi8(sc16, splat[2 * c + 1]);
                }
                let (dw, dminw) = (f16_at(x), f16_at(x.add(2)));
                // (loops, not closures: closures do not get the caller's target features)
                for t in 0..NT {
                    let y = acts[t].as_ptr().add(b * 292);
                    let d8 = (y as *const f32).read_unaligned();
                    let bsums = _mm256_loadu_si256(y.add(260) as *const __m256i);
                    let msum = _mm256_madd_epi16(mn16, bsums);
                    let dmin = _mm256_set1_ps(dminw * d8);
                    accm[t] = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(msum), accm[t]);
                    let mut sumi = _mm256_setzero_si256();
                    for j in 0..8 {
                        let p = _mm256_maddubs_epi16(v[j], load32(y.add(4 + 32 * j)));
                        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s[j]));
                    }
                    let d = dw * d8;
                    acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[t]);
                }
            }
            for t in 0..NT {
                outs[t][r] = hsum(acc[t]) - hsum(accm[t]);
            }
        }
    }
}

/// Q6_K rows against Q8_K activations: the one-token case of [`q6_k_rows_multi`].
#[inline(always)]
unsafe fn q6_k_rows(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe { q6_k_rows_multi::<1>(cols, w, [a], &mut [out]) }
}

/// Q6_K rows against `NT` Q8_K activation rows, each super-block unpacked once for all of them
/// (per token the same operations as alone, as [`q45_k_rows_multi`]).
#[inline(always)]
unsafe fn q6_k_rows_multi<const NT: usize>(
    cols: usize,
    w: &[u8],
    acts: [&[u8]; NT],
    outs: &mut [&mut [f32]; NT],
) {
    let nb = cols / 256;
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(3);
    // SAFETY: constant shuffles only.
    let pair = unsafe { pair_masks() };
    for r in 0..outs[0].len() {
        // SAFETY: super-block b of row r lies inside `w` (210 bytes each), activation
        // super-block b inside each activation row (292 bytes each).
        unsafe {
            let row = w.as_ptr().add(r * nb * 210);
            let mut sum = [0f32; NT];
            for b in 0..nb {
                let x = row.add(b * 210);
                prefetch_ahead(x, 210);
                let sc8 = _mm_loadu_si128(x.add(192) as *const __m128i);
                let sc_all = _mm256_cvtepi8_epi16(sc8);
                // scales 0..8 and 8..16, each in both lanes
                let halves = [
                    _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sc_all)),
                    _mm256_broadcastsi128_si256(_mm256_extracti128_si256(sc_all, 1)),
                ];
                // the 256 unsigned values at 32k (k = 4n + i) and the scales of their halves
                let mut v = [_mm256_setzero_si256(); 8];
                let mut s = [_mm256_setzero_si256(); 8];
                for (n, half) in halves.iter().enumerate() {
                    let qa = load32(x.add(64 * n));
                    let qb = load32(x.add(64 * n + 32));
                    let qh = load32(x.add(128 + 32 * n));
                    let high = |k: i32| {
                        let s = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(k));
                        _mm256_slli_epi16(_mm256_and_si256(s, m2), 4)
                    };
                    v[4 * n] = _mm256_or_si256(_mm256_and_si256(qa, m4), high(0));
                    v[4 * n + 1] = _mm256_or_si256(_mm256_and_si256(qb, m4), high(2));
                    v[4 * n + 2] =
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qa, 4), m4), high(4));
                    v[4 * n + 3] =
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qb, 4), m4), high(6));
                    for i in 0..4 {
                        // scales j = 8n + 2i (low 16 elements) and j + 1 (high 16)
                        s[4 * n + i] = _mm256_shuffle_epi8(*half, pair[i]);
                    }
                }
                let dw = f16_at(x.add(208));
                for t in 0..NT {
                    let y = acts[t].as_ptr().add(b * 292);
                    let d8 = (y as *const f32).read_unaligned();
                    // the values are q - 32: take 32 × Σ scale × block sum off, exactly
                    let bsums = _mm256_loadu_si256(y.add(260) as *const __m256i);
                    let mut sumi = _mm256_sub_epi32(
                        _mm256_setzero_si256(),
                        _mm256_slli_epi32(_mm256_madd_epi16(sc_all, bsums), 5),
                    );
                    for k in 0..8 {
                        let p = _mm256_maddubs_epi16(v[k], load32(y.add(4 + 32 * k)));
                        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s[k]));
                    }
                    // one exact integer per super-block (see `q3_k_rows`)
                    sum[t] += dw * d8 * hsum_i32(sumi) as f32;
                }
            }
            for t in 0..NT {
                outs[t][r] = sum[t];
            }
        }
    }
}

/// Masks that put scale `2k` of a 128-bit lane's eight i16 in the low half of the lane's
/// sixteen i16 and scale `2k + 1` in the high half (the scales of two 16-element sub-blocks).
#[inline(always)]
unsafe fn pair_masks() -> [__m256i; 4] {
    // SAFETY: constant shuffles only.
    unsafe {
        std::array::from_fn(|k| {
            _mm256_set_m128i(
                word_splat_mask(2 * k as i8 + 1),
                word_splat_mask(2 * k as i8),
            )
        })
    }
}

/// `Σ_j scale_j · Σ_{16 values of j} u·a` over one super-block half `n`: `v[k]` are the 32
/// unsigned values at `128n + 32k`, `half` the eight i16 scales `8n .. 8n + 8` in both lanes.
#[inline(always)]
unsafe fn scaled_half(
    v: [__m256i; 4],
    half: __m256i,
    y: *const u8,
    n: usize,
    pair: &[__m256i; 4],
) -> __m256i {
    // SAFETY: `y` points at a Q8_K super-block (292 bytes).
    unsafe {
        let mut sumi = _mm256_setzero_si256();
        for (k, vk) in v.iter().enumerate() {
            let p = _mm256_maddubs_epi16(*vk, load32(y.add(4 + 128 * n + 32 * k)));
            let s = _mm256_shuffle_epi8(half, pair[k]);
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
        }
        sumi
    }
}

/// Q2_K rows against Q8_K activations: the one-token case of [`q2_k_rows_multi`].
#[inline(always)]
unsafe fn q2_k_rows(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe { q2_k_rows_multi::<1>(cols, w, [a], &mut [out]) }
}

/// Q2_K rows against `NT` Q8_K activation rows: per super-block
/// `d·d8·Σ_j (sc_j & 15)·Σ q·a − dmin·d8·Σ_j (sc_j >> 4)·bsum_j`, the 2-bit values used as they
/// are (`maddubs` pairs stay far below 2¹⁵); each super-block is unpacked once for all the
/// tokens (per token the same operations as alone, as [`q45_k_rows_multi`]).
#[inline(always)]
unsafe fn q2_k_rows_multi<const NT: usize>(
    cols: usize,
    w: &[u8],
    acts: [&[u8]; NT],
    outs: &mut [&mut [f32]; NT],
) {
    let nb = cols / 256;
    let m2 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0F);
    // SAFETY: constant shuffles only.
    let pair = unsafe { pair_masks() };
    for r in 0..outs[0].len() {
        // SAFETY: super-block b of row r lies inside `w` (84 bytes each), activation
        // super-block b inside each activation row (292 bytes each).
        unsafe {
            let row = w.as_ptr().add(r * nb * 84);
            let mut acc = [_mm256_setzero_ps(); NT];
            let mut accm = [_mm256_setzero_ps(); NT];
            for b in 0..nb {
                let x = row.add(b * 84);
                prefetch_ahead(x, 84);
                let sc8 = _mm_loadu_si128(x as *const __m128i);
                let scales = _mm256_cvtepu8_epi16(_mm_and_si128(sc8, m4));
                let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), m4));
                let halves = [
                    _mm256_broadcastsi128_si256(_mm256_castsi256_si128(scales)),
                    _mm256_broadcastsi128_si256(_mm256_extracti128_si256(scales, 1)),
                ];
                let mut v = [[_mm256_setzero_si256(); 4]; 2];
                for (n, vn) in v.iter_mut().enumerate() {
                    let q = load32(x.add(16 + 32 * n));
                    *vn = [
                        _mm256_and_si256(q, m2),
                        _mm256_and_si256(_mm256_srli_epi16(q, 2), m2),
                        _mm256_and_si256(_mm256_srli_epi16(q, 4), m2),
                        _mm256_and_si256(_mm256_srli_epi16(q, 6), m2),
                    ];
                }
                let (dw, dminw) = (f16_at(x.add(80)), f16_at(x.add(82)));
                for t in 0..NT {
                    let y = acts[t].as_ptr().add(b * 292);
                    let d8 = (y as *const f32).read_unaligned();
                    let bsums = _mm256_loadu_si256(y.add(260) as *const __m256i);
                    let summs = _mm256_madd_epi16(mins, bsums);
                    let mut sumi = _mm256_setzero_si256();
                    for n in 0..2 {
                        sumi = _mm256_add_epi32(sumi, scaled_half(v[n], halves[n], y, n, &pair));
                    }
                    let d = dw * d8;
                    let dmin = dminw * d8;
                    acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[t]);
                    accm[t] =
                        _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(summs), accm[t]);
                }
            }
            for t in 0..NT {
                outs[t][r] = hsum(acc[t]) - hsum(accm[t]);
            }
        }
    }
}

/// Q3_K's sixteen 6-bit scales (minus 32) from their 12 bytes at `p`, as i16.
#[inline(always)]
unsafe fn q3_k_scales(p: *const u8) -> __m256i {
    // SAFETY: the caller points at 12 readable bytes.
    let (a0, a1, t) = unsafe { (read_u32(p), read_u32(p.add(4)), read_u32(p.add(8))) };
    let (low4, top2) = (0x0f0f_0f0fu32, 0x0303_0303u32);
    let w = [
        (a0 & low4) | (t & top2) << 4,
        (a1 & low4) | ((t >> 2) & top2) << 4,
        ((a0 >> 4) & low4) | ((t >> 4) & top2) << 4,
        ((a1 >> 4) & low4) | ((t >> 6) & top2) << 4,
    ];
    let b = _mm_setr_epi32(w[0] as i32, w[1] as i32, w[2] as i32, w[3] as i32);
    _mm256_cvtepi8_epi16(_mm_sub_epi8(b, _mm_set1_epi8(32)))
}

/// Q3_K rows against Q8_K activations: the one-token case of [`q3_k_rows_multi`].
#[inline(always)]
unsafe fn q3_k_rows(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe { q3_k_rows_multi::<1>(cols, w, [a], &mut [out]) }
}

/// Q3_K rows against `NT` Q8_K activation rows: the 3-bit values as `u = low | high << 2`
/// (0..8, unsigned), and `4 × Σ_j scale_j·bsum_j` taken off for their offset of 4, exactly;
/// each super-block is unpacked once for all the tokens (per token the same operations as
/// alone, as [`q45_k_rows_multi`]).
#[inline(always)]
unsafe fn q3_k_rows_multi<const NT: usize>(
    cols: usize,
    w: &[u8],
    acts: [&[u8]; NT],
    outs: &mut [&mut [f32]; NT],
) {
    let nb = cols / 256;
    let m2 = _mm256_set1_epi8(3);
    let one = _mm256_set1_epi8(1);
    // SAFETY: constant shuffles only.
    let pair = unsafe { pair_masks() };
    for r in 0..outs[0].len() {
        // SAFETY: super-block b of row r lies inside `w` (110 bytes each), activation
        // super-block b inside each activation row (292 bytes each).
        unsafe {
            let row = w.as_ptr().add(r * nb * 110);
            let mut sum = [0f32; NT];
            for b in 0..nb {
                let x = row.add(b * 110);
                prefetch_ahead(x, 110);
                let scales = q3_k_scales(x.add(96));
                let halves = [
                    _mm256_broadcastsi128_si256(_mm256_castsi256_si128(scales)),
                    _mm256_broadcastsi128_si256(_mm256_extracti128_si256(scales, 1)),
                ];
                let hm = load32(x);
                let mut v = [[_mm256_setzero_si256(); 4]; 2];
                for (n, vn) in v.iter_mut().enumerate() {
                    let q = load32(x.add(32 + 32 * n));
                    // bit 4n + k of each hmask byte, at bit 2
                    let hi = |k: i32| {
                        let s = _mm256_srl_epi16(hm, _mm_cvtsi32_si128(4 * n as i32 + k));
                        _mm256_slli_epi16(_mm256_and_si256(s, one), 2)
                    };
                    *vn = [
                        _mm256_or_si256(_mm256_and_si256(q, m2), hi(0)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 2), m2), hi(1)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m2), hi(2)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 6), m2), hi(3)),
                    ];
                }
                let dw = f16_at(x.add(108));
                for t in 0..NT {
                    let y = acts[t].as_ptr().add(b * 292);
                    let d8 = (y as *const f32).read_unaligned();
                    let bsums = _mm256_loadu_si256(y.add(260) as *const __m256i);
                    let mut sumi = _mm256_sub_epi32(
                        _mm256_setzero_si256(),
                        _mm256_slli_epi32(_mm256_madd_epi16(scales, bsums), 2),
                    );
                    for n in 0..2 {
                        sumi = _mm256_add_epi32(sumi, scaled_half(v[n], halves[n], y, n, &pair));
                    }
                    // one exact integer per super-block: the offset term sits in other lanes
                    // than the products it cancels, so lane-wise float sums could lose a later
                    // block to the cancellation (an activation outlier against a scale near
                    // f16's max)
                    sum[t] += dw * d8 * hsum_i32(sumi) as f32;
                }
            }
            for t in 0..NT {
                outs[t][r] = sum[t];
            }
        }
    }
}

/// Float rows against f32 activations: four 8-lane fused multiply-add accumulators. `KIND` is
/// the weight type by its bytes: 2 = F16, 1 = BF16 (2 bytes too), 4 = F32.
#[inline(always)]
unsafe fn float_rows<const KIND: usize>(cols: usize, w: &[u8], a: &[f32], out: &mut [f32]) {
    let size = if KIND == 4 { 4 } else { 2 };
    let c32 = cols / 32 * 32;
    let c8 = cols / 8 * 8;
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: row r (size·cols bytes) lies inside `w`, `a` holds `cols` floats.
        unsafe {
            let row = w.as_ptr().add(r * cols * size);
            let ap = a.as_ptr();
            // eight weights from element i, exactly as f32
            let wl = |i: usize| match KIND {
                2 => _mm256_cvtph_ps(_mm_loadu_si128(row.add(2 * i) as *const __m128i)),
                1 => _mm256_castsi256_ps(_mm256_slli_epi32(
                    _mm256_cvtepu16_epi32(_mm_loadu_si128(row.add(2 * i) as *const __m128i)),
                    16,
                )),
                _ => _mm256_loadu_ps(row.add(4 * i) as *const f32),
            };
            let one = |i: usize| match KIND {
                2 => f16_at(row.add(2 * i)),
                1 => {
                    f32::from_bits(u32::from((row.add(2 * i) as *const u16).read_unaligned()) << 16)
                }
                _ => (row.add(4 * i) as *const f32).read_unaligned(),
            };
            let al = |i: usize| _mm256_loadu_ps(ap.add(i));
            let mut s = [_mm256_setzero_ps(); 4];
            for i in (0..c32).step_by(32) {
                prefetch_ahead(row.add(size * i), 32 * size);
                for (k, sk) in s.iter_mut().enumerate() {
                    *sk = _mm256_fmadd_ps(wl(i + 8 * k), al(i + 8 * k), *sk);
                }
            }
            for i in (c32..c8).step_by(8) {
                s[0] = _mm256_fmadd_ps(wl(i), al(i), s[0]);
            }
            let mut t = hsum(_mm256_add_ps(
                _mm256_add_ps(s[0], s[1]),
                _mm256_add_ps(s[2], s[3]),
            ));
            for (i, ai) in a.iter().enumerate().take(cols).skip(c8) {
                t += one(i) * ai;
            }
            *o = t;
        }
    }
}
