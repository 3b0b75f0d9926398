//! `autoround-cpu quantize`: a Hugging Face folder or a GGUF file in, a quantized GGUF out.
//!
//! With `--iters 0` and a `gguf:` format this is llama-quantize: the same types per tensor, the
//! same bytes (see [`crate::quantize::gguf`]).

use super::args::QuantizeArgs;
use crate::quantize::gguf::{quantize_to_gguf, ImatrixInput, Progress, QuantizeOptions};
use crate::quantize::mixture::{Mixture, PlanOptions};
use crate::quantize::source::{GgufSource, WeightSource};
use anyhow::{bail, Context};
use autoround_formats::gguf::GgufFile;
use autoround_formats::imatrix::Imatrix;
use autoround_kernels::GgmlType;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub fn quantize(a: QuantizeArgs) -> anyhow::Result<()> {
    // Tuning, or a format only the tuner writes: the tuner. Round-to-nearest GGUF: llama-quantize.
    let only_gguf = a.format.split(',').all(|f| f.trim().starts_with("gguf"));
    if !only_gguf || a.iters.unwrap_or(200) != 0 {
        return super::tune::tune(a);
    }
    let threads = super::init_threads(a.threads)?;
    let mixture = parse_format(&a.format)?;
    let type_opt = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<GgmlType>> {
        v.as_deref()
            .map(|s| {
                GgmlType::from_name(&s.to_ascii_uppercase()).with_context(|| {
                    format!("{flag} {s}: not a ggml type name (e.g. q8_0, q6_k, f16)")
                })
            })
            .transpose()
    };
    let plan = PlanOptions {
        has_imatrix: a.imatrix.is_some(),
        pure: a.pure,
        leave_output_tensor: a.leave_output_tensor,
        output_tensor_type: type_opt("--output-tensor-type", &a.output_tensor_type)?,
        token_embedding_type: type_opt("--token-embedding-type", &a.token_embedding_type)?,
    };

    let source = open_source(&a.model)?;
    if let Some(dir) = &a.output_dir {
        // As auto-round does: --output_dir is created when missing.
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the output folder {}", dir.display()))?;
    }
    let out = output_path(&a, &*source, mixture)?;
    if same_file(&out, &a.model) {
        bail!(
            "the output {} is the input model; choose another --output/--output_dir",
            out.display()
        );
    }
    if out.exists() && !a.overwrite {
        bail!("{} exists; pass --overwrite to replace it", out.display());
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!("the output folder {} does not exist", parent.display());
        }
    }
    let imatrix = match &a.imatrix {
        None => None,
        Some(p) => Some(ImatrixInput {
            imatrix: Imatrix::read(p)?,
            file_name: a
                .imatrix_name
                .clone()
                .unwrap_or_else(|| p.to_string_lossy().into_owned()),
        }),
    };

    // Ctrl-C: finish the current slab, remove the temporary file, exit with an error.
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let c = cancel.clone();
        let _ = ctrlc::set_handler(move || {
            if c.swap(true, Ordering::SeqCst) {
                // A second Ctrl-C: leave now (the temporary file may stay behind).
                std::process::exit(130);
            }
        });
    }
    let opts = QuantizeOptions {
        mixture,
        plan,
        imatrix: imatrix.as_ref(),
        cancel: Some(&cancel),
        packed: None,
    };
    eprintln!(
        "quantizing {} to {} ({}), {} thread(s) -> {}",
        source.describe(),
        mixture.llama_name(),
        if imatrix.is_some() {
            "with imatrix"
        } else {
            "no imatrix"
        },
        threads,
        out.display()
    );
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {percent:>3}% {elapsed_precise} ETA {eta_precise} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut n_notes = 0usize;
    let summary = quantize_to_gguf(&*source, &out, &opts, &mut |p| match p {
        Progress::Start { total_elements } => bar.set_length(total_elements),
        Progress::Tensor { name, from, to, .. } => {
            bar.set_message(format!("{name} {} -> {}", from.name(), to.name()))
        }
        Progress::Advance(n) => bar.inc(n),
        Progress::Note(s) => {
            n_notes += 1;
            bar.suspend(|| eprintln!("note: {s}"));
        }
    });
    bar.finish_and_clear();
    let summary = match summary {
        Err(e) if cancel.load(Ordering::SeqCst) => {
            return Err(e.context("interrupted by Ctrl-C; nothing was written"))
        }
        other => other?,
    };
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "model size  = {:8.2} MiB ({:.2} BPW)\nquant size  = {:8.2} MiB ({:.2} BPW)",
        mib(summary.bytes_in),
        summary.bpw_in(),
        mib(summary.bytes_out),
        summary.bpw_out()
    );
    if summary.n_fallback > 0 {
        eprintln!(
            "{} of {} tensor(s) required fallback quantization (rows not whole blocks of the chosen type)",
            summary.n_fallback, summary.n_tensors
        );
    }
    eprintln!(
        "wrote {} ({:.2} MiB, {} tensors, {} converted) in {:.2} s, {:.1} MB/s of input weights",
        out.display(),
        mib(summary.file_size),
        summary.n_tensors,
        summary.n_quantized,
        summary.seconds,
        summary.bytes_in as f64 / 1e6 / summary.seconds.max(1e-9)
    );
    Ok(())
}

/// `gguf:<mixture>` (round-to-nearest: one file per run).
fn parse_format(s: &str) -> anyhow::Result<Mixture> {
    let f = s.trim();
    if f.contains(',') {
        bail!("--format {f}: with --iters 0 give one gguf:<type> per run (a tuning run, --iters > 0, writes several)");
    }
    Ok(Mixture::parse(f)?)
}

fn open_source(model: &Path) -> anyhow::Result<Box<dyn WeightSource>> {
    if model.is_dir() {
        return crate::convert::open_hf_source(model)
            .with_context(|| format!("opening the Hugging Face folder {}", model.display()));
    }
    if !model.exists() {
        bail!(
            "{}: not found (expected a Hugging Face folder or a .gguf file)",
            model.display()
        );
    }
    let file = GgufFile::open(model)?;
    Ok(Box::new(GgufSource::new(file)))
}

/// `-o FILE`, or `<output_dir>/<model name>-<TYPE>.gguf` (default folder: the current one).
fn output_path(
    a: &QuantizeArgs,
    src: &dyn WeightSource,
    mixture: Mixture,
) -> anyhow::Result<PathBuf> {
    if let Some(o) = &a.output {
        return Ok(o.clone());
    }
    let dir = a.output_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let stem = if a.model.is_dir() {
        a.model
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
    } else {
        a.model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
    }
    .or_else(|| {
        src.metadata()
            .iter()
            .find(|(k, _)| k == "general.name")
            .and_then(|(_, v)| v.as_str().map(str::to_string))
    })
    .unwrap_or_else(|| "model".into());
    // "SmolLM2.F16" -> "SmolLM2": drop a type suffix the input name carries.
    let base = match stem.rsplit_once(['.', '-']) {
        Some((head, tail))
            if GgmlType::from_name(&tail.to_ascii_uppercase()).is_some()
                || Mixture::parse(tail).is_ok() =>
        {
            head.to_string()
        }
        _ => stem,
    };
    Ok(dir.join(format!("{base}-{}.gguf", mixture.llama_name())))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
