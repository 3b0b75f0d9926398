//! Text generation for many sequences at once: the [`Engine`] that the chat REPL, the
//! OpenAI-compatible server and library users share.
//!
//! Each step runs the prompts of newly admitted sequences (one forward pass each, as `run`
//! does), then one batched pass ([`Model::forward_batch`]) over the next token of every other
//! active sequence: continuous batching, so the weights are read once per step for all of them.
//! A sequence's tokens are the same as `run`'s with the same prompt and sampling (the per-row
//! decode kernels give a row the same result in a batch as alone), until the batch grows to
//! [`crate::tensor::fast::PREFILL_ROWS`] rows, where the products change kernels.
//!
//! Events go to a [`Sink`] per sequence; a sink that reports its receiver gone (a client that
//! disconnected) cancels the sequence at the next step.

use super::{Sampler, SamplingParams};
use crate::model::llama::{ForwardError, KvCache, Logits, Model, Segment};
use autoround_formats::tokenizer::{Tokenizer, TokenizerError};
use std::collections::VecDeque;
use std::time::Instant;

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Context of each sequence, in tokens (prompt and generated).
    pub n_ctx: usize,
    /// Sequences decoded together; more wait until one finishes.
    pub max_batch: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            n_ctx: 4096,
            max_batch: 16,
        }
    }
}

/// What to generate for one prompt.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub sampling: SamplingParams,
    /// At most this many new tokens (fewer if the context ends first).
    pub max_tokens: usize,
    /// Generation stops before any of these strings; the string itself is not returned.
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens (which then can never be sampled).
    pub ignore_eos: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            sampling: SamplingParams::default(),
            max_tokens: 256,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// A prompt: text (tokenized with the model's BOS and special tokens parsed, as `run` does) or
/// token ids.
#[derive(Debug, Clone)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

impl From<&str> for Prompt {
    fn from(s: &str) -> Prompt {
        Prompt::Text(s.to_string())
    }
}

impl From<String> for Prompt {
    fn from(s: String) -> Prompt {
        Prompt::Text(s)
    }
}

impl From<Vec<u32>> for Prompt {
    fn from(t: Vec<u32>) -> Prompt {
        Prompt::Tokens(t)
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the end of the context.
    Length,
    /// Its sink's receiver went away.
    Cancelled,
}

impl FinishReason {
    /// OpenAI's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// The end of a sequence, with its counts and times.
#[derive(Debug, Clone)]
pub struct Finished {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    /// Tokens sampled, including an end-of-generation token that ended the sequence (as
    /// OpenAI and llama-server count them).
    pub completion_tokens: usize,
    /// Seconds spent on the prompt, and from then to the end.
    pub prompt_s: f64,
    pub gen_s: f64,
}

/// What a sequence's sink receives, in order: tokens, then exactly one `Done` or `Error`.
#[derive(Debug, Clone)]
pub enum Event {
    /// A generated token and the text it completes: possibly empty while a multi-byte character
    /// or a possible stop string is still open, possibly more than its own piece when one
    /// closes.
    Token {
        id: u32,
        text: String,
    },
    /// Text held back (an open character or possible stop string) given out at the end.
    Text(String),
    Done(Finished),
    /// The forward pass failed; the sequence is dropped.
    Error(String),
}

/// Where a sequence's events go. `send` returns false when nobody listens any more, which
/// cancels the sequence.
pub trait Sink {
    fn send(&mut self, event: Event) -> bool;
}

impl Sink for std::sync::mpsc::Sender<Event> {
    fn send(&mut self, event: Event) -> bool {
        std::sync::mpsc::Sender::send(self, event).is_ok()
    }
}

impl<F: FnMut(Event) -> bool> Sink for F {
    fn send(&mut self, event: Event) -> bool {
        self(event)
    }
}

/// A request the engine refused.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error(
        "the prompt is {len} tokens; the context is {n_ctx}, which leaves no room to generate"
    )]
    PromptTooLong { len: usize, n_ctx: usize },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    BadToken { id: u32, vocab: usize },
    #[error("tokenizing the prompt: {0}")]
    Tokenize(#[from] TokenizerError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error("generation failed: {0}")]
    Failed(String),
}

