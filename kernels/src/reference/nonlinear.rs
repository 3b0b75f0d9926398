//! 4-bit types with a non-linear codebook: IQ4_NL and IQ4_XS (the `kvalues_iq4nl` table) and
//! MXFP4 (the e2m1 table, doubled, with a power-of-two e8m0 scale).
//!
//! Dequantization follows `dequantize_row_iq4_nl`/`_iq4_xs`/`_mxfp4` in `ggml-quants.c`; the
//! dot products follow `ggml_vec_dot_iq4_nl_q8_0_generic`, `ggml_vec_dot_iq4_xs_q8_K_generic`
//! and `ggml_vec_dot_mxfp4_q8_0_generic` in `ggml-cpu/quants.c`.

use super::{assert_row, f16_at, f32_at, u16_at};
use crate::{GgmlType, QK_K};

/// The IQ4_NL / IQ4_XS codebook (`kvalues_iq4nl`).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// The MXFP4 codebook: the e2m1 values times two (`kvalues_mxfp4`).
pub const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

const IQ4_NL_BYTES: usize = 18;
const IQ4_XS_BYTES: usize = 136;
const MXFP4_BYTES: usize = 17;
const Q8_0_BYTES: usize = 34;
const Q8_K_BYTES: usize = 292;

/// ggml's `ggml_e8m0_to_fp32_half`: `2^(e - 128)`, i.e. half the e8m0 value (the MXFP4 codebook
/// is doubled). `e < 2` gives the subnormals `2^-128`, `2^-127`; no NaN for `e = 255`.
#[inline(always)]
pub fn e8m0_to_fp32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        ((e as u32) - 1) << 23
    };
    f32::from_bits(bits)
}

/// IQ4_NL, 18 bytes per 32 elements:
///
/// | bytes  | field | meaning                                                     |
/// |--------|-------|-------------------------------------------------------------|
/// | 0..2   | `d`   | f16 scale                                                   |
/// | 2..18  | `qs`  | 4-bit codebook indices, split halves as Q4_0                |
///
/// `y[j] = d * KVALUES_IQ4NL[idx[j]]`.
pub fn dequantize_row_iq4_nl(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::IQ4_NL, dst.len(), src.len());
    for (b, y) in src.chunks_exact(IQ4_NL_BYTES).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let qs = &b[2..18];
        for j in 0..16 {
            y[j] = d * KVALUES_IQ4NL[(qs[j] & 0x0F) as usize] as f32;
            y[j + 16] = d * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
        }
    }
}

