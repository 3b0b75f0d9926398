//! Importance matrices with llama-imatrix's method (llama.cpp b11312, `tools/imatrix`).
//!
//! For every weight matrix product of the blocks (`blk.*`; `output.weight` too with
//! [`ImatrixOptions::process_output`]) the per-column sum of the squared input activations and the
//! number of rows summed are collected over the calibration text: importance-aware quantization
//! weighs each column's error by `sum / count`.
//!
//! # The schedule, and why it is spelled out
//!
//! llama-imatrix sums in f32 (`acc[j] += x[j]*x[j]`, no FMA: the tool is compiled without
//! `-march`), so the *order* in which rows reach the sums decides the last bits. To give the
//! same bytes, this module replays llama-imatrix's schedule:
//!
//! - the text is tokenized once (BOS by the vocabulary's flag, special tokens not parsed) after
//!   dropping one trailing newline (llama.cpp's `-f`); `--from-chunk` chunks are dropped; at
//!   least `2 · n_ctx` tokens must remain; `tokens / n_ctx` chunks (at most `--chunks`) are used;
//! - chunks of `n_ctx` tokens, the first token of each replaced by BOS when the vocabulary adds
//!   one, are evaluated `n_seq = max(1, n_batch / n_ctx)` at a time as parallel sequences
//!   (`n_batch` is llama.cpp's `-b`, default 2048, so 4 chunks of 512); a chunk longer than
//!   `n_batch` is fed in batches of `n_batch` tokens;
//! - each batch is cut into micro-batches of at most `n_ubatch` tokens (`-ub`, default 512) as
//!   llama.cpp's KV cache does: with one sequence, consecutive runs of `n_ubatch` tokens; with
//!   several (one KV stream per sequence), `max(1, n_ubatch / n_seq)` tokens of every sequence,
//!   sequence after sequence (`split_equal`) — so with the defaults every micro-batch holds 128
//!   tokens of each of 4 chunks;
//! - every micro-batch with at least 16 tokens adds its rows, in order, to the sums of every
//!   `blk.*` weight it multiplies (llama-imatrix ignores smaller ones); all logits are requested,
//!   so the last block's feed-forward sees every token;
//! - perplexity (on by default) is computed on the second half of each chunk, as
//!   llama-perplexity does.
//!
//! Our engine runs one sequence at a time: each sequence's part of a micro-batch is a forward
//! pass of its own, in sequence order, which hands every weight the same rows in the same order
//! (a matrix product's rows do not depend on the other rows of its batch).

use std::collections::BTreeMap;

use autoround_formats::imatrix::{Imatrix, ImatrixEntry, ImatrixFormat};

use super::perplexity::log_softmax;
use crate::model::llama::{ForwardError, KvCache, MatmulSite};
use crate::model::Model;

/// llama.cpp's `LLAMA_MAX_SEQ`: the most parallel sequences a context can have.
pub const MAX_SEQ: usize = 256;
/// llama-imatrix ignores matrix products of fewer rows than this.
pub const MIN_ROWS: usize = 16;

/// Options of an importance-matrix run (llama-imatrix's defaults from [`Default`]).
#[derive(Debug, Clone)]
pub struct ImatrixOptions {
    /// Tokens per chunk (`-c`, default 512); also the file's chunk size.
    pub n_ctx: usize,
    /// At most this many chunks (`--chunks`; `None`: all).
    pub n_chunks: Option<usize>,
    /// Skip this many chunks at the start of the text (`--from-chunk`).
    pub from_chunk: usize,
    /// Logical batch size (`-b`, default 2048): how many chunks run as parallel sequences.
    pub n_batch: usize,
    /// Micro-batch size (`-ub`, default 512).
    pub n_ubatch: usize,
    /// Compute perplexity too (default: yes, as llama-imatrix).
    pub compute_ppl: bool,
    /// Collect `output.weight` too (`--process-output`; never a tied `token_embd.weight`).
    pub process_output: bool,
    /// Calibration data sets named in the file (llama-imatrix stores the `-f` path as given).
    pub datasets: Vec<String>,
    /// Ask to save the output file every this many chunks (`--output-frequency`, default 10;
    /// 0: never, only at the end).
    pub output_frequency: usize,
    /// Ask to save a `.at_<n>` copy every this many chunks (`--save-frequency`; 0: never).
    pub save_frequency: usize,
}

