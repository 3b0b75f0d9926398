//! Vectorized element-wise math for the tuner's hot loops (softmax rows of attention).
//!
//! `exp` here is a degree-7 Taylor polynomial on the reduced argument `r = x − n·ln 2` (`|r| ≤ ln2/2`)
//! scaled by `2^n` with AVX-512's `scalef`, within 2 ulp of libm's `expf` for every finite
//! input (checked in the tests); without AVX-512 the loops call libm's `expf`.

/// `x[i] = exp(scale·x[i] − shift)` (one fused multiply-add) for every element; returns the
/// sum of the results.
pub fn exp_sub_sum(x: &mut [f32], scale: f32, shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::dispatch::Features::get().avx512f {
        // SAFETY: AVX-512F was detected at run time.
        return unsafe { avx512::exp_sub_sum(x, scale, shift) };
    }
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = v.mul_add(scale, -shift).exp();
        sum += *v;
    }
    sum
}

/// The largest element (−∞ for an empty slice; NaNs are skipped).
pub fn max_of(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::dispatch::Features::get().avx512f {
        // SAFETY: AVX-512F was detected at run time.
        return unsafe { avx512::max_of(x) };
    }
    x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

/// `1 / (1 + e^(−x))`, the scalar form the vector loops follow.
#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// SwiGLU's product `a[i] = silu(gate[i]) · up[i]` (`silu(g) = g·σ(g)`).
pub fn silu_mul(gate: &[f32], up: &[f32], a: &mut [f32]) {
    assert!(gate.len() == a.len() && up.len() == a.len());
    #[cfg(target_arch = "x86_64")]
    if crate::dispatch::Features::get().avx512f {
        // SAFETY: AVX-512F was detected at run time.
        return unsafe { avx512::silu_mul(gate, up, a) };
    }
    silu_mul_scalar(gate, up, a)
}

fn silu_mul_scalar(gate: &[f32], up: &[f32], a: &mut [f32]) {
    for ((a, &g), &u) in a.iter_mut().zip(gate).zip(up) {
        *a = g * sigmoid(g) * u;
    }
}

/// Gradients of [`silu_mul`] from `d_a`: `d_up = d_a·g·σ(g)`,
/// `d_gate = d_a·u·σ(g)·(1 + g·(1 − σ(g)))`.
pub fn silu_mul_backward(
    gate: &[f32],
    up: &[f32],
    d_a: &[f32],
    d_gate: &mut [f32],
    d_up: &mut [f32],
) {
    let n = d_a.len();
    assert!(gate.len() == n && up.len() == n && d_gate.len() == n && d_up.len() == n);
    #[cfg(target_arch = "x86_64")]
    if crate::dispatch::Features::get().avx512f {
        // SAFETY: AVX-512F was detected at run time.
        return unsafe { avx512::silu_mul_backward(gate, up, d_a, d_gate, d_up) };
    }
    silu_mul_backward_scalar(gate, up, d_a, d_gate, d_up)
}

fn silu_mul_backward_scalar(
    gate: &[f32],
    up: &[f32],
    d_a: &[f32],
    d_gate: &mut [f32],
    d_up: &mut [f32],
) {
    for i in 0..d_a.len() {
        let (g, u, da) = (gate[i], up[i], d_a[i]);
        // 1 − σ(g) = e^(−g)·σ(g): no cancellation for large g (e^(−g) capped below +∞ so
        // that the product stays 1 where σ is 0).
        let e = (-g).exp().min(f32::MAX);
        let s = 1.0 / (1.0 + e);
        d_up[i] = da * g * s;
        d_gate[i] = da * u * s * (1.0 + g * (e * s));
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
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

    /// σ(x) = 1 / (1 + e^(−x)) of 16 lanes (e^(−x) saturates to +∞ below −89: σ = 0).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn sigmoid16(x: __m512) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
        _mm512_div_ps(one, _mm512_add_ps(one, e))
    }

    /// The mask of lanes `i .. i+16` that lie below `n` (`i < n`): the loops over a slice of `n`
    /// f32 step 16 lanes at a time and mask the tail.
    #[inline]
    pub(crate) fn lanes(n: usize, i: usize) -> __mmask16 {
        if n - i >= 16 {
            0xffff
        } else {
            ((1u32 << (n - i)) - 1) as __mmask16
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn silu_mul(gate: &[f32], up: &[f32], a: &mut [f32]) {
        let n = a.len();
        let mut i = 0;
        while i < n {
            let m = lanes(n, i);
            // SAFETY: the masked loads and stores touch lanes i..i+16 below n only; the caller
            // checked that the three slices are n long.
            unsafe {
                let g = _mm512_maskz_loadu_ps(m, gate.as_ptr().add(i));
                let u = _mm512_maskz_loadu_ps(m, up.as_ptr().add(i));
                let y = _mm512_mul_ps(_mm512_mul_ps(g, sigmoid16(g)), u);
                _mm512_mask_storeu_ps(a.as_mut_ptr().add(i), m, y);
            }
            i += 16;
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn silu_mul_backward(
        gate: &[f32],
        up: &[f32],
        d_a: &[f32],
        d_gate: &mut [f32],
        d_up: &mut [f32],
    ) {
        let n = d_a.len();
        let one = _mm512_set1_ps(1.0);
        let mut i = 0;
        while i < n {
            let m = lanes(n, i);
            // SAFETY: as in `silu_mul`: lanes below n of five slices checked to be n long.
            unsafe {
                let g = _mm512_maskz_loadu_ps(m, gate.as_ptr().add(i));
                let u = _mm512_maskz_loadu_ps(m, up.as_ptr().add(i));
                let da = _mm512_maskz_loadu_ps(m, d_a.as_ptr().add(i));
                let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
                let e = _mm512_min_ps(e, _mm512_set1_ps(f32::MAX));
                let s = _mm512_div_ps(one, _mm512_add_ps(one, e));
                let du = _mm512_mul_ps(_mm512_mul_ps(da, g), s);
                // 1 − σ(g) = e^(−g)·σ(g), without the cancellation of 1 − σ for large g.
                let t = _mm512_fmadd_ps(g, _mm512_mul_ps(e, s), one);
                let dg = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(da, u), s), t);
                _mm512_mask_storeu_ps(d_up.as_mut_ptr().add(i), m, du);
                _mm512_mask_storeu_ps(d_gate.as_mut_ptr().add(i), m, dg);
            }
            i += 16;
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn max_of(x: &[f32]) -> f32 {
        let mut acc = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut chunks = x.chunks_exact(16);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly 16 f32. `max(acc, v)` keeps acc where v is NaN.
            unsafe { acc = _mm512_max_ps(_mm512_loadu_ps(c.as_ptr()), acc) };
        }
        let tail = chunks.remainder();
        let mut m = _mm512_reduce_max_ps(acc);
        for &v in tail {
            m = m.max(v);
        }
        m
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn exp_sub_sum(x: &mut [f32], scale: f32, shift: f32) -> f32 {
        let k = _mm512_set1_ps(scale);
        let s = _mm512_set1_ps(shift);
        let mut acc = _mm512_setzero_ps();
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly 16 f32.
            unsafe {
                let v = exp16(_mm512_fmsub_ps(_mm512_loadu_ps(c.as_ptr()), k, s));
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
                let e = exp16(_mm512_fmsub_ps(v, k, s));
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

    /// The vector SwiGLU and its gradients against f64 formulas, over a sweep that reaches the
    /// saturating ends of σ, with a ragged tail.
    #[test]
    fn silu_mul_and_its_gradients_match_f64() {
        let n = 4099;
        let g: Vec<f32> = (0..n)
            .map(|i| -100.0 + 200.0 * i as f32 / n as f32)
            .collect();
        let u: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 113) as f32 / 37.0 - 1.5)
            .collect();
        let da: Vec<f32> = (0..n)
            .map(|i| ((i * 104729) % 89) as f32 / 29.0 - 1.5)
            .collect();
        for vector in [true, false] {
            let mut a = vec![0f32; n];
            let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
            if vector {
                silu_mul(&g, &u, &mut a);
                silu_mul_backward(&g, &u, &da, &mut dg, &mut du);
            } else {
                silu_mul_scalar(&g, &u, &mut a);
                silu_mul_backward_scalar(&g, &u, &da, &mut dg, &mut du);
            }
            // `mag` bounds the terms summed (1 + g·(1 − σ) cancels near g ≈ −1.28). Below g ≈ −88,
            // e^(−g) overflows f32 and σ is 0 (as with libm): products of ~1e−38.
            let close = |got: f32, want: f64, mag: f64, what: &str, i: usize| {
                let tol = 8.0 * f32::EPSILON as f64 * mag + 1e-30;
                assert!(
                    (got as f64 - want).abs() <= tol,
                    "{what}[{i}] = {got}, want {want} (g {})",
                    g[i]
                );
            };
            for i in 0..n {
                let (gi, ui, di) = (g[i] as f64, u[i] as f64, da[i] as f64);
                let s = 1.0 / (1.0 + (-gi).exp());
                close(a[i], gi * s * ui, (gi * s * ui).abs(), "a", i);
                close(du[i], di * gi * s, (di * gi * s).abs(), "d_up", i);
                let mag = (di * ui * s).abs() * (1.0 + (gi * (1.0 - s)).abs());
                close(
                    dg[i],
                    di * ui * s * (1.0 + gi * (1.0 - s)),
                    mag,
                    "d_gate",
                    i,
                );
            }
        }
    }

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
        exp_sub_sum(&mut y, 1.0, 0.0);
        for (&x, &got) in xs.iter().zip(&y) {
            let want = x.exp();
            assert!(ulps(got, want) <= 2, "exp({x}) = {got}, libm {want}");
        }
        // The sum of a softmax-like row (scores up to 12 below the maximum).
        let row: Vec<f32> = (0..1001).map(|i| 3.0 - (i % 97) as f32 / 8.0).collect();
        let mut y = row.clone();
        let sum = exp_sub_sum(&mut y, 1.0, 3.0);
        let want: f64 = row.iter().map(|&x| ((x - 3.0) as f64).exp()).sum();
        assert!(((sum as f64 - want) / want).abs() < 1e-6, "{sum} vs {want}");
        // Shifted, with a ragged tail, and the saturating ends.
        let mut v = vec![1.0f32, 2.0, 3.0, -200.0, 100.0];
        let s = exp_sub_sum(&mut v, 1.0, 1.0);
        assert_eq!(v[0], 1.0);
        assert!(ulps(v[1], 1f32.exp()) <= 2 && ulps(v[2], 2f32.exp()) <= 2);
        assert_eq!(v[3], 0.0);
        assert_eq!(v[4], f32::INFINITY);
        assert_eq!(s, f32::INFINITY);
        // A scale, as the attention's 1/√d: exp(x·k − shift) against f64.
        let row: Vec<f32> = (0..37).map(|i| i as f32 * 0.75 - 9.0).collect();
        let mut y = row.clone();
        let (k, shift) = (0.125f32, 1.5f32);
        let sum = exp_sub_sum(&mut y, k, shift);
        let mut want_sum = 0f64;
        for (&x, &got) in row.iter().zip(&y) {
            let want = (x as f64 * k as f64 - shift as f64).exp();
            want_sum += want;
            assert!(
                ((got as f64 - want) / want).abs() < 4e-7,
                "exp({x}·{k} − {shift}) = {got}"
            );
        }
        assert!(((sum as f64 - want_sum) / want_sum).abs() < 1e-6);
    }

    #[test]
    fn max_of_finds_the_largest_in_any_lane_and_the_tail() {
        assert_eq!(max_of(&[]), f32::NEG_INFINITY);
        for n in [1usize, 15, 16, 17, 40, 100] {
            for at in 0..n {
                let mut x: Vec<f32> = (0..n).map(|i| -((i * 37 % 11) as f32) - 1.0).collect();
                x[at] = 0.5;
                assert_eq!(max_of(&x), 0.5, "n {n}, largest at {at}");
            }
        }
        assert_eq!(max_of(&[f32::NAN, -3.0, f32::NAN]), -3.0);
    }
}
