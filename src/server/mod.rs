//! The OpenAI-compatible HTTP server (`autoround-cpu serve`): `/v1/chat/completions`,
//! `/v1/completions` (plain and streamed as server-sent events), `/v1/models`, `/health`.
//!
//! One thread runs the [`Engine`]: every step it takes the requests that arrived, runs their
//! prompts and one batched decode pass over all active sequences (continuous batching). HTTP
//! worker threads parse and check requests, render chat templates, tokenize, hand the prompt
//! to the engine and turn its events into the response. A streaming client that disconnects
//! makes the next write fail; its worker then drops the event channel, and the engine cancels
//! the sequence at its next token. Requests past the queue's bound get 429; bad requests get
//! OpenAI-style JSON errors with a 4xx status; nothing a client sends stops the others.

pub mod openai;

use crate::engine::chat_template::ChatTemplate;
use crate::engine::{Engine, EngineOptions, Event, GenerateParams, Prompt, SamplingParams};
use crate::model::llama::Model;
use autoround_formats::tokenizer::Tokenizer;
use openai::{ApiError, Common};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

/// How the server listens and what it accepts.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    /// Requests to `/v1/*` must carry `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// The id `/v1/models` lists and responses name.
    pub model_name: String,
    /// Requests waiting beyond the engine's batch; more get 429.
    pub max_queue: usize,
    /// Largest request body in bytes; larger ones get 413.
    pub max_body: usize,
    /// HTTP worker threads (each streaming response holds one).
    pub http_threads: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            model_name: "model".into(),
            max_queue: 64,
            max_body: 1 << 20,
            http_threads: 96,
        }
    }
}

/// A request handed to the engine thread.
struct Job {
    prompt: Vec<u32>,
    params: GenerateParams,
    events: mpsc::Sender<Event>,
}

/// What the HTTP workers share.
struct State<'s> {
    tok: &'s Tokenizer,
    template: &'s ChatTemplate,
    opts: &'s ServeOptions,
    n_ctx: usize,
    vocab: usize,
    /// Requests admitted and not yet answered.
    inflight: AtomicUsize,
    limit: usize,
    next_id: AtomicU64,
    jobs: mpsc::Sender<Job>,
}

/// Serves until the listener fails. `on_ready` gets the bound address (port 0 picks a free one)
/// once requests are accepted.
pub fn serve(
    model: &Model<'_>,
    tok: &Tokenizer,
    template: &ChatTemplate,
    engine_opts: EngineOptions,
    opts: &ServeOptions,
    on_ready: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    let server = tiny_http::Server::http((opts.host.as_str(), opts.port))
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", opts.host, opts.port))?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow::anyhow!("the listener has no IP address"))?;
    let (jobs, rx) = mpsc::channel::<Job>();
    let state = State {
        tok,
        template,
        opts,
        n_ctx: engine_opts.n_ctx,
        vocab: model.tok_embd.rows,
        inflight: AtomicUsize::new(0),
        limit: engine_opts.max_batch + opts.max_queue,
        next_id: AtomicU64::new(1),
        jobs,
    };
    on_ready(addr);
    std::thread::scope(|s| {
        s.spawn(move || engine_loop(model, tok, engine_opts, rx));
        for _ in 0..opts.http_threads.max(1) {
            s.spawn(|| {
                while let Ok(req) = server.recv() {
                    handle(&state, req);
                }
            });
        }
    });
    Ok(())
}

