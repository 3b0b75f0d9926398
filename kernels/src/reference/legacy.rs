//! The "legacy" 32-element block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.
//!
//! All of them split a block into two halves: byte `j` of `qs` holds element `j` in its low
//! nibble and element `j + 16` in its high nibble (Q4/Q5); the fifth bit of element `j` of a
//! Q5 block is bit `j` of the little-endian u32 `qh`.
//!
//! Dequantization follows `dequantize_row_*` in `ggml-quants.c`, the quantizers follow
//! `quantize_row_q8_0_ref`/`quantize_row_q8_1_ref`, and the dot products follow the
//! `ggml_vec_dot_*_generic` functions in `ggml-cpu/quants.c` (same integer sums, same float
//! operations in the same order).

use super::{assert_row, c_max, f16_at, f32_to_f16_bits, u32_at};
use crate::GgmlType;

/// Elements per block of every type in this module.
pub const QK: usize = 32;

/// Bytes per block.
const Q4_0_BYTES: usize = 18;
const Q4_1_BYTES: usize = 20;
const Q5_0_BYTES: usize = 22;
const Q5_1_BYTES: usize = 24;
const Q8_0_BYTES: usize = 34;
const Q8_1_BYTES: usize = 36;

/// Q4_0, 18 bytes per 32 elements:
///
/// | bytes  | field | meaning                                        |
/// |--------|-------|------------------------------------------------|
/// | 0..2   | `d`   | f16 scale                                      |
/// | 2..18  | `qs`  | 4-bit quants: `qs[j] = q[j] \| q[j+16] << 4`   |
///
/// `y[j] = (q[j] - 8) * d` (the integer converted to f32, times `d`).
pub fn dequantize_row_q4_0(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::Q4_0, dst.len(), src.len());
    for (b, y) in src.chunks_exact(Q4_0_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let qs = &b[2..18];
        for j in 0..QK / 2 {
            let x0 = (qs[j] & 0x0F) as i32 - 8;
            let x1 = (qs[j] >> 4) as i32 - 8;
            y[j] = x0 as f32 * d;
            y[j + QK / 2] = x1 as f32 * d;
        }
    }
}

/// Q4_1, 20 bytes per 32 elements:
///
/// | bytes  | field | meaning                                        |
/// |--------|-------|------------------------------------------------|
/// | 0..2   | `d`   | f16 scale                                      |
/// | 2..4   | `m`   | f16 offset (the block minimum)                 |
/// | 4..20  | `qs`  | 4-bit quants, split halves as Q4_0             |
///
/// `y[j] = q[j] * d + m` (multiply, round, add, round: no fused multiply-add).
pub fn dequantize_row_q4_1(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::Q4_1, dst.len(), src.len());
    for (b, y) in src.chunks_exact(Q4_1_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qs = &b[4..20];
        for j in 0..QK / 2 {
            let x0 = (qs[j] & 0x0F) as i32;
            let x1 = (qs[j] >> 4) as i32;
            y[j] = x0 as f32 * d + m;
            y[j + QK / 2] = x1 as f32 * d + m;
        }
    }
}

/// The 5th bits of elements `j` and `j + 16` of a Q5 block, already shifted to bit 4.
#[inline(always)]
fn q5_high_bits(qh: u32, j: usize) -> (u8, u8) {
    let xh_0 = (((qh >> j) << 4) & 0x10) as u8;
    let xh_1 = ((qh >> (j + 12)) & 0x10) as u8;
    (xh_0, xh_1)
}