impl Default for ImatrixOptions {
    fn default() -> Self {
        ImatrixOptions {
            n_ctx: 512,
            n_chunks: None,
            from_chunk: 0,
            n_batch: 2048,
            n_ubatch: 512,
            compute_ppl: true,
            process_output: false,
            datasets: Vec::new(),
            output_frequency: 10,
            save_frequency: 0,
        }
    }
}

/// How the text is cut and batched (derived from [`ImatrixOptions`] and the token count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub n_ctx: usize,
    /// Chunks that will be evaluated.
    pub n_chunks: usize,
    /// Chunks evaluated together as parallel sequences.
    pub n_seq: usize,
    /// Effective logical batch size (`min(n_batch, n_seq · n_ctx)`).
    pub n_batch: usize,
    /// Effective micro-batch size (`min(n_ubatch, n_batch)`).
    pub n_ubatch: usize,
}

/// Errors of an importance-matrix run.
#[derive(Debug, thiserror::Error)]
pub enum ImatrixRunError {
    #[error("--ctx-size must be at least 1")]
    ZeroContext,
    #[error("--chunks must be at least 1")]
    ZeroChunks,
    #[error("--batch-size and --ubatch-size must be at least 1")]
    ZeroBatch,
    #[error("--batch-size {n_batch} with --ctx-size {n_ctx} means {n_seq} parallel sequences; llama.cpp allows at most {MAX_SEQ}")]
    TooManySequences {
        n_batch: usize,
        n_ctx: usize,
        n_seq: usize,
    },
    #[error("--ubatch-size {n_ubatch} is smaller than the {n_seq} parallel sequences of a batch (--batch-size / --ctx-size); raise it")]
    UbatchTooSmall { n_ubatch: usize, n_seq: usize },
    #[error("the text has {have} tokens: not enough left after skipping {skip} chunks of {n_ctx} (needs more than {need})")]
    TooShortAfterSkip {
        have: usize,
        skip: usize,
        n_ctx: usize,
        need: usize,
    },
    #[error("you need at least {need} tokens for a context of {n_ctx} tokens; the text tokenizes to only {have}")]
    TooShort {
        need: usize,
        n_ctx: usize,
        have: usize,
    },
    #[error("non-finite values in the sums of {name} (chunk {chunk}): the model produces inf/NaN activations on this text")]
    NonFinite { name: String, chunk: usize },
    #[error("no activations were collected: every micro-batch had fewer than {MIN_ROWS} tokens")]
    NothingCollected,
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// An error returned by the caller's event handler (saving a file, say).
    #[error("{0}")]
    Handler(Box<dyn std::error::Error + Send + Sync>),
}

/// What a run reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// A chunk is done (`done` of `total`), with the running perplexity when it is computed.
    Chunk {
        done: usize,
        total: usize,
        ppl: Option<f64>,
    },
    /// Time to save: `at_chunk` is `None` for the regular output file (every
    /// `--output-frequency` chunks), `Some(n)` for the `.at_<n>` copy (`--save-frequency`).
    Save {
        imatrix: &'a Imatrix,
        at_chunk: Option<u32>,
    },
}

/// Perplexity as llama-imatrix reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PplResult {
    pub ppl: f64,
    /// The "+/-" (`None` where llama-imatrix prints "Unexpected negative standard deviation").
    pub ppl_err: Option<f64>,
    /// Running estimate after each chunk.
    pub running: Vec<f64>,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct ImatrixRun {
    pub imatrix: Imatrix,
    pub schedule: Schedule,
    pub ppl: Option<PplResult>,
    /// Tokens of the text (after `--from-chunk`).
    pub n_tokens: usize,
}

#[derive(Debug, Clone, Default)]
struct Stats {
    values: Vec<f32>,
    count: i64,
}

