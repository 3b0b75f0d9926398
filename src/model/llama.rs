//! The decoder itself: weights, KV cache and the batched forward pass.
//!
//! Numerics follow llama.cpp's CPU backend where that is cheap to do, so that greedy tokens and
//! perplexities agree with it: RMSNorm sums squares in f64; RoPE angles are built by repeated
//! multiplication in f32 as ggml's cache does; K and V are stored in f16 (llama.cpp's default KV
//! cache type) and attention follows llama.cpp's CPU flash-attention paths (see
//! [`Model::attention`]); SiLU is `x / (1 + e^-x)`; every matrix product goes through
//! [`crate::tensor::matmul`].

use super::config::{ModelConfig, RopeLayout};
use crate::tensor::{matmul, matmul_quantized, QuantizedActivations, Weight};
use half::f16;
use rayon::prelude::*;

/// One decoder block.
pub struct Layer<'a> {
    pub attn_norm: Vec<f32>,
    pub wq: Weight<'a>,
    pub wk: Weight<'a>,
    pub wv: Weight<'a>,
    pub wo: Weight<'a>,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Weight<'a>,
    pub w_up: Weight<'a>,
    pub w_down: Weight<'a>,
}

/// A whole model: embeddings, blocks, final norm and output projection.
pub struct Model<'a> {
    pub cfg: ModelConfig,
    pub tok_embd: Weight<'a>,
    pub layers: Vec<Layer<'a>>,
    pub out_norm: Vec<f32>,
    /// `None` when the output projection is tied to `tok_embd`.
    pub output: Option<Weight<'a>>,
    /// Per-frequency divisors of the RoPE angle (llama3 scaling), `rope_dims / 2` of them.
    pub rope_freq_factors: Option<Vec<f32>>,
}

/// Keys and values of every layer for positions `0..len`, rounded to f16 like llama.cpp's
/// default cache type. The rounded values are kept as f32 (every f16 is exactly an f32), which
/// costs twice the memory of f16 storage but no conversion in the attention loops.
pub struct KvCache {
    n_ctx: usize,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    /// A cache for `n_ctx` positions.
    pub fn new(cfg: &ModelConfig, n_ctx: usize) -> KvCache {
        let kv_dim = cfg.n_head_kv * cfg.head_dim;
        KvCache {
            n_ctx,
            k: (0..cfg.n_layer)
                .map(|_| vec![0f32; n_ctx * kv_dim])
                .collect(),
            v: (0..cfg.n_layer)
                .map(|_| vec![0f32; n_ctx * kv_dim])
                .collect(),
            len: 0,
        }
    }
    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Capacity in positions.
    pub fn capacity(&self) -> usize {
        self.n_ctx
    }
    /// Forget everything (keeps the allocation).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Which positions of a batch need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's from this index of the batch on (perplexity).
    From(usize),
}