/// Q5_0, 22 bytes per 32 elements:
///
/// | bytes  | field | meaning                                                  |
/// |--------|-------|----------------------------------------------------------|
/// | 0..2   | `d`   | f16 scale                                                |
/// | 2..6   | `qh`  | u32 LE, bit `j` = 5th bit of element `j`                 |
/// | 6..22  | `qs`  | low 4 bits, split halves as Q4_0                         |
///
/// `y[j] = (q[j] - 16) * d` with `q[j]` the 5-bit value.
pub fn dequantize_row_q5_0(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::Q5_0, dst.len(), src.len());
    for (b, y) in src.chunks_exact(Q5_0_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let qh = u32_at(b, 2);
        let qs = &b[6..22];
        for j in 0..QK / 2 {
            let (xh_0, xh_1) = q5_high_bits(qh, j);
            let x0 = ((qs[j] & 0x0F) | xh_0) as i32 - 16;
            let x1 = ((qs[j] >> 4) | xh_1) as i32 - 16;
            y[j] = x0 as f32 * d;
            y[j + QK / 2] = x1 as f32 * d;
        }
    }
}

/// Q5_1, 24 bytes per 32 elements:
///
/// | bytes  | field | meaning                                                  |
/// |--------|-------|----------------------------------------------------------|
/// | 0..2   | `d`   | f16 scale                                                |
/// | 2..4   | `m`   | f16 offset                                               |
/// | 4..8   | `qh`  | u32 LE, bit `j` = 5th bit of element `j`                 |
/// | 8..24  | `qs`  | low 4 bits, split halves as Q4_0                         |
///
/// `y[j] = q[j] * d + m` with `q[j]` the 5-bit value.
pub fn dequantize_row_q5_1(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::Q5_1, dst.len(), src.len());
    for (b, y) in src.chunks_exact(Q5_1_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qh = u32_at(b, 4);
        let qs = &b[8..24];
        for j in 0..QK / 2 {
            let (xh_0, xh_1) = q5_high_bits(qh, j);
            let x0 = ((qs[j] & 0x0F) | xh_0) as i32;
            let x1 = ((qs[j] >> 4) | xh_1) as i32;
            y[j] = x0 as f32 * d + m;
            y[j + QK / 2] = x1 as f32 * d + m;
        }
    }
}

/// Q8_0, 34 bytes per 32 elements:
///
/// | bytes  | field | meaning               |
/// |--------|-------|-----------------------|
/// | 0..2   | `d`   | f16 scale             |
/// | 2..34  | `qs`  | i8 quants, in order   |
///
/// `y[j] = qs[j] * d`.
pub fn dequantize_row_q8_0(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::Q8_0, dst.len(), src.len());
    for (b, y) in src.chunks_exact(Q8_0_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (yj, &q) in y.iter_mut().zip(&b[2..34]) {
            *yj = q as i8 as f32 * d;
        }
    }
}

/// Q8_1, 36 bytes per 32 elements (an activation type: ggml has no `dequantize_row_q8_1`):
///
/// | bytes  | field | meaning                                          |
/// |--------|-------|--------------------------------------------------|
/// | 0..2   | `d`   | f16 scale                                        |
/// | 2..4   | `s`   | f16 `d * Σ qs` (used by the Q4_1/Q5_1 dot)       |
/// | 4..36  | `qs`  | i8 quants, in order                              |
///
/// `y[j] = qs[j] * d`, as Q8_0; `s` is not used.
pub fn dequantize_row_q8_1(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::Q8_1, dst.len(), src.len());
    for (b, y) in src.chunks_exact(Q8_1_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (yj, &q) in y.iter_mut().zip(&b[4..36]) {
            *yj = q as i8 as f32 * d;
        }
    }
}

/// Block absolute maximum as ggml's `_ref` quantizers form it: `amax = MAX(amax, fabsf(v))`.
#[inline(always)]
fn block_amax(xb: &[f32]) -> f32 {
    xb.iter().fold(0.0f32, |amax, v| c_max(amax, v.abs()))
}