/// The sums of squared activations per weight, fed by [`Model::hidden_states_observed`]'s
/// observer (llama-imatrix's `IMatrixCollector` for dense weights).
#[derive(Debug, Clone)]
pub struct Collector {
    chunk_size: usize,
    process_output: bool,
    /// Whether the current micro-batch is big enough to be collected.
    active: bool,
    stats: BTreeMap<String, Stats>,
    last_chunk: u32,
    non_finite: Option<String>,
}

impl Collector {
    pub fn new(chunk_size: usize, process_output: bool) -> Collector {
        Collector {
            chunk_size,
            process_output,
            active: true,
            stats: BTreeMap::new(),
            last_chunk: 0,
            non_finite: None,
        }
    }

    /// A micro-batch of `n_tokens` tokens (all sequences together) starts.
    pub fn begin_ubatch(&mut self, n_tokens: usize) {
        self.active = n_tokens >= MIN_ROWS;
    }

    /// Whether llama-imatrix records this weight.
    pub fn wants(&self, site: MatmulSite) -> bool {
        match site {
            MatmulSite::Output { tied } => self.process_output && !tied,
            _ => true,
        }
    }

    /// Add `n_rows` rows of activations `x` to `site`'s sums, in row order, as llama-imatrix does
    /// (`acc[j] += x[j] * x[j]` in f32).
    pub fn observe(&mut self, site: MatmulSite, x: &[f32], n_rows: usize) {
        if !self.active || !self.wants(site) || n_rows == 0 {
            return;
        }
        let ne0 = x.len() / n_rows;
        let name = site.gguf_name();
        let e = self.stats.entry(name).or_default();
        if e.values.is_empty() {
            e.values = vec![0f32; ne0];
        }
        debug_assert_eq!(e.values.len(), ne0);
        for row in x[..n_rows * ne0].chunks_exact(ne0) {
            for (acc, &v) in e.values.iter_mut().zip(row) {
                *acc += v * v;
            }
        }
        e.count += n_rows as i64;
        if self.non_finite.is_none() && e.values.iter().any(|v| !v.is_finite()) {
            self.non_finite = Some(site.gguf_name());
        }
    }

    /// The weight whose sums stopped being finite, if any.
    pub fn non_finite(&self) -> Option<&str> {
        self.non_finite.as_deref()
    }

    /// Update the chunk counter as llama-imatrix does (`max count / chunk size`); returns the
    /// step when it advanced.
    fn advance(&mut self) -> Option<(u32, u32)> {
        let max = self.stats.values().map(|s| s.count).max().unwrap_or(0);
        let n = (max / self.chunk_size as i64) as u32;
        (n > self.last_chunk).then(|| {
            let step = n - self.last_chunk;
            self.last_chunk = n;
            (n, step)
        })
    }

    /// Chunks counted so far (the file's `imatrix.chunk_count`).
    pub fn chunk_count(&self) -> u32 {
        self.last_chunk
    }

    /// The matrix in llama.cpp's GGUF form.
    pub fn to_imatrix(&self, datasets: Vec<String>) -> Imatrix {
        Imatrix {
            format: ImatrixFormat::Gguf,
            entries: self
                .stats
                .iter()
                .map(|(k, s)| {
                    (
                        k.clone(),
                        ImatrixEntry {
                            sums: s.values.clone(),
                            counts: vec![s.count],
                        },
                    )
                })
                .collect(),
            datasets,
            chunk_count: self.last_chunk,
            chunk_size: self.chunk_size as u32,
        }
    }
}

