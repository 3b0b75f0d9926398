//! GGUF → Hugging Face folder: every tensor dequantized (kernels' reference dequantizers) and
//! renamed, Q/K rows of `llama` models un-permuted back to Hugging Face's layout, plus
//! `config.json`, `generation_config.json`, the tokenizer (`tokenizer.json` for byte-level BPE;
//! `tokenizer.model` for SentencePiece), `tokenizer_config.json` and a `README.md` whose front
//! matter carries the `general.*` keys (so that converting back, by us or by llama.cpp's
//! converter, gives the same names).
//!
//! Output dtype (`--dtype`): `auto` keeps F32, F16 and BF16 tensors as they are (so an F16 GGUF
//! converts back byte for byte) and writes every tensor as F32 when any tensor is quantized
//! (dequantized values are f32; rounding them to 16 bits would lose precision); `f32`, `f16` and
//! `bf16` convert everything.
//!
//! The folder is written atomically: into a temporary folder beside it, renamed into place at
//! the end; an interrupted or failed run leaves no output folder.

use super::hf_to_gguf::{llama3_rope_freqs, unpermute_rows};
use super::names;
use super::spm_model;
use crate::export::f32_to_json;
use anyhow::{anyhow, bail, Result};
use autoround_formats::gguf::{GgufFile, GgufValue, TensorInfo as GgufTensor};
use autoround_formats::safetensors::write_safetensors;
use autoround_formats::tokenizer::{attr, Tokenizer, VocabKind};
use autoround_formats::GgmlType;
use autoround_kernels::reference::{dequantize_row, fp32_to_bf16_bits};
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

/// `--dtype` of `convert --to hf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfDtype {
    /// F32/F16/BF16 tensors keep their type; everything is F32 if any tensor is quantized.
    Auto,
    F32,
    F16,
    Bf16,
}

impl std::str::FromStr for HfDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => HfDtype::Auto,
            "f32" | "float32" => HfDtype::F32,
            "f16" | "float16" => HfDtype::F16,
            "bf16" | "bfloat16" => HfDtype::Bf16,
            other => {
                return Err(format!(
                    "unknown dtype '{other}'; expected auto, f32, f16 or bf16"
                ))
            }
        })
    }
}

/// Options of [`gguf_to_hf`].
#[derive(Debug, Clone)]
pub struct HfOptions {
    pub dtype: HfDtype,
    /// Largest safetensors file before splitting into shards (with an index).
    pub max_shard_bytes: u64,
    /// Replace an existing output folder.
    pub overwrite: bool,
}

impl Default for HfOptions {
    fn default() -> Self {
        HfOptions {
            dtype: HfDtype::Auto,
            max_shard_bytes: 2 << 30,
            overwrite: false,
        }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct HfSummary {
    pub architecture: String,
    pub tensors: usize,
    pub shards: usize,
    pub bytes: u64,
    /// The dtype of the 2-D weights (`torch_dtype`).
    pub torch_dtype: &'static str,
    pub tokenizer_files: Vec<String>,
}

struct Item<'a> {
    hf_name: String,
    info: &'a GgufTensor,
    to: GgmlType,
    permute: Option<usize>,
    shape: Vec<usize>,
}

fn torch_name(t: GgmlType) -> &'static str {
    match t {
        GgmlType::F16 => "float16",
        GgmlType::BF16 => "bfloat16",
        _ => "float32",
    }
}

struct Meta<'a> {
    f: &'a GgufFile,
    arch: String,
}

impl Meta<'_> {
    fn get(&self, k: &str) -> Option<&GgufValue> {
        self.f.get(k)
    }
    fn a(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }
    fn u(&self, k: &str) -> Result<u64> {
        let key = self.a(k);
        self.get(&key)
            .ok_or_else(|| {
                anyhow!(
                    "{}: metadata key '{key}' is missing",
                    self.f.path().display()
                )
            })?
            .as_u64()
            .ok_or_else(|| {
                anyhow!(
                    "{}: metadata key '{key}' is not an unsigned integer",
                    self.f.path().display()
                )
            })
    }
    fn opt_u(&self, k: &str) -> Option<u64> {
        self.get(&self.a(k)).and_then(GgufValue::as_u64)
    }
    fn opt_f32(&self, k: &str) -> Option<f32> {
        self.get(&self.a(k))
            .and_then(GgufValue::as_f64)
            .map(|x| x as f32)
    }
    fn tok_u32(&self, k: &str) -> Option<u32> {
        self.get(&format!("tokenizer.ggml.{k}"))
            .and_then(GgufValue::as_u32)
    }
    fn s(&self, k: &str) -> Option<String> {
        self.get(k).and_then(GgufValue::as_str).map(str::to_string)
    }
}