/// The engine thread: admit what arrived, step, repeat; sleep on the channel when idle.
fn engine_loop(model: &Model<'_>, tok: &Tokenizer, opts: EngineOptions, rx: mpsc::Receiver<Job>) {
    let mut engine = Engine::new(model, tok, opts);
    loop {
        let first = if engine.is_idle() {
            match rx.recv() {
                Ok(j) => Some(j),
                Err(_) => return,
            }
        } else {
            None
        };
        for job in first.into_iter().chain(rx.try_iter()) {
            let events = job.events.clone();
            if let Err(e) = engine.submit(&Prompt::Tokens(job.prompt), job.params, Box::new(events))
            {
                let _ = job.events.send(Event::Error(e.to_string()));
            }
        }
        // errors reach the sequences' sinks
        let _ = engine.step();
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn respond_json(req: tiny_http::Request, status: u16, body: &Value) {
    let data = serde_json::to_vec(body).unwrap_or_default();
    let resp = tiny_http::Response::from_data(data)
        .with_status_code(status)
        .with_header(header("Content-Type", "application/json"));
    // a client that went away cannot be told anything
    let _ = req.respond(resp);
}

fn respond_error(req: tiny_http::Request, e: &ApiError) {
    respond_json(req, e.status, &e.body());
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn handle(st: &State, mut req: tiny_http::Request) {
    use tiny_http::Method;
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let method = req.method().clone();
    if path.starts_with("/v1/") {
        if let Some(key) = &st.opts.api_key {
            let ok = req.headers().iter().any(|h| {
                h.field.equiv("Authorization")
                    && h.value.as_str().strip_prefix("Bearer ").map(str::trim) == Some(key)
            });
            if !ok {
                return respond_error(
                    req,
                    &ApiError::status(
                        401,
                        "invalid_request_error",
                        "missing or wrong API key: send Authorization: Bearer <key>",
                    ),
                );
            }
        }
    }
    let kind = match (&method, path.as_str()) {
        (Method::Get, "/health") => {
            return respond_json(req, 200, &json!({"status": "ok"}));
        }
        (Method::Get, "/v1/models") => {
            let body = json!({
                "object": "list",
                "data": [{
                    "id": st.opts.model_name,
                    "object": "model",
                    "created": now(),
                    "owned_by": "autoround-cpu",
                }],
            });
            return respond_json(req, 200, &body);
        }
        (Method::Post, "/v1/chat/completions") => Kind::Chat,
        (Method::Post, "/v1/completions") => Kind::Text,
        (_, "/health" | "/v1/models" | "/v1/chat/completions" | "/v1/completions") => {
            let e = ApiError::status(
                405,
                "invalid_request_error",
                format!("{method} is not allowed on {path}"),
            );
            return respond_error(req, &e);
        }
        _ => {
            let e = ApiError::status(404, "invalid_request_error", format!("no route {path}"));
            return respond_error(req, &e);
        }
    };
    let body = match read_body(&mut req, st.opts.max_body) {
        Ok(b) => b,
        Err(e) => return respond_error(req, &e),
    };
    let prepared = match prepare(st, kind, &body) {
        Ok(p) => p,
        Err(e) => return respond_error(req, &e),
    };
    // the bound on requests admitted (running or queued)
    if st.inflight.fetch_add(1, Ordering::SeqCst) >= st.limit {
        st.inflight.fetch_sub(1, Ordering::SeqCst);
        let e = ApiError::status(
            429,
            "rate_limit_error",
            format!(
                "the server is busy ({} requests in flight); retry later",
                st.limit
            ),
        );
        return respond_error(req, &e);
    }
    let (tx, rx) = mpsc::channel();
    let prompt_tokens = prepared.prompt.len();
    let job = Job {
        prompt: prepared.prompt,
        params: prepared.params,
        events: tx,
    };
    if st.jobs.send(job).is_err() {
        st.inflight.fetch_sub(1, Ordering::SeqCst);
        let e = ApiError::status(500, "server_error", "the engine has stopped");
        return respond_error(req, &e);
    }
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    let reply = Reply {
        kind,
        id: format!("{}-{id}", kind.id_prefix()),
        created: now(),
        model: &st.opts.model_name,
        prompt_tokens,
    };
    if prepared.stream {
        reply.stream(req, rx, prepared.include_usage);
    } else {
        reply.whole(req, rx);
    }
    st.inflight.fetch_sub(1, Ordering::SeqCst);
}

fn read_body(req: &mut tiny_http::Request, max: usize) -> Result<Vec<u8>, ApiError> {
    let too_big = || {
        ApiError::status(
            413,
            "invalid_request_error",
            format!("the request body is larger than {max} bytes"),
        )
    };
    if req.body_length().is_some_and(|n| n > max) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    req.as_reader()
        .take(max as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::invalid(format!("reading the request body: {e}")))?;
    if body.len() > max {
        return Err(too_big());
    }
    Ok(body)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

impl Kind {
    fn id_prefix(self) -> &'static str {
        match self {
            Kind::Chat => "chatcmpl",
            Kind::Text => "cmpl",
        }
    }
}

/// A checked request, ready for the engine.
struct Prepared {
    prompt: Vec<u32>,
    params: GenerateParams,
    stream: bool,
    include_usage: bool,
}

fn prepare(st: &State, kind: Kind, body: &[u8]) -> Result<Prepared, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::invalid("the body must be a JSON object"));
    }
    let field_err = |e: serde_json::Error| ApiError::invalid(format!("bad request field: {e}"));
    let (text, common) = match kind {
        Kind::Chat => {
            let r: openai::ChatRequest = serde_json::from_value(v).map_err(field_err)?;
            let messages = r.messages()?;
            let text = st
                .template
                .render_prompt(&messages, st.tok.add_bos(), st.tok.add_eos())
                .map_err(|e| {
                    ApiError::param("messages", format!("the chat template failed: {e}"))
                })?;
            (openai::PromptIn::Text(text), r.common)
        }
        Kind::Text => {
            let r: openai::CompletionRequest = serde_json::from_value(v).map_err(field_err)?;
            (r.prompt()?, r.common)
        }
    };
    openai::check_common(&common)?;
    let prompt = match text {
        openai::PromptIn::Text(t) => st
            .tok
            .encode(&t, true, true)
            .map_err(|e| ApiError::invalid(format!("tokenizing the prompt: {e}")))?,
        openai::PromptIn::Tokens(t) => t,
    };
    if prompt.is_empty() {
        return Err(ApiError::param("prompt", "the prompt is empty"));
    }
    if let Some(&id) = prompt.iter().find(|&&t| t as usize >= st.vocab) {
        return Err(ApiError::param(
            "prompt",
            format!("token id {id} is outside the vocabulary of {}", st.vocab),
        ));
    }
    if prompt.len() >= st.n_ctx {
        return Err(ApiError::param(
            "messages",
            format!(
                "the prompt is {} tokens; this server's context is {} tokens",
                prompt.len(),
                st.n_ctx
            ),
        ));
    }
    let room = st.n_ctx - prompt.len();
    let max_tokens = match common.max_tokens() {
        Some(m) if m as usize > room => {
            return Err(ApiError::param(
                "max_tokens",
                format!(
                    "max_tokens {m} plus the prompt's {} tokens exceed this server's context of {} tokens",
                    prompt.len(),
                    st.n_ctx
                ),
            ))
        }
        Some(m) => m as usize,
        None => room,
    };
    Ok(Prepared {
        params: params(&common, max_tokens),
        prompt,
        stream: common.stream.unwrap_or(false),
        include_usage: common
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage),
    })
}

