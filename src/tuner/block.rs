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
use autoround_kernels::gemm::{gemm, Mat, Precision, Threads};

/// The seven linear layers of a block, in a fixed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lin {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
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
        }
    }

    /// The Hugging Face module name inside a decoder layer (`self_attn.q_proj`, ...).
    pub fn hf_module(self) -> &'static str {
        match self {
            Lin::Q => "self_attn.q_proj",
            Lin::K => "self_attn.k_proj",
            Lin::V => "self_attn.v_proj",
            Lin::O => "self_attn.o_proj",
            Lin::Gate => "mlp.gate_proj",
            Lin::Up => "mlp.up_proj",
            Lin::Down => "mlp.down_proj",
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
    /// `(rows, cols)` of a linear weight (`out × in`).
    pub fn dims(&self, l: Lin) -> (usize, usize) {
        let (q, kv) = (self.n_head * self.head_dim, self.n_kv * self.head_dim);
        match l {
            Lin::Q => (q, self.d),
            Lin::K | Lin::V => (kv, self.d),
            Lin::O => (self.d, q),
            Lin::Gate | Lin::Up => (self.ff, self.d),
            Lin::Down => (self.d, self.ff),
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

/// What the forward pass keeps for the backward pass.
#[derive(Default)]
pub struct Saved {
    xn1: Vec<f32>,
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

#[allow(clippy::too_many_arguments)]
fn linear(
    x: &[f32],
    t: usize,
    w: &[f32],
    rows: usize,
    cols: usize,
    bias: Option<&[f32]>,
    prec: Precision,
) -> Vec<f32> {
    let mut y = vec![0f32; t * rows];
    if let Some(b) = bias {
        for r in y.chunks_mut(rows) {
            r.copy_from_slice(b);
        }
    }
    gemm(
        Mat::new(x, t, cols),
        Mat::new(w, rows, cols).t(),
        &mut y,
        rows,
        bias.is_some(),
        Threads::Pool,
        prec,
    );
    y
}

/// The forward pass over `n_seq` sequences of `seq_len` tokens (`x` is `[n_seq·seq_len, d]`).
/// With `save`, the intermediate values the backward pass needs are kept there.
pub fn forward(
    sh: &BlockShape,
    fl: &BlockFloat,
    rope: &Rope,
    w: &Weights<'_>,
    x: &[f32],
    n_seq: usize,
    save: Option<&mut Saved>,
) -> Vec<f32> {
    let d = sh.d;
    let t = x.len() / d;
    let seq_len = t / n_seq;
    let (qw, kvw) = (sh.n_head * sh.head_dim, sh.n_kv * sh.head_dim);
    let mut xn1 = vec![0f32; t * d];
    let mut rstd1 = vec![0f32; t];
    rmsnorm_forward(x, &fl.attn_norm, sh.eps, &mut xn1, &mut rstd1);
    let mut q = linear(&xn1, t, w[0], qw, d, fl.bq.as_deref(), sh.prec);
    let mut k = linear(&xn1, t, w[1], kvw, d, fl.bk.as_deref(), sh.prec);
    let v = linear(&xn1, t, w[2], kvw, d, fl.bv.as_deref(), sh.prec);
    let (mut q_pre, mut k_pre, mut rstd_q, mut rstd_k) = Default::default();
    if let (Some(qn), Some(kn)) = (&fl.q_norm, &fl.k_norm) {
        let mut qo = vec![0f32; q.len()];
        let mut ko = vec![0f32; k.len()];
        let mut rq = vec![0f32; t * sh.n_head];
        let mut rk = vec![0f32; t * sh.n_kv];
        rmsnorm_forward(&q, qn, sh.eps, &mut qo, &mut rq);
        rmsnorm_forward(&k, kn, sh.eps, &mut ko, &mut rk);
        q_pre = std::mem::replace(&mut q, qo);
        k_pre = std::mem::replace(&mut k, ko);
        rstd_q = rq;
        rstd_k = rk;
    }
    rope.apply(&mut q, sh.n_head, sh.head_dim, false);
    rope.apply(&mut k, sh.n_kv, sh.head_dim, false);
    let ash = AttnShape {
        n_seq,
        seq_len,
        n_head: sh.n_head,
        n_kv: sh.n_kv,
        head_dim: sh.head_dim,
    };
    let mut o = vec![0f32; t * qw];
    let mut lse = vec![0f32; n_seq * sh.n_head * seq_len];
    attention_forward(ash, &q, &k, &v, &mut o, &mut lse);
    let mut h = linear(&o, t, w[3], d, qw, None, sh.prec);
    for (h, &x) in h.iter_mut().zip(x) {
        *h += x;
    }
    let mut xn2 = vec![0f32; t * d];
    let mut rstd2 = vec![0f32; t];
    rmsnorm_forward(&h, &fl.ffn_norm, sh.eps, &mut xn2, &mut rstd2);
    let gate = linear(&xn2, t, w[4], sh.ff, d, None, sh.prec);
    let up = linear(&xn2, t, w[5], sh.ff, d, None, sh.prec);
    let mut a = vec![0f32; t * sh.ff];
    swiglu_forward(&gate, &up, &mut a);
    let mut y = h.clone();
    gemm(
        Mat::new(&a, t, sh.ff),
        Mat::new(w[6], d, sh.ff).t(),
        &mut y,
        d,
        true,
        Threads::Pool,
        sh.prec,
    );
    if let Some(s) = save {
        *s = Saved {
            xn1,
            q_pre,
            k_pre,
            rstd_q,
            rstd_k,
            q,
            k,
            v,
            lse,
            o,
            h,
            rstd2,
            xn2,
            gate,
            up,
            a,
            n_seq,
        };
    }
    y
}

/// `dW = dyᵀ · x` for a linear layer with input `x` (`t × cols`) and output gradient `dy`
/// (`t × rows`).
fn weight_grad(
    dy: &[f32],
    x: &[f32],
    t: usize,
    rows: usize,
    cols: usize,
    prec: Precision,
) -> Vec<f32> {
    let mut dw = vec![0f32; rows * cols];
    gemm(
        Mat::new(dy, t, rows).t(),
        Mat::new(x, t, cols),
        &mut dw,
        cols,
        false,
        Threads::Pool,
        prec,
    );
    dw
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

/// Gradients of the seven linear weights (in [`Lin::ALL`] order) given `dy = ∂L/∂y` for the
/// forward pass that filled `s` with the same weights.
pub fn backward(
    sh: &BlockShape,
    fl: &BlockFloat,
    rope: &Rope,
    w: &Weights<'_>,
    s: &Saved,
    dy: &[f32],
) -> [Vec<f32>; 7] {
    let d = sh.d;
    let t = dy.len() / d;
    let (qw, kvw, ff) = (sh.n_head * sh.head_dim, sh.n_kv * sh.head_dim, sh.ff);
    // y = h + a·Wdᵀ
    let d_down = weight_grad(dy, &s.a, t, d, ff, sh.prec);
    let mut da = vec![0f32; t * ff];
    input_grad(dy, w[6], t, d, ff, &mut da, false, sh.prec);
    let mut dg = vec![0f32; t * ff];
    let mut du = vec![0f32; t * ff];
    swiglu_backward(&s.gate, &s.up, &da, &mut dg, &mut du);
    drop(da);
    let d_gate = weight_grad(&dg, &s.xn2, t, ff, d, sh.prec);
    let d_up = weight_grad(&du, &s.xn2, t, ff, d, sh.prec);
    let mut dxn2 = vec![0f32; t * d];
    input_grad(&dg, w[4], t, ff, d, &mut dxn2, false, sh.prec);
    input_grad(&du, w[5], t, ff, d, &mut dxn2, true, sh.prec);
    drop((dg, du));
    // h = x + o·Woᵀ, and it feeds both the FFN norm and the output
    let mut dh = dy.to_vec();
    rmsnorm_backward(&s.h, &fl.ffn_norm, &s.rstd2, &dxn2, &mut dh, true);
    drop(dxn2);
    let d_o_w = weight_grad(&dh, &s.o, t, d, qw, sh.prec);
    let mut d_att = vec![0f32; t * qw];
    input_grad(&dh, w[3], t, d, qw, &mut d_att, false, sh.prec);
    drop(dh);
    let seq_len = t / s.n_seq;
    let ash = AttnShape {
        n_seq: s.n_seq,
        seq_len,
        n_head: sh.n_head,
        n_kv: sh.n_kv,
        head_dim: sh.head_dim,
    };
    let mut dq = vec![0f32; t * qw];
    let mut dk = vec![0f32; t * kvw];
    let mut dv = vec![0f32; t * kvw];
    attention_backward(
        ash, &s.q, &s.k, &s.v, &s.o, &s.lse, &d_att, &mut dq, &mut dk, &mut dv,
    );
    drop(d_att);
    rope.apply(&mut dq, sh.n_head, sh.head_dim, true);
    rope.apply(&mut dk, sh.n_kv, sh.head_dim, true);
    if let (Some(qn), Some(kn)) = (&fl.q_norm, &fl.k_norm) {
        let mut dq_pre = vec![0f32; dq.len()];
        let mut dk_pre = vec![0f32; dk.len()];
        rmsnorm_backward(&s.q_pre, qn, &s.rstd_q, &dq, &mut dq_pre, false);
        rmsnorm_backward(&s.k_pre, kn, &s.rstd_k, &dk, &mut dk_pre, false);
        dq = dq_pre;
        dk = dk_pre;
    }
    let d_q = weight_grad(&dq, &s.xn1, t, qw, d, sh.prec);
    let d_k = weight_grad(&dk, &s.xn1, t, kvw, d, sh.prec);
    let d_v = weight_grad(&dv, &s.xn1, t, kvw, d, sh.prec);
    [d_q, d_k, d_v, d_o_w, d_gate, d_up, d_down]
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
        let mut s = Saved::default();
        let y = forward(&sh, &fl, &rope, &w, &x, n_seq, Some(&mut s));
        let y2 = forward(&sh, &fl, &rope, &w, &x, n_seq, None);
        assert_eq!(y, y2);
        let grads = backward(&sh, &fl, &rope, &w, &s, &r);
        for (i, l) in Lin::ALL.iter().enumerate() {
            let what = format!("{l:?} (qwen3 {qwen3}, bias {bias}, {layout:?})");
            check_directional(&what, &ws[i], &grads[i], 1e-3, 5e-3, &mut |wi| {
                let mut all = wref.clone();
                all[i] = wi;
                let w: Weights = all.try_into().unwrap();
                dot(&forward(&sh, &fl, &rope, &w, &x, n_seq, None), &r)
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
