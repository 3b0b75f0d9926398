//! Hugging Face tokenizer directories: reading (`tokenizer.json`, `tokenizer_config.json`,
//! `generation_config.json`, `config.json`, `chat_template.jinja`) and writing
//! (`tokenizer.json` + `tokenizer_config.json`).

use std::path::Path;
use std::str::FromStr;

use serde_json::{json, Value};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::PostProcessorWrapper;

use super::{attr, Engine, Parts, PieceMode, SpecialIds, Tokenizer, TokenizerError, VocabKind};

fn read_text(path: &Path) -> Result<String, TokenizerError> {
    std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a JSON file that may be absent (`Ok(None)`); a present but malformed one is an error.
fn read_json_opt(path: &Path) -> Result<Option<Value>, TokenizerError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = read_text(path)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TokenizerError::File {
            path: path.to_path_buf(),
            msg: format!("not valid JSON: {e}"),
        })
}

/// Whether a component (normalizer, pre-tokenizer, decoder) or any member of a `Sequence` of
/// them satisfies `pred`.
fn any_component(v: &Value, pred: &dyn Fn(&Value) -> bool) -> bool {
    if v.is_null() {
        return false;
    }
    if pred(v) {
        return true;
    }
    ["normalizers", "pretokenizers", "decoders"]
        .iter()
        .filter_map(|k| v.get(*k).and_then(Value::as_array))
        .flatten()
        .any(|c| any_component(c, pred))
}

fn is_type(v: &Value, ty: &str) -> bool {
    v.get("type").and_then(Value::as_str) == Some(ty)
}

/// A special token given in `tokenizer_config.json` as a string or as `{"content": ...}`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// Token ids given as one integer or a list.
fn ids_of(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .into_iter()
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
            .collect(),
        _ => vec![],
    }
}

fn opt_bool(cfg: Option<&Value>, key: &str, path: &Path) -> Result<Option<bool>, TokenizerError> {
    match cfg.and_then(|c| c.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(TokenizerError::File {
            path: path.to_path_buf(),
            msg: format!("'{key}' should be true or false, found {other}"),
        }),
    }
}

/// The chat template: `tokenizer_config.json`'s `chat_template` (a string, or a list of named
/// templates of which "default" or the first is taken), else `chat_template.jinja`, else
/// `chat_template.json`.
fn chat_template(
    dir: &Path,
    cfg: Option<&Value>,
    cfg_path: &Path,
) -> Result<Option<String>, TokenizerError> {
    match cfg.and_then(|c| c.get("chat_template")) {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => return Ok(Some(s.clone())),
        Some(Value::Array(list)) => {
            let named = |name: Option<&str>| {
                list.iter()
                    .find(|e| name.is_none() || e.get("name").and_then(Value::as_str) == name)
            };
            let pick = named(Some("default")).or_else(|| named(None));
            return match pick.and_then(|e| e.get("template")).and_then(Value::as_str) {
                Some(t) => Ok(Some(t.to_string())),
                None => Err(TokenizerError::File {
                    path: cfg_path.to_path_buf(),
                    msg: "'chat_template' list has no {\"name\", \"template\"} entry".into(),
                }),
            };
        }
        Some(other) => {
            return Err(TokenizerError::File {
                path: cfg_path.to_path_buf(),
                msg: format!("'chat_template' should be a string, found {other}"),
            })
        }
    }
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return read_text(&jinja).map(Some);
    }
    let json_path = dir.join("chat_template.json");
    if let Some(v) = read_json_opt(&json_path)? {
        if let Some(t) = v.get("chat_template").and_then(Value::as_str) {
            return Ok(Some(t.to_string()));
        }
    }
    Ok(None)
}