/// The engine's parameters: llama-server's sampling defaults where the request is silent.
fn params(c: &Common, max_tokens: usize) -> GenerateParams {
    let d = SamplingParams::default();
    let seed = c.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_nanos() as u64)
    });
    GenerateParams {
        sampling: SamplingParams {
            temperature: c.temperature.unwrap_or(d.temperature),
            top_p: c.top_p.unwrap_or(d.top_p),
            top_k: c.top_k.map_or(d.top_k, |k| k as usize),
            min_p: c.min_p.unwrap_or(d.min_p),
            repeat_penalty: c.repeat_penalty.unwrap_or(d.repeat_penalty),
            seed,
            ..d
        },
        max_tokens,
        stop: c.stop_strings(),
        ignore_eos: c.ignore_eos.unwrap_or(false),
    }
}

/// How one request is answered.
struct Reply<'r> {
    kind: Kind,
    id: String,
    created: u64,
    model: &'r str,
    prompt_tokens: usize,
}

impl Reply<'_> {
    /// One streaming chunk with `text` (and a finish reason at the end).
    fn chunk(&self, text: Option<&str>, finish: Option<&str>, first: bool) -> Value {
        match self.kind {
            Kind::Chat => {
                let delta = match (first, text) {
                    (true, _) => json!({"role": "assistant", "content": ""}),
                    (false, Some(t)) => json!({"content": t}),
                    (false, None) => json!({}),
                };
                json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
                })
            }
            Kind::Text => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish}],
            }),
        }
    }

    /// Collects the whole answer, then responds once.
    fn whole(&self, req: tiny_http::Request, rx: mpsc::Receiver<Event>) {
        let mut text = String::new();
        for ev in rx {
            match ev {
                Event::Token { text: t, .. } | Event::Text(t) => text.push_str(&t),
                Event::Done(f) => {
                    let choice = match self.kind {
                        Kind::Chat => json!({
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": null,
                            "finish_reason": f.reason.as_str(),
                        }),
                        Kind::Text => json!({
                            "index": 0, "text": text, "logprobs": null,
                            "finish_reason": f.reason.as_str(),
                        }),
                    };
                    let object = match self.kind {
                        Kind::Chat => "chat.completion",
                        Kind::Text => "text_completion",
                    };
                    let body = json!({
                        "id": self.id, "object": object, "created": self.created,
                        "model": self.model, "choices": [choice],
                        "usage": openai::usage(self.prompt_tokens, f.completion_tokens),
                    });
                    return respond_json(req, 200, &body);
                }
                Event::Error(e) => {
                    let e =
                        ApiError::status(500, "server_error", format!("generation failed: {e}"));
                    return respond_error(req, &e);
                }
            }
        }
        let e = ApiError::status(500, "server_error", "the engine dropped the request");
        respond_error(req, &e);
    }

    /// Server-sent events in OpenAI's chunk format, written as HTTP/1.1 chunks so each one
    /// leaves at once; ends with `data: [DONE]`. Returns when done or when the client is gone
    /// (dropping `rx`, which cancels the sequence).
    fn stream(&self, req: tiny_http::Request, rx: mpsc::Receiver<Event>, include_usage: bool) {
        let mut w = req.into_writer();
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
        let send = |w: &mut dyn Write, data: &str| -> std::io::Result<()> {
            let event = format!("data: {data}\n\n");
            write!(w, "{:x}\r\n{event}\r\n", event.len())?;
            w.flush()
        };
        let r = (|| -> std::io::Result<()> {
            w.write_all(head.as_bytes())?;
            if self.kind == Kind::Chat {
                send(&mut *w, &self.chunk(None, None, true).to_string())?;
            }
            for ev in &rx {
                match ev {
                    Event::Token { text, .. } | Event::Text(text) => {
                        if !text.is_empty() {
                            send(&mut *w, &self.chunk(Some(&text), None, false).to_string())?;
                        }
                    }
                    Event::Done(f) => {
                        let last = self.chunk(None, Some(f.reason.as_str()), false);
                        send(&mut *w, &last.to_string())?;
                        if include_usage {
                            let u = json!({
                                "id": self.id,
                                "object": match self.kind {
                                    Kind::Chat => "chat.completion.chunk",
                                    Kind::Text => "text_completion",
                                },
                                "created": self.created, "model": self.model, "choices": [],
                                "usage": openai::usage(self.prompt_tokens, f.completion_tokens),
                            });
                            send(&mut *w, &u.to_string())?;
                        }
                        break;
                    }
                    Event::Error(e) => {
                        let e = ApiError::status(
                            500,
                            "server_error",
                            format!("generation failed: {e}"),
                        );
                        send(&mut *w, &e.body().to_string())?;
                        break;
                    }
                }
            }
            send(&mut *w, "[DONE]")?;
            w.write_all(b"0\r\n\r\n")?;
            w.flush()
        })();
        // a write error is a client that went away: dropping `rx` cancels its sequence
        drop(r);
    }
}
