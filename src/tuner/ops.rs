//! The float operations of a Llama-family decoder block for training, forward and backward:
//! RMSNorm, RoPE, causal grouped-query attention and SwiGLU. Linear layers are plain
//! `autoround_kernels::gemm` calls in [`super::block`]. Attention's products use the block's
//! precision too (`AttnShape::prec`), with each head's keys and values prepared once
//! (`PackedB`) for all of its row blocks; softmax and the element-wise work stay f32.
//!
//! Activations are row-major `[tokens, features]`, the tokens of `n_seq` independent sequences
//! of `seq_len` positions each (every sequence starts at position 0, as calibration samples do).
//! Each backward function is checked against central finite differences in the tests below.

use crate::model::config::RopeLayout;
use autoround_kernels::gemm::{gemm, gemm_prepacked, Mat, PackedB, Precision, Threads};
use autoround_kernels::vmath::{exp_sub_sum, max_of};
use rayon::prelude::*;

/// Rows per rayon task in the element-wise loops.
const ROWS_PER_TASK: usize = 16;

/// `out = x / rms(x) * w` per row of `d` elements; `rstd` receives each row's `1 / rms`.
pub fn rmsnorm_forward(x: &[f32], w: &[f32], eps: f32, out: &mut [f32], rstd: &mut [f32]) {
    let d = w.len();
    out.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(x.par_chunks(d * ROWS_PER_TASK))
        .zip(rstd.par_chunks_mut(ROWS_PER_TASK))
        .for_each(|((o, x), r)| {
            for ((o, x), r) in o.chunks_mut(d).zip(x.chunks(d)).zip(r.iter_mut()) {
                let ss = dot_f64(d, |i| (x[i], x[i]));
                let s = (1.0 / (ss / d as f64 + eps as f64).sqrt()) as f32;
                *r = s;
                for ((o, &x), &w) in o.iter_mut().zip(x).zip(w) {
                    *o = x * s * w;
                }
            }
        });
}

/// `Σ_{i<n} u_i·v_i` for `(u_i, v_i) = f(i)` (f32 factors, products summed in f64), over eight
/// interleaved partial sums: independent dependency chains the compiler keeps in vector
/// registers (one running sum waits on each addition's latency).
#[inline]
fn dot_f64(n: usize, f: impl Fn(usize) -> (f32, f32)) -> f64 {
    let mut acc = [0f64; 8];
    let whole = n - n % 8;
    for i0 in (0..whole).step_by(8) {
        for (j, acc) in acc.iter_mut().enumerate() {
            let (u, v) = f(i0 + j);
            *acc += u as f64 * v as f64;
        }
    }
    for i in whole..n {
        let (u, v) = f(i);
        acc[i % 8] += u as f64 * v as f64;
    }
    acc.iter().sum()
}

/// The input gradient of [`rmsnorm_forward`]: `dx (+)= ∂L/∂x` given `dy = ∂L/∂out`. With
/// `accumulate` the gradient is added to `dx` (a residual branch).
pub fn rmsnorm_backward(
    x: &[f32],
    w: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    accumulate: bool,
) {
    let d = w.len();
    dx.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(x.par_chunks(d * ROWS_PER_TASK))
        .zip(dy.par_chunks(d * ROWS_PER_TASK))
        .zip(rstd.par_chunks(ROWS_PER_TASK))
        .for_each(|(((dx, x), dy), r)| {
            for (((dx, x), dy), &s) in dx.chunks_mut(d).zip(x.chunks(d)).zip(dy.chunks(d)).zip(r) {
                // y = x̂·w with x̂ = x·s; ∂L/∂x = s·(g − x̂·mean(g·x̂)) where g = dy·w.
                let dot = dot_f64(d, |i| (dy[i] * w[i], x[i] * s));
                let m = (dot / d as f64) as f32;
                for i in 0..d {
                    let g = dy[i] * w[i];
                    let v = s * (g - x[i] * s * m);
                    if accumulate {
                        dx[i] += v;
                    } else {
                        dx[i] = v;
                    }
                }
            }
        });
}

