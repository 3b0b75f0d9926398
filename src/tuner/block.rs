//! One Llama-family decoder block in f32 for tuning: a forward pass that can keep what the
//! backward pass needs, and a hand-written backward pass that returns the gradient of every
//! linear weight.
//!
//! The block input is constant while a block is tuned (it comes from the previous block), so the
//! backward pass never forms the gradient of the block input, nor of anything computed from the
//! input alone (the attention RMSNorm and its output). Biases and norms are not tuned, so their
//! gradients are skipped too.

use super::ops::{
    attention_backward, attention_forward, rmsnorm_backward, rmsnorm_forward, swiglu_backward,
    swiglu_forward, AttnShape, Rope,
};
use autoround_kernels::gemm::{gemm, gemm_shared, Mat, Precision, Product, Shared, Threads};

/// The seven linear layers of a block, in a fixed order, and the LM head after the blocks
/// (`--quant_lm_head`; not in [`Lin::ALL`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lin {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
    Head,
}

impl Lin {
    pub const ALL: [Lin; 7] = [
        Lin::Q,
        Lin::K,
        Lin::V,
        Lin::O,
        Lin::Gate,
        Lin::Up,
        Lin::Down,
    ];

    /// llama.cpp's tensor name stem (`attn_q`, ...).
    pub fn gguf_stem(self) -> &'static str {
        match self {
            Lin::Q => "attn_q",
            Lin::K => "attn_k",
            Lin::V => "attn_v",
            Lin::O => "attn_output",
            Lin::Gate => "ffn_gate",
            Lin::Up => "ffn_up",
            Lin::Down => "ffn_down",
            Lin::Head => "output",
        }
    }

    /// The Hugging Face module name inside a decoder layer (`self_attn.q_proj`, ...); the head's
    /// is the top-level `lm_head`.
    pub fn hf_module(self) -> &'static str {
        match self {
            Lin::Q => "self_attn.q_proj",
            Lin::K => "self_attn.k_proj",
            Lin::V => "self_attn.v_proj",
            Lin::O => "self_attn.o_proj",
            Lin::Gate => "mlp.gate_proj",
            Lin::Up => "mlp.up_proj",
            Lin::Down => "mlp.down_proj",
            Lin::Head => "lm_head",
        }
    }
}

/// Dimensions of a block, and the arithmetic of its matrix products.
#[derive(Clone, Copy, Debug)]
pub struct BlockShape {
    pub d: usize,
    pub ff: usize,
    pub n_head: usize,
    pub n_kv: usize,
    pub head_dim: usize,
    pub eps: f32,
    /// f32, or bf16 inputs with f32 sums as the reference's autocast on bf16 CPUs.
    pub prec: Precision,
}

impl BlockShape {
    /// `(rows, cols)` of a block linear weight (`out × in`). The head is not a block layer.
    pub fn dims(&self, l: Lin) -> (usize, usize) {
        let (q, kv) = (self.n_head * self.head_dim, self.n_kv * self.head_dim);
        match l {
            Lin::Q => (q, self.d),
            Lin::K | Lin::V => (kv, self.d),
            Lin::O => (self.d, q),
            Lin::Gate | Lin::Up => (self.ff, self.d),
            Lin::Down => (self.d, self.ff),
            Lin::Head => panic!("the LM head is not a block layer"),
        }
    }
}

/// The block's parameters that are not tuned: norms and biases.
#[derive(Clone, Debug)]
pub struct BlockFloat {
    pub attn_norm: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    /// Qwen3's per-head RMSNorm of queries and keys (applied before RoPE).
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
}

/// Linear weights in [`Lin::ALL`] order, each `out × in` row-major.
pub type Weights<'a> = [&'a [f32]; 7];

