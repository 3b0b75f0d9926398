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

/// An integer weight scheme: bits, group size along the input dimension, symmetric or not, and
/// whether the group scales are themselves quantized (the GGUF K-quants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntScheme {
    pub bits: u32,
    /// Columns per group; `0` means one group per row (the reference's `-1`).
    pub group_size: usize,
    pub sym: bool,
    /// Double quantization of the group scales (and mins), the reference's `int_sym_dq` /
    /// `int_asym_dq`; `None` for plain `int_sym` / `int_asym`.
    pub dq: Option<SuperQuant>,
}

impl IntScheme {
    /// A plain (single-level) scheme.
    pub fn new(bits: u32, group_size: usize, sym: bool) -> IntScheme {
        IntScheme {
            bits,
            group_size,
            sym,
            dq: None,
        }
    }
}

/// The second level of a double-quantized scheme: every `groups` consecutive group scales of a
/// row form a super-block whose scales are stored as `bits`-bit integers times one f16 super
/// scale `d` (and, asymmetric, the group mins likewise with `dmin`):
///
/// - asymmetric (`int_asym_dq`, Q2_K/Q4_K/Q5_K): `d = max(s)/(2^bits − 1)`, `s' = min(round(s/d),
///   2^bits − 1)·d`, the same for the mins `m = −min(w)·β`; `ŵ = s'·q − m'` with
///   `q = clamp(round((w + m')/s' + v), 0, 2^b − 1)`;
/// - symmetric (`int_sym_dq`, Q3_K/Q6_K): `d = s_k/−2^(bits−1)` where `s_k` is the scale of
///   largest magnitude (sign kept), `s' = clamp(round(s/d), −2^(bits−1), 2^(bits−1) − 1)·d`.
///
/// The gradient reaches α and β through both levels (rounding by the straight-through estimator,
/// the super-block maximum to its first arg-max), as in the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SuperQuant {
    pub bits: u32,
    /// Groups per super-block.
    pub groups: usize,
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
    /// The smallest scale magnitude (`q_scale_thresh`), in the scale's dtype as torch clamps
    /// the already cast scale: 1e-5 becomes 1.001358e-5 in f16.
    fn thresh(self) -> f32 {
        match self {
            ScaleDtype::F16 => self.cast(1e-5),
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

pub(crate) use autoround_kernels::fakequant::round_half_even;
use autoround_kernels::fakequant::{qdq_group, qdq_group_backward, Grid};

impl Rounding {
    #[inline]
    fn round(self, x: f32) -> f32 {
        match self {
            Rounding::HalfEven => round_half_even(x),
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
    /// The precision of the super-block scales of a double-quantized scheme: f16 by default, as
    /// GGUF stores them, so the file dequantizes to exactly the tuned weights (the reference
    /// tunes with f32 super scales and rounds them to f16 when packing).
    pub super_dtype: ScaleDtype,
    pub rounding: Rounding,
    /// Reproduce the gradients torch's autograd gives the reference, rather than the exact
    /// straight-through ones:
    /// - a value exactly at a clamp's bound gets no gradient (torch 2.15's `clamp` with scalar
    ///   bounds), so a weight rounded to the lowest or highest level gets none for its rounding
    ///   offset and none for the scale through `w/s`; with `false` such a weight can still be
    ///   moved inwards;
    /// - with f16 scales, the scale's gradient is rounded to f16, once per use of the scale and
    ///   again where the uses add up, as autograd casts every gradient to its tensor's dtype and
    ///   accumulates in it. The two uses `s·q` and `w/s` nearly cancel, so the sign the update
    ///   takes is often decided by that rounding.
    ///
    /// See `TuneSpec::torch_grads` for the default.
    pub torch_grads: bool,
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
    /// Zero point (asymmetric only; the integer it was rounded to). Double-quantized asymmetric:
    /// the group's min `m'`, with `ŵ = scale·q − m'`.
    pub zp: Vec<f32>,
    /// Double-quantized: the super scale of each super-block (rounded to the super dtype).
    pub d: Vec<f32>,
    /// Double-quantized asymmetric: the super scale of the mins of each super-block.
    pub dmin: Vec<f32>,
    /// Double-quantized asymmetric: the scales as stored, `integer · d`, before the magnitude
    /// clamp `scale` went through (they differ only where the integer is 0, and the file has
    /// the stored one).
    pub stored: Vec<f32>,
}

/// The reference's `get_reciprocal` for f32: 0 for magnitudes below 1e-30.
#[inline]
fn recip(x: f32) -> f32 {
    if x.abs() < 1e-30 {
        0.0
    } else {
        1.0 / x
    }
}

/// The two-level scales of a double-quantized layer, with what the backward pass needs.
#[derive(Default)]
struct DqValues {
    /// Per group: the first-level scale (asymmetric: after the threshold clamp) and whether that
    /// clamp passed the gradient.
    s: Vec<f32>,
    s_pass: Vec<bool>,
    /// Per group: `round(s·inv)`, before the clamp to the super levels.
    r: Vec<f32>,
    /// Per group: the scale used (asymmetric: after the second threshold clamp) and whether
    /// that clamp passed the gradient; and (asymmetric) the scale before that clamp.
    scale: Vec<f32>,
    scale_pass: Vec<bool>,
    stored: Vec<f32>,
    /// Per super-block: the arg-max group, `inv` (codes per unit of scale), the exact and the
    /// stored super scale.
    arg: Vec<usize>,
    inv: Vec<f32>,
    d_exact: Vec<f32>,
    d: Vec<f32>,
    /// Asymmetric only, the same for the mins `m = −lo·β`.
    m: Vec<f32>,
    rm: Vec<f32>,
    min: Vec<f32>,
    argm: Vec<usize>,
    invm: Vec<f32>,
    dm_exact: Vec<f32>,
    dm: Vec<f32>,
}

/// The asymmetric second level over one super-block of non-negative values (the reference's
/// `double_quant_tensor`): the first arg-max, `inv = q·recip(max)`, the exact super scale
/// `max/q`.
fn super_asym(x: &[f32], q: f32) -> (usize, f32, f32) {
    let mut arg = 0;
    for (j, &v) in x.iter().enumerate() {
        if v > x[arg] {
            arg = j;
        }
    }
    let big = x[arg].max(0.0);
    (arg, (q * recip(big)).max(0.0), big / q)
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
            // the reference tunes GGUF (double-quantized) scales in f32
            scale_dtype: if scheme.dq.is_some() {
                ScaleDtype::F32
            } else {
                scale_dtype
            },
            super_dtype: ScaleDtype::F16,
            rounding: Rounding::HalfEven,
            torch_grads: false,
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
        assert!(
            self.scheme.sym && self.scheme.dq.is_none(),
            "optimized RTN is single-level symmetric"
        );
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
                (s, self.within(-s, th, f32::INFINITY))
            } else {
                (-th, false)
            }
        } else if s >= th {
            (s, self.within(s, th, f32::INFINITY))
        } else {
            (th, false)
        }
    }

    /// Quantize-dequantize with the current V, α, β into `w_hat`; returns the group parameters.
    pub fn qdq(&self, w_hat: &mut [f32]) -> GroupParams {
        if self.scheme.dq.is_some() {
            return self.qdq_dq(w_hat);
        }
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
                let span = g * self.gs..((g + 1) * self.gs).min(cols);
                if self.rounding == Rounding::HalfEven {
                    let grid = Grid { s, z, qmin, qmax };
                    qdq_group(&w[span.clone()], &v[span.clone()], grid, &mut out[span]);
                    continue;
                }
                for c in span {
                    let q = (self.rounding.round(w[c] / s + v[c]) + z).clamp(qmin, qmax);
                    out[c] = s * (q - z);
                }
            }
        });
        GroupParams {
            scale,
            zp,
            ..Default::default()
        }
    }

    /// Gradients of V, α and β from `d_w_hat = ∂L/∂ŵ`, for the parameters `p` that [`qdq`]
    /// returned with the same V, α, β.
    ///
    /// [`qdq`]: QuantLayer::qdq
    pub fn backward(&self, p: &GroupParams, d_w_hat: &[f32], g: &mut QuantGrads) {
        if self.scheme.dq.is_some() {
            return self.backward_dq(p, d_w_hat, g);
        }
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
                    // Σ ∂L/∂ŵ · ∂ŵ/∂s by the scale's three uses: ŵ = s·(q − z), q through
                    // w/s, and (asym) z = round(−wmin/s); and (asym) Σ ∂L/∂ŵ · ∂ŵ/∂wmin
                    // through the zero point
                    let (mut g_mul, mut g_div, mut gzp_acc) = (0f64, 0f64, 0f64);
                    let span = gr * self.gs..((gr + 1) * self.gs).min(cols);
                    if self.rounding == Rounding::HalfEven {
                        let grid = Grid { s, z, qmin, qmax };
                        let (w, v, dw) = (&w[span.clone()], &v[span.clone()], &dw[span.clone()]);
                        let sums =
                            qdq_group_backward(w, v, dw, grid, self.torch_grads, &mut gv[span]);
                        (g_mul, g_div) = (sums.mul, sums.div);
                        if !sym {
                            gzp_acc = sums.zp;
                        }
                    } else {
                        for c in span {
                            let pre = self.rounding.round(w[c] / s + v[c]) + z;
                            let inside = self.within(pre, qmin, qmax);
                            let q = pre.clamp(qmin, qmax);
                            let m = if inside { 1.0 } else { 0.0 };
                            gv[c] = dw[c] * s * m;
                            g_mul += (dw[c] * (q - z)) as f64;
                            g_div -= (dw[c] * m * w[c] / s) as f64;
                            if !sym {
                                gzp_acc += (dw[c] * (1.0 - m)) as f64;
                            }
                        }
                    }
                    let g_s =
                        self.scale_grad((self.scale_grad(g_mul) + self.scale_grad(g_div)) as f64);
                    let g_s = if sym {
                        g_s
                    } else {
                        let g_zp = self.scale_grad(-gzp_acc * (wmin / s) as f64);
                        self.scale_grad((g_s + g_zp) as f64)
                    };
                    let (pre, sign, wa, wc) = self.pre_scale(gi);
                    let (_, pass) = self.scale_of(pre);
                    let d_pre = if pass { g_s / maxq } else { 0.0 };
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
        if self.scheme.dq.is_some() {
            return self.codes_dq(p);
        }
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

    /// The scales of a double-quantized layer: the first level from the group ranges and α/β as
    /// for the single-level schemes (in f32), the second level per super-block of
    /// `SuperQuant::groups` groups of one row.
    fn dq_values(&self) -> DqValues {
        let sq = self.scheme.dq.expect("a double-quantized scheme");
        let k = sq.groups;
        let n = self.rows * self.n_groups;
        assert!(
            self.n_groups % k == 0,
            "{} groups per row do not make super-blocks of {k}",
            self.n_groups
        );
        let th = self.scale_dtype.thresh();
        let sym = self.scheme.sym;
        let mut v = DqValues {
            s: vec![0.0; n],
            s_pass: vec![true; n],
            r: vec![0.0; n],
            scale: vec![0.0; n],
            scale_pass: vec![true; n],
            ..Default::default()
        };
        if !sym {
            v.m = vec![0.0; n];
            v.rm = vec![0.0; n];
            v.min = vec![0.0; n];
        }
        for gi in 0..n {
            let (pre, ..) = self.pre_scale(gi);
            let pre = self.scale_dtype.cast(pre);
            if sym {
                v.s[gi] = pre;
            } else {
                v.s_pass[gi] = self.within(pre, th, f32::INFINITY);
                v.s[gi] = pre.max(th);
                v.m[gi] = -(self.lo[gi] * self.beta[gi]);
            }
        }
        for b in 0..n / k {
            let g = b * k..(b + 1) * k;
            if sym {
                // d = s_max / −2^(bits−1) with s_max the scale of largest magnitude
                let qs = (1u32 << (sq.bits - 1)) as f32;
                let mut arg = 0;
                for (j, x) in v.s[g.clone()].iter().enumerate() {
                    if x.abs() > v.s[g.start + arg].abs() {
                        arg = j;
                    }
                }
                let d_exact = v.s[g.start + arg] / -qs;
                let inv = recip(d_exact);
                let d = self.super_cast(d_exact);
                for gi in g {
                    let r = self.rounding.round(v.s[gi] * inv);
                    v.r[gi] = r;
                    v.scale[gi] = r.clamp(-qs, qs - 1.0) * d;
                }
                v.arg.push(b * k + arg);
                v.inv.push(inv);
                v.d_exact.push(d_exact);
                v.d.push(d);
            } else {
                let q = ((1u32 << sq.bits) - 1) as f32;
                let (arg, inv, d_exact) = super_asym(&v.s[g.clone()], q);
                let d = self.super_cast(d_exact);
                let (argm, invm, dm_exact) = super_asym(&v.m[g.clone()], q);
                let dm = self.super_cast(dm_exact);
                for gi in g {
                    let r = self.rounding.round(v.s[gi] * inv);
                    v.r[gi] = r;
                    let s2 = r.min(q) * d;
                    v.stored.push(s2);
                    v.scale_pass[gi] = self.within(s2, th, f32::INFINITY);
                    v.scale[gi] = s2.max(th);
                    let rm = self.rounding.round(v.m[gi] * invm);
                    v.rm[gi] = rm;
                    v.min[gi] = rm.min(q) * dm;
                }
                v.arg.push(b * k + arg);
                v.inv.push(inv);
                v.d_exact.push(d_exact);
                v.d.push(d);
                v.argm.push(b * k + argm);
                v.invm.push(invm);
                v.dm_exact.push(dm_exact);
                v.dm.push(dm);
            }
        }
        v
    }

    /// Whether a clamp to `[lo, hi]` passes the gradient of `x` (see `torch_grads`).
    #[inline]
    fn within(&self, x: f32, lo: f32, hi: f32) -> bool {
        if self.torch_grads {
            x > lo && x < hi
        } else {
            x >= lo && x <= hi
        }
    }

    /// A gradient of the scale as autograd holds it (see `torch_grads`).
    #[inline]
    fn scale_grad(&self, x: f64) -> f32 {
        if self.torch_grads {
            self.scale_dtype.cast(x as f32)
        } else {
            x as f32
        }
    }

    fn super_cast(&self, x: f32) -> f32 {
        match self.rounding {
            Rounding::HalfEven => self.super_dtype.cast(x),
            // finite-difference tests: no rounding anywhere
            #[cfg(test)]
            Rounding::Identity => x,
        }
    }

    /// The integer level of weight `i` of group `gi` (clamped) and whether it was inside the
    /// clamp: asymmetric `round((w + m)/s + v)` in `[0, 2^b−1]`, symmetric `round(w/s + v)` in
    /// `[−2^(b−1), 2^(b−1)−1]` (with the reference's reciprocal, 0 for a zero scale).
    #[inline]
    fn level_dq(&self, i: usize, s: f32, m: f32) -> (f32, bool) {
        let (qmin, qmax) = self.levels();
        let x = if self.scheme.sym {
            self.w[i] * recip(s) + self.v[i]
        } else {
            (self.w[i] + m) / s + self.v[i]
        };
        // torch's straight-through rounding, `(round(x) − x).detach() + x`, evaluated as it is:
        // the sum can miss the integer by an ulp, which decides whether a weight at the edge
        // of the levels passes its gradient
        let pre = (self.rounding.round(x) - x) + x;
        (pre.clamp(qmin, qmax), self.within(pre, qmin, qmax))
    }

    fn qdq_dq(&self, w_hat: &mut [f32]) -> GroupParams {
        let v = self.dq_values();
        let (ng, cols, gs, sym) = (self.n_groups, self.cols, self.gs, self.scheme.sym);
        w_hat.par_chunks_mut(cols).enumerate().for_each(|(r, out)| {
            for (c, o) in out.iter_mut().enumerate() {
                let gi = r * ng + c / gs;
                let s = v.scale[gi];
                let m = if sym { 0.0 } else { v.min[gi] };
                let (q, _) = self.level_dq(r * cols + c, s, m);
                *o = s * q - m;
            }
        });
        GroupParams {
            scale: v.scale,
            zp: v.min,
            d: v.d,
            dmin: v.dm,
            stored: v.stored,
        }
    }

    fn codes_dq(&self, p: &GroupParams) -> Vec<u8> {
        let (ng, cols, gs, sym) = (self.n_groups, self.cols, self.gs, self.scheme.sym);
        let off = if sym { self.maxq() } else { 0.0 };
        let mut out = vec![0u8; self.w.len()];
        out.par_chunks_mut(cols).enumerate().for_each(|(r, o)| {
            for (c, o) in o.iter_mut().enumerate() {
                let gi = r * ng + c / gs;
                let m = if sym { 0.0 } else { p.zp[gi] };
                let (q, _) = self.level_dq(r * cols + c, p.scale[gi], m);
                *o = (q.round() + off) as u8;
            }
        });
        out
    }

    /// The backward pass of [`QuantLayer::qdq`] for double-quantized schemes: per weight as the
    /// single-level schemes, then per super-block through the second level to the first-level
    /// scales (and mins), and from those to α and β.
    fn backward_dq(&self, p: &GroupParams, d_w_hat: &[f32], g: &mut QuantGrads) {
        let v = self.dq_values();
        let sq = self.scheme.dq.expect("double-quantized");
        let (ng, cols, gs, sym) = (self.n_groups, self.cols, self.gs, self.scheme.sym);
        let n = self.rows * ng;
        g.v.resize(self.w.len(), 0.0);
        g.alpha.resize(n, 0.0);
        g.beta.resize(n, 0.0);
        // ∂L/∂scale and (asymmetric) ∂L/∂min per group, from the weights
        // (the mins' gradient stays zero when symmetric)
        let mut g_scale = vec![0f32; n];
        let mut g_min = vec![0f32; n];
        g.v.par_chunks_mut(cols)
            .zip(g_scale.par_chunks_mut(ng))
            .zip(g_min.par_chunks_mut(ng))
            .enumerate()
            .for_each(|(r, ((gv, g_scale), g_min))| {
                let dw = &d_w_hat[r * cols..(r + 1) * cols];
                for (gr, (acc, acc_min)) in g_scale.iter_mut().zip(g_min.iter_mut()).enumerate() {
                    let gi = r * ng + gr;
                    let s = p.scale[gi];
                    let m = if sym { 0.0 } else { p.zp[gi] };
                    let (mut a, mut a_min) = (0f64, 0f64);
                    for c in gr * gs..((gr + 1) * gs).min(cols) {
                        let i = r * cols + c;
                        let (q, inside) = self.level_dq(i, s, m);
                        let k = if inside { 1.0 } else { 0.0 };
                        gv[c] = dw[c] * s * k;
                        let d = if sym {
                            q - k * self.w[i] * recip(s)
                        } else {
                            q - k * (self.w[i] + m) / s
                        };
                        a += (dw[c] * d) as f64;
                        if !inside {
                            a_min -= dw[c] as f64; // ŵ = s·q − m with q clamped
                        }
                    }
                    *acc = a as f32;
                    if !sym {
                        *acc_min = a_min as f32;
                    }
                }
            });
        // the second level: s' = clamp(r)·d with r = round(s·inv), d and inv from the
        // super-block's extreme
        let k = sq.groups;
        let mut g_s = vec![0f32; n];
        let mut g_m = vec![0f32; if sym { 0 } else { n }];
        for b in 0..n / k {
            let gr = b * k..(b + 1) * k;
            if sym {
                let qs = (1u32 << (sq.bits - 1)) as f32;
                let (inv, d) = (v.inv[b], v.d_exact[b]);
                let mut g_ext = 0f32; // ∂L/∂(the extreme scale)
                for gi in gr {
                    let inside = self.within(v.r[gi], -qs, qs - 1.0);
                    let c = v.r[gi].clamp(-qs, qs - 1.0);
                    let gsc = g_scale[gi];
                    if inside {
                        g_s[gi] += gsc * inv * d;
                        g_ext += gsc * v.s[gi] * inv / qs;
                    }
                    g_ext -= gsc * c / qs;
                }
                g_s[v.arg[b]] += g_ext;
            } else {
                let q = ((1u32 << sq.bits) - 1) as f32;
                let mut g_big = 0f32;
                let mut g_bigm = 0f32;
                for gi in gr {
                    let gsc = if v.scale_pass[gi] { g_scale[gi] } else { 0.0 };
                    if self.within(v.r[gi], f32::NEG_INFINITY, q) {
                        g_s[gi] += gsc * v.inv[b] * v.d_exact[b];
                        g_big -= gsc * v.s[gi] * v.inv[b] / q;
                    }
                    g_big += gsc * v.r[gi].min(q) / q;
                    let gm = g_min[gi];
                    if self.within(v.rm[gi], f32::NEG_INFINITY, q) {
                        g_m[gi] += gm * v.invm[b] * v.dm_exact[b];
                        g_bigm -= gm * v.m[gi] * v.invm[b] / q;
                    }
                    g_bigm += gm * v.rm[gi].min(q) / q;
                }
                g_s[v.arg[b]] += g_big;
                g_m[v.argm[b]] += g_bigm;
            }
        }
        // the first level, to α and β
        let maxq = self.maxq();
        for gi in 0..n {
            let d_pre = if v.s_pass[gi] { g_s[gi] / maxq } else { 0.0 };
            if sym {
                let (_, sign, wa, wc) = self.pre_scale(gi);
                g.beta[gi] = d_pre * sign * wa * (-self.lo[gi]);
                g.alpha[gi] = d_pre * sign * wc * self.hi[gi];
            } else {
                // s = (hi·α − lo·β)/maxq, m = −lo·β
                g.alpha[gi] = d_pre * self.hi[gi];
                g.beta[gi] = -(d_pre + g_m[gi]) * self.lo[gi];
            }
        }
    }

    /// One SignSGD step: `p ← p − lr·sign(∂L/∂p)` (sign(0) = 0), then α, β clamped to [0, 1].
    pub fn sign_step(&mut self, g: &QuantGrads, lr: f32, minmax_lr: Option<f32>) {
        fn step(p: &mut [f32], g: &[f32], lr: f32) {
            p.par_chunks_mut(4096)
                .zip(g.par_chunks(4096))
                .for_each(|(p, g)| {
                    // Branch-free (the signs are close to random): p − lr·(±1) is p ∓ lr
                    // exactly, and p − 0 is p.
                    for (p, &g) in p.iter_mut().zip(g) {
                        let sign = (g > 0.0) as u8 as f32 - (g < 0.0) as u8 as f32;
                        *p -= lr * sign;
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
                    dq: None,
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
                dq: None,
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
                dq: None,
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
                dq: None,
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
                dq: None,
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
                dq: None,
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

#[cfg(test)]
mod dq_tests {
    use super::*;

    fn f32s(x: &serde_json::Value) -> Vec<f32> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    }

    /// Relative distance of two vectors: max |a − b| over max |b|.
    fn rel(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    /// The golden cases of `fixture` (in tests/fixtures) and, for each, its name and the layer
    /// it describes: the weight with the case's V, α and β.
    fn golden_layers(fixture: &str) -> Vec<(serde_json::Value, String, QuantLayer)> {
        let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cases = j["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 5);
        cases
            .iter()
            .map(|c| {
                let num = |k: &str| c[k].as_u64().unwrap() as usize;
                let dq = c.get("super_bits").map(|_| SuperQuant {
                    bits: num("super_bits") as u32,
                    groups: num("super_groups"),
                });
                let scheme = IntScheme {
                    bits: num("bits") as u32,
                    group_size: num("group_size"),
                    sym: c["sym"].as_bool().unwrap(),
                    dq,
                };
                let w = f32s(&c["w"]);
                let mut l = QuantLayer::new(w, num("rows"), num("cols"), scheme, ScaleDtype::F16);
                l.v = f32s(&c["v"]);
                l.alpha = f32s(&c["alpha"]);
                l.beta = f32s(&c["beta"]);
                (c.clone(), c["name"].as_str().unwrap().to_string(), l)
            })
            .collect()
    }

    /// Quantize-dequantize and the gradients of V, α and β equal the reference's own
    /// `quant_tensor_asym_dq` / `quant_tensor_sym_dq` under torch's autograd (golden data from
    /// tools/dq_golden.py, auto-round 0.16.1, f32 super scales as the reference tunes with).
    #[test]
    fn double_quant_matches_the_reference_forward_and_backward() {
        for (c, name, mut l) in golden_layers("dq_golden.json") {
            let scheme = l.scheme;
            assert!(scheme.dq.is_some(), "{name}: double-quantized");
            assert_eq!(l.scale_dtype, ScaleDtype::F32, "GGUF scales tune in f32");
            l.super_dtype = ScaleDtype::F32;
            l.torch_grads = true;
            let mut w_hat = vec![0f32; l.rows * l.cols];
            let p = l.qdq(&mut w_hat);
            let want = f32s(&c["qdq"]);
            let e = rel(&w_hat, &want);
            assert!(e < 1e-5, "{name}: qdq differs from the reference by {e}");
            let d = f32s(&c["d"]);
            assert!(
                rel(&p.d, &d) < 1e-6,
                "{name}: super scales {:?} vs {:?}",
                &p.d,
                &d
            );
            let mut g = QuantGrads::default();
            l.backward(&p, &f32s(&c["r"]), &mut g);
            for (what, got, key) in [
                ("V", &g.v, "grad_v"),
                ("α", &g.alpha, "grad_alpha"),
                ("β", &g.beta, "grad_beta"),
            ] {
                let want = f32s(&c[key]);
                let e = rel(got, &want);
                if e >= 1e-4 {
                    let i = (0..want.len())
                        .find(|&i| {
                            (got[i] - want[i]).abs()
                                > 1e-4 * want.iter().fold(0f32, |m, x| m.max(x.abs()))
                        })
                        .unwrap();
                    eprintln!(
                        "{name} {what} first bad {i}: ours {} torch {} (scale {} min {:?})",
                        got[i],
                        want[i],
                        p.scale[i / l.gs],
                        p.zp.get(i / l.gs)
                    );
                }
                assert!(e < 1e-4, "{name}: ∂L/∂{what} differs from torch's by {e}");
            }
            // the codes reproduce the weights
            let codes = l.codes(&p);
            let off = if scheme.sym { l.maxq() } else { 0.0 };
            for (i, (&q, &w)) in codes.iter().zip(&w_hat).enumerate() {
                let gi = i / l.gs;
                let m = if scheme.sym { 0.0 } else { p.zp[gi] };
                assert_eq!(p.scale[gi] * (q as f32 - off) - m, w, "{name} weight {i}");
            }
        }
    }

    /// Single-level quantize-dequantize and the gradients of V, α and β equal the reference's
    /// own `quant_tensor_sym` / `quant_tensor_asym` under torch's autograd (golden data from
    /// tools/qdq_golden.py, auto-round 0.16.1, f16 scales) with `torch_grads`; without it the
    /// gradients of the weights on the lowest and highest levels differ.
    #[test]
    fn single_level_matches_the_reference_forward_and_backward() {
        for (c, name, mut l) in golden_layers("qdq_golden.json") {
            assert!(l.scheme.dq.is_none(), "{name}: single-level");
            let mut w_hat = vec![0f32; l.rows * l.cols];
            let p = l.qdq(&mut w_hat);
            let e = rel(&w_hat, &f32s(&c["qdq"]));
            assert!(e < 1e-6, "{name}: qdq differs from the reference by {e}");
            assert_eq!(p.scale, f32s(&c["scale"]), "{name}: scales");
            for torch_grads in [true, false] {
                l.torch_grads = torch_grads;
                let mut g = QuantGrads::default();
                l.backward(&p, &f32s(&c["r"]), &mut g);
                for (what, got, key) in [
                    ("V", &g.v, "grad_v"),
                    ("α", &g.alpha, "grad_alpha"),
                    ("β", &g.beta, "grad_beta"),
                ] {
                    let want = f32s(&c[key]);
                    let e = rel(got, &want);
                    if !torch_grads {
                        if what == "V" {
                            assert!(e > 1e-2, "{name}: edge weights got torch's ∂L/∂V ({e})");
                        }
                    } else if what == "V" {
                        assert!(e < 1e-6, "{name}: ∂L/∂V differs from torch's by {e}");
                    } else {
                        // the f16 roundings of the scale's gradient follow torch's; its f32
                        // sums (over a group) may still end an f16 step apart from ours, and
                        // the rest is f32 arithmetic in another order
                        let big = want.iter().fold(0f32, |m, x| m.max(x.abs()));
                        let exact = got
                            .iter()
                            .zip(&want)
                            .filter(|(a, b)| (*a - *b).abs() <= 1e-6 * big)
                            .count();
                        assert!(
                            e < 2e-3 && exact * 10 >= got.len() * 9,
                            "{name}: ∂L/∂{what} differs from torch's by {e}, {exact} of {} equal\n ours {got:?}\n torch {want:?}",
                            got.len()
                        );
                    }
                }
            }
        }
    }
}
