//! Weight quantizers for the K-quants Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (`quantize_row_*_ref`,
//! `quantize_row_*_impl` and `quantize_*` in `ggml-quants.c`).
//!
//! Each super-block of 256 elements is split into sub-blocks (16 of 16 elements for Q2_K, Q3_K,
//! Q6_K; 8 of 32 for Q4_K, Q5_K). A scale (and for Q2_K/Q4_K/Q5_K a min) is searched per
//! sub-block, the sub-block scales are themselves quantized against an f16 super-scale, and the
//! elements are finally re-quantized against the *stored* (rounded) scales. Block layouts are
//! documented on the dequantizers in [`crate::reference::kquants`].

use super::search::{make_q3_quants, make_qkx_quants, make_qp_quants, make_qx_quants, MinSearch};
use super::{chunk, fp16_to_fp32, put_f16, GROUP_MAX_EPS};
use crate::reference::kquants::get_scale_min_k4;
use crate::reference::{assert_row, nearest_int};
use crate::{GgmlType, QK_K};

/// `MAX(lo, MIN(hi, l))` on ints.
#[inline(always)]
fn clamp_i(l: i32, lo: i32, hi: i32) -> i32 {
    l.min(hi).max(lo)
}

/// Checks of the typed `_impl` entry points.
#[track_caller]
fn assert_impl(ty: GgmlType, x: &[f32], qw: &[f32], y: &[u8]) {
    assert_row(ty, x.len(), y.len());
    assert_eq!(qw.len(), x.len(), "{ty}: imatrix length");
}

