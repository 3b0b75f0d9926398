//! Tokenizers that reproduce llama.cpp token for token: from GGUF metadata or from a Hugging Face
//! model directory (`tokenizer.json`, `tokenizer_config.json`, ...), plus chat templates and
//! end-of-generation tokens.
//!
//! # How encoding works (as in llama.cpp's `llama_tokenize`)
//!
//! 1. **Special tokens are split out first.** Control, user-defined and unknown tokens (GGUF token
//!    types 3, 4 and 2; in `tokenizer.json` the added tokens) are searched for in the text,
//!    longest first. With `parse_special == false` only user-defined tokens are split out, so a
//!    literal `<|im_start|>` typed by a user is tokenized as text.
//! 2. **Each remaining text fragment is tokenized by the model:**
//!    - byte-level BPE (`tokenizer.ggml.model = "gpt2"`): the regex pre-tokenizer of
//!      `tokenizer.ggml.pre` (see `pre.rs`), GPT-2 byte mapping, then rank-ordered merges. This
//!      runs on a [`tokenizers::Tokenizer`] built from the GGUF vocabulary and merges, which can
//!      also be saved as a `tokenizer.json` ([`Tokenizer::save_hf_dir`]);
//!    - SentencePiece (`"llama"`): spaces become `▁`, a `▁` is prepended to a fragment at the
//!      start or after a special token (`add_space_prefix`), then score-driven merges with
//!      `<0xXX>` byte fallback (`spm.rs`);
//!    - a Hugging Face directory: its own normalizer, pre-tokenizer and model.
//! 3. With `add_bos` (llama.cpp's `add_special`), BOS is prepended if the model's `add_bos` flag
//!    is set, and EOS appended if its `add_eos` flag is set.
//!
//! Decoding concatenates each token's piece ([`Tokenizer::token_to_piece`], llama.cpp's
//! `llama_token_to_piece` with special tokens rendered) and, where the vocabulary asks for it,
//! applies llama.cpp's `clean_up_tokenization_spaces`.
//!
//! End-of-generation tokens ([`Tokenizer::is_eog`]) are found as llama.cpp finds them: EOS, EOT
//! and EOM ids, FIM pad/repo/separator tokens, and tokens whose text is one of the well-known
//! end markers (`<|im_end|>`, `<|eot_id|>`, `<|endoftext|>`, `<end_of_turn>`, ...).
//!
//! ```no_run
//! use autoround_formats::{gguf::GgufFile, tokenizer::Tokenizer};
//! let file = GgufFile::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let tok = Tokenizer::from_gguf(&file)?;
//! let ids = tok.encode("<|im_start|>user\nhi<|im_end|>", true, true)?;
//! assert_eq!(tok.decode(&ids), "<|im_start|>user\nhi<|im_end|>");
//! let stop = ids.iter().any(|&id| tok.is_eog(id));
//! # let _ = stop;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{
    AddedToken, Model, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
    SplitDelimiterBehavior,
};

use crate::gguf::{GgufFile, GgufValue};

#[path = "tokenizer/bytes.rs"]
mod bytes;
#[path = "tokenizer/hf_dir.rs"]
mod hf_dir;
#[path = "tokenizer/pre.rs"]
mod pre;
#[path = "tokenizer/spm.rs"]
mod spm;

/// Errors building or running a tokenizer. Each names the file or metadata key it is about.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A GGUF metadata key is missing or holds the wrong type of value.
    #[error("{source_name}: tokenizer metadata '{key}': {msg}")]
    Metadata {
        source_name: String,
        key: String,
        msg: String,
    },
    /// A file of a Hugging Face tokenizer directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file of a Hugging Face tokenizer directory is malformed.
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    /// The vocabulary is inconsistent (duplicate tokens, bad ids, ...).
    #[error("invalid vocabulary: {0}")]
    Vocab(String),
    /// The tokenizer type or an operation on it is not supported.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The model asks for a special token it does not define.
    #[error("the tokenizer should add a {0} token but has none")]
    MissingSpecial(&'static str),
    /// A byte has no token (SentencePiece vocabulary without byte fallback and without `<unk>`).
    #[error(
        "byte 0x{0:02X} has no token in this vocabulary (no <0x{0:02X}> and no unknown token)"
    )]
    NoByteToken(u8),
    /// The `tokenizers` crate failed.
    #[error("tokenizer: {0}")]
    Engine(String),
}

fn engine_err(e: tokenizers::Error) -> TokenizerError {
    TokenizerError::Engine(e.to_string())
}

/// Token attributes, bit flags as llama.cpp's `llama_token_attr`.
pub mod attr {
    pub const UNDEFINED: u32 = 0;
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
    pub const NORMALIZED: u32 = 1 << 6;
    pub const LSTRIP: u32 = 1 << 7;
    pub const RSTRIP: u32 = 1 << 8;
    pub const SINGLE_WORD: u32 = 1 << 9;

    /// The attribute of a GGUF `tokenizer.ggml.token_type` value.
    pub fn from_token_type(t: i64) -> u32 {
        match t {
            1 => NORMAL,
            2 => UNKNOWN,
            3 => CONTROL,
            4 => USER_DEFINED,
            5 => UNUSED,
            6 => BYTE,
            _ => UNDEFINED,
        }
    }

    /// The GGUF `tokenizer.ggml.token_type` value for an attribute set.
    pub fn to_token_type(a: u32) -> i32 {
        if a & CONTROL != 0 {
            3
        } else if a & USER_DEFINED != 0 {
            4
        } else if a & UNKNOWN != 0 {
            2
        } else if a & BYTE != 0 {
            6
        } else if a & UNUSED != 0 {
            5
        } else if a & NORMAL != 0 {
            1
        } else {
            0
        }
    }
}