/// The forward pass's buffers: what the backward pass needs, and the block output `y`. One
/// `Saved` is reused across calls, so a tuning iteration allocates nothing once the sizes are
/// known; every call overwrites all of it.
#[derive(Default)]
pub struct Saved {
    xn1: Vec<f32>,
    rstd1: Vec<f32>,
    q_pre: Vec<f32>,
    k_pre: Vec<f32>,
    rstd_q: Vec<f32>,
    rstd_k: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    lse: Vec<f32>,
    o: Vec<f32>,
    h: Vec<f32>,
    rstd2: Vec<f32>,
    xn2: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    a: Vec<f32>,
    /// The block output of the last [`forward`].
    pub y: Vec<f32>,
    n_seq: usize,
}

impl Saved {
    /// The inputs of the seven linear layers (Q, K and V share one, so do Gate and Up), each
    /// `tokens × in_features`, in [`Lin::ALL`] order.
    pub fn linear_inputs(&self) -> [&[f32]; 7] {
        let (xn1, o, xn2, a) = (&self.xn1[..], &self.o[..], &self.xn2[..], &self.a[..]);
        [xn1, xn1, xn1, o, xn2, xn2, a]
    }
}

/// `v` resized to `n` elements for a caller that overwrites them all: a buffer that already has
/// that size keeps its (stale) contents instead of being zeroed again.
pub(crate) fn scratch(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..]
}

/// `dst.copy_from_slice(src)` spread over the rayon pool (these copies are tens of MiB: on one
/// thread they left the other core idle).
pub(crate) fn par_copy(dst: &mut [f32], src: &[f32]) {
    use rayon::prelude::*;
    assert_eq!(dst.len(), src.len());
    dst.par_chunks_mut(1 << 16)
        .zip(src.par_chunks(1 << 16))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// One linear layer of [`linear_shared`]: its weight, its rows, its bias and its output.
type LinearOut<'a> = (&'a [f32], usize, Option<&'a [f32]>, &'a mut Vec<f32>);

/// `y_i = x·W_iᵀ (+ bias_i)` for layers sharing the input `x` (`t × cols`); `x` is prepared for
/// the products once.
fn linear_shared(x: &[f32], t: usize, cols: usize, layers: Vec<LinearOut<'_>>, prec: Precision) {
    let mut products = Vec::with_capacity(layers.len());
    for (w, rows, bias, y) in layers {
        let y = scratch(y, t * rows);
        if let Some(b) = bias {
            for r in y.chunks_mut(rows) {
                r.copy_from_slice(b);
            }
        }
        products.push(Product {
            other: Mat::new(w, rows, cols).t(),
            c: y,
            c_stride: rows,
            accumulate: bias.is_some(),
        });
    }
    gemm_shared(
        Mat::new(x, t, cols),
        Shared::A,
        &mut products,
        Threads::Pool,
        prec,
    );
}

