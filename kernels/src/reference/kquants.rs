//! The K-quants: 256-element super-blocks (`QK_K`) with per-sub-block scales.
//! Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (weights) and Q8_K (the activation type of their dot products).
//!
//! Dequantization follows `dequantize_row_q*_K` in `ggml-quants.c`, [`quantize_row_q8_k`]
//! follows `quantize_row_q8_K_ref`, and the dot products follow the
//! `ggml_vec_dot_q*_K_q8_K_generic` functions in `ggml-cpu/quants.c`.
//!
//! A recurring pattern: the 2-bit (Q2_K, Q3_K, Q6_K high bits) quants of element `e` live in
//! byte `(e / 128) * 32 + e % 32` of their array, at bit offset `2 * ((e % 128) / 32)`; the
//! nibble quants (Q4_K, Q5_K, Q6_K low bits) of element `e` live in the low nibble of byte
//! `(e / 64) * 32 + e % 32` when `e % 64 < 32`, in its high nibble otherwise.

use super::{assert_row, f16_at, f32_at, i16_at, nearest_int};
use crate::{GgmlType, QK_K};

const Q2_K_BYTES: usize = 84;
const Q3_K_BYTES: usize = 110;
const Q4_K_BYTES: usize = 144;
const Q5_K_BYTES: usize = 176;
const Q6_K_BYTES: usize = 210;
const Q8_K_BYTES: usize = 292;

/// Unpack the 6-bit scale and min of sub-block `j` (0..8) of Q4_K/Q5_K from their 12 packed
/// bytes `q` (ggml's `get_scale_min_k4`):
///
/// * `j < 4`:  `sc = q[j] & 63`, `m = q[j + 4] & 63`
/// * `j >= 4`: `sc = (q[j + 4] & 15) | (q[j - 4] >> 6) << 4`, `m = (q[j + 4] >> 4) | (q[j] >> 6) << 4`
#[inline(always)]
pub fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Unpack the sixteen 6-bit Q3_K scales from their 12 packed bytes, already minus 32:
/// scale `j` has low 4 bits `q[j] & 15` (j < 8) or `q[j - 8] >> 4` (j >= 8), and high 2 bits
/// `(q[8 + j % 4] >> (2 * (j / 4))) & 3`.
#[inline(always)]
pub fn q3_k_scales(q: &[u8]) -> [i32; 16] {
    let mut out = [0i32; 16];
    for (j, s) in out.iter_mut().enumerate() {
        let low = if j < 8 { q[j] & 0x0F } else { q[j - 8] >> 4 };
        let high = (q[8 + j % 4] >> (2 * (j / 4))) & 3;
        *s = (low | (high << 4)) as i32 - 32;
    }
    out
}

/// Q2_K, 84 bytes per 256 elements:
///
/// | bytes   | field    | meaning                                                       |
/// |---------|----------|---------------------------------------------------------------|
/// | 0..16   | `scales` | per 16-element sub-block: low nibble scale, high nibble min   |
/// | 16..80  | `qs`     | 2-bit quants (see the module docs for the bit positions)      |
/// | 80..82  | `d`      | f16 super-scale for the scales                                |
/// | 82..84  | `dmin`   | f16 super-scale for the mins                                  |
///
/// For sub-block `s = e / 16`: `dl = d * (scales[s] & 15)`, `ml = dmin * (scales[s] >> 4)`,
/// `y[e] = dl * q[e] - ml`.
pub fn dequantize_row_q2_k(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::Q2_K, dst.len(), src.len());
    for (b, y) in src.chunks_exact(Q2_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let scales = &b[0..16];
        let qs = &b[16..80];
        let d = f16_at(b, 80);
        let min = f16_at(b, 82);
        let mut e = 0;
        for n in 0..QK_K / 128 {
            let q = &qs[n * 32..n * 32 + 32];
            for shift in [0, 2, 4, 6] {
                for half in 0..2 {
                    let sc = scales[e / 16];
                    let dl = d * (sc & 0x0F) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for &qb in &q[half * 16..half * 16 + 16] {
                        y[e] = dl * ((qb >> shift) & 3) as f32 - ml;
                        e += 1;
                    }
                }
            }
        }
    }
}