/// `Σ x²` over a super-block, summed in order.
#[inline(always)]
fn sum_sq(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// `weight[l] = qw[l] * sqrtf(sigma2 + x[l]*x[l])`, returning also `Σ weight` (summed in order).
#[inline(always)]
fn imatrix_weights<const N: usize>(x: &[f32], qw: &[f32], sigma2: f32) -> ([f32; N], f32) {
    let mut w = [0.0f32; N];
    for l in 0..N {
        w[l] = qw[l] * (sigma2 + x[l] * x[l]).sqrt();
    }
    let mut sumw = 0.0f32;
    for &v in &w {
        sumw += v;
    }
    (w, sumw)
}

/// Pack 2-bit quants `l` (256 values < 4) into `qs` (64 bytes): byte `32k + i` of each 128-element
/// half holds `l[j+i] | l[j+i+32] << 2 | l[j+i+64] << 4 | l[j+i+96] << 6`.
#[inline(always)]
fn pack_2bit<T: Copy + Into<i32>>(l: &[T], qs: &mut [u8]) {
    for j in (0..QK_K).step_by(128) {
        for i in 0..32 {
            let v = l[j + i].into()
                | (l[j + i + 32].into() << 2)
                | (l[j + i + 64].into() << 4)
                | (l[j + i + 96].into() << 6);
            qs[j / 4 + i] = v as u8;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q2_K: scales[16] | qs[64] | d | dmin

/// Requantize against the stored scales and pack Q2_K (shared tail of `_ref` and `_impl`):
/// `l = clamp(nearest_int((x + dmin·m) / (d·sc)), 0, 3)` for sub-blocks with `d·sc != 0`.
fn q2_k_finish(x: &[f32], l: &mut [u8; QK_K], yb: &mut [u8], dm: f32, mm: f32) {
    for j in 0..QK_K / 16 {
        let d = dm * (yb[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let m = mm * (yb[j] >> 4) as f32;
        for ii in 0..16 {
            l[16 * j + ii] = clamp_i(nearest_int((x[16 * j + ii] + m) / d), 0, 3) as u8;
        }
    }
    pack_2bit(&l[..], &mut yb[16..80]);
}

/// `quantize_row_q2_K_ref`: per sub-block of 16, `make_qkx2_quants(16, 3, .., weights = |x|,
/// -0.5, 0.1, 15, use_mad = true)`; scales and mins quantized to 4 bits against
/// `max_scale / 15` and `max_min / 15`.
///
/// # Panics
/// If `x.len()` is not a multiple of 256 or `y` is not exactly its Q2_K size.
pub fn quantize_row_q2_k_ref(x: &[f32], y: &mut [u8]) {
    assert_row(GgmlType::Q2_K, x.len(), y.len());
    const Q4SCALE: f32 = 15.0;
    let p = MinSearch {
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(84)) {
        let mut scales = [0.0f32; 16];
        let mut mins = [0.0f32; 16];
        let mut max_scale = 0.0f32;
        let mut max_min = 0.0f32;
        for j in 0..QK_K / 16 {
            let xs = &xb[16 * j..16 * j + 16];
            let weights: [f32; 16] = std::array::from_fn(|i| xs[i].abs());
            let (s, m) = make_qkx_quants(
                3,
                xs,
                &weights,
                &mut l[16 * j..16 * j + 16],
                &mut laux,
                p,
                false,
            );
            scales[j] = s;
            mins[j] = m;
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }
        let dh = if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for j in 0..QK_K / 16 {
                yb[j] = nearest_int(iscale * scales[j]) as u8;
            }
            put_f16(yb, 80, max_scale / Q4SCALE)
        } else {
            yb[..16].fill(0);
            put_f16(yb, 80, 0.0)
        };
        let dminh = if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for j in 0..QK_K / 16 {
                let lm = nearest_int(iscale * mins[j]);
                yb[j] |= (lm << 4) as u8;
            }
            put_f16(yb, 82, max_min / Q4SCALE)
        } else {
            put_f16(yb, 82, 0.0)
        };
        q2_k_finish(xb, &mut l, yb, fp16_to_fp32(dh), fp16_to_fp32(dminh));
    }
}

/// `quantize_row_q2_K_impl` with importance weights: weights `qw · sqrt(sigma2 + x²)`
/// (`sigma2` = mean square of the super-block), `make_qkx3_quants(16, 3, .., -0.9, 0.05, 36)`,
/// then the scales and mins by `make_qp_quants(16, 15, .., Σweights)`. One row.
///
/// # Panics
/// If `x.len()` is not a multiple of 256, `qw.len() != x.len()` or `y` has the wrong size.
pub fn quantize_row_q2_k_impl(x: &[f32], qw: &[f32], y: &mut [u8]) {
    assert_impl(GgmlType::Q2_K, x, qw, y);
    let p = MinSearch {
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    };
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    for ((xb, qb), yb) in x
        .chunks_exact(QK_K)
        .zip(qw.chunks_exact(QK_K))
        .zip(y.chunks_exact_mut(84))
    {
        let sigma2 = sum_sq(xb) / QK_K as f32;
        let mut sw = [0.0f32; 16];
        let mut scales = [0.0f32; 16];
        let mut mins = [0.0f32; 16];
        for j in 0..QK_K / 16 {
            let xs = &xb[16 * j..16 * j + 16];
            let (weight, sumw) = imatrix_weights::<16>(xs, &qb[16 * j..], sigma2);
            sw[j] = sumw;
            let (s, m) = make_qkx_quants(
                3,
                xs,
                &weight,
                &mut l[16 * j..16 * j + 16],
                &mut laux,
                p,
                true,
            );
            scales[j] = s;
            mins[j] = m;
        }
        let mut ls = [0u8; 16];
        let mut lm = [0u8; 16];
        let dm = make_qp_quants(15, &scales, &mut ls, &sw);
        let mm = make_qp_quants(15, &mins, &mut lm, &sw);
        let dm = fp16_to_fp32(put_f16(yb, 80, dm));
        let mm = fp16_to_fp32(put_f16(yb, 82, mm));
        for j in 0..QK_K / 16 {
            yb[j] = (ls[j] as i32 | ((lm[j] as i32) << 4)) as u8;
        }
        q2_k_finish(xb, &mut l, yb, dm, mm);
    }
}

/// ggml's `quantize_q2_K`: rows of `n_per_row` from `src` to Q2_K in `dst`.
///
/// # Panics
/// On inconsistent sizes (see [`super::quantize_rows`], which checks them and returns errors).
pub fn quantize_q2_k(src: &[f32], n_per_row: usize, imatrix: Option<&[f32]>, dst: &mut [u8]) {
    chunk(
        GgmlType::Q2_K,
        src,
        n_per_row,
        imatrix,
        dst,
        quantize_row_q2_k_ref,
        quantize_row_q2_k_impl,
    );
}

// ---------------------------------------------------------------------------------------------
// Q3_K: hmask[32] | qs[64] | scales[12] | d

/// Store the 6-bit scale `l` (0..63) of sub-block `j` into Q3_K's packed `scales[12]`.
#[inline(always)]
fn q3_k_put_scale(sc: &mut [u8], j: usize, l: i32) {
    if j < 8 {
        sc[j] = (l & 0xF) as u8;
    } else {
        sc[j - 8] |= ((l & 0xF) << 4) as u8;
    }
    let hi = l >> 4;
    sc[j % 4 + 8] |= (hi << (2 * (j / 4))) as u8;
}

/// Requantize against the stored scales and pack Q3_K (shared tail of `_ref` and `_impl`).
fn q3_k_finish(x: &[f32], l: &mut [i8; QK_K], yb: &mut [u8], dh: u16) {
    let dall = fp16_to_fp32(dh);
    for j in 0..QK_K / 16 {
        let sc = &yb[96..108];
        let lo = (if j < 8 { sc[j] & 0xF } else { sc[j - 8] >> 4 }) as i32;
        let s = ((lo | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) as i32) - 32) as i8;
        let d = dall * s as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = clamp_i(nearest_int(x[16 * j + ii] / d), -4, 3);
            l[16 * j + ii] = (q + 4) as i8;
        }
    }
    q3_k_pack(l, yb);
}

/// Q3_K quants `l` (0..7, the level + 4): third bits into `hmask` (bit `k` of byte `i` for
/// element `32k + i`), the low two bits as [`pack_2bit`]. `l` is left holding the low bits.
fn q3_k_pack(l: &mut [i8; QK_K], yb: &mut [u8]) {
    let hmask = &mut yb[0..32];
    hmask.fill(0);
    let mut m = 0usize;
    let mut hm = 1u8;
    for v in l.iter_mut() {
        if *v > 3 {
            hmask[m] |= hm;
            *v -= 4;
        }
        m += 1;
        if m == QK_K / 8 {
            m = 0;
            hm = hm.wrapping_shl(1);
        }
    }
    pack_2bit(&l[..], &mut yb[32..96]);
}

/// `quantize_row_q3_K_ref`: per sub-block of 16, `make_q3_quants(16, 4, .., do_rmse = true)`;
/// the 16 scales quantized to 6 bits with `iscale = -32 / max_scale` (`max_scale` the scale of
/// largest magnitude), `d = 1 / iscale`.
///
/// # Panics
/// If `x.len()` is not a multiple of 256 or `y` is not exactly its Q3_K size.
pub fn quantize_row_q3_k_ref(x: &[f32], y: &mut [u8]) {
    assert_row(GgmlType::Q3_K, x.len(), y.len());
    let mut l = [0i8; QK_K];
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(110)) {
        let mut scales = [0.0f32; 16];
        let mut max_scale = 0.0f32;
        let mut amax = 0.0f32;
        for j in 0..QK_K / 16 {
            scales[j] = make_q3_quants(4, &xb[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            let scale = scales[j].abs();
            if scale > amax {
                amax = scale;
                max_scale = scales[j];
            }
        }
        yb[96..108].fill(0);
        let dh = if max_scale != 0.0 {
            let iscale = -32.0f32 / max_scale;
            for (j, &s) in scales.iter().enumerate() {
                // C: `int8_t l = nearest_int(..)` (wraps), then `MAX(-32, MIN(31, l)) + 32`.
                let q = nearest_int(iscale * s) as i8 as i32;
                q3_k_put_scale(&mut yb[96..108], j, clamp_i(q, -32, 31) + 32);
            }
            put_f16(yb, 108, 1.0f32 / iscale)
        } else {
            put_f16(yb, 108, 0.0)
        };
        q3_k_finish(xb, &mut l, yb, dh);
    }
}

/// `quantize_row_q3_K_impl` with importance weights: weights `qw · sqrt(sigma2 + x²)`
/// (`sigma2 = 2 · Σx² / 256`), `make_qx_quants(16, 4, ..)` per sub-block, then the scales by
/// `make_qx_quants(16, 32, .., Σweights)`. One row.
///
/// # Panics
/// If `x.len()` is not a multiple of 256, `qw.len() != x.len()` or `y` has the wrong size.
pub fn quantize_row_q3_k_impl(x: &[f32], qw: &[f32], y: &mut [u8]) {
    assert_impl(GgmlType::Q3_K, x, qw, y);
    let mut l = [0i8; QK_K];
    for ((xb, qb), yb) in x
        .chunks_exact(QK_K)
        .zip(qw.chunks_exact(QK_K))
        .zip(y.chunks_exact_mut(110))
    {
        let sigma2 = 2.0f32 * sum_sq(xb) / QK_K as f32;
        let mut scales = [0.0f32; 16];
        let mut sw = [0.0f32; 16];
        for j in 0..QK_K / 16 {
            let xs = &xb[16 * j..16 * j + 16];
            let (weight, sumw) = imatrix_weights::<16>(xs, &qb[16 * j..], sigma2);
            sw[j] = sumw;
            scales[j] = make_qx_quants(4, xs, &mut l[16 * j..16 * j + 16], Some(&weight));
        }
        yb[96..108].fill(0);
        let mut ls = [0i8; 16];
        let d_block = make_qx_quants(32, &scales, &mut ls, Some(&sw));
        for (j, &l) in ls.iter().enumerate() {
            q3_k_put_scale(&mut yb[96..108], j, l as i32);
        }
        let dh = put_f16(yb, 108, d_block);
        q3_k_finish(xb, &mut l, yb, dh);
    }
}

/// ggml's `quantize_q3_K`.
///
/// # Panics
/// On inconsistent sizes (see [`super::quantize_rows`]).
pub fn quantize_q3_k(src: &[f32], n_per_row: usize, imatrix: Option<&[f32]>, dst: &mut [u8]) {
    chunk(
        GgmlType::Q3_K,
        src,
        n_per_row,
        imatrix,
        dst,
        quantize_row_q3_k_ref,
        quantize_row_q3_k_impl,
    );
}

// ---------------------------------------------------------------------------------------------
// Q4_K: d | dmin | scales[12] | qs[128];  Q5_K: d | dmin | scales[12] | qh[32] | qs[128]

/// Store the 6-bit scale `ls` and min `lm` of sub-block `j` into the packed `scales[12]` shared
/// by Q4_K and Q5_K (the inverse of [`get_scale_min_k4`]). Sub-blocks must come in order.
#[inline(always)]
fn k4_put_scale_min(sc: &mut [u8], j: usize, ls: u8, lm: u8) {
    if j < 4 {
        sc[j] = ls;
        sc[j + 4] = lm;
    } else {
        sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
        sc[j - 4] |= (((ls >> 4) as u32) << 6) as u8;
        sc[j] |= (((lm >> 4) as u32) << 6) as u8;
    }
}

/// Requantize against the stored scales and mins of a Q4_K/Q5_K super-block (at `yb[0..16]`):
/// `l = clamp(nearest_int((x + dmin·m) / (d·sc)), 0, nmax)` for sub-blocks with `d·sc != 0`.
fn k4_requantize(x: &[f32], l: &mut [u8; QK_K], yb: &[u8], nmax: i32) {
    let d_all = fp16_to_fp32(u16::from_le_bytes([yb[0], yb[1]]));
    let dmin_all = fp16_to_fp32(u16::from_le_bytes([yb[2], yb[3]]));
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, &yb[4..16]);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = clamp_i(nearest_int((x[32 * j + ii] + dm) / d), 0, nmax) as u8;
        }
    }
}

