//! The `general.*` GGUF keys of a converted model, found as llama.cpp's converter finds them
//! (gguf-py's `Metadata.load`): the model card's YAML front matter (`README.md`), the sampling
//! settings of `generation_config.json`, `_name_or_path` in `config.json`, and last the folder's
//! name, parsed by the same naming heuristics (`SmolLM2-135M-Instruct` → basename `SmolLM2`,
//! size label `135M`, finetune `Instruct`).
//!
//! The model card is read with a small YAML subset: `key: value` lines whose value is a plain,
//! single- or double-quoted scalar or a JSON value (`{...}`, `[...]`), and block lists of such
//! values (`- item`). Other YAML (nested blocks, anchors, multi-line scalars) is skipped.

use autoround_formats::gguf::{GgufValue, GgufValueType};
use serde_json::Value;
use std::path::Path;

/// A value of the model card's front matter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CardValue {
    Str(String),
    List(Vec<Value>),
    Json(Value),
}

/// The model card's front matter as (key, value) pairs, in file order. Empty when there is no
/// `README.md` or it has no front matter.
pub(crate) fn read_model_card(dir: &Path) -> Vec<(String, CardValue)> {
    let Ok(text) = std::fs::read_to_string(dir.join("README.md")) else {
        return vec![];
    };
    parse_front_matter(&text)
}

fn scalar(raw: &str) -> Value {
    let s = raw.trim();
    if s.starts_with('"') || s.starts_with('{') || s.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Value>(s) {
            return v;
        }
    }
    if let Some(inner) = s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return Value::String(inner.replace("''", "'"));
    }
    // A plain scalar; drop a trailing comment.
    let s = match s.find(" #") {
        Some(i) => s[..i].trim_end(),
        None => s,
    };
    Value::String(s.to_string())
}

pub(crate) fn parse_front_matter(text: &str) -> Vec<(String, CardValue)> {
    let mut lines = text.lines();
    if lines.next() != Some("---") {
        return vec![];
    }
    let mut out: Vec<(String, CardValue)> = Vec::new();
    let mut open_list: Option<(String, Vec<Value>)> = None;
    for line in lines {
        if line == "---" {
            break;
        }
        let line = line.replace('\t', "  ");
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(item) =
            trimmed
                .strip_prefix("- ")
                .or(if trimmed == "-" { Some("") } else { None })
        {
            if let Some((_, items)) = open_list.as_mut() {
                items.push(scalar(item));
            }
            continue;
        }
        if line.starts_with(' ') {
            // Nested block content: not part of the subset.
            continue;
        }
        if let Some((k, items)) = open_list.take() {
            out.push((k, CardValue::List(items)));
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim().to_string();
        let value = value.trim();
        if value.is_empty() {
            open_list = Some((key, vec![]));
        } else {
            match scalar(value) {
                Value::String(s) => out.push((key, CardValue::Str(s))),
                Value::Array(a) => out.push((key, CardValue::List(a))),
                other => out.push((key, CardValue::Json(other))),
            }
        }
    }
    if let Some((k, items)) = open_list.take() {
        out.push((k, CardValue::List(items)));
    }
    out
}

/// The authorship fields gguf-py's `Metadata` keeps.
#[derive(Debug, Default, Clone)]
struct Meta {
    name: Option<String>,
    author: Option<String>,
    version: Option<String>,
    organization: Option<String>,
    finetune: Option<String>,
    basename: Option<String>,
    description: Option<String>,
    quantized_by: Option<String>,
    size_label: Option<String>,
    license: Option<String>,
    license_name: Option<String>,
    license_link: Option<String>,
    url: Option<String>,
    doi: Option<String>,
    uuid: Option<String>,
    repo_url: Option<String>,
    source_url: Option<String>,
    source_doi: Option<String>,
    source_uuid: Option<String>,
    source_repo_url: Option<String>,
    base_models: Option<Vec<Vec<(String, String)>>>,
    datasets: Option<Vec<Vec<(String, String)>>>,
    tags: Option<Vec<String>>,
    languages: Option<Vec<String>>,
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
        _ => None,
    }
}

/// C-locale `str.isdecimal()` for one char.
fn is_dec(c: char) -> bool {
    c.is_ascii_digit()
}

/// `(v|iter)?\d+([.]\d+)*`, case-insensitive, whole string.
fn is_version(p: &str) -> bool {
    let l = p.to_ascii_lowercase();
    let rest = l
        .strip_prefix("iter")
        .or_else(|| l.strip_prefix('v'))
        .unwrap_or(&l);
    !rest.is_empty()
        && rest
            .split('.')
            .all(|g| !g.is_empty() && g.chars().all(is_dec))
}