/// Q3_K, 110 bytes per 256 elements:
///
/// | bytes    | field    | meaning                                                             |
/// |----------|----------|---------------------------------------------------------------------|
/// | 0..32    | `hmask`  | high bit of element `e`: bit `e / 32` of `hmask[e % 32]`            |
/// | 32..96   | `qs`     | low 2 bits (module-doc positions)                                   |
/// | 96..108  | `scales` | sixteen 6-bit scales, packed (see [`q3_k_scales`])                  |
/// | 108..110 | `d`      | f16 super-scale                                                     |
///
/// The quant is `q = low2 - (high bit set ? 0 : 4)` in -4..=3; for `s = e / 16`:
/// `dl = d * (scale[s] - 32)`, `y[e] = dl * q`.
pub fn dequantize_row_q3_k(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::Q3_K, dst.len(), src.len());
    for (b, y) in src.chunks_exact(Q3_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let hm = &b[0..32];
        let qs = &b[32..96];
        let scales = q3_k_scales(&b[96..108]);
        let d_all = f16_at(b, 108);
        let mut e = 0;
        for n in 0..QK_K / 128 {
            let q = &qs[n * 32..n * 32 + 32];
            for j in 0..4 {
                let shift = 2 * j;
                let m = 1u8 << (4 * n + j);
                for half in 0..2 {
                    let dl = d_all * scales[e / 16] as f32;
                    for l in half * 16..half * 16 + 16 {
                        let low = ((q[l] >> shift) & 3) as i32;
                        let v = low - if hm[l] & m != 0 { 0 } else { 4 };
                        y[e] = dl * v as f32;
                        e += 1;
                    }
                }
            }
        }
    }
}

/// Q4_K, 144 bytes per 256 elements:
///
/// | bytes   | field    | meaning                                                        |
/// |---------|----------|----------------------------------------------------------------|
/// | 0..2    | `d`      | f16 super-scale for the scales                                 |
/// | 2..4    | `dmin`   | f16 super-scale for the mins                                   |
/// | 4..16   | `scales` | eight 6-bit scales and eight 6-bit mins ([`get_scale_min_k4`]) |
/// | 16..144 | `qs`     | 4-bit quants (module-doc nibble positions)                     |
///
/// For sub-block `s = e / 32`: `d1 = d * sc[s]`, `m1 = dmin * m[s]`, `y[e] = d1 * q[e] - m1`.
pub fn dequantize_row_q4_k(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::Q4_K, dst.len(), src.len());
    for (b, y) in src.chunks_exact(Q4_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 0);
        let min = f16_at(b, 2);
        let scales = &b[4..16];
        let qs = &b[16..144];
        for j in 0..QK_K / 64 {
            let (sc1, m1) = get_scale_min_k4(2 * j, scales);
            let (sc2, m2) = get_scale_min_k4(2 * j + 1, scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let q = &qs[j * 32..j * 32 + 32];
            let y = &mut y[j * 64..j * 64 + 64];
            for l in 0..32 {
                y[l] = d1 * (q[l] & 0x0F) as f32 - m1;
                y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

/// Q5_K, 176 bytes per 256 elements:
///
/// | bytes   | field    | meaning                                                        |
/// |---------|----------|----------------------------------------------------------------|
/// | 0..2    | `d`      | f16 super-scale for the scales                                 |
/// | 2..4    | `dmin`   | f16 super-scale for the mins                                   |
/// | 4..16   | `scales` | as Q4_K                                                        |
/// | 16..48  | `qh`     | 5th bit of element `e`: bit `e / 32` of `qh[e % 32]`           |
/// | 48..176 | `qs`     | low 4 bits (module-doc nibble positions)                       |
///
/// As Q4_K with the 5-bit quant: `y[e] = d1 * (low4 + 16 * high) - m1`.
pub fn dequantize_row_q5_k(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::Q5_K, dst.len(), src.len());
    for (b, y) in src.chunks_exact(Q5_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 0);
        let min = f16_at(b, 2);
        let scales = &b[4..16];
        let qh = &b[16..48];
        let qs = &b[48..176];
        for j in 0..QK_K / 64 {
            let (sc1, m1) = get_scale_min_k4(2 * j, scales);
            let (sc2, m2) = get_scale_min_k4(2 * j + 1, scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let (u1, u2) = (1u8 << (2 * j), 1u8 << (2 * j + 1));
            let ql = &qs[j * 32..j * 32 + 32];
            let y = &mut y[j * 64..j * 64 + 64];
            for l in 0..32 {
                let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                y[l] = d1 * ((ql[l] & 0x0F) as i32 + h1) as f32 - m1;
                y[l + 32] = d2 * ((ql[l] >> 4) as i32 + h2) as f32 - m2;
            }
        }
    }
}

/// The 6-bit Q6_K quant of element `e` (0..256) minus 32, from `ql` (128 bytes) and `qh` (64).
#[inline(always)]
pub(crate) fn q6_k_value(ql: &[u8], qh: &[u8], e: usize) -> i32 {
    let (n, r) = (e / 128, e % 128);
    let (k, l) = (r / 32, r % 32);
    let low_byte = ql[n * 64 + (k & 1) * 32 + l];
    let low = if k < 2 {
        low_byte & 0x0F
    } else {
        low_byte >> 4
    };
    let high = (qh[n * 32 + l] >> (2 * k)) & 3;
    (low | (high << 4)) as i32 - 32
}

/// Q6_K, 210 bytes per 256 elements:
///
/// | bytes    | field    | meaning                                                            |
/// |----------|----------|--------------------------------------------------------------------|
/// | 0..128   | `ql`     | low 4 bits: element `e = 128n + 32k + l` is in `ql[64n + 32(k&1) + l]`, low nibble for k < 2, high for k >= 2 |
/// | 128..192 | `qh`     | high 2 bits: `(qh[32n + l] >> 2k) & 3`                            |
/// | 192..208 | `scales` | i8 scale per 16-element sub-block                                 |
/// | 208..210 | `d`      | f16 super-scale                                                   |
///
/// `y[e] = (d * scales[e / 16]) * (q6 - 32)`.
pub fn dequantize_row_q6_k(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::Q6_K, dst.len(), src.len());
    for (b, y) in src.chunks_exact(Q6_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let ql = &b[0..128];
        let qh = &b[128..192];
        let sc = &b[192..208];
        let d = f16_at(b, 208);
        for (e, ye) in y.iter_mut().enumerate() {
            let q = q6_k_value(ql, qh, e);
            *ye = d * sc[e / 16] as i8 as f32 * q as f32;
        }
    }
}

/// Q8_K, 292 bytes per 256 elements (the activation type of the K-quant dot products):
///
/// | bytes    | field   | meaning                                         |
/// |----------|---------|-------------------------------------------------|
/// | 0..4     | `d`     | f32 scale (not f16)                             |
/// | 4..260   | `qs`    | i8 quants, in order                             |
/// | 260..292 | `bsums` | i16 sums of each 16 consecutive quants          |
///
/// `y[e] = d * qs[e]`.
pub fn dequantize_row_q8_k(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::Q8_K, dst.len(), src.len());
    for (b, y) in src.chunks_exact(Q8_K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f32_at(b, 0);
        for (ye, &q) in y.iter_mut().zip(&b[4..260]) {
            *ye = d * q as i8 as f32;
        }
    }
}

