//! `autoround-cpu chat`: a terminal chat over the [`Engine`](crate::engine::Engine), with the
//! model's own chat template, streamed answers, line editing and history (rustyline), and
//! commands: `/system TEXT`, `/reset`, `/save FILE`, `/load FILE`, `/help`, `/quit`. Ctrl-C
//! stops the answer being written and keeps the chat; at the prompt it clears the line;
//! Ctrl-D leaves.

use super::args::ChatArgs;
use crate::engine::chat_template::{ChatMessage, ChatTemplate};
use crate::engine::SamplingParams;
use crate::engine::{Engine, EngineOptions, Event, FinishReason, GenerateParams, Prompt};
use crate::model::ModelSource;
use anyhow::Context;
use rustyline::error::ReadlineError;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const HELP: &str = "commands:
  /system TEXT   set the system message (and start over)
  /reset         forget the conversation (keeps the system message)
  /save FILE     write the conversation as JSON
  /load FILE     read a conversation written by /save
  /help          this list
  /quit          leave (or Ctrl-D)
Ctrl-C stops an answer being written.";

/// The conversation and what a turn needs.
struct Chat {
    system: Option<String>,
    messages: Vec<ChatMessage>,
}

impl Chat {
    fn with_system(&self) -> Vec<ChatMessage> {
        let mut all = Vec::with_capacity(self.messages.len() + 1);
        if let Some(s) = &self.system {
            all.push(ChatMessage::new("system", s.clone()));
        }
        all.extend(self.messages.iter().cloned());
        all
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(&self.with_system())?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, json + "\n")
            .and_then(|_| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing {}", path.display()))
    }

    fn load(&mut self, path: &Path) -> anyhow::Result<()> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let msgs: Vec<ChatMessage> = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a conversation (a JSON list of {{\"role\", \"content\"}})",
                path.display()
            )
        })?;
        let mut it = msgs.into_iter().peekable();
        self.system = match it.peek() {
            Some(m) if m.role == "system" => it.next().map(|m| m.content),
            _ => self.system.take(),
        };
        self.messages = it.collect();
        Ok(())
    }
}

pub fn chat(a: ChatArgs) -> anyhow::Result<()> {
    let m = &a.m;
    let threads = super::init_threads(m.threads)?;
    let src =
        ModelSource::open(&m.model).with_context(|| format!("opening {}", m.model.display()))?;
    let (model, tok) = super::load_model(&src, &m.model, &m.engine)?;
    let template = super::chat_template(&src, m.chat_template_file.as_deref(), &tok)?;
    let n_ctx = m.ctx_size.unwrap_or(model.cfg.n_ctx_train.min(4096));
    let mut engine = Engine::new(
        &model,
        &tok,
        EngineOptions {
            n_ctx,
            max_batch: 1,
        },
    );
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let mut rl = rustyline::DefaultEditor::new().context("starting the line editor")?;
    let mut chat = Chat {
        system: a.system.clone(),
        messages: Vec::new(),
    };
    let sampling = a.sampling.params();
    eprintln!(
        "chat with {} ({threads} threads, context {n_ctx}); /help for commands, Ctrl-D to leave",
        m.model.display()
    );
    let mut turn = 0u64;
    loop {
        let line = match rl.readline("> ") {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading the terminal"),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = rl.add_history_entry(line);
        if let Some(cmd) = line.strip_prefix('/') {
            let (name, arg) = cmd.split_once(' ').unwrap_or((cmd, ""));
            let arg = arg.trim();
            match name {
                "quit" | "exit" => break,
                "help" => println!("{HELP}"),
                "reset" => {
                    chat.messages.clear();
                    println!("(conversation cleared)");
                }
                "system" => {
                    chat.system = (!arg.is_empty()).then(|| arg.to_string());
                    chat.messages.clear();
                    println!("(system message set; conversation cleared)");
                }
                "save" | "load" if arg.is_empty() => println!("usage: /{name} FILE"),
                "save" => match chat.save(Path::new(arg)) {
                    Ok(()) => println!("(saved {} messages to {arg})", chat.with_system().len()),
                    Err(e) => println!("error: {e:#}"),
                },
                "load" => match chat.load(Path::new(arg)) {
                    Ok(()) => println!("(loaded {} messages from {arg})", chat.messages.len()),
                    Err(e) => println!("error: {e:#}"),
                },
                _ => println!("unknown command /{name}; /help lists them"),
            }
            continue;
        }
        chat.messages.push(ChatMessage::new("user", line));
        turn += 1;
        let params = GenerateParams {
            sampling: SamplingParams {
                seed: sampling.seed.wrapping_add(turn),
                ..sampling.clone()
            },
            max_tokens: a.n_predict,
            ..Default::default()
        };
        match answer(&mut engine, &template, &chat.with_system(), params, &stop) {
            Ok(text) => chat.messages.push(ChatMessage::new("assistant", text)),
            Err(e) => {
                // the question stays out of the conversation: it could not be answered
                chat.messages.pop();
                println!("error: {e:#}");
            }
        }
    }
    Ok(())
}

/// Streams the assistant's answer to the conversation to stdout and returns it (what was
/// written, if Ctrl-C stopped it).
fn answer(
    engine: &mut Engine<'_>,
    template: &ChatTemplate,
    messages: &[ChatMessage],
    params: GenerateParams,
    stop: &AtomicBool,
) -> anyhow::Result<String> {
    let prompt = template.render_prompt(
        messages,
        engine.tokenizer().add_bos(),
        engine.tokenizer().add_eos(),
    )?;
    let (tx, rx) = std::sync::mpsc::channel();
    let id = engine
        .submit(&Prompt::Text(prompt), params, Box::new(tx))
        .context("the conversation does not fit (/reset starts over)")?;
    stop.store(false, Ordering::SeqCst);
    let mut text = String::new();
    let mut done = None;
    let mut out = std::io::stdout();
    while done.is_none() {
        if stop.swap(false, Ordering::SeqCst) {
            engine.cancel(id);
        } else if !engine.is_idle() {
            // errors arrive as an Error event
            let _ = engine.step();
        }
        for ev in rx.try_iter() {
            match ev {
                Event::Token { text: t, .. } | Event::Text(t) => {
                    let _ = write!(out, "{t}");
                    let _ = out.flush();
                    text.push_str(&t);
                }
                Event::Done(f) => done = Some(Ok(f)),
                Event::Error(e) => done = Some(Err(anyhow::anyhow!(e))),
            }
        }
        if done.is_none() && engine.is_idle() {
            anyhow::bail!("the answer never finished");
        }
    }
    println!();
    let f = done.expect("loop ends with an answer")?;
    let note = match f.reason {
        FinishReason::Cancelled => " (stopped)",
        FinishReason::Length => " (length limit)",
        FinishReason::Stop => "",
    };
    eprintln!(
        "[{} tokens, {:.1} t/s; prompt {} tokens, {:.1} t/s{note}]",
        f.completion_tokens,
        f.completion_tokens as f64 / f.gen_s.max(1e-9),
        f.prompt_tokens,
        f.prompt_tokens as f64 / f.prompt_s.max(1e-9),
    );
    Ok(text)
}