/// `i?q\d(_\w)*|b?fp?(16|32)`, case-insensitive, whole string.
fn is_quant_type(p: &str) -> bool {
    let l = p.to_lowercase();
    let q = l.strip_prefix('i').unwrap_or(&l);
    if let Some(r) = q.strip_prefix('q') {
        let mut cs = r.chars();
        if cs.next().is_some_and(is_dec) {
            let tail: Vec<char> = cs.collect();
            if tail.len() % 2 == 0
                && tail
                    .chunks(2)
                    .all(|c| c[0] == '_' && (c[1].is_alphanumeric() || c[1] == '_'))
            {
                return true;
            }
        }
    }
    let b = l.strip_prefix('b').unwrap_or(&l);
    let Some(f) = b.strip_prefix('f') else {
        return false;
    };
    let f = f.strip_prefix('p').unwrap_or(f);
    f == "16" || f == "32"
}

/// `(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl)`, case-insensitive.
fn is_size(p: &str) -> bool {
    let l = p.to_ascii_lowercase();
    if matches!(
        l.as_str(),
        "small" | "mini" | "medium" | "large" | "xl" | "xxl"
    ) {
        return true;
    }
    let c: Vec<char> = l.chars().collect();
    // Try every optional prefix: none, "a", or digits + 'x'.
    let mut starts = vec![0usize];
    if c.first() == Some(&'a') {
        starts.push(1);
    }
    let d = c.iter().take_while(|x| is_dec(**x)).count();
    if d > 0 && c.get(d) == Some(&'x') {
        starts.push(d + 1);
    }
    starts.into_iter().any(|s| size_core(&c[s..]))
}

/// `\d+([._]\d+)?[kmbt]\d?` on lowercase chars, whole slice.
fn size_core(c: &[char]) -> bool {
    let mut i = c.iter().take_while(|x| is_dec(**x)).count();
    if i == 0 {
        return false;
    }
    if matches!(c.get(i), Some('.') | Some('_')) {
        let j = c[i + 1..].iter().take_while(|x| is_dec(**x)).count();
        if j > 0 {
            i += 1 + j;
        }
    }
    if !matches!(c.get(i), Some('k' | 'm' | 'b' | 't')) {
        return false;
    }
    i += 1;
    if c.get(i).is_some_and(|x| is_dec(*x)) {
        i += 1;
    }
    i == c.len()
}

/// Python's `float()` on the few forms a size label takes (digits, one '.').
fn parse_float(s: &str) -> Option<f64> {
    if s.is_empty() || !s.chars().all(|c| is_dec(c) || c == '.') {
        return None;
    }
    s.parse().ok()
}