/// Convert a GGUF file into a Hugging Face folder at `out`.
pub fn gguf_to_hf(gguf: &Path, out: &Path, opts: &HfOptions) -> Result<HfSummary> {
    if out.exists() && !opts.overwrite {
        bail!(
            "{}: already exists; pass --overwrite to replace it",
            out.display()
        );
    }
    let file = GgufFile::open(gguf)?;
    let arch = file
        .header()
        .architecture()
        .ok_or_else(|| anyhow!("{}: no general.architecture", gguf.display()))?
        .to_string();
    let (hf_class, model_type) = match arch.as_str() {
        "llama" => ("LlamaForCausalLM", "llama"),
        "qwen2" => ("Qwen2ForCausalLM", "qwen2"),
        "qwen3" => ("Qwen3ForCausalLM", "qwen3"),
        other => bail!(
            "{}: architecture '{other}' cannot be converted to a Hugging Face folder; supported: llama (Llama, Mistral), qwen2, qwen3",
            gguf.display()
        ),
    };
    let m = Meta {
        f: &file,
        arch: arch.clone(),
    };
    let n_layer = m.u("block_count")? as usize;
    let n_embd = m.u("embedding_length")? as usize;
    let n_ff = m.u("feed_forward_length")? as usize;
    let n_head = m.u("attention.head_count")? as usize;
    let n_head_kv = m
        .opt_u("attention.head_count_kv")
        .map_or(n_head, |x| x as usize);
    let n_ctx = m.u("context_length")? as usize;
    if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
        bail!(
            "{}: invalid head counts {n_head}/{n_head_kv}",
            gguf.display()
        );
    }
    let eps = m
        .opt_f32("attention.layer_norm_rms_epsilon")
        .ok_or_else(|| {
            anyhow!(
                "{}: metadata key '{arch}.attention.layer_norm_rms_epsilon' is missing",
                gguf.display()
            )
        })?;
    let theta = m.opt_f32("rope.freq_base").unwrap_or(10000.0);
    let head_dim = m.opt_u("attention.key_length").map(|x| x as usize);

    let tokenizer = Tokenizer::from_gguf(&file)?;
    if let Some(w) = tokenizer
        .warnings()
        .iter()
        .find(|w| w.contains("unknown or unsupported pre-tokenizer"))
    {
        bail!(
            "{}: {w}; a tokenizer.json written from it would not tokenize as llama.cpp does",
            gguf.display()
        );
    }

    // Tensor plan.
    let all_float = file
        .tensors()
        .iter()
        .all(|t| matches!(t.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16));
    let mut items: Vec<Item> = vec![];
    let mut llama3_rope: Option<Value> = None;
    for t in file.tensors() {
        if t.name == "rope_freqs.weight" {
            let dim = m
                .opt_u("rope.dimension_count")
                .map_or(head_dim.unwrap_or(n_embd / n_head), |d| d as usize);
            llama3_rope = Some(llama3_params(&file, t, dim, theta, n_ctx)?);
            continue;
        }
        let hf_name = names::gguf_to_hf(&t.name).ok_or_else(|| {
            anyhow!(
                "{}: tensor '{}' has no Hugging Face name for architecture {arch}",
                gguf.display(),
                t.name
            )
        })?;
        let to = match opts.dtype {
            HfDtype::Auto if all_float => t.ty,
            HfDtype::Auto | HfDtype::F32 => GgmlType::F32,
            HfDtype::F16 => GgmlType::F16,
            HfDtype::Bf16 => GgmlType::BF16,
        };
        let permute = if arch == "llama" {
            if t.name.starts_with("blk.") && t.name.contains(".attn_q.") {
                Some(n_head)
            } else if t.name.starts_with("blk.") && t.name.contains(".attn_k.") {
                Some(n_head_kv)
            } else {
                None
            }
        } else {
            None
        };
        let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        if let Some(h) = permute {
            if shape[0] % (2 * h) != 0 {
                bail!(
                    "{}: tensor '{}' has {} rows, not a multiple of 2 x {h} heads",
                    gguf.display(),
                    t.name,
                    shape[0]
                );
            }
        }
        items.push(Item {
            hf_name,
            info: t,
            to,
            permute,
            shape,
        });
    }
    let embd = file
        .tensor("token_embd.weight")
        .ok_or_else(|| anyhow!("{}: tensor 'token_embd.weight' is missing", gguf.display()))?;
    let vocab_size = embd.dims.get(1).copied().unwrap_or(0) as usize;
    let tied = file.tensor("output.weight").is_none();
    let weight_ty = items
        .iter()
        .find(|i| i.shape.len() >= 2)
        .map_or(GgmlType::F32, |i| i.to);
    let has_qkv_bias = file.tensor("blk.0.attn_q.bias").is_some();
    let has_o_bias = file.tensor("blk.0.attn_output.bias").is_some();

    // config.json
    let mut cfg = Map::new();
    cfg.insert("architectures".into(), json!([hf_class]));
    cfg.insert("model_type".into(), json!(model_type));
    if arch != "qwen2" {
        cfg.insert("attention_bias".into(), json!(has_qkv_bias || has_o_bias));
    }
    cfg.insert("attention_dropout".into(), json!(0.0));
    if let Some(b) = m.tok_u32("bos_token_id") {
        cfg.insert("bos_token_id".into(), json!(b));
    }
    if let Some(e) = m.tok_u32("eos_token_id") {
        cfg.insert("eos_token_id".into(), json!(e));
    }
    if let Some(p) = m.tok_u32("padding_token_id") {
        cfg.insert("pad_token_id".into(), json!(p));
    }
    // Not transformers keys, but what llama.cpp's converter (and ours) read special ids from
    // when there is no tokenizer.json to look the tokens up in.
    for (key, gk) in [
        ("unk_token_id", "unknown_token_id"),
        ("sep_token_id", "seperator_token_id"),
        ("mask_token_id", "mask_token_id"),
    ] {
        if let Some(id) = m.tok_u32(gk) {
            cfg.insert(key.into(), json!(id));
        }
    }
    let hd = head_dim.unwrap_or(n_embd / n_head);
    match arch.as_str() {
        "qwen2" => {
            if let Some(d) = head_dim {
                cfg.insert("head_dim".into(), json!(d));
            }
        }
        _ => {
            cfg.insert("head_dim".into(), json!(hd));
        }
    }
    cfg.insert("hidden_act".into(), json!("silu"));
    cfg.insert("hidden_size".into(), json!(n_embd));
    cfg.insert("initializer_range".into(), json!(0.02));
    cfg.insert("intermediate_size".into(), json!(n_ff));
    cfg.insert("max_position_embeddings".into(), json!(n_ctx));
    if arch == "llama" {
        cfg.insert("mlp_bias".into(), json!(false));
    }
    if arch != "llama" {
        cfg.insert("max_window_layers".into(), json!(n_layer));
    }
    cfg.insert("num_attention_heads".into(), json!(n_head));
    cfg.insert("num_hidden_layers".into(), json!(n_layer));
    cfg.insert("num_key_value_heads".into(), json!(n_head_kv));
    cfg.insert("rms_norm_eps".into(), f32_to_json(eps));
    let rope_scaling = match m.s(&m.a("rope.scaling.type")).as_deref() {
        Some("linear") => {
            let f = m.opt_f32("rope.scaling.factor").ok_or_else(|| {
                anyhow!("{}: linear RoPE scaling without a factor", gguf.display())
            })?;
            json!({"rope_type": "linear", "type": "linear", "factor": f32_to_json(f)})
        }
        Some("yarn") => {
            let f = m
                .opt_f32("rope.scaling.factor")
                .ok_or_else(|| anyhow!("{}: yarn RoPE scaling without a factor", gguf.display()))?;
            let mut r = Map::new();
            r.insert("rope_type".into(), json!("yarn"));
            r.insert("type".into(), json!("yarn"));
            r.insert("factor".into(), f32_to_json(f));
            if let Some(o) = m.opt_u("rope.scaling.original_context_length") {
                r.insert("original_max_position_embeddings".into(), json!(o));
            }
            for (k, key) in [
                ("extrapolation_factor", "rope.scaling.yarn_ext_factor"),
                ("attention_factor", "rope.scaling.yarn_attn_factor"),
                ("beta_fast", "rope.scaling.yarn_beta_fast"),
                ("beta_slow", "rope.scaling.yarn_beta_slow"),
            ] {
                if let Some(x) = m.opt_f32(key) {
                    r.insert(k.into(), f32_to_json(x));
                }
            }
            Value::Object(r)
        }
        None | Some("none") => llama3_rope.clone().unwrap_or(Value::Null),
        Some(other) => bail!(
            "{}: RoPE scaling '{other}' cannot be written to config.json",
            gguf.display()
        ),
    };
    cfg.insert("rope_scaling".into(), rope_scaling);
    cfg.insert("rope_theta".into(), f32_to_json(theta));
    if arch != "llama" {
        cfg.insert("sliding_window".into(), Value::Null);
        cfg.insert("use_sliding_window".into(), json!(false));
    }
    cfg.insert("tie_word_embeddings".into(), json!(tied));
    cfg.insert("torch_dtype".into(), json!(torch_name(weight_ty)));
    cfg.insert("use_cache".into(), json!(true));
    cfg.insert("vocab_size".into(), json!(vocab_size));
    let config_json = serde_json::to_string_pretty(&Value::Object(cfg))?;

    // generation_config.json
    let mut gen = Map::new();
    if let Some(b) = m.tok_u32("bos_token_id") {
        gen.insert("bos_token_id".into(), json!(b));
    }
    if let Some(e) = m.tok_u32("eos_token_id") {
        gen.insert("eos_token_id".into(), json!(e));
    }
    if let Some(p) = m.tok_u32("padding_token_id") {
        gen.insert("pad_token_id".into(), json!(p));
    }
    let mut sampling = false;
    for (key, name, int) in [
        ("general.sampling.top_k", "top_k", true),
        ("general.sampling.top_p", "top_p", false),
        ("general.sampling.min_p", "min_p", false),
        ("general.sampling.temp", "temperature", false),
        (
            "general.sampling.penalty_repeat",
            "repetition_penalty",
            false,
        ),
    ] {
        if let Some(v) = m.get(key) {
            sampling = true;
            if int {
                if let Some(x) = v.as_i64() {
                    gen.insert(name.into(), json!(x));
                }
            } else if let Some(x) = v.as_f64() {
                gen.insert(name.into(), f32_to_json(x as f32));
            }
        }
    }
    if sampling {
        gen.insert("do_sample".into(), json!(true));
    }
    let generation_json = serde_json::to_string_pretty(&Value::Object(gen))?;

    // Tokenizer files.
    let mut tok_files: Vec<(String, Vec<u8>)> = vec![];
    let text = |id: Option<u32>| id.and_then(|i| tokenizer.token_text(i)).map(str::to_string);
    let special = tokenizer.special_ids();
    let mut tc = Map::new();
    if let Some(b) = m
        .get("tokenizer.ggml.add_bos_token")
        .and_then(GgufValue::as_bool)
    {
        tc.insert("add_bos_token".into(), json!(b));
    }
    if let Some(b) = m
        .get("tokenizer.ggml.add_eos_token")
        .and_then(GgufValue::as_bool)
    {
        tc.insert("add_eos_token".into(), json!(b));
    }
    if let Some(b) = m
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(GgufValue::as_bool)
    {
        tc.insert("add_prefix_space".into(), json!(b));
    }
    let mut decoder = Map::new();
    for id in 0..tokenizer.vocab_size() as u32 {
        let a = tokenizer.token_attr(id);
        if a & (attr::CONTROL | attr::USER_DEFINED) != 0 {
            decoder.insert(
                id.to_string(),
                json!({
                    "content": tokenizer.token_text(id).unwrap_or_default(),
                    "lstrip": a & attr::LSTRIP != 0,
                    "normalized": false,
                    "rstrip": a & attr::RSTRIP != 0,
                    "single_word": false,
                    "special": a & attr::CONTROL != 0,
                }),
            );
        }
    }
    tc.insert("added_tokens_decoder".into(), Value::Object(decoder));
    for (k, id) in [
        ("bos_token", special.bos),
        ("eos_token", special.eos),
        ("unk_token", special.unk),
        ("pad_token", special.pad),
    ] {
        if let Some(t) = text(id) {
            tc.insert(k.into(), json!(t));
        }
    }
    if let Some(ct) = m.s("tokenizer.chat_template") {
        tc.insert("chat_template".into(), json!(ct));
    }
    tc.insert("clean_up_tokenization_spaces".into(), json!(false));
    tc.insert("model_max_length".into(), json!(n_ctx));
    match tokenizer.kind() {
        VocabKind::Bpe => {
            tc.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
            tok_files.push((
                "tokenizer.json".into(),
                tokenizer.to_hf_json(true)?.into_bytes(),
            ));
        }
        VocabKind::Spm => {
            tc.insert("tokenizer_class".into(), json!("LlamaTokenizer"));
            tc.insert("legacy".into(), json!(true));
            tok_files.push(("tokenizer.model".into(), spm_bytes(&file, &tokenizer)?));
        }
    }
    tok_files.push((
        "tokenizer_config.json".into(),
        serde_json::to_string_pretty(&Value::Object(tc))?.into_bytes(),
    ));

    // Shards.
    let sizes: Vec<u64> = items
        .iter()
        .map(|i| i.shape.iter().product::<usize>() as u64 * i.to.type_size() as u64)
        .collect();
    let mut shards: Vec<Vec<usize>> = vec![];
    let mut cur: Vec<usize> = vec![];
    let mut cur_bytes = 0u64;
    for (i, &s) in sizes.iter().enumerate() {
        if !cur.is_empty() && cur_bytes + s > opts.max_shard_bytes {
            shards.push(std::mem::take(&mut cur));
            cur_bytes = 0;
        }
        cur.push(i);
        cur_bytes += s;
    }
    if !cur.is_empty() {
        shards.push(cur);
    }
    let total: u64 = sizes.iter().sum();

    let readme = readme(&m, gguf);
    crate::export::write_dir_atomically(out, opts.overwrite, |tmp| {
        let n = shards.len();
        let mut weight_map = BTreeMap::new();
        for (si, shard) in shards.iter().enumerate() {
            let fname = crate::export::shard_file_name(si, n);
            let datas: Vec<Cow<[u8]>> = shard
                .iter()
                .map(|&i| tensor_data(&file, &items[i]))
                .collect::<Result<_>>()?;
            let list: Vec<(String, GgmlType, Vec<usize>, &[u8])> = shard
                .iter()
                .zip(&datas)
                .map(|(&i, d)| {
                    (
                        items[i].hf_name.clone(),
                        items[i].to,
                        items[i].shape.clone(),
                        d.as_ref(),
                    )
                })
                .collect();
            let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
            write_safetensors(&tmp.join(&fname), &list, Some(meta))?;
            for &i in shard {
                weight_map.insert(items[i].hf_name.clone(), fname.clone());
            }
        }
        if n > 1 {
            autoround_formats::safetensors::write_index(
                &tmp.join("model.safetensors.index.json"),
                &weight_map,
                Some(total),
            )?;
        }
        let mut files: Vec<(String, Vec<u8>)> = vec![
            ("config.json".into(), config_json.clone().into_bytes()),
            (
                "generation_config.json".into(),
                generation_json.clone().into_bytes(),
            ),
            ("README.md".into(), readme.clone().into_bytes()),
        ];
        files.extend(tok_files.iter().cloned());
        for (name, body) in files {
            crate::export::write_synced(&tmp.join(&name), &body)?;
        }
        Ok(())
    })?;
    Ok(HfSummary {
        architecture: arch,
        tensors: items.len(),
        shards: shards.len(),
        bytes: total,
        torch_dtype: torch_name(weight_ty),
        tokenizer_files: tok_files.iter().map(|(n, _)| n.clone()).collect(),
    })
}