/// Check the options against the token count and work out llama-imatrix's schedule.
pub fn schedule(opts: &ImatrixOptions, n_tokens: usize) -> Result<Schedule, ImatrixRunError> {
    let n_ctx = opts.n_ctx;
    if n_ctx == 0 {
        return Err(ImatrixRunError::ZeroContext);
    }
    if opts.n_chunks == Some(0) {
        return Err(ImatrixRunError::ZeroChunks);
    }
    if opts.n_batch == 0 || opts.n_ubatch == 0 {
        return Err(ImatrixRunError::ZeroBatch);
    }
    let n_seq = (opts.n_batch / n_ctx).max(1);
    if n_seq > MAX_SEQ {
        return Err(ImatrixRunError::TooManySequences {
            n_batch: opts.n_batch,
            n_ctx,
            n_seq,
        });
    }
    let n_batch = opts.n_batch.min(n_seq * n_ctx);
    let n_ubatch = opts.n_ubatch.min(n_batch);
    if n_seq > 1 && n_ubatch < n_seq {
        return Err(ImatrixRunError::UbatchTooSmall { n_ubatch, n_seq });
    }
    if opts.from_chunk > 0 {
        let need = (opts.from_chunk + 2) * n_ctx;
        if need >= n_tokens {
            return Err(ImatrixRunError::TooShortAfterSkip {
                have: n_tokens,
                skip: opts.from_chunk,
                n_ctx,
                need,
            });
        }
    }
    let have = n_tokens - opts.from_chunk * n_ctx;
    if have < 2 * n_ctx {
        return Err(ImatrixRunError::TooShort {
            need: 2 * n_ctx,
            n_ctx,
            have,
        });
    }
    let max_chunks = have / n_ctx;
    Ok(Schedule {
        n_ctx,
        n_chunks: opts.n_chunks.map_or(max_chunks, |c| c.min(max_chunks)),
        n_seq,
        n_batch,
        n_ubatch,
    })
}

