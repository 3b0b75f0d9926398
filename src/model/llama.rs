//! The decoder itself: weights, KV cache and the batched forward pass.
//!
//! Two arithmetics ([`Numerics`]). `Fast`, the default, runs the matrix products through
//! [`crate::tensor::fast`], a batch's attention as blocked GEMMs ([`Model::attention_blocks`])
//! and a decode step's in f32 ([`autoround_kernels::ops::attn_row_f32`]); the rest is shared. With `LlamaCpp`, numerics are those of llama.cpp's CPU backend on an
//! AVX2+FMA machine, bit for bit (checked
//! against llama.cpp's own intermediate tensors with `tools/compare-dumps.py`): RMSNorm sums
//! squares in f64; RoPE angles are built by repeated multiplication in f32 as ggml's cache does,
//! and the rotation uses the fused multiply-adds GCC makes of ggml's scalar code; K and V are
//! stored in f16 (llama.cpp's default KV cache type) and attention follows llama.cpp's CPU
//! flash-attention paths ([`autoround_kernels::ops`]); SwiGLU uses ggml's vector `expf`; the
//! last block's feed-forward runs only on the rows whose logits are wanted, as in llama.cpp; every
//! matrix product goes through [`crate::tensor::matmul`] in llama.cpp's x86 kernel order.

use super::config::{ModelConfig, RopeLayout};
use super::trace;
use crate::tensor::{fast, matmul, matmul_quantized, QuantizedActivations, Weight};
use autoround_kernels::ops::{attn_row_f32, flash_attn_row, swiglu, HeadRows, FA_TILE_Q};
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

/// Which arithmetic the matrix products use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Numerics {
    /// The fast path ([`crate::tensor::fast`]): SIMD dot products for decode; AMX int8 tiles
    /// (or dequantized slabs on AMX/f32 GEMM) for prefill. Same results as `LlamaCpp` up to
    /// rounding.
    #[default]
    Fast,
    /// llama.cpp's x86 arithmetic, bit for bit ([`crate::tensor::matmul`]): for comparisons
    /// with llama.cpp (greedy tokens, perplexity, imatrix).
    LlamaCpp,
}

/// A whole model: embeddings, blocks, final norm and output projection.
pub struct Model<'a> {
    /// The matrix products' arithmetic (default [`Numerics::Fast`]).
    pub numerics: Numerics,
    pub cfg: ModelConfig,
    pub tok_embd: Weight<'a>,
    pub layers: Vec<Layer<'a>>,
    pub out_norm: Vec<f32>,
    /// `None` when the output projection is tied to `tok_embd`.
    pub output: Option<Weight<'a>>,
    /// Per-frequency divisors of the RoPE angle (llama3 scaling), `rope_dims / 2` of them.
    pub rope_freq_factors: Option<Vec<f32>>,
    /// What loading changed: packed layers kept as f32 rather than repacked, and why.
    pub load_notes: Vec<String>,
}

/// Keys and values of every layer for positions `0..len`, rounded to f16 like llama.cpp's
/// default cache type. The rounded values are kept as f32 (every f16 is exactly an f32), which
/// costs twice the memory of f16 storage but no conversion in the attention loops.
pub struct KvCache {
    n_ctx: usize,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
    /// The forward pass's working buffers, sized on first use and reused by every step.
    scratch: Scratch,
}

/// Working buffers of [`Model::forward`] (one set per sequence, kept in its [`KvCache`]): with
/// them and [`Model::forward_into`], a decode step allocates nothing.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    rope: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Vec<f32>,
    head: Vec<f32>,
    normed: Vec<f32>,
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
            scratch: Scratch::default(),
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

/// One sequence's new tokens in a batched forward pass ([`Model::forward_batch`]).
pub struct Segment<'c> {
    pub tokens: &'c [u32],
    pub cache: &'c mut KvCache,
}

/// Which rows of a forward pass's residual stream are kept after the last block.
#[derive(Debug, Clone, Copy)]
enum Keep {
    /// The rows from this one on (one segment).
    From(usize),
    /// The last row of each segment.
    Lasts,
}