/// The `rope_scaling` of config.json that makes llama.cpp's converter regenerate these Llama 3
/// RoPE frequency factors bit for bit: `factor` is their largest value; `low_freq_factor`,
/// `high_freq_factor` and `original_max_position_embeddings` are solved from the factors between
/// 1 and `factor` when there are two or more, else taken as Llama 3's 1, 4 and the first context
/// length (8192, then powers of two) that reproduces the factors. Several settings can give the
/// same factors; any of them round-trips.
fn llama3_params(
    file: &GgufFile,
    t: &GgufTensor,
    dim: usize,
    theta: f32,
    n_ctx: usize,
) -> Result<Value> {
    let data = file.try_tensor_data(t).ok_or_else(|| {
        anyhow!(
            "{}: tensor '{}' lies outside the file",
            file.path().display(),
            t.name
        )
    })?;
    let n = t.n_elements() as usize;
    let mut f = vec![0f32; n];
    dequantize_row(t.ty, data, &mut f)
        .map_err(|e| anyhow!("{}: rope_freqs.weight: {e}", file.path().display()))?;
    let bad = || {
        anyhow!(
            "{}: rope_freqs.weight does not look like Llama 3 RoPE scaling factors; cannot write it as config.json's rope_scaling",
            file.path().display()
        )
    };
    if n * 2 != dim {
        return Err(bad());
    }
    let factor = f.iter().copied().fold(f32::MIN, f32::max);
    if !(factor.is_finite() && factor > 1.0) {
        return Err(bad());
    }
    let mut candidates: Vec<(f64, f64, f64)> = vec![];
    // Smooth entries: 1/f = (1 - s)/factor + s with s = a / wavelen - b.
    let fac = f64::from(factor);
    let pts: Vec<(f64, f64)> = f
        .iter()
        .enumerate()
        .filter(|(_, &x)| x > 1.0 && x < factor)
        .map(|(i, &x)| {
            let e = (2 * i) as f32 / dim as f32;
            let freq = 1.0f32 / theta.powf(e);
            let wavelen = f64::from((2.0 * std::f64::consts::PI) as f32 / freq);
            let s = (1.0 / f64::from(x) - 1.0 / fac) / (1.0 - 1.0 / fac);
            (1.0 / wavelen, s)
        })
        .collect();
    if pts.len() >= 2 {
        let ((x0, y0), (x1, y1)) = (pts[0], pts[pts.len() - 1]);
        let a = (y1 - y0) / (x1 - x0);
        let b = a * x0 - y0;
        if a > 0.0 && b > 0.0 {
            // Assume low_freq_factor 1 (as every Llama 3 does), then scale.
            let round = |v: f64| (v * 1e4).round() / 1e4;
            let (low, high, ctx) = (1.0, round(1.0 + 1.0 / b), (a / b).round());
            candidates.push((low, high, ctx));
        }
    }
    let mut ctxs = vec![8192.0];
    ctxs.extend((4..=24).map(|p| f64::from(1u32 << p)));
    ctxs.push(n_ctx as f64);
    for c in ctxs {
        candidates.push((1.0, 4.0, c));
    }
    for (low, high, ctx) in candidates {
        let rope = json!({"rope_type": "llama3", "factor": f32_to_json(factor), "low_freq_factor": low,
            "high_freq_factor": high, "original_max_position_embeddings": ctx as u64});
        let again = llama3_rope_freqs(&rope, dim, f64::from(theta));
        if again
            .iter()
            .zip(&f)
            .all(|(a, b)| a.to_bits() == b.to_bits())
        {
            return Ok(rope);
        }
    }
    Err(bad())
}

