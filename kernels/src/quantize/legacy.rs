//! Weight quantizers for the 32-element block types Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0
//! (`quantize_row_*_ref`, `quantize_row_*_impl` and `quantize_*` in `ggml-quants.c`).
//!
//! Block layouts are documented on the dequantizers in [`crate::reference::legacy`].

use super::search::{make_qkx_quants, make_qx_quants, MinSearch};
use super::{assert_chunk, c_f32_to_i32, chunk, put_f16};
use crate::reference::{assert_row, c_max};
use crate::GgmlType;

const QK: usize = 32;

/// `MIN(cap, (int8_t)v)` as C computes it: gcc's truncating float→int conversion, keep the low
/// byte as `int8_t`, then the int comparison (a wrapped negative stays negative).
#[inline(always)]
fn min_i8(cap: i32, v: f32) -> u8 {
    cap.min(c_f32_to_i32(v) as i8 as i32) as u8
}

/// Pack 32 quants `l[j]` (values < 32) into `qs[j] = l[j] & 15 | (l[j+16] & 15) << 4` and the
/// fifth bits into the little-endian u32 `qh` (bit `j` = bit 4 of `l[j]`), returning `qh`.
#[inline(always)]
fn pack_q5(l: &[u8], qs: &mut [u8]) -> u32 {
    let mut qh = 0u32;
    for j in 0..QK / 2 {
        let (xi0, xi1) = (l[j], l[j + QK / 2]);
        qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= ((xi0 as u32 & 0x10) >> 4) << j;
        qh |= ((xi1 as u32 & 0x10) >> 4) << (j + QK / 2);
    }
    qh
}

/// `sigma2 = Σx² / n_per_row` over the whole row (the legacy `_impl` functions).
#[inline(always)]
fn row_sigma2(x: &[f32]) -> f32 {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    sum_x2 / x.len() as f32
}

/// `weight[j] = qw[j] * sqrtf(sigma2 + x[j]*x[j])`.
#[inline(always)]
fn block_weights(xb: &[f32], qw: &[f32], sigma2: f32) -> [f32; QK] {
    let mut w = [0.0f32; QK];
    for j in 0..QK {
        w[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
    }
    w
}

// ---------------------------------------------------------------------------------------------
// Q4_0

/// `quantize_row_q4_0_ref`: per block, `d = max / -8` where `max` is the element of largest
/// magnitude, `q = MIN(15, (int8_t)(x/d + 8.5))`.
///
/// # Panics
/// If `x.len()` is not a multiple of 32 or `y` is not exactly its Q4_0 size.
pub fn quantize_row_q4_0_ref(x: &[f32], y: &mut [u8]) {
    assert_row(GgmlType::Q4_0, x.len(), y.len());
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(18)) {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(yb, 0, d);
        for j in 0..QK / 2 {
            let xi0 = min_i8(15, xb[j] * id + 8.5);
            let xi1 = min_i8(15, xb[j + QK / 2] * id + 8.5);
            yb[2 + j] = xi0 | (xi1 << 4);
        }
    }
}

/// `quantize_row_q4_0_impl` with importance weights `qw` (`n_per_row` values): per block,
/// weights `qw[j] * sqrt(sigma2 + x[j]²)` (`sigma2` = mean square of the row) and
/// `make_qx_quants(32, 8, ..)`. One row.
///
/// # Panics
/// If `x.len()` is not a multiple of 32, `qw.len() != x.len()` or `y` has the wrong size.
pub fn quantize_row_q4_0_impl(x: &[f32], qw: &[f32], y: &mut [u8]) {
    assert_row(GgmlType::Q4_0, x.len(), y.len());
    assert_eq!(qw.len(), x.len(), "imatrix length");
    let sigma2 = row_sigma2(x);
    let mut l = [0i8; QK];
    for ((xb, qb), yb) in x
        .chunks_exact(QK)
        .zip(qw.chunks_exact(QK))
        .zip(y.chunks_exact_mut(18))
    {
        let weight = block_weights(xb, qb, sigma2);
        let d = make_qx_quants(8, xb, &mut l, Some(&weight));
        put_f16(yb, 0, d);
        for j in 0..QK / 2 {
            yb[2 + j] = (l[j] as i32 | ((l[j + QK / 2] as i32) << 4)) as u8;
        }
    }
}

/// ggml's `quantize_q4_0`: rows of `n_per_row` from `src` to Q4_0 in `dst`.
///
/// # Panics
/// On inconsistent sizes (see [`super::quantize_rows`], which checks them and returns errors).
pub fn quantize_q4_0(src: &[f32], n_per_row: usize, imatrix: Option<&[f32]>, dst: &mut [u8]) {
    chunk(
        GgmlType::Q4_0,
        src,
        n_per_row,
        imatrix,
        dst,
        quantize_row_q4_0_ref,
        quantize_row_q4_0_impl,
    );
}

// ---------------------------------------------------------------------------------------------
// Q4_1