/// Which weight a matrix product of the forward pass multiplies by (for [`MatmulObserver`]s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatmulSite {
    AttnQ(usize),
    AttnK(usize),
    AttnV(usize),
    AttnOutput(usize),
    FfnGate(usize),
    FfnUp(usize),
    FfnDown(usize),
    /// The output projection (`output.weight`, or `token_embd.weight` when tied).
    Output {
        tied: bool,
    },
}

impl MatmulSite {
    /// The weight's GGUF tensor name (`blk.3.attn_q.weight`, `output.weight`, ...), whatever the
    /// model was loaded from.
    pub fn gguf_name(&self) -> String {
        let (il, s) = match *self {
            MatmulSite::AttnQ(il) => (il, "attn_q"),
            MatmulSite::AttnK(il) => (il, "attn_k"),
            MatmulSite::AttnV(il) => (il, "attn_v"),
            MatmulSite::AttnOutput(il) => (il, "attn_output"),
            MatmulSite::FfnGate(il) => (il, "ffn_gate"),
            MatmulSite::FfnUp(il) => (il, "ffn_up"),
            MatmulSite::FfnDown(il) => (il, "ffn_down"),
            MatmulSite::Output { tied: false } => return "output.weight".into(),
            MatmulSite::Output { tied: true } => return "token_embd.weight".into(),
        };
        format!("blk.{il}.{s}.weight")
    }
}

/// Sees the input of every weight matrix product of a forward pass, before the product:
/// `(site, rows, n_rows)`, `rows` being `n_rows` f32 activation rows of the weight's row length
/// (llama.cpp's `src1` of the `mul_mat`). Q, K and V share one input, so it is shown three times.
pub type MatmulObserver<'o> = dyn FnMut(MatmulSite, &[f32], usize) + 'o;

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