/// Q4_K quants: `qs[32k + i] = l[64k + i] | l[64k + i + 32] << 4`.
fn q4_k_pack(l: &[u8; QK_K], qs: &mut [u8]) {
    for (k, q) in qs.chunks_exact_mut(32).enumerate() {
        for i in 0..32 {
            q[i] = l[64 * k + i] | (l[64 * k + i + 32] << 4);
        }
    }
}

/// Q5_K quants: low nibbles as Q4_K in `qs`, fifth bits in `qh` (bit `2k` for `l[64k + i]`,
/// bit `2k + 1` for `l[64k + i + 32]`).
fn q5_k_pack(l: &[u8; QK_K], qh: &mut [u8], qs: &mut [u8]) {
    qh.fill(0);
    let mut m1 = 1u8;
    let mut m2 = 2u8;
    for (k, ql) in qs.chunks_exact_mut(32).enumerate() {
        for i in 0..32 {
            let mut l1 = l[64 * k + i] as i32;
            if l1 > 15 {
                l1 -= 16;
                qh[i] |= m1;
            }
            let mut l2 = l[64 * k + i + 32] as i32;
            if l2 > 15 {
                l2 -= 16;
                qh[i] |= m2;
            }
            ql[i] = (l1 | (l2 << 4)) as u8;
        }
        m1 = m1.wrapping_shl(2);
        m2 = m2.wrapping_shl(2);
    }
}

