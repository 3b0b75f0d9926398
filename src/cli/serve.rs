//! `autoround-cpu serve`: the OpenAI-compatible HTTP server ([`crate::server`]).

use super::args::ServeArgs;
use crate::engine::EngineOptions;
use crate::model::ModelSource;
use crate::server::ServeOptions;
use anyhow::Context;
use std::io::Write;

pub fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let m = &a.m;
    if a.parallel == 0 {
        anyhow::bail!("--parallel must be at least 1");
    }
    let threads = super::init_threads(m.threads)?;
    let src =
        ModelSource::open(&m.model).with_context(|| format!("opening {}", m.model.display()))?;
    let (model, tok) = super::load_model(&src, &m.model, &m.engine)?;
    let tiles = crate::tensor::fast::TILE_ROWS;
    if a.parallel >= tiles
        && !m.engine.repack
        && model.numerics == crate::model::llama::Numerics::Fast
        && autoround_kernels::qgemm::available()
    {
        eprintln!(
            "note: --repack would run decode steps of {tiles}+ sequences on AMX tiles (faster; about one more byte of memory per weight)"
        );
    }
    let template = super::chat_template(&src, m.chat_template_file.as_deref(), &tok)?;
    let n_ctx = m.ctx_size.unwrap_or(model.cfg.n_ctx_train.min(4096));
    if n_ctx < 2 {
        anyhow::bail!("--ctx-size must be at least 2");
    }
    // as given for a repo id (owner/name), else the file or folder name
    let name = a.alias.clone().unwrap_or_else(|| {
        if m.model.exists() {
            m.model.file_name().map_or_else(
                || m.model.display().to_string(),
                |f| f.to_string_lossy().into_owned(),
            )
        } else {
            m.model.display().to_string()
        }
    });
    let opts = ServeOptions {
        host: a.host.clone(),
        port: a.port,
        api_key: a.api_key.clone(),
        model_name: name,
        max_queue: a.max_queue,
        max_body: a.max_body,
        http_threads: (a.parallel + a.max_queue + 8).min(256),
    };
    let engine = EngineOptions {
        n_ctx,
        max_batch: a.parallel,
    };
    crate::server::serve(&model, &tok, &template, engine, &opts, |addr| {
        eprintln!(
            "{threads} threads, context {n_ctx} per sequence, {} in parallel, queue {}{}",
            a.parallel,
            a.max_queue,
            if a.api_key.is_some() {
                ", API key required"
            } else {
                ""
            }
        );
        // on stdout for scripts (port 0 picks one)
        println!("listening on http://{addr}");
        let _ = std::io::stdout().flush();
    })
}
