//! Hugging Face `config.json` of the Llama family: `llama`, `mistral`, `qwen2` and `qwen3`.
//!
//! [`HfConfig::from_file`] parses and validates: sizes must be non-zero, the attention heads must
//! split evenly into key/value groups, and `hidden_size` must equal `num_attention_heads *
//! head_dim` unless the config gives `head_dim` explicitly (Qwen3 does). Each problem is an
//! [`HfError`] naming the file and the key.
//!
//! Both config layouts are read: the classic one (`rope_theta`, `rope_scaling`, `torch_dtype`)
//! and the newer transformers one (`rope_parameters`, `dtype`).
//!
//! ```
//! use autoround_formats::hf::{Arch, HfConfig};
//! let cfg = HfConfig::from_json(r#"{
//!     "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
//!     "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
//!     "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
//!     "rms_norm_eps": 1e-6, "rope_theta": 1000000, "vocab_size": 151936,
//!     "max_position_embeddings": 40960, "tie_word_embeddings": true
//! }"#)?;
//! assert_eq!(cfg.arch()?, Arch::Qwen3);
//! assert_eq!((cfg.n_kv_heads(), cfg.head_dim()), (8, 128));
//! assert!(cfg.has_qk_norm() && !cfg.has_qkv_bias());
//! # Ok::<(), autoround_formats::hf::HfError>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors reading or validating a `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not JSON, or a key is missing or has the wrong type. `key` is the JSON path of the
    /// offending value (`.` for the top level, where serde's message names a missing key).
    #[error("{}: invalid config at '{key}': {source}", path.display())]
    Json {
        path: PathBuf,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// A key has a value that cannot describe a model.
    #[error("{}: invalid '{key}': {msg}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        msg: String,
    },
    /// The architecture is not one this project runs.
    #[error(
        "{}: unsupported architecture (model_type '{model_type}', architectures {architectures:?}); supported: {}",
        path.display(),
        Arch::SUPPORTED
    )]
    UnsupportedArch {
        path: PathBuf,
        model_type: String,
        architectures: Vec<String>,
    },
}

/// The architectures this project runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl Arch {
    /// Human-readable list of the supported `model_type`s.
    pub const SUPPORTED: &'static str =
        "llama (LlamaForCausalLM), mistral (MistralForCausalLM), qwen2 (Qwen2ForCausalLM), qwen3 (Qwen3ForCausalLM)";

    /// The Hugging Face `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    /// The Hugging Face `architectures` entry.
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
        }
    }

    /// The `general.architecture` llama.cpp uses for it in GGUF (Mistral runs as `llama`).
    pub fn gguf_arch(self) -> &'static str {
        match self {
            Arch::Llama | Arch::Mistral => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    fn from_model_type(s: &str) -> Option<Arch> {
        Some(match s {
            "llama" => Arch::Llama,
            "mistral" => Arch::Mistral,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            _ => return None,
        })
    }

    fn from_hf_class(s: &str) -> Option<Arch> {
        Some(match s {
            "LlamaForCausalLM" => Arch::Llama,
            "MistralForCausalLM" => Arch::Mistral,
            "Qwen2ForCausalLM" => Arch::Qwen2,
            "Qwen3ForCausalLM" => Arch::Qwen3,
            _ => return None,
        })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.model_type())
    }
}

/// One token id or several (`eos_token_id` is a list in Llama 3.x and Qwen configs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    /// All ids, in the order given.
    pub fn ids(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(v) => v.clone(),
        }
    }

    /// The first id, if any.
    pub fn first(&self) -> Option<u32> {
        match self {
            TokenIds::One(id) => Some(*id),
            TokenIds::Many(v) => v.first().copied(),
        }
    }
}

/// The kinds of RoPE scaling this project understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RopeType {
    /// Plain RoPE (no scaling).
    Default,
    /// Position interpolation: positions divided by `factor`.
    Linear,
    /// Dynamic NTK scaling.
    Dynamic,
    /// YaRN.
    Yarn,
    /// Llama 3.1 frequency-dependent scaling.
    Llama3,
}

