//! Tuning-time quantize-dequantize of one linear layer's weight, and its backward pass.
//!
//! This is the reference's `int_sym` (full range: levels `-2^(b-1) … 2^(b-1)-1`, the scale may be
//! negative) and `int_asym` (levels `0 … 2^b-1` with a rounded zero point), applied per group of
//! `group_size` consecutive input columns, with the three tuned tensors of SignRound:
//!
//! - `v`: one rounding offset per weight, added before rounding (init 0, unclamped);
//! - `alpha` ("max_scale") and `beta` ("min_scale"): one per group, multiplying the group's
//!   maximum and minimum (init 1, clamped to [0, 1] by the optimizer).
//!
//! The group range `[lo, hi]` is taken once from the float weight and always contains 0. Rounding
//! is round-half-to-even with the straight-through estimator (gradient 1); clamps pass gradient
//! only inside their range; the scale is rounded to the scale dtype (f16 by default) inside the
//! graph with gradient 1, and its magnitude is kept at least `1e-5` (`1e-8` for f32 scales).

use rayon::prelude::*;

/// An integer weight scheme: bits, group size along the input dimension, symmetric or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntScheme {
    pub bits: u32,
    /// Columns per group; `0` means one group per row (the reference's `-1`).
    pub group_size: usize,
    pub sym: bool,
}

/// The precision scales are rounded to while tuning (and stored in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleDtype {
    F16,
    F32,
}

impl ScaleDtype {
    fn cast(self, x: f32) -> f32 {
        match self {
            ScaleDtype::F16 => half::f16::from_f32(x).to_f32(),
            ScaleDtype::F32 => x,
        }
    }
    fn thresh(self) -> f32 {
        match self {
            ScaleDtype::F16 => 1e-5,
            ScaleDtype::F32 => 1e-8,
        }
    }
}

/// How the rounding step behaves. `Identity` exists so tests can check the analytic gradients
/// of everything around the rounding against finite differences (the straight-through estimator
/// makes rounding's gradient the identity's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    HalfEven,
    #[cfg(test)]
    Identity,
}

impl Rounding {
    #[inline]
    fn round(self, x: f32) -> f32 {
        match self {
            Rounding::HalfEven => x.round_ties_even(),
            #[cfg(test)]
            Rounding::Identity => x,
        }
    }
}

/// One layer's weight being tuned: the float weight, its group ranges and the tuned tensors.
#[derive(Clone)]
pub struct QuantLayer {
    pub scheme: IntScheme,
    pub scale_dtype: ScaleDtype,
    pub rounding: Rounding,
    pub rows: usize,
    pub cols: usize,
    /// Group width (the last group of a row may be narrower).
    pub gs: usize,
    /// Groups per row.
    pub n_groups: usize,
    /// The float weight, `rows × cols`.
    pub w: Vec<f32>,
    lo: Vec<f32>,
    hi: Vec<f32>,
    /// Rounding offsets, `rows × cols`.
    pub v: Vec<f32>,
    /// Max-side clipping scales (α), one per group.
    pub alpha: Vec<f32>,
    /// Min-side clipping scales (β), one per group.
    pub beta: Vec<f32>,
    /// Scales found by the optimized-RTN search ([`QuantLayer::search_scales`]), used instead of
    /// the min/max ones (symmetric schemes, no tuning).
    searched: Option<Vec<f32>>,
}

/// The per-group values one quantize-dequantize produced, kept for the backward pass and export.
#[derive(Clone, Debug, Default)]
pub struct GroupParams {
    /// The scale actually used (already rounded to the scale dtype and magnitude-clamped).
    pub scale: Vec<f32>,
    /// Zero point (asymmetric only; the integer it was rounded to).
    pub zp: Vec<f32>,
}

/// Gradients of the tuned tensors.
#[derive(Clone, Debug, Default)]
pub struct QuantGrads {
    pub v: Vec<f32>,
    pub alpha: Vec<f32>,
    pub beta: Vec<f32>,
}

