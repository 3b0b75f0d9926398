//! Perplexity with llama-perplexity's method: the text is tokenized once (BOS per the vocabulary's
//! add-BOS flag), cut into non-overlapping windows of `n_ctx` tokens, the first token of each
//! window replaced by BOS when the vocabulary adds one, and only the second half of each window is
//! scored (each token predicted from at least `n_ctx/2` tokens of context).

use crate::model::llama::{ForwardError, KvCache, Logits};
use crate::model::Model;

/// Options of a perplexity run.
#[derive(Debug, Clone)]
pub struct PerplexityOptions {
    pub n_ctx: usize,
    /// At most this many windows (`None`: all that fit).
    pub n_chunks: Option<usize>,
}

/// The result, with the running estimate after each window as llama-perplexity prints it.
#[derive(Debug, Clone)]
pub struct PerplexityResult {
    pub ppl: f64,
    /// Standard error of the estimate (llama-perplexity's "+/-").
    pub ppl_err: f64,
    pub running: Vec<f64>,
    pub n_tokens_scored: usize,
}

/// Errors of a perplexity run.
#[derive(Debug, thiserror::Error)]
pub enum PerplexityError {
    #[error("you need at least {need} tokens to evaluate perplexity with a context of {n_ctx}; the text has {have}")]
    TooShort {
        need: usize,
        n_ctx: usize,
        have: usize,
    },
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

/// ln p(tok) under softmax(logits), computed as llama-perplexity does (f32 max, f64 sum of expf).
pub fn log_softmax(logits: &[f32], tok: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    (logits[tok] - max) as f64 - sum.ln()
}

/// Compute the perplexity of `tokens` (already tokenized). `bos`: the BOS id if the vocabulary adds
/// one. `on_chunk(i, running_ppl)` is called after each window.
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PerplexityOptions,
    mut on_chunk: impl FnMut(usize, usize, f64),
) -> Result<PerplexityResult, PerplexityError> {
    let n_ctx = opts.n_ctx;
    if tokens.len() < 2 * n_ctx {
        return Err(PerplexityError::TooShort {
            need: 2 * n_ctx,
            n_ctx,
            have: tokens.len(),
        });
    }
    let max_chunks = tokens.len() / n_ctx;
    let n_chunk = opts.n_chunks.map_or(max_chunks, |c| c.min(max_chunks));
    let first = n_ctx / 2;
    let mut cache = KvCache::new(&model.cfg, n_ctx);
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let mut running = Vec::with_capacity(n_chunk);
    for i in 0..n_chunk {
        let mut window = tokens[i * n_ctx..(i + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            window[0] = b;
        }
        cache.clear();
        let logits = model.forward(&window, &mut cache, Logits::From(first))?;
        let vocab = logits.len() / (n_ctx - first);
        for j in 0..n_ctx - 1 - first {
            let v = -log_softmax(
                &logits[j * vocab..(j + 1) * vocab],
                tokens[i * n_ctx + first + j + 1] as usize,
            );
            nll += v;
            nll2 += v * v;
        }
        count += n_ctx - 1 - first;
        let ppl = (nll / count as f64).exp();
        running.push(ppl);
        on_chunk(i, n_chunk, ppl);
    }
    let mean = nll / count as f64;
    let ppl = mean.exp();
    let var = nll2 / count as f64 - mean * mean;
    let ppl_err = if var > 0.0 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    Ok(PerplexityResult {
        ppl,
        ppl_err,
        running,
        n_tokens_scored: count,
    })
}