/// f32 activations → Q8_K (`quantize_row_q8_K_ref`): `max` is the element of largest
/// magnitude (first one on ties), `iscale = -127 / max`, `qs = min(127, nearest_int(iscale *
/// x))` (ties to even), `bsums` the sums of 16, and `d = 1 / iscale` stored as f32. An all-zero
/// block gets `d = 0`, zero quants and zero `bsums` (ggml leaves `bsums` unwritten there).
///
/// # Panics
/// If `x.len()` is not a multiple of 256 or `out` is not exactly `x.len() / 256 * 292` bytes.
pub fn quantize_row_q8_k(x: &[f32], out: &mut [u8]) {
    assert_row(GgmlType::Q8_K, x.len(), out.len());
    for (xb, yb) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(Q8_K_BYTES)) {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax == 0.0 {
            yb.fill(0);
            continue;
        }
        let iscale = -127.0f32 / max;
        for (q, &v) in yb[4..260].iter_mut().zip(xb) {
            // C: `int8_t = MIN(127, int)`; the i32 → i8 conversion wraps like gcc's.
            *q = nearest_int(iscale * v).min(127) as i8 as u8;
        }
        for j in 0..QK_K / 16 {
            let sum: i32 = yb[4 + 16 * j..4 + 16 * j + 16]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum();
            yb[260 + 2 * j..262 + 2 * j].copy_from_slice(&(sum as i16).to_le_bytes());
        }
        yb[0..4].copy_from_slice(&(1.0f32 / iscale).to_le_bytes());
    }
}

