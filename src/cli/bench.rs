//! `autoround-cpu bench`: llama-bench's two tests on our engine, in its table or jsonl format.
//!
//! - `pp<N>`: N random tokens (the first one BOS) in one forward pass over an empty cache,
//!   logits of the last token only.
//! - `tg<N>`: N tokens one at a time over an empty cache (BOS, then random tokens), logits each.
//! - `tg<N>x<P>` (`--parallel P`): P sequences of N tokens each, as `tg<N>`, decoded together:
//!   every forward pass takes one token of each ([`Model::forward_batch`]), as the server does
//!   for P clients. Its rate counts all P·N tokens (llama-batched-bench's `S_TG`).
//!
//! As llama-bench does, each test runs once to warm up, then `-r` timed repetitions, each on a
//! cleared cache; the rate is tokens ÷ seconds per repetition, reported as mean ± sample
//! standard deviation. Only the forward passes are timed.

use super::args::BenchArgs;
use crate::model::llama::{KvCache, Logits, Model, Segment};
use crate::model::ModelSource;
use crate::quantize::mixture::Mixture;
use anyhow::{bail, Context, Result};
use std::time::Instant;

/// One test's result.
struct Row {
    test: String,
    n_prompt: usize,
    n_gen: usize,
    /// Sequences generated together.
    parallel: usize,
    threads: usize,
    /// Seconds per repetition.
    secs: Vec<f64>,
}

impl Row {
    fn rates(&self) -> Vec<f64> {
        let n = (self.n_prompt + self.n_gen * self.parallel) as f64;
        self.secs.iter().map(|s| n / s).collect()
    }
}

fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    if x.len() < 2 {
        return (mean, 0.0);
    }
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// A xorshift generator for the random token ids (llama-bench uses `std::rand`; any ids do).
struct Ids(u64);

impl Ids {
    fn next(&mut self, vocab: usize) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % vocab as u64) as u32
    }
}