/// `quantize_row_q4_1_ref`: per block `d = (max - min) / 15`, `m = min`,
/// `q = MIN(15, (int8_t)((x - min)/d + 0.5))`.
///
/// # Panics
/// If `x.len()` is not a multiple of 32 or `y` is not exactly its Q4_1 size.
pub fn quantize_row_q4_1_ref(x: &[f32], y: &mut [u8]) {
    assert_row(GgmlType::Q4_1, x.len(), y.len());
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(20)) {
        let (min, max) = block_min_max(xb);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(yb, 0, d);
        put_f16(yb, 2, min);
        for j in 0..QK / 2 {
            let xi0 = min_i8(15, (xb[j] - min) * id + 0.5);
            let xi1 = min_i8(15, (xb[j + QK / 2] - min) * id + 0.5);
            yb[4 + j] = xi0 | (xi1 << 4);
        }
    }
}

/// `min` starting at `FLT_MAX` and `max` at `-FLT_MAX`, updated with `<` and `>`.
#[inline(always)]
fn block_min_max(xb: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in xb {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// Search parameters of the legacy asymmetric `_impl` quantizers (`make_qkx3_quants(.., -0.9f,
/// 0.05f, 36, false)`).
const QKX3_LEGACY: MinSearch = MinSearch {
    rmin: -0.9,
    rdelta: 0.05,
    nstep: 36,
    use_mad: false,
};

/// `quantize_row_q4_1_impl` with importance weights: `make_qkx3_quants(32, 15, ..)` per block,
/// `d = scale`, `m = -the_min`. One row.
///
/// # Panics
/// If `x.len()` is not a multiple of 32, `qw.len() != x.len()` or `y` has the wrong size.
pub fn quantize_row_q4_1_impl(x: &[f32], qw: &[f32], y: &mut [u8]) {
    assert_row(GgmlType::Q4_1, x.len(), y.len());
    assert_eq!(qw.len(), x.len(), "imatrix length");
    let sigma2 = row_sigma2(x);
    let mut l = [0u8; QK];
    let mut laux = [0u8; QK];
    for ((xb, qb), yb) in x
        .chunks_exact(QK)
        .zip(qw.chunks_exact(QK))
        .zip(y.chunks_exact_mut(20))
    {
        let weight = block_weights(xb, qb, sigma2);
        let (d, min) = make_qkx_quants(15, xb, &weight, &mut l, &mut laux, QKX3_LEGACY, true);
        put_f16(yb, 0, d);
        put_f16(yb, 2, -min);
        for j in 0..QK / 2 {
            yb[4 + j] = l[j] | (l[j + QK / 2] << 4);
        }
    }
}

/// ggml's `quantize_q4_1`.
///
/// # Panics
/// On inconsistent sizes (see [`super::quantize_rows`]).
pub fn quantize_q4_1(src: &[f32], n_per_row: usize, imatrix: Option<&[f32]>, dst: &mut [u8]) {
    chunk(
        GgmlType::Q4_1,
        src,
        n_per_row,
        imatrix,
        dst,
        quantize_row_q4_1_ref,
        quantize_row_q4_1_impl,
    );
}

// ---------------------------------------------------------------------------------------------
// Q5_0

/// `quantize_row_q5_0_ref`: `d = max / -16`, `q = MIN(31, (int8_t)(x/d + 16.5))`.
///
/// # Panics
/// If `x.len()` is not a multiple of 32 or `y` is not exactly its Q5_0 size.
pub fn quantize_row_q5_0_ref(x: &[f32], y: &mut [u8]) {
    assert_row(GgmlType::Q5_0, x.len(), y.len());
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(22)) {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(yb, 0, d);
        let mut l = [0u8; QK];
        for j in 0..QK {
            l[j] = min_i8(31, xb[j] * id + 16.5);
        }
        let qh = pack_q5(&l, &mut yb[6..22]);
        yb[2..6].copy_from_slice(&qh.to_le_bytes());
    }
}

/// `quantize_row_q5_0_impl` with importance weights: `make_qx_quants(32, 16, ..)` per block.
/// One row.
///
/// # Panics
/// If `x.len()` is not a multiple of 32, `qw.len() != x.len()` or `y` has the wrong size.
pub fn quantize_row_q5_0_impl(x: &[f32], qw: &[f32], y: &mut [u8]) {
    assert_row(GgmlType::Q5_0, x.len(), y.len());
    assert_eq!(qw.len(), x.len(), "imatrix length");
    let sigma2 = row_sigma2(x);
    let mut l = [0i8; QK];
    for ((xb, qb), yb) in x
        .chunks_exact(QK)
        .zip(qw.chunks_exact(QK))
        .zip(y.chunks_exact_mut(22))
    {
        let weight = block_weights(xb, qb, sigma2);
        let d = make_qx_quants(16, xb, &mut l, Some(&weight));
        put_f16(yb, 0, d);
        let lu = l.map(|v| v as u8);
        let qh = pack_q5(&lu, &mut yb[6..22]);
        yb[2..6].copy_from_slice(&qh.to_le_bytes());
    }
}

/// ggml's `quantize_q5_0`.
///
/// # Panics
/// On inconsistent sizes (see [`super::quantize_rows`]).
pub fn quantize_q5_0(src: &[f32], n_per_row: usize, imatrix: Option<&[f32]>, dst: &mut [u8]) {
    chunk(
        GgmlType::Q5_0,
        src,
        n_per_row,
        imatrix,
        dst,
        quantize_row_q5_0_ref,
        quantize_row_q5_0_impl,
    );
}

// ---------------------------------------------------------------------------------------------
// Q5_1

/// `quantize_row_q5_1_ref`: `d = (max - min) / 31`, `m = min`,
/// `q = (uint8_t)((x - min)/d + 0.5)` (no clamp).
///
/// # Panics
/// If `x.len()` is not a multiple of 32 or `y` is not exactly its Q5_1 size.
pub fn quantize_row_q5_1_ref(x: &[f32], y: &mut [u8]) {
    assert_row(GgmlType::Q5_1, x.len(), y.len());
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(24)) {
        let (min, max) = block_min_max(xb);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(yb, 0, d);
        put_f16(yb, 2, min);
        let mut l = [0u8; QK];
        for j in 0..QK {
            l[j] = c_f32_to_i32((xb[j] - min) * id + 0.5) as u8;
        }
        let qh = pack_q5(&l, &mut yb[8..24]);
        yb[4..8].copy_from_slice(&qh.to_le_bytes());
    }
}