impl RopeType {
    const SUPPORTED: &'static str = "default, linear, dynamic, yarn, llama3";

    fn parse(s: &str) -> Option<RopeType> {
        Some(match s {
            "default" => RopeType::Default,
            "linear" => RopeType::Linear,
            "dynamic" => RopeType::Dynamic,
            "yarn" => RopeType::Yarn,
            "llama3" => RopeType::Llama3,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            RopeType::Default => "default",
            RopeType::Linear => "linear",
            RopeType::Dynamic => "dynamic",
            RopeType::Yarn => "yarn",
            RopeType::Llama3 => "llama3",
        }
    }
}

/// `rope_scaling` (or the scaling part of `rope_parameters`).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeScaling {
    /// From `rope_type`, or the legacy `type` key.
    pub rope_type: RopeType,
    /// Scaling factor (1.0 when absent).
    pub factor: f64,
    /// Llama 3: `low_freq_factor`.
    pub low_freq_factor: Option<f64>,
    /// Llama 3: `high_freq_factor`.
    pub high_freq_factor: Option<f64>,
    /// Llama 3 / YaRN: the context length the model was trained with before scaling.
    pub original_max_position_embeddings: Option<usize>,
    /// YaRN: `attention_factor` (mscale), if given.
    pub attention_factor: Option<f64>,
    /// YaRN: `beta_fast`, if given.
    pub beta_fast: Option<f64>,
    /// YaRN: `beta_slow`, if given.
    pub beta_slow: Option<f64>,
}

/// `rope_scaling` as it appears in JSON (type names unchecked until validation).
#[derive(Debug, Clone, Deserialize)]
struct RawRopeScaling {
    #[serde(default)]
    rope_type: Option<String>,
    #[serde(default, rename = "type")]
    legacy_type: Option<String>,
    #[serde(default)]
    factor: Option<f64>,
    #[serde(default)]
    low_freq_factor: Option<f64>,
    #[serde(default)]
    high_freq_factor: Option<f64>,
    #[serde(default)]
    original_max_position_embeddings: Option<usize>,
    #[serde(default)]
    attention_factor: Option<f64>,
    #[serde(default)]
    beta_fast: Option<f64>,
    #[serde(default)]
    beta_slow: Option<f64>,
    /// Only inside `rope_parameters`.
    #[serde(default)]
    rope_theta: Option<f64>,
}

/// The keys of `config.json` this project uses. Unknown keys are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawHfConfig")]
pub struct HfConfig {
    pub architectures: Vec<String>,
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Absent means multi-head attention (as many key/value heads as query heads).
    pub num_key_value_heads: Option<usize>,
    /// Absent means `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    /// RoPE base frequency (10000 when absent).
    pub rope_theta: f64,
    /// RoPE scaling; `None` for plain RoPE (also when the config says `"rope_type": "default"`).
    pub rope_scaling: Option<RopeScaling>,
    /// The LM head shares the token embedding (default false).
    pub tie_word_embeddings: bool,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    /// Biases on q/k/v/o projections (default false). Qwen2 has q/k/v biases regardless: see
    /// [`HfConfig::has_qkv_bias`].
    pub attention_bias: bool,
    /// Biases on the MLP projections (default false).
    pub mlp_bias: bool,
    pub bos_token_id: Option<TokenIds>,
    pub eos_token_id: Option<TokenIds>,
    pub pad_token_id: Option<TokenIds>,
    /// `torch_dtype` (or `dtype` in newer configs): "bfloat16", "float16", "float32".
    pub torch_dtype: Option<String>,
    /// Sliding-window attention size, if the config enables one.
    pub sliding_window: Option<usize>,
    /// Qwen2/Qwen3: whether `sliding_window` is actually used (default false for them).
    pub use_sliding_window: Option<bool>,
    /// `hidden_act` (the family uses "silu").
    pub hidden_act: Option<String>,
    /// `quantization_config`, untouched, if the checkpoint is already quantized.
    pub quantization_config: Option<serde_json::Value>,
}