/// The `_ref` search shared by Q4_K and Q5_K: per sub-block of 32, weights `av_x + |x|`
/// (`av_x` = RMS of the sub-block) and `make_qkx2_quants(32, nmax, .., p)`; then scales and mins
/// quantized to 6 bits against `max_scale / 63`, `max_min / 63` (written to `yb[0..16]`).
fn k4_ref_scales(xb: &[f32], l: &mut [u8; QK_K], yb: &mut [u8], nmax: i32, p: MinSearch) {
    let mut laux = [0u8; 32];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 32 {
        let xs = &xb[32 * j..32 * j + 32];
        let av_x = (sum_sq(xs) / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|i| av_x + xs[i].abs());
        let (s, m) = make_qkx_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            p,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    for j in 0..QK_K / 32 {
        // C: `uint8_t ls = nearest_int(..)` (wraps), then `MIN(63, ls)`.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        k4_put_scale_min(&mut yb[4..16], j, ls, lm);
    }
    put_f16(yb, 0, max_scale / 63.0);
    put_f16(yb, 2, max_min / 63.0);
}

/// The `_impl` search shared by Q4_K and Q5_K: weights `qw · sqrt(sigma2 + x²)` (`sigma2 =
/// 2 · Σx² / 256`), `make_qkx3_quants(32, nmax, .., -0.9, 0.05, 36)` per sub-block, then scales
/// and mins by `make_qp_quants(8, 63, .., Σweights)`. Q5_K clamps the 6-bit values with
/// `MIN(63, ..)`; Q4_K stores them unclamped (`clamp63`).
fn k4_impl_scales(
    xb: &[f32],
    qb: &[f32],
    l: &mut [u8; QK_K],
    yb: &mut [u8],
    nmax: i32,
    clamp63: bool,
) {
    let p = MinSearch {
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    };
    let mut laux = [0u8; 32];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut sw = [0.0f32; 8];
    let sigma2 = 2.0f32 * sum_sq(xb) / QK_K as f32;
    for j in 0..QK_K / 32 {
        let xs = &xb[32 * j..32 * j + 32];
        let (weights, sumw) = imatrix_weights::<32>(xs, &qb[32 * j..], sigma2);
        sw[j] = sumw;
        let (s, m) = make_qkx_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            p,
            true,
        );
        scales[j] = s;
        mins[j] = m;
    }
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    for j in 0..QK_K / 32 {
        let (s, m) = if clamp63 {
            (ls[j].min(63), lm[j].min(63))
        } else {
            (ls[j], lm[j])
        };
        k4_put_scale_min(&mut yb[4..16], j, s, m);
    }
    put_f16(yb, 0, d_block);
    put_f16(yb, 2, m_block);
}

