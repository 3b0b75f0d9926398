//! The `autoround-cpu` command line: argument definitions live in [`args`], one module per command.

pub mod args;
mod bench;
mod chat;
mod convert;
mod doctor;
mod imatrix;
mod inspect;
mod perplexity;
mod quantize;
mod run;
mod serve;
mod tune;

use clap::Parser;
use std::process::ExitCode;

/// Entry point of the binary: parse arguments, run the command, print errors with their causes.
pub fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let result = match cli.command {
        args::Command::Run(a) => run::run(a),
        args::Command::Inspect(a) => inspect::inspect(a),
        args::Command::Perplexity(a) => perplexity::perplexity(a),
        args::Command::Doctor(a) => doctor::doctor(a),
        args::Command::Quantize(a) => quantize::quantize(a),
        args::Command::Convert(a) => convert::convert(a),
        args::Command::Imatrix(a) => imatrix::imatrix(a),
        args::Command::Bench(a) => bench::bench(a),
        args::Command::Chat(a) => chat::chat(a),
        args::Command::Serve(a) => serve::serve(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The model and tokenizer of an opened source, computing as `engine` says (`--numerics`,
/// `--repack`); errors name the file (`path`, as the user gave it).
pub(crate) fn load_model<'a>(
    src: &'a crate::model::ModelSource,
    path: &std::path::Path,
    engine: &args::EngineArgs,
) -> anyhow::Result<(
    crate::model::llama::Model<'a>,
    autoround_formats::tokenizer::Tokenizer,
)> {
    use crate::model::llama::Numerics;
    use anyhow::Context;
    let mut model = src
        .load()
        .with_context(|| format!("loading {}", path.display()))?;
    model.numerics = match engine.numerics.as_str() {
        "llama-cpp" => Numerics::LlamaCpp,
        _ => Numerics::Fast,
    };
    for line in model.load_summary() {
        eprintln!("{line}");
    }
    if engine.repack {
        if model.numerics != Numerics::Fast {
            eprintln!(
                "--repack: ignored with --numerics llama-cpp (its products read the file's bytes)"
            );
        } else if !autoround_kernels::qgemm::available() {
            eprintln!(
                "--repack: ignored: no AMX-INT8 tiles here (the CPU lacks them, the OS refused the tile state, or AUTOROUND_ISA pins a lower tier)"
            );
        } else {
            let t0 = std::time::Instant::now();
            let (n, bytes) = model.unpack_tiles();
            eprintln!(
                "unpacked {n} matrices into AMX int8 tiles at load ({:.1} MiB, {:.1} s): batches of {}+ tokens use them",
                bytes as f64 / (1 << 20) as f64,
                t0.elapsed().as_secs_f64(),
                crate::tensor::fast::TILE_ROWS
            );
        }
    }
    let tok = src
        .tokenizer()
        .with_context(|| format!("loading the tokenizer of {}", path.display()))?;
    Ok((model, tok))
}

/// The chat template: `file` if given, else the model's own, else ChatML (with a note).
pub(crate) fn chat_template(
    src: &crate::model::ModelSource,
    file: Option<&std::path::Path>,
    tok: &autoround_formats::tokenizer::Tokenizer,
) -> anyhow::Result<crate::engine::chat_template::ChatTemplate> {
    use crate::engine::chat_template::ChatTemplate;
    use anyhow::Context;
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading the chat template {}", f.display()))?;
        let piece = |id: Option<u32>| {
            id.map(|i| String::from_utf8_lossy(tok.piece(i)).into_owned())
                .unwrap_or_default()
        };
        return ChatTemplate::new(&text, &piece(tok.bos_id()), &piece(tok.eos_id()))
            .with_context(|| format!("in the chat template {}", f.display()));
    }
    match ChatTemplate::from_model(src).context("reading the model's chat template")? {
        Some(t) => Ok(t),
        None => {
            eprintln!("note: the model has no chat template; using ChatML");
            Ok(ChatTemplate::chatml())
        }
    }
}

/// Size the global rayon pool: `threads` if given, else all available cores.
pub(crate) fn init_threads(threads: Option<usize>) -> anyhow::Result<usize> {
    let n = match threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    // A second initialisation (tests calling twice) keeps the first pool; that is fine.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    Ok(n)
}
