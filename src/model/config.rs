//! Hyper-parameters of a Llama-family decoder, read from GGUF metadata or a Hugging Face config.

use autoround_formats::gguf::{GgufFile, GgufValue};
use autoround_formats::hf::{Arch as HfArch, HfConfig, RopeType};

/// The architectures the model code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl Arch {
    /// The GGUF `general.architecture` value.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    fn from_gguf_name(s: &str) -> Option<Arch> {
        Some(match s {
            "llama" => Arch::Llama,
            "mistral" => Arch::Mistral,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            _ => return None,
        })
    }
}

/// How RoPE pairs dimensions: adjacent pairs `(2i, 2i+1)` (GGUF llama, whose Q/K rows the
/// converter permutes) or halves `(i, i + d/2)` (Hugging Face layout, and qwen in GGUF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    Normal,
    Neox,
}

/// Everything the forward pass needs to know about the model's shape.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    /// Linear RoPE scaling: positions are multiplied by this (1 / factor).
    pub rope_freq_scale: f32,
    pub rope_layout: RopeLayout,
    /// Dimensions rotated by RoPE (normally `head_dim`).
    pub rope_dims: usize,
    pub n_ctx_train: usize,
    pub vocab_size: usize,
}

/// Errors reading the hyper-parameters.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: metadata key '{key}' is missing")]
    Missing { file: String, key: String },
    #[error("{file}: metadata key '{key}' has the wrong type or value: {why}")]
    Bad {
        file: String,
        key: String,
        why: String,
    },
    #[error(
        "{file}: architecture '{arch}' is not supported (supported: llama, mistral, qwen2, qwen3)"
    )]
    Arch { file: String, arch: String },
    #[error(transparent)]
    Hf(#[from] autoround_formats::hf::HfError),
    #[error("{file}: inconsistent shape: {why}")]
    Shape { file: String, why: String },
}

struct Meta<'a> {
    f: &'a GgufFile,
    arch: &'a str,
}

impl Meta<'_> {
    fn file(&self) -> String {
        self.f.path().display().to_string()
    }
    fn raw(&self, key: &str) -> Option<&GgufValue> {
        self.f.get(&format!("{}.{key}", self.arch))
    }
    fn usize(&self, key: &str) -> Result<usize, ConfigError> {
        let full = format!("{}.{key}", self.arch);
        let v = self.raw(key).ok_or_else(|| ConfigError::Missing {
            file: self.file(),
            key: full.clone(),
        })?;
        match v.as_u64() {
            Some(x) if x > 0 && x < (1 << 31) => Ok(x as usize),
            _ => Err(ConfigError::Bad {
                file: self.file(),
                key: full,
                why: format!("expected a positive integer, found {v:?}"),
            }),
        }
    }
    fn usize_or(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        if self.raw(key).is_some() {
            self.usize(key)
        } else {
            Ok(default)
        }
    }
    fn f32_or(&self, key: &str, default: f32) -> Result<f32, ConfigError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(x as f32),
                _ => Err(ConfigError::Bad {
                    file: self.file(),
                    key: format!("{}.{key}", self.arch),
                    why: format!("expected a finite number, found {v:?}"),
                }),
            },
        }
    }
}