/// One tensor's bytes in its Hugging Face dtype and layout.
fn tensor_data<'a>(file: &'a GgufFile, item: &Item) -> Result<Cow<'a, [u8]>> {
    let t = item.info;
    let src = file.try_tensor_data(t).ok_or_else(|| {
        anyhow!(
            "{}: tensor '{}' lies outside the file",
            file.path().display(),
            t.name
        )
    })?;
    let rows = item.shape.first().copied().unwrap_or(1);
    let data: Cow<[u8]> = if t.ty == item.to {
        Cow::Borrowed(src)
    } else {
        let ne0 = t.dims.first().copied().unwrap_or(1) as usize;
        let n_rows = (t.n_elements() as usize) / ne0.max(1);
        let row_bytes = src.len() / n_rows.max(1);
        let mut f = vec![0f32; ne0];
        let mut out = Vec::with_capacity(n_rows * ne0 * item.to.type_size());
        for r in 0..n_rows {
            dequantize_row(t.ty, &src[r * row_bytes..(r + 1) * row_bytes], &mut f)
                .map_err(|e| anyhow!("{}: tensor '{}': {e}", file.path().display(), t.name))?;
            match item.to {
                GgmlType::F32 => out.extend(f.iter().flat_map(|x| x.to_le_bytes())),
                GgmlType::F16 => out.extend(
                    f.iter()
                        .flat_map(|x| half::f16::from_f32(*x).to_bits().to_le_bytes()),
                ),
                GgmlType::BF16 => {
                    out.extend(f.iter().flat_map(|x| fp32_to_bf16_bits(*x).to_le_bytes()))
                }
                other => bail!("cannot write {}", other.name()),
            }
        }
        Cow::Owned(out)
    };
    Ok(match item.permute {
        Some(h) => {
            let row_bytes = data.len() / rows;
            Cow::Owned(unpermute_rows(&data, rows, row_bytes, h))
        }
        None => data,
    })
}

