//! A Hugging Face folder as a [`WeightSource`]: its tensors renamed, Q/K-permuted and converted
//! on the fly, and its GGUF metadata, as llama.cpp's `convert_hf_to_gguf.py` writes them.
//!
//! What the converter does, for the Llama family, and what is done here the same way:
//!
//! - **Tensors**, in the converter's order: a generated `rope_freqs.weight` first (Llama 3 RoPE
//!   scaling), then each safetensors part (file names sorted) with its tensors sorted by name.
//!   Names map as gguf-py's `TensorNameMap` maps them ([`super::names`]). For `llama` (Llama,
//!   Mistral) the rows of `q_proj` and `k_proj` (weights and biases) are permuted from Hugging
//!   Face's rotate-half RoPE layout to llama.cpp's interleaved one (`LlamaModel.permute`); Qwen2
//!   and Qwen3 are not permuted.
//! - **Types**: 1-D tensors and `*_norm.weight` are F32; the rest is F32, F16 or BF16 per
//!   `--outtype` (`auto`: the type of the first 2-D F16 or BF16 tensor, else F16). F16 is rounded
//!   to nearest even from f32 (numpy's `astype`), BF16 as ggml rounds it (quiet NaNs, nearest even).
//! - **Metadata**, in the converter's order: `general.architecture`, `general.type`, the
//!   `general.*` authorship keys ([`super::metadata`]), the hyper-parameters (with
//!   `general.file_type` among them), `general.quantization_version`, then the tokenizer
//!   ([`super::vocab`]).
//!
//! The hyper-parameters are read as transformers' `AutoConfig` presents them to the converter:
//! `head_dim` defaults to `hidden_size / num_attention_heads` for Llama and Mistral and to 128
//! for Qwen3 (so `attention.key_length`/`value_length` are written for them), Qwen2 has none
//! unless `config.json` gives one.

use super::metadata;
use super::names;
use super::vocab::{self, Kv};
use crate::quantize::mixture::TensorInfo;
use crate::quantize::source::WeightSource;
use anyhow::{anyhow, bail, Context, Result};
use autoround_formats::autoround::QuantConfig;
use autoround_formats::gguf::{GgufValue, GgufWriter};
use autoround_formats::hf::{Arch, HfConfig};
use autoround_formats::safetensors::SafetensorsModel;
use autoround_formats::GgmlType;
use autoround_kernels::reference::{dequantize_row, fp32_to_bf16_bits};
use serde_json::Value;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// `--outtype` of `convert --to gguf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    Bf16,
    /// The 16-bit type of the first 2-D F16/BF16 tensor (F16 if there is none), as the converter
    /// guesses it.
    Auto,
}

impl std::str::FromStr for OutType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => OutType::F32,
            "f16" => OutType::F16,
            "bf16" => OutType::Bf16,
            "auto" => OutType::Auto,
            other => {
                return Err(format!(
                    "unknown output type '{other}'; expected f32, f16, bf16 or auto"
                ))
            }
        })
    }
}

/// llama.cpp's `LLAMA_FTYPE_*` for the whole-file types the converter writes.
fn file_type_of(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        _ => 32, // BF16
    }
}

enum Origin {
    /// A tensor of safetensors part `part`.
    Stored { part: usize, name: String },
    /// A packed (auto_round / GPTQ / AWQ) linear layer `module`, dequantized to f32.
    Packed { module: String },
    /// A tensor the converter generates (Llama 3 `rope_freqs`), as f32 values.
    Generated(Vec<f32>),
}

struct Plan {
    origin: Origin,
    /// Heads of the Q/K row permutation, if permuted.
    permute: Option<usize>,
    /// Hugging Face shape (outermost first).
    shape: Vec<usize>,
    src_ty: GgmlType,
}