/// Rotary position embedding tables for positions `0..seq_len`.
pub struct Rope {
    layout: RopeLayout,
    dims: usize,
    seq_len: usize,
    /// `[seq_len, dims / 2]`
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    /// The tables Hugging Face's Llama rotary embedding uses: angle `pos · scale / (base^(2i/dims)
    /// · factor_i)` for pair `i`, computed in f64 and rounded once.
    pub fn new(
        layout: RopeLayout,
        dims: usize,
        base: f32,
        freq_scale: f32,
        freq_factors: Option<&[f32]>,
        seq_len: usize,
    ) -> Rope {
        let half = dims / 2;
        let mut cos = Vec::with_capacity(seq_len * half);
        let mut sin = Vec::with_capacity(seq_len * half);
        for pos in 0..seq_len {
            for i in 0..half {
                let inv = (base as f64).powf(-2.0 * i as f64 / dims as f64)
                    / freq_factors.map_or(1.0, |f| f[i] as f64);
                let t = pos as f64 * freq_scale as f64 * inv;
                cos.push(t.cos() as f32);
                sin.push(t.sin() as f32);
            }
        }
        Rope {
            layout,
            dims,
            seq_len,
            cos,
            sin,
        }
    }

    /// Rotate every head of `x` (`[n_seq · seq_len, n_head · head_dim]`) in place, by `+θ`
    /// (forward) or `-θ` (`inverse`: the backward pass of the rotation, which is orthogonal).
    pub fn apply(&self, x: &mut [f32], n_head: usize, head_dim: usize, inverse: bool) {
        let width = n_head * head_dim;
        let half = self.dims / 2;
        let sign = if inverse { -1.0f32 } else { 1.0 };
        // Tasks of ROWS_PER_TASK token rows; the layout is matched once per head so that the
        // pair loops are plain slices the compiler vectorizes.
        x.par_chunks_mut(width * ROWS_PER_TASK)
            .enumerate()
            .for_each(|(task, rows)| {
                for (r, row) in rows.chunks_mut(width).enumerate() {
                    let pos = (task * ROWS_PER_TASK + r) % self.seq_len;
                    let cos = &self.cos[pos * half..(pos + 1) * half];
                    let sin = &self.sin[pos * half..(pos + 1) * half];
                    for head in row.chunks_mut(head_dim) {
                        match self.layout {
                            RopeLayout::Normal => {
                                for ((p, &c), &s) in
                                    head[..2 * half].chunks_exact_mut(2).zip(cos).zip(sin)
                                {
                                    let (x0, x1, s) = (p[0], p[1], sign * s);
                                    p[0] = x0 * c - x1 * s;
                                    p[1] = x0 * s + x1 * c;
                                }
                            }
                            RopeLayout::Neox => {
                                let (lo, hi) = head[..2 * half].split_at_mut(half);
                                for (((x0, x1), &c), &s) in
                                    lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin)
                                {
                                    let (a, b, s) = (*x0, *x1, sign * s);
                                    *x0 = a * c - b * s;
                                    *x1 = a * s + b * c;
                                }
                            }
                        }
                    }
                }
            });
    }
}

/// Shape of a batch of causal self-attention.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_seq: usize,
    pub seq_len: usize,
    pub n_head: usize,
    pub n_kv: usize,
    pub head_dim: usize,
    /// The products' arithmetic (scores, probabilities times values, and their gradients);
    /// softmax and everything element-wise stay f32.
    pub prec: Precision,
}

