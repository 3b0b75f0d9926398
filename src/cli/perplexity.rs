//! `autoround-cpu perplexity`: llama-perplexity's method and final line format.

use super::args::PerplexityArgs;
use crate::engine::{perplexity as ppl, PerplexityOptions};
use crate::model::ModelSource;
use anyhow::Context;
use std::io::Write;
use std::time::Instant;

pub fn perplexity(a: PerplexityArgs) -> anyhow::Result<()> {
    let threads = super::init_threads(a.threads)?;
    if a.ctx_size < 8 {
        anyhow::bail!("--ctx-size {} is too small (at least 8)", a.ctx_size);
    }
    let text = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let text = String::from_utf8(text)
        .with_context(|| format!("{} is not UTF-8 text", a.file.display()))?;
    let t0 = Instant::now();
    let src =
        ModelSource::open(&a.model).with_context(|| format!("opening {}", a.model.display()))?;
    let (model, tok) = super::load_model(&src, &a.model, &a.engine)?;
    if a.ctx_size > model.cfg.n_ctx_train {
        eprintln!(
            "warning: --ctx-size {} exceeds the model's training context {}",
            a.ctx_size, model.cfg.n_ctx_train
        );
    }
    eprintln!(
        "loaded {} in {:.2} s, {} threads",
        a.model.display(),
        t0.elapsed().as_secs_f64(),
        threads
    );
    let tokens = tok.encode(&text, true, false)?;
    let bos = if tok.add_bos() { tok.bos_id() } else { None };
    let n_chunks = a.chunks.map_or(tokens.len() / a.ctx_size, |c| {
        c.min(tokens.len() / a.ctx_size)
    });
    eprintln!(
        "perplexity: {} tokens, calculating over {} chunks, n_ctx={}",
        tokens.len(),
        n_chunks,
        a.ctx_size
    );
    let bar = indicatif::ProgressBar::new(n_chunks as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} chunks, ETA {eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let t1 = Instant::now();
    let mut line = String::new();
    let r = ppl(
        &model,
        &tokens,
        bos,
        &PerplexityOptions {
            n_ctx: a.ctx_size,
            n_chunks: a.chunks,
        },
        |i, _, p| {
            line.push_str(&format!("[{}]{:.4},", i + 1, p));
            bar.inc(1);
            bar.set_message(format!("ppl {p:.4}"));
        },
    )?;
    bar.finish_and_clear();
    println!("{line}");
    let secs = t1.elapsed().as_secs_f64();
    eprintln!(
        "{:.2} s, {:.1} tokens/s",
        secs,
        (n_chunks * a.ctx_size) as f64 / secs
    );
    println!("Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, r.ppl_err);
    std::io::stdout().flush()?;
    Ok(())
}