/// A Hugging Face folder (config.json, safetensors, tokenizer) seen as the GGUF llama.cpp's
/// converter would make of it.
pub struct HfSource {
    dir: PathBuf,
    parts: Vec<SafetensorsModel>,
    plans: Vec<Plan>,
    tensors: Vec<TensorInfo>,
    /// Full metadata in write order, including `general.file_type` and
    /// `general.quantization_version`.
    full_metadata: Vec<(String, GgufValue)>,
    /// The same without those two keys (what [`WeightSource::metadata`] hands out).
    metadata: Vec<(String, GgufValue)>,
    out_type: GgmlType,
    arch: Arch,
    /// The checkpoint's `quantization_config`, when its linear layers are packed.
    quant: Option<QuantConfig>,
}

/// Python-style `str(float)` is not needed: values are written as f32 like the converter.
fn f32_of(v: &Value) -> Option<f32> {
    v.as_f64().map(|x| x as f32)
}

/// The safetensors parts of a folder in the converter's order: the files of
/// `model.safetensors.index.json` if present, else every `model*.safetensors`, sorted by name.
fn open_parts(dir: &Path) -> Result<Vec<SafetensorsModel>> {
    let index = dir.join("model.safetensors.index.json");
    let mut names: Vec<String> = vec![];
    if index.is_file() {
        // Validates the weight map against the shards it names.
        let whole = SafetensorsModel::open_index(&index)?;
        let text = std::fs::read_to_string(&index)?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", index.display()))?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow!("{}: no weight_map", index.display()))?;
        for f in map.values().filter_map(Value::as_str) {
            if !names.iter().any(|n| n == f) {
                names.push(f.to_string());
            }
        }
        names.sort();
        let parts: Vec<SafetensorsModel> = names
            .iter()
            .map(|n| SafetensorsModel::open_file(&dir.join(n)))
            .collect::<Result<_, _>>()?;
        let in_parts: usize = parts.iter().map(|p| p.len()).sum();
        if in_parts != whole.len() {
            let extra: Vec<&str> = parts
                .iter()
                .flat_map(|p| p.names())
                .filter(|n| !whole.contains(n))
                .collect();
            bail!(
                "{}: the shards hold tensors the weight map does not list: {extra:?}",
                index.display()
            );
        }
        return Ok(parts);
    }
    let rd = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for e in rd {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with("model") && name.ends_with(".safetensors") {
            names.push(name);
        }
    }
    names.sort();
    if names.is_empty() {
        bail!(
            "{}: no model.safetensors (or model-*.safetensors shards, or model.safetensors.index.json)",
            dir.display()
        );
    }
    names
        .iter()
        .map(|n| SafetensorsModel::open_file(&dir.join(n)).map_err(Into::into))
        .collect()
}