impl<'a> Model<'a> {
    /// Every matrix of the model.
    pub fn matrices(&self) -> impl Iterator<Item = &Weight<'a>> {
        let per_layer = self
            .layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]);
        std::iter::once(&self.tok_embd)
            .chain(per_layer)
            .chain(self.output.as_ref())
    }

    /// Unpacks every matrix the forward pass multiplies by into AMX int8 tiles
    /// ([`Weight::unpack_tiles`]), in parallel on rayon's pool; returns how many were unpacked
    /// and the bytes they take (0 and 0 where the CPU has no AMX-INT8). Batches of at least
    /// [`fast::TILE_ROWS`] tokens then skip the per-call unpacking: many sequences decoded
    /// together run on the tiles (16 sequences of synth-1b Q4_K_M: 1.4 times llama.cpp's tokens/s, against 0.83 without),
    /// and prompts gain a few percent (6-12% for 512 tokens measured).
    pub fn unpack_tiles(&mut self) -> (usize, usize) {
        let mut ws: Vec<&mut Weight<'a>> = self
            .layers
            .iter_mut()
            .flat_map(|l| {
                [
                    &mut l.wq,
                    &mut l.wk,
                    &mut l.wv,
                    &mut l.wo,
                    &mut l.w_gate,
                    &mut l.w_up,
                    &mut l.w_down,
                ]
            })
            .collect();
        // the output projection (`tok_embd` when tied: its rows are also looked up, from the
        // bytes, which stay)
        ws.push(self.output.as_mut().unwrap_or(&mut self.tok_embd));
        // one matrix at a time, each unpacked in parallel
        let mut done = (0, 0);
        for w in ws {
            let bytes = w.unpack_tiles();
            if bytes > 0 {
                done = (done.0 + 1, done.1 + bytes);
            }
        }
        done
    }

    /// One line on the group-wise matrices repacked at load (`None` if there are none), then
    /// [`Model::load_notes`].
    pub fn load_summary(&self) -> Vec<String> {
        let mut kinds: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        for w in self.matrices() {
            if let super::super::tensor::Repr::Group(m) = &w.repr {
                let e = kinds.entry(w.type_name()).or_default();
                e.0 += 1;
                e.1 += m.bytes();
            }
        }
        let mut lines = Vec::new();
        if !kinds.is_empty() {
            let (n, bytes) = kinds.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
            let list: Vec<String> = kinds.iter().map(|(k, v)| format!("{} {k}", v.0)).collect();
            lines.push(format!(
                "repacked {n} group-wise matrices at load ({}; {:.1} MiB) for the group-wise kernels",
                list.join(", "),
                bytes as f64 / (1 << 20) as f64
            ));
        }
        // "module: kept as f32 (why)", one line per reason
        let mut why: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for n in &self.load_notes {
            let (module, reason) = n.split_once(": ").unwrap_or((n, ""));
            why.entry(reason).or_default().push(module);
        }
        for (reason, modules) in why {
            let more = if modules.len() > 1 {
                format!(" and {} more", modules.len() - 1)
            } else {
                String::new()
            };
            lines.push(format!("{}{more}: {reason}", modules[0]));
        }
        lines
    }

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

    /// Rotate one head. ggml's scalar rotation is compiled with `-march=native`, and GCC contracts
    /// `x0*cos - x1*sin` into `fma(x0, cos, -(x1*sin))` (and `x0*sin + x1*cos` into
    /// `fma(x0, sin, x1*cos)`) on FMA machines: checked bit for bit against llama.cpp's dumps.
    fn apply_rope(&self, cache: &[f32], head: &mut [f32]) {
        let n = self.cfg.rope_dims;
        match self.cfg.rope_layout {
            RopeLayout::Normal => {
                for i0 in (0..n).step_by(2) {
                    let (cos, sin) = (cache[i0], cache[i0 + 1]);
                    let (x0, x1) = (head[i0], head[i0 + 1]);
                    head[i0] = x0.mul_add(cos, -(x1 * sin));
                    head[i0 + 1] = x0.mul_add(sin, x1 * cos);
                }
            }
            RopeLayout::Neox => {
                for i0 in (0..n).step_by(2) {
                    let (cos, sin) = (cache[i0], cache[i0 + 1]);
                    let ic = i0 / 2;
                    let (x0, x1) = (head[ic], head[ic + n / 2]);
                    head[ic] = x0.mul_add(cos, -(x1 * sin));
                    head[ic + n / 2] = x0.mul_add(sin, x1 * cos);
                }
            }
        }
    }

    /// Embedding rows for `tokens` (`n × n_embd`).
    pub fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>, ForwardError> {
        let mut x = Vec::new();
        self.embed_into(tokens, &mut x)?;
        Ok(x)
    }

    /// [`embed`](Self::embed) into `x` (resized; no allocation once it is large enough).
    pub fn embed_into(&self, tokens: &[u32], x: &mut Vec<f32>) -> Result<(), ForwardError> {
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= self.tok_embd.rows) {
            return Err(ForwardError::BadToken {
                id,
                vocab: self.tok_embd.rows,
            });
        }
        x.resize(tokens.len() * self.cfg.n_embd, 0.0);
        self.embed_rows(tokens, x);
        Ok(())
    }

    /// The embedding rows of `tokens` (checked to be in the vocabulary) into `x`.
    fn embed_rows(&self, tokens: &[u32], x: &mut [f32]) {
        let d = self.cfg.n_embd;
        for (&id, row) in tokens.iter().zip(x.chunks_exact_mut(d)) {
            self.tok_embd.dequantize_row(id as usize, row);
        }
    }

    /// Run `tokens` at positions `cache.len()..`, append their keys/values to the cache and
    /// return logits (`n_out × vocab`) for the positions `which` selects.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: Logits,
    ) -> Result<Vec<f32>, ForwardError> {
        self.forward_observed(tokens, cache, which, None)
    }

    /// [`forward`](Self::forward), showing every weight matrix product's input to `observer`.
    pub fn forward_observed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: Logits,
        observer: Option<&mut MatmulObserver<'_>>,
    ) -> Result<Vec<f32>, ForwardError> {
        let mut logits = Vec::new();
        self.forward_into(tokens, cache, which, observer, &mut logits)?;
        Ok(logits)
    }

    /// [`forward_observed`](Self::forward_observed) with the logits written into `logits`
    /// (resized): with a reused `logits`, a decode step allocates nothing (the working buffers
    /// live in `cache`).
    pub fn forward_into(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: Logits,
        mut observer: Option<&mut MatmulObserver<'_>>,
        logits: &mut Vec<f32>,
    ) -> Result<(), ForwardError> {
        trace::next_step();
        // `blocks` checks the tokens against the cache and clamps `from` to the last row
        let from = match which {
            Logits::Last => tokens.len().saturating_sub(1),
            Logits::From(i) => i,
        };
        let mut hidden = std::mem::take(&mut cache.scratch.x);
        let mut normed = std::mem::take(&mut cache.scratch.normed);
        let r = self.blocks(tokens, cache, from, observer.as_deref_mut(), &mut hidden);
        if r.is_ok() {
            self.output_logits_into(&hidden, observer, &mut normed, logits);
        }
        cache.scratch.x = hidden;
        cache.scratch.normed = normed;
        r
    }

    /// One step of several sequences at once (continuous batching): each segment's tokens run
    /// at its cache's next positions and enter its cache; `logits` gets the last token's logits
    /// of each segment, in order (`segs.len() × vocab`). The matrix products run once over all
    /// the rows, so the weights are read once for every sequence. Rows of fewer than
    /// [`fast::PREFILL_ROWS`] tokens in all take the per-row decode kernels, whose result for
    /// each row is the same as a step of that sequence alone. If any segment is refused (empty,
    /// context full, unknown token), nothing changes. The working buffers are the first
    /// segment's cache's.
    pub fn forward_batch(
        &self,
        segs: &mut [Segment<'_>],
        logits: &mut Vec<f32>,
    ) -> Result<(), ForwardError> {
        trace::next_step();
        let Some(first) = segs.first_mut() else {
            return Err(ForwardError::Empty);
        };
        let mut hidden = std::mem::take(&mut first.cache.scratch.x);
        let mut normed = std::mem::take(&mut first.cache.scratch.normed);
        let r = self.blocks_multi(segs, Keep::Lasts, None, &mut hidden);
        if r.is_ok() {
            self.output_logits_into(&hidden, None, &mut normed, logits);
        }
        segs[0].cache.scratch.x = hidden;
        segs[0].cache.scratch.normed = normed;
        r
    }

    /// Logits (`n × vocab`) of `n` rows of the residual stream after the last block (`hidden`,
    /// `n × n_embd`, as [`hidden_states`](Self::hidden_states) returns it): the final norm, then
    /// the output projection (whose input `observer` sees).
    pub fn output_logits(
        &self,
        hidden: &[f32],
        observer: Option<&mut MatmulObserver<'_>>,
    ) -> Vec<f32> {
        let mut logits = Vec::new();
        self.output_logits_into(hidden, observer, &mut Vec::new(), &mut logits);
        logits
    }

    /// [`output_logits`](Self::output_logits) into `logits`, with `normed` as working space
    /// (both resized).
    fn output_logits_into(
        &self,
        hidden: &[f32],
        observer: Option<&mut MatmulObserver<'_>>,
        normed: &mut Vec<f32>,
        logits: &mut Vec<f32>,
    ) {
        let c = &self.cfg;
        let d = c.n_embd;
        let n_out = hidden.len() / d;
        normed.resize(n_out * d, 0.0);
        for t in 0..n_out {
            rms_norm(
                &hidden[t * d..(t + 1) * d],
                &self.out_norm,
                c.rms_eps,
                &mut normed[t * d..(t + 1) * d],
            );
        }
        let out_w = self.output.as_ref().unwrap_or(&self.tok_embd);
        if let Some(o) = observer {
            o(
                MatmulSite::Output {
                    tied: self.output.is_none(),
                },
                normed,
                n_out,
            );
        }
        logits.resize(n_out * out_w.rows, 0.0);
        self.matmul(out_w, normed, n_out, logits);
        trace::dump("result_norm", None, normed, d);
        trace::dump("result_output", None, logits, out_w.rows);
    }

    /// The residual stream after the last block (before the final norm) for token rows
    /// `keep_from..` (`(n - keep_from) × n_embd`); every token still enters the KV cache.
    pub fn hidden_states(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        keep_from: usize,
    ) -> Result<Vec<f32>, ForwardError> {
        self.hidden_states_observed(tokens, cache, keep_from, None)
    }

    /// [`hidden_states`](Self::hidden_states), showing every block's weight matrix products'
    /// inputs to `observer` (the last block's feed-forward ones only for rows `keep_from..`).
    pub fn hidden_states_observed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        keep_from: usize,
        observer: Option<&mut MatmulObserver<'_>>,
    ) -> Result<Vec<f32>, ForwardError> {
        let mut x = Vec::new();
        self.blocks(tokens, cache, keep_from, observer, &mut x)?;
        Ok(x)
    }

    /// The decoder blocks: the residual stream after the last one, rows `keep_from..`, into
    /// `x`, with the cache's working buffers.
    fn blocks(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        keep_from: usize,
        observer: Option<&mut MatmulObserver<'_>>,
        x: &mut Vec<f32>,
    ) -> Result<(), ForwardError> {
        let mut seg = [Segment { tokens, cache }];
        self.blocks_multi(&mut seg, Keep::From(keep_from), observer, x)
    }

    /// The decoder blocks over the rows of every segment at once (their matrix products share
    /// one pass over the weights; attention reads each segment's own cache): the residual
    /// stream after the last one, the rows `keep` selects, into `x`, with the first segment's
    /// cache's working buffers. Nothing changes if any segment is refused.
    fn blocks_multi(
        &self,
        segs: &mut [Segment<'_>],
        keep: Keep,
        mut observer: Option<&mut MatmulObserver<'_>>,
        x: &mut Vec<f32>,
    ) -> Result<(), ForwardError> {
        let mut see = |site: MatmulSite, x: &[f32], rows: usize| {
            if let Some(o) = observer.as_deref_mut() {
                o(site, x, rows);
            }
        };
        if segs.is_empty() {
            return Err(ForwardError::Empty);
        }
        for s in segs.iter() {
            if s.tokens.is_empty() {
                return Err(ForwardError::Empty);
            }
            if s.cache.len + s.tokens.len() > s.cache.n_ctx {
                return Err(ForwardError::ContextFull {
                    have: s.cache.len,
                    add: s.tokens.len(),
                    n_ctx: s.cache.n_ctx,
                });
            }
            if let Some(&id) = s
                .tokens
                .iter()
                .find(|&&id| id as usize >= self.tok_embd.rows)
            {
                return Err(ForwardError::BadToken {
                    id,
                    vocab: self.tok_embd.rows,
                });
            }
        }
        let c = &self.cfg;
        let n: usize = segs.iter().map(|s| s.tokens.len()).sum();
        let d = c.n_embd;
        let hd = c.head_dim;
        let q_dim = c.n_head * hd;
        let kv_dim = c.n_head_kv * hd;
        x.resize(n * d, 0.0);
        let mut row = 0;
        for s in segs.iter() {
            let len = s.tokens.len();
            self.embed_rows(s.tokens, &mut x[row * d..(row + len) * d]);
            row += len;
        }
        // the rows the last feed-forward runs on: `kept(i)` for i < m_keep, increasing
        let (m_keep, keep_from) = match keep {
            Keep::From(f) => {
                let f = f.min(n - 1);
                (n - f, f)
            }
            Keep::Lasts => (segs.len(), 0),
        };
        let ends: Vec<usize> = match keep {
            Keep::From(_) => Vec::new(),
            Keep::Lasts => segs
                .iter()
                .scan(0, |end, s| {
                    *end += s.tokens.len();
                    Some(*end - 1)
                })
                .collect(),
        };
        let kept = |i: usize| {
            if ends.is_empty() {
                keep_from + i
            } else {
                ends[i]
            }
        };

        let Scratch {
            mut rope,
            mut xn,
            mut q,
            mut k,
            mut v,
            mut attn,
            mut proj,
            mut gate,
            mut up,
            mut act,
            mut head,
            ..
        } = std::mem::take(&mut segs[0].cache.scratch);
        // every element is written before it is read: resizing only sizes them
        rope.resize(n * c.rope_dims, 0.0);
        let mut row = 0;
        for s in segs.iter() {
            for t in 0..s.tokens.len() {
                let r = &mut rope[(row + t) * c.rope_dims..(row + t + 1) * c.rope_dims];
                self.rope_cache(s.cache.len + t, r);
            }
            row += s.tokens.len();
        }
        xn.resize(n * d, 0.0);
        q.resize(n * q_dim, 0.0);
        k.resize(n * kv_dim, 0.0);
        v.resize(n * kv_dim, 0.0);
        attn.resize(n * q_dim, 0.0);
        proj.resize(n * d, 0.0);
        gate.resize(n * c.n_ff, 0.0);
        up.resize(n * c.n_ff, 0.0);
        act.resize(n * c.n_ff, 0.0);
        head.resize(hd, 0.0);
        let mut m = n;

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
            trace::dump("attn_norm", Some(il), &xn, d);
            see(MatmulSite::AttnQ(il), &xn, n);
            see(MatmulSite::AttnK(il), &xn, n);
            see(MatmulSite::AttnV(il), &xn, n);
            if self.numerics == Numerics::Fast {
                fast::matmul_many(
                    &[&l.wq, &l.wk, &l.wv],
                    &xn,
                    n,
                    &mut [&mut q[..], &mut k[..], &mut v[..]],
                );
            } else {
                let qa = QuantizedActivations::for_weight(&l.wq, &xn, n);
                matmul_quantized(&l.wq, &qa, n, &mut q);
                let same = |w: &Weight| w.same_activations(&l.wq);
                if same(&l.wk) && same(&l.wv) {
                    matmul_quantized(&l.wk, &qa, n, &mut k);
                    matmul_quantized(&l.wv, &qa, n, &mut v);
                } else {
                    matmul(&l.wk, &xn, n, &mut k);
                    matmul(&l.wv, &xn, n, &mut v);
                }
            }
            trace::dump("Qmm", Some(il), &q, q_dim);
            trace::dump("Kmm", Some(il), &k, kv_dim);
            add_bias(&mut q, l.bq.as_deref());
            add_bias(&mut k, l.bk.as_deref());
            add_bias(&mut v, l.bv.as_deref());
            for t in 0..n {
                let rc = &rope[t * c.rope_dims..(t + 1) * c.rope_dims];
                for h in q[t * q_dim..(t + 1) * q_dim].chunks_mut(hd) {
                    if let Some(w) = &l.q_norm {
                        head.copy_from_slice(h);
                        rms_norm(&head, w, c.rms_eps, h);
                    }
                    self.apply_rope(rc, h);
                }
                for h in k[t * kv_dim..(t + 1) * kv_dim].chunks_mut(hd) {
                    if let Some(w) = &l.k_norm {
                        head.copy_from_slice(h);
                        rms_norm(&head, w, c.rms_eps, h);
                    }
                    self.apply_rope(rc, h);
                }
            }
            let mut row = 0;
            for s in segs.iter_mut() {
                let (len, pos0) = (s.tokens.len(), s.cache.len);
                let kc = &mut s.cache.k[il][pos0 * kv_dim..(pos0 + len) * kv_dim];
                let kn = &k[row * kv_dim..(row + len) * kv_dim];
                for (c, &x) in kc.iter_mut().zip(kn) {
                    *c = f16::from_f32(x).to_f32();
                }
                let vc = &mut s.cache.v[il][pos0 * kv_dim..(pos0 + len) * kv_dim];
                let vn = &v[row * kv_dim..(row + len) * kv_dim];
                for (c, &x) in vc.iter_mut().zip(vn) {
                    *c = f16::from_f32(x).to_f32();
                }
                row += len;
            }
            trace::dump("Qcur", Some(il), &q, q_dim);
            trace::dump("Kcur", Some(il), &k, kv_dim);
            trace::dump("Vcur", Some(il), &v, kv_dim);
            let mut row = 0;
            for s in segs.iter() {
                let (len, pos0) = (s.tokens.len(), s.cache.len);
                let (kc, vc) = (&s.cache.k[il], &s.cache.v[il]);
                let qs = &q[row * q_dim..(row + len) * q_dim];
                let out = &mut attn[row * q_dim..(row + len) * q_dim];
                if self.numerics == Numerics::Fast && len >= fast::PREFILL_ROWS {
                    self.attention_blocks(qs, kc, vc, pos0, len, out);
                } else {
                    self.attention(qs, kc, vc, pos0, len, out);
                }
                row += len;
            }
            trace::dump("kqv_out", Some(il), &attn, q_dim);
            see(MatmulSite::AttnOutput(il), &attn, n);
            self.matmul(&l.wo, &attn, n, &mut proj);
            trace::dump("attn_out", Some(il), &proj, d);
            if il + 1 == self.layers.len() && m_keep < n {
                // Like llama.cpp, run the last feed-forward only on the rows whose output is
                // wanted (this changes which matmul kernel, and so which float order, is used).
                m = m_keep;
                for buf in [&mut *x, &mut proj, &mut xn] {
                    for i in 0..m {
                        buf.copy_within(kept(i) * d..(kept(i) + 1) * d, i * d);
                    }
                    buf.truncate(m * d);
                }
                for buf in [&mut gate, &mut up, &mut act] {
                    buf.truncate(m * c.n_ff);
                }
            }
            for (xi, pi) in x.iter_mut().zip(proj.iter()) {
                *xi += pi;
            }
            trace::dump("ffn_inp", Some(il), x, d);

            // --- feed-forward (SwiGLU) ---
            for t in 0..m {
                rms_norm(
                    &x[t * d..(t + 1) * d],
                    &l.ffn_norm,
                    c.rms_eps,
                    &mut xn[t * d..(t + 1) * d],
                );
            }
            trace::dump("ffn_norm", Some(il), &xn, d);
            see(MatmulSite::FfnGate(il), &xn, m);
            see(MatmulSite::FfnUp(il), &xn, m);
            if self.numerics == Numerics::Fast {
                fast::matmul_many(
                    &[&l.w_gate, &l.w_up],
                    &xn[..m * d],
                    m,
                    &mut [&mut gate[..], &mut up[..]],
                );
            } else {
                let qa = QuantizedActivations::for_weight(&l.w_gate, &xn, m);
                matmul_quantized(&l.w_gate, &qa, m, &mut gate);
                if l.w_up.same_activations(&l.w_gate) {
                    matmul_quantized(&l.w_up, &qa, m, &mut up);
                } else {
                    matmul(&l.w_up, &xn, m, &mut up);
                }
            }
            trace::dump("ffn_gate", Some(il), &gate, c.n_ff);
            trace::dump("ffn_up", Some(il), &up, c.n_ff);
            for ((g, u), o) in gate
                .chunks(c.n_ff)
                .zip(up.chunks(c.n_ff))
                .zip(act.chunks_mut(c.n_ff))
            {
                // llama.cpp's SiLU bit for bit in both numerics: the tuner's vector SiLU
                // (`vmath::silu_mul`, a few ulps away) moved SmolLM2 Q8_0's perplexity by +0.3%
                swiglu(g, u, o);
            }
            trace::dump("ffn_swiglu", Some(il), &act, c.n_ff);
            see(MatmulSite::FfnDown(il), &act, m);
            self.matmul(&l.w_down, &act, m, &mut proj);
            trace::dump("ffn_out", Some(il), &proj, d);
            for (xi, pi) in x.iter_mut().zip(proj.iter()) {
                *xi += pi;
            }
            trace::dump("l_out", Some(il), x, d);
        }
        // `x` and `normed` are the caller's (see `forward_into`)
        segs[0].cache.scratch = Scratch {
            rope,
            xn,
            q,
            k,
            v,
            attn,
            proj,
            gate,
            up,
            act,
            head,
            ..Scratch::default()
        };
        for s in segs.iter_mut() {
            s.cache.len += s.tokens.len();
        }
        Ok(())
    }

    /// One matrix product with this model's [`Numerics`].
    fn matmul(&self, w: &Weight, x: &[f32], n: usize, out: &mut [f32]) {
        match self.numerics {
            Numerics::Fast => fast::matmul(w, x, n, out),
            Numerics::LlamaCpp => matmul(w, x, n, out),
        }
    }

    /// Causal grouped-query attention of `n` new queries over cached positions `0..pos0+n`:
    /// with [`Numerics::LlamaCpp`] in the numerics of llama.cpp's CPU flash attention (its
    /// default; see [`autoround_kernels::ops`] for its two paths), with [`Numerics::Fast`] in f32
    /// ([`attn_row_f32`]).
    fn attention(&self, q: &[f32], kc: &[f32], vc: &[f32], pos0: usize, n: usize, out: &mut [f32]) {
        let c = &self.cfg;
        let hd = c.head_dim;
        let q_dim = c.n_head * hd;
        let kv_dim = c.n_head_kv * hd;
        let group = c.n_head / c.n_head_kv;
        let scale = 1.0 / (hd as f32).sqrt();
        let tiled = n >= FA_TILE_Q;
        let one = |idx: usize, o: &mut [f32]| {
            let t = idx / c.n_head;
            let h = idx % c.n_head;
            let kvh = h / group;
            let n_kv = pos0 + t + 1;
            let qh = &q[t * q_dim + h * hd..t * q_dim + (h + 1) * hd];
            let rows = |data| HeadRows {
                data,
                stride: kv_dim,
                offset: kvh * hd,
                len: hd,
            };
            if self.numerics == Numerics::Fast {
                attn_row_f32(qh, rows(kc), rows(vc), n_kv, scale, o);
            } else {
                flash_attn_row(tiled, qh, rows(kc), rows(vc), n_kv, scale, o);
            }
        };
        // Decode is a few microseconds per head: the spinning pool, not rayon's wake-ups.
        fast::pool().for_each_chunk(&mut [out], &[hd], &|_, idx, o| one(idx, o));
    }
}

