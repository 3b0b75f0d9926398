//! `autoround-cpu imatrix`: llama-imatrix's method, defaults and file formats (see
//! [`crate::engine::imatrix`]).
//!
//! Differences from llama-imatrix, on purpose: an existing output file is an error unless
//! `--overwrite` is given (llama-imatrix replaces it), checked before any work; the form follows
//! the file name (`.dat`: legacy) unless `--output-format` says otherwise (llama-imatrix writes
//! GGUF unless told `--output-format dat`, whatever the name); files are written atomically.

use super::args::ImatrixArgs;
use crate::engine::imatrix::{compute_imatrix, Event, ImatrixOptions};
use crate::model::ModelSource;
use anyhow::{bail, Context};
use autoround_formats::imatrix::{Imatrix, ImatrixFormat};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The form to write: `--output-format` if given, else legacy for a `.dat` name, else GGUF.
pub fn output_form(flag: Option<&str>, path: &Path) -> ImatrixFormat {
    match flag {
        Some("dat") => ImatrixFormat::Legacy,
        Some(_) => ImatrixFormat::Gguf,
        None if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("dat")) =>
        {
            ImatrixFormat::Legacy
        }
        None => ImatrixFormat::Gguf,
    }
}

fn save(m: &Imatrix, path: &Path, form: ImatrixFormat) -> anyhow::Result<()> {
    match form {
        ImatrixFormat::Gguf => m.write_gguf(path)?,
        ImatrixFormat::Legacy => m.write_legacy(path)?,
    }
    Ok(())
}

/// `<output>.at_<n>`, llama-imatrix's name for `--save-frequency` copies.
fn at_chunk_path(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".at_{n}"));
    PathBuf::from(p)
}

/// Refuse an output we could only write after all the work has been done in vain.
fn check_output(path: &Path, overwrite: bool) -> anyhow::Result<()> {
    if path.is_dir() {
        bail!("output {} is a directory", path.display());
    }
    if path.exists() && !overwrite {
        bail!(
            "output {} exists; pass --overwrite to replace it",
            path.display()
        );
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "cannot write {}: folder {} does not exist",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

pub fn imatrix(a: ImatrixArgs) -> anyhow::Result<()> {
    let threads = super::init_threads(a.threads)?;
    if a.ctx_size == 0 {
        bail!("--ctx-size must be at least 1");
    }
    if a.chunks == Some(0) {
        bail!("--chunks must be at least 1");
    }
    let form = output_form(a.output_format.as_deref(), &a.output);
    check_output(&a.output, a.overwrite)?;
    if form == ImatrixFormat::Gguf
        && !a
            .output
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        eprintln!(
            "warning: writing the GGUF form to {}, whose name does not end in .gguf (--output-format dat writes the legacy form)",
            a.output.display()
        );
    }

    let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not UTF-8 text ({})",
            a.file.display(),
            e.utf8_error()
        )
    })?;
    // llama.cpp's -f drops one trailing newline.
    if text.ends_with('\n') {
        text.pop();
    }
    if text.is_empty() {
        bail!("{} is empty", a.file.display());
    }

    let t0 = Instant::now();
    let src =
        ModelSource::open(&a.model).with_context(|| format!("opening {}", a.model.display()))?;
    // the statistics are llama-imatrix's: its activations, from its arithmetic
    let (model, tok) = super::load_model(
        &src,
        &a.model,
        &super::args::EngineArgs {
            numerics: "llama-cpp".into(),
            repack: false,
        },
    )?;
    eprintln!(
        "loaded {} in {:.2} s, {} threads",
        a.model.display(),
        t0.elapsed().as_secs_f64(),
        threads
    );
    let tokens = tok
        .encode(&text, true, a.parse_special)
        .with_context(|| format!("tokenizing {}", a.file.display()))?;
    let bos = if tok.add_bos() { tok.bos_id() } else { None };

    let opts = ImatrixOptions {
        n_ctx: a.ctx_size,
        n_chunks: a.chunks,
        from_chunk: a.from_chunk,
        n_batch: a.batch_size,
        n_ubatch: a.ubatch_size,
        compute_ppl: !a.no_ppl,
        process_output: a.process_output,
        datasets: vec![a.file.to_string_lossy().into_owned()],
        output_frequency: a.output_frequency,
        save_frequency: a.save_frequency,
    };
    let sched = crate::engine::imatrix::schedule(&opts, tokens.len())?;
    if sched.n_seq * sched.n_ctx > model.cfg.n_ctx_train {
        eprintln!(
            "warning: model was trained on only {} context tokens ({} specified)",
            model.cfg.n_ctx_train,
            sched.n_seq * sched.n_ctx
        );
    }
    eprintln!(
        "imatrix: {} tokens, computing over {} chunks, n_ctx={}, batch_size={}, n_seq={}",
        tokens.len(),
        sched.n_chunks,
        sched.n_ctx,
        sched.n_batch,
        sched.n_seq
    );

    let bar = indicatif::ProgressBar::new(sched.n_chunks as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} chunks, {elapsed_precise} elapsed, ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut line = String::new();
    let t1 = Instant::now();
    let run = compute_imatrix(&model, &tokens, bos, &opts, |ev| {
        match ev {
            Event::Chunk { done, ppl, .. } => {
                bar.set_position(done as u64);
                if let Some(p) = ppl {
                    line.push_str(&format!("[{done}]{p:.4},"));
                    bar.set_message(format!("ppl {p:.4}"));
                }
            }
            Event::Save { imatrix, at_chunk } => {
                let path = match at_chunk {
                    None => a.output.clone(),
                    Some(n) => at_chunk_path(&a.output, n),
                };
                save(imatrix, &path, form).map_err(|e| format!("{e:#}"))?;
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let secs = t1.elapsed().as_secs_f64();
    save(&run.imatrix, &a.output, form)?;

    if let Some(p) = &run.ppl {
        println!("{line}");
        match p.ppl_err {
            Some(err) => println!("Final estimate: PPL = {:.4} +/- {:.5}", p.ppl, err),
            None => println!("Unexpected negative standard deviation of log(prob)"),
        }
    }
    std::io::stdout().flush()?;
    let n_tok = sched.n_chunks * sched.n_ctx;
    eprintln!(
        "imatrix: {} entries over {} chunks of {} tokens ({} tokens) in {:.2} s, {:.1} tokens/s",
        run.imatrix.entries.len(),
        run.imatrix.chunk_count,
        sched.n_ctx,
        n_tok,
        secs,
        n_tok as f64 / secs
    );
    eprintln!("imatrix: saved {} ({} form)", a.output.display(), form);
    Ok(())
}