fn default_rope_theta() -> f64 {
    10000.0
}

/// `config.json` as it appears, before normalization.
#[derive(Debug, Clone, Deserialize)]
struct RawHfConfig {
    #[serde(default)]
    architectures: Option<Vec<String>>,
    model_type: String,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    rms_norm_eps: f64,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_scaling: Option<RawRopeScaling>,
    #[serde(default)]
    rope_parameters: Option<RawRopeScaling>,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    vocab_size: usize,
    max_position_embeddings: usize,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    mlp_bias: Option<bool>,
    #[serde(default)]
    bos_token_id: Option<TokenIds>,
    #[serde(default)]
    eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pad_token_id: Option<TokenIds>,
    #[serde(default)]
    torch_dtype: Option<String>,
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default)]
    sliding_window: Option<usize>,
    #[serde(default)]
    use_sliding_window: Option<bool>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    quantization_config: Option<serde_json::Value>,
}

/// A validation problem before the path is known: (key, message).
struct KeyProblem(String, String);

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid '{}': {}", self.0, self.1)
    }
}

fn convert_rope(raw: RawRopeScaling, key: &str) -> Result<Option<RopeScaling>, KeyProblem> {
    let name = raw
        .rope_type
        .clone()
        .or(raw.legacy_type.clone())
        .unwrap_or_else(|| "default".to_string());
    let rope_type = RopeType::parse(&name).ok_or_else(|| {
        KeyProblem(
            format!("{key}.rope_type"),
            format!(
                "unknown RoPE scaling '{name}'; supported: {}",
                RopeType::SUPPORTED
            ),
        )
    })?;
    if rope_type == RopeType::Default {
        return Ok(None);
    }
    let factor = match raw.factor {
        Some(f) if f.is_finite() && f > 0.0 => f,
        Some(f) => {
            return Err(KeyProblem(
                format!("{key}.factor"),
                format!("must be a positive number, got {f}"),
            ))
        }
        None => {
            return Err(KeyProblem(
                format!("{key}.factor"),
                format!("required for '{name}' RoPE scaling"),
            ))
        }
    };
    if rope_type == RopeType::Llama3 {
        for (k, v) in [
            ("low_freq_factor", raw.low_freq_factor),
            ("high_freq_factor", raw.high_freq_factor),
        ] {
            match v {
                Some(x) if x.is_finite() && x > 0.0 => {}
                Some(x) => {
                    return Err(KeyProblem(
                        format!("{key}.{k}"),
                        format!("must be a positive number, got {x}"),
                    ))
                }
                None => {
                    return Err(KeyProblem(
                        format!("{key}.{k}"),
                        "required for 'llama3' RoPE scaling".into(),
                    ))
                }
            }
        }
        if raw.low_freq_factor == raw.high_freq_factor {
            return Err(KeyProblem(
                format!("{key}.high_freq_factor"),
                "must differ from low_freq_factor".into(),
            ));
        }
        if raw.original_max_position_embeddings.unwrap_or(0) == 0 {
            return Err(KeyProblem(
                format!("{key}.original_max_position_embeddings"),
                "required (non-zero) for 'llama3' RoPE scaling".into(),
            ));
        }
    }
    Ok(Some(RopeScaling {
        rope_type,
        factor,
        low_freq_factor: raw.low_freq_factor,
        high_freq_factor: raw.high_freq_factor,
        original_max_position_embeddings: raw.original_max_position_embeddings,
        attention_factor: raw.attention_factor,
        beta_fast: raw.beta_fast,
        beta_slow: raw.beta_slow,
    }))
}

impl TryFrom<RawHfConfig> for HfConfig {
    type Error = String;

    fn try_from(raw: RawHfConfig) -> Result<Self, String> {
        HfConfig::normalize(raw).map_err(|p| p.to_string())
    }
}

