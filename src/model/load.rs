//! Opening a model from a GGUF file or a Hugging Face folder (config.json + safetensors).
//!
//! Weights are borrowed from the memory maps: [`ModelSource`] owns the maps, [`Model`] borrows them.
//! Norm vectors and biases (a few KB) are converted to f32 at load.

use super::config::{ConfigError, ModelConfig};
use super::llama::{Layer, Model};
use crate::tensor::{TensorError, Weight};
use autoround_formats::autoround::{unpack_packed, LayerQuant, QuantConfig, Unpacked};
use autoround_formats::gguf::{GgufError, GgufFile};
use autoround_formats::hf::HfConfig;
use autoround_formats::safetensors::{SafetensorsError, SafetensorsModel, StTensor};
use autoround_formats::tokenizer::{Tokenizer, TokenizerError};
use autoround_kernels::groupwise::{GroupMatrix, GroupSpec};
use autoround_kernels::GgmlType;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// Errors opening or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("{file}: tensor '{name}' is missing")]
    Missing { file: String, name: String },
    #[error("{path}: not found (expected a .gguf file or a Hugging Face model folder)")]
    NotFound { path: PathBuf },
    #[error("{file}: {msg}")]
    Quantized { file: String, msg: String },
    #[error(transparent)]
    Hub(#[from] super::hub::HubError),
}

/// Where a model's bytes come from. Owns the memory maps that [`Model`] borrows.
pub enum ModelSource {
    Gguf(GgufFile),
    Hf {
        dir: PathBuf,
        config: HfConfig,
        tensors: SafetensorsModel,
    },
}

impl ModelSource {
    /// Open a `.gguf` file or a Hugging Face folder; a path that does not exist is taken as a
    /// Hugging Face repo id (`owner/name[:FILE][@REVISION]`) and resolved through the hub cache
    /// (see [`super::hub::resolve_model`]).
    pub fn open(path: &Path) -> Result<ModelSource, LoadError> {
        let resolved;
        let path = if path.exists() {
            path
        } else {
            resolved = super::hub::resolve_model(path)?;
            resolved.as_path()
        };
        if path.is_dir() {
            let config = HfConfig::from_dir(path).map_err(ConfigError::from)?;
            let tensors = SafetensorsModel::open_dir(path)?;
            Ok(ModelSource::Hf {
                dir: path.to_path_buf(),
                config,
                tensors,
            })
        } else if path.is_file() {
            Ok(ModelSource::Gguf(GgufFile::open(path)?))
        } else {
            Err(LoadError::NotFound {
                path: path.to_path_buf(),
            })
        }
    }

    /// The file or folder the model was opened from (for a repo id, its file or snapshot folder
    /// in the hub cache).
    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Gguf(f) => f.path(),
            ModelSource::Hf { dir, .. } => dir,
        }
    }

    /// The tokenizer that belongs to the model.
    pub fn tokenizer(&self) -> Result<Tokenizer, LoadError> {
        Ok(match self {
            ModelSource::Gguf(f) => Tokenizer::from_gguf(f)?,
            ModelSource::Hf { dir, .. } => Tokenizer::from_hf_dir(dir)?,
        })
    }

    /// Build the model over this source's bytes.
    pub fn load(&self) -> Result<Model<'_>, LoadError> {
        match self {
            ModelSource::Gguf(f) => load_gguf(f),
            ModelSource::Hf {
                dir,
                config,
                tensors,
            } => load_hf(dir, config, tensors),
        }
    }
}

