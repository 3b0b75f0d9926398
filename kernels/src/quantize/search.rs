//! The scale searches of `ggml-quants.c`: `make_qx_quants`, `make_q3_quants`,
//! `make_qkx2_quants`/`make_qkx3_quants` and `make_qp_quants`.
//!
//! Every expression keeps ggml's f32 evaluation order (C evaluates `w*x[i]*l` as `(w*x[i])*l`,
//! `a - b*c` with a rounded product, ...); integer `l` values are converted to f32 where C
//! converts them. Quant arrays have ggml's element types (`int8_t` or `uint8_t`), so stores wrap
//! exactly as in C.

use super::GROUP_MAX_EPS;
use crate::reference::{c_max, nearest_int};

/// The element of largest magnitude (the first on ties) and that magnitude: the `max`/`amax`
/// scan at the top of `make_qx_quants` and `make_q3_quants`.
#[inline(always)]
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    (max, amax)
}

/// `MAX(lo, MIN(hi, l))` on ints.
#[inline(always)]
fn clamp_i(l: i32, lo: i32, hi: i32) -> i32 {
    l.min(hi).max(lo)
}

/// `make_qx_quants(n, nmax, x, L, rmse_type = 1, qw)`: symmetric quants `L[i] = l + nmax` with
/// `l` in `[-nmax, nmax - 1]`, choosing among 19 candidate scales `-(nmax + 0.1·is) / max` the
/// one with the best weighted least-squares fit. Weights are `qw` or, without it, `x²`.
/// Returns the scale (`x ≈ scale · (L - nmax)`). All-zero groups (`amax < 1e-15`) give `L = 0`
/// and scale 0.
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], ls: &mut [i8], qw: Option<&[f32]>) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: avx2() is true only when the CPU has AVX2 (the selected tier is Avx2).
        return unsafe { make_qx_quants_avx2(nmax, x, ls, qw) };
    }
    make_qx_quants_impl(nmax, x, ls, qw)
}