pub(super) fn load(dir: &Path) -> Result<Tokenizer, TokenizerError> {
    let tj_path = dir.join("tokenizer.json");
    if !tj_path.is_file() {
        let msg = if dir.join("tokenizer.model").is_file() {
            "no tokenizer.json (a SentencePiece tokenizer.model alone is not supported; convert it with transformers first)"
        } else {
            "no tokenizer.json"
        };
        if !dir.is_dir() {
            return Err(TokenizerError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
            });
        }
        return Err(TokenizerError::File {
            path: dir.to_path_buf(),
            msg: msg.into(),
        });
    }
    let text = read_text(&tj_path)?;
    let tj: Value = serde_json::from_str(&text).map_err(|e| TokenizerError::File {
        path: tj_path.clone(),
        msg: format!("not valid JSON: {e}"),
    })?;
    let hf = tokenizers::Tokenizer::from_str(&text).map_err(|e| TokenizerError::File {
        path: tj_path.clone(),
        msg: format!("not a tokenizer the tokenizers crate can read: {e}"),
    })?;

    // Vocabulary by id (holes, if any, become unused empty tokens).
    let vocab = hf.get_vocab(true);
    let n = vocab.values().max().map_or(0, |&m| m as usize + 1);
    if n == 0 {
        return Err(TokenizerError::File {
            path: tj_path,
            msg: "the vocabulary is empty".into(),
        });
    }
    let mut tokens = vec![String::new(); n];
    for (t, id) in vocab {
        tokens[id as usize] = t;
    }
    let mut attrs: Vec<u32> = tokens
        .iter()
        .map(|t| {
            if t.is_empty() {
                attr::UNUSED
            } else {
                attr::NORMAL
            }
        })
        .collect();

    let model = &tj["model"];
    let byte_fallback = model.get("byte_fallback").and_then(Value::as_bool) == Some(true);
    let decoder = &tj["decoder"];
    let pre_tok = &tj["pre_tokenizer"];
    let normalizer = &tj["normalizer"];
    let piece_mode = if any_component(decoder, &|c| is_type(c, "ByteLevel"))
        || any_component(pre_tok, &|c| is_type(c, "ByteLevel"))
    {
        PieceMode::ByteLevel
    } else if any_component(decoder, &|c| {
        is_type(c, "Metaspace") || is_type(c, "ByteFallback") || is_type(c, "Replace")
    }) || any_component(pre_tok, &|c| is_type(c, "Metaspace"))
        || byte_fallback
    {
        PieceMode::Metaspace
    } else {
        PieceMode::Raw
    };
    let add_space_prefix = any_component(normalizer, &|c| {
        is_type(c, "Prepend") && c.get("prepend").and_then(Value::as_str) == Some("\u{2581}")
    }) || any_component(pre_tok, &|c| {
        is_type(c, "Metaspace")
            && match c.get("prepend_scheme").and_then(Value::as_str) {
                Some(s) => s == "always" || s == "first",
                None => c.get("add_prefix_space").and_then(Value::as_bool) == Some(true),
            }
    });
    if piece_mode == PieceMode::Metaspace && byte_fallback {
        for (t, a) in tokens.iter().zip(attrs.iter_mut()) {
            let b = t.as_bytes();
            if b.len() == 6
                && t.starts_with("<0x")
                && t.ends_with('>')
                && b[3].is_ascii_hexdigit()
                && b[4].is_ascii_hexdigit()
            {
                *a = attr::BYTE;
            }
        }
    }
    let unk_text = model.get("unk_token").and_then(Value::as_str);
    if let Some(id) = unk_text.and_then(|t| hf.token_to_id(t)) {
        attrs[id as usize] = attr::UNKNOWN;
    }
    if let Some(added) = tj.get("added_tokens").and_then(Value::as_array) {
        for t in added {
            let Some(id) = t.get("id").and_then(Value::as_u64) else {
                continue;
            };
            let Some(a) = attrs.get_mut(id as usize) else {
                continue;
            };
            let flag = |k: &str| t.get(k).and_then(Value::as_bool) == Some(true);
            *a = if flag("special") {
                attr::CONTROL
            } else {
                attr::USER_DEFINED
            };
            if flag("lstrip") {
                *a |= attr::LSTRIP;
            }
            if flag("rstrip") {
                *a |= attr::RSTRIP;
            }
        }
    }

    let cfg_path = dir.join("tokenizer_config.json");
    let cfg = read_json_opt(&cfg_path)?;
    let gen = read_json_opt(&dir.join("generation_config.json"))?;
    let conf = read_json_opt(&dir.join("config.json"))?;
    let by_text = |key: &str| {
        token_text(cfg.as_ref().and_then(|c| c.get(key))).and_then(|t| hf.token_to_id(&t))
    };
    let first_id = |key: &str| {
        [gen.as_ref(), conf.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|v| ids_of(v.get(key)).first().copied())
    };
    let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
    let special = SpecialIds {
        bos: in_range(by_text("bos_token").or_else(|| first_id("bos_token_id"))),
        eos: in_range(by_text("eos_token").or_else(|| first_id("eos_token_id"))),
        unk: in_range(by_text("unk_token").or_else(|| unk_text.and_then(|t| hf.token_to_id(t)))),
        pad: in_range(by_text("pad_token").or_else(|| first_id("pad_token_id"))),
        sep: in_range(by_text("sep_token")),
        mask: in_range(by_text("mask_token")),
        ..Default::default()
    };
    let extra_eog: Vec<u32> = [gen.as_ref(), conf.as_ref()]
        .into_iter()
        .flatten()
        .flat_map(|v| ids_of(v.get("eos_token_id")))
        .collect();

    // add_bos / add_eos: tokenizer_config.json, else what the post-processor adds.
    let probe = hf
        .encode("", true)
        .map(|e| e.get_ids().to_vec())
        .unwrap_or_default();
    let add_bos = match opt_bool(cfg.as_ref(), "add_bos_token", &cfg_path)? {
        Some(b) => b,
        None => special.bos.is_some() && probe.first().copied() == special.bos,
    };
    let add_eos = match opt_bool(cfg.as_ref(), "add_eos_token", &cfg_path)? {
        Some(b) => b,
        None => {
            special.eos.is_some()
                && probe.last().copied() == special.eos
                && (probe.len() >= 2 || !add_bos)
        }
    };
    let clean_spaces =
        opt_bool(cfg.as_ref(), "clean_up_tokenization_spaces", &cfg_path)?.unwrap_or(false);
    let chat_template = chat_template(dir, cfg.as_ref(), &cfg_path)?;

    Tokenizer::finish(Parts {
        kind: VocabKind::Bpe,
        pre: "hf".into(),
        scores: vec![0.0; n],
        tokens,
        attrs,
        engine: Engine::Hf(Box::new(hf)),
        piece_mode,
        special,
        extra_eog,
        add_bos,
        add_eos,
        add_space_prefix,
        clean_spaces,
        chat_template,
        warnings: vec![],
    })
}