fn load_gguf(f: &GgufFile) -> Result<Model<'_>, LoadError> {
    let cfg = ModelConfig::from_gguf(f)?;
    let file = f.path().display().to_string();
    let get = |name: &str| {
        f.tensor(name).ok_or_else(|| LoadError::Missing {
            file: file.clone(),
            name: name.into(),
        })
    };
    let mat = |name: &str, rows: usize, cols: usize| -> Result<Weight<'_>, LoadError> {
        let t = get(name)?;
        let dims: Vec<u64> = t.dims.clone();
        if dims != [cols as u64, rows as u64] {
            return Err(TensorError::Shape {
                name: name.into(),
                expected: format!("[{cols}, {rows}]"),
                found: format!("{dims:?}"),
            }
            .into());
        }
        Ok(Weight::matrix(
            name,
            t.ty,
            rows,
            cols,
            Cow::Borrowed(f.tensor_data(t)),
        )?)
    };
    let vec = |name: &str, len: usize| -> Result<Vec<f32>, LoadError> {
        let t = get(name)?;
        if t.dims != [len as u64] {
            return Err(TensorError::Shape {
                name: name.into(),
                expected: format!("[{len}]"),
                found: format!("{:?}", t.dims),
            }
            .into());
        }
        Ok(Weight::new(name, t.ty, 1, len, Cow::Borrowed(f.tensor_data(t)))?.to_f32())
    };
    let opt_vec = |name: &str, len: usize| -> Result<Option<Vec<f32>>, LoadError> {
        if f.tensor(name).is_some() {
            vec(name, len).map(Some)
        } else {
            Ok(None)
        }
    };
    let c = &cfg;
    let (q_dim, kv_dim) = (c.n_head * c.head_dim, c.n_head_kv * c.head_dim);
    let mut layers = Vec::with_capacity(c.n_layer);
    for i in 0..c.n_layer {
        let p = |s: &str| format!("blk.{i}.{s}");
        layers.push(Layer {
            attn_norm: vec(&p("attn_norm.weight"), c.n_embd)?,
            wq: mat(&p("attn_q.weight"), q_dim, c.n_embd)?,
            wk: mat(&p("attn_k.weight"), kv_dim, c.n_embd)?,
            wv: mat(&p("attn_v.weight"), kv_dim, c.n_embd)?,
            wo: mat(&p("attn_output.weight"), c.n_embd, q_dim)?,
            bq: opt_vec(&p("attn_q.bias"), q_dim)?,
            bk: opt_vec(&p("attn_k.bias"), kv_dim)?,
            bv: opt_vec(&p("attn_v.bias"), kv_dim)?,
            q_norm: opt_vec(&p("attn_q_norm.weight"), c.head_dim)?,
            k_norm: opt_vec(&p("attn_k_norm.weight"), c.head_dim)?,
            ffn_norm: vec(&p("ffn_norm.weight"), c.n_embd)?,
            w_gate: mat(&p("ffn_gate.weight"), c.n_ff, c.n_embd)?,
            w_up: mat(&p("ffn_up.weight"), c.n_ff, c.n_embd)?,
            w_down: mat(&p("ffn_down.weight"), c.n_embd, c.n_ff)?,
        });
    }
    let output = if f.tensor("output.weight").is_some() {
        Some(mat("output.weight", c.vocab_size, c.n_embd)?)
    } else {
        None
    };
    Ok(Model {
        numerics: Default::default(),
        tok_embd: mat("token_embd.weight", c.vocab_size, c.n_embd)?,
        layers,
        out_norm: vec("output_norm.weight", c.n_embd)?,
        output,
        rope_freq_factors: opt_vec("rope_freqs.weight", c.rope_dims / 2)?,
        cfg,
        load_notes: Vec::new(),
    })
}