impl AttnShape {
    fn q_width(&self) -> usize {
        self.n_head * self.head_dim
    }
    fn kv_width(&self) -> usize {
        self.n_kv * self.head_dim
    }
    fn group(&self) -> usize {
        self.n_head / self.n_kv
    }
    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// Score rows per product in the attention passes. Row block `[r0, r1)` only meets keys
/// `0 .. r1` (the mask hides the rest), so blocking skips most of the upper triangle: at 512
/// positions the products do 56% of the full square's work.
const ROW_BLOCK: usize = 64;

/// Causal softmax(QKᵀ/√d)·V for every sequence and head. `q`/`out` are `[T, n_head·hd]`,
/// `k`/`v` `[T, n_kv·hd]`; `lse` receives each score row's log-sum-exp, `[n_seq, n_head, L]`,
/// which is all the backward pass needs to rebuild the probabilities.
pub fn attention_forward(
    sh: AttnShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    lse: &mut [f32],
) {
    let (l, hd) = (sh.seq_len, sh.head_dim);
    let results: Vec<(Vec<f32>, Vec<f32>)> = (0..sh.n_seq * sh.n_head)
        .into_par_iter()
        .map(|task| {
            let (s, h) = (task / sh.n_head, task % sh.n_head);
            let kvh = h / sh.group();
            let kv_off = s * l * sh.kv_width() + kvh * hd;
            // This head's keys and values, prepared once for all of its row blocks.
            let kh = Mat::strided(&k[kv_off..], l, hd, sh.kv_width());
            let vh = Mat::strided(&v[kv_off..], l, hd, sh.kv_width());
            let (k_t, v_b) = (PackedB::new(kh.t(), sh.prec), PackedB::new(vh, sh.prec));
            let mut o = vec![0f32; l * hd];
            let mut row_lse = vec![0f32; l];
            let mut p = vec![0f32; ROW_BLOCK.min(l) * l];
            for r0 in (0..l).step_by(ROW_BLOCK) {
                let r1 = (r0 + ROW_BLOCK).min(l);
                let p = &mut p[..(r1 - r0) * r1];
                scores(sh, q, &k_t, s, h, r0, r1, p);
                let scale = sh.scale();
                for (ii, row) in p.chunks_exact_mut(r1).enumerate() {
                    let i = r0 + ii;
                    // softmax(scale·row): the scale goes into the exponential's argument.
                    let m = scale * max_of(&row[..=i]);
                    let sum = exp_sub_sum(&mut row[..=i], scale, m) as f64;
                    let inv = (1.0 / sum) as f32;
                    for x in row[..=i].iter_mut() {
                        *x *= inv;
                    }
                    row[i + 1..].fill(0.0);
                    row_lse[i] = m + (sum.ln() as f32);
                }
                gemm_prepacked(
                    Mat::new(p, r1 - r0, r1),
                    &v_b,
                    hd,
                    &mut o[r0 * hd..r1 * hd],
                    hd,
                    false,
                );
            }
            (o, row_lse)
        })
        .collect();
    // Scatter the heads back into token rows, a sequence per task.
    let qw = sh.q_width();
    out.par_chunks_mut(l * qw)
        .zip(lse.par_chunks_mut(sh.n_head * l))
        .zip(results.par_chunks(sh.n_head))
        .for_each(|((out, lse), heads)| {
            for (h, (o, row_lse)) in heads.iter().enumerate() {
                for i in 0..l {
                    out[i * qw + h * hd..i * qw + (h + 1) * hd]
                        .copy_from_slice(&o[i * hd..(i + 1) * hd]);
                }
                lse[h * l..(h + 1) * l].copy_from_slice(row_lse);
            }
        });
}

/// Scores `Q_h K_kvhᵀ` (unscaled: the callers' exponentials apply the 1/√d) of sequence `s`,
/// query rows `r0 .. r1` against keys
/// `0 .. r1` (`k_t`: the head's keys, transposed and prepared), into `p` (`(r1 − r0) × r1`;
/// entries above the diagonal are garbage the callers mask).
#[allow(clippy::too_many_arguments)]
fn scores(
    sh: AttnShape,
    q: &[f32],
    k_t: &PackedB<'_>,
    s: usize,
    h: usize,
    r0: usize,
    r1: usize,
    p: &mut [f32],
) {
    let (l, hd) = (sh.seq_len, sh.head_dim);
    let qh = Mat::strided(
        &q[(s * l + r0) * sh.q_width() + h * hd..],
        r1 - r0,
        hd,
        sh.q_width(),
    );
    gemm_prepacked(qh, k_t, r1, p, r1, false);
}

/// Gradients of [`attention_forward`] with respect to `q`, `k` and `v` (overwritten), given
/// `d_out`; `out` and `lse` are the forward pass's results.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    sh: AttnShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    d_out: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let (l, hd, g) = (sh.seq_len, sh.head_dim, sh.group());
    let (qw, kvw) = (sh.q_width(), sh.kv_width());
    let scale = sh.scale();
    // One task per (sequence, kv head): it owns that head's dK and dV and its query heads' dQ.
    let results: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..sh.n_seq * sh.n_kv)
        .into_par_iter()
        .map(|task| {
            let (s, kvh) = (task / sh.n_kv, task % sh.n_kv);
            let mut dk_t = vec![0f32; l * hd];
            let mut dv_t = vec![0f32; l * hd];
            let mut dq_t = vec![0f32; g * l * hd];
            let mut p = vec![0f32; ROW_BLOCK.min(l) * l];
            let mut dp = vec![0f32; ROW_BLOCK.min(l) * l];
            let kv_off = s * l * kvw + kvh * hd;
            let kh = Mat::strided(&k[kv_off..], l, hd, kvw);
            let vh = Mat::strided(&v[kv_off..], l, hd, kvw);
            // Prepared once for every row block of the group's heads: Kᵀ for the scores, K for
            // dQ, Vᵀ for dP.
            let k_t = PackedB::new(kh.t(), sh.prec);
            let k_b = PackedB::new(kh, sh.prec);
            let v_t = PackedB::new(vh.t(), sh.prec);
            for j in 0..g {
                let h = kvh * g + j;
                let lse_h = &lse[(s * sh.n_head + h) * l..(s * sh.n_head + h + 1) * l];
                for r0 in (0..l).step_by(ROW_BLOCK) {
                    let r1 = (r0 + ROW_BLOCK).min(l);
                    let rows = r1 - r0;
                    let (p, dp) = (&mut p[..rows * r1], &mut dp[..rows * r1]);
                    scores(sh, q, &k_t, s, h, r0, r1, p);
                    for (ii, row) in p.chunks_exact_mut(r1).enumerate() {
                        let i = r0 + ii;
                        exp_sub_sum(&mut row[..=i], scale, lse_h[i]);
                        row[i + 1..].fill(0.0);
                    }
                    let off = (s * l + r0) * qw + h * hd;
                    let doh = Mat::strided(&d_out[off..], rows, hd, qw);
                    // dV[..r1] += Pᵀ dO;  dP = dO V[..r1]ᵀ
                    let pm = Mat::new(p, rows, r1);
                    gemm(pm.t(), doh, &mut dv_t, hd, true, Threads::One, sh.prec);
                    gemm_prepacked(doh, &v_t, r1, dp, r1, false);
                    // dS = P ⊙ (dP − rowsum(dO ⊙ O)), then the 1/√d of the scores.
                    for ii in 0..rows {
                        let i = r0 + ii;
                        let o_row = &out[off + ii * qw..off + ii * qw + hd];
                        let do_row = &d_out[off + ii * qw..off + ii * qw + hd];
                        let di: f32 = o_row.iter().zip(do_row).map(|(a, b)| a * b).sum();
                        let prow = &p[ii * r1..(ii + 1) * r1];
                        let drow = &mut dp[ii * r1..(ii + 1) * r1];
                        for jj in 0..=i {
                            drow[jj] = prow[jj] * (drow[jj] - di) * scale;
                        }
                        drow[i + 1..].fill(0.0);
                    }
                    // dQ_h[r0..r1] = dS K[..r1];  dK[..r1] += dSᵀ Q_h[r0..r1]
                    let dsm = Mat::new(dp, rows, r1);
                    let dq_rows = &mut dq_t[(j * l + r0) * hd..(j * l + r1) * hd];
                    gemm_prepacked(dsm, &k_b, hd, dq_rows, hd, false);
                    let qh = Mat::strided(&q[off..], rows, hd, qw);
                    gemm(dsm.t(), qh, &mut dk_t, hd, true, Threads::One, sh.prec);
                }
            }
            (dq_t, dk_t, dv_t)
        })
        .collect();
    // Scatter the heads back into token rows, a sequence per task.
    dq.par_chunks_mut(l * qw)
        .zip(dk.par_chunks_mut(l * kvw).zip(dv.par_chunks_mut(l * kvw)))
        .zip(results.par_chunks(sh.n_kv))
        .for_each(|((dq, (dk, dv)), heads)| {
            for (kvh, (dq_t, dk_t, dv_t)) in heads.iter().enumerate() {
                for i in 0..l {
                    let dst = i * kvw + kvh * hd;
                    dk[dst..dst + hd].copy_from_slice(&dk_t[i * hd..(i + 1) * hd]);
                    dv[dst..dst + hd].copy_from_slice(&dv_t[i * hd..(i + 1) * hd]);
                    for j in 0..g {
                        let dst = i * qw + (kvh * g + j) * hd;
                        dq[dst..dst + hd]
                            .copy_from_slice(&dq_t[(j * l + i) * hd..(j * l + i + 1) * hd]);
                    }
                }
            }
        });
}