/// `quantize_row_q4_K_ref`: `make_qkx2_quants(32, 15, .., -1.0, 0.1, 20)` per sub-block.
///
/// # Panics
/// If `x.len()` is not a multiple of 256 or `y` is not exactly its Q4_K size.
pub fn quantize_row_q4_k_ref(x: &[f32], y: &mut [u8]) {
    assert_row(GgmlType::Q4_K, x.len(), y.len());
    let p = MinSearch {
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
        use_mad: false,
    };
    let mut l = [0u8; QK_K];
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(144)) {
        k4_ref_scales(xb, &mut l, yb, 15, p);
        k4_requantize(xb, &mut l, yb, 15);
        q4_k_pack(&l, &mut yb[16..144]);
    }
}

/// `quantize_row_q4_K_impl` with importance weights. One row.
///
/// # Panics
/// If `x.len()` is not a multiple of 256, `qw.len() != x.len()` or `y` has the wrong size.
pub fn quantize_row_q4_k_impl(x: &[f32], qw: &[f32], y: &mut [u8]) {
    assert_impl(GgmlType::Q4_K, x, qw, y);
    let mut l = [0u8; QK_K];
    for ((xb, qb), yb) in x
        .chunks_exact(QK_K)
        .zip(qw.chunks_exact(QK_K))
        .zip(y.chunks_exact_mut(144))
    {
        k4_impl_scales(xb, qb, &mut l, yb, 15, false);
        k4_requantize(xb, &mut l, yb, 15);
        q4_k_pack(&l, &mut yb[16..144]);
    }
}

