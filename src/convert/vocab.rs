//! The tokenizer of a Hugging Face folder as GGUF metadata (`tokenizer.*`), written as llama.cpp's
//! converter writes it:
//!
//! - `tokenizer.model` (SentencePiece) present: `llama` vocabulary with the pieces' scores and
//!   types, `added_tokens.json` and `tokenizer_config.json`'s `added_tokens_decoder` applied;
//! - (Llama only) a `tokenizer.json` BPE with byte fallback: `llama` vocabulary, scores -1000;
//! - otherwise byte-level BPE (`gpt2`): tokens, token types, merges, and `tokenizer.ggml.pre`
//!   named by the hash of the token ids of llama.cpp's check text (`chkhsh`);
//!
//! then the special token ids, `add_bos`/`add_eos` flags and chat template (gguf-py's
//! `SpecialVocab`): from `tokenizer.json`'s post-processor, `tokenizer_config.json` and
//! `config.json`.

use super::chkhsh::{CHKHSH, CHKTXT};
use super::sha256::sha256_hex;
use super::spm_model;
use anyhow::{anyhow, bail, Context, Result};
use autoround_formats::gguf::{GgufValue, GgufValueType};
use autoround_formats::hf::Arch;
use serde_json::{Map, Value};
use std::path::Path;

const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("{}: not valid JSON", path.display()))
}

/// Python truthiness of a JSON value.
fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
    }
}

fn str_array(items: Vec<String>) -> GgufValue {
    GgufValue::Array(
        if items.is_empty() {
            GgufValueType::U8
        } else {
            GgufValueType::String
        },
        items.into_iter().map(GgufValue::String).collect(),
    )
}

fn i32_array(items: Vec<i32>) -> GgufValue {
    GgufValue::Array(
        if items.is_empty() {
            GgufValueType::U8
        } else {
            GgufValueType::I32
        },
        items.into_iter().map(GgufValue::I32).collect(),
    )
}

fn f32_array(items: Vec<f32>) -> GgufValue {
    GgufValue::Array(
        if items.is_empty() {
            GgufValueType::U8
        } else {
            GgufValueType::F32
        },
        items.into_iter().map(GgufValue::F32).collect(),
    )
}

/// Ordered metadata under construction; a repeated key keeps its place and takes the new value
/// (as gguf-py's writer does).
#[derive(Default)]
pub(crate) struct Kv(pub Vec<(String, GgufValue)>);

impl Kv {
    pub fn set(&mut self, key: impl Into<String>, v: GgufValue) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, old)) => *old = v,
            None => self.0.push((key, v)),
        }
    }
}

