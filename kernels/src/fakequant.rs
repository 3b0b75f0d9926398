//! The tuner's quantize-dequantize of one weight group and its straight-through gradients: the
//! inner loops of `QuantLayer::qdq` and `QuantLayer::backward` (src/tuner/qdq.rs), which run
//! over every weight of a block in every tuning iteration.
//!
//! With `q = clamp(round(w/s + v) + z, qmin, qmax)` (round half to even) the group's values are
//! `ŵ = s·(q − z)`. The scalar loops are the spec; the AVX-512 loops do the same per-element
//! f32 arithmetic (an IEEE division, `roundscale` to nearest-even), so [`qdq_group`] is bit for
//! bit the scalar one, and [`qdq_group_backward`] gives the same ∂V and sums the same f32
//! terms in f64, sixteen lanes at a time instead of one.

/// One group's rounding grid: scale, zero point and the clamp range.
#[derive(Clone, Copy, Debug)]
pub struct Grid {
    pub s: f32,
    pub z: f32,
    pub qmin: f32,
    pub qmax: f32,
}

/// The sums [`qdq_group_backward`] returns, over the group's elements `c`, with `m_c = 1` where
/// the unclamped level lies inside the grid (see `strict`) and 0 where it was clamped:
/// `mul = Σ ∂ŵ·(q − z)`, `div = −Σ ∂ŵ·m·w/s`, `zp = Σ ∂ŵ·(1 − m)`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GroupSums {
    pub mul: f64,
    pub div: f64,
    pub zp: f64,
}

/// `out[c] = s·(q_c − z)` for the group `w`, `v` (all three the same length).
pub fn qdq_group(w: &[f32], v: &[f32], g: Grid, out: &mut [f32]) {
    assert!(w.len() == v.len() && w.len() == out.len());
    #[cfg(target_arch = "x86_64")]
    if crate::dispatch::Features::get().avx512f {
        // SAFETY: AVX-512F was detected at run time; the lengths were checked above.
        return unsafe { avx512::qdq_group(w, v, g, out) };
    }
    qdq_group_scalar(w, v, g, out)
}

/// Straight-through gradients of [`qdq_group`] given `dw = ∂L/∂ŵ`: `gv[c] = ∂ŵ·s·m_c` (∂L/∂V),
/// and the sums the scale and zero-point gradients are made of. `strict`: a level exactly on
/// `qmin` or `qmax` counts as clamped (torch's `clamp` gradient), otherwise as inside.
pub fn qdq_group_backward(
    w: &[f32],
    v: &[f32],
    dw: &[f32],
    g: Grid,
    strict: bool,
    gv: &mut [f32],
) -> GroupSums {
    let n = w.len();
    assert!(v.len() == n && dw.len() == n && gv.len() == n);
    #[cfg(target_arch = "x86_64")]
    if crate::dispatch::Features::get().avx512f {
        // SAFETY: AVX-512F was detected at run time; the lengths were checked above.
        return unsafe { avx512::qdq_group_backward(w, v, dw, g, strict, gv) };
    }
    qdq_group_backward_scalar(w, v, dw, g, strict, gv)
}

/// `x.round_ties_even()` without the libm call `rintf` is on a baseline x86-64 build: below
/// 2²², adding and subtracting 1.5·2²³ rounds |x| to an integer in the default rounding mode
/// (ties to even); larger magnitudes (already integers from 2²³ on), infinities and NaN take
/// the library path. The sign is put back, so −0.3 → −0.
#[inline]
pub fn round_half_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    let a = x.abs();
    if a < 4_194_304.0 {
        ((a + MAGIC) - MAGIC).copysign(x)
    } else {
        x.round_ties_even()
    }
}

fn qdq_group_scalar(w: &[f32], v: &[f32], g: Grid, out: &mut [f32]) {
    for ((o, &w), &v) in out.iter_mut().zip(w).zip(v) {
        let q = (round_half_even(w / g.s + v) + g.z).clamp(g.qmin, g.qmax);
        *o = g.s * (q - g.z);
    }
}