fn load_hf<'a>(
    dir: &Path,
    hf: &HfConfig,
    st: &'a SafetensorsModel,
) -> Result<Model<'a>, LoadError> {
    let file = dir.join("config.json").display().to_string();
    let cfg = ModelConfig::from_hf(hf, &file)?;
    let quant = read_quant_config(dir, &file)?;
    let notes = std::cell::RefCell::new(Vec::new());
    let mat = |name: &str, rows: usize, cols: usize| -> Result<Weight<'a>, LoadError> {
        if let (Some(q), Some(module)) = (&quant, name.strip_suffix(".weight")) {
            if !st.contains(name) && st.contains(&format!("{module}.qweight")) {
                return packed_weight(st, q, module, rows, cols, &mut notes.borrow_mut());
            }
        }
        let t = st.tensor(name)?;
        if t.shape != [rows, cols] {
            return Err(TensorError::Shape {
                name: name.into(),
                expected: format!("[{rows}, {cols}]"),
                found: format!("{:?}", t.shape),
            }
            .into());
        }
        Ok(Weight::matrix(
            name,
            t.dtype,
            rows,
            cols,
            Cow::Borrowed(t.data),
        )?)
    };
    let vec = |name: &str, len: usize| -> Result<Vec<f32>, LoadError> {
        let t = st.tensor(name)?;
        if t.shape != [len] {
            return Err(TensorError::Shape {
                name: name.into(),
                expected: format!("[{len}]"),
                found: format!("{:?}", t.shape),
            }
            .into());
        }
        Ok(Weight::new(name, t.dtype, 1, len, Cow::Borrowed(t.data))?.to_f32())
    };
    let has = |name: &str| st.tensor(name).is_ok();
    let opt_vec = |name: &str, len: usize| {
        if has(name) {
            vec(name, len).map(Some)
        } else {
            Ok(None)
        }
    };
    let c = &cfg;
    let (q_dim, kv_dim) = (c.n_head * c.head_dim, c.n_head_kv * c.head_dim);
    let mut layers = Vec::with_capacity(c.n_layer);
    for i in 0..c.n_layer {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        layers.push(Layer {
            attn_norm: vec(&p("input_layernorm.weight"), c.n_embd)?,
            wq: mat(&p("self_attn.q_proj.weight"), q_dim, c.n_embd)?,
            wk: mat(&p("self_attn.k_proj.weight"), kv_dim, c.n_embd)?,
            wv: mat(&p("self_attn.v_proj.weight"), kv_dim, c.n_embd)?,
            wo: mat(&p("self_attn.o_proj.weight"), c.n_embd, q_dim)?,
            bq: opt_vec(&p("self_attn.q_proj.bias"), q_dim)?,
            bk: opt_vec(&p("self_attn.k_proj.bias"), kv_dim)?,
            bv: opt_vec(&p("self_attn.v_proj.bias"), kv_dim)?,
            q_norm: opt_vec(&p("self_attn.q_norm.weight"), c.head_dim)?,
            k_norm: opt_vec(&p("self_attn.k_norm.weight"), c.head_dim)?,
            ffn_norm: vec(&p("post_attention_layernorm.weight"), c.n_embd)?,
            w_gate: mat(&p("mlp.gate_proj.weight"), c.n_ff, c.n_embd)?,
            w_up: mat(&p("mlp.up_proj.weight"), c.n_ff, c.n_embd)?,
            w_down: mat(&p("mlp.down_proj.weight"), c.n_embd, c.n_ff)?,
        });
    }
    let output = if !hf.tie_word_embeddings && (has("lm_head.weight") || has("lm_head.qweight")) {
        Some(mat("lm_head.weight", c.vocab_size, c.n_embd)?)
    } else {
        None
    };
    let tok_embd = mat("model.embed_tokens.weight", c.vocab_size, c.n_embd)?;
    Ok(Model {
        numerics: Default::default(),
        tok_embd,
        layers,
        out_norm: vec("model.norm.weight", c.n_embd)?,
        output,
        rope_freq_factors: llama3_freq_factors(hf, c),
        cfg,
        load_notes: notes.into_inner(),
    })
}

/// The `quantization_config` of an auto_round / GPTQ / AWQ checkpoint, if `config.json` has one.
fn read_quant_config(dir: &Path, file: &str) -> Result<Option<QuantConfig>, LoadError> {
    let bad = |msg: String| LoadError::Quantized {
        file: file.to_string(),
        msg,
    };
    let text = std::fs::read(dir.join("config.json")).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    QuantConfig::from_config(&v).map_err(bad)
}

/// A packed linear layer (`qweight`, `qzeros`, `scales`, maybe `g_idx`), repacked at load for
/// the group-wise kernels ([`autoround_kernels::groupwise`]: exact, the same codes, scales and
/// zero points). Layers those kernels cannot take (a group that is not a multiple of 32,
/// act-order `g_idx`, scales that are not f16 values) are dequantized to f32 instead, exactly,
/// and `notes` says which and why.
fn packed_weight<'a>(
    st: &SafetensorsModel,
    q: &QuantConfig,
    module: &str,
    rows: usize,
    cols: usize,
    notes: &mut Vec<String>,
) -> Result<Weight<'a>, LoadError> {
    let bad = |msg: String| LoadError::Quantized {
        file: st.path().display().to_string(),
        msg,
    };
    let (lq, u) = unpack_module(&|n| st.tensor(n).ok(), q, module, rows, cols).map_err(bad)?;
    let name = format!("{module}.weight");
    let repacked = match &u.g_idx {
        Some(_) => Err("act-order g_idx".to_string()),
        None => GroupSpec::new(lq.bits, u.group_size, cols)
            .and_then(|spec| {
                let groups = spec.groups(cols);
                // the checkpoint's [groups, rows] to the kernels' [rows, groups]
                let t = |v: &[u32]| -> Vec<u32> {
                    (0..rows * groups)
                        .map(|i| v[(i % groups) * rows + i / groups])
                        .collect()
                };
                let scales: Vec<f32> = (0..rows * groups)
                    .map(|i| u.scales[(i % groups) * rows + i / groups])
                    .collect();
                GroupMatrix::from_codes(spec, rows, cols, &u.codes, &scales, &t(&u.zeros))
            })
            .map_err(|e| e.to_string()),
    };
    match repacked {
        Ok(m) => Ok(Weight::group(&name, m)),
        Err(why) => {
            notes.push(format!("{module}: kept as f32 ({why})"));
            let w = u.dequantize(rows, cols);
            let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
            Ok(Weight::matrix(
                &name,
                GgmlType::F32,
                rows,
                cols,
                Cow::Owned(bytes),
            )?)
        }
    }
}