/// One prompt's result from [`Engine::generate`].
#[derive(Debug, Clone)]
pub struct Output {
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish: Finished,
}

/// Text of the generated tokens so far, held back while it ends in an incomplete UTF-8
/// character or in what may be the start of a stop string.
#[derive(Default)]
struct TextState {
    utf8: Utf8Stream,
    /// Decoded text not yet given out.
    held: String,
}

impl TextState {
    /// Adds a token's bytes; returns the text that can be given out, and whether a stop string
    /// was reached (the text then ends before it).
    fn push(&mut self, piece: &[u8], stop: &[String]) -> (String, bool) {
        self.held.push_str(&self.utf8.push(piece));
        if let Some(at) = stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        // hold the longest tail that is a proper prefix of a stop string
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                stop.iter()
                    .any(|s| s.len() > tail.len() && s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let out = self.held[..keep].to_string();
        self.held.drain(..keep);
        (out, false)
    }

    /// Everything held, at the end.
    fn flush(&mut self) -> String {
        let mut out = std::mem::take(&mut self.held);
        out.push_str(&self.utf8.finish());
        out
    }
}

/// Gives out the longest valid UTF-8 prefix of accumulated token bytes, keeping a partial
/// character for the next token (`run` and the engine's text).
#[derive(Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        match std::str::from_utf8(&self.pending) {
            Ok(s) => {
                let s = s.to_string();
                self.pending.clear();
                s
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // A broken sequence (not merely an incomplete tail) is replaced, not held forever.
                let keep_from = if e.error_len().is_some() {
                    self.pending.len()
                } else {
                    valid
                };
                let s = String::from_utf8_lossy(&self.pending[..keep_from]).into_owned();
                self.pending.drain(..keep_from);
                s
            }
        }
    }

    /// What is still held (an incomplete character), replaced, at the end.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

/// One sequence in the engine.
struct Seq<'s> {
    id: usize,
    /// The prompt until it has run.
    prompt: Vec<u32>,
    prompt_tokens: usize,
    cache: KvCache,
    sampler: Sampler,
    params: GenerateParams,
    max_new: usize,
    generated: usize,
    /// The token the next step feeds.
    next: Option<u32>,
    text: TextState,
    sink: Box<dyn Sink + 's>,
    started: Instant,
    prompt_s: f64,
}

impl Seq<'_> {
    fn finished(&self, reason: FinishReason) -> Finished {
        Finished {
            reason,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.generated,
            prompt_s: self.prompt_s,
            gen_s: self.started.elapsed().as_secs_f64() - self.prompt_s,
        }
    }
}

/// Generation over one model for any number of sequences; see the module docs.
pub struct Engine<'e> {
    model: &'e Model<'e>,
    tok: &'e Tokenizer,
    opts: EngineOptions,
    active: Vec<Seq<'e>>,
    waiting: VecDeque<Seq<'e>>,
    /// Caches of finished sequences, reused.
    spare: Vec<KvCache>,
    logits: Vec<f32>,
    next_id: usize,
}