/// f32 activations → Q8_K as llama.cpp's AVX2 `ggml_quantize_mat_q8_K_4x8` does for the
/// activations of repacked Q4_K matrices (rows in groups of four): the same as
/// [`quantize_row_q8_k`] except for the sign of the scale, which is negative whenever *some*
/// element equals `+max|x|` (the reference looks at the first element of largest magnitude).
/// Rounding is to nearest even in both.
pub fn quantize_row_q8_k_x86_mat(x: &[f32], out: &mut [u8]) {
    assert_row(GgmlType::Q8_K, x.len(), out.len());
    for (xb, yb) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(Q8_K_BYTES)) {
        let amax = xb
            .iter()
            .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
        if amax == 0.0 {
            yb.fill(0);
            continue;
        }
        let iscale = if xb.contains(&amax) {
            -127.0 / amax
        } else {
            127.0 / amax
        };
        for (q, &v) in yb[4..260].iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).clamp(-128, 127) as i8 as u8;
        }
        for j in 0..QK_K / 16 {
            let sum: i32 = yb[4 + 16 * j..4 + 16 * j + 16]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum();
            yb[260 + 2 * j..262 + 2 * j].copy_from_slice(&(sum as i16).to_le_bytes());
        }
        yb[0..4].copy_from_slice(&(1.0f32 / iscale).to_le_bytes());
    }
}

/// The Q8_K block fields: `(d, qs, bsums)`.
#[inline(always)]
fn q8_k_fields(b: &[u8]) -> (f32, &[u8], [i32; 16]) {
    let mut bsums = [0i32; 16];
    for (j, s) in bsums.iter_mut().enumerate() {
        *s = i16_at(b, 260 + 2 * j) as i32;
    }
    (f32_at(b, 0), &b[4..260], bsums)
}

#[inline(always)]
fn assert_dot(wt: GgmlType, n: usize, x: &[u8], y: &[u8]) {
    assert_row(wt, n, x.len());
    assert_row(GgmlType::Q8_K, n, y.len());
}

/// Q2_K · Q8_K (`ggml_vec_dot_q2_K_q8_K_generic`). Per super-block:
/// `summs = Σ bsums[j] * (scales[j] >> 4)`, `isum = Σ_j (scales[j] & 15) * Σ_{e in j} q8 * q2`,
/// `dall = yd * d`, `dmin = yd * dmin`, then `sumf += dall * isum - dmin * summs`.
///
/// # Panics
/// If `n` is not a multiple of 256 or `x`/`y` are not exactly the bytes of `n` elements.
#[inline(always)]
pub fn vec_dot_q2_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert_dot(GgmlType::Q2_K, n, x, y);
    let mut sumf = 0.0f32;
    for (bx, by) in x.chunks_exact(Q2_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let sc = &bx[0..16];
        let qs = &bx[16..80];
        let (yd, q8, bsums) = q8_k_fields(by);

        let summs: i32 = (0..16).map(|j| bsums[j] * (sc[j] >> 4) as i32).sum();
        let dall = yd * f16_at(bx, 80);
        let dmin = yd * f16_at(bx, 82);

        let mut isum = 0i32;
        for e0 in (0..QK_K).step_by(16) {
            let isuml: i32 = (e0..e0 + 16)
                .map(|e| {
                    let q2 = (qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
                    q8[e] as i8 as i32 * q2 as i32
                })
                .sum();
            isum += (sc[e0 / 16] & 0x0F) as i32 * isuml;
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// The integer lane sums `aux32[l] = Σ_{e % 8 == l} scale(e) * q8[e] * a[e]` that ggml's
/// generic K-quant dots accumulate (in lanes of 8) before the float scaling.
#[inline(always)]
fn lane_sums(q8: &[u8], a: &[i8; QK_K], scale: impl Fn(usize) -> i32) -> [i32; 8] {
    let mut aux32 = [0i32; 8];
    for e in 0..QK_K {
        aux32[e % 8] += scale(e) * (q8[e] as i8 as i32 * a[e] as i32);
    }
    aux32
}

/// Q3_K · Q8_K (`ggml_vec_dot_q3_K_q8_K_generic`). Per super-block the 8 integer lane sums
/// `aux32[l] = Σ_{e%8==l} (scale[e/16] - 32) * q8[e] * q3[e]`, then with `d = d3 * yd`:
/// `sums[l] += d * aux32[l]`; the 8 float lanes persist across super-blocks and are added
/// in lane order at the end.
///
/// # Panics
/// If `n` is not a multiple of 256 or `x`/`y` are not exactly the bytes of `n` elements.
#[inline(always)]
pub fn vec_dot_q3_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert_dot(GgmlType::Q3_K, n, x, y);
    let mut sums = [0.0f32; 8];
    for (bx, by) in x.chunks_exact(Q3_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let hm = &bx[0..32];
        let qs = &bx[32..96];
        let scales = q3_k_scales(&bx[96..108]);
        let (yd, q8, _) = q8_k_fields(by);

        let mut a = [0i8; QK_K];
        for (e, ae) in a.iter_mut().enumerate() {
            let (n, k, l) = (e / 128, (e % 128) / 32, e % 32);
            let low = ((qs[n * 32 + l] >> (2 * k)) & 3) as i8;
            let high_set = hm[l] & (1u8 << (4 * n + k)) != 0;
            *ae = low - if high_set { 0 } else { 4 };
        }
        let aux32 = lane_sums(q8, &a, |e| scales[e / 16]);
        let d = f16_at(bx, 108) * yd;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
    }
    let mut sumf = 0.0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}

/// Shared by the Q4_K and Q5_K dots: the eight 6-bit scales and mins.
#[inline(always)]
fn k4_scales_mins(packed: &[u8]) -> ([i32; 8], [i32; 8]) {
    let mut scales = [0i32; 8];
    let mut mins = [0i32; 8];
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, packed);
        scales[j] = sc as i32;
        mins[j] = m as i32;
    }
    (scales, mins)
}