/// The tokenization algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    /// Byte-level BPE (GGUF `gpt2`), or any Hugging Face `tokenizer.json` pipeline.
    Bpe,
    /// llama.cpp's SentencePiece (GGUF `llama`).
    Spm,
}

/// How a normal token's text becomes bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceMode {
    /// GPT-2 byte-level characters.
    ByteLevel,
    /// SentencePiece: `▁` is a space.
    Metaspace,
    /// The text as is.
    Raw,
}

/// Special token ids. `None` where the vocabulary has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

/// A tokenizer vocabulary as GGUF stores it (`tokenizer.ggml.*`), for building a [`Tokenizer`]
/// from parts with [`Tokenizer::from_vocab`] (what [`Tokenizer::from_gguf`] does after reading
/// the metadata).
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: `"gpt2"` or `"llama"`.
    pub model: String,
    /// `tokenizer.ggml.pre` (BPE only).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores` (SentencePiece merge priorities).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
    /// 6 byte).
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges` (BPE), `"left right"` by rank.
    pub merges: Option<Vec<String>>,
    /// Ids given by `tokenizer.ggml.*_token_id` keys; unset ones take llama.cpp's defaults.
    pub special: SpecialIds,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`.
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

#[derive(Clone)]
enum Engine {
    /// A Hugging Face pipeline: normalizer, pre-tokenizer and model are run on raw fragments
    /// (special tokens are split out by us first).
    Hf(Box<tokenizers::Tokenizer>),
    /// llama.cpp's SentencePiece.
    Spm,
}

/// A tokenizer that reproduces llama.cpp's tokenization. `Send + Sync`: share it by reference.
#[derive(Clone)]
pub struct Tokenizer {
    kind: VocabKind,
    /// `tokenizer.ggml.pre` (or "hf" for a Hugging Face directory).
    pre: String,
    tokens: Vec<String>,
    scores: Vec<f32>,
    attrs: Vec<u32>,
    token_to_id: HashMap<String, u32>,
    /// Control, user-defined and unknown tokens, longest text first.
    special_cache: Vec<u32>,
    /// `llama_token_to_piece(special = true)` of every token.
    pieces: Vec<Vec<u8>>,
    engine: Engine,
    special: SpecialIds,
    eog: BTreeSet<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    chat_template: Option<String>,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("pre", &self.pre)
            .field("vocab_size", &self.tokens.len())
            .field("special", &self.special)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .finish_non_exhaustive()
    }
}

/// Everything gathered before the common finishing steps.
struct Parts {
    kind: VocabKind,
    pre: String,
    tokens: Vec<String>,
    scores: Vec<f32>,
    attrs: Vec<u32>,
    engine: Engine,
    piece_mode: PieceMode,
    special: SpecialIds,
    /// Ids that end generation besides those found by text (Hugging Face `eos_token_id` lists).
    extra_eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    chat_template: Option<String>,
    warnings: Vec<String>,
}

/// A piece of input after splitting out special tokens.
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// C's `isspace` on a byte (what llama.cpp's lstrip/rstrip test).
fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// Metadata lookup with typed accessors and errors naming the key.
struct Meta<'a> {
    source_name: String,
    get: &'a dyn Fn(&str) -> Option<&'a GgufValue>,
}

impl<'a> Meta<'a> {
    fn err(&self, key: &str, msg: impl Into<String>) -> TokenizerError {
        TokenizerError::Metadata {
            source_name: self.source_name.clone(),
            key: key.to_string(),
            msg: msg.into(),
        }
    }

    fn wrong(&self, key: &str, want: &str, v: &GgufValue) -> TokenizerError {
        self.err(
            key,
            format!("expected {want}, found a value of type {}", v.value_type()),
        )
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>, TokenizerError> {
        match (self.get)(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a string", v)),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, TokenizerError> {
        match (self.get)(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a bool", v)),
        }
    }

    fn opt_u32(&self, key: &str) -> Result<Option<u32>, TokenizerError> {
        match (self.get)(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(x) => u32::try_from(x)
                    .map(Some)
                    .map_err(|_| self.err(key, format!("{x} does not fit in 32 bits"))),
                None => match v.as_i64() {
                    // llama.cpp stores "no token" as -1 in some converters.
                    Some(x) if x < 0 => Ok(None),
                    _ => Err(self.wrong(key, "an unsigned integer", v)),
                },
            },
        }
    }

    fn opt_str_array(&self, key: &str) -> Result<Option<Vec<String>>, TokenizerError> {
        match (self.get)(key) {
            None => Ok(None),
            Some(v) => v
                .as_str_array()
                .map(|a| Some(a.into_iter().map(str::to_string).collect()))
                .ok_or_else(|| self.wrong(key, "an array of strings", v)),
        }
    }

    fn opt_num_array(&self, key: &str, want: &str) -> Result<Option<Vec<f64>>, TokenizerError> {
        let Some(v) = (self.get)(key) else {
            return Ok(None);
        };
        let items = v.as_array().ok_or_else(|| self.wrong(key, want, v))?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push(item.as_f64().ok_or_else(|| {
                self.err(
                    key,
                    format!(
                        "expected {want}, element {i} is of type {}",
                        item.value_type()
                    ),
                )
            })?);
        }
        Ok(Some(out))
    }