/// f32 activations → Q8_0 (`quantize_row_q8_0_ref`): `d = amax / 127`, stored as f16;
/// `qs[j] = roundf(x[j] * (1/d))` (ties away from zero; the unrounded f32 `d` is used for
/// `1/d`, 0 when `d == 0`).
///
/// # Panics
/// If `x.len()` is not a multiple of 32 or `out` is not exactly `x.len() / 32 * 34` bytes.
pub fn quantize_row_q8_0(x: &[f32], out: &mut [u8]) {
    assert_row(GgmlType::Q8_0, x.len(), out.len());
    for (xb, yb) in x.chunks_exact(QK).zip(out.chunks_exact_mut(Q8_0_BYTES)) {
        let amax = block_amax(xb);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb[0..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        for (q, &v) in yb[2..].iter_mut().zip(xb) {
            *q = super::roundf(v * id) as i8 as u8;
        }
    }
}

/// f32 activations → Q8_1 (`quantize_row_q8_1_ref`): as Q8_0, plus `s = f16(Σ qs * d)` with
/// the integer sum converted to f32 and multiplied by the unrounded f32 `d`.
///
/// # Panics
/// If `x.len()` is not a multiple of 32 or `out` is not exactly `x.len() / 32 * 36` bytes.
pub fn quantize_row_q8_1(x: &[f32], out: &mut [u8]) {
    assert_row(GgmlType::Q8_1, x.len(), out.len());
    for (xb, yb) in x.chunks_exact(QK).zip(out.chunks_exact_mut(Q8_1_BYTES)) {
        let amax = block_amax(xb);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb[0..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        let mut sum: i32 = 0;
        for j in 0..QK / 2 {
            let q0 = super::roundf(xb[j] * id) as i8;
            let q1 = super::roundf(xb[j + QK / 2] * id) as i8;
            yb[4 + j] = q0 as u8;
            yb[4 + j + QK / 2] = q1 as u8;
            sum += q0 as i32 + q1 as i32;
        }
        yb[2..4].copy_from_slice(&f32_to_f16_bits(sum as f32 * d).to_le_bytes());
    }
}

#[inline(always)]
fn assert_dot(wt: GgmlType, yt: GgmlType, n: usize, x: &[u8], y: &[u8]) {
    assert_row(wt, n, x.len());
    assert_row(yt, n, y.len());
}

/// Q4_0 · Q8_0 (`ggml_vec_dot_q4_0_q8_0_generic`): per block the integer
/// `sumi = Σ (q4 - 8) * q8`, then `sumf += (sumi * dx) * dy`.
///
/// # Panics
/// If `n` is not a multiple of 32 or `x`/`y` are not exactly the bytes of `n` elements.
#[inline(always)]
pub fn vec_dot_q4_0_q8_0(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert_dot(GgmlType::Q4_0, GgmlType::Q8_0, n, x, y);
    let mut sumf = 0.0f32;
    for (bx, by) in x.chunks_exact(Q4_0_BYTES).zip(y.chunks_exact(Q8_0_BYTES)) {
        let (qx, qy) = (&bx[2..18], &by[2..34]);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..QK / 2 {
            let v0 = (qx[j] & 0x0F) as i32 - 8;
            let v1 = (qx[j] >> 4) as i32 - 8;
            sumi0 += v0 * qy[j] as i8 as i32;
            sumi1 += v1 * qy[j + QK / 2] as i8 as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += sumi as f32 * f16_at(bx, 0) * f16_at(by, 0);
    }
    sumf
}

/// Q4_1 · Q8_1 (`ggml_vec_dot_q4_1_q8_1_generic`): `sumi = Σ q4 * q8`, then
/// `sumf += (dx * dy) * sumi + mx * sy`.
///
/// # Panics
/// If `n` is not a multiple of 32 or `x`/`y` are not exactly the bytes of `n` elements.
#[inline(always)]
pub fn vec_dot_q4_1_q8_1(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert_dot(GgmlType::Q4_1, GgmlType::Q8_1, n, x, y);
    let mut sumf = 0.0f32;
    for (bx, by) in x.chunks_exact(Q4_1_BYTES).zip(y.chunks_exact(Q8_1_BYTES)) {
        let (qx, qy) = (&bx[4..20], &by[4..36]);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..QK / 2 {
            let v0 = (qx[j] & 0x0F) as i32;
            let v1 = (qx[j] >> 4) as i32;
            sumi0 += v0 * qy[j] as i8 as i32;
            sumi1 += v1 * qy[j + QK / 2] as i8 as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (f16_at(bx, 0) * f16_at(by, 0)) * sumi as f32 + f16_at(bx, 2) * f16_at(by, 2);
    }
    sumf
}

/// Q5_0 · Q8_0 (`ggml_vec_dot_q5_0_q8_0_generic`): `sumi = Σ (q5 - 16) * q8`, then
/// `sumf += (dx * dy) * sumi`.
///
/// # Panics
/// If `n` is not a multiple of 32 or `x`/`y` are not exactly the bytes of `n` elements.
#[inline(always)]
pub fn vec_dot_q5_0_q8_0(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert_dot(GgmlType::Q5_0, GgmlType::Q8_0, n, x, y);
    let mut sumf = 0.0f32;
    for (bx, by) in x.chunks_exact(Q5_0_BYTES).zip(y.chunks_exact(Q8_0_BYTES)) {
        let qh = u32_at(bx, 2);
        let (qx, qy) = (&bx[6..22], &by[2..34]);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..QK / 2 {
            let (xh_0, xh_1) = q5_high_bits(qh, j);
            let x0 = ((qx[j] & 0x0F) | xh_0) as i32 - 16;
            let x1 = ((qx[j] >> 4) | xh_1) as i32 - 16;
            sumi0 += x0 * qy[j] as i8 as i32;
            sumi1 += x1 * qy[j + QK / 2] as i8 as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (f16_at(bx, 0) * f16_at(by, 0)) * sumi as f32;
    }
    sumf
}

/// Q5_1 · Q8_1 (`ggml_vec_dot_q5_1_q8_1_generic`): `sumi = Σ q5 * q8`, then
/// `sumf += (dx * dy) * sumi + mx * sy`.
///
/// # Panics
/// If `n` is not a multiple of 32 or `x`/`y` are not exactly the bytes of `n` elements.
#[inline(always)]
pub fn vec_dot_q5_1_q8_1(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert_dot(GgmlType::Q5_1, GgmlType::Q8_1, n, x, y);
    let mut sumf = 0.0f32;
    for (bx, by) in x.chunks_exact(Q5_1_BYTES).zip(y.chunks_exact(Q8_1_BYTES)) {
        let qh = u32_at(bx, 4);
        let (qx, qy) = (&bx[8..24], &by[4..36]);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..QK / 2 {
            let (xh_0, xh_1) = q5_high_bits(qh, j);
            let x0 = ((qx[j] & 0x0F) | xh_0) as i32;
            let x1 = ((qx[j] >> 4) | xh_1) as i32;
            sumi0 += x0 * qy[j] as i8 as i32;
            sumi1 += x1 * qy[j + QK / 2] as i8 as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (f16_at(bx, 0) * f16_at(by, 0)) * sumi as f32 + f16_at(bx, 2) * f16_at(by, 2);
    }
    sumf
}

/// Q8_0 · Q8_0 (`ggml_vec_dot_q8_0_q8_0_generic`): `sumi = Σ qx * qy`, then
/// `sumf += sumi * (dx * dy)`.
///
/// # Panics
/// If `n` is not a multiple of 32 or `x`/`y` are not exactly the bytes of `n` elements.
#[inline(always)]
pub fn vec_dot_q8_0_q8_0(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert_dot(GgmlType::Q8_0, GgmlType::Q8_0, n, x, y);
    let mut sumf = 0.0f32;
    for (bx, by) in x.chunks_exact(Q8_0_BYTES).zip(y.chunks_exact(Q8_0_BYTES)) {
        let sumi: i32 = bx[2..34]
            .iter()
            .zip(&by[2..34])
            .map(|(&a, &b)| a as i8 as i32 * b as i8 as i32)
            .sum();
        sumf += sumi as f32 * (f16_at(bx, 0) * f16_at(by, 0));
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_known_block() {
        // d = 0.5 (f16 0x3800); qs[0] = 0x0F -> element 0 = (15-8)*0.5, element 16 = (0-8)*0.5.
        let mut b = vec![0u8; Q4_0_BYTES];
        b[0..2].copy_from_slice(&0x3800u16.to_le_bytes());
        b[2] = 0x0F;
        let mut y = [0.0f32; 32];
        dequantize_row_q4_0(&b, &mut y);
        assert_eq!(y[0], 3.5);
        assert_eq!(y[16], -4.0);
        assert_eq!(y[1], -4.0);
    }

    #[test]
    fn q5_high_bit_positions() {
        // qh bit 0 -> element 0, bit 16 -> element 16, bit 31 -> element 31.
        let mut b = vec![0u8; Q5_1_BYTES];
        b[0..2].copy_from_slice(&0x3c00u16.to_le_bytes()); // d = 1
        b[4..8].copy_from_slice(&(1u32 | 1 << 16 | 1 << 31).to_le_bytes());
        let mut y = [0.0f32; 32];
        dequantize_row_q5_1(&b, &mut y);
        assert_eq!(y[0], 16.0);
        assert_eq!(y[16], 16.0);
        assert_eq!(y[31], 16.0);
        assert_eq!(y[1], 0.0);
        assert_eq!(y[15], 0.0);
    }

    #[test]
    fn q8_1_stores_scaled_sum() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 10.0).collect();
        let mut q = vec![0u8; Q8_1_BYTES];
        quantize_row_q8_1(&x, &mut q);
        let d = f16_at(&q, 0);
        let s = f16_at(&q, 2);
        let sum: i32 = q[4..].iter().map(|&b| b as i8 as i32).sum();
        assert_eq!(q[4 + 31] as i8, 127); // x[31] = 21 is the block maximum
        let dd = 21.0f32 / 127.0; // unrounded d used for s
        assert_eq!(s, half::f16::from_f32(sum as f32 * dd).to_f32());
        assert_eq!(d, half::f16::from_f32(dd).to_f32());
    }
}

/// f32 activations → Q8_0 as ggml-cpu's x86 build (AVX/AVX2) computes it for matrix products:
/// `d = amax / 127` stored as f16, but the multiplier is `127 / amax` (not `1 / d`) and values
/// round half to even (`_mm256_round_ps` with `_MM_ROUND_NEAREST`). The bytes differ from
/// [`quantize_row_q8_0`] (ggml's `_ref`) only where `x * id` falls at or near a half-integer,
/// yet that is enough to move a small model's perplexity by ~0.2%, so the engine uses this to
/// agree with llama.cpp on x86.
pub fn quantize_row_q8_0_x86(x: &[f32], out: &mut [u8]) {
    assert_row(GgmlType::Q8_0, x.len(), out.len());
    for (xb, yb) in x.chunks_exact(QK).zip(out.chunks_exact_mut(Q8_0_BYTES)) {
        let amax = block_amax(xb);
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        yb[0..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        for (q, &v) in yb[2..].iter_mut().zip(xb) {
            *q = (v * id).round_ties_even() as i8 as u8;
        }
    }
}

/// f32 activations → Q8_1 as ggml-cpu's x86 build computes it (see [`quantize_row_q8_0_x86`]),
/// with `s = f16(d * Σ qs)`.
pub fn quantize_row_q8_1_x86(x: &[f32], out: &mut [u8]) {
    assert_row(GgmlType::Q8_1, x.len(), out.len());
    for (xb, yb) in x.chunks_exact(QK).zip(out.chunks_exact_mut(Q8_1_BYTES)) {
        let amax = block_amax(xb);
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        yb[0..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        let mut sum: i32 = 0;
        for (j, &v) in xb.iter().enumerate() {
            let q = (v * id).round_ties_even() as i8;
            yb[4 + j] = q as u8;
            sum += q as i32;
        }
        yb[2..4].copy_from_slice(&f32_to_f16_bits(d * sum as f32).to_le_bytes());
    }
}