/// A `tokenizer.model` holding the GGUF SentencePiece vocabulary.
fn spm_bytes(file: &GgufFile, tok: &Tokenizer) -> Result<Vec<u8>> {
    let scores: Vec<f32> = match file
        .get("tokenizer.ggml.scores")
        .and_then(GgufValue::as_array)
    {
        Some(a) => a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
        None => vec![0.0; tok.vocab_size()],
    };
    let types: Vec<i32> = match file
        .get("tokenizer.ggml.token_type")
        .and_then(GgufValue::as_array)
    {
        Some(a) => a.iter().map(|v| v.as_i64().unwrap_or(1) as i32).collect(),
        None => vec![1; tok.vocab_size()],
    };
    let pieces: Vec<spm_model::Piece> = (0..tok.vocab_size())
        .map(|i| spm_model::Piece {
            piece: tok.token_text(i as u32).unwrap_or_default().to_string(),
            score: scores.get(i).copied().unwrap_or(0.0),
            kind: match types.get(i).copied().unwrap_or(1) {
                0 => 1,
                t => t,
            },
        })
        .collect();
    let byte_fallback = types.contains(&6);
    let sp = tok.special_ids();
    Ok(spm_model::write_model(
        &pieces,
        &spm_model::SpmSpec {
            unk_id: sp.unk,
            bos_id: sp.bos,
            eos_id: sp.eos,
            pad_id: sp.pad,
            byte_fallback,
            add_dummy_prefix: file
                .get("tokenizer.ggml.add_space_prefix")
                .and_then(GgufValue::as_bool)
                .unwrap_or(true),
        },
    ))
}