impl<'e> Engine<'e> {
    pub fn new(model: &'e Model<'e>, tok: &'e Tokenizer, opts: EngineOptions) -> Engine<'e> {
        Engine {
            model,
            tok,
            opts: EngineOptions {
                max_batch: opts.max_batch.max(1),
                ..opts
            },
            active: Vec::new(),
            waiting: VecDeque::new(),
            spare: Vec::new(),
            logits: Vec::new(),
            next_id: 0,
        }
    }

    pub fn model(&self) -> &'e Model<'e> {
        self.model
    }

    pub fn tokenizer(&self) -> &'e Tokenizer {
        self.tok
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// The prompt's tokens: text as `run` tokenizes it (BOS added where the model wants it,
    /// special tokens parsed), checked against the vocabulary and the context.
    pub fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>, GenerateError> {
        let ids = match prompt {
            Prompt::Text(s) => self.tok.encode(s, true, true)?,
            Prompt::Tokens(t) => t.clone(),
        };
        if ids.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        let vocab = self.model.tok_embd.rows;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(GenerateError::BadToken { id, vocab });
        }
        if ids.len() >= self.opts.n_ctx {
            return Err(GenerateError::PromptTooLong {
                len: ids.len(),
                n_ctx: self.opts.n_ctx,
            });
        }
        Ok(ids)
    }

    /// Queues a prompt; its events go to `sink` as steps run. Returns the sequence's id.
    pub fn submit(
        &mut self,
        prompt: &Prompt,
        params: GenerateParams,
        sink: Box<dyn Sink + 'e>,
    ) -> Result<usize, GenerateError> {
        let prompt = self.tokenize(prompt)?;
        let mut sampler = Sampler::new(params.sampling.clone());
        for &t in &prompt {
            sampler.accept(t);
        }
        let id = self.next_id;
        self.next_id += 1;
        let cache = match self.spare.pop() {
            Some(mut c) => {
                c.clear();
                c
            }
            None => KvCache::new(&self.model.cfg, self.opts.n_ctx),
        };
        self.waiting.push_back(Seq {
            id,
            prompt_tokens: prompt.len(),
            max_new: params.max_tokens.min(self.opts.n_ctx - prompt.len()),
            prompt,
            cache,
            sampler,
            params,
            generated: 0,
            next: None,
            text: TextState::default(),
            sink,
            started: Instant::now(),
            prompt_s: 0.0,
        });
        Ok(id)
    }