/// The `tokenizer.json` of a byte-level BPE tokenizer, with a post-processor adding BOS/EOS when
/// the model's flags ask for them.
pub(super) fn to_json(t: &Tokenizer, pretty: bool) -> Result<String, TokenizerError> {
    let Engine::Hf(hf) = &t.engine else {
        return Err(TokenizerError::Unsupported(
            "saving a SentencePiece (GGUF 'llama') tokenizer as tokenizer.json".into(),
        ));
    };
    let mut hf = hf.as_ref().clone();
    if hf.get_post_processor().is_none() && (t.add_bos || t.add_eos) {
        let text = |id: Option<u32>| id.and_then(|i| t.token_text(i)).map(str::to_string);
        let mut single = vec![];
        let mut specials = vec![];
        if let (true, Some(b), Some(id)) = (t.add_bos, text(t.special.bos), t.special.bos) {
            single.push(b.clone());
            specials.push((b, id));
        }
        single.push("$A".to_string());
        if let (true, Some(e), Some(id)) = (t.add_eos, text(t.special.eos), t.special.eos) {
            single.push(e.clone());
            specials.push((e, id));
        }
        // Token texts with spaces or ':' cannot be written in a template; tokenizer_config.json
        // still carries add_bos_token / add_eos_token then.
        if specials
            .iter()
            .all(|(s, _)| !s.contains(char::is_whitespace) && !s.contains(':'))
        {
            let mut pair = single.clone();
            pair.extend(single.iter().map(|p| {
                if p == "$A" {
                    "$B:1".to_string()
                } else {
                    format!("{p}:1")
                }
            }));
            let tp = TemplateProcessing::builder()
                .try_single(single.join(" "))
                .and_then(|b| b.try_pair(pair.join(" ")))
                .ok()
                .and_then(|b| b.special_tokens(specials).build().ok());
            if let Some(tp) = tp {
                hf.with_post_processor(Some(PostProcessorWrapper::Template(tp)));
            }
        }
    }
    hf.to_string(pretty).map_err(super::engine_err)
}

/// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`.
pub(super) fn save(t: &Tokenizer, dir: &Path) -> Result<(), TokenizerError> {
    let tj = to_json(t, true)?;
    std::fs::create_dir_all(dir).map_err(|source| TokenizerError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let text = |id: Option<u32>| match id.and_then(|i| t.token_text(i)) {
        Some(s) => Value::String(s.to_string()),
        None => Value::Null,
    };
    let mut cfg = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": t.add_bos,
        "add_eos_token": t.add_eos,
        "bos_token": text(t.special.bos),
        "eos_token": text(t.special.eos),
        "unk_token": text(t.special.unk),
        "pad_token": text(t.special.pad),
        "clean_up_tokenization_spaces": t.clean_spaces,
    });
    if let Some(ct) = &t.chat_template {
        cfg["chat_template"] = Value::String(ct.clone());
    }
    let cfg =
        serde_json::to_string_pretty(&cfg).map_err(|e| TokenizerError::Engine(e.to_string()))?;
    for (name, body) in [("tokenizer.json", tj), ("tokenizer_config.json", cfg)] {
        let path = dir.join(name);
        std::fs::write(&path, body).map_err(|source| TokenizerError::Io { path, source })?;
    }
    Ok(())
}