/// Llama 3 RoPE frequency factors, as the converter computes them (in f32, like its torch
/// tensors; `powf` may differ from torch's `pow` in the last bit).
pub(crate) fn llama3_rope_freqs(rope: &Value, head_dim: usize, theta: f64) -> Vec<f32> {
    let base = rope
        .get("rope_theta")
        .and_then(Value::as_f64)
        .unwrap_or(theta);
    let factor = rope.get("factor").and_then(Value::as_f64).unwrap_or(8.0);
    let low = rope
        .get("low_freq_factor")
        .and_then(Value::as_f64)
        .unwrap_or(1.0);
    let high = rope
        .get("high_freq_factor")
        .and_then(Value::as_f64)
        .unwrap_or(4.0);
    let old_ctx = rope
        .get("original_max_position_embeddings")
        .and_then(Value::as_f64)
        .unwrap_or(8192.0);
    // torch does this arithmetic on f32 tensors, Python scalars rounded to f32.
    let (factor, low, high, old_ctx) = (factor as f32, low as f32, high as f32, old_ctx as f32);
    let low_wavelen = old_ctx / low;
    let high_wavelen = old_ctx / high;
    (0..head_dim)
        .step_by(2)
        .map(|i| {
            let e = (i as f32) / (head_dim as f32);
            let freq = 1.0f32 / (base as f32).powf(e);
            let wavelen = (2.0 * std::f64::consts::PI) as f32 / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

impl HfSource {
    /// Open a Hugging Face folder. Everything is checked here (architecture, every tensor's name,
    /// dtype and shape, the tokenizer), so that writing cannot fail half-way for a bad input.
    pub fn open(dir: &Path, outtype: OutType) -> Result<HfSource> {
        if !dir.is_dir() {
            bail!(
                "{}: not a folder (expected a Hugging Face model folder with config.json)",
                dir.display()
            );
        }
        let cfg = HfConfig::from_dir(dir)?;
        let arch = cfg.arch()?;
        let config_path = dir.join("config.json");
        let raw: Value = serde_json::from_str(&std::fs::read_to_string(&config_path)?)
            .with_context(|| format!("{}: not valid JSON", config_path.display()))?;
        // auto_round / GPTQ / AWQ checkpoints: packed layers are dequantized to f32.
        let quant = QuantConfig::from_config(&raw)
            .map_err(|e| anyhow!("{}: {e}", config_path.display()))?;
        let parts = open_parts(dir)?;

        let n_head = cfg.num_attention_heads;
        let n_kv = cfg.n_kv_heads();
        let permute_llama = matches!(arch, Arch::Llama | Arch::Mistral);
        let rope: Value = raw
            .get("rope_parameters")
            .filter(|v| !v.is_null())
            .or_else(|| raw.get("rope_scaling").filter(|v| !v.is_null()))
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        let rope_type = rope
            .get("rope_type")
            .or_else(|| rope.get("type"))
            .and_then(Value::as_str)
            .map(str::to_string);
        // AutoConfig's head_dim (see the module docs).
        let head_dim_hp: Option<usize> = match raw.get("head_dim").and_then(Value::as_u64) {
            Some(d) => Some(d as usize),
            None => match arch {
                Arch::Llama | Arch::Mistral => Some(cfg.hidden_size / n_head),
                Arch::Qwen3 => Some(128),
                Arch::Qwen2 => None,
            },
        };

        let mut plans: Vec<Plan> = vec![];
        let mut out_names: Vec<String> = vec![];
        if permute_llama
            && rope_type
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("llama3"))
        {
            let dim = head_dim_hp.unwrap_or(cfg.hidden_size / n_head);
            plans.push(Plan {
                origin: Origin::Generated(llama3_rope_freqs(&rope, dim, cfg.rope_theta)),
                permute: None,
                shape: vec![dim / 2],
                src_ty: GgmlType::F32,
            });
            out_names.push("rope_freqs.weight".into());
        }
        let mut first_16bit: Option<GgmlType> = None;
        for (pi, part) in parts.iter().enumerate() {
            for name in part.names() {
                if name.ends_with(".attention.masked_bias")
                    || name.ends_with(".attention.bias")
                    || name.ends_with(".rotary_emb.inv_freq")
                {
                    continue;
                }
                let t = part.tensor(name)?;
                let packed_module = quant.as_ref().and_then(|_| {
                    ["qweight", "qzeros", "scales", "g_idx"]
                        .iter()
                        .find_map(|sfx| {
                            let m = name.strip_suffix(&format!(".{sfx}"))?;
                            parts
                                .iter()
                                .any(|p| p.contains(&format!("{m}.qweight")))
                                .then(|| (m.to_string(), *sfx == "qweight"))
                        })
                });
                let (name, t) = match packed_module {
                    // the other tensors of a packed layer come with its qweight
                    Some((_, false)) => continue,
                    Some((module, true)) => {
                        let head_dim = head_dim_hp.unwrap_or(cfg.hidden_size / n_head);
                        let cols = if module.ends_with("o_proj") {
                            n_head * head_dim
                        } else if module.ends_with("down_proj") {
                            cfg.intermediate_size
                        } else {
                            cfg.hidden_size
                        };
                        let scales = parts
                            .iter()
                            .find_map(|p| p.tensor(&format!("{module}.scales")).ok())
                            .ok_or_else(|| anyhow!("{module}.scales is missing"))?;
                        let rows = scales.shape.get(1).copied().unwrap_or(0);
                        let wname = format!("{module}.weight");
                        let new = names::hf_to_gguf(&wname).ok_or_else(|| {
                            anyhow!(
                                "{}: cannot map packed layer '{module}'",
                                part.path().display()
                            )
                        })?;
                        let mut permute = None;
                        if permute_llama && module.ends_with("q_proj") {
                            permute = Some(n_head);
                        } else if permute_llama && module.ends_with("k_proj") {
                            permute = Some(n_kv);
                        }
                        out_names.push(new);
                        plans.push(Plan {
                            origin: Origin::Packed { module },
                            permute,
                            shape: vec![rows, cols],
                            src_ty: GgmlType::F32,
                        });
                        continue;
                    }
                    None => (name, t),
                };
                if !matches!(t.dtype, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
                    bail!(
                        "{}: tensor '{name}' is {}; only F32, F16 and BF16 tensors (and the packed layers of auto_round/GPTQ/AWQ checkpoints) can be converted",
                        part.path().display(),
                        t.dtype.name().to_ascii_uppercase()
                    );
                }
                if t.shape.len() >= 2
                    && first_16bit.is_none()
                    && matches!(t.dtype, GgmlType::F16 | GgmlType::BF16)
                {
                    first_16bit = Some(t.dtype);
                }
                let new = names::hf_to_gguf(name).ok_or_else(|| {
                    anyhow!(
                        "{}: cannot map tensor '{name}' to a llama.cpp name for architecture {arch}",
                        part.path().display()
                    )
                })?;
                let mut permute = None;
                if permute_llama {
                    if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") {
                        permute = Some(n_head);
                    } else if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") {
                        permute = Some(n_kv);
                    }
                }
                if let Some(h) = permute {
                    let rows = t.shape.first().copied().unwrap_or(0);
                    if rows % (2 * h) != 0 {
                        bail!(
                            "{}: tensor '{name}' has {rows} rows, not a multiple of 2 x {h} heads",
                            part.path().display()
                        );
                    }
                }
                if t.shape.is_empty() || t.shape.len() > 4 || t.shape.contains(&0) {
                    bail!(
                        "{}: tensor '{name}' has unsupported shape {:?}",
                        part.path().display(),
                        t.shape
                    );
                }
                if out_names.contains(&new) {
                    bail!("{}: two tensors map to '{new}'", part.path().display());
                }
                out_names.push(new);
                plans.push(Plan {
                    origin: Origin::Stored {
                        part: pi,
                        name: name.to_string(),
                    },
                    permute,
                    shape: t.shape.clone(),
                    src_ty: t.dtype,
                });
            }
        }
        if plans
            .iter()
            .all(|p| matches!(p.origin, Origin::Generated(_)))
        {
            bail!("{}: the safetensors files hold no tensors", dir.display());
        }
        for required in ["token_embd.weight", "output_norm.weight"] {
            if !out_names.iter().any(|n| n == required) {
                bail!(
                    "{}: tensor '{}' is missing",
                    dir.display(),
                    names::gguf_to_hf(required).unwrap_or_default()
                );
            }
        }
        for l in 0..cfg.num_hidden_layers {
            for t in [
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
                "attn_norm",
                "ffn_norm",
            ] {
                let g = format!("blk.{l}.{t}.weight");
                if !out_names.contains(&g) {
                    bail!(
                        "{}: tensor '{}' is missing",
                        dir.display(),
                        names::gguf_to_hf(&g).unwrap_or(g)
                    );
                }
            }
        }
        let out_type = match outtype {
            OutType::F32 => GgmlType::F32,
            OutType::F16 => GgmlType::F16,
            OutType::Bf16 => GgmlType::BF16,
            OutType::Auto => first_16bit.unwrap_or(GgmlType::F16),
        };
        let tensors: Vec<TensorInfo> = plans
            .iter()
            .zip(&out_names)
            .map(|(p, n)| {
                let ne: Vec<u64> = p.shape.iter().rev().map(|&d| d as u64).collect();
                let ty =
                    if p.shape.len() <= 1 || n.ends_with("_norm.weight") || !n.ends_with(".weight")
                    {
                        GgmlType::F32
                    } else {
                        out_type
                    };
                TensorInfo::new(n.clone(), &ne, ty)
            })
            .collect();
        let total_params: u64 = plans
            .iter()
            .map(|p| p.shape.iter().product::<usize>() as u64)
            .sum();

        // Metadata, in the converter's order.
        let gguf_arch = arch.gguf_arch();
        let mut kv = Kv::default();
        kv.set("general.architecture", GgufValue::String(gguf_arch.into()));
        kv.set("general.type", GgufValue::String("model".into()));
        for (k, v) in metadata::general_keys(dir, &raw, total_params) {
            kv.set(k, v);
        }
        let a = |k: &str| format!("{gguf_arch}.{k}");
        kv.set(
            a("block_count"),
            GgufValue::U32(cfg.num_hidden_layers as u32),
        );
        kv.set(
            a("context_length"),
            GgufValue::U32(cfg.max_position_embeddings as u32),
        );
        kv.set(
            a("embedding_length"),
            GgufValue::U32(cfg.hidden_size as u32),
        );
        kv.set(
            a("feed_forward_length"),
            GgufValue::U32(cfg.intermediate_size as u32),
        );
        kv.set(a("attention.head_count"), GgufValue::U32(n_head as u32));
        kv.set(a("attention.head_count_kv"), GgufValue::U32(n_kv as u32));
        if let Some(t) = rope_type.as_deref() {
            let factor = rope.get("factor").and_then(f32_of);
            match t {
                "linear" if factor.is_some() => {
                    kv.set(a("rope.scaling.type"), GgufValue::String("linear".into()));
                    kv.set(a("rope.scaling.factor"), GgufValue::F32(factor.unwrap()));
                }
                "yarn" if factor.is_some() => {
                    kv.set(a("rope.scaling.type"), GgufValue::String("yarn".into()));
                    kv.set(a("rope.scaling.factor"), GgufValue::F32(factor.unwrap()));
                    let orig = rope
                        .get("original_max_position_embeddings")
                        .and_then(Value::as_u64)
                        .ok_or_else(|| {
                            anyhow!(
                                "{}: yarn RoPE scaling needs original_max_position_embeddings",
                                config_path.display()
                            )
                        })?;
                    kv.set(
                        a("rope.scaling.original_context_length"),
                        GgufValue::U32(orig as u32),
                    );
                    for (src, key) in [
                        ("extrapolation_factor", "rope.scaling.yarn_ext_factor"),
                        ("attention_factor", "rope.scaling.yarn_attn_factor"),
                        ("beta_fast", "rope.scaling.yarn_beta_fast"),
                        ("beta_slow", "rope.scaling.yarn_beta_slow"),
                    ] {
                        let v = rope.get(src).or_else(|| {
                            if src == "attention_factor" {
                                rope.get("attn_factor")
                            } else {
                                None
                            }
                        });
                        if let Some(x) = v.and_then(f32_of) {
                            kv.set(a(key), GgufValue::F32(x));
                        }
                    }
                }
                "su" | "longrope" => {
                    kv.set(a("rope.scaling.type"), GgufValue::String("longrope".into()))
                }
                _ => {}
            }
        }
        let theta = rope
            .get("rope_theta")
            .and_then(f32_of)
            .or_else(|| raw.get("rope_theta").and_then(f32_of));
        if let Some(theta) = theta {
            kv.set(a("rope.freq_base"), GgufValue::F32(theta));
        }
        kv.set(
            a("attention.layer_norm_rms_epsilon"),
            GgufValue::F32(cfg.rms_norm_eps as f32),
        );
        if let Some(d) = head_dim_hp {
            kv.set(a("attention.key_length"), GgufValue::U32(d as u32));
            kv.set(a("attention.value_length"), GgufValue::U32(d as u32));
        }
        kv.set("general.file_type", GgufValue::U32(file_type_of(out_type)));
        if permute_llama {
            kv.set(a("vocab_size"), GgufValue::U32(cfg.vocab_size as u32));
            let rope_dim = head_dim_hp.unwrap_or(cfg.hidden_size / n_head);
            kv.set(a("rope.dimension_count"), GgufValue::U32(rope_dim as u32));
        }
        kv.set("general.quantization_version", GgufValue::U32(2));
        vocab::add_vocab(dir, arch, cfg.vocab_size, &mut kv)
            .with_context(|| format!("{}: tokenizer", dir.display()))?;

        let full_metadata = kv.0;
        let metadata = full_metadata
            .iter()
            .filter(|(k, _)| k != "general.file_type" && k != "general.quantization_version")
            .cloned()
            .collect();
        Ok(HfSource {
            dir: dir.to_path_buf(),
            parts,
            plans,
            tensors,
            full_metadata,
            metadata,
            out_type,
            arch,
            quant,
        })
    }

    /// The metadata `convert --to gguf` writes: [`WeightSource::metadata`] plus
    /// `general.file_type` and `general.quantization_version` where the converter puts them.
    pub fn full_metadata(&self) -> &[(String, GgufValue)] {
        &self.full_metadata
    }

    /// The type 2-D weights are written in (F32, F16 or BF16).
    pub fn out_type(&self) -> GgmlType {
        self.out_type
    }

    /// The folder's architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Write the whole model as a GGUF file, atomically (temporary file, then rename), one tensor
    /// in memory at a time.
    pub fn write_gguf(&self, path: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<()> {
        let mut w = GgufWriter::new(3, self.alignment());
        for (k, v) in &self.full_metadata {
            w.add_kv(k.clone(), v.clone());
        }
        for t in &self.tensors {
            w.add_tensor_deferred(t.name.clone(), t.ne.clone(), t.ty)?;
        }
        let n = self.tensors.len();
        w.write_streaming_to_path(path, |i, out: &mut dyn std::io::Write| -> Result<()> {
            progress(i, n);
            out.write_all(&self.tensor_bytes(i)?)?;
            Ok(())
        })
        .with_context(|| format!("writing {}", path.display()))
    }

    /// A [`GgufWriter`] holding the whole converted model (every tensor converted in memory).
    /// For tests and small models; [`write_gguf`](Self::write_gguf) streams instead.
    pub fn to_writer(&self) -> Result<GgufWriter<'_>> {
        let mut w = GgufWriter::new(3, self.alignment());
        for (k, v) in &self.full_metadata {
            w.add_kv(k.clone(), v.clone());
        }
        for (i, t) in self.tensors.iter().enumerate() {
            w.add_tensor(t.name.clone(), t.ne.clone(), t.ty, self.tensor_bytes(i)?)?;
        }
        Ok(w)
    }
}