impl Model<'_> {
    /// The fast path's attention for a batch of queries: per head and block of [`ATT_BLOCK`]
    /// queries, `S = Q·Kᵀ` over the keys the block's last query sees, the causal softmax row by
    /// row (ggml's vector exp, as llama.cpp's tiled flash attention), then `O = P·V`, both
    /// products in f32 through
    /// [`autoround_kernels::gemm`]. Same result as [`Self::attention`] up to rounding.
    fn attention_blocks(
        &self,
        q: &[f32],
        kc: &[f32],
        vc: &[f32],
        pos0: usize,
        n: usize,
        out: &mut [f32],
    ) {
        use autoround_kernels::gemm::{gemm, Mat, Precision, Threads};
        let c = &self.cfg;
        let hd = c.head_dim;
        let q_dim = c.n_head * hd;
        let kv_dim = c.n_head_kv * hd;
        let group = c.n_head / c.n_head_kv;
        let scale = 1.0 / (hd as f32).sqrt();
        let blocks = n.div_ceil(ATT_BLOCK);
        let results: Vec<(usize, usize, Vec<f32>)> = (0..c.n_head * blocks)
            .into_par_iter()
            .map(|task| {
                let (h, blk) = (task % c.n_head, task / c.n_head);
                let kvh = h / group;
                let (t0, t1) = (blk * ATT_BLOCK, ((blk + 1) * ATT_BLOCK).min(n));
                let (bq, keys) = (t1 - t0, pos0 + t1);
                let mut s = vec![0f32; bq * keys];
                gemm(
                    Mat::strided(&q[t0 * q_dim + h * hd..], bq, hd, q_dim),
                    Mat::strided(&kc[kvh * hd..], keys, hd, kv_dim).t(),
                    &mut s,
                    keys,
                    false,
                    Threads::One,
                    Precision::F32,
                );
                for (i, row) in s.chunks_exact_mut(keys).enumerate() {
                    let seen = pos0 + t0 + i + 1;
                    let (vis, hidden) = row.split_at_mut(seen);
                    let sum = autoround_kernels::ops::softmax_exp_ggml(vis, scale) as f32;
                    let inv = 1.0 / sum;
                    vis.iter_mut().for_each(|p| *p *= inv);
                    hidden.fill(0.0);
                }
                let mut o = vec![0f32; bq * hd];
                gemm(
                    Mat::new(&s, bq, keys),
                    Mat::strided(&vc[kvh * hd..], keys, hd, kv_dim),
                    &mut o,
                    hd,
                    false,
                    Threads::One,
                    Precision::F32,
                );
                (h, t0, o)
            })
            .collect();
        for (h, t0, o) in results {
            for (i, row) in o.chunks_exact(hd).enumerate() {
                let at = (t0 + i) * q_dim + h * hd;
                out[at..at + hd].copy_from_slice(row);
            }
        }
    }
}

/// Queries per block of [`Model::attention_blocks`].
const ATT_BLOCK: usize = 64;

fn add_bias(x: &mut [f32], b: Option<&[f32]>) {
    if let Some(b) = b {
        for row in x.chunks_mut(b.len()) {
            for (xi, bi) in row.iter_mut().zip(b) {
                *xi += bi;
            }
        }
    }
}