    fn vocab(&self) -> Result<GgufVocab, TokenizerError> {
        const MODEL: &str = "tokenizer.ggml.model";
        let model = self
            .opt_str(MODEL)?
            .ok_or_else(|| self.err(MODEL, "missing (the file has no tokenizer)"))?
            .to_string();
        const TOKENS: &str = "tokenizer.ggml.tokens";
        let tokens = self
            .opt_str_array(TOKENS)?
            .ok_or_else(|| self.err(TOKENS, "missing"))?;
        let token_types =
            match self.opt_num_array("tokenizer.ggml.token_type", "an array of i32")? {
                None => None,
                Some(v) => {
                    let mut out = Vec::with_capacity(v.len());
                    for (i, x) in v.into_iter().enumerate() {
                        if x.fract() != 0.0 || x < i32::MIN as f64 || x > i32::MAX as f64 {
                            return Err(self.err(
                                "tokenizer.ggml.token_type",
                                format!("element {i} = {x} is not an i32"),
                            ));
                        }
                        out.push(x as i32);
                    }
                    Some(out)
                }
            };
        let scores = self
            .opt_num_array("tokenizer.ggml.scores", "an array of f32")?
            .map(|v| v.into_iter().map(|x| x as f32).collect());
        let merges = self.opt_str_array("tokenizer.ggml.merges")?;
        let id = |k: &str| self.opt_u32(&format!("tokenizer.ggml.{k}"));
        let special = SpecialIds {
            bos: id("bos_token_id")?,
            eos: id("eos_token_id")?,
            eot: id("eot_token_id")?,
            eom: id("eom_token_id")?,
            unk: id("unknown_token_id")?,
            sep: id("seperator_token_id")?,
            pad: id("padding_token_id")?,
            mask: id("mask_token_id")?,
            fim_pre: id("fim_pre_token_id")?.or(id("prefix_token_id")?),
            fim_suf: id("fim_suf_token_id")?.or(id("suffix_token_id")?),
            fim_mid: id("fim_mid_token_id")?.or(id("middle_token_id")?),
            fim_pad: id("fim_pad_token_id")?,
            fim_rep: id("fim_rep_token_id")?,
            fim_sep: id("fim_sep_token_id")?,
        };
        Ok(GgufVocab {
            model,
            pre: self.opt_str("tokenizer.ggml.pre")?.map(str::to_string),
            tokens,
            scores,
            token_types,
            merges,
            special,
            add_bos: self.opt_bool("tokenizer.ggml.add_bos_token")?,
            add_eos: self.opt_bool("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: self.opt_bool("tokenizer.ggml.add_space_prefix")?,
            chat_template: self.opt_str("tokenizer.chat_template")?.map(str::to_string),
        })
    }
}

/// Splits a merge line as llama.cpp does: at the first space after the first byte.
fn split_merge(m: &str) -> Option<(&str, &str)> {
    // Search bytes: byte 1 may be inside a multi-byte first character ("Ġ t").
    let pos = m.as_bytes().get(1..)?.iter().position(|&b| b == b' ')? + 1;
    Some((&m[..pos], &m[pos + 1..]))
}

impl Tokenizer {
    /// The tokenizer of a GGUF file (`tokenizer.ggml.*` metadata). Errors name the file and the
    /// metadata key.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let get = |k: &str| file.get(k);
        let name = file.path().display().to_string();
        let meta = Meta {
            source_name: name.clone(),
            get: &get,
        };
        let vocab = meta.vocab()?;
        Self::from_vocab(vocab).map_err(|e| match e {
            TokenizerError::Metadata { key, msg, .. } => TokenizerError::Metadata {
                source_name: name,
                key,
                msg,
            },
            TokenizerError::Vocab(msg) => TokenizerError::Metadata {
                source_name: name,
                key: "tokenizer.ggml.tokens".into(),
                msg,
            },
            other => other,
        })
    }