/// The forward pass over `n_seq` sequences of `seq_len` tokens (`x` is `[n_seq·seq_len, d]`),
/// into `s`: the output is `s.y`, and the rest is what [`backward`] needs.
pub fn forward(
    sh: &BlockShape,
    fl: &BlockFloat,
    rope: &Rope,
    w: &Weights<'_>,
    x: &[f32],
    n_seq: usize,
    s: &mut Saved,
) {
    let d = sh.d;
    let t = x.len() / d;
    let seq_len = t / n_seq;
    let (qw, kvw) = (sh.n_head * sh.head_dim, sh.n_kv * sh.head_dim);
    s.n_seq = n_seq;
    rmsnorm_forward(
        x,
        &fl.attn_norm,
        sh.eps,
        scratch(&mut s.xn1, t * d),
        scratch(&mut s.rstd1, t),
    );
    linear_shared(
        &s.xn1,
        t,
        d,
        vec![
            (w[0], qw, fl.bq.as_deref(), &mut s.q),
            (w[1], kvw, fl.bk.as_deref(), &mut s.k),
            (w[2], kvw, fl.bv.as_deref(), &mut s.v),
        ],
        sh.prec,
    );
    if let (Some(qn), Some(kn)) = (&fl.q_norm, &fl.k_norm) {
        // The projections are the norms' inputs: keep them, the normed values go on.
        std::mem::swap(&mut s.q, &mut s.q_pre);
        std::mem::swap(&mut s.k, &mut s.k_pre);
        rmsnorm_forward(
            &s.q_pre,
            qn,
            sh.eps,
            scratch(&mut s.q, t * qw),
            scratch(&mut s.rstd_q, t * sh.n_head),
        );
        rmsnorm_forward(
            &s.k_pre,
            kn,
            sh.eps,
            scratch(&mut s.k, t * kvw),
            scratch(&mut s.rstd_k, t * sh.n_kv),
        );
    }
    rope.apply(&mut s.q, sh.n_head, sh.head_dim, false);
    rope.apply(&mut s.k, sh.n_kv, sh.head_dim, false);
    let ash = AttnShape {
        n_seq,
        seq_len,
        n_head: sh.n_head,
        n_kv: sh.n_kv,
        head_dim: sh.head_dim,
        prec: sh.prec,
    };
    attention_forward(
        ash,
        &s.q,
        &s.k,
        &s.v,
        scratch(&mut s.o, t * qw),
        scratch(&mut s.lse, n_seq * sh.n_head * seq_len),
    );
    let h = scratch(&mut s.h, t * d);
    par_copy(h, x);
    gemm(
        Mat::new(&s.o, t, qw),
        Mat::new(w[3], d, qw).t(),
        h,
        d,
        true,
        Threads::Pool,
        sh.prec,
    );
    rmsnorm_forward(
        &s.h,
        &fl.ffn_norm,
        sh.eps,
        scratch(&mut s.xn2, t * d),
        scratch(&mut s.rstd2, t),
    );
    linear_shared(
        &s.xn2,
        t,
        d,
        vec![
            (w[4], sh.ff, None, &mut s.gate),
            (w[5], sh.ff, None, &mut s.up),
        ],
        sh.prec,
    );
    swiglu_forward(&s.gate, &s.up, scratch(&mut s.a, t * sh.ff));
    let y = scratch(&mut s.y, t * d);
    par_copy(y, &s.h);
    gemm(
        Mat::new(&s.a, t, sh.ff),
        Mat::new(w[6], d, sh.ff).t(),
        y,
        d,
        true,
        Threads::Pool,
        sh.prec,
    );
}

/// `dW = dyᵀ · x` into `dw` for a linear layer with input `x` (`t × cols`) and output gradient
/// `dy` (`t × rows`).
#[allow(clippy::too_many_arguments)]
fn weight_grad(
    dy: &[f32],
    x: &[f32],
    t: usize,
    rows: usize,
    cols: usize,
    prec: Precision,
    dw: &mut Vec<f32>,
) {
    gemm(
        Mat::new(dy, t, rows).t(),
        Mat::new(x, t, cols),
        scratch(dw, rows * cols),
        cols,
        false,
        Threads::Pool,
        prec,
    );
}

/// `dW_i = dy_iᵀ · x` into `dw_i` for layers sharing the input `x` (`t × cols`), each entry
/// being (dy_i, its width = W_i's rows, dw_i); `x` is prepared for the products once.
fn weight_grads_shared(
    x: &[f32],
    t: usize,
    cols: usize,
    layers: Vec<(&[f32], usize, &mut Vec<f32>)>,
    prec: Precision,
) {
    let mut products: Vec<Product> = layers
        .into_iter()
        .map(|(dy, rows, dw)| Product {
            other: Mat::new(dy, t, rows).t(),
            c: scratch(dw, rows * cols),
            c_stride: cols,
            accumulate: false,
        })
        .collect();
    gemm_shared(
        Mat::new(x, t, cols),
        Shared::B,
        &mut products,
        Threads::Pool,
        prec,
    );
}

/// `dx (+)= dy · W` for a linear layer of weight `W` (`rows × cols`).
#[allow(clippy::too_many_arguments)]
fn input_grad(
    dy: &[f32],
    w: &[f32],
    t: usize,
    rows: usize,
    cols: usize,
    dx: &mut [f32],
    acc: bool,
    prec: Precision,
) {
    gemm(
        Mat::new(dy, t, rows),
        Mat::new(w, rows, cols),
        dx,
        cols,
        acc,
        Threads::Pool,
        prec,
    );
}