impl ModelConfig {
    /// Read the hyper-parameters from GGUF metadata (`general.architecture` and `{arch}.*`).
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig, ConfigError> {
        let file = f.path().display().to_string();
        let arch_name = f
            .get("general.architecture")
            .ok_or_else(|| ConfigError::Missing {
                file: file.clone(),
                key: "general.architecture".into(),
            })?
            .as_str()
            .ok_or_else(|| ConfigError::Bad {
                file: file.clone(),
                key: "general.architecture".into(),
                why: "expected a string".into(),
            })?;
        let arch = Arch::from_gguf_name(arch_name).ok_or_else(|| ConfigError::Arch {
            file: file.clone(),
            arch: arch_name.into(),
        })?;
        let m = Meta { f, arch: arch_name };
        let n_embd = m.usize("embedding_length")?;
        let n_head = m.usize("attention.head_count")?;
        let n_head_kv = m.usize_or("attention.head_count_kv", n_head)?;
        let head_dim = m.usize_or("attention.key_length", n_embd / n_head)?;
        let rope_dims = m.usize_or("rope.dimension_count", head_dim)?;
        let mut rope_freq_scale = 1.0;
        if let Some(t) = m.raw("rope.scaling.type").and_then(|v| v.as_str()) {
            match t {
                "none" => {}
                "linear" => {
                    let factor = m.f32_or("rope.scaling.factor", 1.0)?;
                    if factor > 0.0 {
                        rope_freq_scale = 1.0 / factor;
                    }
                }
                other => {
                    return Err(ConfigError::Bad {
                        file,
                        key: format!("{arch_name}.rope.scaling.type"),
                        why: format!("rope scaling '{other}' is not supported (none, linear; llama3 uses rope_freqs.weight)"),
                    })
                }
            }
        }
        let vocab_size = match f.tensor("token_embd.weight") {
            Some(t) if t.dims.len() == 2 => t.dims[1] as usize,
            _ => m.usize("vocab_size")?,
        };
        let cfg = ModelConfig {
            arch,
            n_layer: m.usize("block_count")?,
            n_embd,
            n_ff: m.usize("feed_forward_length")?,
            n_head,
            n_head_kv,
            head_dim,
            rms_eps: m.f32_or("attention.layer_norm_rms_epsilon", 1e-5)?,
            rope_base: m.f32_or("rope.freq_base", 10000.0)?,
            rope_freq_scale,
            rope_layout: match arch {
                Arch::Llama | Arch::Mistral => RopeLayout::Normal,
                Arch::Qwen2 | Arch::Qwen3 => RopeLayout::Neox,
            },
            rope_dims,
            n_ctx_train: m.usize_or("context_length", 4096)?,
            vocab_size,
        };
        cfg.validate(&file)?;
        Ok(cfg)
    }

    /// Read the hyper-parameters from a Hugging Face `config.json`.
    pub fn from_hf(c: &HfConfig, file: &str) -> Result<ModelConfig, ConfigError> {
        let arch = match c.arch()? {
            HfArch::Llama => Arch::Llama,
            HfArch::Mistral => Arch::Mistral,
            HfArch::Qwen2 => Arch::Qwen2,
            HfArch::Qwen3 => Arch::Qwen3,
        };
        let mut rope_freq_scale = 1.0f32;
        if let Some(rs) = &c.rope_scaling {
            match &rs.rope_type {
                RopeType::Default | RopeType::Llama3 => {}
                RopeType::Linear if rs.factor > 0.0 => rope_freq_scale = (1.0 / rs.factor) as f32,
                other => {
                    return Err(ConfigError::Bad {
                        file: file.into(),
                        key: "rope_scaling".into(),
                        why: format!(
                            "{other:?} RoPE scaling is not supported yet (default, linear, llama3)"
                        ),
                    })
                }
            }
        }
        let head_dim = c.head_dim();
        let cfg = ModelConfig {
            arch,
            n_layer: c.num_hidden_layers,
            n_embd: c.hidden_size,
            n_ff: c.intermediate_size,
            n_head: c.num_attention_heads,
            n_head_kv: c.n_kv_heads(),
            head_dim,
            rms_eps: c.rms_norm_eps as f32,
            rope_base: c.rope_theta as f32,
            rope_freq_scale,
            rope_layout: RopeLayout::Neox,
            rope_dims: head_dim,
            n_ctx_train: c.max_position_embeddings,
            vocab_size: c.vocab_size,
        };
        cfg.validate(file)?;
        Ok(cfg)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |why: String| {
            Err(ConfigError::Shape {
                file: file.into(),
                why,
            })
        };
        if self.n_head_kv == 0 || self.n_head % self.n_head_kv != 0 {
            return bad(format!(
                "{} heads are not a multiple of {} KV heads",
                self.n_head, self.n_head_kv
            ));
        }
        if self.rope_dims > self.head_dim || self.rope_dims % 2 != 0 {
            return bad(format!(
                "RoPE dimensions {} do not fit head dimension {}",
                self.rope_dims, self.head_dim
            ));
        }
        if self.n_layer == 0 || self.n_layer > 4096 || self.head_dim == 0 || self.head_dim > 4096 {
            return bad(format!(
                "{} layers / head dimension {} out of range",
                self.n_layer, self.head_dim
            ));
        }
        Ok(())
    }
}