/// ggml's `quantize_q4_K`.
///
/// # Panics
/// On inconsistent sizes (see [`super::quantize_rows`]).
pub fn quantize_q4_k(src: &[f32], n_per_row: usize, imatrix: Option<&[f32]>, dst: &mut [u8]) {
    chunk(
        GgmlType::Q4_K,
        src,
        n_per_row,
        imatrix,
        dst,
        quantize_row_q4_k_ref,
        quantize_row_q4_k_impl,
    );
}

/// `quantize_row_q5_K_ref`: `make_qkx2_quants(32, 31, .., -0.5, 0.1, 15)` per sub-block.
///
/// # Panics
/// If `x.len()` is not a multiple of 256 or `y` is not exactly its Q5_K size.
pub fn quantize_row_q5_k_ref(x: &[f32], y: &mut [u8]) {
    assert_row(GgmlType::Q5_K, x.len(), y.len());
    let p = MinSearch {
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: false,
    };
    let mut l = [0u8; QK_K];
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(176)) {
        k4_ref_scales(xb, &mut l, yb, 31, p);
        k4_requantize(xb, &mut l, yb, 31);
        let (qh, qs) = yb[16..176].split_at_mut(32);
        q5_k_pack(&l, qh, qs);
    }
}

/// `quantize_row_q5_K_impl` with importance weights. One row.
///
/// # Panics
/// If `x.len()` is not a multiple of 256, `qw.len() != x.len()` or `y` has the wrong size.
pub fn quantize_row_q5_k_impl(x: &[f32], qw: &[f32], y: &mut [u8]) {
    assert_impl(GgmlType::Q5_K, x, qw, y);
    let mut l = [0u8; QK_K];
    for ((xb, qb), yb) in x
        .chunks_exact(QK_K)
        .zip(qw.chunks_exact(QK_K))
        .zip(y.chunks_exact_mut(176))
    {
        k4_impl_scales(xb, qb, &mut l, yb, 31, true);
        k4_requantize(xb, &mut l, yb, 31);
        let (qh, qs) = yb[16..176].split_at_mut(32);
        q5_k_pack(&l, qh, qs);
    }
}

/// ggml's `quantize_q5_K`.
///
/// # Panics
/// On inconsistent sizes (see [`super::quantize_rows`]).
pub fn quantize_q5_k(src: &[f32], n_per_row: usize, imatrix: Option<&[f32]>, dst: &mut [u8]) {
    chunk(
        GgmlType::Q5_K,
        src,
        n_per_row,
        imatrix,
        dst,
        quantize_row_q5_k_ref,
        quantize_row_q5_k_impl,
    );
}

// ---------------------------------------------------------------------------------------------
// Q6_K: ql[128] | qh[64] | scales[16] (i8) | d