type Components = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// gguf-py's `Metadata.get_model_id_components`: (full name, organization, basename, finetune,
/// version, size label) of a model id like `org/Name-7B-Instruct-v0.2`.
fn model_id_components(model_id: Option<&str>, total_params: i64) -> Components {
    let Some(model_id) = model_id else {
        return (None, None, None, None, None, None);
    };
    if model_id.contains(' ') {
        return (Some(model_id.to_string()), None, None, None, None, None);
    }
    let (mut org, full) = match model_id.split_once('/') {
        Some((o, n)) => (Some(o.to_string()), n.to_string()),
        None => (None, model_id.to_string()),
    };
    if org.as_deref().is_some_and(|o| o.starts_with('.')) {
        org = None;
    }
    let mut parts: Vec<String> = full
        .split('-')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    #[derive(Default, Clone)]
    struct T {
        basename: bool,
        size_label: bool,
        finetune: bool,
        version: bool,
        ty: bool,
    }
    impl T {
        fn len(&self) -> usize {
            [
                self.basename,
                self.size_label,
                self.finetune,
                self.version,
                self.ty,
            ]
            .iter()
            .filter(|b| **b)
            .count()
        }
    }
    let mut types = vec![T::default(); parts.len()];
    for i in 0..parts.len() {
        let part = parts[i].clone();
        if is_version(&part) {
            types[i].version = true;
        } else if is_quant_type(&part) {
            types[i].ty = true;
            parts[i] = part.to_uppercase();
        } else if i > 0 && is_size(&part) {
            let mut p: Vec<char> = part.replace('_', ".").chars().collect();
            if p.last().is_some_and(|c| is_dec(*c)) && p.len() >= 2 {
                let n = p.len();
                let (a, b) = (p[n - 2], p[n - 1]);
                p.truncate(n - 2);
                p.push('.');
                p.push(b);
                p.push(a);
            }
            let n = p.len();
            if n > 1 && is_dec(p[n - 2]) && "kmbt".contains(p[n - 1]) {
                p[n - 1] = p[n - 1].to_ascii_uppercase();
            }
            let mut s: String = p.iter().collect();
            if total_params != 0 {
                let last = s.chars().last().unwrap_or(' ');
                let num = &s[..s.len() - last.len_utf8()];
                if let Some(x) = parse_float(num) {
                    let exp = " KMBT".find(last).map_or(-1, |e| e as i32);
                    let label = x * 1000f64.powi(exp);
                    let t = total_params as f64;
                    let context_like = (total_params < 0
                        && label < (total_params.unsigned_abs() / 8) as f64)
                        || (total_params > 0 && (label - t).abs() > (7 * total_params / 8) as f64);
                    if context_like {
                        types[i].finetune = true;
                        s = format!("{num}{}", last.to_lowercase());
                    }
                }
            }
            if types[i].len() == 0 {
                types[i].size_label = true;
            }
            parts[i] = s;
        } else if i > 0
            && matches!(
                part.to_ascii_lowercase().as_str(),
                "chat" | "instruct" | "vision" | "lora"
            )
        {
            if total_params < 0 && part.eq_ignore_ascii_case("lora") {
                types[i].ty = true;
            } else {
                types[i].finetune = true;
            }
        }
    }
    let has_numeric_size = parts
        .iter()
        .zip(&types)
        .any(|(p, t)| t.size_label && p.chars().any(is_dec));
    if has_numeric_size {
        for (p, t) in parts.iter().zip(types.iter_mut()) {
            if t.size_label && p.chars().all(char::is_alphabetic) {
                t.size_label = false;
            }
        }
    }
    let mut at_start = true;
    for (p, t) in parts.iter().zip(types.iter_mut()) {
        let alpha_first = p.chars().next().is_some_and(char::is_alphabetic);
        if at_start && ((t.len() == 0 && alpha_first) || t.version) {
            t.basename = true;
        } else {
            at_start = false;
            if t.len() == 0 {
                t.finetune = true;
            }
        }
    }
    for t in types.iter_mut().rev() {
        if t.basename && t.len() > 1 {
            t.basename = false;
        } else {
            break;
        }
    }
    let join = |f: &dyn Fn(&T) -> bool| {
        let v: Vec<&str> = parts
            .iter()
            .zip(&types)
            .filter(|(_, t)| f(t))
            .map(|(p, _)| p.as_str())
            .collect();
        (!v.is_empty()).then(|| v.join("-"))
    };
    let mut basename = join(&|t| t.basename);
    let size_label = {
        let mut seen: Vec<&str> = vec![];
        for (p, t) in parts.iter().zip(&types) {
            if t.size_label && !seen.contains(&p.as_str()) {
                seen.push(p);
            }
        }
        (!seen.is_empty()).then(|| seen.join("-"))
    };
    let finetune = join(&|t| t.finetune);
    let version = join(&|t| t.version && !t.basename);
    if size_label.is_none() && finetune.is_none() && version.is_none() {
        basename = None;
    }
    (Some(full), org, basename, finetune, version, size_label)
}