    /// Ends sequence `id` now: its sink gets `Done` with [`FinishReason::Cancelled`]. False if
    /// no such sequence is running or waiting.
    pub fn cancel(&mut self, id: usize) -> bool {
        let seq = if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
            self.waiting.remove(i)
        } else if let Some(i) = self.active.iter().position(|s| s.id == id) {
            Some(self.active.remove(i))
        } else {
            None
        };
        let Some(mut s) = seq else {
            return false;
        };
        s.sink
            .send(Event::Done(s.finished(FinishReason::Cancelled)));
        self.spare.push(s.cache);
        true
    }

    /// Sequences running or waiting.
    pub fn pending(&self) -> usize {
        self.active.len() + self.waiting.len()
    }

    pub fn is_idle(&self) -> bool {
        self.pending() == 0
    }

    /// One step: admit waiting sequences up to the batch size and run their prompts, then one
    /// batched pass over every other active sequence's next token. Finished and cancelled
    /// sequences leave. A failed forward pass ends the sequences in it with an error event (and
    /// is returned); the engine stays usable.
    pub fn step(&mut self) -> Result<(), ForwardError> {
        while self.active.len() < self.opts.max_batch {
            let Some(s) = self.waiting.pop_front() else {
                break;
            };
            self.active.push(s);
        }
        let mut result = Ok(());
        let mut done = vec![false; self.active.len()];
        // sequences that were decoding before this step's prompts ran
        let decoding: Vec<bool> = self.active.iter().map(|s| s.next.is_some()).collect();
        for (i, s) in self.active.iter_mut().enumerate() {
            if s.next.is_some() || s.prompt.is_empty() {
                continue;
            }
            let t0 = Instant::now();
            let prompt = std::mem::take(&mut s.prompt);
            match self.model.forward_into(
                &prompt,
                &mut s.cache,
                Logits::Last,
                None,
                &mut self.logits,
            ) {
                Ok(()) => {
                    s.prompt_s = t0.elapsed().as_secs_f64();
                    done[i] = Self::advance(self.tok, s, &mut self.logits);
                }
                Err(e) => {
                    s.sink.send(Event::Error(e.to_string()));
                    done[i] = true;
                    result = Err(e);
                }
            }
        }
        let idx: Vec<usize> = (0..self.active.len())
            .filter(|&i| decoding[i] && !done[i])
            .collect();
        if !idx.is_empty() {
            let toks: Vec<u32> = idx
                .iter()
                .map(|&i| self.active[i].next.expect("decoding"))
                .collect();
            let mut segs: Vec<Segment> = Vec::with_capacity(idx.len());
            let mut k = 0;
            for (i, s) in self.active.iter_mut().enumerate() {
                if k < idx.len() && idx[k] == i {
                    segs.push(Segment {
                        tokens: std::slice::from_ref(&toks[k]),
                        cache: &mut s.cache,
                    });
                    k += 1;
                }
            }
            let r = self.model.forward_batch(&mut segs, &mut self.logits);
            drop(segs);
            let vocab = self.logits.len() / idx.len().max(1);
            for (k, &i) in idx.iter().enumerate() {
                let s = &mut self.active[i];
                done[i] = match &r {
                    Ok(()) => {
                        Self::advance(self.tok, s, &mut self.logits[k * vocab..(k + 1) * vocab])
                    }
                    Err(e) => {
                        s.sink.send(Event::Error(e.to_string()));
                        true
                    }
                };
            }
            if let Err(e) = r {
                result = Err(e);
            }
        }
        let mut i = 0;
        self.active.retain_mut(|s| {
            let keep = !done[i];
            i += 1;
            if !keep {
                self.spare.push(std::mem::replace(
                    &mut s.cache,
                    KvCache::new(&self.model.cfg, 0),
                ));
            }
            keep
        });
        result
    }

    /// Samples the next token of `s` from `logits` and sends its events; true when the
    /// sequence has ended.
    fn advance(tok: &Tokenizer, s: &mut Seq, logits: &mut [f32]) -> bool {
        let finish = |s: &mut Seq, reason| {
            let rest = s.text.flush();
            if !rest.is_empty() {
                s.sink.send(Event::Text(rest));
            }
            s.sink.send(Event::Done(s.finished(reason)));
            true
        };
        if s.params.ignore_eos {
            // as llama.cpp: end-of-generation tokens can never be sampled
            for id in tok.eog_ids() {
                if let Some(x) = logits.get_mut(id as usize) {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
        let next = s.sampler.sample(logits);
        if !s.params.ignore_eos && tok.is_eog(next) {
            // counted, as llama-server and OpenAI count it
            s.generated += 1;
            return finish(s, FinishReason::Stop);
        }
        s.generated += 1;
        let (text, stopped) = s.text.push(&tok.token_to_piece(next), &s.params.stop);
        if stopped {
            if !text.is_empty() {
                s.sink.send(Event::Token { id: next, text });
            }
            s.text = TextState::default();
            return finish(s, FinishReason::Stop);
        }
        if !s.sink.send(Event::Token { id: next, text }) {
            s.sink
                .send(Event::Done(s.finished(FinishReason::Cancelled)));
            return true;
        }
        if s.generated >= s.max_new {
            return finish(s, FinishReason::Length);
        }
        s.next = Some(next);
        false
    }

    /// Runs steps until every queued sequence has ended.
    pub fn run_to_end(&mut self) -> Result<(), ForwardError> {
        let mut result = Ok(());
        while !self.is_idle() {
            if let Err(e) = self.step() {
                result = Err(e);
            }
        }
        result
    }

    /// Generates for every prompt, batched, and returns the results in the prompts' order.
    pub fn generate(
        &mut self,
        prompts: &[Prompt],
        params: &GenerateParams,
    ) -> Result<Vec<Output>, GenerateError> {
        let mut outs = Vec::with_capacity(prompts.len());
        for ev in self.stream(prompts, params)? {
            let (i, ev) = ev;
            if outs.len() <= i {
                outs.resize_with(i + 1, || (String::new(), Vec::new(), None));
            }
            let o = &mut outs[i];
            match ev {
                Event::Token { id, text } => {
                    o.0.push_str(&text);
                    o.1.push(id);
                }
                Event::Text(text) => o.0.push_str(&text),
                Event::Done(f) => o.2 = Some(f),
                Event::Error(e) => return Err(GenerateError::Failed(e)),
            }
        }
        Ok(outs
            .into_iter()
            .map(|(text, tokens, f)| Output {
                text,
                tokens,
                finish: f.expect("every sequence ends with Done"),
            })
            .collect())
    }

    /// [`generate`](Self::generate) as an iterator of `(prompt index, event)` as the steps
    /// produce them. Every prompt is checked before anything runs.
    pub fn stream<'s>(
        &'s mut self,
        prompts: &[Prompt],
        params: &GenerateParams,
    ) -> Result<Stream<'s, 'e>, GenerateError> {
        let toks = prompts
            .iter()
            .map(|p| self.tokenize(p))
            .collect::<Result<Vec<_>, _>>()?;
        let queue = std::rc::Rc::new(std::cell::RefCell::new(VecDeque::new()));
        for (i, t) in toks.into_iter().enumerate() {
            let q = queue.clone();
            let sink = move |ev: Event| {
                q.borrow_mut().push_back((i, ev));
                true
            };
            self.submit(&Prompt::Tokens(t), params.clone(), Box::new(sink))?;
        }
        Ok(Stream {
            engine: self,
            queue,
        })
    }
}

/// The iterator of [`Engine::stream`]: runs steps as events are taken.
pub struct Stream<'s, 'e> {
    engine: &'s mut Engine<'e>,
    queue: std::rc::Rc<std::cell::RefCell<VecDeque<(usize, Event)>>>,
}

impl Iterator for Stream<'_, '_> {
    type Item = (usize, Event);
    fn next(&mut self) -> Option<(usize, Event)> {
        loop {
            if let Some(ev) = self.queue.borrow_mut().pop_front() {
                return Some(ev);
            }
            if self.engine.is_idle() {
                return None;
            }
            // errors reach the sequences' sinks as Error events
            let _ = self.engine.step();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_all(pieces: &[&str], stop: &[&str]) -> (Vec<String>, bool) {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let mut t = TextState::default();
        let mut out = Vec::new();
        for p in pieces {
            let (s, stopped) = t.push(p.as_bytes(), &stop);
            out.push(s);
            if stopped {
                return (out, true);
            }
        }
        out.push(t.flush());
        (out, false)
    }

    #[test]
    fn utf8_stream_holds_partial_characters() {
        let mut s = Utf8Stream::default();
        let bytes = "é🙂".as_bytes();
        assert_eq!(s.push(&bytes[..1]), "");
        assert_eq!(s.push(&bytes[1..3]), "é");
        assert_eq!(s.push(&bytes[3..]), "🙂");
        assert_eq!(s.push(&[0xff, b'a']), "\u{fffd}a");
    }

    #[test]
    fn stop_strings_are_held_back_and_cut() {
        // "Hello\nUser:" with stop "\nUser:" arriving in pieces
        let (out, stopped) = push_all(&["Hel", "lo", "\n", "Us", "er:", " more"], &["\nUser:"]);
        assert!(stopped);
        assert_eq!(out.concat(), "Hello");
        assert_eq!(out[2], "", "the newline may start the stop string");
        // a false start is released once it cannot match
        let (out, stopped) = push_all(&["a\n", "Uz", "b"], &["\nUser:"]);
        assert!(!stopped);
        assert_eq!(out, ["a", "\nUz", "b", ""]);
    }
}
