//! `autoround-cpu run`: load, tokenize the prompt, generate and stream text.

use super::args::RunArgs;
use crate::engine::{Sampler, Utf8Stream};
use crate::model::llama::{KvCache, Logits};
use crate::model::ModelSource;
use anyhow::Context;
use std::io::Write;
use std::time::Instant;

/// Process the escapes llama.cpp processes in prompts: `\n`, `\t`, `\r`, `\\`, `\"`, `\'`.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('\'') => out.push('\''),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    let threads = super::init_threads(a.threads)?;
    let t0 = Instant::now();
    let src =
        ModelSource::open(&a.model).with_context(|| format!("opening {}", a.model.display()))?;
    let (model, tok) = super::load_model(&src, &a.model, &a.engine)?;
    let load_s = t0.elapsed().as_secs_f64();
    let n_ctx = a.ctx_size.unwrap_or(model.cfg.n_ctx_train.min(4096));
    let text = if a.no_escape {
        a.prompt.clone()
    } else {
        unescape(&a.prompt)
    };
    let prompt = tok.encode(&text, true, true)?;
    if prompt.is_empty() {
        anyhow::bail!("the prompt is empty after tokenization");
    }
    if prompt.len() >= n_ctx {
        anyhow::bail!(
            "the prompt is {} tokens, longer than the context of {} (raise --ctx-size)",
            prompt.len(),
            n_ctx
        );
    }
    let n_predict = a.n_predict.min(n_ctx - prompt.len());
    let mut sampler = Sampler::new(a.sampling.params());
    for &t in &prompt {
        sampler.accept(t);
    }
    let mut cache = KvCache::new(&model.cfg, n_ctx);
    let mut out = std::io::stdout().lock();
    write!(out, "{text}")?;
    out.flush()?;
    let t1 = Instant::now();
    let mut logits = model.forward(&prompt, &mut cache, Logits::Last)?;
    let prefill_s = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let mut stream = Utf8Stream::default();
    let mut ids = Vec::new();
    for i in 0..n_predict {
        if a.ignore_eos {
            // As llama.cpp: end-of-generation tokens can never be sampled.
            for (id, x) in logits.iter_mut().enumerate() {
                if tok.is_eog(id as u32) {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
        let next = sampler.sample(&logits);
        if !a.ignore_eos && tok.is_eog(next) {
            break;
        }
        ids.push(next);
        write!(out, "{}", stream.push(&tok.token_to_piece(next)))?;
        out.flush()?;
        if i + 1 < n_predict {
            model.forward_into(&[next], &mut cache, Logits::Last, None, &mut logits)?;
        }
    }
    writeln!(out, "{}", stream.push(&[]))?;
    let gen_s = t2.elapsed().as_secs_f64();
    if a.print_ids {
        eprintln!("ids: {ids:?}");
    }
    eprintln!(
        "load {:.2} s | prompt {} tokens, {:.1} t/s | generated {} tokens, {:.1} t/s | {} threads",
        load_s,
        prompt.len(),
        prompt.len() as f64 / prefill_s,
        ids.len(),
        ids.len() as f64 / gen_s.max(1e-9),
        threads
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_handles_llama_cpp_escapes() {
        assert_eq!(unescape(r#"a\nb\tc\\d\"e\q"#), "a\nb\tc\\d\"e\\q");
        assert_eq!(unescape("trailing\\"), "trailing\\");
    }
}