/// Q4_K · Q8_K (`ggml_vec_dot_q4_K_q8_K_generic`). Per super-block:
/// `sumi = Σ_j bsums[j] * min[j / 2]`, lanes `aux32[l] = Σ_{e%8==l} sc[e/32] * q8[e] * q4[e]`,
/// `sums[l] += (d * yd) * aux32[l]`, and `sumf -= (dmin * yd) * sumi`. At the end the 8 lanes
/// are added to `sumf` in lane order.
///
/// # Panics
/// If `n` is not a multiple of 256 or `x`/`y` are not exactly the bytes of `n` elements.
#[inline(always)]
pub fn vec_dot_q4_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert_dot(GgmlType::Q4_K, n, x, y);
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (bx, by) in x.chunks_exact(Q4_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let (scales, mins) = k4_scales_mins(&bx[4..16]);
        let qs = &bx[16..144];
        let (yd, q8, bsums) = q8_k_fields(by);

        let mut a = [0i8; QK_K];
        for (e, ae) in a.iter_mut().enumerate() {
            let byte = qs[(e / 64) * 32 + e % 32];
            *ae = if e % 64 < 32 { byte & 0x0F } else { byte >> 4 } as i8;
        }
        let sumi: i32 = (0..16).map(|j| bsums[j] * mins[j / 2]).sum();
        let aux32 = lane_sums(q8, &a, |e| scales[e / 32]);
        let d = f16_at(bx, 0) * yd;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
        let dmin = f16_at(bx, 2) * yd;
        sumf -= dmin * sumi as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

/// Q5_K · Q8_K (`ggml_vec_dot_q5_K_q8_K_generic`): as [`vec_dot_q4_k_q8_k`] with the 5-bit
/// quants (`low4 + 16 * high`).
///
/// # Panics
/// If `n` is not a multiple of 256 or `x`/`y` are not exactly the bytes of `n` elements.
#[inline(always)]
pub fn vec_dot_q5_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert_dot(GgmlType::Q5_K, n, x, y);
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (bx, by) in x.chunks_exact(Q5_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let (scales, mins) = k4_scales_mins(&bx[4..16]);
        let qh = &bx[16..48];
        let qs = &bx[48..176];
        let (yd, q8, bsums) = q8_k_fields(by);

        let mut a = [0i8; QK_K];
        for (e, ae) in a.iter_mut().enumerate() {
            let byte = qs[(e / 64) * 32 + e % 32];
            let low = if e % 64 < 32 { byte & 0x0F } else { byte >> 4 };
            let high = (qh[e % 32] >> (e / 32)) & 1;
            *ae = (low + 16 * high) as i8;
        }
        let sumi: i32 = (0..16).map(|j| bsums[j] * mins[j / 2]).sum();
        let aux32 = lane_sums(q8, &a, |e| scales[e / 32]);
        let d = f16_at(bx, 0) * yd;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
        let dmin = f16_at(bx, 2) * yd;
        sumf -= dmin * sumi as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

/// Q6_K · Q8_K (`ggml_vec_dot_q6_K_q8_K_generic`): lanes
/// `aux32[l] = Σ_{e%8==l} scales[e/16] * q8[e] * (q6[e] - 32)`, `sums[l] += (d * yd) * aux32[l]`
/// across super-blocks, lanes added in order at the end.
///
/// # Panics
/// If `n` is not a multiple of 256 or `x`/`y` are not exactly the bytes of `n` elements.
#[inline(always)]
pub fn vec_dot_q6_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert_dot(GgmlType::Q6_K, n, x, y);
    let mut sums = [0.0f32; 8];
    for (bx, by) in x.chunks_exact(Q6_K_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let ql = &bx[0..128];
        let qh = &bx[128..192];
        let sc = &bx[192..208];
        let (yd, q8, _) = q8_k_fields(by);

        let mut a = [0i8; QK_K];
        for (e, ae) in a.iter_mut().enumerate() {
            *ae = q6_k_value(ql, qh, e) as i8;
        }
        let aux32 = lane_sums(q8, &a, |e| sc[e / 16] as i8 as i32);
        let d = f16_at(bx, 208) * yd;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
    }
    let mut sumf = 0.0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_unpacking_matches_ggml_word_tricks() {
        // ggml unpacks the Q4_K scales with u32 masks (kmask1..3) in the dot product and with
        // get_scale_min_k4 in dequantization; check they agree on arbitrary bytes.
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..200 {
            let mut q = [0u8; 12];
            for b in q.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            let w =
                |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
            let (k1, k2, k3) = (0x3f3f3f3fu32, 0x0f0f0f0fu32, 0x03030303u32);
            let mut utmp = [w(0), w(1), w(2), 0];
            utmp[3] = ((utmp[2] >> 4) & k2) | (((utmp[1] >> 6) & k3) << 4);
            let uaux = utmp[1] & k1;
            utmp[1] = (utmp[2] & k2) | (((utmp[0] >> 6) & k3) << 4);
            utmp[2] = uaux;
            utmp[0] &= k1;
            let bytes: Vec<u8> = utmp.iter().flat_map(|u| u.to_le_bytes()).collect();
            for j in 0..8 {
                assert_eq!(get_scale_min_k4(j, &q), (bytes[j], bytes[8 + j]));
            }

            // Q3_K: ggml's aux[] word shuffle.
            let (m1, m2) = (0x03030303u32, 0x0f0f0f0fu32);
            let mut aux = [w(0), w(1), w(2), 0];
            let tmp = aux[2];
            aux[2] = ((aux[0] >> 4) & m2) | (((tmp >> 4) & m1) << 4);
            aux[3] = ((aux[1] >> 4) & m2) | (((tmp >> 6) & m1) << 4);
            aux[0] = (aux[0] & m2) | ((tmp & m1) << 4);
            aux[1] = (aux[1] & m2) | (((tmp >> 2) & m1) << 4);
            let bytes: Vec<u8> = aux.iter().flat_map(|u| u.to_le_bytes()).collect();
            let s = q3_k_scales(&q);
            for j in 0..16 {
                assert_eq!(s[j], bytes[j] as i8 as i32 - 32);
            }
        }
    }

    #[test]
    fn q8_k_quantize_known_values() {
        let mut x = vec![0.0f32; QK_K];
        x[3] = -2.0; // largest magnitude, negative: iscale = 63.5
        x[4] = 1.0;
        x[5] = 2.0;
        x[17] = 0.0078125; // 0.49609375 after scaling -> 0
        x[18] = 0.023622047; // just under 1.5 after scaling
        let mut q = vec![0u8; Q8_K_BYTES];
        quantize_row_q8_k(&x, &mut q);
        let d = f32_at(&q, 0);
        assert_eq!(d, 1.0 / (-127.0f32 / -2.0));
        assert_eq!(q[4 + 3] as i8, -127);
        assert_eq!(q[4 + 4] as i8, 64); // 63.5 ties to even -> 64
        assert_eq!(q[4 + 5] as i8, 127);
        assert_eq!(q[4 + 17] as i8, 0);
        assert_eq!(i16_at(&q, 260), -127 + 64 + 127);
        let expected18 = nearest_int(63.5 * 0.023622047);
        assert_eq!(q[4 + 18] as i8 as i32, expected18);
        assert_eq!(i16_at(&q, 262) as i32, expected18);
        // All-zero block.
        let mut z = vec![0xAAu8; Q8_K_BYTES];
        quantize_row_q8_k(&[0.0; QK_K], &mut z);
        assert!(z.iter().all(|&b| b == 0));
        // Dequantize: d * q.
        let mut y = vec![0.0f32; QK_K];
        dequantize_row_q8_k(&q, &mut y);
        assert_eq!(y[3], d * -127.0);
        assert_eq!(y[5], d * 127.0);
    }
}