/// `quantize_row_q5_1_impl` with importance weights: `make_qkx3_quants(32, 31, ..)` per block.
/// One row.
///
/// # Panics
/// If `x.len()` is not a multiple of 32, `qw.len() != x.len()` or `y` has the wrong size.
pub fn quantize_row_q5_1_impl(x: &[f32], qw: &[f32], y: &mut [u8]) {
    assert_row(GgmlType::Q5_1, x.len(), y.len());
    assert_eq!(qw.len(), x.len(), "imatrix length");
    let sigma2 = row_sigma2(x);
    let mut l = [0u8; QK];
    let mut laux = [0u8; QK];
    for ((xb, qb), yb) in x
        .chunks_exact(QK)
        .zip(qw.chunks_exact(QK))
        .zip(y.chunks_exact_mut(24))
    {
        let weight = block_weights(xb, qb, sigma2);
        let (d, min) = make_qkx_quants(31, xb, &weight, &mut l, &mut laux, QKX3_LEGACY, true);
        put_f16(yb, 0, d);
        put_f16(yb, 2, -min);
        let qh = pack_q5(&l, &mut yb[8..24]);
        yb[4..8].copy_from_slice(&qh.to_le_bytes());
    }
}

/// ggml's `quantize_q5_1`.
///
/// # Panics
/// On inconsistent sizes (see [`super::quantize_rows`]).
pub fn quantize_q5_1(src: &[f32], n_per_row: usize, imatrix: Option<&[f32]>, dst: &mut [u8]) {
    chunk(
        GgmlType::Q5_1,
        src,
        n_per_row,
        imatrix,
        dst,
        quantize_row_q5_1_ref,
        quantize_row_q5_1_impl,
    );
}

// ---------------------------------------------------------------------------------------------
// Q8_0

/// `quantize_row_q8_0_ref` as a weight quantizer: `d = amax / 127`, `q = (int8_t)roundf(x/d)`
/// (ties away from zero). Unlike [`crate::reference::quantize_row_q8_0`] (which saturates), the
/// float→int8 conversion is gcc's: NaN and out-of-range values (from `1/d` overflowing for
/// blocks with `amax` below ~3.7e-37) give 0, as in llama.cpp.
///
/// # Panics
/// If `x.len()` is not a multiple of 32 or `y` is not exactly its Q8_0 size.
pub fn quantize_row_q8_0_ref(x: &[f32], y: &mut [u8]) {
    assert_row(GgmlType::Q8_0, x.len(), y.len());
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(34)) {
        let mut amax = 0.0f32;
        for &v in xb {
            amax = c_max(amax, v.abs());
        }
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(yb, 0, d);
        for (q, &v) in yb[2..].iter_mut().zip(xb) {
            *q = c_f32_to_i32(crate::reference::roundf(v * id)) as u8;
        }
    }
}

/// ggml's `quantize_q8_0`: always [`quantize_row_q8_0_ref`]; the imatrix is ignored.
///
/// # Panics
/// On inconsistent sizes (see [`super::quantize_rows`]).
pub fn quantize_q8_0(src: &[f32], n_per_row: usize, imatrix: Option<&[f32]>, dst: &mut [u8]) {
    assert_chunk(GgmlType::Q8_0, src, n_per_row, imatrix, dst);
    quantize_row_q8_0_ref(src, dst);
}
