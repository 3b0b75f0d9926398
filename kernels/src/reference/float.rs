//! Plain floating-point element types: F32, F16, BF16 (block size 1).
//!
//! Layouts (per element, little-endian):
//! * `F32`:  4 bytes, IEEE binary32.
//! * `F16`:  2 bytes, IEEE binary16. To f32: exact (`GGML_FP16_TO_FP32`).
//! * `BF16`: 2 bytes, the upper half of a binary32. To f32: `bits << 16`, exact, NaN payloads
//!   kept (`GGML_BF16_TO_FP32`).
//!
//! The dot products follow ggml's scalar `ggml_vec_dot_f32`/`_f16`/`_bf16`: each product is
//! formed in f32, widened to f64 (`ggml_float`) and summed in f64 in index order; the sum is
//! rounded to f32 once at the end.

use super::{assert_row, f16_at, f32_at, f32_to_f16_bits, u16_at};
use crate::GgmlType;

/// F32 → f32: a little-endian copy (bit patterns, NaN payloads included, are preserved).
pub fn dequantize_row_f32(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::F32, dst.len(), src.len());
    for (y, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *y = f32_at(b, 0);
    }
}

/// F16 → f32, exact for every non-NaN value. (NaNs stay NaN; their payload may differ from
/// other converters, which quiet signalling NaNs differently.)
pub fn dequantize_row_f16(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::F16, dst.len(), src.len());
    for (y, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *y = f16_at(b, 0);
    }
}

/// BF16 → f32: `bits << 16`.
pub fn dequantize_row_bf16(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::BF16, dst.len(), src.len());
    for (y, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *y = bf16_bits_to_f32(u16_at(b, 0));
    }
}

#[inline(always)]
fn bf16_bits_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// ggml's `ggml_compute_fp32_to_bf16`: NaNs become quiet NaNs keeping the sign and upper
/// payload (`(bits >> 16) | 64`); everything else rounds to nearest, ties to even.
pub fn fp32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// f32 activations → F32 bytes (little-endian copy).
pub fn quantize_row_f32(x: &[f32], out: &mut [u8]) {
    assert_row(GgmlType::F32, x.len(), out.len());
    for (v, o) in x.iter().zip(out.chunks_exact_mut(4)) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// f32 activations → F16, round to nearest even (ggml-cpu's `ggml_cpu_fp32_to_fp16`).
pub fn quantize_row_f16(x: &[f32], out: &mut [u8]) {
    assert_row(GgmlType::F16, x.len(), out.len());
    for (v, o) in x.iter().zip(out.chunks_exact_mut(2)) {
        o.copy_from_slice(&f32_to_f16_bits(*v).to_le_bytes());
    }
}

/// f32 activations → BF16 with [`fp32_to_bf16_bits`] (ggml-cpu's `ggml_cpu_fp32_to_bf16`).
pub fn quantize_row_bf16(x: &[f32], out: &mut [u8]) {
    assert_row(GgmlType::BF16, x.len(), out.len());
    for (v, o) in x.iter().zip(out.chunks_exact_mut(2)) {
        o.copy_from_slice(&fp32_to_bf16_bits(*v).to_le_bytes());
    }
}

/// Σ x[i]·y[i] over `n` F32 elements: f32 products, f64 sum, rounded to f32 at the end.
#[inline(always)]
pub fn vec_dot_f32(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert_row(GgmlType::F32, n, x.len());
    assert_row(GgmlType::F32, n, y.len());
    let mut sumf = 0.0f64;
    for (a, b) in x.chunks_exact(4).zip(y.chunks_exact(4)) {
        sumf += (f32_at(a, 0) * f32_at(b, 0)) as f64;
    }
    sumf as f32
}

/// Σ x[i]·y[i] over `n` F16 elements (weights `x`, activations `y` both F16): each product is
/// the f32 product of the exactly converted halves, summed in f64, rounded to f32 at the end.
#[inline(always)]
pub fn vec_dot_f16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert_row(GgmlType::F16, n, x.len());
    assert_row(GgmlType::F16, n, y.len());
    let mut sumf = 0.0f64;
    for (a, b) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        sumf += (f16_at(a, 0) * f16_at(b, 0)) as f64;
    }
    sumf as f32
}

/// Σ x[i]·y[i] over `n` BF16 elements: f32 products, f64 sum, rounded to f32 at the end.
#[inline(always)]
pub fn vec_dot_bf16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert_row(GgmlType::BF16, n, x.len());
    assert_row(GgmlType::BF16, n, y.len());
    let mut sumf = 0.0f64;
    for (a, b) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        sumf += (bf16_bits_to_f32(u16_at(a, 0)) * bf16_bits_to_f32(u16_at(b, 0))) as f64;
    }
    sumf as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_ggml() {
        // Exactly representable: unchanged.
        assert_eq!(fp32_to_bf16_bits(1.0), 0x3f80);
        // Tie (lower half 0x8000): to even.
        assert_eq!(fp32_to_bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(fp32_to_bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        // Above the tie rounds up.
        assert_eq!(fp32_to_bf16_bits(f32::from_bits(0x3f80_8001)), 0x3f81);
        // NaN: quieted, sign and upper payload kept.
        assert_eq!(fp32_to_bf16_bits(f32::from_bits(0xff80_0001)), 0xffc0);
        assert_eq!(fp32_to_bf16_bits(f32::INFINITY), 0x7f80);
        // Round trip through the dequantizer.
        let mut out = [0u8; 2];
        quantize_row_bf16(&[-2.5], &mut out);
        let mut back = [0.0f32];
        dequantize_row_bf16(&out, &mut back);
        assert_eq!(back[0], -2.5);
    }

    #[test]
    fn float_dots_accumulate_in_f64() {
        // 1e8 + 1 - 1e8 would lose the 1 in f32 accumulation.
        let xs = [1.0e8f32, 1.0, -1.0e8];
        let ys = [1.0f32, 1.0, 1.0];
        let mut xb = vec![0u8; 12];
        let mut yb = vec![0u8; 12];
        quantize_row_f32(&xs, &mut xb);
        quantize_row_f32(&ys, &mut yb);
        assert_eq!(vec_dot_f32(3, &xb, &yb), 1.0);
        let mut xh = vec![0u8; 6];
        let mut yh = vec![0u8; 6];
        quantize_row_f16(&[2048.0, 1.0, -2048.0], &mut xh);
        quantize_row_f16(&[1.0, 0.5, 1.0], &mut yh);
        assert_eq!(vec_dot_f16(3, &xh, &yh), 0.5);
    }
}