/// gguf-py's `SpecialVocab`.
struct SpecialVocab {
    merges: Vec<String>,
    load_merges: bool,
    n_vocab: Option<usize>,
    types: Vec<&'static str>,
    ids: Vec<(&'static str, u32)>,
    add: Vec<(&'static str, bool)>,
    chat_template: Option<Value>,
    lowercase: Option<bool>,
    strip_accents: Option<bool>,
}

impl SpecialVocab {
    fn load(dir: &Path, load_merges: bool, n_vocab: Option<usize>) -> Result<SpecialVocab> {
        let mut sv = SpecialVocab {
            merges: vec![],
            load_merges,
            n_vocab,
            types: vec!["bos", "eos", "unk", "sep", "pad", "cls", "mask"],
            ids: vec![],
            add: vec![],
            chat_template: None,
            lowercase: None,
            strip_accents: None,
        };
        sv.load_tokenizer_json(dir)?;
        sv.load_config_json(dir)?;
        if sv.load_merges && sv.merges.is_empty() {
            sv.merges_txt(dir)?;
        }
        Ok(sv)
    }

    fn set_add(&mut self, typ: &'static str, v: bool, only_if_unset: bool) {
        match self.add.iter_mut().find(|(t, _)| *t == typ) {
            Some((_, old)) => {
                if !only_if_unset {
                    *old = v
                }
            }
            None => self.add.push((typ, v)),
        }
    }

    fn get_add(&self, typ: &str) -> Option<bool> {
        self.add.iter().find(|(t, _)| *t == typ).map(|(_, v)| *v)
    }

    fn set_special(&mut self, typ: &'static str, tid: Option<&Value>) -> Result<()> {
        let Some(Value::Number(n)) = tid else {
            return Ok(());
        };
        let Some(id) = n.as_i64() else {
            return Ok(());
        };
        if id < 0 {
            bail!("invalid value for special token type {typ}: {id}");
        }
        if self.n_vocab.map_or(true, |n| (id as u64) < n as u64) {
            if !self.ids.iter().any(|(t, _)| *t == typ) {
                self.ids.push((typ, id as u32));
            }
        } else {
            eprintln!(
                "warning: special token type {typ}, id {id} out of range, must be under {} - skipping",
                self.n_vocab.unwrap_or(0)
            );
        }
        Ok(())
    }

    fn parse_normalizer(&mut self, n: &Value) {
        match n.get("type").and_then(Value::as_str) {
            Some("Lowercase") => self.lowercase = Some(true),
            Some("StripAccents") => self.strip_accents = Some(true),
            Some("BertNormalizer") => {
                if let Some(v) = n.get("lowercase").and_then(Value::as_bool) {
                    self.lowercase = Some(v);
                }
                if let Some(v) = n.get("strip_accents").and_then(Value::as_bool) {
                    self.strip_accents = Some(v);
                }
            }
            Some("Sequence") => {
                if let Some(list) = n.get("normalizers").and_then(Value::as_array) {
                    for x in list {
                        self.parse_normalizer(x);
                    }
                }
            }
            _ => {}
        }
    }

    fn load_tokenizer_json(&mut self, dir: &Path) -> Result<()> {
        let tj_path = dir.join("tokenizer.json");
        let tokenizer = read_json(&tj_path)?;
        let mut added_tokens: Vec<Value> = vec![];
        if let Some(tj) = &tokenizer {
            if self.load_merges {
                if let Some(merges) = tj
                    .get("model")
                    .and_then(|m| m.get("merges"))
                    .and_then(Value::as_array)
                {
                    self.merges = merges_of(merges)
                        .with_context(|| format!("{}: model.merges", tj_path.display()))?;
                }
            }
            if let Some(n) = tj.get("normalizer").filter(|n| truthy(Some(n))) {
                let n = n.clone();
                self.parse_normalizer(&n);
            }
            if let Some(a) = tj.get("added_tokens").and_then(Value::as_array) {
                added_tokens = a.clone();
            }
        }
        let tc_path = dir.join("tokenizer_config.json");
        let mut tc: Option<Map<String, Value>> = match read_json(&tc_path)? {
            Some(Value::Object(o)) => Some(o),
            Some(_) => bail!("{}: not a JSON object", tc_path.display()),
            None => None,
        };
        if let Some(tj) = &tokenizer {
            let get = |tc: &Option<Map<String, Value>>, k: &str| {
                tc.as_ref().and_then(|c| c.get(k)).cloned()
            };
            let mut special_bos = get(&tc, "bos_token");
            let mut special_cls = get(&tc, "cls_token");
            let mut special_eos = get(&tc, "eos_token");
            let mut special_sep = get(&tc, "sep_token");
            let tc_truthy =
                |tc: &Option<Map<String, Value>>| tc.as_ref().is_some_and(|m| !m.is_empty());
            if !truthy(special_bos.as_ref()) && truthy(special_cls.as_ref()) && tc_truthy(&tc) {
                special_bos = special_cls.clone();
                tc.as_mut()
                    .unwrap()
                    .insert("bos_token".into(), special_bos.clone().unwrap());
            }
            if !truthy(special_eos.as_ref()) && truthy(special_sep.as_ref()) && tc_truthy(&tc) {
                special_eos = special_sep.clone();
                tc.as_mut()
                    .unwrap()
                    .insert("eos_token".into(), special_eos.clone().unwrap());
            }
            if let Some(pp) = tj.get("post_processor").filter(|p| truthy(Some(p))) {
                let procs: Vec<Value> = match pp.get("processors").and_then(Value::as_array) {
                    Some(list) => list.clone(),
                    None => vec![pp.clone()],
                };
                for proc in procs {
                    match proc.get("type").and_then(Value::as_str) {
                        Some("ByteLevel") => {
                            self.set_add("bos", false, true);
                            self.set_add("eos", false, true);
                        }
                        Some("RobertaProcessing") => {
                            self.set_add("bos", true, false);
                            self.set_add("eos", true, false);
                            self.set_add("sep", true, false);
                            if !truthy(special_cls.as_ref()) && tc_truthy(&tc) {
                                special_cls = proc
                                    .get("cls")
                                    .and_then(|c| c.get(0))
                                    .cloned()
                                    .or(special_bos.clone());
                                tc.as_mut().unwrap().insert(
                                    "cls_token".into(),
                                    special_cls.clone().unwrap_or(Value::Null),
                                );
                            }
                            if !truthy(special_sep.as_ref()) && tc_truthy(&tc) {
                                special_sep = proc
                                    .get("sep")
                                    .and_then(|c| c.get(0))
                                    .cloned()
                                    .or(special_eos.clone());
                                tc.as_mut().unwrap().insert(
                                    "sep_token".into(),
                                    special_sep.clone().unwrap_or(Value::Null),
                                );
                            }
                        }
                        Some("TemplateProcessing") => {
                            let empty = vec![];
                            let single = proc
                                .get("single")
                                .and_then(Value::as_array)
                                .unwrap_or(&empty);
                            let pair = proc.get("pair").and_then(Value::as_array).unwrap_or(&empty);
                            let special_id = |e: &Value| -> Option<Value> {
                                e.get("SpecialToken")
                                    .and_then(|s| s.get("id"))
                                    .cloned()
                                    .filter(|v| truthy(Some(v)))
                            };
                            let mut special_first = None;
                            let mut special_last = None;
                            if single.len() > 1 {
                                special_first = special_id(&single[0]);
                                if let Some(first) = &special_first {
                                    let known = |b: &Option<Value>, c: &Option<Value>| {
                                        Some(first) == b.as_ref() || Some(first) == c.as_ref()
                                    };
                                    if !tc_truthy(&tc) {
                                        special_bos = Some(first.clone());
                                    } else if !known(&special_bos, &special_cls) {
                                        if !truthy(special_bos.as_ref()) {
                                            special_bos = Some(first.clone());
                                            tc.as_mut()
                                                .unwrap()
                                                .insert("bos_token".into(), first.clone());
                                        }
                                        if !truthy(special_cls.as_ref()) {
                                            special_cls = Some(first.clone());
                                            tc.as_mut()
                                                .unwrap()
                                                .insert("cls_token".into(), first.clone());
                                        }
                                    }
                                    let k = known(&special_bos, &special_cls);
                                    self.set_add("bos", k, false);
                                }
                                special_last = special_id(&single[single.len() - 1]);
                                if let Some(last) = &special_last {
                                    if !tc_truthy(&tc) {
                                        special_eos = Some(last.clone());
                                    } else if Some(last) != special_eos.as_ref() {
                                        if !self.types.contains(&"eot") {
                                            self.types.push("eot");
                                            tc.as_mut().unwrap().insert(
                                                "eot_token".into(),
                                                special_eos.clone().unwrap_or(Value::Null),
                                            );
                                        } else if !self.types.contains(&"eom") {
                                            self.types.push("eom");
                                            tc.as_mut().unwrap().insert(
                                                "eom_token".into(),
                                                special_eos.clone().unwrap_or(Value::Null),
                                            );
                                        }
                                        tc.as_mut()
                                            .unwrap()
                                            .insert("eos_token".into(), last.clone());
                                        special_eos = Some(last.clone());
                                    }
                                    let same = Some(last) == special_eos.as_ref();
                                    self.set_add("eos", same, false);
                                }
                            }
                            if !pair.is_empty() {
                                let seq_start = usize::from(
                                    special_first.is_some()
                                        && special_id(&pair[0]) == special_first,
                                );
                                let stop_trim = special_last.is_some()
                                    && special_id(&pair[pair.len() - 1]) == special_last;
                                let end = if stop_trim {
                                    pair.len().saturating_sub(1)
                                } else {
                                    pair.len()
                                };
                                let tp: Vec<Value> = if seq_start <= end {
                                    pair[seq_start..end].to_vec()
                                } else {
                                    vec![]
                                };
                                if !tp.is_empty() {
                                    let seq = |e: &Value| {
                                        e.get("Sequence")
                                            .and_then(|s| s.get("id"))
                                            .and_then(Value::as_str)
                                            .map(str::to_string)
                                    };
                                    let a = seq(&tp[0]);
                                    let b = seq(&tp[tp.len() - 1]);
                                    if a.as_deref() == Some("A")
                                        && b.as_deref() == Some("B")
                                        && tp.len() > 2
                                    {
                                        let mid = &tp[1..tp.len() - 1];
                                        let mut add_sep = false;
                                        let is_sep_or_eos = |v: &Value| {
                                            Some(v) == special_sep.as_ref()
                                                || Some(v) == special_eos.as_ref()
                                        };
                                        if let Some(e) = special_id(&mid[0]) {
                                            if is_sep_or_eos(&e) && special_last.is_none() {
                                                add_sep = true;
                                            }
                                        }
                                        if mid.len() == 2 {
                                            if let Some(e) = special_id(&mid[1]) {
                                                if is_sep_or_eos(&e) {
                                                    add_sep = true;
                                                }
                                            }
                                        }
                                        self.set_add("sep", add_sep, false);
                                        if add_sep
                                            && !truthy(special_sep.as_ref())
                                            && tc_truthy(&tc)
                                        {
                                            tc.as_mut().unwrap().insert(
                                                "sep_token".into(),
                                                special_eos.clone().unwrap_or(Value::Null),
                                            );
                                        }
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        let Some(tc) = tc.filter(|m| !m.is_empty()) else {
            return Ok(());
        };
        // Chat template: tokenizer_config.json, else chat_template.jinja (with additional
        // templates), else chat_template.json.
        let jinja = dir.join("chat_template.jinja");
        let mut alt: Option<Value> = None;
        if jinja.is_file() {
            let t = std::fs::read_to_string(&jinja)
                .with_context(|| format!("reading {}", jinja.display()))?;
            alt = Some(Value::String(t));
            let extra_dir = dir.join("additional_chat_templates");
            if let Ok(rd) = std::fs::read_dir(&extra_dir) {
                let mut extra: Vec<_> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "jinja"))
                    .collect();
                extra.sort();
                if !extra.is_empty() {
                    let mut list = vec![
                        serde_json::json!({"name": "default", "template": alt.take().unwrap()}),
                    ];
                    for p in extra {
                        let t = std::fs::read_to_string(&p)
                            .with_context(|| format!("reading {}", p.display()))?;
                        let stem = p
                            .file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        list.push(serde_json::json!({"name": stem, "template": t}));
                    }
                    alt = Some(Value::Array(list));
                }
            }
        } else if let Some(v) = read_json(&dir.join("chat_template.json"))? {
            alt = v.get("chat_template").cloned();
        }
        let ct = tc.get("chat_template").cloned().or(alt);
        match ct {
            None | Some(Value::Null) => self.chat_template = None,
            Some(v @ (Value::String(_) | Value::Array(_))) => self.chat_template = Some(v),
            Some(_) => eprintln!(
                "warning: bad type for chat_template field in tokenizer_config.json - ignoring"
            ),
        }
        let types = self.types.clone();
        for typ in types {
            if let Some(Value::Bool(b)) = tc.get(&format!("add_{typ}_token")) {
                if self.get_add(typ).is_none() {
                    self.add.push((typ, *b));
                }
            }
            let content = match tc.get(&format!("{typ}_token")) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    _ => continue,
                },
                _ => continue,
            };
            let id = added_tokens
                .iter()
                .find(|t| t.get("content").and_then(Value::as_str) == Some(content.as_str()))
                .and_then(|t| t.get("id"))
                .cloned();
            self.set_special(typ, id.as_ref())?;
        }
        Ok(())
    }

    fn load_config_json(&mut self, dir: &Path) -> Result<()> {
        let Some(cfg) = read_json(&dir.join("config.json"))? else {
            return Ok(());
        };
        let types = self.types.clone();
        for typ in types {
            let key = format!("{typ}_token_id");
            let mut id = cfg.get(&key).filter(|v| !v.is_null()).cloned();
            if id.is_none() {
                id = cfg.get("text_config").and_then(|t| t.get(&key)).cloned();
            }
            self.set_special(typ, id.as_ref())?;
        }
        Ok(())
    }

    fn merges_txt(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join("merges.txt");
        if !path.is_file() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut lines = text.lines().peekable();
        if lines.peek().is_some_and(|l| l.trim().starts_with('#')) {
            lines.next();
        }
        let mut merges = vec![];
        for line in lines {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.is_empty() {
                continue;
            }
            if parts.len() != 2 {
                eprintln!("warning: merges.txt: malformed entry '{line}', ignoring");
                continue;
            }
            merges.push(format!("{} {}", parts[0], parts[1]));
        }
        self.merges = merges;
        Ok(())
    }

    fn add_to(&self, kv: &mut Kv) {
        if !self.merges.is_empty() {
            kv.set("tokenizer.ggml.merges", str_array(self.merges.clone()));
        } else if self.load_merges {
            eprintln!("warning: merges were requested but none were found; the output may be non-functional");
        }
        for (typ, id) in &self.ids {
            let key = match *typ {
                "bos" => "bos_token_id",
                "eos" => "eos_token_id",
                "unk" => "unknown_token_id",
                "sep" => "seperator_token_id",
                "pad" => "padding_token_id",
                "mask" => "mask_token_id",
                "eot" => "eot_token_id",
                "eom" => "eom_token_id",
                _ => continue, // gguf-py has no handler (cls): skipped
            };
            kv.set(format!("tokenizer.ggml.{key}"), GgufValue::U32(*id));
        }
        for (typ, v) in &self.add {
            if matches!(*typ, "bos" | "eos" | "sep") {
                kv.set(
                    format!("tokenizer.ggml.add_{typ}_token"),
                    GgufValue::Bool(*v),
                );
            }
        }
        match &self.chat_template {
            Some(Value::String(s)) => {
                kv.set("tokenizer.chat_template", GgufValue::String(s.clone()))
            }
            Some(Value::Array(list)) => {
                let mut default = None;
                let mut names: Vec<String> = vec![];
                for choice in list {
                    let name: String = choice
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                        .collect();
                    let Some(t) = choice.get("template").and_then(Value::as_str) else {
                        continue;
                    };
                    if name.is_empty() {
                        continue;
                    }
                    if name == "default" {
                        default = Some(t.to_string());
                    } else {
                        if !names.contains(&name) {
                            names.push(name.clone());
                        }
                        kv.set(
                            format!("tokenizer.chat_template.{name}"),
                            GgufValue::String(t.to_string()),
                        );
                    }
                }
                if !names.is_empty() {
                    kv.set("tokenizer.chat_templates", str_array(names));
                }
                if let Some(d) = default {
                    kv.set("tokenizer.chat_template", GgufValue::String(d));
                }
            }
            _ => {}
        }
        if let Some(v) = self.lowercase {
            kv.set("tokenizer.ggml.normalizer.lowercase", GgufValue::Bool(v));
        }
        if let Some(v) = self.strip_accents {
            kv.set(
                "tokenizer.ggml.normalizer.strip_accents",
                GgufValue::Bool(v),
            );
        }
    }
}

/// `model.merges` of a tokenizer.json: strings, or (since transformers 4.45) pairs, which are
/// joined with a space after encoding spaces inside them as U+0120.
fn merges_of(merges: &[Value]) -> Result<Vec<String>> {
    match merges.first() {
        None => Ok(vec![]),
        Some(Value::String(_)) => merges
            .iter()
            .map(|m| {
                m.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("mixed merge formats"))
            })
            .collect(),
        Some(Value::Array(_)) => merges
            .iter()
            .map(|m| {
                let pair = m
                    .as_array()
                    .filter(|p| p.len() == 2)
                    .ok_or_else(|| anyhow!("a merge is not a pair"))?;
                let enc = |v: &Value| -> Result<String> {
                    let s = v
                        .as_str()
                        .ok_or_else(|| anyhow!("a merge part is not a string"))?;
                    Ok(s.chars()
                        .map(|c| if c == ' ' { '\u{120}' } else { c })
                        .collect())
                };
                Ok(format!("{} {}", enc(&pair[0])?, enc(&pair[1])?))
            })
            .collect(),
        Some(_) => bail!("unknown tokenizer merges format"),
    }
}

/// gguf-py / the converter's `does_token_look_special`.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// `tokenizer.ggml.pre` of a byte-level BPE tokenizer: the name llama.cpp's converter gives the
/// sha256 of the token ids of its check text (special tokens added as the tokenizer adds them).
pub fn bpe_pre_name(tokenizer_json: &Path) -> Result<String> {
    let tok = tokenizers::Tokenizer::from_file(tokenizer_json)
        .map_err(|e| anyhow!("{}: cannot load tokenizer: {e}", tokenizer_json.display()))?;
    let enc = tok
        .encode(CHKTXT, true)
        .map_err(|e| anyhow!("{}: cannot tokenize: {e}", tokenizer_json.display()))?;
    let ids: Vec<String> = enc.get_ids().iter().map(u32::to_string).collect();
    let h = sha256_hex(format!("[{}]", ids.join(", ")).as_bytes());
    CHKHSH
        .iter()
        .find(|(x, _, _)| *x == h)
        .map(|(_, name, _)| name.to_string())
        .ok_or_else(|| {
            anyhow!(
                "{}: the BPE pre-tokenizer was not recognized (chkhsh {h}); llama.cpp's converter \
                 does not know it either, so no tokenizer.ggml.pre can be chosen",
                tokenizer_json.display()
            )
        })
}

/// The `tokenizer.*` metadata of the folder, in the converter's order, appended to `kv`.
/// `vocab_size` is `config.json`'s.
pub(crate) fn add_vocab(dir: &Path, arch: Arch, vocab_size: usize, kv: &mut Kv) -> Result<()> {
    let tc = read_json(&dir.join("tokenizer_config.json"))?;
    let is_llama = matches!(arch, Arch::Llama | Arch::Mistral);
    if is_llama {
        if let Some(v) = tc
            .as_ref()
            .and_then(|c| c.get("add_prefix_space"))
            .filter(|v| !v.is_null())
        {
            kv.set(
                "tokenizer.ggml.add_space_prefix",
                GgufValue::Bool(truthy(Some(v))),
            );
        }
    }
    if dir.join("tokenizer.model").is_file() {
        spm_vocab(dir, vocab_size, tc.as_ref(), kv)?;
    } else if is_llama && llama_hf_vocab(dir, kv)? {
    } else {
        gpt2_vocab(dir, vocab_size, kv)?;
    }
    if is_llama && vocab_size == 32016 {
        // CodeLlama: eot is the only one of its FIM ids gguf-py has a key for.
        kv.set("tokenizer.ggml.eot_token_id", GgufValue::U32(32010));
    }
    if is_llama && vocab_size == 49152 {
        // The converter's "granite small models" rule (it also matches SmolLM).
        kv.set("tokenizer.ggml.add_bos_token", GgufValue::Bool(false));
    }
    Ok(())
}

fn gpt2_vocab(dir: &Path, vocab_size: usize, kv: &mut Kv) -> Result<()> {
    let tj_path = dir.join("tokenizer.json");
    if !tj_path.is_file() {
        bail!(
            "{}: no tokenizer.json or tokenizer.model (a byte-level BPE tokenizer.json, or a SentencePiece tokenizer.model, is required)",
            dir.display()
        );
    }
    let tj = read_json(&tj_path)?.unwrap_or(Value::Null);
    let tok = tokenizers::Tokenizer::from_file(&tj_path)
        .map_err(|e| anyhow!("{}: cannot load tokenizer: {e}", tj_path.display()))?;
    let vocab = tok.get_vocab(true);
    if let Some(max) = vocab.values().max() {
        if *max as usize >= vocab_size {
            bail!(
                "{}: token id {max} is not below config.json's vocab_size {vocab_size}",
                tj_path.display()
            );
        }
    }
    let pre = bpe_pre_name(&tj_path)?;
    let mut reverse: Vec<Option<&str>> = vec![None; vocab_size];
    for (t, &id) in &vocab {
        reverse[id as usize] = Some(t.as_str());
    }
    // Added tokens: content → special flag (first occurrence per content).
    let added: Vec<(String, u64, bool)> = tj
        .get("added_tokens")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some((
                        t.get("content")?.as_str()?.to_string(),
                        t.get("id")?.as_u64()?,
                        t.get("special").and_then(Value::as_bool).unwrap_or(false),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut tokens = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for (i, t) in reverse.iter().enumerate() {
        match t {
            None => {
                tokens.push(format!("[PAD{i}]"));
                types.push(UNUSED);
            }
            Some(t) => {
                let mut token = t.to_string();
                if let Some((_, _, special)) = added.iter().find(|(c, _, _)| c == t) {
                    let special_here = added
                        .iter()
                        .find(|(_, id, _)| *id == i as u64)
                        .map_or(*special, |(_, _, s)| *s);
                    if special_here || looks_special(&token) {
                        types.push(CONTROL);
                    } else {
                        token = token.replace('\u{2581}', " ");
                        types.push(USER_DEFINED);
                    }
                } else {
                    types.push(NORMAL);
                }
                tokens.push(token);
            }
        }
    }
    kv.set("tokenizer.ggml.model", GgufValue::String("gpt2".into()));
    kv.set("tokenizer.ggml.pre", GgufValue::String(pre));
    kv.set("tokenizer.ggml.tokens", str_array(tokens));
    kv.set("tokenizer.ggml.token_type", i32_array(types));
    SpecialVocab::load(dir, true, None)?.add_to(kv);
    Ok(())
}

fn spm_vocab(dir: &Path, config_vocab: usize, tc: Option<&Value>, kv: &mut Kv) -> Result<()> {
    let path = dir.join("tokenizer.model");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let pieces = spm_model::read_pieces(&bytes)
        .map_err(|e| anyhow!("{}: not a SentencePiece model: {e}", path.display()))?;
    let vocab_size = if config_vocab > 0 {
        config_vocab
    } else {
        pieces.len()
    };
    let mut tokens: Vec<String> = (0..vocab_size).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000.0f32; vocab_size];
    let mut types = vec![UNUSED; vocab_size];
    for (id, p) in pieces.iter().enumerate() {
        if id >= vocab_size {
            eprintln!(
                "warning: ignoring tokens from {id}: id is out of range, max={}",
                vocab_size - 1
            );
            break;
        }
        tokens[id] = p.piece.clone();
        scores[id] = p.score;
        types[id] = match p.kind {
            2 => UNKNOWN,
            3 => CONTROL,
            5 => UNUSED,
            6 => BYTE,
            _ => NORMAL,
        };
    }
    if let Some(Value::Object(added)) = read_json(&dir.join("added_tokens.json"))? {
        for (text, id) in added {
            let Some(id) = id.as_u64().map(|x| x as usize) else {
                continue;
            };
            if id >= vocab_size {
                eprintln!(
                    "warning: ignoring added token {id}: id is out of range, max={}",
                    vocab_size - 1
                );
                continue;
            }
            tokens[id] = text;
            scores[id] = -1000.0;
            types[id] = USER_DEFINED;
        }
    }
    if let Some(Value::Object(dec)) = tc.and_then(|c| c.get("added_tokens_decoder")) {
        for (id, data) in dec {
            let Ok(id) = id.parse::<usize>() else {
                continue;
            };
            let Some(content) = data.get("content").and_then(Value::as_str) else {
                continue;
            };
            if id >= vocab_size {
                eprintln!(
                    "warning: ignoring token {id}: id is out of range, max={}",
                    vocab_size - 1
                );
                continue;
            }
            let mut content = content.to_string();
            if truthy(data.get("special")) || looks_special(&content) {
                types[id] = CONTROL;
            } else {
                content = content.replace('\u{2581}', " ");
                types[id] = USER_DEFINED;
            }
            scores[id] = -1000.0;
            tokens[id] = content;
        }
    }
    let n = tokens.len();
    kv.set("tokenizer.ggml.model", GgufValue::String("llama".into()));
    kv.set("tokenizer.ggml.pre", GgufValue::String("default".into()));
    kv.set("tokenizer.ggml.tokens", str_array(tokens));
    kv.set("tokenizer.ggml.scores", f32_array(scores));
    kv.set("tokenizer.ggml.token_type", i32_array(types));
    SpecialVocab::load(dir, false, Some(n))?.add_to(kv);
    Ok(())
}

/// gguf-py's `LlamaHfVocab`: a SentencePiece-style BPE (byte fallback) given only as
/// tokenizer.json. Returns false when the tokenizer is not of that kind.
fn llama_hf_vocab(dir: &Path, kv: &mut Kv) -> Result<bool> {
    let tj_path = dir.join("tokenizer.json");
    let Some(tj) = read_json(&tj_path)? else {
        return Ok(false);
    };
    let model = &tj["model"];
    let is_bpe = model.get("type").and_then(Value::as_str) == Some("BPE");
    let byte_fallback = model.get("byte_fallback").and_then(Value::as_bool);
    let ignore_merges = model
        .get("ignore_merges")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if is_bpe && ignore_merges && !byte_fallback.unwrap_or(true) {
        return Ok(false); // Llama 3: byte-level BPE
    }
    let decoder_seq = tj
        .get("decoder")
        .and_then(|d| d.get("type"))
        .and_then(Value::as_str)
        == Some("Sequence");
    if !is_bpe || byte_fallback != Some(true) || !decoder_seq {
        return Ok(false);
    }
    let base: Vec<(String, u64)> = model
        .get("vocab")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    let base_size = base.len();
    let mut reverse: Vec<Option<String>> = vec![None; base_size];
    for (t, id) in &base {
        if let Some(slot) = reverse.get_mut(*id as usize) {
            *slot = Some(t.clone());
        }
    }
    let added: Vec<(String, u64, bool)> = tj
        .get("added_tokens")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some((
                        t.get("content")?.as_str()?.to_string(),
                        t.get("id")?.as_u64()?,
                        t.get("special").and_then(Value::as_bool).unwrap_or(false),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    // transformers' all_special_ids: the special added tokens and the tokens tokenizer_config.json
    // names (bos/eos/unk/sep/pad/cls/mask, additional_special_tokens, extra_special_tokens).
    let tc = read_json(&dir.join("tokenizer_config.json"))?;
    let mut special_ids: Vec<u64> = added.iter().filter(|a| a.2).map(|a| a.1).collect();
    let text_of = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    let mut named: Vec<String> = vec![];
    for k in [
        "bos_token",
        "eos_token",
        "unk_token",
        "sep_token",
        "pad_token",
        "cls_token",
        "mask_token",
    ] {
        if let Some(t) = tc.as_ref().and_then(|c| c.get(k)).and_then(text_of) {
            named.push(t);
        }
    }
    for k in ["additional_special_tokens", "extra_special_tokens"] {
        if let Some(list) = tc.as_ref().and_then(|c| c.get(k)).and_then(Value::as_array) {
            named.extend(list.iter().filter_map(text_of));
        }
    }
    for t in named {
        {
            if let Some((_, id)) = base.iter().find(|(b, _)| *b == t) {
                special_ids.push(*id);
            } else if let Some(a) = added.iter().find(|a| a.0 == t) {
                special_ids.push(a.1);
            }
        }
    }
    let type_of = |id: u64, text: &str| {
        let b = text.as_bytes();
        if b.len() == 6
            && text.starts_with("<0x")
            && text.ends_with('>')
            && b[3].is_ascii_hexdigit()
            && b[4].is_ascii_hexdigit()
        {
            BYTE
        } else if special_ids.contains(&id) {
            CONTROL
        } else {
            NORMAL
        }
    };
    let mut tokens = vec![];
    let mut types = vec![];
    for (id, t) in reverse.iter().enumerate() {
        let t = t.clone().ok_or_else(|| {
            anyhow!(
                "{}: vocabulary has no token with id {id}",
                tj_path.display()
            )
        })?;
        types.push(type_of(id as u64, &t));
        tokens.push(t);
    }
    let mut extra: Vec<&(String, u64, bool)> =
        added.iter().filter(|a| a.1 as usize >= base_size).collect();
    extra.sort_by_key(|a| a.1);
    for (text, id, _) in extra {
        types.push(if special_ids.contains(id) {
            type_of(*id, "")
        } else {
            USER_DEFINED
        });
        tokens.push(text.clone());
    }
    let n = tokens.len();
    kv.set("tokenizer.ggml.model", GgufValue::String("llama".into()));
    kv.set("tokenizer.ggml.pre", GgufValue::String("default".into()));
    kv.set("tokenizer.ggml.tokens", str_array(tokens));
    kv.set("tokenizer.ggml.scores", f32_array(vec![-1000.0; n]));
    kv.set("tokenizer.ggml.token_type", i32_array(types));
    SpecialVocab::load(dir, false, Some(n))?.add_to(kv);
    Ok(true)
}