/// YAML-safe scalar (a JSON string is a valid YAML double-quoted scalar).
fn y(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// `README.md` with the model's `general.*` keys as model-card front matter.
fn readme(m: &Meta, gguf: &Path) -> String {
    let mut fm = String::from("---\n");
    for (key, card) in [
        ("general.name", "name"),
        ("general.author", "author"),
        ("general.version", "version"),
        ("general.organization", "organization"),
        ("general.finetune", "finetune"),
        ("general.basename", "basename"),
        ("general.description", "description"),
        ("general.size_label", "size_label"),
        ("general.license", "license"),
        ("general.license.name", "license_name"),
        ("general.license.link", "license_link"),
        ("general.source.url", "url"),
        ("general.source.doi", "doi"),
        ("general.source.uuid", "uuid"),
        ("general.source.repo_url", "repo_url"),
    ] {
        if let Some(v) = m.s(key) {
            fm.push_str(&format!("{card}: {}\n", y(&v)));
        }
    }
    for (what, card) in [("base_model", "base_model"), ("dataset", "datasets")] {
        let Some(n) = m
            .get(&format!("general.{what}.count"))
            .and_then(GgufValue::as_u64)
        else {
            continue;
        };
        fm.push_str(&format!("{card}:\n"));
        for i in 0..n {
            let mut e = Map::new();
            for f in [
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
                if let Some(v) = m.s(&format!("general.{what}.{i}.{f}")) {
                    e.insert(f.into(), json!(v));
                }
            }
            fm.push_str(&format!("- {}\n", Value::Object(e)));
        }
    }
    for (key, card) in [("general.tags", "tags"), ("general.languages", "language")] {
        if let Some(list) = m.get(key).and_then(GgufValue::as_str_array) {
            fm.push_str(&format!("{card}:\n"));
            for v in list {
                fm.push_str(&format!("- {}\n", y(v)));
            }
        }
    }
    fm.push_str("---\n\n");
    let name = m.s("general.name").unwrap_or_else(|| "Model".into());
    fm.push_str(&format!(
        "# {name}\n\nConverted from `{}` by `autoround-cpu convert --to hf`.\n",
        gguf.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    fm
}