/// The 6-bit scale (minus 32) of 32-element sub-block `ib` (0..8) of an IQ4_XS block:
/// low 4 bits from nibble `ib % 2` of `scales_l[ib / 2]`, high 2 bits from bits `2ib..2ib+2`
/// of `scales_h`.
#[inline(always)]
fn iq4_xs_scale(scales_h: u16, scales_l: &[u8], ib: usize) -> i32 {
    let low = ((scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F) as i32;
    let high = ((scales_h >> (2 * ib)) & 3) as i32;
    (low | (high << 4)) - 32
}

/// IQ4_XS, 136 bytes per 256 elements:
///
/// | bytes  | field      | meaning                                                   |
/// |--------|------------|-----------------------------------------------------------|
/// | 0..2   | `d`        | f16 super-scale                                           |
/// | 2..4   | `scales_h` | u16 LE, high 2 bits of the 8 sub-block scales             |
/// | 4..8   | `scales_l` | low 4 bits of the 8 sub-block scales, two per byte        |
/// | 8..136 | `qs`       | codebook indices; sub-block `ib` uses `qs[16ib..16ib+16]`, split halves as Q4_0 |
///
/// `dl = d * (scale[ib] - 32)`, `y[e] = dl * KVALUES_IQ4NL[idx[e]]`.
pub fn dequantize_row_iq4_xs(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::IQ4_XS, dst.len(), src.len());
    for (b, y) in src
        .chunks_exact(IQ4_XS_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_at(b, 0);
        let scales_h = u16_at(b, 2);
        let scales_l = &b[4..8];
        for ib in 0..QK_K / 32 {
            let dl = d * iq4_xs_scale(scales_h, scales_l, ib) as f32;
            let qs = &b[8 + 16 * ib..8 + 16 * ib + 16];
            let y = &mut y[32 * ib..32 * ib + 32];
            for j in 0..16 {
                y[j] = dl * KVALUES_IQ4NL[(qs[j] & 0x0F) as usize] as f32;
                y[j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
            }
        }
    }
}

/// MXFP4, 17 bytes per 32 elements:
///
/// | bytes  | field | meaning                                                     |
/// |--------|-------|-------------------------------------------------------------|
/// | 0      | `e`   | e8m0 shared exponent                                        |
/// | 1..17  | `qs`  | 4-bit e2m1 codes, split halves as Q4_0                      |
///
/// `y[j] = KVALUES_MXFP4[code[j]] * e8m0_to_fp32_half(e)`.
pub fn dequantize_row_mxfp4(src: &[u8], dst: &mut [f32]) {
    assert_row(GgmlType::MXFP4, dst.len(), src.len());
    for (b, y) in src.chunks_exact(MXFP4_BYTES).zip(dst.chunks_exact_mut(32)) {
        let d = e8m0_to_fp32_half(b[0]);
        let qs = &b[1..17];
        for j in 0..16 {
            y[j] = KVALUES_MXFP4[(qs[j] & 0x0F) as usize] as f32 * d;
            y[j + 16] = KVALUES_MXFP4[(qs[j] >> 4) as usize] as f32 * d;
        }
    }
}

/// `(Σ_{j<16} q8[j] * table[lo(qs[j])], Σ_{j<16} q8[j+16] * table[hi(qs[j])])`.
#[inline(always)]
fn table_sums(table: &[i8; 16], qs: &[u8], q8: &[u8]) -> (i32, i32) {
    let (mut s1, mut s2) = (0i32, 0i32);
    for j in 0..16 {
        s1 += q8[j] as i8 as i32 * table[(qs[j] & 0x0F) as usize] as i32;
        s2 += q8[j + 16] as i8 as i32 * table[(qs[j] >> 4) as usize] as i32;
    }
    (s1, s2)
}

/// IQ4_NL · Q8_0: per block `d = dy * dx`, `sumf += d * (sumi1 + sumi2)`.
///
/// # Panics
/// If `n` is not a multiple of 32 or `x`/`y` are not exactly the bytes of `n` elements.
#[inline(always)]
pub fn vec_dot_iq4_nl_q8_0(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert_row(GgmlType::IQ4_NL, n, x.len());
    assert_row(GgmlType::Q8_0, n, y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.chunks_exact(IQ4_NL_BYTES).zip(y.chunks_exact(Q8_0_BYTES)) {
        let d = f16_at(by, 0) * f16_at(bx, 0);
        let (s1, s2) = table_sums(&KVALUES_IQ4NL, &bx[2..18], &by[2..34]);
        sumf += d * (s1 + s2) as f32;
    }
    sumf
}

/// MXFP4 · Q8_0: per block `d = dy * e8m0_to_fp32_half(e)`, `sumf += d * (sumi1 + sumi2)`.
///
/// # Panics
/// If `n` is not a multiple of 32 or `x`/`y` are not exactly the bytes of `n` elements.
#[inline(always)]
pub fn vec_dot_mxfp4_q8_0(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert_row(GgmlType::MXFP4, n, x.len());
    assert_row(GgmlType::Q8_0, n, y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.chunks_exact(MXFP4_BYTES).zip(y.chunks_exact(Q8_0_BYTES)) {
        let d = f16_at(by, 0) * e8m0_to_fp32_half(bx[0]);
        let (s1, s2) = table_sums(&KVALUES_MXFP4, &bx[1..17], &by[2..34]);
        sumf += d * (s1 + s2) as f32;
    }
    sumf
}

/// IQ4_XS · Q8_K: per 32-element sub-block `sumf += (d4d8 * (scale - 32)) * (sumi1 + sumi2)`
/// with `d4d8 = dx * yd`, in sub-block order.
///
/// # Panics
/// If `n` is not a multiple of 256 or `x`/`y` are not exactly the bytes of `n` elements.
#[inline(always)]
pub fn vec_dot_iq4_xs_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert_row(GgmlType::IQ4_XS, n, x.len());
    assert_row(GgmlType::Q8_K, n, y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.chunks_exact(IQ4_XS_BYTES).zip(y.chunks_exact(Q8_K_BYTES)) {
        let d4d8 = f16_at(bx, 0) * f32_at(by, 0);
        let scales_h = u16_at(bx, 2);
        let scales_l = &bx[4..8];
        for ib in 0..QK_K / 32 {
            let dl = d4d8 * iq4_xs_scale(scales_h, scales_l, ib) as f32;
            let qs = &bx[8 + 16 * ib..8 + 16 * ib + 16];
            let q8 = &by[4 + 32 * ib..4 + 32 * ib + 32];
            let (s1, s2) = table_sums(&KVALUES_IQ4NL, qs, q8);
            sumf += dl * (s1 + s2) as f32;
        }
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e8m0_half_values() {
        assert_eq!(e8m0_to_fp32_half(128), 1.0);
        assert_eq!(e8m0_to_fp32_half(127), 0.5);
        assert_eq!(e8m0_to_fp32_half(2), 2.0f32.powi(-126));
        assert_eq!(e8m0_to_fp32_half(1), 2.0f32.powi(-127));
        assert_eq!(e8m0_to_fp32_half(0), 2.0f32.powi(-128));
        assert_eq!(e8m0_to_fp32_half(255), 2.0f32.powi(127));
    }

    #[test]
    fn iq4_xs_scale_bits() {
        // scales_h bits 2..4 = 0b11 and scales_l[0] high nibble = 0xF -> sub-block 1 scale 63.
        let s = iq4_xs_scale(0b1100, &[0xF0, 0, 0, 0], 1);
        assert_eq!(s, 63 - 32);
        assert_eq!(iq4_xs_scale(0, &[0, 0, 0, 0], 5), -32);
    }
}