/// Whether the AVX2 tier is selected (`AUTOROUND_ISA` or the CPU): the lane loops below are
/// then compiled for 8-wide vectors. Plain multiplies and adds only (no FMA): same bits.
#[inline(always)]
fn avx2() -> bool {
    static A: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *A.get_or_init(|| {
        cfg!(target_arch = "x86_64")
            && matches!(
                crate::dispatch::Tier::selected(),
                Ok(t) if t >= crate::dispatch::Tier::Avx2
            )
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn make_qx_quants_avx2(nmax: i32, x: &[f32], ls: &mut [i8], qw: Option<&[f32]>) -> f32 {
    make_qx_quants_impl(nmax, x, ls, qw)
}

#[inline(always)]
fn make_qx_quants_impl(nmax: i32, x: &[f32], ls: &mut [i8], qw: Option<&[f32]>) -> f32 {
    let n = x.len();
    debug_assert_eq!(ls.len(), n);
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        ls.fill(0);
        return 0.0;
    }
    // ggml tries the scales one after another; each candidate's sums are their own sequential
    // f32 chains over i, independent of the others (only the choice afterwards is sequential).
    // So all 19 chains run side by side here, lane c for is = c - 9 (lane 9 is the first pass,
    // is = 0), which the compiler vectorizes across lanes without reordering any chain: the
    // same bits as ggml's loop, several times faster. Lanes 19..24 are padding.
    const LANES: usize = 24;
    let mut iscale = [0.0f32; LANES];
    for (c, v) in iscale.iter_mut().enumerate() {
        let is = c.min(18) as i32 - 9;
        *v = if is == 0 {
            -(nmax as f32) / max
        } else {
            -(nmax as f32 + 0.1f32 * is as f32) / max
        };
    }
    let mut sumlx = [0.0f32; LANES];
    let mut suml2 = [0.0f32; LANES];
    let (lo, hi) = (-nmax, nmax - 1);
    for (i, &xi) in x.iter().enumerate() {
        let w = match qw {
            Some(w) => w[i],
            None => xi * xi,
        };
        let wx = w * xi;
        for c in 0..LANES {
            let lf = clamp_i(nearest_int(iscale[c] * xi), lo, hi) as f32;
            sumlx[c] += wx * lf;
            suml2[c] += w * lf * lf;
        }
    }
    // The choice, in ggml's order: the first pass, then is = -9..=9 without 0.
    let mut scale = if suml2[9] != 0.0 {
        sumlx[9] / suml2[9]
    } else {
        0.0
    };
    let mut best = scale * sumlx[9];
    let mut chosen = 9;
    for c in (0..19).filter(|&c| c != 9) {
        if suml2[c] > 0.0 && sumlx[c] * sumlx[c] > best * suml2[c] {
            scale = sumlx[c] / suml2[c];
            best = scale * sumlx[c];
            chosen = c;
        }
    }
    for (l, &xi) in ls.iter_mut().zip(x) {
        *l = (nmax + clamp_i(nearest_int(iscale[chosen] * xi), lo, hi)) as i8;
    }
    scale
}

/// `make_q3_quants(n, nmax, x, L, do_rmse = true)`: as [`make_qx_quants`]'s first pass with
/// weights `x²`, then up to 5 rounds of per-element coordinate descent on the least-squares
/// objective. `L[i] = l + nmax`; returns the scale. All-zero groups give `L = 0`, scale 0.
pub(crate) fn make_q3_quants(nmax: i32, x: &[f32], ls: &mut [i8]) -> f32 {
    let n = x.len();
    debug_assert_eq!(ls.len(), n);
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        ls.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let l = clamp_i(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        ls[i] = l as i8;
        let w = x[i] * x[i];
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for _itry in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = x[i] * x[i];
            let li = ls[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = clamp_i(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                if new_l != ls[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        ls[i] = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for l in ls.iter_mut() {
        *l = (*l as i32 + nmax) as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Parameters of the asymmetric (scale + min) search.
#[derive(Clone, Copy)]
pub(crate) struct MinSearch {
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    pub use_mad: bool,
}

/// `make_qkx2_quants` (`qkx3 == false`) and `make_qkx3_quants` with explicit weights
/// (`qkx3 == true`): asymmetric quants `L[i]` in `[0, nmax]` with `x ≈ scale · L + min`
/// (`min <= 0`), trying `nstep + 1` candidate scales `(rmin + rdelta·is + nmax) / (max - min)`
/// and fitting scale and min by weighted least squares for each; the best weighted error
/// (absolute with `use_mad`, squared otherwise) wins.
///
/// Returns `(scale, the_min)` with `the_min = -min` (so `>= 0`, and `-0.0` when `min` is 0,
/// exactly as ggml stores it). The two ggml functions differ only in the degenerate-range test
/// (`max == min` vs `max <= min`, which differ for no finite input) and in qkx3's default
/// weights `x²`, which no caller here uses.
pub(crate) fn make_qkx_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    ls: &mut [u8],
    laux: &mut [u8],
    p: MinSearch,
    qkx3: bool,
) -> (f32, f32) {
    let n = x.len();
    debug_assert!(ls.len() == n && laux.len() == n && weights.len() == n);
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    let degenerate = if qkx3 { max <= min } else { max == min };
    if degenerate {
        ls.fill(0);
        return (0.0, -min);
    }
    let iscale = nmax as f32 / (max - min);
    let scale = 1.0f32 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min));
        ls[i] = clamp_i(l, 0, nmax) as u8;
        let mut diff = scale * ls[i] as f32 + min - x[i];
        diff = if p.use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    let st = QkxStart {
        sum_w,
        sum_x,
        max,
        min,
        scale,
        best_error,
    };
    if n <= LANE_N {
        qkx_search_lanes(nmax, x, weights, ls, p, st)
    } else {
        qkx_search_seq(nmax, x, weights, ls, laux, p, st)
    }
}

/// Where [`make_qkx_quants`]'s candidate loop starts: the weight sums, the range, and the first
/// guess (`scale`, `min`) with its error.
#[derive(Clone, Copy)]
struct QkxStart {
    sum_w: f32,
    sum_x: f32,
    max: f32,
    min: f32,
    scale: f32,
    best_error: f32,
}

/// The candidate loop of [`make_qkx_quants`] as ggml writes it, one candidate after another.
fn qkx_search_seq(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    ls: &mut [u8],
    laux: &mut [u8],
    p: MinSearch,
    st: QkxStart,
) -> (f32, f32) {
    let QkxStart {
        sum_w,
        sum_x,
        max,
        mut min,
        mut scale,
        mut best_error,
    } = st;
    let n = x.len();
    let mut iscale;
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmax as f32) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..n {
            let l = clamp_i(nearest_int(iscale * (x[i] - min)), 0, nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let mut diff = this_scale * laux[i] as f32 + this_min - x[i];
                diff = if p.use_mad { diff.abs() } else { diff * diff };
                cur_error += weights[i] * diff;
            }
            if cur_error < best_error {
                ls.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Longest group [`qkx_search_lanes`] takes (the K-quants' sub-blocks have 16 or 32).
const LANE_N: usize = 32;
/// Candidates evaluated side by side.
const QKX_LANES: usize = 24;

/// The candidate loop of [`make_qkx_quants`], with the same bits, evaluating up to
/// [`QKX_LANES`] candidates side by side. Each candidate's sums and error are sequential f32
/// chains over the group that do not depend on the other candidates, except through `min`:
/// ggml uses the current best `min` in the next candidates' `iscale` and `x - min`. So the
/// candidates are evaluated speculatively with the current `min`, then chosen in ggml's order;
/// when an accepted candidate changes `min`, the ones after it are evaluated again.
fn qkx_search_lanes(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    ls: &mut [u8],
    p: MinSearch,
    st: QkxStart,
) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: avx2() is true only when the CPU has AVX2.
        return unsafe { qkx_search_lanes_avx2(nmax, x, weights, ls, p, st) };
    }
    qkx_search_lanes_impl(nmax, x, weights, ls, p, st)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn qkx_search_lanes_avx2(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    ls: &mut [u8],
    p: MinSearch,
    st: QkxStart,
) -> (f32, f32) {
    qkx_search_lanes_impl(nmax, x, weights, ls, p, st)
}

#[inline(always)]
fn qkx_search_lanes_impl(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    ls: &mut [u8],
    p: MinSearch,
    st: QkxStart,
) -> (f32, f32) {
    let QkxStart {
        sum_w,
        sum_x,
        max,
        mut min,
        mut scale,
        mut best_error,
    } = st;
    let n = x.len();
    let x = &x[..n];
    let weights = &weights[..n];
    let ncand = (p.nstep + 1) as usize;
    let mut laux = [[0u8; QKX_LANES]; LANE_N];
    let mut start = 0usize;
    while start < ncand {
        let k = QKX_LANES.min(ncand - start);
        let mut iscale = [0.0f32; QKX_LANES];
        for (c, v) in iscale.iter_mut().enumerate() {
            let is = (start + c.min(k - 1)) as f32;
            *v = (p.rmin + p.rdelta * is + nmax as f32) / (max - min);
        }
        let mut sum_l = [0.0f32; QKX_LANES];
        let mut sum_l2 = [0.0f32; QKX_LANES];
        let mut sum_xl = [0.0f32; QKX_LANES];
        for i in 0..n {
            let (xi, w) = (x[i], weights[i]);
            let xm = xi - min;
            let row = &mut laux[i];
            for c in 0..QKX_LANES {
                let l = clamp_i(nearest_int(iscale[c] * xm), 0, nmax);
                row[c] = l as u8;
                let lf = l as f32;
                sum_l[c] += w * lf;
                sum_l2[c] += w * lf * lf;
                sum_xl[c] += w * lf * xi;
            }
        }
        let mut this_scale = [0.0f32; QKX_LANES];
        let mut this_min = [0.0f32; QKX_LANES];
        let mut valid = [false; QKX_LANES];
        for c in 0..QKX_LANES {
            let d = sum_w * sum_l2[c] - sum_l[c] * sum_l[c];
            valid[c] = d > 0.0;
            let mut s = (sum_w * sum_xl[c] - sum_x * sum_l[c]) / d;
            let mut m = (sum_l2[c] * sum_x - sum_l[c] * sum_xl[c]) / d;
            if m > 0.0 {
                m = 0.0;
                s = sum_xl[c] / sum_l2[c];
            }
            this_scale[c] = s;
            this_min[c] = m;
        }
        let mut err = [0.0f32; QKX_LANES];
        for i in 0..n {
            let (xi, w) = (x[i], weights[i]);
            let row = &laux[i];
            for c in 0..QKX_LANES {
                let diff = this_scale[c] * row[c] as f32 + this_min[c] - xi;
                let diff = if p.use_mad { diff.abs() } else { diff * diff };
                err[c] += w * diff;
            }
        }
        let mut next = start + k;
        for c in 0..k {
            if valid[c] && err[c] < best_error {
                for (l, row) in ls.iter_mut().zip(&laux[..n]) {
                    *l = row[c];
                }
                best_error = err[c];
                scale = this_scale[c];
                let changed = this_min[c].to_bits() != min.to_bits();
                min = this_min[c];
                if changed {
                    next = start + c + 1;
                    break;
                }
            }
        }
        start = next;
    }
    (scale, -min)
}

/// `make_qp_quants(n, nmax, x, L, quant_weights)`: quantizes non-negative values (the
/// sub-block scales and mins of the imatrix K-quants) to `L[i]` in `[0, nmax]`, `x ≈ scale · L`:
/// 9 candidate scales `(nmax + 0.1·is) / max` by weighted squared error, then up to 5 rounds of
/// coordinate descent. Returns the scale; all-zero input (`max < 1e-15`) gives `L = 0`, 0.
///
/// As in C, `L` is `uint8_t` (a negative `l` from a negative input wraps) while the running sums
/// use the unwrapped int.
pub(crate) fn make_qp_quants(nmax: i32, x: &[f32], ls: &mut [u8], qw: &[f32]) -> f32 {
    let n = x.len();
    debug_assert!(ls.len() == n && qw.len() == n);
    let mut max = 0.0f32;
    for &v in x {
        max = c_max(max, v);
    }
    if max < GROUP_MAX_EPS {
        ls.fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for i in 0..n {
        ls[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0f32 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..n {
        let diff = x[i] - scale * ls[i] as f32;
        best_mse += qw[i] * diff * diff;
    }
    for is in -4i32..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1f32 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0f32 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).min(nmax);
        ls[i] = l as u8;
        let w = qw[i];
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for _itry in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = qw[i];
            let li = ls[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != ls[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        ls[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so the test needs no dependency.
    fn rng(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed | 1;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    /// The side-by-side candidate search gives the sequential one's bits: scale, min and quants,
    /// for every parameter set the K-quants use, with and without importance weights, including
    /// groups whose accepted candidates move `min` (so the speculation is redone).
    #[test]
    fn lanes_equal_sequential() {
        let params = [
            (
                15,
                MinSearch {
                    rmin: -1.0,
                    rdelta: 0.1,
                    nstep: 20,
                    use_mad: false,
                },
            ),
            (
                31,
                MinSearch {
                    rmin: -0.5,
                    rdelta: 0.1,
                    nstep: 15,
                    use_mad: false,
                },
            ),
            (
                3,
                MinSearch {
                    rmin: -0.5,
                    rdelta: 0.1,
                    nstep: 15,
                    use_mad: true,
                },
            ),
            (
                15,
                MinSearch {
                    rmin: -0.9,
                    rdelta: 0.05,
                    nstep: 36,
                    use_mad: false,
                },
            ),
        ];
        let mut r = rng(42);
        let mut moved = 0;
        for trial in 0..4000 {
            let n = if trial % 2 == 0 { 32 } else { 16 };
            let (nmax, p) = params[trial % params.len()];
            let shift = if trial % 3 == 0 { 0.7 } else { 0.0 };
            let x: Vec<f32> = (0..n).map(|_| r() * r().abs() * 3.0 + shift).collect();
            let w: Vec<f32> = if trial % 5 == 0 {
                x.iter().map(|v| v * v).collect()
            } else {
                (0..n).map(|_| r().abs() + 0.01).collect()
            };
            // The prelude of make_qkx_quants.
            let mut min = x
                .iter()
                .copied()
                .fold(x[0], |m, v| if v < m { v } else { m });
            let max = x
                .iter()
                .copied()
                .fold(x[0], |m, v| if v > m { v } else { m });
            let (mut sum_w, mut sum_x) = (w[0], w[0] * x[0]);
            for i in 1..n {
                sum_w += w[i];
                sum_x += w[i] * x[i];
            }
            if min > 0.0 {
                min = 0.0;
            }
            let scale = (max - min) / nmax as f32;
            let best = 1e30f32;
            let st = QkxStart {
                sum_w,
                sum_x,
                max,
                min,
                scale,
                best_error: best,
            };
            let (mut l1, mut l2, mut aux) = (vec![0u8; n], vec![0u8; n], vec![0u8; n]);
            let a = qkx_search_seq(nmax, &x, &w, &mut l1, &mut aux, p, st);
            let b = qkx_search_lanes(nmax, &x, &w, &mut l2, p, st);
            let mut l3 = vec![0u8; n];
            let c = qkx_search_lanes_impl(nmax, &x, &w, &mut l3, p, st);
            assert_eq!(
                (b.0.to_bits(), b.1.to_bits(), &l2),
                (c.0.to_bits(), c.1.to_bits(), &l3)
            );
            assert_eq!(
                (a.0.to_bits(), a.1.to_bits()),
                (b.0.to_bits(), b.1.to_bits()),
                "trial {trial}"
            );
            assert_eq!(l1, l2, "trial {trial}");
            if a.1.to_bits() != (-min).to_bits() {
                moved += 1;
            }
        }
        assert!(
            moved > 100,
            "only {moved} groups moved min: the test does not exercise re-evaluation"
        );
    }
}