/// Compute the importance matrix of `model` over `tokens` (the whole text, tokenized; `bos`: the
/// BOS id when the vocabulary adds one). `on_event` sees progress and the moments to save; an
/// error it returns stops the run.
pub fn compute_imatrix(
    model: &Model,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &ImatrixOptions,
    mut on_event: impl FnMut(Event) -> Result<(), Box<dyn std::error::Error + Send + Sync>>,
) -> Result<ImatrixRun, ImatrixRunError> {
    let sched = schedule(opts, tokens.len())?;
    let tokens = &tokens[opts.from_chunk * sched.n_ctx..];
    let Schedule {
        n_ctx,
        n_chunks,
        n_seq,
        n_batch,
        n_ubatch,
    } = sched;
    let num_batches = n_ctx.div_ceil(n_batch);
    let output_site = MatmulSite::Output {
        tied: model.output.is_none(),
    };
    let (out_freq, save_freq) = (opts.output_frequency, opts.save_frequency);
    let first = n_ctx / 2;
    let mut collector = Collector::new(n_ctx, opts.process_output);
    let mut caches: Vec<KvCache> = (0..n_seq.min(n_chunks))
        .map(|_| KvCache::new(&model.cfg, n_ctx))
        .collect();
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let mut running = Vec::new();
    // Per sequence of the current batch: -log p of each scored token, in token order.
    let mut seq_nll: Vec<Vec<f64>> = vec![Vec::new(); caches.len()];

    let mut i = 0;
    while i < n_chunks {
        let start = i * n_ctx;
        let end = start + n_ctx;
        let n_seq_batch = n_seq.min(n_chunks - i);
        for s in 0..n_seq_batch {
            caches[s].clear();
            seq_nll[s].clear();
        }
        for j in 0..num_batches {
            let batch_start = start + j * n_batch;
            let batch_size = (end - batch_start).min(n_batch);
            // Tokens of each sequence in this batch (BOS first in a chunk's first batch).
            let seqs: Vec<Vec<u32>> = (0..n_seq_batch)
                .map(|s| {
                    let seq_start = batch_start + s * n_ctx;
                    let mut t = tokens[seq_start..seq_start + batch_size].to_vec();
                    if let (Some(b), 0) = (bos, j) {
                        t[0] = b;
                    }
                    t
                })
                .collect();
            // Micro-batches: runs of `per_seq` tokens of every sequence.
            let per_seq = if n_seq == 1 {
                n_ubatch
            } else {
                (n_ubatch / n_seq_batch).max(1)
            };
            let mut off = 0;
            while off < batch_size {
                let len = per_seq.min(batch_size - off);
                collector.begin_ubatch(len * n_seq_batch);
                let collect_out = collector.active && collector.wants(output_site);
                for (s, seq) in seqs.iter().enumerate() {
                    let piece = &seq[off..off + len];
                    let mut obs =
                        |site: MatmulSite, x: &[f32], n: usize| collector.observe(site, x, n);
                    let hidden =
                        model.hidden_states_observed(piece, &mut caches[s], 0, Some(&mut obs))?;
                    // Positions of this piece within its chunk.
                    let p0 = j * n_batch + off;
                    let scored = opts.compute_ppl && p0 + len > first && p0 < n_ctx - 1;
                    if scored || collect_out {
                        let logits = if collect_out {
                            model.output_logits(&hidden, Some(&mut obs))
                        } else {
                            model.output_logits(&hidden, None)
                        };
                        if scored {
                            let vocab = logits.len() / len;
                            let chunk_start = start + s * n_ctx;
                            for k in 0..len {
                                let pos = p0 + k;
                                if pos >= first && pos < n_ctx - 1 {
                                    let next = tokens[chunk_start + pos + 1] as usize;
                                    seq_nll[s].push(-log_softmax(
                                        &logits[k * vocab..(k + 1) * vocab],
                                        next,
                                    ));
                                }
                            }
                        }
                    }
                }
                if let Some(name) = collector.non_finite() {
                    return Err(ImatrixRunError::NonFinite {
                        name: name.to_string(),
                        chunk: i + 1,
                    });
                }
                if let Some((n, step)) = collector.advance() {
                    let (n_, step_) = (n as usize, step as usize);
                    if out_freq > 0 && (n_ % out_freq) / step_ == 0 {
                        let m = collector.to_imatrix(opts.datasets.clone());
                        on_event(Event::Save {
                            imatrix: &m,
                            at_chunk: None,
                        })
                        .map_err(ImatrixRunError::Handler)?;
                    }
                    if save_freq > 0 && (n_ % save_freq) / step_ == 0 {
                        let m = collector.to_imatrix(opts.datasets.clone());
                        on_event(Event::Save {
                            imatrix: &m,
                            at_chunk: Some(n),
                        })
                        .map_err(ImatrixRunError::Handler)?;
                    }
                }
                off += len;
            }
        }
        for (s, scored) in seq_nll.iter().take(n_seq_batch).enumerate() {
            let ppl = if opts.compute_ppl {
                for &v in scored {
                    nll += v;
                    nll2 += v * v;
                }
                count += scored.len();
                let p = (nll / count as f64).exp();
                running.push(p);
                Some(p)
            } else {
                None
            };
            on_event(Event::Chunk {
                done: i + s + 1,
                total: n_chunks,
                ppl,
            })
            .map_err(ImatrixRunError::Handler)?;
        }
        i += n_seq;
    }
    if collector.stats.is_empty() {
        return Err(ImatrixRunError::NothingCollected);
    }
    let ppl = opts.compute_ppl.then(|| {
        let mean = nll / count as f64;
        let var = nll2 / count as f64 - mean * mean;
        let ppl = mean.exp();
        PplResult {
            ppl,
            ppl_err: (var > 0.0).then(|| (var / (count - 1) as f64).sqrt() * ppl),
            running,
        }
    });
    Ok(ImatrixRun {
        imatrix: collector.to_imatrix(opts.datasets.clone()),
        schedule: sched,
        ppl,
        n_tokens: tokens.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(n_ctx: usize, n_batch: usize, n_ubatch: usize) -> ImatrixOptions {
        ImatrixOptions {
            n_ctx,
            n_batch,
            n_ubatch,
            ..ImatrixOptions::default()
        }
    }

    #[test]
    fn schedule_follows_llama_imatrix() {
        // Defaults: 4 chunks of 512 side by side in one batch of 2048, micro-batches of 512.
        let s = schedule(&ImatrixOptions::default(), 10_000).unwrap();
        assert_eq!(
            (s.n_chunks, s.n_seq, s.n_batch, s.n_ubatch),
            (19, 4, 2048, 512)
        );
        // A chunk longer than the batch: one sequence fed in batches of 2048.
        let s = schedule(&opts(4096, 2048, 512), 10_000).unwrap();
        assert_eq!(
            (s.n_chunks, s.n_seq, s.n_batch, s.n_ubatch),
            (2, 1, 2048, 512)
        );
        // n_batch is cut to whole chunks; n_ubatch to n_batch.
        let s = schedule(&opts(500, 2048, 4096), 10_000).unwrap();
        assert_eq!((s.n_seq, s.n_batch, s.n_ubatch), (4, 2000, 2000));
        let s = schedule(
            &ImatrixOptions {
                n_chunks: Some(3),
                from_chunk: 2,
                ..ImatrixOptions::default()
            },
            10_000,
        )
        .unwrap();
        assert_eq!(s.n_chunks, 3);
    }

    #[test]
    fn schedule_errors_name_the_problem() {
        let e = schedule(&ImatrixOptions::default(), 1023).unwrap_err();
        assert!(e.to_string().contains("at least 1024 tokens"), "{e}");
        assert!(e.to_string().contains("only 1023"), "{e}");
        let skip = ImatrixOptions {
            from_chunk: 3,
            ..ImatrixOptions::default()
        };
        let e = schedule(&skip, 2560).unwrap_err();
        assert!(e.to_string().contains("skipping 3 chunks"), "{e}");
        assert!(schedule(&skip, 2561).is_ok());
        let e = schedule(&opts(0, 2048, 512), 10_000).unwrap_err();
        assert!(e.to_string().contains("--ctx-size"), "{e}");
        let e = schedule(&opts(4, 2048, 512), 10_000).unwrap_err();
        assert!(e.to_string().contains("512 parallel sequences"), "{e}");
        let e = schedule(&opts(16, 2048, 64), 10_000).unwrap_err();
        assert!(e.to_string().contains("--ubatch-size 64"), "{e}");
        let zero = ImatrixOptions {
            n_chunks: Some(0),
            ..ImatrixOptions::default()
        };
        assert!(schedule(&zero, 10_000).is_err());
    }

    #[test]
    fn collector_sums_squares_in_row_order_and_skips_small_batches() {
        let mut c = Collector::new(4, false);
        let site = MatmulSite::FfnDown(2);
        c.begin_ubatch(15);
        c.observe(site, &[1.0; 6], 3);
        assert!(
            c.stats.is_empty(),
            "micro-batches under 16 tokens are ignored"
        );
        c.begin_ubatch(16);
        // 1e8 + 1 + 1 in f32 row by row stays 1e8 (the order is llama-imatrix's).
        let x = [1e4f32, 1.0, 1.0, 2.0, 1.0, 3.0];
        c.observe(site, &x, 3);
        c.observe(MatmulSite::Output { tied: true }, &x, 3);
        c.observe(MatmulSite::Output { tied: false }, &x, 3);
        let m = c.to_imatrix(vec!["d".into()]);
        assert_eq!(m.entries.len(), 1, "output.weight only with process_output");
        let e = &m.entries["blk.2.ffn_down.weight"];
        assert_eq!(e.sums, vec![1e8f32, 14.0]);
        assert_eq!(e.counts, vec![3]);
        assert_eq!(c.advance(), None, "3 rows are not a chunk of 4");
        c.observe(site, &x[..2], 1);
        assert_eq!(c.advance(), Some((1, 1)));
        assert_eq!(c.to_imatrix(vec![]).chunk_count, 1);

        let mut c = Collector::new(4, true);
        c.observe(MatmulSite::Output { tied: false }, &x, 3);
        c.observe(MatmulSite::Output { tied: true }, &x, 3);
        assert_eq!(
            c.to_imatrix(vec![]).entries.keys().collect::<Vec<_>>(),
            ["output.weight"]
        );
        c.observe(MatmulSite::AttnQ(0), &[f32::MAX, 0.0], 1);
        assert_eq!(c.non_finite(), Some("blk.0.attn_q.weight"));
    }
}