    /// The tokenizer of GGUF metadata given as a lookup function (for metadata not in a file).
    pub fn from_gguf_metadata<'a>(
        get: &'a dyn Fn(&str) -> Option<&'a GgufValue>,
    ) -> Result<Tokenizer, TokenizerError> {
        let meta = Meta {
            source_name: "<metadata>".into(),
            get,
        };
        Self::from_vocab(meta.vocab()?)
    }

    /// Builds a tokenizer from GGUF-style vocabulary parts, with llama.cpp's defaults for
    /// whatever is unset.
    pub fn from_vocab(v: GgufVocab) -> Result<Tokenizer, TokenizerError> {
        let bad = |key: &str, msg: String| TokenizerError::Metadata {
            source_name: "<vocabulary>".into(),
            key: format!("tokenizer.ggml.{key}"),
            msg,
        };
        let n = v.tokens.len();
        if n == 0 {
            return Err(bad("tokens", "no tokens".into()));
        }
        if u32::try_from(n).is_err() {
            return Err(bad("tokens", format!("{n} tokens do not fit 32-bit ids")));
        }
        if let Some(t) = &v.token_types {
            if t.len() < n {
                return Err(bad(
                    "token_type",
                    format!("{} entries for {n} tokens", t.len()),
                ));
            }
        }
        if let Some(s) = &v.scores {
            if s.len() < n {
                return Err(bad("scores", format!("{} entries for {n} tokens", s.len())));
            }
        }
        let mut warnings = Vec::new();
        let mut tokens = v.tokens;
        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                warnings.push(format!("empty token at index {i}"));
                *t = format!("[EMPTY_{i}]");
            }
        }
        let attrs: Vec<u32> = match &v.token_types {
            Some(t) => t[..n]
                .iter()
                .map(|&x| attr::from_token_type(x.into()))
                .collect(),
            None => vec![attr::NORMAL; n],
        };
        let scores = match v.scores {
            Some(mut s) => {
                s.truncate(n);
                s
            }
            None => vec![0.0; n],
        };

        let (kind, mut special, pre_name, engine, piece_mode, clean_spaces, mut add_bos, mut add_eos) =
            match v.model.as_str() {
                "llama" => (
                    VocabKind::Spm,
                    SpecialIds {
                        bos: Some(1),
                        eos: Some(2),
                        unk: Some(0),
                        ..Default::default()
                    },
                    "default".to_string(),
                    Engine::Spm,
                    PieceMode::Metaspace,
                    false,
                    true,
                    false,
                ),
                "gpt2" => {
                    let pre = v.pre.clone().unwrap_or_default();
                    let info = if pre.is_empty() {
                        warnings.push(
                            "missing tokenizer.ggml.pre: using llama.cpp's 'default' pre-tokenizer; generation quality may be degraded".into(),
                        );
                        pre::default_pre()
                    } else {
                        match pre::lookup(&pre) {
                            Some(i) => i,
                            None => {
                                let w = format!(
                                    "unknown or unsupported pre-tokenizer '{pre}' (tokenizer.ggml.pre): using llama.cpp's 'default' regexes; tokens may differ from llama.cpp"
                                );
                                eprintln!("warning: {w}");
                                warnings.push(w);
                                pre::default_pre()
                            }
                        }
                    };
                    let merges = v.merges.as_ref().ok_or_else(|| {
                        bad(
                            "merges",
                            "missing (required for the gpt2 tokenizer model)".into(),
                        )
                    })?;
                    let hf = build_bpe(&tokens, &attrs, merges, &info, &mut warnings)?;
                    (
                        VocabKind::Bpe,
                        SpecialIds {
                            bos: Some(11),
                            eos: Some(11),
                            ..Default::default()
                        },
                        if pre.is_empty() { "default".into() } else { pre },
                        Engine::Hf(Box::new(hf)),
                        PieceMode::ByteLevel,
                        info.clean_spaces,
                        info.add_bos,
                        false,
                    )
                }
                other => {
                    return Err(bad(
                        "model",
                        format!(
                            "unsupported tokenizer model '{other}'; supported: gpt2 (byte-level BPE), llama (SentencePiece)"
                        ),
                    ))
                }
            };

        // Defaults out of range are disabled; ids from the file replace defaults when in range.
        let given = v.special;
        let slots: [(&str, &mut Option<u32>, Option<u32>); 14] = [
            ("bos", &mut special.bos, given.bos),
            ("eos", &mut special.eos, given.eos),
            ("eot", &mut special.eot, given.eot),
            ("eom", &mut special.eom, given.eom),
            ("unknown", &mut special.unk, given.unk),
            ("seperator", &mut special.sep, given.sep),
            ("padding", &mut special.pad, given.pad),
            ("mask", &mut special.mask, given.mask),
            ("fim_pre", &mut special.fim_pre, given.fim_pre),
            ("fim_suf", &mut special.fim_suf, given.fim_suf),
            ("fim_mid", &mut special.fim_mid, given.fim_mid),
            ("fim_pad", &mut special.fim_pad, given.fim_pad),
            ("fim_rep", &mut special.fim_rep, given.fim_rep),
            ("fim_sep", &mut special.fim_sep, given.fim_sep),
        ];
        for (name, slot, new) in slots {
            if slot.is_some_and(|id| id as usize >= n) {
                *slot = None;
            }
            if let Some(id) = new {
                if (id as usize) < n {
                    *slot = Some(id);
                } else {
                    warnings.push(format!(
                        "bad special token: tokenizer.ggml.{name}_token_id = {id} is out of range (vocabulary of {n})"
                    ));
                }
            }
        }
        if let Some(b) = v.add_bos {
            add_bos = b;
        }
        if let Some(b) = v.add_eos {
            add_eos = b;
        }
        let add_space_prefix = v.add_space_prefix.unwrap_or(kind == VocabKind::Spm);

        Self::finish(Parts {
            kind,
            pre: pre_name,
            tokens,
            scores,
            attrs,
            engine,
            piece_mode,
            special,
            extra_eog: vec![],
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            chat_template: v.chat_template,
            warnings,
        })
    }

    /// A tokenizer from a Hugging Face model directory: `tokenizer.json`, with
    /// `tokenizer_config.json` (chat template, BOS/EOS tokens, `add_bos_token`, ...), and the EOS
    /// ids of `generation_config.json` and `config.json` if present.
    pub fn from_hf_dir(dir: &Path) -> Result<Tokenizer, TokenizerError> {
        hf_dir::load(dir)
    }

    /// Common finishing steps: token map, special-token detection, EOG set, caches.
    fn finish(p: Parts) -> Result<Tokenizer, TokenizerError> {
        let Parts {
            kind,
            pre,
            tokens,
            scores,
            mut attrs,
            engine,
            piece_mode,
            mut special,
            extra_eog,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            chat_template,
            mut warnings,
        } = p;
        let n = tokens.len();
        let mut token_to_id = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            if t.is_empty() {
                continue;
            }
            if let Some(prev) = token_to_id.insert(t.clone(), i as u32) {
                return Err(TokenizerError::Vocab(format!(
                    "token {t:?} appears twice (ids {prev} and {i})"
                )));
            }
        }

        // Auto-detect special tokens by their text, as llama.cpp does. llama.cpp walks a hash
        // map; we take the lowest id when several match.
        let detect = |slot: &mut Option<u32>, attrs: &mut Vec<u32>, names: &[&str]| {
            if slot.is_some() {
                return;
            }
            if let Some(id) = names
                .iter()
                .filter_map(|t| token_to_id.get(*t).copied())
                .min()
            {
                *slot = Some(id);
                attrs[id as usize] |= attr::CONTROL;
            }
        };
        detect(
            &mut special.eot,
            &mut attrs,
            &[
                "<|eot_id|>",
                "<|im_end|>",
                "<|end|>",
                "<end_of_turn>",
                "<|endoftext|>",
                "<|end_of_text|>",
                "<EOT>",
                "_<EOT>",
                "[EOT]",
                "<｜end▁of▁sentence｜>",
                "<end_of_utterance>",
            ],
        );
        detect(&mut special.eom, &mut attrs, &["<|eom_id|>"]);
        detect(
            &mut special.fim_pre,
            &mut attrs,
            &[
                "<|fim_prefix|>",
                "<fim-prefix>",
                "<fim_prefix>",
                "<｜fim▁begin｜>",
                "<PRE>",
                "▁<PRE>",
                "<|code_prefix|>",
                "<|prefix|>",
            ],
        );
        detect(
            &mut special.fim_suf,
            &mut attrs,
            &[
                "<|fim_suffix|>",
                "<fim-suffix>",
                "<fim_suffix>",
                "<｜fim▁hole｜>",
                "<SUF>",
                "▁<SUF>",
                "<|code_suffix|>",
                "<|suffix|>",
            ],
        );
        detect(
            &mut special.fim_mid,
            &mut attrs,
            &[
                "<|fim_middle|>",
                "<fim-middle>",
                "<fim_middle>",
                "<｜fim▁end｜>",
                "<MID>",
                "▁<MID>",
                "<|code_middle|>",
                "<|middle|>",
            ],
        );
        detect(
            &mut special.fim_pad,
            &mut attrs,
            &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
        );
        detect(
            &mut special.fim_rep,
            &mut attrs,
            &[
                "<|fim_repo|>",
                "<|repo_name|>",
                "<fim-repo>",
                "<REPO>",
                "<reponame>",
            ],
        );
        detect(&mut special.fim_sep, &mut attrs, &["<|file_sep|>"]);

        // End-of-generation tokens.
        let mut eog: BTreeSet<u32> = [special.fim_pad, special.fim_rep, special.fim_sep]
            .into_iter()
            .flatten()
            .collect();
        const EOG_TEXTS: &[&str] = &[
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<|return|>",
            "<|call|>",
            "<|flush|>",
            "<|calls|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "</s>",
            "<|eom_id|>",
            "<EOT>",
            "_<EOT>",
            "[EOT]",
            "[EOS]",
            "<|end_of_text|>",
            "<end_of_utterance>",
            "<eos>",
            "<turn|>",
            "<|tool_response>",
            "<｜end▁of▁sentence｜>",
            "[e~[",
        ];
        for t in EOG_TEXTS {
            if let Some(&id) = token_to_id.get(*t) {
                eog.insert(id);
                attrs[id as usize] |= attr::CONTROL;
            }
        }
        // gpt-oss: these are always rendered.
        for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(&id) = token_to_id.get(t) {
                attrs[id as usize] = attr::USER_DEFINED;
            }
        }
        for id in [special.eos, special.eot, special.eom]
            .into_iter()
            .flatten()
        {
            eog.insert(id);
        }
        for id in extra_eog {
            if (id as usize) < n {
                eog.insert(id);
            }
        }
        {
            // o200k_harmony / solar-open: "<|end|>" is not EOG there. gemma4 / plamo: "</s>" is
            // a normal token.
            let find = |eog: &BTreeSet<u32>, t: &str| {
                eog.iter().copied().find(|&id| tokens[id as usize] == t)
            };
            let has = |eog: &BTreeSet<u32>, t: &str| find(eog, t).is_some();
            let call = has(&eog, "<|call|>") || has(&eog, "<|calls|>");
            let drop_end = call && (has(&eog, "<|return|>") || has(&eog, "<|flush|>"));
            let drop_s = has(&eog, "<|tool_response>") || has(&eog, "<|plamo:eos|>");
            if let (true, Some(end_id)) = (drop_end, find(&eog, "<|end|>")) {
                eog.remove(&end_id);
                attrs[end_id as usize] = attr::USER_DEFINED;
            }
            if let (true, Some(s_id)) = (drop_s, find(&eog, "</s>")) {
                eog.remove(&s_id);
                attrs[s_id as usize] = attr::NORMAL;
            }
        }

        let mut special_cache: Vec<u32> = (0..n as u32)
            .filter(|&id| {
                attrs[id as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        special_cache.sort_by(|&a, &b| {
            tokens[b as usize]
                .len()
                .cmp(&tokens[a as usize].len())
                .then(a.cmp(&b))
        });

        let pieces = (0..n)
            .map(|i| piece_of(&tokens[i], attrs[i], piece_mode))
            .collect();

        if add_bos && special.bos.is_none() {
            warnings.push("add_bos is set but the vocabulary has no BOS token".into());
        }

        Ok(Tokenizer {
            kind,
            pre,
            tokens,
            scores,
            attrs,
            token_to_id,
            special_cache,
            pieces,
            engine,
            special,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            chat_template,
            warnings,
        })
    }

    /// Tokenizes `text` like llama.cpp's `llama_tokenize(vocab, text, add_special = add_bos,
    /// parse_special)`: BOS is prepended iff `add_bos` and the model's [`add_bos`](Self::add_bos)
    /// flag are both set (EOS is appended likewise for models whose `add_eos` flag is set);
    /// with `parse_special`, control tokens written in the text (`<|im_start|>`) become their
    /// ids, else they are tokenized as plain text.
    pub fn encode(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let fragments = self.partition(text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos && self.add_bos {
            out.push(
                self.special
                    .bos
                    .ok_or(TokenizerError::MissingSpecial("BOS"))?,
            );
        }
        match &self.engine {
            Engine::Spm => {
                let mut prev_special = true;
                let mut buf = String::new();
                for f in fragments {
                    match f {
                        Fragment::Text(s) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push(' ');
                            }
                            buf.push_str(s);
                            let escaped = buf.replace(' ', "\u{2581}");
                            self.spm_tokenize(&escaped, &mut out)?;
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Engine::Hf(hf) => {
                for f in fragments {
                    match f {
                        Fragment::Text(s) => hf_raw_encode(hf, s, &mut out)?,
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_bos && self.add_eos {
            out.push(
                self.special
                    .eos
                    .ok_or(TokenizerError::MissingSpecial("EOS"))?,
            );
        }
        Ok(out)
    }

    fn spm_tokenize(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        spm::tokenize(
            text,
            &self.token_to_id,
            |id| self.scores[id as usize],
            self.tokens.len(),
            |b| self.byte_to_token(b),
            out,
        )
        .map_err(TokenizerError::NoByteToken)
    }

    /// llama.cpp's `byte_to_token` for SentencePiece: `<0xXX>`, else the byte as a one-character
    /// token, else (where llama.cpp would throw) the unknown token.
    fn byte_to_token(&self, b: u8) -> Option<u32> {
        self.token_to_id
            .get(&format!("<0x{b:02X}>"))
            .copied()
            .or_else(|| {
                if b.is_ascii() {
                    self.token_to_id.get(&(b as char).to_string()).copied()
                } else {
                    None
                }
            })
            .or(self.special.unk)
    }

    /// llama.cpp's `tokenizer_st_partition`: splits out special tokens, longest first.
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let mut frags = if text.is_empty() {
            vec![]
        } else {
            vec![Fragment::Text(text)]
        };
        for &id in &self.special_cache {
            let a = self.attrs[id as usize];
            if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let tok = self.tokens[id as usize].as_str();
            if tok.is_empty()
                || !frags
                    .iter()
                    .any(|f| matches!(f, Fragment::Text(s) if s.contains(tok)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let mut rest = match f {
                    Fragment::Text(s) => s,
                    tok_frag => {
                        next.push(tok_frag);
                        continue;
                    }
                };
                while let Some(m) = rest.find(tok) {
                    let mut left = &rest[..m];
                    if a & attr::LSTRIP != 0 {
                        left = left.trim_end_matches(|c: char| c.is_ascii() && c_isspace(c as u8));
                    }
                    if !left.is_empty() {
                        next.push(Fragment::Text(left));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[m + tok.len()..];
                    if a & attr::RSTRIP != 0 {
                        rest =
                            rest.trim_start_matches(|c: char| c.is_ascii() && c_isspace(c as u8));
                    }
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            frags = next;
        }
        frags
    }

    /// The bytes of one token as llama.cpp's `llama_token_to_piece(..., special = true)` gives
    /// them: special tokens as their text, byte tokens as their byte, normal tokens decoded from
    /// the byte-level or `▁` form. A piece may be part of a UTF-8 character: buffer the bytes
    /// when streaming. Out-of-range ids give an empty piece.
    pub fn token_to_piece(&self, id: u32) -> Vec<u8> {
        self.piece(id).to_vec()
    }

    /// [`token_to_piece`](Self::token_to_piece) without copying.
    pub fn piece(&self, id: u32) -> &[u8] {
        self.pieces
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Decodes ids to text with special tokens rendered (llama.cpp's `llama_detokenize(...,
    /// remove_special = false, unparse_special = true)`); invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.detokenize(ids, false, true)).into_owned()
    }

    /// llama.cpp's `llama_detokenize` as bytes: `remove_special` drops a leading BOS and
    /// trailing EOS the model adds itself; `unparse_special` renders control tokens (else they
    /// are left out).
    pub fn detokenize(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> Vec<u8> {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if remove_special
            && self.add_bos
            && self.special.bos.is_some_and(|b| ids.first() == Some(&b))
        {
            remove_space = false;
            ids = &ids[1..];
        }
        if remove_special
            && self.add_eos
            && self.special.eos.is_some_and(|e| ids.last() == Some(&e))
        {
            ids = &ids[..ids.len() - 1];
        }
        let mut out = Vec::new();
        for &id in ids {
            let a = self.attrs.get(id as usize).copied().unwrap_or(0);
            let piece: &[u8] = if !unparse_special && a & (attr::UNKNOWN | attr::CONTROL) != 0 {
                &[]
            } else {
                self.piece(id)
            };
            let piece = if remove_space && piece.first() == Some(&b' ') {
                &piece[1..]
            } else {
                piece
            };
            out.extend_from_slice(piece);
            remove_space = false;
        }
        if self.clean_spaces {
            clean_up_spaces(&mut out);
        }
        out
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The BOS token, if the vocabulary has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.special.bos
    }

    /// The EOS token, if the vocabulary has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.special.eos
    }

    /// The EOT (end of turn) token, given or detected by text.
    pub fn eot_id(&self) -> Option<u32> {
        self.special.eot
    }

    /// All special ids (given or detected).
    pub fn special_ids(&self) -> &SpecialIds {
        &self.special
    }

    /// Whether the model wants BOS prepended (`tokenizer.ggml.add_bos_token`, or the default of
    /// its tokenizer type and pre-tokenizer).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether the model wants EOS appended.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Whether a token ends generation (llama.cpp's `llama_vocab_is_eog`).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// All end-of-generation ids.
    pub fn eog_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.eog.iter().copied()
    }

    /// The chat template (Jinja), if the model has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The tokenization algorithm.
    pub fn kind(&self) -> VocabKind {
        self.kind
    }

    /// `tokenizer.ggml.pre` (`"hf"` for a tokenizer from a Hugging Face directory).
    pub fn pre(&self) -> &str {
        &self.pre
    }

    /// The text of a token as stored in the vocabulary (byte-level or `▁` form).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a token text, if it is in the vocabulary.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// The attribute bits of a token ([`attr`]), 0 for out-of-range ids.
    pub fn token_attr(&self, id: u32) -> u32 {
        self.attrs.get(id as usize).copied().unwrap_or(0)
    }

    /// Whether a token is a control token (rendered only when asked for).
    pub fn is_control(&self, id: u32) -> bool {
        self.token_attr(id) & attr::CONTROL != 0
    }

    /// Problems noticed while loading that did not stop it (unknown pre-tokenizer, dropped
    /// merges, out-of-range special ids, ...).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The `tokenizers` pipeline behind a byte-level BPE or Hugging Face tokenizer.
    pub fn hf_tokenizer(&self) -> Option<&tokenizers::Tokenizer> {
        match &self.engine {
            Engine::Hf(t) => Some(t),
            Engine::Spm => None,
        }
    }

    /// This tokenizer as a Hugging Face `tokenizer.json` string (byte-level BPE only).
    pub fn to_hf_json(&self, pretty: bool) -> Result<String, TokenizerError> {
        hf_dir::to_json(self, pretty)
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` (special tokens, `add_bos_token`,
    /// chat template) into `dir`, which [`Tokenizer::from_hf_dir`] reads back to an equivalent
    /// tokenizer. Byte-level BPE only.
    pub fn save_hf_dir(&self, dir: &Path) -> Result<(), TokenizerError> {
        hf_dir::save(self, dir)
    }
}

/// Runs a Hugging Face pipeline (normalizer, pre-tokenizer, model) on one raw fragment, without
/// the added-token matching (done by [`Tokenizer::partition`]).
fn hf_raw_encode(
    hf: &tokenizers::Tokenizer,
    text: &str,
    out: &mut Vec<u32>,
) -> Result<(), TokenizerError> {
    let mut pts = PreTokenizedString::from(text);
    if let Some(n) = hf.get_normalizer() {
        pts.normalize(|s| n.normalize(s)).map_err(engine_err)?;
    }
    if let Some(p) = hf.get_pre_tokenizer() {
        p.pre_tokenize(&mut pts).map_err(engine_err)?;
    }
    let model = hf.get_model();
    pts.tokenize(|s| model.tokenize(s.get()))
        .map_err(engine_err)?;
    for (_, _, toks) in pts.get_splits(OffsetReferential::Original, OffsetType::None) {
        if let Some(toks) = toks {
            out.extend(toks.iter().map(|t| t.id));
        }
    }
    Ok(())
}

/// The piece of one token (`llama_token_to_piece` with `special = true`).
fn piece_of(text: &str, a: u32, mode: PieceMode) -> Vec<u8> {
    if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
        return text.as_bytes().to_vec();
    }
    if a & attr::NORMAL != 0 {
        return match mode {
            PieceMode::ByteLevel => bytes::decode_byte_level(text),
            PieceMode::Metaspace => text.replace('\u{2581}', " ").into_bytes(),
            PieceMode::Raw => text.as_bytes().to_vec(),
        };
    }
    if a & attr::BYTE != 0 {
        return match text.get(3..5).and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(b) => vec![b],
            None => text.as_bytes().to_vec(),
        };
    }
    Vec::new()
}

/// llama.cpp's `clean_spaces` passes over detokenized bytes: drop the space before `?!.,`,
/// around a lone apostrophe, and before `'s 'm 're 've`. A literal port of the in-place loops of
/// `llama_vocab::impl::detokenize`, index semantics included.
fn clean_up_spaces(text: &mut Vec<u8>) {
    // First pass: " ?", " !", " .", " ,".
    let total1 = text.len();
    let mut total = usize::from(total1 > 0);
    for i in 1..total1 {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    // Second pass: strip a single apostrophe's surrounding spaces (" ' ").
    let total2 = total;
    total = usize::from(total2 > 0);
    let mut i = 1;
    while i < total2 {
        let x = text[i];
        if x == b'\'' && i + 1 < total2 && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    // Third pass: " 's", " 'm", " 're", " 've" lose the space (" 't", " 'd", " 'll" keep it).
    let total3 = total;
    total = usize::from(total3 > 0);
    for i in 1..total3 {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < total3 {
            let x1 = text[i + 1];
            if x1 == b's' || x1 == b'm' {
                total -= 1;
            } else if i + 2 < total3 {
                let x2 = text[i + 2];
                if (x1 == b'r' || x1 == b'v') && x2 == b'e' {
                    total -= 1;
                }
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}

/// Builds the byte-level BPE pipeline for a GGUF `gpt2` vocabulary: model from tokens and
/// merges, the pre type's split regexes then GPT-2 byte mapping, byte-level decoder, and the
/// control / user-defined tokens as added tokens (used when saved as `tokenizer.json`).
fn build_bpe(
    tokens: &[String],
    attrs: &[u32],
    merges: &[String],
    info: &pre::PreInfo,
    warnings: &mut Vec<String>,
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut pairs = Vec::with_capacity(merges.len());
    let mut dropped = 0usize;
    for m in merges {
        match split_merge(m) {
            Some((a, b))
                if vocab.contains_key(a)
                    && vocab.contains_key(b)
                    && vocab.contains_key(&format!("{a}{b}")) =>
            {
                pairs.push((a.to_string(), b.to_string()))
            }
            _ => dropped += 1,
        }
    }
    if dropped > 0 {
        warnings.push(format!(
            "{dropped} of {} merges dropped: not of the form 'left right' with both halves and the result in the vocabulary",
            merges.len()
        ));
    }
    let model = BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .ignore_merges(info.ignore_merges)
        .build()
        .map_err(engine_err)?;
    let mut pre: Vec<PreTokenizerWrapper> = Vec::with_capacity(info.regexes.len() + 1);
    for r in info.regexes {
        let split = Split::new(
            SplitPattern::Regex(r.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| TokenizerError::Engine(format!("pre-tokenizer regex {r:?}: {e}")))?;
        pre.push(split.into());
    }
    pre.push(ByteLevel::new(false, false, false).into());
    let mut hf = tokenizers::Tokenizer::new(model);
    hf.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(pre))));
    hf.with_decoder(Some(ByteLevel::new(false, false, false)));
    let added = |control: bool| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(attrs)
            .filter(|(_, &a)| {
                a & (attr::CONTROL | attr::USER_DEFINED) != 0 && (a & attr::CONTROL != 0) == control
            })
            .map(|(t, &a)| {
                AddedToken::from(t.clone(), control)
                    .normalized(false)
                    .lstrip(a & attr::LSTRIP != 0)
                    .rstrip(a & attr::RSTRIP != 0)
            })
            .collect()
    };
    hf.add_special_tokens(&added(true));
    hf.add_tokens(&added(false));
    Ok(hf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny SentencePiece vocabulary: byte tokens, a few pieces with scores, controls.
    fn spm_vocab() -> GgufVocab {
        let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
        let mut types = vec![2, 3, 3];
        let mut scores = vec![0.0f32, 0.0, 0.0];
        for b in 0..=255u32 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
            scores.push(0.0);
        }
        for (t, s) in [
            ("▁", -1.0f32),
            ("h", -3.0),
            ("e", -3.0),
            ("l", -3.0),
            ("o", -3.0),
            ("w", -3.0),
            ("r", -3.0),
            ("d", -3.0),
            ("▁h", -2.0),
            ("ll", -1.5),
            ("▁he", -1.2),
            ("▁hell", -1.1),
            ("▁hello", -0.5),
            ("▁w", -2.0),
            ("or", -1.8),
            ("▁wor", -1.0),
            ("▁world", -0.4),
            ("ld", -1.9),
            ("<|user|>", 0.0),
        ] {
            tokens.push(t.into());
            types.push(if t == "<|user|>" { 4 } else { 1 });
            scores.push(s);
        }
        GgufVocab {
            model: "llama".into(),
            tokens,
            scores: Some(scores),
            token_types: Some(types),
            ..Default::default()
        }
    }

    #[test]
    fn spm_encode_decode() {
        let t = Tokenizer::from_vocab(spm_vocab()).unwrap();
        assert_eq!(t.kind(), VocabKind::Spm);
        assert!(t.add_bos() && !t.add_eos());
        assert_eq!((t.bos_id(), t.eos_id()), (Some(1), Some(2)));
        let id = |s: &str| t.token_id(s).unwrap();
        let ids = t.encode("hello world", true, false).unwrap();
        assert_eq!(ids, vec![1, id("▁hello"), id("▁world")]);
        assert_eq!(t.decode(&ids), "<s> hello world");
        assert_eq!(
            String::from_utf8(t.detokenize(&ids, true, false)).unwrap(),
            " hello world"
        );
        assert_eq!(t.decode(&ids[1..]), "hello world");
        // Unknown characters fall back to bytes: "é" = C3 A9.
        let ids = t.encode("hé", false, false).unwrap();
        assert_eq!(ids, vec![id("▁h"), 3 + 0xC3, 3 + 0xA9]);
        assert_eq!(t.decode(&ids), "hé");
        // User-defined tokens are split out even without parse_special; a space is
        // prepended to the text after a special token.
        let ids = t.encode("<|user|>hello", false, false).unwrap();
        assert_eq!(ids, vec![id("<|user|>"), id("▁hello")]);
        // Control tokens only with parse_special.
        let ids = t.encode("</s>", false, true).unwrap();
        assert_eq!(ids, vec![2]);
        let ids = t.encode("</s>", false, false).unwrap();
        assert!(ids.len() > 1 && !ids.contains(&2));
        assert!(t.is_eog(2) && !t.is_eog(1));
        assert_eq!(t.encode("", true, true).unwrap(), vec![1]);
        assert!(t.encode("", false, true).unwrap().is_empty());
    }

    #[test]
    fn tokenizer_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Tokenizer>();
    }

    #[test]
    fn clean_spaces_like_llama_cpp() {
        let mut v = b"Hello , world ! it 's a ' quote ' don 't".to_vec();
        clean_up_spaces(&mut v);
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "Hello, world! it's a'quote'don 't"
        );
        // The space after a stripped apostrophe is zeroed in place, so it no longer counts as
        // the space before the next apostrophe (as in llama.cpp).
        let mut v = b"a ' ' b".to_vec();
        clean_up_spaces(&mut v);
        assert_eq!(v, b"a'' b");
        for s in ["", " ", "x", " ,", "'", " ' "] {
            let mut v = s.as_bytes().to_vec();
            clean_up_spaces(&mut v);
        }
    }

    #[test]
    fn merge_split() {
        assert_eq!(split_merge("Ġ t"), Some(("Ġ", "t")));
        assert_eq!(split_merge("  a"), Some((" ", "a")));
        assert_eq!(split_merge("Ġ Ġ"), Some(("Ġ", "Ġ")));
        assert_eq!(split_merge("ab"), None);
        assert_eq!(split_merge(""), None);
    }

    #[test]
    fn metadata_errors_name_the_key() {
        let values: HashMap<&str, GgufValue> = HashMap::from([
            ("tokenizer.ggml.model", GgufValue::String("gpt2".into())),
            ("tokenizer.ggml.tokens", GgufValue::U32(3)),
        ]);
        let get = |k: &str| values.get(k);
        let e = Tokenizer::from_gguf_metadata(&get).unwrap_err().to_string();
        assert!(
            e.contains("tokenizer.ggml.tokens") && e.contains("array of strings"),
            "{e}"
        );

        let values: HashMap<&str, GgufValue> = HashMap::from([
            ("tokenizer.ggml.model", GgufValue::String("bert".into())),
            (
                "tokenizer.ggml.tokens",
                GgufValue::Array(
                    crate::gguf::GgufValueType::String,
                    vec![GgufValue::String("a".into())],
                ),
            ),
        ]);
        let get = |k: &str| values.get(k);
        let e = Tokenizer::from_gguf_metadata(&get).unwrap_err().to_string();
        assert!(
            e.contains("bert") && e.contains("tokenizer.ggml.model"),
            "{e}"
        );

        let get = |_: &str| None;
        let e = Tokenizer::from_gguf_metadata(&get).unwrap_err().to_string();
        assert!(
            e.contains("tokenizer.ggml.model") && e.contains("missing"),
            "{e}"
        );
    }
}