/// Rows of `src` (each `row_bytes` long) reordered by llama.cpp's Q/K permutation for `n_head`
/// heads: within each head, row `i * half + j` moves to `2 * j + i`.
pub fn permute_rows(src: &[u8], rows: usize, row_bytes: usize, n_head: usize) -> Vec<u8> {
    move_rows(src, rows, row_bytes, n_head, false)
}

/// The inverse of [`permute_rows`].
pub(crate) fn unpermute_rows(src: &[u8], rows: usize, row_bytes: usize, n_head: usize) -> Vec<u8> {
    move_rows(src, rows, row_bytes, n_head, true)
}

/// Row `h·hd + i·half + j` ⇄ row `h·hd + 2j + i` within each head; `inverse` swaps the roles.
fn move_rows(src: &[u8], rows: usize, row_bytes: usize, n_head: usize, inverse: bool) -> Vec<u8> {
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![0u8; src.len()];
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..half {
                let (a, b) = (h * hd + i * half + j, h * hd + 2 * j + i);
                let (from, to) = if inverse { (b, a) } else { (a, b) };
                out[to * row_bytes..(to + 1) * row_bytes]
                    .copy_from_slice(&src[from * row_bytes..(from + 1) * row_bytes]);
            }
        }
    }
    out
}

/// Convert F32/F16/BF16 bytes to `to` (through f32, exact from F16/BF16).
pub(crate) fn convert_float(src: &[u8], from: GgmlType, to: GgmlType) -> Result<Vec<u8>> {
    if from == to {
        return Ok(src.to_vec());
    }
    let n = src.len() / from.type_size();
    let mut f = vec![0f32; n];
    dequantize_row(from, src, &mut f)
        .map_err(|e| anyhow!("converting {} to f32: {e}", from.name()))?;
    Ok(match to {
        GgmlType::F32 => f.iter().flat_map(|x| x.to_le_bytes()).collect(),
        GgmlType::F16 => f
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_bits().to_le_bytes())
            .collect(),
        GgmlType::BF16 => f
            .iter()
            .flat_map(|x| fp32_to_bf16_bits(*x).to_le_bytes())
            .collect(),
        other => bail!("cannot convert to {}", other.name()),
    })
}

