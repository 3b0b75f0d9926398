//! x86-64 group-wise row kernels for [`super::dot_rows`]: AVX2+FMA+F16C, and the same code with
//! AVX-512 VNNI's `vpdpbusd` on 256-bit vectors.
//!
//! Per chunk, the exact i32 lanes of `Σ q'·a` (unsigned 2/3/4-bit codes through `dot_u8`, whose
//! `maddubs` pairs stay below 2¹⁵ as the codes are at most 15; 8-bit codes stored as `q − 128`
//! through `dot_s8`, exact as no Q8_0 activation is −128) times `d_c` into a group accumulator;
//! per group, the accumulator times the scale into the row's, and `s·z'·Σ_c d_c·Σa` (the
//! zero-point term) into a scalar. Four rows share each activation chunk's load.

use super::{GroupAct, GroupRows, CHUNK};
use crate::dot::x86::{
    bytes_from_bits, dot_s8, dot_u8, f16_splat, hsum, load32, nibbles16, prefetch_ahead, read_u32,
};
use std::arch::x86_64::*;

/// # Safety
/// The CPU must have AVX2, FMA and F16C, and with `vnni` also AVX-512 F/BW/VL/VNNI; `out` has
/// one value per row of `w` and `act` one chunk per 32 columns (as [`super::dot_rows`] checks).
pub unsafe fn dot_rows(vnni: bool, w: &GroupRows<'_>, act: &GroupAct, out: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if vnni {
            rows_avx512(w, act, out)
        } else {
            rows_avx2(w, act, out)
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2(w: &GroupRows<'_>, act: &GroupAct, out: &mut [f32]) {
    // SAFETY: the features are enabled; sizes are the caller's contract.
    unsafe { by_bits::<false>(w, act, out) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_avx512(w: &GroupRows<'_>, act: &GroupAct, out: &mut [f32]) {
    // SAFETY: the features are enabled; sizes are the caller's contract.
    unsafe { by_bits::<true>(w, act, out) }
}

#[inline(always)]
unsafe fn by_bits<const VNNI: bool>(w: &GroupRows<'_>, act: &GroupAct, out: &mut [f32]) {
    // SAFETY: forwarded.
    unsafe {
        match w.spec.bits {
            2 => rows::<VNNI, 2>(w, act, out),
            3 => rows::<VNNI, 3>(w, act, out),
            4 => rows::<VNNI, 4>(w, act, out),
            _ => rows::<VNNI, 8>(w, act, out),
        }
    }
}

/// The i32 lanes of `Σ q'·a` for the chunk at `p` against the activations `a`.
#[inline(always)]
unsafe fn chunk_lanes<const VNNI: bool, const BITS: u32>(p: *const u8, a: __m256i) -> __m256i {
    // SAFETY: `p` points at one whole chunk of BITS.
    unsafe {
        match BITS {
            8 => dot_s8::<VNNI>(load32(p), a),
            4 => dot_u8::<VNNI>(nibbles16(p), a),
            _ => {
                // byte j of the 8 holds codes j, j+8, j+16, j+24 in bit pairs 0, 2, 4, 6:
                // 64-bit lane k shifted right by 2k, masked to two bits, is codes 8k..8k+8
                let v = _mm256_set1_epi64x((p as *const i64).read_unaligned());
                let v = _mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 2, 4, 6));
                let mut q = _mm256_and_si256(v, _mm256_set1_epi8(3));
                if BITS == 3 {
                    let hb = bytes_from_bits(read_u32(p.add(8)));
                    q = _mm256_or_si256(q, _mm256_and_si256(hb, _mm256_set1_epi8(4)));
                }
                dot_u8::<VNNI>(q, a)
            }
        }
    }
}

/// Rows taken together: they share each activation chunk's load and scale.
const ROWS: usize = 4;

#[inline(always)]
unsafe fn rows<const VNNI: bool, const BITS: u32>(
    w: &GroupRows<'_>,
    act: &GroupAct,
    out: &mut [f32],
) {
    let mut r0 = 0;
    while r0 + ROWS <= out.len() {
        // SAFETY: rows r0..r0+ROWS are rows of `w`.
        unsafe { pass::<VNNI, BITS, ROWS>(w, r0, act, &mut out[r0..r0 + ROWS]) };
        r0 += ROWS;
    }
    while r0 < out.len() {
        // SAFETY: row r0 is a row of `w`.
        unsafe { pass::<VNNI, BITS, 1>(w, r0, act, &mut out[r0..r0 + 1]) };
        r0 += 1;
    }
}

/// Rows `r0 .. r0 + R` of `w` into `out`.
#[inline(always)]
unsafe fn pass<const VNNI: bool, const BITS: u32, const R: usize>(
    w: &GroupRows<'_>,
    r0: usize,
    act: &GroupAct,
    out: &mut [f32],
) {
    let cb = 4 * BITS as usize;
    let nc = w.cols / CHUNK;
    let per_group = w.spec.group / CHUNK;
    let ng = nc.div_ceil(per_group);
    let bias = if BITS == 8 { 128.0 } else { 0.0 };
    // SAFETY: rows r0..r0+R have `nc` chunks of `cb` bytes in `w.codes` and `ng` scales and
    // zero points each; the activation row has `nc` Q8_0 blocks (34 bytes) and sums.
    unsafe {
        let rows: [*const u8; R] =
            std::array::from_fn(|i| w.codes.as_ptr().add((r0 + i) * nc * cb));
        let mut acc = [_mm256_setzero_ps(); R];
        let mut corr = [0f32; R];
        let y0 = act.q8.as_ptr();
        for g in 0..ng {
            let c0 = g * per_group;
            let mut gacc = [_mm256_setzero_ps(); R];
            let mut zsum = 0f32;
            for c in c0..(c0 + per_group).min(nc) {
                // the R rows are contiguous: fetch ahead of where they read, R times faster
                prefetch_ahead(rows[0].wrapping_add(c * R * cb), R * cb);
                let y = y0.add(c * 34);
                let dy = f16_splat(y);
                let a = load32(y.add(2));
                zsum += *act.sums.get_unchecked(c);
                for i in 0..R {
                    let lanes = chunk_lanes::<VNNI, BITS>(rows[i].add(c * cb), a);
                    gacc[i] = _mm256_fmadd_ps(dy, _mm256_cvtepi32_ps(lanes), gacc[i]);
                }
            }
            for i in 0..R {
                let k = (r0 + i) * ng + g;
                let s = f16_splat(w.scales.as_ptr().add(k) as *const u8);
                acc[i] = _mm256_fmadd_ps(s, gacc[i], acc[i]);
                let z = f32::from(*w.zeros.get_unchecked(k)) - bias;
                corr[i] += _mm256_cvtss_f32(s) * z * zsum;
            }
        }
        for i in 0..R {
            out[i] = hsum(acc[i]) - corr[i];
        }
    }
}
