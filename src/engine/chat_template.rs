//! Chat templates, rendered as Hugging Face transformers renders them.
//!
//! A model's chat template is a Jinja program that turns a conversation into the prompt text the
//! model was trained on. transformers' `apply_chat_template` renders it with jinja2 in an
//! `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with the variables
//! `messages`, `tools` (None), `documents` (None), `add_generation_prompt`, the tokenizer's special
//! tokens (`bos_token`, `eos_token`, `unk_token`, ...) and any extra keyword arguments, plus the
//! functions `raise_exception(msg)` and `strftime_now(fmt)` and its own `tojson` filter (Python's
//! `json.dumps` with `ensure_ascii=False`, so no HTML escaping, with `indent`, `separators`,
//! `sort_keys`). This module does the same with minijinja, and makes the output Python-shaped
//! where Jinja prints a value: `{{ true }}` is `True`, `{{ none }}` is `None`, lists and dicts
//! print as Python's `str()` does, floats as Python's `repr()`. Messages are dicts whose keys keep
//! their order (`role`, then `content`), as Python's do. Python string methods (`.strip()`,
//! `.split()`, `.startswith()`, ...) come from `minijinja_contrib::pycompat`. transformers'
//! `{% generation %}` block tag (assistant-token tracking) renders its body unchanged.
//!
//! Known differences from jinja2: `strftime_now` formats UTC time (Python uses local time);
//! `{% break %}`/`{% continue %}` need minijinja's `loop_controls` feature and dict literals
//! written in a template keep their key order only with its `preserve_order` feature (both are
//! detected by the tests); the `~` operator and `join` print `true`/`none` the minijinja way.

use crate::formats::gguf::{GgufFile, GgufValue};
use crate::model::ModelSource;
use minijinja::value::{Enumerator, Kwargs, Object, ValueKind};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One message of a conversation, as the OpenAI API and transformers pass it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Errors compiling, finding or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    /// The template is not valid Jinja.
    #[error("chat template syntax error{}: {msg}", at_line(*.line))]
    Syntax { line: Option<usize>, msg: String },
    /// The template called `raise_exception(message)`: it refuses the conversation (roles that
    /// do not alternate, an unsupported role, ...).
    #[error("the chat template rejected the conversation: {message}")]
    Raised { message: String },
    /// Rendering failed for another reason (an undefined value used as an object, a method
    /// Python has and we do not, ...).
    #[error("chat template render error{}: {msg}", at_line(*.line))]
    Render { line: Option<usize>, msg: String },
    /// The model has no chat template (for callers that require one; [`ChatTemplate::from_model`]
    /// returns `Ok(None)` instead).
    #[error("{}: the model has no chat template", .path.display())]
    NoTemplate { path: PathBuf },
    /// A model file that should hold a template or special tokens is malformed.
    #[error("{}: {msg}", .path.display())]
    Config { path: PathBuf, msg: String },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}

/// A compiled chat template plus the special-token strings it is rendered with.
#[derive(Clone)]
pub struct ChatTemplate {
    source: String,
    env: Environment<'static>,
    /// Special tokens (`bos_token`, `eos_token`, ...), passed as template variables.
    vars: Vec<(String, Value)>,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("vars", &self.vars)
            .finish()
    }
}

const TEMPLATE_NAME: &str = "chat_template";

/// llama.cpp's fallback for models without a template (`CHATML_TEMPLATE_SRC` in common/chat.cpp).
const CHATML_SOURCE: &str = "{%- for message in messages -%}\n  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n  {{- '<|im_start|>assistant\\n' -}}\n{%- endif -%}";

/// The special tokens transformers passes to templates (`SPECIAL_TOKENS_ATTRIBUTES`), with the
/// GGUF metadata key of each one's id.
const SPECIAL_TOKENS: [(&str, &str); 7] = [
    ("bos_token", "tokenizer.ggml.bos_token_id"),
    ("eos_token", "tokenizer.ggml.eos_token_id"),
    ("unk_token", "tokenizer.ggml.unknown_token_id"),
    ("sep_token", "tokenizer.ggml.seperator_token_id"),
    ("pad_token", "tokenizer.ggml.padding_token_id"),
    ("cls_token", "tokenizer.ggml.cls_token_id"),
    ("mask_token", "tokenizer.ggml.mask_token_id"),
];

