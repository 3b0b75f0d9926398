//! The OpenAI API's request and response bodies, as far as this server speaks it: chat
//! completions and completions, streaming chunks, errors.
//!
//! Requests are read leniently where OpenAI is lenient (unknown fields are ignored) and
//! strictly where it is strict (a known field of the wrong type, or a value out of range or
//! unsupported here, is a 400 naming the field).

use crate::engine::chat_template::ChatMessage;
use serde::Deserialize;
use serde_json::{json, Value};

/// An error answered as OpenAI answers them: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
        }
    }

    pub fn param(param: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            param: Some(param),
            ..ApiError::invalid(message)
        }
    }

    pub fn status(status: u16, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
        }
    }

    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": Value::Null,
            }
        })
    }
}

/// `stop`: one string or a list of them.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize, Default, Clone)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling and length fields both endpoints share.
#[derive(Debug, Deserialize, Default, Clone)]
pub struct Common {
    pub model: Option<String>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// llama-server's extensions.
    pub top_k: Option<u64>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    pub n: Option<u64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logprobs: Option<Value>,
    pub top_logprobs: Option<u64>,
    pub best_of: Option<u64>,
    pub echo: Option<bool>,
    pub ignore_eos: Option<bool>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<RequestMessage>,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Deserialize)]
pub struct RequestMessage {
    pub role: String,
    /// A string, a list of content parts (only `text` parts are taken), or null.
    #[serde(default)]
    pub content: Value,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// A string, a list of one string, or a list of token ids.
    pub prompt: Value,
    #[serde(flatten)]
    pub common: Common,
}

/// A completion prompt after checking.
pub enum PromptIn {
    Text(String),
    Tokens(Vec<u32>),
}

impl CompletionRequest {
    pub fn prompt(&self) -> Result<PromptIn, ApiError> {
        let bad = || {
            ApiError::param(
                "prompt",
                "prompt must be a string, a list of one string or a list of token ids",
            )
        };
        match &self.prompt {
            Value::String(s) => Ok(PromptIn::Text(s.clone())),
            Value::Array(a) if a.len() == 1 && a[0].is_string() => Ok(PromptIn::Text(
                a[0].as_str().unwrap_or_default().to_string(),
            )),
            Value::Array(a) if !a.is_empty() && a.iter().all(|v| v.is_u64()) => a
                .iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|x| u32::try_from(x).ok())
                        .ok_or_else(bad)
                })
                .collect::<Result<_, _>>()
                .map(PromptIn::Tokens),
            Value::Array(a) if a.len() > 1 && a.iter().all(|v| v.is_string()) => Err(
                ApiError::param("prompt", "several prompts in one request are not supported"),
            ),
            _ => Err(bad()),
        }
    }
}

impl ChatRequest {
    /// The conversation for the template.
    pub fn messages(&self) -> Result<Vec<ChatMessage>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::param("messages", "messages must not be empty"));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let content = match &m.content {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    Value::Array(parts) => {
                        let mut s = String::new();
                        for p in parts {
                            match (p.get("type").and_then(Value::as_str), p.get("text")) {
                                (Some("text"), Some(Value::String(t))) => s.push_str(t),
                                _ => {
                                    return Err(ApiError::param(
                                        "messages",
                                        format!(
                                            "messages[{i}].content: only text parts are supported"
                                        ),
                                    ))
                                }
                            }
                        }
                        s
                    }
                    _ => {
                        return Err(ApiError::param(
                            "messages",
                            format!("messages[{i}].content must be a string or a list of parts"),
                        ))
                    }
                };
                Ok(ChatMessage {
                    role: m.role.clone(),
                    content,
                })
            })
            .collect()
    }
}

/// Checks the fields this server cannot honour and the ranges OpenAI enforces.
pub fn check_common(c: &Common) -> Result<(), ApiError> {
    if c.n.is_some_and(|n| n != 1) {
        return Err(ApiError::param("n", "only n = 1 is supported"));
    }
    if c.best_of.is_some_and(|n| n != 1) {
        return Err(ApiError::param("best_of", "only best_of = 1 is supported"));
    }
    if c.echo == Some(true) {
        return Err(ApiError::param("echo", "echo is not supported"));
    }
    let logprobs = match &c.logprobs {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_u64() != Some(0),
        _ => true,
    };
    if logprobs || c.top_logprobs.is_some_and(|n| n > 0) {
        return Err(ApiError::param("logprobs", "logprobs are not supported"));
    }
    for (name, v) in [
        ("presence_penalty", c.presence_penalty),
        ("frequency_penalty", c.frequency_penalty),
    ] {
        if v.is_some_and(|v| v != 0.0) {
            return Err(ApiError::param(
                name,
                format!("{name} is not supported (use repeat_penalty)"),
            ));
        }
    }
    if let Some(t) = c.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::param(
                "temperature",
                format!("temperature {t} is outside [0, 2]"),
            ));
        }
    }
    if let Some(p) = c.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(ApiError::param(
                "top_p",
                format!("top_p {p} is outside (0, 1]"),
            ));
        }
    }
    if let Some(p) = c.min_p {
        if !(0.0..=1.0).contains(&p) {
            return Err(ApiError::param(
                "min_p",
                format!("min_p {p} is outside [0, 1]"),
            ));
        }
    }
    if let Some(p) = c.repeat_penalty {
        if !(p > 0.0 && p.is_finite()) {
            return Err(ApiError::param(
                "repeat_penalty",
                format!("repeat_penalty {p} must be positive"),
            ));
        }
    }
    if c.max_tokens == Some(0) || c.max_completion_tokens == Some(0) {
        return Err(ApiError::param(
            "max_tokens",
            "max_tokens must be at least 1",
        ));
    }
    if let Some(Stop::Many(v)) = &c.stop {
        if v.len() > 16 {
            return Err(ApiError::param("stop", "at most 16 stop strings"));
        }
    }
    Ok(())
}

impl Common {
    pub fn stop_strings(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }

    pub fn max_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }
}

/// `usage`.
pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}