/// Errors of a forward pass.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("context full: {have} positions cached + {add} new exceed the context of {n_ctx}")]
    ContextFull {
        have: usize,
        add: usize,
        n_ctx: usize,
    },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    BadToken { id: u32, vocab: usize },
    #[error("empty batch")]
    Empty,
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len();
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / n as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for i in 0..n {
        out[i] = (x[i] * scale) * w[i];
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

impl<'a> Model<'a> {
    /// The cos/sin table for position `pos`, as ggml's rope cache builds it.
    fn rope_cache(&self, pos: usize, cache: &mut [f32]) {
        let c = &self.cfg;
        let theta_scale = c.rope_base.powf(-2.0 / c.rope_dims as f32);
        let mut theta = pos as f32;
        for i0 in (0..c.rope_dims).step_by(2) {
            let ff = self.rope_freq_factors.as_ref().map_or(1.0, |f| f[i0 / 2]);
            let t = c.rope_freq_scale * (theta / ff);
            cache[i0] = t.cos();
            cache[i0 + 1] = t.sin();
            theta *= theta_scale;
        }
    }

    fn apply_rope(&self, cache: &[f32], head: &mut [f32]) {
        let n = self.cfg.rope_dims;
        match self.cfg.rope_layout {
            RopeLayout::Normal => {
                for i0 in (0..n).step_by(2) {
                    let (cos, sin) = (cache[i0], cache[i0 + 1]);
                    let (x0, x1) = (head[i0], head[i0 + 1]);
                    head[i0] = x0 * cos - x1 * sin;
                    head[i0 + 1] = x0 * sin + x1 * cos;
                }
            }
            RopeLayout::Neox => {
                for i0 in (0..n).step_by(2) {
                    let (cos, sin) = (cache[i0], cache[i0 + 1]);
                    let ic = i0 / 2;
                    let (x0, x1) = (head[ic], head[ic + n / 2]);
                    head[ic] = x0 * cos - x1 * sin;
                    head[ic + n / 2] = x0 * sin + x1 * cos;
                }
            }
        }
    }

    /// Embedding rows for `tokens` (`n × n_embd`).
    pub fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>, ForwardError> {
        let d = self.cfg.n_embd;
        let mut x = vec![0f32; tokens.len() * d];
        for (t, &id) in tokens.iter().enumerate() {
            if id as usize >= self.tok_embd.rows {
                return Err(ForwardError::BadToken {
                    id,
                    vocab: self.tok_embd.rows,
                });
            }
            self.tok_embd
                .dequantize_row(id as usize, &mut x[t * d..(t + 1) * d]);
        }
        Ok(x)
    }

    /// Run `tokens` at positions `cache.len()..`, append their keys/values to the cache and
    /// return logits (`n_out × vocab`) for the positions `which` selects.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: Logits,
    ) -> Result<Vec<f32>, ForwardError> {
        let n = tokens.len();
        if n == 0 {
            return Err(ForwardError::Empty);
        }
        if cache.len + n > cache.n_ctx {
            return Err(ForwardError::ContextFull {
                have: cache.len,
                add: n,
                n_ctx: cache.n_ctx,
            });
        }
        let hidden = self.hidden_states(tokens, cache)?;
        let c = &self.cfg;
        let d = c.n_embd;
        let from = match which {
            Logits::Last => n - 1,
            Logits::From(i) => i.min(n - 1),
        };
        let n_out = n - from;
        let mut normed = vec![0f32; n_out * d];
        for t in 0..n_out {
            rms_norm(
                &hidden[(from + t) * d..(from + t + 1) * d],
                &self.out_norm,
                c.rms_eps,
                &mut normed[t * d..(t + 1) * d],
            );
        }
        let out_w = self.output.as_ref().unwrap_or(&self.tok_embd);
        let mut logits = vec![0f32; n_out * out_w.rows];
        matmul(out_w, &normed, n_out, &mut logits);
        Ok(logits)
    }

    /// The residual stream after the last block (before the final norm), `n × n_embd`.
    pub fn hidden_states(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>, ForwardError> {
        let c = &self.cfg;
        let n = tokens.len();
        let d = c.n_embd;
        let hd = c.head_dim;
        let q_dim = c.n_head * hd;
        let kv_dim = c.n_head_kv * hd;
        let pos0 = cache.len;
        let mut x = self.embed(tokens)?;

        let mut rope = vec![0f32; n * c.rope_dims];
        for t in 0..n {
            self.rope_cache(pos0 + t, &mut rope[t * c.rope_dims..(t + 1) * c.rope_dims]);
        }

        let mut xn = vec![0f32; n * d];
        let mut q = vec![0f32; n * q_dim];
        let mut k = vec![0f32; n * kv_dim];
        let mut v = vec![0f32; n * kv_dim];
        let mut attn = vec![0f32; n * q_dim];
        let mut proj = vec![0f32; n * d];
        let mut gate = vec![0f32; n * c.n_ff];
        let mut up = vec![0f32; n * c.n_ff];

        for (il, l) in self.layers.iter().enumerate() {
            // --- attention ---
            for t in 0..n {
                rms_norm(
                    &x[t * d..(t + 1) * d],
                    &l.attn_norm,
                    c.rms_eps,
                    &mut xn[t * d..(t + 1) * d],
                );
            }
            let qa = QuantizedActivations::new(l.wq.ty, &xn, n, d);
            matmul_quantized(&l.wq, &qa, n, &mut q);
            let same = |w: &Weight| w.ty == l.wq.ty;
            if same(&l.wk) && same(&l.wv) {
                matmul_quantized(&l.wk, &qa, n, &mut k);
                matmul_quantized(&l.wv, &qa, n, &mut v);
            } else {
                matmul(&l.wk, &xn, n, &mut k);
                matmul(&l.wv, &xn, n, &mut v);
            }
            add_bias(&mut q, l.bq.as_deref());
            add_bias(&mut k, l.bk.as_deref());
            add_bias(&mut v, l.bv.as_deref());
            for t in 0..n {
                let rc = &rope[t * c.rope_dims..(t + 1) * c.rope_dims];
                for h in q[t * q_dim..(t + 1) * q_dim].chunks_mut(hd) {
                    if let Some(w) = &l.q_norm {
                        let tmp = h.to_vec();
                        rms_norm(&tmp, w, c.rms_eps, h);
                    }
                    self.apply_rope(rc, h);
                }
                for h in k[t * kv_dim..(t + 1) * kv_dim].chunks_mut(hd) {
                    if let Some(w) = &l.k_norm {
                        let tmp = h.to_vec();
                        rms_norm(&tmp, w, c.rms_eps, h);
                    }
                    self.apply_rope(rc, h);
                }
            }
            let kc = &mut cache.k[il];
            let vc = &mut cache.v[il];
            for t in 0..n {
                let p = pos0 + t;
                for i in 0..kv_dim {
                    kc[p * kv_dim + i] = f16::from_f32(k[t * kv_dim + i]).to_f32();
                    vc[p * kv_dim + i] = f16::from_f32(v[t * kv_dim + i]).to_f32();
                }
            }
            self.attention(&q, &cache.k[il], &cache.v[il], pos0, n, &mut attn);
            matmul(&l.wo, &attn, n, &mut proj);
            for (xi, pi) in x.iter_mut().zip(&proj) {
                *xi += pi;
            }

            // --- feed-forward (SwiGLU) ---
            for t in 0..n {
                rms_norm(
                    &x[t * d..(t + 1) * d],
                    &l.ffn_norm,
                    c.rms_eps,
                    &mut xn[t * d..(t + 1) * d],
                );
            }
            let qa = QuantizedActivations::new(l.w_gate.ty, &xn, n, d);
            matmul_quantized(&l.w_gate, &qa, n, &mut gate);
            if l.w_up.ty == l.w_gate.ty {
                matmul_quantized(&l.w_up, &qa, n, &mut up);
            } else {
                matmul(&l.w_up, &xn, n, &mut up);
            }
            for (g, u) in gate.iter_mut().zip(&up) {
                *g = silu(*g) * u;
            }
            matmul(&l.w_down, &gate, n, &mut proj);
            for (xi, pi) in x.iter_mut().zip(&proj) {
                *xi += pi;
            }
        }
        cache.len += n;
        Ok(x)
    }

    /// Causal grouped-query attention of `n` new queries over cached positions `0..pos0+n`,
    /// with the numerics of llama.cpp's CPU flash attention (its default), which has two paths:
    ///
    /// - batches of at least [`FA_TILE_Q`] queries (prompt processing, perplexity): the tiled path.
    ///   Q stays f32, K and V are widened from f16, scores and the V sum are f32, and softmax runs
    ///   online over tiles of [`FA_TILE_KV`] keys.
    /// - smaller batches and decoding: the one-query path. Q is rounded to f16, each score is an
    ///   f16 dot product, softmax runs online key by key, and the weighted sum of V is accumulated
    ///   **in f16** (rounded after every key), then divided by the f32 sum at the end.
    fn attention(&self, q: &[f32], kc: &[f32], vc: &[f32], pos0: usize, n: usize, out: &mut [f32]) {
        let c = &self.cfg;
        let hd = c.head_dim;
        let q_dim = c.n_head * hd;
        let kv_dim = c.n_head_kv * hd;
        let group = c.n_head / c.n_head_kv;
        let scale = 1.0 / (hd as f32).sqrt();
        let tiled = n >= FA_TILE_Q;
        out.par_chunks_mut(hd).enumerate().for_each(|(idx, o)| {
            let t = idx / c.n_head;
            let h = idx % c.n_head;
            let kvh = h / group;
            let n_kv = pos0 + t + 1;
            let qh = &q[t * q_dim + h * hd..t * q_dim + (h + 1) * hd];
            let k_row = |j: usize| &kc[j * kv_dim + kvh * hd..j * kv_dim + (kvh + 1) * hd];
            let v_row = |j: usize| &vc[j * kv_dim + kvh * hd..j * kv_dim + (kvh + 1) * hd];
            if tiled {
                attention_tiled(qh, n_kv, k_row, v_row, scale, o);
            } else {
                attention_one(qh, n_kv, k_row, v_row, scale, o);
            }
        });
    }
}

/// Queries per tile above which llama.cpp's CPU flash attention takes its tiled path.
pub const FA_TILE_Q: usize = 64;
/// Keys per tile of the tiled path.
pub const FA_TILE_KV: usize = 64;

/// llama.cpp's tiled flash-attention numerics for one query row (see [`Model::attention`]).
fn attention_tiled<'k>(
    qh: &[f32],
    n_kv: usize,
    k_row: impl Fn(usize) -> &'k [f32],
    v_row: impl Fn(usize) -> &'k [f32],
    scale: f32,
    o: &mut [f32],
) {
    let hd = qh.len();
    let (mut m, mut s_sum) = (f32::NEG_INFINITY, 0f32);
    o.fill(0.0);
    let mut kq = [0f32; FA_TILE_KV];
    for ic in (0..n_kv).step_by(FA_TILE_KV) {
        let tile = FA_TILE_KV.min(n_kv - ic);
        for (tk, sk) in kq.iter_mut().enumerate() {
            *sk = if tk < tile {
                let kr = k_row(ic + tk);
                let mut acc = 0f32;
                for d in 0..hd {
                    acc += qh[d] * kr[d];
                }
                acc * scale
            } else {
                f32::NEG_INFINITY
            };
        }
        let tile_max = kq.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let m_new = m.max(tile_max);
        if m_new > m {
            let ms = (m - m_new).exp();
            o.iter_mut().for_each(|x| *x *= ms);
            s_sum *= ms;
        }
        m = m_new;
        let mut tile_sum = 0f64;
        for sk in kq.iter_mut() {
            *sk = (*sk - m).exp();
            tile_sum += *sk as f64;
        }
        s_sum += tile_sum as f32;
        for (tk, &p) in kq.iter().enumerate().take(tile) {
            let vr = v_row(ic + tk);
            for d in 0..hd {
                o[d] += vr[d] * p;
            }
        }
    }
    let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
    o.iter_mut().for_each(|x| *x *= inv);
}