/// The backward pass's buffers, reused across calls like [`Saved`]; `dw` holds the result.
#[derive(Default)]
pub struct Grads {
    /// The gradients of the seven linear weights, in [`Lin::ALL`] order.
    pub dw: [Vec<f32>; 7],
    /// `tokens × ff` (∂a, ∂gate, ∂up), `tokens × d` (∂xn2, ∂h), attention-width buffers.
    ff: [Vec<f32>; 3],
    dmodel: [Vec<f32>; 2],
    d_att: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    dq_pre: Vec<f32>,
    dk_pre: Vec<f32>,
}

/// Gradients of the seven linear weights into `g.dw` given `dy = ∂L/∂y` for the forward pass
/// that filled `s` with the same weights.
pub fn backward(
    sh: &BlockShape,
    fl: &BlockFloat,
    rope: &Rope,
    w: &Weights<'_>,
    s: &Saved,
    dy: &[f32],
    g: &mut Grads,
) {
    let d = sh.d;
    let t = dy.len() / d;
    let (qw, kvw, ff) = (sh.n_head * sh.head_dim, sh.n_kv * sh.head_dim, sh.ff);
    let Grads {
        dw,
        ff: [da, dg, du],
        dmodel: [dxn2, dh],
        d_att,
        dq,
        dk,
        dv,
        dq_pre,
        dk_pre,
    } = g;
    let [d_q, d_k, d_v, d_o_w, d_gate, d_up, d_down] = dw;
    // y = h + a·Wdᵀ
    weight_grad(dy, &s.a, t, d, ff, sh.prec, d_down);
    input_grad(dy, w[6], t, d, ff, scratch(da, t * ff), false, sh.prec);
    swiglu_backward(&s.gate, &s.up, da, scratch(dg, t * ff), scratch(du, t * ff));
    weight_grads_shared(
        &s.xn2,
        t,
        d,
        vec![(&dg[..], ff, d_gate), (&du[..], ff, d_up)],
        sh.prec,
    );
    let dxn2 = scratch(dxn2, t * d);
    input_grad(dg, w[4], t, ff, d, dxn2, false, sh.prec);
    input_grad(du, w[5], t, ff, d, dxn2, true, sh.prec);
    // h = x + o·Woᵀ, and it feeds both the FFN norm and the output
    let dh = scratch(dh, t * d);
    par_copy(dh, dy);
    rmsnorm_backward(&s.h, &fl.ffn_norm, &s.rstd2, dxn2, dh, true);
    weight_grad(dh, &s.o, t, d, qw, sh.prec, d_o_w);
    input_grad(dh, w[3], t, d, qw, scratch(d_att, t * qw), false, sh.prec);
    let seq_len = t / s.n_seq;
    let ash = AttnShape {
        n_seq: s.n_seq,
        seq_len,
        n_head: sh.n_head,
        n_kv: sh.n_kv,
        head_dim: sh.head_dim,
        prec: sh.prec,
    };
    attention_backward(
        ash,
        &s.q,
        &s.k,
        &s.v,
        &s.o,
        &s.lse,
        d_att,
        scratch(dq, t * qw),
        scratch(dk, t * kvw),
        scratch(dv, t * kvw),
    );
    rope.apply(dq, sh.n_head, sh.head_dim, true);
    rope.apply(dk, sh.n_kv, sh.head_dim, true);
    let (dq, dk): (&[f32], &[f32]) = if let (Some(qn), Some(kn)) = (&fl.q_norm, &fl.k_norm) {
        rmsnorm_backward(&s.q_pre, qn, &s.rstd_q, dq, scratch(dq_pre, t * qw), false);
        rmsnorm_backward(&s.k_pre, kn, &s.rstd_k, dk, scratch(dk_pre, t * kvw), false);
        (&dq_pre[..], &dk_pre[..])
    } else {
        (&dq[..], &dk[..])
    };
    weight_grads_shared(
        &s.xn1,
        t,
        d,
        vec![(dq, qw, d_q), (dk, kvw, d_k), (&dv[..], kvw, d_v)],
        sh.prec,
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::config::RopeLayout;
    use crate::tuner::ops::tests::{check_directional, dot, rand_vec};

    pub fn tiny(qwen3: bool, bias: bool) -> (BlockShape, BlockFloat, Vec<Vec<f32>>) {
        let sh = BlockShape {
            d: 16,
            ff: 24,
            n_head: 4,
            n_kv: 2,
            head_dim: 4,
            eps: 1e-6,
            prec: Precision::F32,
        };
        let opt = |on: bool, n: usize, seed: u64| on.then(|| rand_vec(n, seed, 0.3));
        let fl = BlockFloat {
            attn_norm: rand_vec(16, 1, 0.5).iter().map(|x| 1.0 + x).collect(),
            ffn_norm: rand_vec(16, 2, 0.5).iter().map(|x| 1.0 + x).collect(),
            bq: opt(bias, 16, 3),
            bk: opt(bias, 8, 4),
            bv: opt(bias, 8, 5),
            q_norm: qwen3.then(|| rand_vec(4, 6, 0.5).iter().map(|x| 1.0 + x).collect()),
            k_norm: qwen3.then(|| rand_vec(4, 7, 0.5).iter().map(|x| 1.0 + x).collect()),
        };
        let ws = Lin::ALL
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                let (r, c) = sh.dims(l);
                rand_vec(r * c, 10 + i as u64, 1.0 / (c as f32).sqrt() * 1.7)
            })
            .collect();
        (sh, fl, ws)
    }

    fn check(qwen3: bool, bias: bool, layout: RopeLayout) {
        let (sh, fl, ws) = tiny(qwen3, bias);
        let (n_seq, seq_len) = (2, 5);
        let rope = Rope::new(layout, 4, 10000.0, 1.0, None, seq_len);
        let x = rand_vec(n_seq * seq_len * sh.d, 50, 1.0);
        let r = rand_vec(x.len(), 51, 1.0);
        let wref: Vec<&[f32]> = ws.iter().map(|w| w.as_slice()).collect();
        let w: Weights = wref.clone().try_into().unwrap();
        // A reused workspace holding another input's values must give the same results.
        let mut s = Saved::default();
        let mut g = Grads::default();
        let other = rand_vec(x.len(), 52, 1.0);
        forward(&sh, &fl, &rope, &w, &other, n_seq, &mut s);
        backward(&sh, &fl, &rope, &w, &s, &other, &mut g);
        forward(&sh, &fl, &rope, &w, &x, n_seq, &mut s);
        let mut fresh = Saved::default();
        forward(&sh, &fl, &rope, &w, &x, n_seq, &mut fresh);
        assert_eq!(s.y, fresh.y);
        backward(&sh, &fl, &rope, &w, &s, &r, &mut g);
        let mut g_fresh = Grads::default();
        backward(&sh, &fl, &rope, &w, &fresh, &r, &mut g_fresh);
        assert_eq!(g.dw, g_fresh.dw);
        for (i, l) in Lin::ALL.iter().enumerate() {
            let what = format!("{l:?} (qwen3 {qwen3}, bias {bias}, {layout:?})");
            check_directional(&what, &ws[i], &g.dw[i], 1e-3, 5e-3, &mut |wi| {
                let mut all = wref.clone();
                all[i] = wi;
                let w: Weights = all.try_into().unwrap();
                let mut s = Saved::default();
                forward(&sh, &fl, &rope, &w, &x, n_seq, &mut s);
                dot(&s.y, &r)
            });
        }
    }

    #[test]
    fn llama_block_weight_gradients() {
        check(false, false, RopeLayout::Normal);
    }

    #[test]
    fn qwen2_block_weight_gradients() {
        check(false, true, RopeLayout::Neox);
    }

    #[test]
    fn qwen3_block_weight_gradients() {
        check(true, false, RopeLayout::Neox);
    }
}