impl ChatTemplate {
    /// A template's source plus the special-token strings it may use.
    pub fn new(
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, ChatTemplateError> {
        Self::with_special_tokens(source, [("bos_token", bos_token), ("eos_token", eos_token)])
    }

    /// A template with any set of special tokens (`bos_token`, `eos_token`, `unk_token`,
    /// `pad_token`, ...); tokens not given are undefined in the template, as in transformers
    /// when the tokenizer has none.
    pub fn with_special_tokens<'a>(
        source: &str,
        tokens: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<ChatTemplate, ChatTemplateError> {
        let env = build_env(source)?;
        Ok(ChatTemplate {
            source: source.to_string(),
            env,
            vars: tokens
                .into_iter()
                .map(|(k, v)| (k.to_string(), Value::from(v)))
                .collect(),
        })
    }

    /// The model's own template: a GGUF file's `tokenizer.chat_template` metadata, or a Hugging
    /// Face folder's template (see [`from_hf_dir`](Self::from_hf_dir)), with the model's special
    /// tokens. `Ok(None)` if the model has none.
    pub fn from_model(src: &ModelSource) -> Result<Option<ChatTemplate>, ChatTemplateError> {
        match src {
            ModelSource::Gguf(f) => Self::from_gguf(f),
            ModelSource::Hf { dir, .. } => Self::from_hf_dir(dir),
        }
    }

    /// A GGUF file's `tokenizer.chat_template`, with the text of the tokens named by
    /// `tokenizer.ggml.bos_token_id`, `eos_token_id`, ... as the special tokens. `Ok(None)` if
    /// the key is absent or empty.
    pub fn from_gguf(file: &GgufFile) -> Result<Option<ChatTemplate>, ChatTemplateError> {
        let bad = |msg: String| ChatTemplateError::Config {
            path: file.path().to_path_buf(),
            msg,
        };
        let source = match file.get("tokenizer.chat_template") {
            None => return Ok(None),
            Some(v) => v
                .as_str()
                .ok_or_else(|| bad("'tokenizer.chat_template' is not a string".into()))?,
        };
        if source.is_empty() {
            return Ok(None);
        }
        let tokens = file
            .get("tokenizer.ggml.tokens")
            .and_then(GgufValue::as_array);
        let text_of = |key: &str| -> Option<&str> {
            let id = file.get(key)?.as_u32()?;
            tokens?.get(id as usize)?.as_str()
        };
        let specials: Vec<(&str, &str)> = SPECIAL_TOKENS
            .iter()
            .filter_map(|&(name, key)| Some((name, text_of(key)?)))
            .collect();
        Self::with_special_tokens(source, specials)
            .map(Some)
            .map_err(|e| in_file(e, file.path()))
    }

    /// A Hugging Face folder's template, found as transformers finds it: `chat_template.jinja`
    /// (which takes precedence), else `tokenizer_config.json`'s `chat_template` (a string, or a
    /// list of `{name, template}` of which "default" is taken), else a processor's
    /// `chat_template.json`. Special tokens come from `tokenizer_config.json` (`bos_token`,
    /// `eos_token`, ... as a string or an object with `content`), else `special_tokens_map.json`.
    /// `Ok(None)` if the folder has no template.
    pub fn from_hf_dir(dir: &Path) -> Result<Option<ChatTemplate>, ChatTemplateError> {
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = read_json_opt(&cfg_path)?;
        let jinja_path = dir.join("chat_template.jinja");
        let (source, source_path) = if jinja_path.is_file() {
            (Some(read_text(&jinja_path)?), jinja_path)
        } else {
            match template_from_config(cfg.as_ref(), &cfg_path)? {
                Some(s) => (Some(s), cfg_path.clone()),
                None => {
                    let json_path = dir.join("chat_template.json");
                    let s = read_json_opt(&json_path)?.and_then(|v| {
                        v.get("chat_template")
                            .and_then(serde_json::Value::as_str)
                            .map(str::to_string)
                    });
                    (s, json_path)
                }
            }
        };
        let Some(source) = source else {
            return Ok(None);
        };
        let map = read_json_opt(&dir.join("special_tokens_map.json"))?;
        let specials: Vec<(&str, String)> = SPECIAL_TOKENS
            .iter()
            .filter_map(|&(name, _)| {
                let text = token_text(cfg.as_ref().and_then(|c| c.get(name)))
                    .or_else(|| token_text(map.as_ref().and_then(|m| m.get(name))))?;
                Some((name, text))
            })
            .collect();
        Self::with_special_tokens(&source, specials.iter().map(|(k, v)| (*k, v.as_str())))
            .map(Some)
            .map_err(|e| in_file(e, &source_path))
    }

    /// ChatML, the fallback llama.cpp uses when a model has no template.
    pub fn chatml() -> ChatTemplate {
        Self::with_special_tokens(CHATML_SOURCE, []).expect("the built-in ChatML template parses")
    }

    /// Renders a conversation; with `add_generation_prompt`, the text that opens the assistant's
    /// reply is appended.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        self.render_vars(messages, add_generation_prompt, Vec::new())
    }