/// llama.cpp's one-query flash-attention numerics (see [`Model::attention`]).
fn attention_one<'k>(
    qh: &[f32],
    n_kv: usize,
    k_row: impl Fn(usize) -> &'k [f32],
    v_row: impl Fn(usize) -> &'k [f32],
    scale: f32,
    o: &mut [f32],
) {
    let hd = qh.len();
    let q16: Vec<f32> = qh.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
    let mut vkq = vec![f16::ZERO; hd];
    let (mut m, mut s_sum) = (f32::NEG_INFINITY, 0f32);
    for j in 0..n_kv {
        let s = autoround_kernels::matmul::dot_f16_ggml(k_row(j), &q16) * scale;
        let (mut ms, mut vs) = (1f32, 1f32);
        if s > m {
            let m_old = m;
            m = s;
            ms = (m_old - m).exp();
            vkq.iter_mut()
                .for_each(|x| *x = f16::from_f32(x.to_f32() * ms));
        } else {
            vs = (s - m).exp();
        }
        let vr = v_row(j);
        for d in 0..hd {
            vkq[d] = f16::from_f32(vr[d] * vs + vkq[d].to_f32());
        }
        s_sum = s_sum * ms + vs;
    }
    let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
    for d in 0..hd {
        o[d] = vkq[d].to_f32() * inv;
    }
}

fn add_bias(x: &mut [f32], b: Option<&[f32]>) {
    if let Some(b) = b {
        for row in x.chunks_mut(b.len()) {
            for (xi, bi) in row.iter_mut().zip(b) {
                *xi += bi;
            }
        }
    }
}