/// The reference's `_imatrix_handle_zero` for one group: when more than half the group's
/// importances are zero, the no-importance weights (`|w|`, plus `sqrt(Σw²/32)` above 3 bits);
/// when some are, the zeros take the mean of the others.
fn fix_zero_importance(qw: &mut [f32], w: &[f32], bits: u32, group_size: usize) {
    let zeros = qw.iter().filter(|&&q| q <= 1e-30).count();
    if zeros == 0 {
        return;
    }
    if zeros > group_size / 2 {
        let av = if bits <= 3 {
            0.0
        } else {
            (w.iter().map(|x| x * x).sum::<f32>() / 32.0).sqrt()
        };
        for (q, &x) in qw.iter_mut().zip(w) {
            *q = x.abs() + av;
        }
    } else {
        let n = qw.len() - qw.iter().filter(|&&q| q == 0.0).count();
        let mean = qw.iter().sum::<f32>() / n.max(1) as f32;
        for q in qw.iter_mut().filter(|q| **q == 0.0) {
            *q = mean;
        }
    }
}

impl QuantLayer {
    /// Wrap a float weight (`rows × cols`, row-major) for tuning, with V = 0 and α = β = 1.
    pub fn new(
        w: Vec<f32>,
        rows: usize,
        cols: usize,
        scheme: IntScheme,
        scale_dtype: ScaleDtype,
    ) -> QuantLayer {
        assert_eq!(w.len(), rows * cols);
        let gs = if scheme.group_size == 0 {
            cols
        } else {
            scheme.group_size
        };
        let n_groups = cols.div_ceil(gs);
        let mut lo = vec![0f32; rows * n_groups];
        let mut hi = vec![0f32; rows * n_groups];
        for r in 0..rows {
            for g in 0..n_groups {
                let grp = &w[r * cols + g * gs..r * cols + ((g + 1) * gs).min(cols)];
                lo[r * n_groups + g] = grp.iter().fold(0f32, |a, &b| a.min(b));
                hi[r * n_groups + g] = grp.iter().fold(0f32, |a, &b| a.max(b));
            }
        }
        QuantLayer {
            scheme,
            scale_dtype,
            rounding: Rounding::HalfEven,
            rows,
            cols,
            gs,
            n_groups,
            v: vec![0f32; w.len()],
            alpha: vec![1f32; rows * n_groups],
            beta: vec![1f32; rows * n_groups],
            w,
            lo,
            hi,
            searched: None,
        }
    }