/// Seconds of one repetition of the test (`n_prompt` in one batch, then `n_gen` one by one).
fn run_once(
    model: &Model<'_>,
    bos: u32,
    n_prompt: usize,
    n_gen: usize,
    ids: &mut Ids,
) -> Result<f64> {
    let vocab = model.cfg.vocab_size;
    let mut cache = KvCache::new(&model.cfg, n_prompt + n_gen + 1);
    let mut prompt = vec![bos];
    while prompt.len() < n_prompt {
        prompt.push(ids.next(vocab));
    }
    let gen: Vec<u32> = (0..n_gen)
        .map(|i| if i == 0 { bos } else { ids.next(vocab) })
        .collect();
    let mut logits = Vec::new();
    let t0 = Instant::now();
    if n_prompt > 0 {
        model.forward_into(&prompt, &mut cache, Logits::Last, None, &mut logits)?;
        std::hint::black_box(&logits);
    }
    for &t in &gen {
        model.forward_into(&[t], &mut cache, Logits::Last, None, &mut logits)?;
        std::hint::black_box(&logits);
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Seconds of one repetition of `tg<n_gen>x<parallel>`: `parallel` sequences (each BOS, then
/// random tokens) advanced one token each per forward pass.
fn run_parallel(
    model: &Model<'_>,
    bos: u32,
    n_gen: usize,
    parallel: usize,
    ids: &mut Ids,
) -> Result<f64> {
    let vocab = model.cfg.vocab_size;
    let mut caches: Vec<KvCache> = (0..parallel)
        .map(|_| KvCache::new(&model.cfg, n_gen + 1))
        .collect();
    let gen: Vec<Vec<u32>> = (0..n_gen)
        .map(|i| {
            (0..parallel)
                .map(|_| if i == 0 { bos } else { ids.next(vocab) })
                .collect()
        })
        .collect();
    let mut logits = Vec::new();
    let t0 = Instant::now();
    for step in &gen {
        let mut segs: Vec<Segment> = caches
            .iter_mut()
            .zip(step)
            .map(|(cache, t)| Segment {
                tokens: std::slice::from_ref(t),
                cache,
            })
            .collect();
        model.forward_batch(&mut segs, &mut logits)?;
        std::hint::black_box(&logits);
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// "135M", "1.10B": llama-bench's way of writing a parameter count.
fn params_str(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2} B", n as f64 / 1e9)
    } else {
        format!("{:.2} M", n as f64 / 1e6)
    }
}

pub fn bench(a: BenchArgs) -> Result<()> {
    let json = match a.output.as_str() {
        "md" => false,
        "jsonl" => true,
        o => bail!("-o {o}: unknown output format (md or jsonl)"),
    };
    if a.repetitions == 0 {
        bail!("-r must be at least 1");
    }
    let threads = if a.threads.is_empty() {
        vec![std::thread::available_parallelism().map_or(1, |n| n.get())]
    } else {
        a.threads.clone()
    };
    if threads.contains(&0) {
        bail!("-t: thread counts must be at least 1");
    }
    if a.parallel.contains(&0) {
        bail!("--parallel: sequence counts must be at least 1");
    }
    let src =
        ModelSource::open(&a.model).with_context(|| format!("opening {}", a.model.display()))?;
    let (model, tok) = super::load_model(&src, &a.model, &a.engine)?;
    let bos = tok.special_ids().bos.unwrap_or(0);
    let (size, params, ftype) = match &src {
        ModelSource::Gguf(f) => {
            let size: u64 = f.tensors().iter().map(|t| t.size).sum();
            let params: u64 = f.tensors().iter().map(|t| t.n_elements()).sum();
            let ftype = match f.get("general.file_type") {
                Some(autoround_formats::gguf::GgufValue::U32(v)) => Mixture::ALL
                    .iter()
                    .find(|m| m.ftype() == *v)
                    .map_or(format!("ftype {v}"), |m| m.llama_name()),
                _ => "?".into(),
            };
            (size, params, ftype)
        }
        ModelSource::Hf { tensors, .. } => {
            let size: u64 = tensors
                .names()
                .iter()
                .filter_map(|n| tensors.tensor(n).ok())
                .map(|t| t.data.len() as u64)
                .sum();
            // the matrices' weights plus the norms
            let c = &model.cfg;
            let params: u64 = model
                .matrices()
                .map(|w| (w.rows * w.cols) as u64)
                .sum::<u64>()
                + ((2 * c.n_layer + 1) * c.n_embd) as u64;
            // the storage of most of the weights: "INT4 g128", "F16", ...
            let mut kinds: Vec<(String, u64)> = Vec::new();
            for w in model.matrices() {
                let k = w.type_name();
                match kinds.iter_mut().find(|(n, _)| *n == k) {
                    Some(e) => e.1 += (w.rows * w.cols) as u64,
                    None => kinds.push((k, (w.rows * w.cols) as u64)),
                }
            }
            let ftype = kinds
                .into_iter()
                .max_by_key(|k| k.1)
                .map_or("safetensors".into(), |k| k.0.replace(' ', "-"));
            (size, params, ftype)
        }
    };
    let desc = format!(
        "{} {} {}",
        model.cfg.arch.gguf_name(),
        params_str(params).replace(' ', "").replace(".00", ""),
        ftype
    );
    let mut tests = Vec::new();
    for &t in &threads {
        for &p in &a.n_prompt {
            if p > 0 {
                tests.push((format!("pp{p}"), p, 0, 1, t));
            }
        }
        for &n in &a.n_gen {
            for &pl in &a.parallel {
                if n > 0 {
                    let name = match pl {
                        1 => format!("tg{n}"),
                        _ => format!("tg{n}x{pl}"),
                    };
                    tests.push((name, 0, n, pl, t));
                }
            }
        }
    }
    if tests.is_empty() {
        bail!("nothing to run: every -p and -n is 0");
    }
    if !json {
        println!("| model                          |       size |     params | backend    | threads |            test |                  t/s |");
        println!("| ------------------------------ | ---------: | ---------: | ---------- | ------: | --------------: | -------------------: |");
    }
    let mut ids = Ids(0x9E37_79B9_7F4A_7C15);
    for (name, p, n, pl, t) in tests {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .context("starting the worker threads")?;
        let once = |ids: &mut Ids| match pl {
            1 => run_once(&model, bos, p, n, ids),
            _ => run_parallel(&model, bos, n, pl, ids),
        };
        let secs = pool.install(|| -> Result<Vec<f64>> {
            if !a.no_warmup {
                once(&mut ids)?;
            }
            (0..a.repetitions).map(|_| once(&mut ids)).collect()
        })?;
        let row = Row {
            test: name,
            n_prompt: p,
            n_gen: n,
            parallel: pl,
            threads: t,
            secs,
        };
        let rates = row.rates();
        let (m, sd) = mean_sd(&rates);
        if json {
            let ns: Vec<u64> = row.secs.iter().map(|s| (s * 1e9) as u64).collect();
            let (avg_ns, sd_ns) = mean_sd(&row.secs);
            println!(
                "{}",
                serde_json::json!({
                    "model_filename": a.model.display().to_string(),
                    "model_type": desc,
                    "model_size": size,
                    "model_n_params": params,
                    "n_threads": row.threads,
                    "n_prompt": row.n_prompt,
                    "n_gen": row.n_gen,
                    "n_parallel": row.parallel,
                    "test": row.test,
                    "avg_ns": (avg_ns * 1e9) as u64,
                    "stddev_ns": (sd_ns * 1e9) as u64,
                    "avg_ts": m,
                    "stddev_ts": sd,
                    "samples_ns": ns,
                    "samples_ts": rates,
                    "engine": "autoround-cpu",
                })
            );
        } else {
            println!(
                "| {:<30} | {:>10} | {:>10} | {:<10} | {:>7} | {:>15} | {:>20} |",
                desc,
                format!("{:.2} MiB", size as f64 / (1u64 << 20) as f64),
                params_str(params),
                "CPU",
                row.threads,
                row.test,
                format!("{m:.2} ± {sd:.2}")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_standard_deviation() {
        let (m, sd) = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, 5.0);
        assert!((sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12, "{sd}");
        assert_eq!(mean_sd(&[3.0]), (3.0, 0.0));
    }
}