impl HfConfig {
    fn normalize(raw: RawHfConfig) -> Result<HfConfig, KeyProblem> {
        // Newer transformers put rope_theta and the scaling in `rope_parameters`.
        let (params_theta, params_scaling) = match raw.rope_parameters {
            Some(p) => (p.rope_theta, Some(p)),
            None => (None, None),
        };
        let rope_theta = raw
            .rope_theta
            .or(params_theta)
            .unwrap_or_else(default_rope_theta);
        let rope_scaling = match (raw.rope_scaling, params_scaling) {
            (Some(s), _) => convert_rope(s, "rope_scaling")?,
            (None, Some(p)) => convert_rope(p, "rope_parameters")?,
            (None, None) => None,
        };
        Ok(HfConfig {
            architectures: raw.architectures.unwrap_or_default(),
            model_type: raw.model_type,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads,
            head_dim: raw.head_dim,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            vocab_size: raw.vocab_size,
            max_position_embeddings: raw.max_position_embeddings,
            attention_bias: raw.attention_bias.unwrap_or(false),
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            bos_token_id: raw.bos_token_id,
            eos_token_id: raw.eos_token_id,
            pad_token_id: raw.pad_token_id,
            torch_dtype: raw.torch_dtype.or(raw.dtype),
            sliding_window: raw.sliding_window,
            use_sliding_window: raw.use_sliding_window,
            hidden_act: raw.hidden_act,
            quantization_config: raw.quantization_config,
        })
    }