    /// The prompt text for a conversation as llama-server makes it: [`render`](Self::render)
    /// with the generation prompt, less a leading BOS text where the tokenizer adds BOS itself
    /// (`add_bos`: templates that write it would double it) and a trailing EOS text where it
    /// adds EOS (`add_eos`).
    pub fn render_prompt(
        &self,
        messages: &[ChatMessage],
        add_bos: bool,
        add_eos: bool,
    ) -> Result<String, ChatTemplateError> {
        let mut text = self.render(messages, true)?;
        if let Some(bos) = self
            .special_token("bos_token")
            .filter(|b| add_bos && !b.is_empty())
        {
            if let Some(rest) = text.strip_prefix(bos) {
                text = rest.to_string();
            }
        }
        if let Some(eos) = self
            .special_token("eos_token")
            .filter(|e| add_eos && !e.is_empty())
        {
            if let Some(rest) = text.strip_suffix(eos) {
                text.truncate(rest.len());
            }
        }
        Ok(text)
    }

    /// [`render`](Self::render) with extra template variables, as transformers'
    /// `apply_chat_template(..., **kwargs)`: `tools`, `documents`, `date_string`,
    /// `enable_thinking`, ... They override the special tokens. Objects keep `serde_json`'s key
    /// order (sorted unless its `preserve_order` feature is on); see
    /// [`render_with_json`](Self::render_with_json) to keep the order of JSON text.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, ChatTemplateError> {
        let vars = extra
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect();
        self.render_vars(messages, add_generation_prompt, vars)
    }

    /// [`render_with`](Self::render_with) taking the extra variables as the text of a JSON
    /// object; objects in it keep their key order, as Python's `json.loads` keeps it (a tool's
    /// JSON schema then prints exactly as transformers prints it).
    pub fn render_with_json(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra_json: &str,
    ) -> Result<String, ChatTemplateError> {
        let bad = |msg: String| ChatTemplateError::Render {
            line: None,
            msg: format!("extra template variables: {msg}"),
        };
        let parsed: OrderedJson =
            serde_json::from_str(extra_json).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let Some(dict) = parsed.0.downcast_object_ref::<PyDict>() else {
            return Err(bad("not a JSON object".into()));
        };
        let vars = dict
            .0
            .iter()
            .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), v.clone()))
            .collect();
        self.render_vars(messages, add_generation_prompt, vars)
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// A special token's text (`"bos_token"`, `"eos_token"`, ...), if the template is rendered
    /// with one.
    pub fn special_token(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_str())
    }

    fn render_vars(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: Vec<(String, Value)>,
    ) -> Result<String, ChatTemplateError> {
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        for (k, v) in &self.vars {
            ctx.insert(k.clone(), v.clone());
        }
        ctx.insert("tools".into(), Value::from(()));
        ctx.insert("documents".into(), Value::from(()));
        for (k, v) in extra {
            ctx.insert(k, v);
        }
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_object(PyDict(vec![
                    (Value::from("role"), Value::from(m.role.as_str())),
                    (Value::from("content"), Value::from(m.content.as_str())),
                ]))
            })
            .collect();
        ctx.insert("messages".into(), Value::from(messages));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| render_error(&e))?;
        tmpl.render(Value::from(ctx)).map_err(|e| render_error(&e))
    }
}

/// Attaches the file a template came from to its syntax error.
fn in_file(e: ChatTemplateError, path: &Path) -> ChatTemplateError {
    match e {
        ChatTemplateError::Syntax { line, msg } => ChatTemplateError::Syntax {
            line,
            msg: format!("{msg} (in {})", path.display()),
        },
        other => other,
    }
}