/// `a = silu(gate) · up`, element-wise.
pub fn swiglu_forward(gate: &[f32], up: &[f32], a: &mut [f32]) {
    a.par_chunks_mut(4096)
        .zip(gate.par_chunks(4096))
        .zip(up.par_chunks(4096))
        .for_each(|((a, g), u)| autoround_kernels::vmath::silu_mul(g, u, a));
}

/// Gradients of [`swiglu_forward`]: `d_gate` and `d_up` from `d_a`.
pub fn swiglu_backward(
    gate: &[f32],
    up: &[f32],
    d_a: &[f32],
    d_gate: &mut [f32],
    d_up: &mut [f32],
) {
    d_gate
        .par_chunks_mut(4096)
        .zip(d_up.par_chunks_mut(4096))
        .zip(gate.par_chunks(4096).zip(up.par_chunks(4096)))
        .zip(d_a.par_chunks(4096))
        .for_each(|(((dg, du), (g, u)), da)| {
            autoround_kernels::vmath::silu_mul_backward(g, u, da, dg, du)
        });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-scale, scale).
    pub fn rand_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * scale
            })
            .collect()
    }

    pub fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
    }

    /// Check `analytic` = the directional derivative of `f` (a scalar function of `x`) along
    /// random directions, by central differences.
    pub fn check_directional(
        what: &str,
        x: &[f32],
        analytic: &[f32],
        eps: f32,
        tol: f64,
        f: &mut dyn FnMut(&[f32]) -> f64,
    ) {
        for seed in 0..3 {
            let dir = rand_vec(x.len(), 1000 + seed, 1.0);
            let plus: Vec<f32> = x.iter().zip(&dir).map(|(a, d)| a + eps * d).collect();
            let minus: Vec<f32> = x.iter().zip(&dir).map(|(a, d)| a - eps * d).collect();
            let fd = (f(&plus) - f(&minus)) / (2.0 * eps as f64);
            let an = dot(analytic, &dir);
            // Relative to the derivative, or to a tenth of its size without cancellation
            // between coordinates (f32 noise does not shrink when the terms cancel).
            let spread: f64 = analytic
                .iter()
                .zip(&dir)
                .map(|(&g, &d)| (g as f64 * d as f64).abs())
                .sum();
            let err = (fd - an).abs() / an.abs().max(fd.abs()).max(0.1 * spread).max(1e-6);
            assert!(
                err < tol,
                "{what}: finite difference {fd} vs analytic {an} (rel err {err})"
            );
        }
    }

    #[test]
    fn rmsnorm_gradient() {
        let d = 24;
        let x = rand_vec(5 * d, 1, 2.0);
        let w = rand_vec(d, 2, 1.5);
        let r = rand_vec(5 * d, 3, 1.0);
        let run = |x: &[f32]| {
            let mut o = vec![0f32; x.len()];
            let mut s = vec![0f32; 5];
            rmsnorm_forward(x, &w, 1e-5, &mut o, &mut s);
            (o, s)
        };
        let (_, rstd) = run(&x);
        let mut dx = vec![0f32; x.len()];
        rmsnorm_backward(&x, &w, &rstd, &r, &mut dx, false);
        check_directional("rmsnorm", &x, &dx, 1e-3, 2e-3, &mut |x| dot(&run(x).0, &r));
        // accumulate adds to what is there
        let mut acc = vec![1f32; x.len()];
        rmsnorm_backward(&x, &w, &rstd, &r, &mut acc, true);
        for (a, b) in acc.iter().zip(&dx) {
            assert!((a - 1.0 - b).abs() < 1e-6);
        }
    }

    #[test]
    fn rope_is_a_rotation_and_inverse_undoes_it() {
        for layout in [RopeLayout::Normal, RopeLayout::Neox] {
            let rope = Rope::new(layout, 8, 10000.0, 1.0, None, 6);
            let x = rand_vec(2 * 6 * 3 * 8, 4, 1.0);
            let mut y = x.clone();
            rope.apply(&mut y, 3, 8, false);
            // position 0 (of both sequences: rows 0 and 6) is the identity; norms are kept
            assert_eq!(&y[..24], &x[..24]);
            assert_eq!(&y[6 * 24..7 * 24], &x[6 * 24..7 * 24]);
            assert_ne!(&y[7 * 24..8 * 24], &x[7 * 24..8 * 24]);
            for (a, b) in x.chunks(8).zip(y.chunks(8)) {
                assert!((dot(a, a) - dot(b, b)).abs() < 1e-4);
            }
            let mut z = y.clone();
            rope.apply(&mut z, 3, 8, true);
            for (a, b) in z.iter().zip(&x) {
                assert!((a - b).abs() < 1e-5);
            }
            // ⟨R, rope(x)⟩ = ⟨rope⁻¹(R), x⟩: the backward pass is the inverse rotation
            let r = rand_vec(x.len(), 5, 1.0);
            let mut g = r.clone();
            rope.apply(&mut g, 3, 8, true);
            check_directional("rope", &x, &g, 1e-2, 1e-3, &mut |x| {
                let mut y = x.to_vec();
                rope.apply(&mut y, 3, 8, false);
                dot(&y, &r)
            });
        }
    }

    #[test]
    fn rope_matches_the_engine_angles() {
        // Pair i of position p turns by p·base^(-2i/d): check one value directly.
        let rope = Rope::new(RopeLayout::Neox, 4, 100.0, 0.5, Some(&[1.0, 2.0]), 3);
        let mut x = vec![0f32; 3 * 4];
        for t in 0..3 {
            x[t * 4 + 1] = 1.0; // pair 1, first component (Neox: (1, 3))
        }
        rope.apply(&mut x, 1, 4, false);
        let angle = 2.0f64 * 0.5 * 100f64.powf(-0.5) / 2.0;
        assert!((x[2 * 4 + 1] as f64 - angle.cos()).abs() < 1e-6);
        assert!((x[2 * 4 + 3] as f64 - angle.sin()).abs() < 1e-6);
        // Normal (interleaved) layout: pair 1 is (2, 3).
        let rope = Rope::new(RopeLayout::Normal, 4, 100.0, 0.5, Some(&[1.0, 2.0]), 3);
        let mut x = vec![0f32; 3 * 4];
        for t in 0..3 {
            x[t * 4 + 2] = 1.0;
        }
        rope.apply(&mut x, 1, 4, false);
        assert!((x[2 * 4 + 2] as f64 - angle.cos()).abs() < 1e-6);
        assert!((x[2 * 4 + 3] as f64 - angle.sin()).abs() < 1e-6);
    }

    fn attn_case(n_head: usize, n_kv: usize, seq_len: usize) {
        let sh = AttnShape {
            n_seq: 2,
            seq_len,
            n_head,
            n_kv,
            head_dim: 8,
            prec: Precision::F32,
        };
        let (l, qw, kvw) = (seq_len, sh.q_width(), sh.kv_width());
        let t = sh.n_seq * sh.seq_len;
        let q = rand_vec(t * sh.q_width(), 11, 1.0);
        let k = rand_vec(t * sh.kv_width(), 12, 1.0);
        let v = rand_vec(t * sh.kv_width(), 13, 1.0);
        let r = rand_vec(t * sh.q_width(), 14, 1.0);
        let fwd = |q: &[f32], k: &[f32], v: &[f32]| {
            let mut o = vec![0f32; t * sh.q_width()];
            let mut lse = vec![0f32; sh.n_seq * sh.n_head * sh.seq_len];
            attention_forward(sh, q, k, v, &mut o, &mut lse);
            (o, lse)
        };
        let (o, lse) = fwd(&q, &k, &v);
        // Against the definition, in f64: every query attends to keys 0..=i of its sequence.
        for s in 0..sh.n_seq {
            for h in 0..n_head {
                let kvh = h / (n_head / n_kv);
                for i in 0..l {
                    let qi = &q[(s * l + i) * qw + h * 8..][..8];
                    let sc: Vec<f64> = (0..=i)
                        .map(|j| {
                            let kj = &k[(s * l + j) * kvw + kvh * 8..][..8];
                            qi.iter().zip(kj).map(|(a, b)| (a * b) as f64).sum::<f64>()
                                / 8f64.sqrt()
                        })
                        .collect();
                    let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                    for c in 0..8 {
                        let want: f64 = (0..=i)
                            .map(|j| {
                                (sc[j] - m).exp() / z * v[(s * l + j) * kvw + kvh * 8 + c] as f64
                            })
                            .sum();
                        let got = o[(s * l + i) * qw + h * 8 + c] as f64;
                        assert!(
                            (got - want).abs() < 1e-5,
                            "o[{s},{h},{i},{c}] = {got}, want {want}"
                        );
                    }
                    let lse_want = m + z.ln();
                    let lse_got = lse[(s * n_head + h) * l + i] as f64;
                    assert!((lse_got - lse_want).abs() < 1e-5);
                }
            }
        }
        let mut dq = vec![0f32; q.len()];
        let mut dk = vec![0f32; k.len()];
        let mut dv = vec![0f32; v.len()];
        attention_backward(sh, &q, &k, &v, &o, &lse, &r, &mut dq, &mut dk, &mut dv);
        check_directional("attention dq", &q, &dq, 1e-2, 5e-3, &mut |q| {
            dot(&fwd(q, &k, &v).0, &r)
        });
        check_directional("attention dk", &k, &dk, 1e-2, 5e-3, &mut |k| {
            dot(&fwd(&q, k, &v).0, &r)
        });
        check_directional("attention dv", &v, &dv, 1e-2, 5e-3, &mut |v| {
            dot(&fwd(&q, &k, v).0, &r)
        });
    }

    #[test]
    fn attention_gradients_multi_head() {
        attn_case(2, 2, 7);
    }

    #[test]
    fn attention_over_several_row_blocks() {
        // 150 positions: row blocks of 64, 64 and a ragged 22, each against its own key prefix.
        attn_case(2, 2, 150);
        attn_case(6, 2, 150);
    }

    #[test]
    fn attention_gradients_grouped_query() {
        attn_case(6, 2, 7);
    }

    /// The bf16 products (AMX where present) agree with the f32 pass to bf16's precision, over
    /// several row blocks of grouped-query heads; the f32 pass is checked above.
    #[test]
    fn bf16_attention_follows_the_f32_one() {
        let sh = AttnShape {
            n_seq: 2,
            seq_len: 150,
            n_head: 6,
            n_kv: 2,
            head_dim: 64,
            prec: Precision::F32,
        };
        let t = sh.n_seq * sh.seq_len;
        let q = rand_vec(t * sh.q_width(), 31, 1.0);
        let k = rand_vec(t * sh.kv_width(), 32, 1.0);
        let v = rand_vec(t * sh.kv_width(), 33, 1.0);
        let r = rand_vec(t * sh.q_width(), 34, 1.0);
        let run = |prec| {
            let sh = AttnShape { prec, ..sh };
            let mut o = vec![0f32; t * sh.q_width()];
            let mut lse = vec![0f32; sh.n_seq * sh.n_head * sh.seq_len];
            attention_forward(sh, &q, &k, &v, &mut o, &mut lse);
            let mut dq = vec![0f32; q.len()];
            let mut dk = vec![0f32; k.len()];
            let mut dv = vec![0f32; v.len()];
            attention_backward(sh, &q, &k, &v, &o, &lse, &r, &mut dq, &mut dk, &mut dv);
            [o, lse, dq, dk, dv]
        };
        let (want, got) = (run(Precision::F32), run(Precision::Bf16));
        for (name, (w, g)) in ["out", "lse", "dq", "dk", "dv"]
            .iter()
            .zip(want.iter().zip(&got))
        {
            let err = w
                .iter()
                .zip(g)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>();
            let norm = w.iter().map(|&a| (a as f64).powi(2)).sum::<f64>();
            let rel = (err / norm).sqrt();
            // bf16 keeps 8 bits: inputs rounded to 2^-9 relative, sums over 64..150 terms
            assert!(rel < 1e-2, "{name}: relative error {rel:.2e} against f32");
            assert!(rel > 0.0, "{name}: bf16 gave exactly the f32 values");
        }
    }

    #[test]
    fn swiglu_gradients() {
        let g = rand_vec(50, 21, 4.0);
        let u = rand_vec(50, 22, 2.0);
        let r = rand_vec(50, 23, 1.0);
        let f = |g: &[f32], u: &[f32]| {
            let mut a = vec![0f32; 50];
            swiglu_forward(g, u, &mut a);
            a
        };
        let mut dg = vec![0f32; 50];
        let mut du = vec![0f32; 50];
        swiglu_backward(&g, &u, &r, &mut dg, &mut du);
        check_directional("swiglu gate", &g, &dg, 1e-3, 2e-3, &mut |g| {
            dot(&f(g, &u), &r)
        });
        check_directional("swiglu up", &u, &du, 1e-3, 2e-3, &mut |u| {
            dot(&f(&g, u), &r)
        });
    }
}