    /// Reads and validates a `config.json`.
    pub fn from_file(path: &Path) -> Result<HfConfig, HfError> {
        let text = std::fs::read_to_string(path).map_err(|source| HfError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Reads and validates `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<HfConfig, HfError> {
        Self::from_file(&dir.join("config.json"))
    }

    /// Parses and validates a `config.json` given as a string (errors say `<string>`).
    pub fn from_json(json: &str) -> Result<HfConfig, HfError> {
        Self::parse(json, Path::new("<string>"))
    }

    fn parse(text: &str, path: &Path) -> Result<HfConfig, HfError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let raw: RawHfConfig = serde_path_to_error::deserialize(de).map_err(|e| HfError::Json {
            path: path.to_path_buf(),
            key: e.path().to_string(),
            source: e.into_inner(),
        })?;
        let cfg = Self::normalize(raw).map_err(|KeyProblem(key, msg)| HfError::Invalid {
            path: path.to_path_buf(),
            key,
            msg,
        })?;
        cfg.validate_at(path)?;
        Ok(cfg)
    }

    /// Checks sizes and head arithmetic (done by every constructor here; call it again after
    /// editing fields by hand).
    pub fn validate(&self) -> Result<(), HfError> {
        self.validate_at(Path::new("<config>"))
    }

    // `%` rather than `is_multiple_of`: the workspace supports Rust 1.80.
    #[allow(clippy::manual_is_multiple_of)]
    fn validate_at(&self, path: &Path) -> Result<(), HfError> {
        let bad = |key: &str, msg: String| HfError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            msg,
        };
        self.arch_at(path)?;
        for (key, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(bad(key, "must be greater than 0".into()));
            }
        }
        let heads = self.num_attention_heads;
        if let Some(kv) = self.num_key_value_heads {
            if kv == 0 {
                return Err(bad("num_key_value_heads", "must be greater than 0".into()));
            }
            if heads % kv != 0 {
                return Err(bad(
                    "num_key_value_heads",
                    format!("{kv} does not divide num_attention_heads = {heads}"),
                ));
            }
        }
        match self.head_dim {
            Some(0) => return Err(bad("head_dim", "must be greater than 0".into())),
            Some(d) if d % 2 != 0 => {
                return Err(bad("head_dim", format!("{d} must be even for RoPE")))
            }
            Some(_) => {}
            None => {
                if self.hidden_size % heads != 0 {
                    return Err(bad(
                        "hidden_size",
                        format!(
                            "{} is not a multiple of num_attention_heads = {heads} (and no head_dim is given)",
                            self.hidden_size
                        ),
                    ));
                }
                let d = self.hidden_size / heads;
                if d % 2 != 0 {
                    return Err(bad(
                        "hidden_size",
                        format!(
                            "head dimension {} / {heads} = {d} must be even for RoPE",
                            self.hidden_size
                        ),
                    ));
                }
            }
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(bad(
                "rms_norm_eps",
                format!("must be a positive number, got {}", self.rms_norm_eps),
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(bad(
                "rope_theta",
                format!("must be a positive number, got {}", self.rope_theta),
            ));
        }
        if self.sliding_window == Some(0) && self.use_sliding_window != Some(false) {
            return Err(bad("sliding_window", "must be greater than 0".into()));
        }
        Ok(())
    }

    /// The architecture, from `model_type` (or, failing that, `architectures`).
    pub fn arch(&self) -> Result<Arch, HfError> {
        self.arch_at(Path::new("<config>"))
    }

    fn arch_at(&self, path: &Path) -> Result<Arch, HfError> {
        Arch::from_model_type(&self.model_type)
            .or_else(|| {
                self.architectures
                    .iter()
                    .find_map(|a| Arch::from_hf_class(a))
            })
            .ok_or_else(|| HfError::UnsupportedArch {
                path: path.to_path_buf(),
                model_type: self.model_type.clone(),
                architectures: self.architectures.clone(),
            })
    }

    /// Number of key/value heads (grouped-query attention), `num_attention_heads` if absent.
    pub fn n_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head dimension: `head_dim` if given, else `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Whether q/k/v projections have biases: always for Qwen2, else `attention_bias`.
    pub fn has_qkv_bias(&self) -> bool {
        matches!(self.arch(), Ok(Arch::Qwen2)) || self.attention_bias
    }

    /// Whether the output projection has a bias (`attention_bias`; Qwen2 has none there).
    pub fn has_o_bias(&self) -> bool {
        self.attention_bias && !matches!(self.arch(), Ok(Arch::Qwen2))
    }

    /// Whether q and k are RMS-normalized per head before RoPE (Qwen3).
    pub fn has_qk_norm(&self) -> bool {
        matches!(self.arch(), Ok(Arch::Qwen3))
    }

    /// The sliding window actually in effect, if any (Qwen configs carry a `sliding_window`
    /// value with `use_sliding_window: false`).
    pub fn effective_sliding_window(&self) -> Option<usize> {
        match self.use_sliding_window {
            Some(false) => None,
            _ => self.sliding_window.filter(|&w| w > 0),
        }
    }

    /// All end-of-sequence ids from `eos_token_id` (empty if absent).
    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::ids)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA32_1B: &str = r#"{
      "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64,
      "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
      "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false,
      "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
      "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
      "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                       "original_max_position_embeddings": 8192, "rope_type": "llama3"},
      "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
      "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256
    }"#;