fn read_text(path: &Path) -> Result<String, ChatTemplateError> {
    std::fs::read_to_string(path).map_err(|source| ChatTemplateError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_json_opt(path: &Path) -> Result<Option<serde_json::Value>, ChatTemplateError> {
    if !path.is_file() {
        return Ok(None);
    }
    serde_json::from_str(&read_text(path)?)
        .map(Some)
        .map_err(|e| ChatTemplateError::Config {
            path: path.to_path_buf(),
            msg: format!("not valid JSON: {e}"),
        })
}

/// `tokenizer_config.json`'s `chat_template`: a string, or a list of `{name, template}`.
fn template_from_config(
    cfg: Option<&serde_json::Value>,
    path: &Path,
) -> Result<Option<String>, ChatTemplateError> {
    use serde_json::Value as J;
    let bad = |msg: String| ChatTemplateError::Config {
        path: path.to_path_buf(),
        msg,
    };
    match cfg.and_then(|c| c.get("chat_template")) {
        None | Some(J::Null) => Ok(None),
        Some(J::String(s)) => Ok(Some(s.clone())),
        Some(J::Array(list)) => {
            let name_of = |e: &J| e.get("name").and_then(J::as_str).map(str::to_string);
            match list
                .iter()
                .find(|e| name_of(e).as_deref() == Some("default"))
            {
                Some(e) => e
                    .get("template")
                    .and_then(J::as_str)
                    .map(|t| Some(t.to_string()))
                    .ok_or_else(|| bad("'chat_template' \"default\" entry has no template".into())),
                None => {
                    let names: Vec<String> = list.iter().filter_map(name_of).collect();
                    Err(bad(format!(
                        "'chat_template' lists several templates and none named \"default\": {names:?}"
                    )))
                }
            }
        }
        Some(other) => Err(bad(format!(
            "'chat_template' should be a string or a list, found {other}"
        ))),
    }
}

/// A special token given as a string or as `{"content": ...}`.
fn token_text(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o
            .get("content")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The environment
// ---------------------------------------------------------------------------------------------

fn build_env(source: &str) -> Result<Environment<'static>, ChatTemplateError> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(|out, _state, value| out.write_str(&py_str(value)).map_err(Error::from));
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", tojson_filter);
    env.add_filter("string", string_filter);
    env.add_template_owned(TEMPLATE_NAME, strip_generation_tags(source))
        .map_err(|e| syntax_error(&e))?;
    Ok(env)
}

/// transformers' `{% generation %}...{% endgeneration %}` (assistant-token tracking) renders its
/// body unchanged: it becomes an always-true `if` with the same whitespace control.
fn strip_generation_tags(source: &str) -> String {
    use std::sync::OnceLock;
    static OPEN: OnceLock<regex::Regex> = OnceLock::new();
    static CLOSE: OnceLock<regex::Regex> = OnceLock::new();
    if !source.contains("generation") {
        return source.to_string();
    }
    let open = OPEN.get_or_init(|| {
        regex::Regex::new(r"\{%([-+]?)[ \t]*generation[ \t]*([-+]?)%\}").expect("valid regex")
    });
    let close = CLOSE.get_or_init(|| {
        regex::Regex::new(r"\{%([-+]?)[ \t]*endgeneration[ \t]*([-+]?)%\}").expect("valid regex")
    });
    let s = open.replace_all(source, "{%${1} if true ${2}%}");
    close.replace_all(&s, "{%${1} endif ${2}%}").into_owned()
}

fn syntax_error(e: &Error) -> ChatTemplateError {
    if e.kind() == ErrorKind::SyntaxError {
        ChatTemplateError::Syntax {
            line: e.line(),
            msg: e.detail().unwrap_or("invalid syntax").to_string(),
        }
    } else {
        render_error(e)
    }
}

/// The message `raise_exception` was called with travels as the error's source.
#[derive(Debug)]
struct RaisedException(String);

impl fmt::Display for RaisedException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

fn render_error(e: &Error) -> ChatTemplateError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<RaisedException>() {
            return ChatTemplateError::Raised {
                message: r.0.clone(),
            };
        }
        cur = err.source();
    }
    if e.kind() == ErrorKind::SyntaxError {
        return syntax_error(e);
    }
    let msg = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    ChatTemplateError::Render {
        line: e.line(),
        msg,
    }
}

fn raise_exception(message: Value) -> Result<Value, Error> {
    let message = py_str(&message);
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedException(message)))
}

fn strftime_now(format: String) -> String {
    let now = std::time::SystemTime::now();
    let (secs, micros) = match now.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_micros()),
        Err(e) => {
            let d = e.duration();
            let (s, us) = (d.as_secs() as i64, d.subsec_micros());
            if us == 0 {
                (-s, 0)
            } else {
                (-s - 1, 1_000_000 - us)
            }
        }
    };
    strftime(&format, secs, micros)
}