fn qdq_group_backward_scalar(
    w: &[f32],
    v: &[f32],
    dw: &[f32],
    g: Grid,
    strict: bool,
    gv: &mut [f32],
) -> GroupSums {
    let mut sums = GroupSums::default();
    for c in 0..w.len() {
        let pre = round_half_even(w[c] / g.s + v[c]) + g.z;
        let inside = if strict {
            pre > g.qmin && pre < g.qmax
        } else {
            pre >= g.qmin && pre <= g.qmax
        };
        let q = pre.clamp(g.qmin, g.qmax);
        let m = if inside { 1.0 } else { 0.0 };
        gv[c] = dw[c] * g.s * m;
        sums.mul += (dw[c] * (q - g.z)) as f64;
        sums.div -= (dw[c] * m * w[c] / g.s) as f64;
        sums.zp += (dw[c] * (1.0 - m)) as f64;
    }
    sums
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Grid, GroupSums};
    use crate::vmath::avx512::lanes;
    use std::arch::x86_64::*;

    /// round(w/s + v) + z of 16 lanes, before the clamp.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn level(w: __m512, v: __m512, s: __m512, z: __m512) -> __m512 {
        let x = _mm512_add_ps(_mm512_div_ps(w, s), v);
        let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
        _mm512_add_ps(r, z)
    }

    /// Sum the 16 f32 lanes of `x` (masked lanes zero) into the two f64 accumulators.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn add_f64(acc: &mut [__m512d; 2], x: __m512) {
        let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
        let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
            _mm512_castps_pd(x),
        )));
        acc[0] = _mm512_add_pd(acc[0], lo);
        acc[1] = _mm512_add_pd(acc[1], hi);
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn qdq_group(w: &[f32], v: &[f32], g: Grid, out: &mut [f32]) {
        let n = w.len();
        let (s, z) = (_mm512_set1_ps(g.s), _mm512_set1_ps(g.z));
        let (lo, hi) = (_mm512_set1_ps(g.qmin), _mm512_set1_ps(g.qmax));
        let mut i = 0;
        while i < n {
            let m = lanes(n, i);
            // SAFETY: masked loads and stores of lanes below n in slices the caller checked
            // to be n long.
            unsafe {
                let wv = _mm512_maskz_loadu_ps(m, w.as_ptr().add(i));
                let vv = _mm512_maskz_loadu_ps(m, v.as_ptr().add(i));
                // max then min with the level second: a NaN level stays NaN, as with `clamp`.
                let q = _mm512_min_ps(hi, _mm512_max_ps(lo, level(wv, vv, s, z)));
                let y = _mm512_mul_ps(s, _mm512_sub_ps(q, z));
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), m, y);
            }
            i += 16;
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn qdq_group_backward(
        w: &[f32],
        v: &[f32],
        dw: &[f32],
        g: Grid,
        strict: bool,
        gv: &mut [f32],
    ) -> GroupSums {
        let n = w.len();
        let (s, z) = (_mm512_set1_ps(g.s), _mm512_set1_ps(g.z));
        let (lo, hi) = (_mm512_set1_ps(g.qmin), _mm512_set1_ps(g.qmax));
        let one = _mm512_set1_ps(1.0);
        let zero = _mm512_setzero_pd();
        let (mut mul, mut div, mut zp) = ([zero; 2], [zero; 2], [zero; 2]);
        let mut i = 0;
        while i < n {
            let m = lanes(n, i);
            // SAFETY: as in `qdq_group`, over four slices checked to be n long.
            unsafe {
                let wv = _mm512_maskz_loadu_ps(m, w.as_ptr().add(i));
                let vv = _mm512_maskz_loadu_ps(m, v.as_ptr().add(i));
                let d = _mm512_maskz_loadu_ps(m, dw.as_ptr().add(i));
                let pre = level(wv, vv, s, z);
                let inside = if strict {
                    _mm512_cmp_ps_mask::<_CMP_GT_OQ>(pre, lo)
                        & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(pre, hi)
                } else {
                    _mm512_cmp_ps_mask::<_CMP_GE_OQ>(pre, lo)
                        & _mm512_cmp_ps_mask::<_CMP_LE_OQ>(pre, hi)
                };
                let mk = _mm512_maskz_mov_ps(inside, one);
                let q = _mm512_min_ps(hi, _mm512_max_ps(lo, pre));
                _mm512_mask_storeu_ps(
                    gv.as_mut_ptr().add(i),
                    m,
                    _mm512_mul_ps(_mm512_mul_ps(d, s), mk),
                );
                // Masked-off lanes loaded zeros: d = 0 makes every term 0 there.
                add_f64(&mut mul, _mm512_mul_ps(d, _mm512_sub_ps(q, z)));
                let t = _mm512_div_ps(_mm512_mul_ps(_mm512_mul_ps(d, mk), wv), s);
                add_f64(&mut div, t);
                add_f64(&mut zp, _mm512_mul_ps(d, _mm512_sub_ps(one, mk)));
            }
            i += 16;
        }
        let total = |a: [__m512d; 2]| _mm512_reduce_add_pd(_mm512_add_pd(a[0], a[1]));
        GroupSums {
            mul: total(mul),
            div: -total(div),
            zp: total(zp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` values in [−1, 1).
    fn data(n: usize, seed: u32) -> Vec<f32> {
        crate::gemm::tests::fill(n, seed)
            .iter()
            .map(|x| 2.0 * x)
            .collect()
    }

    #[test]
    fn round_half_even_is_the_library_rounding() {
        let same = |x: f32| {
            let (a, b) = (round_half_even(x), x.round_ties_even());
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{x}: {a} vs {b}"
            );
        };
        // every tie and its neighbours up to 2^12, both signs
        for i in -8192i32..=8192 {
            let t = i as f32 * 0.5;
            for x in [
                t,
                f32::from_bits(t.to_bits() + 1),
                f32::from_bits(t.to_bits().max(1) - 1),
            ] {
                same(x);
                same(-x);
            }
        }
        // around the switch to the library path, and the odd cases
        for e in [
            4_194_303.5f32,
            4_194_304.0,
            4_194_304.5,
            8_388_607.5,
            8_388_608.0,
            1e30,
        ] {
            same(e);
            same(-e);
        }
        for x in [
            0.0,
            -0.0,
            0.49999997,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NAN,
        ] {
            same(x);
            same(-x);
        }
        for x in data(100_000, 9).into_iter().map(|x| x * 300.0) {
            same(x);
        }
    }

    /// The vector loops against the scalar spec: the values bit for bit, ∂V bit for bit, the
    /// sums to f64 rounding; on groups of every tail length, with levels landing exactly on the
    /// grid's ends, on ties, and clamped on both sides.
    #[test]
    fn vector_loops_match_the_scalar_spec() {
        if !crate::dispatch::Features::get().avx512f {
            eprintln!("no AVX-512 here: the scalar loops are the only ones");
        }
        for n in [1usize, 15, 16, 17, 32, 100, 128] {
            let w: Vec<f32> = data(n, n as u32).iter().map(|x| x * 0.1).collect();
            let mut v: Vec<f32> = data(n, 99 + n as u32).iter().map(|x| x * 0.6).collect();
            let dw = data(n, 7 + n as u32);
            // Ties and exact ends: w/s + v = k + 0.5 and = qmax.
            v[0] = 0.5 - w[0] / 0.01;
            if n > 2 {
                v[2] = 7.0 - w[2] / 0.01;
            }
            for (g, strict) in [
                (
                    Grid {
                        s: 0.01,
                        z: 0.0,
                        qmin: -8.0,
                        qmax: 7.0,
                    },
                    true,
                ),
                (
                    Grid {
                        s: 0.01,
                        z: 0.0,
                        qmin: -8.0,
                        qmax: 7.0,
                    },
                    false,
                ),
                (
                    Grid {
                        s: 0.013,
                        z: 3.0,
                        qmin: 0.0,
                        qmax: 3.0,
                    },
                    true,
                ),
                (
                    Grid {
                        s: -0.02,
                        z: 0.0,
                        qmin: -2.0,
                        qmax: 1.0,
                    },
                    false,
                ),
            ] {
                let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
                qdq_group(&w, &v, g, &mut a);
                qdq_group_scalar(&w, &v, g, &mut b);
                for c in 0..n {
                    assert_eq!(a[c].to_bits(), b[c].to_bits(), "n {n} {g:?}: value {c}");
                }
                let (mut ga, mut gb) = (vec![0f32; n], vec![0f32; n]);
                let sa = qdq_group_backward(&w, &v, &dw, g, strict, &mut ga);
                let sb = qdq_group_backward_scalar(&w, &v, &dw, g, strict, &mut gb);
                for c in 0..n {
                    assert_eq!(ga[c].to_bits(), gb[c].to_bits(), "n {n} {g:?}: dV {c}");
                }
                for (x, y, what) in [
                    (sa.mul, sb.mul, "mul"),
                    (sa.div, sb.div, "div"),
                    (sa.zp, sb.zp, "zp"),
                ] {
                    assert!(
                        (x - y).abs() <= 1e-12 * (1.0 + y.abs()),
                        "n {n} {g:?}: {what} {x} vs {y}"
                    );
                }
                // The cases meant to be reached are: some clamped, some inside.
                let clamped = ga
                    .iter()
                    .zip(&dw)
                    .filter(|(g, d)| **g == 0.0 && **d != 0.0)
                    .count();
                if n >= 32 {
                    assert!(clamped > 0 && clamped < n, "n {n} {g:?}: {clamped} clamped");
                }
            }
        }
    }
}