/// The shared body of `quantize_row_q6_K_ref` (`qw = None`) and `_impl`: per sub-block of 16,
/// `make_qx_quants(16, 32, .., rmse_type 1, qw)`; the scales quantized to i8 with
/// `iscale = -128 / max_scale`, `d = 1 / iscale`. Super-blocks whose scales are all below 1e-15
/// are written as zeros.
fn q6_k_block(xb: &[f32], qw: Option<&[f32]>, l: &mut [i8; QK_K], yb: &mut [u8]) {
    let mut scales = [0.0f32; 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for ib in 0..QK_K / 16 {
        let w = qw.map(|q| &q[16 * ib..16 * ib + 16]);
        let scale = make_qx_quants(
            32,
            &xb[16 * ib..16 * ib + 16],
            &mut l[16 * ib..16 * ib + 16],
            w,
        );
        scales[ib] = scale;
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        yb.fill(0);
        put_f16(yb, 208, 0.0);
        return;
    }
    let iscale = -128.0f32 / max_scale;
    let dh = put_f16(yb, 208, 1.0f32 / iscale);
    for ib in 0..QK_K / 16 {
        yb[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    let dall = fp16_to_fp32(dh);
    for j in 0..QK_K / 16 {
        let d = dall * (yb[192 + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = clamp_i(nearest_int(xb[16 * j + ii] / d), -32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    q6_k_pack(l, yb);
}

/// Q6_K quants `l` (0..63, the level + 32): low nibbles into `ql`, high two bits into `qh`.
fn q6_k_pack(l: &[i8; QK_K], yb: &mut [u8]) {
    let (ql_all, rest) = yb.split_at_mut(128);
    let qh_all = &mut rest[..64];
    for (k, (ql, qh)) in ql_all
        .chunks_exact_mut(64)
        .zip(qh_all.chunks_exact_mut(32))
        .enumerate()
    {
        let j = 128 * k;
        for i in 0..32 {
            let lv = |o: usize| l[j + i + o] as i32;
            let (q1, q2, q3, q4) = (lv(0) & 0xF, lv(32) & 0xF, lv(64) & 0xF, lv(96) & 0xF);
            ql[i] = (q1 | (q3 << 4)) as u8;
            ql[i + 32] = (q2 | (q4 << 4)) as u8;
            qh[i] =
                ((lv(0) >> 4) | ((lv(32) >> 4) << 2) | ((lv(64) >> 4) << 4) | ((lv(96) >> 4) << 6))
                    as u8;
        }
    }
}

/// `quantize_row_q6_K_ref`.
///
/// # Panics
/// If `x.len()` is not a multiple of 256 or `y` is not exactly its Q6_K size.
pub fn quantize_row_q6_k_ref(x: &[f32], y: &mut [u8]) {
    assert_row(GgmlType::Q6_K, x.len(), y.len());
    let mut l = [0i8; QK_K];
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(210)) {
        q6_k_block(xb, None, &mut l, yb);
    }
}

/// `quantize_row_q6_K_impl` with importance weights: the imatrix values themselves are the
/// `make_qx_quants` weights (no `sigma2` term). One row.
///
/// # Panics
/// If `x.len()` is not a multiple of 256, `qw.len() != x.len()` or `y` has the wrong size.
pub fn quantize_row_q6_k_impl(x: &[f32], qw: &[f32], y: &mut [u8]) {
    assert_impl(GgmlType::Q6_K, x, qw, y);
    let mut l = [0i8; QK_K];
    for ((xb, qb), yb) in x
        .chunks_exact(QK_K)
        .zip(qw.chunks_exact(QK_K))
        .zip(y.chunks_exact_mut(210))
    {
        q6_k_block(xb, Some(qb), &mut l, yb);
    }
}

/// ggml's `quantize_q6_K`.
///
/// # Panics
/// On inconsistent sizes (see [`super::quantize_rows`]).
pub fn quantize_q6_k(src: &[f32], n_per_row: usize, imatrix: Option<&[f32]>, dst: &mut [u8]) {
    chunk(
        GgmlType::Q6_K,
        src,
        n_per_row,
        imatrix,
        dst,
        quantize_row_q6_k_ref,
        quantize_row_q6_k_impl,
    );
}

// ---------------------------------------------------------------------------------------------
// Packing given integers (tuned K-quant blocks)

/// One K-quant super-block given as the integers a tuner chose, for [`pack_k_block`].
pub struct KBlock<'a> {
    /// The 256 stored levels: Q2_K 0..3, Q3_K 0..7 (level + 4), Q4_K 0..15, Q5_K 0..31,
    /// Q6_K 0..63 (level + 32).
    pub levels: &'a [u8],
    /// Sub-block scales: 0..15 (Q2_K), 0..63 (Q4_K, Q5_K), −32..31 (Q3_K), −128..127 (Q6_K).
    pub scales: &'a [i32],
    /// Sub-block mins (Q2_K 0..15, Q4_K/Q5_K 0..63); empty for Q3_K and Q6_K.
    pub mins: &'a [i32],
    /// The super scale and (Q2_K, Q4_K, Q5_K) super min, stored as f16.
    pub d: f32,
    pub dmin: f32,
}

/// Write one super-block of `ty` (Q2_K … Q6_K) from its integers, the byte layouts of
/// `ggml-quants.c` (see the dequantizers in [`crate::reference::kquants`]). The block
/// dequantizes to `f16(d)·scale·(level − offset) − f16(dmin)·min` per element.
///
/// # Panics
/// If `ty` is not a K-quant, `y` is not one block, a slice has the wrong length, or a value is
/// out of its range.
pub fn pack_k_block(ty: GgmlType, b: &KBlock<'_>, y: &mut [u8]) {
    assert_eq!(y.len(), ty.type_size(), "{ty}: one block");
    assert_eq!(b.levels.len(), QK_K, "{ty}: 256 levels");
    let (n_sub, lmax, smin, smax, has_min) = match ty {
        GgmlType::Q2_K => (16, 3, 0, 15, true),
        GgmlType::Q3_K => (16, 7, -32, 31, false),
        GgmlType::Q4_K => (8, 15, 0, 63, true),
        GgmlType::Q5_K => (8, 31, 0, 63, true),
        GgmlType::Q6_K => (16, 63, -128, 127, false),
        _ => panic!("{ty} is not a K-quant"),
    };
    assert_eq!(b.scales.len(), n_sub, "{ty}: sub-block scales");
    assert_eq!(b.mins.len(), if has_min { n_sub } else { 0 }, "{ty}: mins");
    assert!(
        b.levels.iter().all(|&l| l <= lmax),
        "{ty}: a level above {lmax}"
    );
    assert!(
        b.scales
            .iter()
            .chain(b.mins)
            .all(|&s| (smin..=smax).contains(&s)),
        "{ty}: a scale outside {smin}..={smax}"
    );
    y.fill(0);
    match ty {
        GgmlType::Q2_K => {
            for (y, (&s, &m)) in y.iter_mut().zip(b.scales.iter().zip(b.mins)) {
                *y = (s | (m << 4)) as u8;
            }
            pack_2bit(b.levels, &mut y[16..80]);
            put_f16(y, 80, b.d);
            put_f16(y, 82, b.dmin);
        }
        GgmlType::Q3_K => {
            let mut l = [0i8; QK_K];
            for (a, &v) in l.iter_mut().zip(b.levels) {
                *a = v as i8;
            }
            q3_k_pack(&mut l, y);
            for j in 0..16 {
                q3_k_put_scale(&mut y[96..108], j, b.scales[j] + 32);
            }
            put_f16(y, 108, b.d);
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            put_f16(y, 0, b.d);
            put_f16(y, 2, b.dmin);
            for j in 0..8 {
                k4_put_scale_min(&mut y[4..16], j, b.scales[j] as u8, b.mins[j] as u8);
            }
            let mut l = [0u8; QK_K];
            l.copy_from_slice(b.levels);
            if ty == GgmlType::Q4_K {
                q4_k_pack(&l, &mut y[16..144]);
            } else {
                let (qh, qs) = y[16..176].split_at_mut(32);
                q5_k_pack(&l, qh, qs);
            }
        }
        GgmlType::Q6_K => {
            let mut l = [0i8; QK_K];
            for (a, &v) in l.iter_mut().zip(b.levels) {
                *a = v as i8;
            }
            q6_k_pack(&l, y);
            for j in 0..16 {
                y[192 + j] = b.scales[j] as i8 as u8;
            }
            put_f16(y, 208, b.d);
        }
        _ => unreachable!(),
    }
}