/// Python's `str.title()` on one word.
fn title(w: &str) -> String {
    let mut out = String::with_capacity(w.len());
    let mut prev_cased = false;
    for c in w.chars() {
        let cased = c.is_lowercase() || c.is_uppercase();
        if cased {
            if prev_cased {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
        } else {
            out.push(c);
        }
        prev_cased = cased;
    }
    out
}

/// Python's `str.islower()`.
fn is_lower(w: &str) -> bool {
    w.chars().any(char::is_lowercase) && !w.chars().any(char::is_uppercase)
}

/// gguf-py's `Metadata.id_to_title`.
fn id_to_title(s: &str) -> String {
    s.trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| {
            let versionish = {
                let vn = w.strip_prefix('v').is_some_and(|r| {
                    let mut gs = r.split('.');
                    gs.next()
                        .is_some_and(|g| !g.is_empty() && g.chars().all(is_dec))
                        && gs.all(|g| !g.is_empty() && g.chars().all(is_dec))
                });
                vn || w.chars().next().is_some_and(is_dec)
            };
            if is_lower(w) && !versionish {
                title(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn apply_components(m: &mut Meta, id: &str, total_params: i64) {
    let (full, org, basename, finetune, version, size_label) =
        model_id_components(Some(id), total_params);
    if m.name.is_none() {
        m.name = full.as_deref().map(id_to_title);
    }
    if m.organization.is_none() {
        m.organization = org.as_deref().map(id_to_title);
    }
    if m.basename.is_none() {
        m.basename = basename;
    }
    if m.finetune.is_none() {
        m.finetune = finetune;
    }
    if m.version.is_none() {
        m.version = version;
    }
    if m.size_label.is_none() {
        m.size_label = size_label;
    }
}

/// A base model or dataset entry of the model card (a Hugging Face id, a URL, or a mapping).
fn source_entry(v: &Value, total_params: i64) -> Vec<(String, String)> {
    let mut e: Vec<(String, String)> = vec![];
    match v {
        Value::String(id) => {
            let from_id = |e: &mut Vec<(String, String)>, id: &str, with_url: bool| {
                let (full, org, _, _, version, _) = model_id_components(Some(id), total_params);
                if let Some(f) = &full {
                    e.push(("name".into(), id_to_title(f)));
                }
                if let Some(o) = &org {
                    e.push(("organization".into(), id_to_title(o)));
                }
                if let Some(v) = version {
                    e.push(("version".into(), v));
                }
                if let (true, Some(o), Some(f)) = (with_url, org, full) {
                    e.push(("repo_url".into(), format!("https://huggingface.co/{o}/{f}")));
                }
            };
            if id.starts_with("http://") || id.starts_with("https://") || id.starts_with("ssh://") {
                e.push(("repo_url".into(), id.clone()));
                if id.contains("huggingface.co") {
                    let rest = id
                        .strip_prefix("https://huggingface.co/")
                        .or_else(|| id.strip_prefix("http://huggingface.co/"));
                    if let Some(rest) = rest {
                        let segs: Vec<&str> = rest.split('/').collect();
                        if segs.len() == 2 && segs.iter().all(|s| !s.is_empty()) {
                            from_id(&mut e, rest, false);
                        }
                    }
                }
            } else {
                from_id(&mut e, id, true);
            }
        }
        Value::Object(o) => {
            for (k, v) in o {
                if let Some(s) = value_text(v) {
                    e.push((k.clone(), s));
                }
            }
        }
        _ => {}
    }
    e
}

/// gguf-py's `size_label` for a dense model: `model_weight_count_rounded_notation`.
pub(crate) fn size_label(total_params: u64) -> String {
    let n = total_params as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let rounded = format!("{}", scaled.round_ties_even() as i64);
    let digits = rounded.trim_start_matches('0').len();
    let fix = 2usize.saturating_sub(digits);
    format!("{scaled:.fix$}{suffix}")
}

fn put_str(out: &mut Vec<(String, GgufValue)>, key: &str, v: &Option<String>) {
    if let Some(s) = v {
        out.push((key.to_string(), GgufValue::String(s.clone())));
    }
}

/// The `general.*` keys (after `general.architecture` and `general.type`) in the order the
/// converter writes them. `total_params` is the element count of all written tensors.
pub(crate) fn general_keys(
    dir: &Path,
    config: &Value,
    total_params: u64,
) -> Vec<(String, GgufValue)> {
    let total = total_params as i64;
    let card = read_model_card(dir);
    let mut m = Meta::default();
    let card_get = |k: &str| card.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let use_card = |field: &mut Option<String>, k: &str| {
        if field.is_none() {
            if let Some(v) = card_get(k) {
                *field = match v {
                    CardValue::Str(s) => Some(s.clone()),
                    CardValue::Json(j) => value_text(j),
                    CardValue::List(_) => None,
                };
            }
        }
    };
    for prefix in ["", "model_"] {
        let k = |s: &str| format!("{prefix}{s}");
        use_card(&mut m.name, &k("name"));
        use_card(&mut m.author, &k("author"));
        use_card(&mut m.version, &k("version"));
        use_card(&mut m.organization, &k("organization"));
        use_card(&mut m.description, &k("description"));
        use_card(&mut m.finetune, &k("finetune"));
        use_card(&mut m.basename, &k("basename"));
        use_card(&mut m.size_label, &k("size_label"));
        use_card(&mut m.source_url, &k("url"));
        use_card(&mut m.source_doi, &k("doi"));
        use_card(&mut m.source_uuid, &k("uuid"));
        use_card(&mut m.source_repo_url, &k("repo_url"));
    }
    use_card(&mut m.name, "model_name");
    use_card(&mut m.author, "model_creator");
    use_card(&mut m.basename, "model_type");
    let list_of = |k: &str| -> Option<Vec<Value>> {
        card_get(k).map(|v| match v {
            CardValue::Str(s) => vec![Value::String(s.clone())],
            CardValue::List(l) => l.clone(),
            CardValue::Json(j) => vec![j.clone()],
        })
    };
    let first_of = |keys: &[&str]| keys.iter().find_map(|k| list_of(k));
    if let Some(items) = first_of(&["base_model", "base_models", "base_model_sources"]) {
        m.base_models = Some(items.iter().map(|v| source_entry(v, total)).collect());
    }
    if let Some(items) = first_of(&["datasets", "dataset", "dataset_sources"]) {
        m.datasets = Some(items.iter().map(|v| source_entry(v, total)).collect());
    }
    match card_get("license") {
        Some(CardValue::Str(s)) => m.license = Some(s.clone()),
        Some(CardValue::List(l)) => {
            m.license = Some(
                l.iter()
                    .filter_map(value_text)
                    .collect::<Vec<_>>()
                    .join(","),
            )
        }
        _ => {}
    }
    use_card(&mut m.license_name, "license_name");
    use_card(&mut m.license_link, "license_link");
    let strings = |k: &str| -> Option<Vec<String>> {
        list_of(k).map(|l| l.iter().filter_map(value_text).collect())
    };
    for k in ["tags", "pipeline_tag"] {
        if let Some(v) = strings(k) {
            m.tags.get_or_insert_with(Vec::new).extend(v);
        }
    }
    for k in ["languages", "language"] {
        if let Some(v) = strings(k) {
            m.languages.get_or_insert_with(Vec::new).extend(v);
        }
    }
    if let Some(id) = config.get("_name_or_path").and_then(Value::as_str) {
        if id.matches('/').count() <= 1 {
            apply_components(&mut m, id, total);
        }
    }
    if let Some(dir_name) = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
    {
        apply_components(&mut m, &dir_name, total);
    }
    if m.size_label.is_none() && total > 0 {
        m.size_label = Some(size_label(total_params));
    }

    let mut out = Vec::new();
    sampling_keys(dir, &mut out);
    put_str(&mut out, "general.name", &m.name);
    put_str(&mut out, "general.author", &m.author);
    put_str(&mut out, "general.version", &m.version);
    put_str(&mut out, "general.organization", &m.organization);
    put_str(&mut out, "general.finetune", &m.finetune);
    put_str(&mut out, "general.basename", &m.basename);
    put_str(&mut out, "general.description", &m.description);
    put_str(&mut out, "general.quantized_by", &m.quantized_by);
    put_str(&mut out, "general.size_label", &m.size_label);
    put_str(&mut out, "general.license", &m.license);
    put_str(&mut out, "general.license.name", &m.license_name);
    put_str(&mut out, "general.license.link", &m.license_link);
    put_str(&mut out, "general.url", &m.url);
    put_str(&mut out, "general.doi", &m.doi);
    put_str(&mut out, "general.uuid", &m.uuid);
    put_str(&mut out, "general.repo_url", &m.repo_url);
    put_str(&mut out, "general.source.url", &m.source_url);
    put_str(&mut out, "general.source.doi", &m.source_doi);
    put_str(&mut out, "general.source.uuid", &m.source_uuid);
    put_str(&mut out, "general.source.repo_url", &m.source_repo_url);
    for (what, list) in [("base_model", &m.base_models), ("dataset", &m.datasets)] {
        if let Some(list) = list {
            out.push((
                format!("general.{what}.count"),
                GgufValue::U32(list.len() as u32),
            ));
            for (i, e) in list.iter().enumerate() {
                for field in [
                    "name",
                    "author",
                    "version",
                    "organization",
                    "description",
                    "url",
                    "doi",
                    "uuid",
                    "repo_url",
                ] {
                    if let Some((_, v)) = e.iter().find(|(k, _)| k == field) {
                        out.push((
                            format!("general.{what}.{i}.{field}"),
                            GgufValue::String(v.clone()),
                        ));
                    }
                }
            }
        }
    }
    let str_array = |v: &Vec<String>| {
        GgufValue::Array(
            if v.is_empty() {
                GgufValueType::U8
            } else {
                GgufValueType::String
            },
            v.iter().map(|s| GgufValue::String(s.clone())).collect(),
        )
    };
    if let Some(t) = &m.tags {
        out.push(("general.tags".into(), str_array(t)));
    }
    if let Some(l) = &m.languages {
        out.push(("general.languages".into(), str_array(l)));
    }
    out
}

/// `general.sampling.*` from `generation_config.json`, in the converter's order and types.
fn sampling_keys(dir: &Path, out: &mut Vec<(String, GgufValue)>) {
    let Some(gen) = std::fs::read_to_string(dir.join("generation_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    else {
        return;
    };
    enum K {
        Str,
        I32,
        F32,
    }
    let keys: [(&[&str], &str, K); 12] = [
        (&["sequence"], "sequence", K::Str),
        (&["top_k"], "top_k", K::I32),
        (&["top_p"], "top_p", K::F32),
        (&["min_p"], "min_p", K::F32),
        (&["xtc_probability"], "xtc_probability", K::F32),
        (&["xtc_threshold"], "xtc_threshold", K::F32),
        (&["temperature"], "temp", K::F32),
        (&["penalty_last_n"], "penalty_last_n", K::I32),
        (
            &["penalty_repeat", "repetition_penalty"],
            "penalty_repeat",
            K::F32,
        ),
        (&["mirostat"], "mirostat", K::I32),
        (&["mirostat_tau"], "mirostat_tau", K::F32),
        (&["mirostat_eta"], "mirostat_eta", K::F32),
    ];
    for (src, dst, kind) in keys {
        let Some(v) = src
            .iter()
            .find_map(|k| gen.get(*k))
            .filter(|v| !v.is_null())
        else {
            continue;
        };
        let value = match kind {
            K::Str => v.as_str().map(|s| GgufValue::String(s.to_string())),
            K::I32 => v.as_i64().map(|x| GgufValue::I32(x as i32)),
            K::F32 => v.as_f64().map(|x| GgufValue::F32(x as f32)),
        };
        if let Some(value) = value {
            out.push((format!("general.sampling.{dst}"), value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_components_like_gguf_py() {
        let c = model_id_components(Some("HuggingFaceTB/SmolLM2-135M-Instruct"), 134_515_008);
        assert_eq!(
            c,
            (
                Some("SmolLM2-135M-Instruct".into()),
                Some("HuggingFaceTB".into()),
                Some("SmolLM2".into()),
                Some("Instruct".into()),
                None,
                Some("135M".into())
            )
        );
        let c = model_id_components(Some("SmolLM2-135M-8k-lc100k-mix1-ep2"), 134_515_008);
        assert_eq!(c.2.as_deref(), Some("SmolLM2"));
        assert_eq!(c.3.as_deref(), Some("8k-lc100k-mix1-ep2"));
        assert_eq!(c.5.as_deref(), Some("135M"));
        assert_eq!(
            id_to_title("smollm2-135m-8k-lc100k-mix1-ep2"),
            "Smollm2 135m 8k Lc100K Mix1 Ep2"
        );
        let c = model_id_components(Some("Mistral-7B-Instruct-v0.3"), 7_000_000_000);
        assert_eq!(c.2.as_deref(), Some("Mistral"));
        assert_eq!(c.4.as_deref(), Some("v0.3"));
        assert_eq!(c.5.as_deref(), Some("7B"));
        assert_eq!(c.3.as_deref(), Some("Instruct"));
        let c = model_id_components(Some("bloom-7b1"), 0);
        assert_eq!(c.5.as_deref(), Some("7.1B"));
        assert!(is_quant_type("Q4_K_M") && is_quant_type("bf16") && !is_quant_type("q"));
        assert_eq!(size_label(134_515_008), "135M");
        assert_eq!(size_label(1_235_814_400), "1.2B");
        assert_eq!(size_label(494_032_768), "494M");
    }

    #[test]
    fn front_matter_subset() {
        let card = "---\nlicense: apache-2.0\nlanguage:\n- en\n- \"no\"\nbase_model: HuggingFaceTB/SmolLM2-135M\nname: 'It''s'\ntags: [a, b]\nnested:\n  x: 1\n---\n# Title\n";
        let fm = parse_front_matter(card);
        assert_eq!(
            fm[0],
            ("license".into(), CardValue::Str("apache-2.0".into()))
        );
        assert_eq!(
            fm[1],
            (
                "language".into(),
                CardValue::List(vec!["en".into(), "no".into()])
            )
        );
        assert_eq!(fm[3], ("name".into(), CardValue::Str("It's".into())));
        assert!(parse_front_matter("# no front matter\n").is_empty());
    }
}