    /// The reference's optimized RTN (`opt_rtn_int_sym`, llama.cpp's scale search): per group,
    /// start from the scale that maps the largest-magnitude weight `g` to `−2^(b−1)`, try inverse
    /// scales `−(n − step·k)/g` (2-bit: step 0.01, k = ±1…±90; otherwise step 0.0075·n,
    /// k = ±1…±100) and keep the one with the least `Σ q_j·(s·L_j − w_j)²`, where `q` is the
    /// importance (Σx² of the layer's inputs per input channel, with the reference's handling
    /// of zeros) or 1. Symmetric schemes only.
    pub fn search_scales(&mut self, importance: Option<&[f32]>) {
        assert!(self.scheme.sym, "optimized RTN is symmetric");
        let nmax = (1u32 << (self.scheme.bits - 1)) as f32;
        let (search, step) = if self.scheme.bits == 2 {
            (90i32, 0.01f64)
        } else {
            (100, 0.0075 * nmax as f64)
        };
        let recip = |x: f32| if x == 0.0 { 0.0 } else { 1.0 / x };
        let mut out = vec![0f32; self.rows * self.n_groups];
        let (cols, gs, ng) = (self.cols, self.gs, self.n_groups);
        let bits = self.scheme.bits;
        out.par_chunks_mut(ng).enumerate().for_each(|(r, out)| {
            let mut qw = vec![0f32; gs];
            for (g, o) in out.iter_mut().enumerate() {
                let (c0, c1) = (g * gs, ((g + 1) * gs).min(cols));
                let w = &self.w[r * cols + c0..r * cols + c1];
                let qw = &mut qw[..w.len()];
                match importance {
                    Some(im) => {
                        qw.copy_from_slice(&im[c0..c1]);
                        fix_zero_importance(qw, w, bits, gs);
                    }
                    None => qw.fill(1.0),
                }
                // the element of largest magnitude, sign kept (first one on ties)
                let gmax = w
                    .iter()
                    .fold(0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
                let loss_at = |iscale: f32| -> (f32, f32) {
                    let s = recip(iscale);
                    let mut loss = 0f32;
                    for (&x, &q) in w.iter().zip(qw.iter()) {
                        let l = (iscale * x).round_ties_even().clamp(-nmax, nmax - 1.0);
                        let e = s * l - x;
                        loss += e * e * q;
                    }
                    (loss, s)
                };
                let (mut best, mut scale) = loss_at(-nmax * recip(gmax));
                for k in -search..=search {
                    if k == 0 {
                        continue;
                    }
                    let factor = -((nmax as f64) - step * k as f64) as f32;
                    let (loss, s) = loss_at(factor * recip(gmax));
                    if loss < best {
                        best = loss;
                        scale = s;
                    }
                }
                *o = scale;
            }
        });
        self.searched = Some(out);
    }

    fn maxq(&self) -> f32 {
        if self.scheme.sym {
            (1u32 << (self.scheme.bits - 1)) as f32
        } else {
            ((1u32 << self.scheme.bits) - 1) as f32
        }
    }

    /// The clamp range of the integer levels: `[-2^(b-1), 2^(b-1)-1]` or `[0, 2^b-1]`.
    fn levels(&self) -> (f32, f32) {
        let maxq = self.maxq();
        if self.scheme.sym {
            (-maxq, maxq - 1.0)
        } else {
            (0.0, maxq)
        }
    }

    /// The scale before rounding to the scale dtype, and (for symmetric groups) which extreme
    /// set it: returns `(pre_scale, sign, weight of the min side, weight of the max side)`.
    fn pre_scale(&self, gi: usize) -> (f32, f32, f32, f32) {
        if let Some(s) = &self.searched {
            return (s[gi], 0.0, 0.0, 0.0);
        }
        let (a, b) = (self.alpha[gi], self.beta[gi]);
        let maxq = self.maxq();
        if self.scheme.sym {
            let wmin_abs = -(self.lo[gi] * b);
            let wmax_abs = self.hi[gi] * a;
            let sign = if wmax_abs < wmin_abs { 1.0 } else { -1.0 };
            // torch.maximum sends half the gradient to each side on a tie
            let (wa, wc) = if wmin_abs > wmax_abs {
                (1.0, 0.0)
            } else if wmax_abs > wmin_abs {
                (0.0, 1.0)
            } else {
                (0.5, 0.5)
            };
            (sign * wmin_abs.max(wmax_abs) / maxq, sign, wa, wc)
        } else {
            let wmin = self.lo[gi] * b;
            let wmax = self.hi[gi] * a;
            ((wmax - wmin) / maxq, 0.0, 0.0, 0.0)
        }
    }

    /// The scale after the dtype cast and the magnitude clamp, and whether the clamp let the
    /// gradient through.
    fn scale_of(&self, pre: f32) -> (f32, bool) {
        let s = self.scale_dtype.cast(pre);
        let th = self.scale_dtype.thresh();
        if self.scheme.sym && s < 0.0 {
            if s <= -th {
                (s, true)
            } else {
                (-th, false)
            }
        } else if s >= th {
            (s, true)
        } else {
            (th, false)
        }
    }

    /// Quantize-dequantize with the current V, α, β into `w_hat`; returns the group parameters.
    pub fn qdq(&self, w_hat: &mut [f32]) -> GroupParams {
        let ng = self.n_groups;
        let mut scale = vec![0f32; self.rows * ng];
        let mut zp = vec![0f32; if self.scheme.sym { 0 } else { self.rows * ng }];
        for gi in 0..self.rows * ng {
            let (pre, ..) = self.pre_scale(gi);
            let (s, _) = self.scale_of(pre);
            scale[gi] = s;
            if !self.scheme.sym {
                zp[gi] = self.rounding.round(-(self.lo[gi] * self.beta[gi]) / s);
            }
        }
        let sym = self.scheme.sym;
        let (qmin, qmax) = self.levels();
        let cols = self.cols;
        w_hat.par_chunks_mut(cols).enumerate().for_each(|(r, out)| {
            let w = &self.w[r * cols..(r + 1) * cols];
            let v = &self.v[r * cols..(r + 1) * cols];
            for g in 0..ng {
                let gi = r * ng + g;
                let s = scale[gi];
                let z = if sym { 0.0 } else { zp[gi] };
                for c in g * self.gs..((g + 1) * self.gs).min(cols) {
                    let q = (self.rounding.round(w[c] / s + v[c]) + z).clamp(qmin, qmax);
                    out[c] = s * (q - z);
                }
            }
        });
        GroupParams { scale, zp }
    }

    /// Gradients of V, α and β from `d_w_hat = ∂L/∂ŵ`, for the parameters `p` that [`qdq`]
    /// returned with the same V, α, β.
    ///
    /// [`qdq`]: QuantLayer::qdq
    pub fn backward(&self, p: &GroupParams, d_w_hat: &[f32], g: &mut QuantGrads) {
        let ng = self.n_groups;
        let cols = self.cols;
        let sym = self.scheme.sym;
        let maxq = self.maxq();
        let (qmin, qmax) = self.levels();
        g.v.resize(self.w.len(), 0.0);
        g.alpha.resize(self.rows * ng, 0.0);
        g.beta.resize(self.rows * ng, 0.0);
        g.v.par_chunks_mut(cols)
            .zip(g.alpha.par_chunks_mut(ng))
            .zip(g.beta.par_chunks_mut(ng))
            .enumerate()
            .for_each(|(r, ((gv, ga), gb))| {
                let w = &self.w[r * cols..(r + 1) * cols];
                let v = &self.v[r * cols..(r + 1) * cols];
                let dw = &d_w_hat[r * cols..(r + 1) * cols];
                for gr in 0..ng {
                    let gi = r * ng + gr;
                    let s = p.scale[gi];
                    let z = if sym { 0.0 } else { p.zp[gi] };
                    let wmin = self.lo[gi] * self.beta[gi];
                    // Σ ∂L/∂ŵ · ∂ŵ/∂s, and (asym) Σ ∂L/∂ŵ · ∂ŵ/∂wmin through the zero point
                    let mut gs_acc = 0f64;
                    let mut gzp_acc = 0f64;
                    for c in gr * self.gs..((gr + 1) * self.gs).min(cols) {
                        let pre = self.rounding.round(w[c] / s + v[c]) + z;
                        let inside = pre >= qmin && pre <= qmax;
                        let q = pre.clamp(qmin, qmax);
                        let m = if inside { 1.0 } else { 0.0 };
                        gv[c] = dw[c] * s * m;
                        let dws = if sym {
                            q - m * w[c] / s
                        } else {
                            (q - z) - m * w[c] / s - (1.0 - m) * wmin / s
                        };
                        gs_acc += (dw[c] * dws) as f64;
                        if !sym {
                            gzp_acc += (dw[c] * (1.0 - m)) as f64;
                        }
                    }
                    let (pre, sign, wa, wc) = self.pre_scale(gi);
                    let (_, pass) = self.scale_of(pre);
                    let d_pre = if pass { gs_acc as f32 / maxq } else { 0.0 };
                    if sym {
                        // pre = sign · max(−lo·β, hi·α) / maxq (the 1/maxq is in d_pre)
                        gb[gr] = d_pre * sign * wa * (-self.lo[gi]);
                        ga[gr] = d_pre * sign * wc * self.hi[gi];
                    } else {
                        // pre = (hi·α − lo·β) / maxq; the zero point also sees wmin = lo·β
                        ga[gr] = d_pre * self.hi[gi];
                        gb[gr] = (-d_pre + gzp_acc as f32) * self.lo[gi];
                    }
                }
            });
    }

    /// The stored integer codes (`0 … 2^b-1`: symmetric levels are offset by `2^(b-1)`) of the
    /// current V, α, β, with their group parameters.
    pub fn codes(&self, p: &GroupParams) -> Vec<u8> {
        let ng = self.n_groups;
        let maxq = self.maxq();
        let sym = self.scheme.sym;
        let (qmin, qmax) = self.levels();
        let mut out = vec![0u8; self.w.len()];
        out.par_chunks_mut(self.cols)
            .enumerate()
            .for_each(|(r, o)| {
                for (c, o) in o.iter_mut().enumerate() {
                    let gi = r * ng + c / self.gs;
                    let s = p.scale[gi];
                    let z = if sym { 0.0 } else { p.zp[gi] };
                    let i = r * self.cols + c;
                    let q = (self.rounding.round(self.w[i] / s + self.v[i]) + z).clamp(qmin, qmax);
                    *o = if sym { (q + maxq) as u8 } else { q as u8 };
                }
            });
        out
    }

    /// One SignSGD step: `p ← p − lr·sign(∂L/∂p)` (sign(0) = 0), then α, β clamped to [0, 1].
    pub fn sign_step(&mut self, g: &QuantGrads, lr: f32, minmax_lr: Option<f32>) {
        fn step(p: &mut [f32], g: &[f32], lr: f32) {
            p.par_chunks_mut(4096)
                .zip(g.par_chunks(4096))
                .for_each(|(p, g)| {
                    for (p, &g) in p.iter_mut().zip(g) {
                        if g > 0.0 {
                            *p -= lr;
                        } else if g < 0.0 {
                            *p += lr;
                        }
                    }
                });
        }
        step(&mut self.v, &g.v, lr);
        if let Some(mlr) = minmax_lr {
            step(&mut self.alpha, &g.alpha, mlr);
            step(&mut self.beta, &g.beta, mlr);
            for x in self.alpha.iter_mut().chain(self.beta.iter_mut()) {
                *x = x.clamp(0.0, 1.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuner::ops::tests::{check_directional, dot, rand_vec};

    fn layer(scheme: IntScheme, rounding: Rounding, seed: u64) -> QuantLayer {
        let (rows, cols) = (6, 40);
        let w = rand_vec(rows * cols, seed, 1.0);
        let mut l = QuantLayer::new(w, rows, cols, scheme, ScaleDtype::F32);
        l.rounding = rounding;
        l.v = rand_vec(rows * cols, seed + 1, 0.3);
        // α, β strictly inside (0, 1) so the clamp to [0, 1] is not active
        l.alpha = rand_vec(l.alpha.len(), seed + 2, 0.2)
            .iter()
            .map(|x| 0.75 + x)
            .collect();
        l.beta = rand_vec(l.beta.len(), seed + 3, 0.2)
            .iter()
            .map(|x| 0.75 + x)
            .collect();
        l
    }

    fn loss(l: &QuantLayer, r: &[f32]) -> f64 {
        let mut w_hat = vec![0f32; l.w.len()];
        l.qdq(&mut w_hat);
        dot(&w_hat, r)
    }

    #[test]
    fn gradients_match_finite_differences_with_identity_rounding() {
        for sym in [true, false] {
            for gs in [8, 16, 0] {
                let scheme = IntScheme {
                    bits: 4,
                    group_size: gs,
                    sym,
                };
                let l = layer(scheme, Rounding::Identity, 7 + gs as u64);
                let r = rand_vec(l.w.len(), 99, 1.0);
                let p = {
                    let mut w_hat = vec![0f32; l.w.len()];
                    l.qdq(&mut w_hat)
                };
                let mut g = QuantGrads::default();
                l.backward(&p, &r, &mut g);
                let what = format!("sym {sym} gs {gs}");
                check_directional(&format!("{what} v"), &l.v, &g.v, 1e-3, 5e-3, &mut |v| {
                    let mut m = l.clone();
                    m.v = v.to_vec();
                    loss(&m, &r)
                });
                check_directional(
                    &format!("{what} α"),
                    &l.alpha,
                    &g.alpha,
                    1e-3,
                    5e-3,
                    &mut |a| {
                        let mut m = l.clone();
                        m.alpha = a.to_vec();
                        loss(&m, &r)
                    },
                );
                check_directional(
                    &format!("{what} β"),
                    &l.beta,
                    &g.beta,
                    1e-3,
                    5e-3,
                    &mut |b| {
                        let mut m = l.clone();
                        m.beta = b.to_vec();
                        loss(&m, &r)
                    },
                );
            }
        }
    }

    #[test]
    fn rtn_sym_uses_all_levels_and_the_dominant_sign() {
        // One row, one group of 4: the largest magnitude is negative -> positive scale, that
        // value maps to level -8 exactly.
        let w = vec![-1.6, 0.2, 0.9, -0.05];
        let l = QuantLayer::new(
            w.clone(),
            1,
            4,
            IntScheme {
                bits: 4,
                group_size: 0,
                sym: true,
            },
            ScaleDtype::F16,
        );
        let mut w_hat = vec![0f32; 4];
        let p = l.qdq(&mut w_hat);
        assert_eq!(p.scale[0], half::f16::from_f32(0.2).to_f32());
        // q = -8, 1, 5 (0.9 / f16(0.2) = 4.501), 0
        assert_eq!(l.codes(&p), vec![0, 9, 13, 8]);
        // Positive extreme dominates -> negative scale, and +max maps to level -8.
        let l = QuantLayer::new(
            vec![1.6, -0.2],
            1,
            2,
            IntScheme {
                bits: 4,
                group_size: 0,
                sym: true,
            },
            ScaleDtype::F32,
        );
        let p = l.qdq(&mut w_hat[..2]);
        assert_eq!(p.scale[0], -0.2);
        assert_eq!(w_hat[0], 1.6);
        assert_eq!(l.codes(&p), vec![0, 9]);
    }

    #[test]
    fn rtn_asym_zero_point_and_levels() {
        let l = QuantLayer::new(
            vec![-0.3, 0.0, 1.2, 0.45],
            1,
            4,
            IntScheme {
                bits: 2,
                group_size: 0,
                sym: false,
            },
            ScaleDtype::F32,
        );
        let mut w_hat = vec![0f32; 4];
        let p = l.qdq(&mut w_hat);
        // s = 1.5/3 = 0.5, zp = round(0.6) = 1; levels −0.5, 0, 0.5, 1.0
        assert_eq!(p.scale[0], 0.5);
        assert_eq!(p.zp[0], 1.0);
        assert_eq!(l.codes(&p), vec![0, 1, 3, 2]); // -0.6->-1+1, 0, 2.4->2+1, 0.9->1+1
        assert_eq!(w_hat, vec![-0.5, 0.0, 1.0, 0.5]);
    }

    #[test]
    fn sign_step_moves_by_lr_and_clamps_minmax() {
        let mut l = layer(
            IntScheme {
                bits: 4,
                group_size: 8,
                sym: true,
            },
            Rounding::HalfEven,
            3,
        );
        l.alpha[0] = 0.999;
        let v0 = l.v.clone();
        let a0 = l.alpha.clone();
        let mut g = QuantGrads {
            v: vec![0.0; l.v.len()],
            alpha: vec![0.0; l.alpha.len()],
            beta: vec![0.0; l.beta.len()],
        };
        g.v[0] = 3.0;
        g.v[1] = -1e-20;
        g.alpha[0] = -5.0;
        g.alpha[1] = 2.0;
        l.sign_step(&g, 0.01, Some(0.1));
        assert_eq!(l.v[0], v0[0] - 0.01);
        assert_eq!(l.v[1], v0[1] + 0.01);
        assert_eq!(l.v[2], v0[2]);
        assert_eq!(l.alpha[0], 1.0); // 0.999 + 0.1, clamped
        assert!((l.alpha[1] - (a0[1] - 0.1)).abs() < 1e-6);
    }
}

#[cfg(test)]
mod opt_rtn_tests {
    use super::*;

    /// The scale search equals the reference's `search_scales` (golden data from
    /// tools/opt_rtn_golden.py, auto-round 0.16.1) group by group.
    #[test]
    fn searched_scales_match_the_reference() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/opt_rtn.json");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let f32s = |x: &serde_json::Value| -> Vec<f32> {
            x.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        };
        let cases = v["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 8);
        for c in cases {
            let bits = c["bits"].as_u64().unwrap() as u32;
            let gs = c["group_size"].as_u64().unwrap() as usize;
            let rows = c["rows"].as_u64().unwrap() as usize;
            let scheme = IntScheme {
                bits,
                group_size: gs,
                sym: true,
            };
            let mut l = QuantLayer::new(f32s(&c["w"]), rows, gs, scheme, ScaleDtype::F32);
            let im = (!c["importance"].is_null()).then(|| f32s(&c["importance"]));
            l.search_scales(im.as_deref());
            let got = l.searched.clone().unwrap();
            let want = f32s(&c["scales"]);
            for (r, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs(),
                    "{bits}-bit, importance {}: row {r}: {a} vs the reference's {b}",
                    im.is_some()
                );
            }
            // quantize-dequantize uses the searched scales
            let mut w_hat = vec![0f32; rows * gs];
            let p = l.qdq(&mut w_hat);
            assert_eq!(p.scale, want);
        }
    }
}