/// The f32 weights `rows × cols` of the packed layer `module` (tensors `module.qweight`,
/// `.qzeros`, `.scales`, maybe `.g_idx`, looked up with `tensor`), or what is wrong with it.
pub fn dequantize_module<'t>(
    tensor: &dyn Fn(&str) -> Option<StTensor<'t>>,
    q: &QuantConfig,
    module: &str,
    rows: usize,
    cols: usize,
) -> Result<Vec<f32>, String> {
    let (_, u) = unpack_module(tensor, q, module, rows, cols)?;
    Ok(u.dequantize(rows, cols))
}

/// The packed layer `module`'s quantization and unpacked contents (see [`dequantize_module`]).
fn unpack_module<'t>(
    tensor: &dyn Fn(&str) -> Option<StTensor<'t>>,
    q: &QuantConfig,
    module: &str,
    rows: usize,
    cols: usize,
) -> Result<(LayerQuant, Unpacked), String> {
    let lq = q.layer(module).ok_or_else(|| {
        format!("{module}: quantization_config keeps it in float, but there is no .weight")
    })?;
    let get = |suffix: &str| {
        tensor(&format!("{module}.{suffix}")).ok_or_else(|| format!("{module}.{suffix} is missing"))
    };
    let ints = |suffix: &str| -> Result<(Vec<u32>, Vec<usize>), String> {
        let t = get(suffix)?;
        if t.dtype != GgmlType::I32 {
            return Err(format!("{module}.{suffix} is {}, not I32", t.dtype.name()));
        }
        let v = t
            .data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((v, t.shape.clone()))
    };
    let (qweight, qshape) = ints("qweight")?;
    let (qzeros, _) = ints("qzeros")?;
    let sc = get("scales")?;
    let scales = Weight::new(
        "scales",
        sc.dtype,
        1,
        sc.n_elements(),
        Cow::Borrowed(sc.data),
    )
    .map_err(|e| format!("{module}.scales: {e}"))?
    .to_f32();
    let g_idx: Option<Vec<i32>> = match tensor(&format!("{module}.g_idx")) {
        Some(_) => Some(ints("g_idx")?.0.into_iter().map(|x| x as i32).collect()),
        None => None,
    };
    let qrows = qshape.first().copied().unwrap_or(0);
    let u = unpack_packed(
        &lq,
        rows,
        cols,
        &qweight,
        qrows,
        &qzeros,
        &scales,
        g_idx.as_deref(),
    )
    .map_err(|e| {
        format!(
            "{module}: {e} (expected a [{rows}, {cols}] layer, {}-bit, group {})",
            lq.bits, lq.group_size
        )
    })?;
    Ok((lq, u))
}

/// Llama 3's RoPE frequency divisors, computed from `rope_scaling` as llama.cpp's converter does.
fn llama3_freq_factors(hf: &HfConfig, c: &ModelConfig) -> Option<Vec<f32>> {
    let rs = hf.rope_scaling.as_ref()?;
    if rs.rope_type != autoround_formats::hf::RopeType::Llama3 {
        return None;
    }
    let factor = rs.factor;
    let low = rs.low_freq_factor.unwrap_or(1.0);
    let high = rs.high_freq_factor.unwrap_or(4.0);
    let old_ctx = rs.original_max_position_embeddings.unwrap_or(8192) as f64;
    let (low_wavelen, high_wavelen) = (old_ctx / low, old_ctx / high);
    let dim = c.rope_dims as f64;
    Some(
        (0..c.rope_dims / 2)
            .map(|i| {
                let freq = 1.0 / (c.rope_base as f64).powf(2.0 * i as f64 / dim);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                let f = if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    factor
                } else {
                    let smooth = (old_ctx / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                f as f32
            })
            .collect(),
    )
}