/// jinja2's `|string` is Python's `str()`.
fn string_filter(value: &Value) -> Value {
    if value.kind() == ValueKind::String {
        value.clone()
    } else {
        Value::from(py_str(value))
    }
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`.
fn tojson_filter(
    value: &Value,
    ensure_ascii: Option<bool>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let ensure_ascii = match kwargs.get::<Option<bool>>("ensure_ascii")? {
        Some(b) => b,
        None => ensure_ascii.unwrap_or(false),
    };
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => Some(if let Some(s) = v.as_str() {
            s.to_string()
        } else if let Some(n) = v.as_i64() {
            " ".repeat(n.max(0) as usize)
        } else {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: indent must be an integer or a string",
            ));
        }),
    };
    let (item_sep, key_sep) = match kwargs.get::<Option<Value>>("separators")? {
        Some(v) if !v.is_none() && !v.is_undefined() => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match (
                parts.first().and_then(Value::as_str),
                parts.get(1).and_then(Value::as_str),
            ) {
                (Some(a), Some(b)) if parts.len() == 2 => (a.to_string(), b.to_string()),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    ))
                }
            }
        }
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let opts = JsonOpts {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    let mut out = String::new();
    json_dump(&mut out, value, &opts, 0)?;
    Ok(Value::from(out))
}

// ---------------------------------------------------------------------------------------------
// Python-shaped values: dicts that keep their order, str(), repr(), json.dumps
// ---------------------------------------------------------------------------------------------

/// A Python dict: keys in insertion order.
#[derive(Debug)]
struct PyDict(Vec<(Value, Value)>);

impl Object for PyDict {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.iter().map(|(k, _)| k.clone()).collect())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.len())
    }
}

fn json_to_value(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => Value::from(s.as_str()),
        J::Array(a) => Value::from(a.iter().map(json_to_value).collect::<Vec<_>>()),
        J::Object(o) => Value::from_object(PyDict(
            o.iter()
                .map(|(k, v)| (Value::from(k.as_str()), json_to_value(v)))
                .collect(),
        )),
    }
}

/// JSON parsed with objects as [`PyDict`]s in document order.
struct OrderedJson(Value);

impl<'de> serde::Deserialize<'de> for OrderedJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OrderedJsonVisitor)
    }
}

struct OrderedJsonVisitor;

impl<'de> serde::de::Visitor<'de> for OrderedJsonVisitor {
    type Value = OrderedJson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<OrderedJson, E> {
        Ok(OrderedJson(Value::from(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<OrderedJson, E> {
        Ok(OrderedJson(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<OrderedJson, E> {
        Ok(OrderedJson(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<OrderedJson, E> {
        Ok(OrderedJson(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<OrderedJson, E> {
        Ok(OrderedJson(Value::from(v)))
    }
    fn visit_unit<E>(self) -> Result<OrderedJson, E> {
        Ok(OrderedJson(Value::from(())))
    }
    fn visit_none<E>(self) -> Result<OrderedJson, E> {
        Ok(OrderedJson(Value::from(())))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<OrderedJson, A::Error> {
        let mut items = Vec::new();
        while let Some(OrderedJson(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(OrderedJson(Value::from(items)))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<OrderedJson, A::Error> {
        let mut entries: Vec<(Value, Value)> = Vec::new();
        while let Some((k, OrderedJson(v))) = map.next_entry::<String, OrderedJson>()? {
            let k = Value::from(k);
            // Python's json.loads: a repeated key keeps its first place and its last value.
            match entries.iter_mut().find(|(ek, _)| *ek == k) {
                Some(e) => e.1 = v,
                None => entries.push((k, v)),
            }
        }
        Ok(OrderedJson(Value::from_object(PyDict(entries))))
    }
}

/// The items of a map (keys in its order), or `None` for anything else.
fn map_items(value: &Value) -> Option<Vec<(Value, Value)>> {
    if value.kind() != ValueKind::Map {
        return None;
    }
    if let Some(d) = value.downcast_object_ref::<PyDict>() {
        return Some(d.0.clone());
    }
    let keys = value.try_iter().ok()?;
    Some(
        keys.map(|k| {
            let v = value.get_item(&k).unwrap_or(Value::UNDEFINED);
            (k, v)
        })
        .collect(),
    )
}

/// What jinja2 prints for a value: Python's `str()`.
fn py_str(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::String => value.as_str().unwrap_or_default().to_string(),
        _ => {
            let mut s = String::new();
            py_repr_into(&mut s, value);
            s
        }
    }
}

/// Python's `repr()` (strings quoted), as `str()` of a container prints its items.
fn py_repr_into(out: &mut String, value: &Value) {
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => {
            if value.is_integer() {
                let _ = write!(out, "{value}");
            } else {
                out.push_str(&py_float_repr(
                    f64::try_from(value.clone()).unwrap_or(f64::NAN),
                ));
            }
        }
        ValueKind::String => py_str_repr_into(out, value.as_str().unwrap_or_default()),
        ValueKind::Bytes => {
            let _ = write!(out, "{value}");
        }
        ValueKind::Map => {
            out.push('{');
            for (i, (k, v)) in map_items(value).unwrap_or_default().iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr_into(out, k);
                out.push_str(": ");
                py_repr_into(out, v);
            }
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            if let Ok(iter) = value.try_iter() {
                for (i, v) in iter.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr_into(out, &v);
                }
            }
            out.push(']');
        }
        _ => {
            let _ = write!(out, "{value}");
        }
    }
}

/// Whether Python's `str.isprintable()` is false for `c` (approximately: control characters,
/// separators other than the space, and the common format characters).
fn py_unprintable(c: char) -> bool {
    c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}' | '\u{feff}')
}

/// Python's `repr()` of a string.
fn py_str_repr_into(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if py_unprintable(c) => {
                let u = c as u32;
                let _ = if u <= 0xff {
                    write!(out, "\\x{u:02x}")
                } else if u <= 0xffff {
                    write!(out, "\\u{u:04x}")
                } else {
                    write!(out, "\\U{u:08x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `repr()` of a float: the shortest digits that round-trip, positional for exponents
/// in [-4, 16), else scientific with a signed two-digit exponent.
fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sci = format!("{:e}", f.abs());
    let (mant, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let n = digits.len() as i32;
    let mut out = String::new();
    if f < 0.0 {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let point = (exp + 1) as usize;
            if digits.len() <= point {
                out.push_str(&digits);
                out.push_str(&"0".repeat(point - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        } else {
            out.push_str("0.");
            out.push_str(&"0".repeat((-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    out
}

struct JsonOpts {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

fn json_str_into(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !(' '..='~').contains(&c)) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `json.dumps` of a template value.
fn json_dump(out: &mut String, value: &Value, o: &JsonOpts, level: usize) -> Result<(), Error> {
    let not_serializable = |what: &str| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: Object of type {what} is not JSON serializable"),
        )
    };
    // Opening a container: the separator between items and the text before the closing bracket.
    let open = |out: &mut String, bracket: char| -> (String, String) {
        out.push(bracket);
        match &o.indent {
            Some(ind) => {
                let inner = format!("\n{}", ind.repeat(level + 1));
                out.push_str(&inner);
                (
                    format!("{}{inner}", o.item_sep),
                    format!("\n{}", ind.repeat(level)),
                )
            }
            None => (o.item_sep.clone(), String::new()),
        }
    };
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                let _ = write!(out, "{value}");
            } else {
                let f = f64::try_from(value.clone()).unwrap_or(f64::NAN);
                out.push_str(&if f.is_nan() {
                    "NaN".to_string()
                } else if f.is_infinite() {
                    if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
                } else {
                    py_float_repr(f)
                });
            }
        }
        ValueKind::String => json_str_into(out, value.as_str().unwrap_or_default(), o.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            let (sep, close) = open(out, '[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&sep);
                }
                json_dump(out, v, o, level + 1)?;
            }
            out.push_str(&close);
            out.push(']');
        }
        ValueKind::Map => {
            let mut items = map_items(value).unwrap_or_default();
            if items.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            // Keys become strings as json.dumps makes them.
            let mut keyed = Vec::with_capacity(items.len());
            for (k, v) in items.drain(..) {
                let key = match k.kind() {
                    ValueKind::String => k.as_str().unwrap_or_default().to_string(),
                    ValueKind::None => "null".into(),
                    ValueKind::Bool => if k.is_true() { "true" } else { "false" }.into(),
                    ValueKind::Number => {
                        let mut s = String::new();
                        json_dump(&mut s, &k, o, 0)?;
                        s
                    }
                    other => return Err(not_serializable(&format!("{other} (as a key)"))),
                };
                keyed.push((key, v));
            }
            if o.sort_keys {
                keyed.sort_by(|a, b| a.0.cmp(&b.0));
            }
            let (sep, close) = open(out, '{');
            for (i, (k, v)) in keyed.iter().enumerate() {
                if i > 0 {
                    out.push_str(&sep);
                }
                json_str_into(out, k, o.ensure_ascii);
                out.push_str(&o.key_sep);
                json_dump(out, v, o, level + 1)?;
            }
            out.push_str(&close);
            out.push('}');
        }
        ValueKind::Undefined => return Err(not_serializable("Undefined")),
        other => return Err(not_serializable(&other.to_string())),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// strftime (C locale, as Python's on glibc)
// ---------------------------------------------------------------------------------------------

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// ISO 8601 weeks in a year: 53 when it starts on a Thursday (or a Wednesday in a leap year).
fn iso_weeks_in_year(y: i64) -> i64 {
    let p = |y: i64| (y + y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400)).rem_euclid(7);
    if p(y) == 4 || p(y - 1) == 3 {
        53
    } else {
        52
    }
}

struct Tm {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
    micros: u32,
    /// 0 = Sunday.
    wday: u32,
    /// 0-based day of the year.
    yday: u32,
    unix: i64,
}

impl Tm {
    fn from_unix(secs: i64, micros: u32) -> Tm {
        let days = secs.div_euclid(86400);
        let sod = secs.rem_euclid(86400) as u32;
        let (year, month, day) = civil_from_days(days);
        Tm {
            year,
            month,
            day,
            hour: sod / 3600,
            min: sod / 60 % 60,
            sec: sod % 60,
            micros,
            wday: (days + 4).rem_euclid(7) as u32,
            yday: (days - days_from_civil(year, 1, 1)) as u32,
            unix: secs,
        }
    }

    /// ISO year and week.
    fn iso_week(&self) -> (i64, i64) {
        let wday_iso = i64::from((self.wday + 6) % 7 + 1);
        let week = (i64::from(self.yday) + 1 - wday_iso + 10) / 7;
        if week < 1 {
            (self.year - 1, iso_weeks_in_year(self.year - 1))
        } else if week > iso_weeks_in_year(self.year) {
            (self.year + 1, 1)
        } else {
            (self.year, week)
        }
    }
}

/// Formats a UTC time as C's `strftime` in the C locale does (with glibc's `-`, `_`, `0` and `^`
/// flags), plus Python's `%f`; `%Z` and `%z` are empty, as for Python's naive `datetime.now()`.
fn strftime(format: &str, unix_secs: i64, micros: u32) -> String {
    let tm = Tm::from_unix(unix_secs, micros);
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut flag = None;
        while let Some(&f) = chars.peek() {
            if matches!(f, '-' | '_' | '0' | '^' | '#') {
                flag = Some(f);
                chars.next();
            } else {
                break;
            }
        }
        let Some(conv) = chars.next() else {
            out.push('%');
            if let Some(f) = flag {
                out.push(f);
            }
            break;
        };
        // A number padded to `width` with `pad` unless a flag says otherwise.
        let num = |v: i64, width: usize, pad: char| -> String {
            let pad = match flag {
                Some('-') => return v.to_string(),
                Some('_') => ' ',
                Some('0') => '0',
                _ => pad,
            };
            let s = v.abs().to_string();
            let sign = if v < 0 { "-" } else { "" };
            let fill: String =
                std::iter::repeat_n(pad, width.saturating_sub(s.len() + sign.len())).collect();
            if pad == '0' {
                format!("{sign}{fill}{s}")
            } else {
                format!("{fill}{sign}{s}")
            }
        };
        let hour12 = if tm.hour.is_multiple_of(12) {
            12
        } else {
            tm.hour % 12
        };
        let text = match conv {
            'a' => WEEKDAYS[tm.wday as usize][..3].to_string(),
            'A' => WEEKDAYS[tm.wday as usize].to_string(),
            'b' | 'h' => MONTHS[tm.month as usize - 1][..3].to_string(),
            'B' => MONTHS[tm.month as usize - 1].to_string(),
            'c' => strftime("%a %b %e %H:%M:%S %Y", unix_secs, micros),
            'C' => num(tm.year.div_euclid(100), 2, '0'),
            'd' => num(i64::from(tm.day), 2, '0'),
            'D' | 'x' => strftime("%m/%d/%y", unix_secs, micros),
            'e' => num(i64::from(tm.day), 2, ' '),
            'f' => format!("{:06}", tm.micros),
            'F' => strftime("%Y-%m-%d", unix_secs, micros),
            'g' => num(tm.iso_week().0.rem_euclid(100), 2, '0'),
            'G' => num(tm.iso_week().0, 1, '0'),
            'H' => num(i64::from(tm.hour), 2, '0'),
            'I' => num(i64::from(hour12), 2, '0'),
            'j' => num(i64::from(tm.yday) + 1, 3, '0'),
            'k' => num(i64::from(tm.hour), 2, ' '),
            'l' => num(i64::from(hour12), 2, ' '),
            'm' => num(i64::from(tm.month), 2, '0'),
            'M' => num(i64::from(tm.min), 2, '0'),
            'n' => "\n".to_string(),
            'p' => if tm.hour < 12 { "AM" } else { "PM" }.to_string(),
            'P' => if tm.hour < 12 { "am" } else { "pm" }.to_string(),
            'r' => strftime("%I:%M:%S %p", unix_secs, micros),
            'R' => strftime("%H:%M", unix_secs, micros),
            's' => tm.unix.to_string(),
            'S' => num(i64::from(tm.sec), 2, '0'),
            't' => "\t".to_string(),
            'T' | 'X' => strftime("%H:%M:%S", unix_secs, micros),
            'u' => num(i64::from((tm.wday + 6) % 7 + 1), 1, '0'),
            'U' => num(i64::from((tm.yday + 7 - tm.wday) / 7), 2, '0'),
            'V' => num(tm.iso_week().1, 2, '0'),
            'w' => num(i64::from(tm.wday), 1, '0'),
            'W' => num(i64::from((tm.yday + 7 - (tm.wday + 6) % 7) / 7), 2, '0'),
            'y' => num(tm.year.rem_euclid(100), 2, '0'),
            'Y' => num(tm.year, 1, '0'),
            'z' | 'Z' => String::new(),
            '%' => "%".to_string(),
            other => {
                let mut s = String::from("%");
                if let Some(f) = flag {
                    s.push(f);
                }
                s.push(other);
                s
            }
        };
        if flag == Some('^') {
            out.push_str(&text.to_uppercase());
        } else {
            out.push_str(&text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama-server drops the BOS text a template writes when the tokenizer adds BOS itself,
    /// and keeps it otherwise (SmolLM2's BOS is `<|im_start|>`, which its template starts with).
    #[test]
    fn render_prompt_drops_bos_and_eos_text_only_where_the_tokenizer_adds_them() {
        let t = ChatTemplate::new(
            "{{ bos_token }}{% for m in messages %}[{{ m.content }}]{% endfor %}{{ eos_token }}",
            "<s>",
            "</s>",
        )
        .unwrap();
        let m = [ChatMessage::new("user", "hi")];
        assert_eq!(t.render_prompt(&m, true, false).unwrap(), "[hi]</s>");
        assert_eq!(t.render_prompt(&m, false, true).unwrap(), "<s>[hi]");
        assert_eq!(t.render_prompt(&m, false, false).unwrap(), "<s>[hi]</s>");
        assert_eq!(t.render_prompt(&m, true, true).unwrap(), "[hi]");
    }

    fn fixture() -> serde_json::Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates.json");
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json")
    }

    #[test]
    fn chat_template_strftime_matches_python() {
        let fx = fixture();
        let checks = fx["strftime"].as_array().expect("strftime list");
        assert!(!checks.is_empty());
        for c in checks {
            let unix = c["unix"].as_i64().unwrap();
            let fmt = c["format"].as_str().unwrap();
            assert_eq!(
                strftime(fmt, unix, 0),
                c["expected"].as_str().unwrap(),
                "strftime({fmt:?}) at {unix}"
            );
        }
    }

    #[test]
    fn chat_template_float_repr_is_pythons() {
        for (f, s) in [
            (1.0, "1.0"),
            (2.5, "2.5"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (-1.5e-7, "-1.5e-07"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (-0.0, "-0.0"),
            (100.0, "100.0"),
        ] {
            assert_eq!(py_float_repr(f), s, "{f:e}");
        }
    }

    #[test]
    fn chat_template_civil_dates_round_trip() {
        for days in -800_000..800_000i64 {
            if days % 997 != 0 {
                continue;
            }
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn chat_template_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ChatTemplate>();
    }

    #[test]
    fn chat_template_generation_tag_becomes_if() {
        assert_eq!(
            strip_generation_tags("{%- generation -%}x{% endgeneration %}"),
            "{%- if true -%}x{% endif %}"
        );
    }

    #[test]
    fn chat_template_strftime_now_is_today() {
        let t = ChatTemplate::with_special_tokens("{{ strftime_now('%Y-%m-%d') }}", []).unwrap();
        let got = t.render(&[], false).unwrap();
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        // Either side of a midnight between the two clock reads.
        let ok = [secs - 5, secs]
            .iter()
            .any(|&s| strftime("%Y-%m-%d", s, 0) == got);
        assert!(ok, "{got}");
    }

    #[test]
    fn chat_template_chatml_matches_golden() {
        let fx = fixture();
        let t = ChatTemplate::chatml();
        assert_eq!(t.source(), fx["templates"]["chatml"].as_str().unwrap());
        let case = fx["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "chatml/system-multi-turn/agp=True")
            .expect("the ChatML case");
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        assert_eq!(
            t.render(&messages, true).unwrap(),
            case["expected"].as_str().unwrap()
        );
    }
}
