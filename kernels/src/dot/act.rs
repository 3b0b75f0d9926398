//! The engine's on-the-fly activation quantizers (Q8_0, Q8_1, Q8_K) with AVX2: the same bytes as
//! [`reference::engine_quantize_fn`], which remains the spec (tests compare every byte).
//!
//! The scalar forms round with `round_ties_even`, which the x86-64 baseline compiles to a libm
//! call per element: before this, quantizing the activations took a quarter of a 512-token
//! prefill on SmolLM2 (perf).

use crate::reference;
use crate::GgmlType;

/// Quantizes one activation row `x` to `vt` (a vec-dot type) into `out`, exactly as
/// [`reference::engine_quantize_fn`]`(vt)` does, with AVX2 where the CPU has it.
///
/// # Panics
/// If `vt` has no quantizer or the sizes do not match (as the reference).
pub fn quantize(vt: GgmlType, x: &[f32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if matches!(vt, GgmlType::Q8_0 | GgmlType::Q8_1 | GgmlType::Q8_K) && simd_ok() {
        let (qk, bytes) = match vt {
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q8_1 => (32, 36),
            _ => (256, 292),
        };
        assert!(
            x.len().is_multiple_of(qk) && out.len() == x.len() / qk * bytes,
            "{vt}: {} values into {} bytes",
            x.len(),
            out.len()
        );
        // SAFETY: AVX2/FMA/F16C were detected; the sizes were checked above.
        unsafe { x86::quantize(vt, x, out) };
        return;
    }
    let f = reference::engine_quantize_fn(vt).unwrap_or_else(|| panic!("{vt}: no quantizer"));
    f(x, out)
}

/// [`reference::kquants::quantize_row_q8_k_x86_mat`] (llama.cpp's Q8_K for the activations of
/// its repacked Q4_K products), with AVX2 where the CPU has it.
pub fn quantize_q8_k_mat(x: &[f32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if simd_ok() {
        assert!(
            x.len().is_multiple_of(256) && out.len() == x.len() / 256 * 292,
            "Q8_K row sizes"
        );
        // SAFETY: AVX2/FMA/F16C were detected; the sizes were checked above.
        unsafe { x86::quantize_q8_k(x, out, true) };
        return;
    }
    reference::kquants::quantize_row_q8_k_x86_mat(x, out)
}

#[cfg(target_arch = "x86_64")]
fn simd_ok() -> bool {
    use crate::dispatch::{Features, Tier};
    let f = Features::get();
    f.avx2 && f.fma && f.f16c && Tier::selected().is_ok_and(|t| t >= Tier::Avx2)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::reference::f32_to_f16_bits;
    use crate::GgmlType;
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2, FMA and F16C; `out` holds the blocks of `x` (checked by the caller).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize(vt: GgmlType, x: &[f32], out: &mut [u8]) {
        match vt {
            GgmlType::Q8_0 | GgmlType::Q8_1 => {
                let (bytes, qs) = if vt == GgmlType::Q8_0 {
                    (34, 2)
                } else {
                    (36, 4)
                };
                for (xb, yb) in x.chunks_exact(32).zip(out.chunks_exact_mut(bytes)) {
                    // SAFETY: 32 floats in, 32 bytes out at `qs`.
                    let (amax, _) = unsafe { amax_first(xb) };
                    let d = amax / 127.0;
                    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                    yb[0..2].copy_from_slice(&f32_to_f16_bits(d).to_le_bytes());
                    // SAFETY: as above.
                    let sum = unsafe { round_block(xb, id, yb[qs..qs + 32].as_mut_ptr()) };
                    if vt == GgmlType::Q8_1 {
                        let s = f32_to_f16_bits(d * sum as f32);
                        yb[2..4].copy_from_slice(&s.to_le_bytes());
                    }
                }
            }
            // SAFETY: forwarded.
            _ => unsafe { quantize_q8_k(x, out, false) },
        }
    }

    /// Q8_K: the scale's sign from the first element of largest magnitude (the reference), or
    /// with `mat` negative whenever some element is `+max|x|` (llama.cpp's 4-row quantizer).
    ///
    /// # Safety
    /// As [`quantize`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize_q8_k(x: &[f32], out: &mut [u8], mat: bool) {
        for (xb, yb) in x.chunks_exact(256).zip(out.chunks_exact_mut(292)) {
            // SAFETY: 256 floats in.
            let (amax, max) = unsafe { amax_first(xb) };
            if amax == 0.0 {
                yb.fill(0);
                continue;
            }
            let iscale = if !mat {
                -127.0f32 / max
            } else if xb.contains(&amax) {
                -127.0 / amax
            } else {
                127.0 / amax
            };
            for j in 0..16 {
                let q = yb[4 + 16 * j..].as_mut_ptr();
                // SAFETY: 16 floats in, 16 bytes out inside the block's quants.
                let s = unsafe { round_16(&xb[16 * j..16 * j + 16], iscale, q) };
                yb[260 + 2 * j..262 + 2 * j].copy_from_slice(&(s as i16).to_le_bytes());
            }
            yb[0..4].copy_from_slice(&(1.0f32 / iscale).to_le_bytes());
        }
    }

    /// max |x| and the first element whose magnitude it is.
    #[inline(always)]
    unsafe fn amax_first(x: &[f32]) -> (f32, f32) {
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let mut m = _mm256_setzero_ps();
        for c in x.chunks_exact(8) {
            // SAFETY: eight floats.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            m = _mm256_max_ps(m, _mm256_and_ps(v, abs));
        }
        let h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_max_ss(h, _mm_movehdup_ps(h));
        let amax = _mm_cvtss_f32(h);
        let first = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0);
        (amax, first)
    }

    /// Eight rounded (nearest, ties to even) `x·scale` as i32.
    #[inline(always)]
    unsafe fn round8(p: *const f32, scale: __m256) -> __m256i {
        // SAFETY: the caller points at eight floats.
        let v = unsafe { _mm256_mul_ps(_mm256_loadu_ps(p), scale) };
        _mm256_cvtps_epi32(_mm256_round_ps::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(v))
    }

    /// 32 values: `q = round(x·id)` as bytes at `q`; returns Σq.
    #[inline(always)]
    unsafe fn round_block(x: &[f32], id: f32, q: *mut u8) -> i32 {
        let s = _mm256_set1_ps(id);
        // SAFETY: 32 floats in `x`, 32 bytes at `q`.
        unsafe {
            let p = x.as_ptr();
            let (a, b) = (round8(p, s), round8(p.add(8), s));
            let (c, d) = (round8(p.add(16), s), round8(p.add(24), s));
            let sum = _mm256_add_epi32(_mm256_add_epi32(a, b), _mm256_add_epi32(c, d));
            // packs interleave the 128-bit lanes; the permute puts the bytes back in order
            let bytes = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
            let bytes =
                _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(q as *mut __m256i, bytes);
            hsum_i32(sum)
        }
    }

    /// 16 values: `q = round(x·iscale)` as bytes at `q`; returns Σq.
    #[inline(always)]
    unsafe fn round_16(x: &[f32], iscale: f32, q: *mut u8) -> i32 {
        let s = _mm256_set1_ps(iscale);
        // SAFETY: 16 floats in `x`, 16 bytes at `q`.
        unsafe {
            let (a, b) = (round8(x.as_ptr(), s), round8(x.as_ptr().add(8), s));
            let w = _mm256_packs_epi32(a, b); // a0-3 b0-3 | a4-7 b4-7
            let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(w);
            let bytes = _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
            _mm_storeu_si128(q as *mut __m128i, bytes);
            hsum_i32(_mm256_add_epi32(a, b))
        }
    }

    #[inline(always)]
    unsafe fn hsum_i32(v: __m256i) -> i32 {
        let h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let h = _mm_add_epi32(h, _mm_shuffle_epi32::<0b01_00_11_10>(h));
        let h = _mm_add_epi32(h, _mm_shuffle_epi32::<0b10_11_00_01>(h));
        _mm_cvtsi128_si32(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte equals the reference's, on rows with ties, zeros, one huge value, and both
    /// signs of the largest magnitude (Q8_K's scale sign follows the first such element).
    #[test]
    fn simd_quantizers_match_the_reference_bytes() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for case in 0..40 {
            let n = 512;
            let mut x: Vec<f32> = (0..n)
                .map(|_| (next() % 2_000_001) as f32 / 1e6 - 1.0)
                .collect();
            match case % 5 {
                1 => x
                    .iter_mut()
                    .for_each(|v| *v = (*v * 8.0).round() / 8.0 * 127.0), // ties
                2 => x[..256].fill(0.0),
                3 => x[7] = 3e4,
                4 => {
                    x[3] = -5.0;
                    x[200] = 5.0;
                    x[300] = 5.0;
                    x[301] = -5.0;
                }
                _ => {}
            }
            for vt in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
                let bytes = vt.row_bytes(n as u64).unwrap() as usize;
                let (mut want, mut got) = (vec![0u8; bytes], vec![1u8; bytes]);
                reference::engine_quantize_fn(vt).unwrap()(&x, &mut want);
                quantize(vt, &x, &mut got);
                assert_eq!(got, want, "{vt} case {case}");
            }
            let mut want = vec![0u8; 2 * 292];
            let mut got = vec![1u8; 2 * 292];
            reference::kquants::quantize_row_q8_k_x86_mat(&x, &mut want);
            quantize_q8_k_mat(&x, &mut got);
            assert_eq!(got, want, "Q8_K (4-row form) case {case}");
        }
    }
}