impl WeightSource for HfSource {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
    fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }
    fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }
    fn tensor_bytes(&self, i: usize) -> Result<Cow<'_, [u8]>> {
        let plan = self
            .plans
            .get(i)
            .ok_or_else(|| anyhow!("{}: no tensor #{i}", self.describe()))?;
        let to = self.tensors[i].ty;
        let data: Cow<'_, [u8]> = match &plan.origin {
            Origin::Generated(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Origin::Packed { module } => {
                let q = self
                    .quant
                    .as_ref()
                    .ok_or_else(|| anyhow!("{module}: no quantization_config"))?;
                let w = crate::model::load::dequantize_module(
                    &|n| self.parts.iter().find_map(|p| p.tensor(n).ok()),
                    q,
                    module,
                    plan.shape[0],
                    plan.shape[1],
                )
                .map_err(|e| anyhow!("{}: {e}", self.describe()))?;
                Cow::Owned(w.iter().flat_map(|x| x.to_le_bytes()).collect())
            }
            Origin::Stored { part, name } => {
                let t = self.parts[*part].tensor(name)?;
                Cow::Borrowed(t.data)
            }
        };
        let data = match plan.permute {
            Some(h) => {
                let rows = plan.shape[0];
                let row_bytes = data.len() / rows;
                Cow::Owned(permute_rows(&data, rows, row_bytes, h))
            }
            None => data,
        };
        if plan.src_ty == to {
            return Ok(data);
        }
        Ok(Cow::Owned(
            convert_float(&data, plan.src_ty, to).with_context(|| {
                format!("{}: tensor '{}'", self.describe(), self.tensors[i].name)
            })?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_invertible_and_matches_llama_cpp() {
        // 2 heads of 4 rows, 1 byte per row: [0 1 2 3 | 4 5 6 7] -> [0 2 1 3 | 4 6 5 7].
        let src: Vec<u8> = (0..8).collect();
        let p = permute_rows(&src, 8, 1, 2);
        assert_eq!(p, vec![0, 2, 1, 3, 4, 6, 5, 7]);
        assert_eq!(unpermute_rows(&p, 8, 1, 2), src);
        let src: Vec<u8> = (0..96).collect();
        assert_eq!(unpermute_rows(&permute_rows(&src, 12, 8, 3), 12, 8, 3), src);
    }

    #[test]
    fn float_conversions_round_like_numpy_and_ggml() {
        let x = [1.0f32, 1.0 + f32::EPSILON, 65520.0, -0.1];
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let h = convert_float(&bytes, GgmlType::F32, GgmlType::F16).unwrap();
        let hv: Vec<u16> = h
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(hv, vec![0x3c00, 0x3c00, 0x7c00, 0xae66]);
        let b = convert_float(&bytes, GgmlType::F32, GgmlType::BF16).unwrap();
        let bv: Vec<u16> = b
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(bv, vec![0x3f80, 0x3f80, 0x4780, 0xbdcd]);
    }

    #[test]
    fn llama3_factors() {
        let rope = serde_json::json!({"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_theta": 500000.0});
        let f = llama3_rope_freqs(&rope, 64, 500000.0);
        assert_eq!(f.len(), 32);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[31], 32.0);
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
    }
}