    const SMOLLM2: &str = r#"{
      "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 1,
      "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 576, "intermediate_size": 1536,
      "max_position_embeddings": 8192, "model_type": "llama", "num_attention_heads": 9,
      "num_hidden_layers": 30, "num_key_value_heads": 3, "pad_token_id": 2,
      "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 100000,
      "tie_word_embeddings": true, "torch_dtype": "bfloat16", "vocab_size": 49152
    }"#;

    const QWEN25_05B: &str = r#"{
      "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
      "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896,
      "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
      "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
      "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
      "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
      "use_cache": true, "use_sliding_window": false, "vocab_size": 151936
    }"#;

    const QWEN3_06B: &str = r#"{
      "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "bos_token_id": 151643,
      "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024,
      "intermediate_size": 3072, "max_position_embeddings": 40960, "max_window_layers": 28,
      "model_type": "qwen3", "num_attention_heads": 16, "num_hidden_layers": 28,
      "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": null,
      "rope_theta": 1000000, "sliding_window": null, "tie_word_embeddings": true,
      "torch_dtype": "bfloat16", "use_sliding_window": false, "vocab_size": 151936
    }"#;

    const MISTRAL_7B: &str = r#"{
      "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
      "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
      "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32,
      "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
      "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": false,
      "torch_dtype": "bfloat16", "vocab_size": 32000
    }"#;

    fn with(base: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
        edit(&mut v);
        v.to_string()
    }

    #[test]
    fn llama3_rope_scaling() {
        let c = HfConfig::from_json(LLAMA32_1B).unwrap();
        assert_eq!(c.arch().unwrap(), Arch::Llama);
        assert_eq!((c.n_kv_heads(), c.head_dim()), (8, 64));
        assert!(c.tie_word_embeddings && !c.has_qkv_bias() && !c.has_qk_norm());
        let r = c.rope_scaling.as_ref().unwrap();
        assert_eq!(r.rope_type, RopeType::Llama3);
        assert_eq!(r.factor, 32.0);
        assert_eq!(
            (r.low_freq_factor, r.high_freq_factor),
            (Some(1.0), Some(4.0))
        );
        assert_eq!(r.original_max_position_embeddings, Some(8192));
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(c.eos_token_ids(), vec![128001, 128008, 128009]);
        assert_eq!(c.bos_token_id, Some(TokenIds::One(128000)));
        assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));

        // llama3 scaling without its keys is an error naming the key.
        let bad = with(LLAMA32_1B, |v| {
            v["rope_scaling"]
                .as_object_mut()
                .unwrap()
                .remove("low_freq_factor");
        });
        let e = HfConfig::from_json(&bad).unwrap_err().to_string();
        assert!(e.contains("rope_scaling.low_freq_factor"), "{e}");
        let bad = with(LLAMA32_1B, |v| {
            v["rope_scaling"]["rope_type"] = "longrope".into()
        });
        let e = HfConfig::from_json(&bad).unwrap_err().to_string();
        assert!(e.contains("longrope") && e.contains("yarn"), "{e}");
    }

    #[test]
    fn smollm2_defaults() {
        let c = HfConfig::from_json(SMOLLM2).unwrap();
        assert_eq!(c.arch().unwrap(), Arch::Llama);
        assert_eq!((c.n_kv_heads(), c.head_dim()), (3, 64));
        assert!(c.rope_scaling.is_none());
        assert_eq!(c.rope_theta, 100000.0);
        assert_eq!(c.eos_token_ids(), vec![2]);
        // No rope_theta at all: 10000.
        let c = HfConfig::from_json(&with(SMOLLM2, |v| {
            v.as_object_mut().unwrap().remove("rope_theta");
            v.as_object_mut().unwrap().remove("tie_word_embeddings");
        }))
        .unwrap();
        assert_eq!(c.rope_theta, 10000.0);
        assert!(!c.tie_word_embeddings);
    }

    #[test]
    fn qwen2_bias_and_window() {
        let c = HfConfig::from_json(QWEN25_05B).unwrap();
        assert_eq!(c.arch().unwrap(), Arch::Qwen2);
        assert!(c.has_qkv_bias() && !c.has_o_bias() && !c.has_qk_norm());
        assert_eq!((c.n_kv_heads(), c.head_dim()), (2, 64));
        assert_eq!(c.effective_sliding_window(), None);
        assert!(c.tie_word_embeddings);
        // Legacy "type" key for YaRN.
        let c = HfConfig::from_json(&with(QWEN25_05B, |v| {
            v["rope_scaling"] = serde_json::json!(
                {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768});
        }))
        .unwrap();
        let r = c.rope_scaling.unwrap();
        assert_eq!((r.rope_type, r.factor), (RopeType::Yarn, 4.0));
    }

    #[test]
    fn qwen3_head_dim() {
        let c = HfConfig::from_json(QWEN3_06B).unwrap();
        assert_eq!(c.arch().unwrap(), Arch::Qwen3);
        // hidden_size 1024 != 16 * 128: allowed because head_dim is given.
        assert_eq!((c.n_kv_heads(), c.head_dim()), (8, 128));
        assert!(c.has_qk_norm() && !c.has_qkv_bias());
        assert_eq!(c.sliding_window, None);
        assert!(c.rope_scaling.is_none());
    }

    #[test]
    fn mistral_and_new_layout() {
        let c = HfConfig::from_json(MISTRAL_7B).unwrap();
        assert_eq!(c.arch().unwrap(), Arch::Mistral);
        assert_eq!(c.arch().unwrap().gguf_arch(), "llama");
        assert_eq!(c.effective_sliding_window(), Some(4096));
        assert_eq!(c.head_dim(), 128);
        assert!(!c.tie_word_embeddings);
        // transformers v5 layout: rope_parameters + dtype.
        let c = HfConfig::from_json(&with(MISTRAL_7B, |v| {
            let o = v.as_object_mut().unwrap();
            o.remove("rope_theta");
            o.remove("torch_dtype");
            o.insert("dtype".into(), "float16".into());
            o.insert(
                "rope_parameters".into(),
                serde_json::json!({"rope_theta": 1e6, "rope_type": "default"}),
            );
        }))
        .unwrap();
        assert_eq!(c.rope_theta, 1e6);
        assert!(c.rope_scaling.is_none());
        assert_eq!(c.torch_dtype.as_deref(), Some("float16"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases: Vec<(String, &str)> = vec![
            (
                with(SMOLLM2, |v| v["num_key_value_heads"] = 4.into()),
                "num_key_value_heads",
            ),
            (
                with(SMOLLM2, |v| v["num_key_value_heads"] = 0.into()),
                "num_key_value_heads",
            ),
            (
                with(SMOLLM2, |v| v["hidden_size"] = 577.into()),
                "hidden_size",
            ),
            (
                with(SMOLLM2, |v| v["hidden_size"] = 0.into()),
                "hidden_size",
            ),
            (with(SMOLLM2, |v| v["vocab_size"] = 0.into()), "vocab_size"),
            (
                with(SMOLLM2, |v| v["num_hidden_layers"] = 0.into()),
                "num_hidden_layers",
            ),
            (
                with(SMOLLM2, |v| v["rms_norm_eps"] = (-1.0).into()),
                "rms_norm_eps",
            ),
            (with(SMOLLM2, |v| v["head_dim"] = 0.into()), "head_dim"),
            (
                with(SMOLLM2, |v| {
                    v.as_object_mut().unwrap().remove("intermediate_size");
                }),
                "intermediate_size",
            ),
            (
                with(SMOLLM2, |v| v["hidden_size"] = "576".into()),
                "hidden_size",
            ),
            (
                with(SMOLLM2, |v| {
                    v["rope_scaling"] = serde_json::json!({"factor": "x"})
                }),
                "rope_scaling.factor",
            ),
        ];
        for (json, key) in cases {
            let e = HfConfig::from_json(&json).unwrap_err().to_string();
            assert!(e.contains(key), "error {e:?} should name {key}");
        }
        let e = HfConfig::from_json(&with(SMOLLM2, |v| {
            v["model_type"] = "gemma".into();
            v["architectures"] = serde_json::json!(["GemmaForCausalLM"]);
        }))
        .unwrap_err()
        .to_string();
        assert!(e.contains("gemma") && e.contains("qwen3"), "{e}");
        // Unknown model_type but a known class: accepted.
        let c = HfConfig::from_json(&with(SMOLLM2, |v| v["model_type"] = "smollm".into())).unwrap();
        assert_eq!(c.arch().unwrap(), Arch::Llama);
    }

    #[test]
    fn from_dir_names_the_file() {
        let d = std::env::temp_dir().join(format!("autoround-hf-unit-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let e = HfConfig::from_dir(&d.join("nope")).unwrap_err().to_string();
        assert!(e.contains("config.json"), "{e}");
        std::fs::write(d.join("config.json"), QWEN3_06B).unwrap();
        assert_eq!(HfConfig::from_dir(&d).unwrap().arch().unwrap(), Arch::Qwen3);
        std::fs::write(d.join("config.json"), "{").unwrap();
        let e = HfConfig::from_dir(&d).unwrap_err().to_string();
        assert!(e.contains("config.json"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
