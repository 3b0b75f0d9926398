//! llama-quantize's per-tensor type choices: which ggml type each tensor of a Llama-family model
//! gets under a named mixture (`q4_k_m`, `q3_k_s`, `q8_0`, ...).
//!
//! This reproduces, for the mixtures in [`Mixture`] and the architectures in
//! [`Arch`], what llama.cpp's `src/llama-quant.cpp` decides (llama.cpp
//! `0c1e57098`, b11312, as vendored by llama-cpp-python 0.3.36): `llama_ftype_get_default_type`
//! (the mixture's base type), `tensor_allows_quantization` (which tensors are quantized at all),
//! `tensor_get_category`, `llama_tensor_get_type_impl` (the per-category bumps) and
//! `tensor_type_fallback` (rows that are not whole blocks of the chosen type). The rules:
//!
//! - **Not quantized** (keep their type): tensors with fewer than two dimensions (ggml's
//!   `n_dims`, which ignores trailing 1s), names not ending in `weight`, `*_norm.weight`,
//!   `ffn_gate_inp.weight` (MoE routers), `position_embd.weight`, `token_types.weight` and a list
//!   of other architectures' small tensors; `output.weight` too with `leave_output_tensor`.
//! - **Order and counters**: tensors are visited in llama.cpp's order (layer number from a
//!   `blk.N.` prefix, non-layer tensors first as layer −1, then name). `attn_v`-like tensors
//!   (`attn_v`, `attn_qkv`, `attn_kv_b`) are numbered in that order (`i_attention_wv` of
//!   `n_attention_wv`, the count of such names in the model); `ffn_down` tensors likewise
//!   (`i_ffn_down` of `n_layer`); with experts (`n_expert > 1`) the layer is parsed from the name.
//!   `use_more_bits(i, n)` is `i < n/8 || i >= 7n/8 || (i − n/8) % 3 == 2`.
//! - **output.weight**, and `token_embd.weight` when the model has no `output.weight` (tied
//!   embeddings): Q8_0 if the row is not whole blocks of the base type, else Q6_K unless the base
//!   is Q8_0.
//! - **attn_v**: q2_k → Q4_K if GQA ≥ 4 else Q3_K; q2_k_s → Q4_K if GQA ≥ 4; q3_k_m → Q5_K for
//!   the first two, then Q4_K; q3_k_l → Q5_K; q4_k_m/q5_k_m → Q6_K where `use_more_bits`;
//!   q4_k_s → Q5_K for the first four. A 70B model (llama with 80 layers and GQA; qwen2 with 80
//!   layers) then lifts Q3_K/Q4_K to Q5_K; 8 experts make it Q8_0.
//! - **attn_k**: Q8_0 with 8 experts.
//! - **ffn_down**: q2_k → Q3_K; q2_k_s → Q4_K for layers below n/8; q3_k_m → Q5_K below n/16,
//!   else Q4_K; q3_k_l → Q5_K; q4_k_m/q5_k_m → Q6_K where `use_more_bits`; q4_k_s → Q5_K below
//!   n/8; q4_0/q5_0 *with an imatrix* → Q4_1/Q5_1 below n/8.
//! - **attn_output**: with 8 experts, q2_k/q3_k_s/q3_k_m/q4_k_s/q4_k_m → Q5_K; otherwise q2_k →
//!   Q3_K, q3_k_m → Q4_K, q3_k_l → Q5_K.
//! - **Fallback**, last, for every quantized choice: if the row length `ne[0]` is not a multiple
//!   of the type's block size, Q2_K/Q3_K → Q4_0, Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0 (the
//!   IQ 256-block types → IQ4_NL), a 32-block type stays; if that still does not divide the row,
//!   F16. Each such tensor counts once in [`Plan::n_fallback`] (llama-quantize's "N of M
//!   tensor(s) required fallback quantization").
//! - **f16, bf16, f32**: every quantizable tensor gets that type, with no other rule.
//!
//! The branches of llama.cpp's rules that only concern mixtures not listed here (IQ*, TQ*,
//! MXFP4) or architectures not supported here (Falcon, GLM5-next) are left out; the
//! `--tensor-type` regex overrides and `--prune-layers` are not supported.

use std::collections::HashMap;
use std::fmt;

use autoround_formats::gguf::{self, GgufHeader, GgufValue};
use autoround_kernels::GgmlType;

use crate::model::{Arch, ModelConfig};

/// A llama-quantize mixture (its `type` argument, a `llama_ftype`).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mixture {
    Q2_K_S,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_0,
    Q4_1,
    Q4_K_S,
    Q4_K_M,
    Q5_0,
    Q5_1,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    Q8_0,
    F16,
    BF16,
    F32,
}

impl Mixture {
    /// Every mixture, smallest first.
    pub const ALL: &'static [Mixture] = &[
        Mixture::Q2_K_S,
        Mixture::Q2_K,
        Mixture::Q3_K_S,
        Mixture::Q3_K_M,
        Mixture::Q3_K_L,
        Mixture::Q4_0,
        Mixture::Q4_1,
        Mixture::Q4_K_S,
        Mixture::Q4_K_M,
        Mixture::Q5_0,
        Mixture::Q5_1,
        Mixture::Q5_K_S,
        Mixture::Q5_K_M,
        Mixture::Q6_K,
        Mixture::Q8_0,
        Mixture::F16,
        Mixture::BF16,
        Mixture::F32,
    ];

    /// Our name, lower case: `"q4_k_m"`.
    pub fn name(self) -> &'static str {
        match self {
            Mixture::Q2_K_S => "q2_k_s",
            Mixture::Q2_K => "q2_k",
            Mixture::Q3_K_S => "q3_k_s",
            Mixture::Q3_K_M => "q3_k_m",
            Mixture::Q3_K_L => "q3_k_l",
            Mixture::Q4_0 => "q4_0",
            Mixture::Q4_1 => "q4_1",
            Mixture::Q4_K_S => "q4_k_s",
            Mixture::Q4_K_M => "q4_k_m",
            Mixture::Q5_0 => "q5_0",
            Mixture::Q5_1 => "q5_1",
            Mixture::Q5_K_S => "q5_k_s",
            Mixture::Q5_K_M => "q5_k_m",
            Mixture::Q6_K => "q6_k",
            Mixture::Q8_0 => "q8_0",
            Mixture::F16 => "f16",
            Mixture::BF16 => "bf16",
            Mixture::F32 => "f32",
        }
    }

    /// llama-quantize's name for it: `"Q4_K_M"`.
    pub fn llama_name(self) -> String {
        self.name().to_ascii_uppercase()
    }

    /// Parse `q4_k_m`, `Q4_K_M` or `gguf:q4_k_m` (case-insensitive). llama-quantize's aliases
    /// `q3_k`, `q4_k` and `q5_k` mean the `_m` mixtures.
    pub fn parse(s: &str) -> Result<Mixture, MixtureError> {
        let t = s.trim().to_ascii_lowercase();
        let t = t.strip_prefix("gguf:").unwrap_or(&t);
        let t = match t {
            "q3_k" => "q3_k_m",
            "q4_k" => "q4_k_m",
            "q5_k" => "q5_k_m",
            other => other,
        };
        Mixture::ALL
            .iter()
            .copied()
            .find(|m| m.name() == t)
            .ok_or_else(|| MixtureError::UnknownMixture { given: s.into() })
    }

    /// The `llama_ftype` value, written as `general.file_type`.
    pub fn ftype(self) -> u32 {
        match self {
            Mixture::F32 => 0,
            Mixture::F16 => 1,
            Mixture::Q4_0 => 2,
            Mixture::Q4_1 => 3,
            Mixture::Q8_0 => 7,
            Mixture::Q5_0 => 8,
            Mixture::Q5_1 => 9,
            Mixture::Q2_K => 10,
            Mixture::Q3_K_S => 11,
            Mixture::Q3_K_M => 12,
            Mixture::Q3_K_L => 13,
            Mixture::Q4_K_S => 14,
            Mixture::Q4_K_M => 15,
            Mixture::Q5_K_S => 16,
            Mixture::Q5_K_M => 17,
            Mixture::Q6_K => 18,
            Mixture::Q2_K_S => 21,
            Mixture::BF16 => 32,
        }
    }

    /// The base type (`llama_ftype_get_default_type`): what a tensor gets unless a rule says
    /// otherwise.
    pub fn default_type(self) -> GgmlType {
        match self {
            Mixture::Q2_K_S | Mixture::Q2_K => GgmlType::Q2_K,
            Mixture::Q3_K_S | Mixture::Q3_K_M | Mixture::Q3_K_L => GgmlType::Q3_K,
            Mixture::Q4_0 => GgmlType::Q4_0,
            Mixture::Q4_1 => GgmlType::Q4_1,
            Mixture::Q4_K_S | Mixture::Q4_K_M => GgmlType::Q4_K,
            Mixture::Q5_0 => GgmlType::Q5_0,
            Mixture::Q5_1 => GgmlType::Q5_1,
            Mixture::Q5_K_S | Mixture::Q5_K_M => GgmlType::Q5_K,
            Mixture::Q6_K => GgmlType::Q6_K,
            Mixture::Q8_0 => GgmlType::Q8_0,
            Mixture::F16 => GgmlType::F16,
            Mixture::BF16 => GgmlType::BF16,
            Mixture::F32 => GgmlType::F32,
        }
    }

    /// Whether llama-quantize refuses this mixture without an importance matrix (q2_k_s: its
    /// Q2_K tensors other than token_embd/output need one, `tensor_requires_imatrix`).
    pub fn requires_imatrix(self) -> bool {
        self == Mixture::Q2_K_S
    }
}

impl fmt::Display for Mixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn valid_names() -> String {
    let names: Vec<&str> = Mixture::ALL.iter().map(|m| m.name()).collect();
    names.join(", ")
}

/// Errors choosing types.
#[derive(Debug, thiserror::Error)]
pub enum MixtureError {
    #[error(
        "unknown mixture '{given}'; valid: {} (optionally prefixed 'gguf:'; q3_k, q4_k, q5_k mean the _m ones)",
        valid_names()
    )]
    UnknownMixture { given: String },
    #[error("model metadata key '{key}' is missing")]
    MissingKey { key: String },
    #[error("model metadata key '{key}': {why}")]
    BadKey { key: String, why: String },
    #[error("architecture '{arch}' is not supported for quantization (supported: llama, mistral, qwen2, qwen3)")]
    UnsupportedArch { arch: String },
    #[error("tensor '{tensor}' is listed twice")]
    DuplicateTensor { tensor: String },
    #[error("tensor '{tensor}': failed to determine its layer (expected a 'blk.N.' prefix), needed for a model with {n_expert} experts")]
    NoLayer { tensor: String, n_expert: u32 },
    #[error("tensor '{tensor}': bad layer {layer}, must be in [0, {n_layer})")]
    BadLayer {
        tensor: String,
        layer: i32,
        n_layer: u32,
    },
    #[error("tensor '{tensor}': row of {ncols} elements is not a multiple of {block} (type {ty}) and no fallback type is defined for {ty}")]
    NoFallback {
        tensor: String,
        ncols: u64,
        block: u64,
        ty: GgmlType,
    },
    #[error("tensor '{tensor}': the requested {option} {ty} cannot hold rows of {ncols} elements (blocks of {block}); llama-quantize fails on it too")]
    RaggedRow {
        tensor: String,
        option: &'static str,
        ty: GgmlType,
        ncols: u64,
        block: u64,
    },
}

/// What llama.cpp's quantizer reads from the model's hyper-parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelMeta {
    pub arch: Arch,
    /// `{arch}.block_count` (llama.cpp's `n_layer_all`): the `n_ffn_down` of the rules.
    pub n_layer: u32,
    /// Attention heads of layer 0 (`{arch}.attention.head_count`; 0 when absent).
    pub n_head: u32,
    /// KV heads of layer 0 (`{arch}.attention.head_count_kv`, default `n_head`).
    pub n_head_kv: u32,
    /// `{arch}.expert_count` (0 for dense models).
    pub n_expert: u32,
}

impl ModelMeta {
    /// Query heads per KV head (`n_head / n_head_kv`, 0 when `n_head_kv` is 0).
    pub fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// llama.cpp's `LLM_TYPE_70B`, the only model size the rules look at: llama with 80 layers,
    /// fewer KV heads than heads and not 8 experts; qwen2 with 80 layers.
    pub fn is_70b(&self) -> bool {
        match self.arch {
            Arch::Llama | Arch::Mistral => {
                self.n_expert != 8 && self.n_layer == 80 && self.n_head != self.n_head_kv
            }
            Arch::Qwen2 => self.n_layer == 80,
            Arch::Qwen3 => false,
        }
    }

    /// Read from GGUF metadata the keys llama.cpp's loader reads (a per-layer array gives its
    /// layer-0 value).
    pub fn from_gguf(h: &GgufHeader) -> Result<ModelMeta, MixtureError> {
        ModelMeta::from_metadata(&h.metadata)
    }

    /// [`from_gguf`](Self::from_gguf) from the metadata alone.
    pub fn from_metadata(md: &[(String, GgufValue)]) -> Result<ModelMeta, MixtureError> {
        struct H<'a>(&'a [(String, GgufValue)]);
        impl H<'_> {
            fn get(&self, key: &str) -> Option<&GgufValue> {
                self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
        }
        let h = H(md);
        let key = "general.architecture";
        let arch_name = h
            .get(key)
            .ok_or_else(|| MixtureError::MissingKey { key: key.into() })?
            .as_str()
            .ok_or_else(|| MixtureError::BadKey {
                key: key.into(),
                why: "expected a string".into(),
            })?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "mistral" => Arch::Mistral,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            other => return Err(MixtureError::UnsupportedArch { arch: other.into() }),
        };
        let get = |suffix: &str, default: Option<u32>| -> Result<u32, MixtureError> {
            let key = format!("{arch_name}.{suffix}");
            let bad = |why: &str| MixtureError::BadKey {
                key: key.clone(),
                why: why.into(),
            };
            match h.get(&key) {
                None => default.ok_or_else(|| MixtureError::MissingKey { key: key.clone() }),
                Some(GgufValue::Array(_, items)) => items
                    .first()
                    .ok_or_else(|| bad("empty per-layer array"))?
                    .as_u32()
                    .ok_or_else(|| bad("expected unsigned 32-bit integers")),
                Some(v) => v
                    .as_u32()
                    .ok_or_else(|| bad("expected an unsigned 32-bit integer")),
            }
        };
        let n_layer = get("block_count", None)?;
        if n_layer == 0 {
            return Err(MixtureError::BadKey {
                key: format!("{arch_name}.block_count"),
                why: "must be at least 1".into(),
            });
        }
        let n_head = get("attention.head_count", Some(0))?;
        Ok(ModelMeta {
            arch,
            n_layer,
            n_head,
            n_head_kv: get("attention.head_count_kv", Some(n_head))?,
            n_expert: get("expert_count", Some(0))?,
        })
    }
}

impl From<&ModelConfig> for ModelMeta {
    /// A dense model's metadata from its configuration (no experts).
    fn from(c: &ModelConfig) -> ModelMeta {
        ModelMeta {
            arch: c.arch,
            n_layer: c.n_layer as u32,
            n_head: c.n_head as u32,
            n_head_kv: c.n_head_kv as u32,
            n_expert: 0,
        }
    }
}

/// A tensor to plan for: its name, shape and current type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in ggml order: `ne[0]` is the row length.
    pub ne: Vec<u64>,
    /// The type it has now; tensors that are not quantized keep it.
    pub ty: GgmlType,
}

impl TensorInfo {
    pub fn new(name: impl Into<String>, ne: &[u64], ty: GgmlType) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            ne: ne.to_vec(),
            ty,
        }
    }

    fn ne(&self, i: usize) -> u64 {
        self.ne.get(i).copied().unwrap_or(1)
    }

    /// ggml's `n_dims`: the index of the last dimension above 1, plus one (at least 1).
    pub fn n_dims(&self) -> usize {
        (1..self.ne.len().min(4))
            .rev()
            .find(|&i| self.ne[i] > 1)
            .map_or(1, |i| i + 1)
    }
}

impl From<&gguf::TensorInfo> for TensorInfo {
    fn from(t: &gguf::TensorInfo) -> TensorInfo {
        TensorInfo {
            name: t.name.clone(),
            ne: t.dims.clone(),
            ty: t.ty,
        }
    }
}

/// llama-quantize's options that change the choice of types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// An importance matrix is given (`--imatrix`): q4_0/q5_0 then bump the first ffn_down layers.
    pub has_imatrix: bool,
    /// `--pure`: every quantized tensor gets the base type (fallbacks still apply).
    pub pure: bool,
    /// `--leave-output-tensor`: output.weight keeps its type.
    pub leave_output_tensor: bool,
    /// `--output-tensor-type` (also the token embedding's type when embeddings are tied).
    pub output_tensor_type: Option<GgmlType>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<GgmlType>,
}

/// The type chosen for one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTensor {
    pub name: String,
    pub ty: GgmlType,
    /// Whether the tensor may be quantized at all (`false`: it keeps its current type).
    pub quantizable: bool,
    /// Set when the row length forced a fallback: what was wanted and what was taken.
    pub fallback: Option<String>,
}

/// The types of all tensors, in llama-quantize's order (the order it writes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub tensors: Vec<PlannedTensor>,
    /// Tensors whose rows forced a fallback type.
    pub n_fallback: usize,
}

impl Plan {
    /// The entry of a tensor by name.
    pub fn get(&self, name: &str) -> Option<&PlannedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Choose every tensor's type with llama-quantize's default options.
pub fn plan(
    mixture: Mixture,
    meta: &ModelMeta,
    tensors: &[TensorInfo],
) -> Result<Plan, MixtureError> {
    plan_with(mixture, meta, tensors, &PlanOptions::default())
}

/// Choose every tensor's type as llama-quantize does with these options.
pub fn plan_with(
    mixture: Mixture,
    meta: &ModelMeta,
    tensors: &[TensorInfo],
    opts: &PlanOptions,
) -> Result<Plan, MixtureError> {
    let mut seen = HashMap::with_capacity(tensors.len());
    for t in tensors {
        if seen.insert(t.name.as_str(), ()).is_some() {
            return Err(MixtureError::DuplicateTensor {
                tensor: t.name.clone(),
            });
        }
    }
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by(|a, b| {
        let la = scan_layer(&a.name).unwrap_or(-1);
        let lb = scan_layer(&b.name).unwrap_or(-1);
        la.cmp(&lb)
            .then_with(|| a.name.as_bytes().cmp(b.name.as_bytes()))
    });
    let mut st = State {
        mixture,
        meta,
        opts,
        n_attention_wv: order
            .iter()
            .filter(|t| category(&t.name).is_attn_v())
            .count() as i32,
        n_layer: meta.n_layer as i32,
        i_attention_wv: 0,
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
        n_fallback: 0,
        tied_embeddings: !order.iter().any(|t| category(&t.name) == Category::Output),
    };
    let mut out = Vec::with_capacity(order.len());
    for t in order {
        out.push(st.tensor_type(t)?);
    }
    Ok(Plan {
        tensors: out,
        n_fallback: st.n_fallback,
    })
}

/// `sscanf(name, "blk.%d.", &layer)`: the number after a `blk.` prefix (a sign and leading
/// whitespace allowed, as `%d` allows), whether or not a `.` follows it.
fn scan_layer(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("blk.")?;
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match rest.as_bytes().first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    let len = digits.bytes().take_while(u8::is_ascii_digit).count();
    if len == 0 {
        return None;
    }
    let v = digits[..len].bytes().fold(0i64, |v, d| {
        v.saturating_mul(10).saturating_add(i64::from(d - b'0'))
    });
    let v = if neg { -v } else { v };
    Some(v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
}

/// llama.cpp's `tensor_category`, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

impl Category {
    fn is_attn_v(self) -> bool {
        matches!(
            self,
            Category::AttnV | Category::AttnQkv | Category::AttnKvB
        )
    }
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        return Category::Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return Category::TokenEmbd;
    }
    const BY_SUBSTRING: &[(&str, Category)] = &[
        ("attn_qkv.weight", Category::AttnQkv),
        ("attn_kv_b.weight", Category::AttnKvB),
        ("attn_v.weight", Category::AttnV),
        ("attn_k.weight", Category::AttnK),
        ("attn_q.weight", Category::AttnQ),
        ("attn_output.weight", Category::AttnOutput),
        ("ffn_up", Category::FfnUp),
        ("ffn_gate", Category::FfnGate),
        ("ffn_down", Category::FfnDown),
    ];
    BY_SUBSTRING
        .iter()
        .find(|(s, _)| name.contains(s))
        .map_or(Category::Other, |&(_, c)| c)
}

/// llama.cpp's `tensor_allows_quantization` (for the architectures supported here).
fn allows_quantization(t: &TensorInfo, opts: &PlanOptions) -> bool {
    if t.n_dims() < 2 {
        return false;
    }
    let name = t.name.as_str();
    // llama.cpp tests `name.rfind("weight") == name.size() - 6`; for a 5-byte name both sides
    // are npos, so such names count as ending in "weight".
    if !(name.ends_with("weight") || name.len() == 5) {
        return false;
    }
    if opts.leave_output_tensor && name == "output.weight" {
        return false;
    }
    if name == "position_embd.weight" || name == "token_types.weight" {
        return false;
    }
    const NEVER: &[&str] = &[
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    !NEVER.iter().any(|s| name.contains(s))
}

/// `use_more_bits`: the first and last eighth of the layers and every third one between.
fn use_more_bits(i_layer: i32, n_layers: i32) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// llama.cpp's `quantize_state_impl`: the counters that make the choice depend on position.
struct State<'a> {
    mixture: Mixture,
    meta: &'a ModelMeta,
    opts: &'a PlanOptions,
    n_attention_wv: i32,
    /// `n_ffn_down`, `n_ffn_gate`, `n_ffn_up`: all `n_layer`.
    n_layer: i32,
    i_attention_wv: i32,
    i_ffn_down: i32,
    i_ffn_gate: i32,
    i_ffn_up: i32,
    n_fallback: usize,
    tied_embeddings: bool,
}

impl State<'_> {
    /// `llama_tensor_get_type`.
    fn tensor_type(&mut self, t: &TensorInfo) -> Result<PlannedTensor, MixtureError> {
        let planned = |ty, quantizable, fallback| PlannedTensor {
            name: t.name.clone(),
            ty,
            quantizable,
            fallback,
        };
        if !allows_quantization(t, self.opts) {
            return Ok(planned(t.ty, false, None));
        }
        let cat = category(&t.name);
        // llama.cpp returns these two options' types without the fallback check, then fails
        // when it quantizes a row that is not whole blocks: refuse here instead.
        let requested = match cat {
            Category::TokenEmbd => self
                .opts
                .token_embedding_type
                .map(|ty| ("--token-embedding-type", ty)),
            Category::Output => self
                .opts
                .output_tensor_type
                .map(|ty| ("--output-tensor-type", ty)),
            _ => None,
        };
        if let Some((option, ty)) = requested {
            let block = ty.block_size() as u64;
            if t.ne(0) % block != 0 {
                return Err(MixtureError::RaggedRow {
                    tensor: t.name.clone(),
                    option,
                    ty,
                    ncols: t.ne(0),
                    block,
                });
            }
            return Ok(planned(ty, true, None));
        }
        let default = self.mixture.default_type();
        if !default.is_quantized() {
            return Ok(planned(default, true, None));
        }
        let mut ty = default;
        if !self.opts.pure {
            ty = self.bump(ty, t, cat)?;
        }
        let (ty, note) = self.fallback(t, ty)?;
        Ok(planned(ty, true, note))
    }

    /// `layer_info`: the counter for dense models, the layer in the name with experts.
    fn layer_info(&self, counter: i32, t: &TensorInfo) -> Result<(i32, i32), MixtureError> {
        let n_layer = self.n_layer;
        if self.meta.n_expert > 1 {
            let layer = scan_layer(&t.name).ok_or_else(|| MixtureError::NoLayer {
                tensor: t.name.clone(),
                n_expert: self.meta.n_expert,
            })?;
            if layer < 0 || layer >= n_layer {
                return Err(MixtureError::BadLayer {
                    tensor: t.name.clone(),
                    layer,
                    n_layer: self.meta.n_layer,
                });
            }
            return Ok((layer, n_layer));
        }
        Ok((counter, n_layer))
    }

    /// `llama_tensor_get_type_impl` for our mixtures and architectures.
    fn bump(
        &mut self,
        mut ty: GgmlType,
        t: &TensorInfo,
        cat: Category,
    ) -> Result<GgmlType, MixtureError> {
        use GgmlType as T;
        use Mixture as M;
        let m = self.mixture;
        let meta = self.meta;
        if cat == Category::Output || (self.tied_embeddings && cat == Category::TokenEmbd) {
            if let Some(out) = self.opts.output_tensor_type {
                ty = out;
            } else if t.ne(0) % ty.block_size() as u64 != 0 {
                ty = T::Q8_0;
            } else if ty != T::Q8_0 {
                ty = T::Q6_K;
            }
        } else if cat == Category::TokenEmbd {
            if let Some(emb) = self.opts.token_embedding_type {
                ty = emb;
            }
            // (the other token_embd rules concern IQ/TQ mixtures only)
        } else if cat.is_attn_v() {
            let (i, n) = (self.i_attention_wv, self.n_attention_wv);
            match m {
                M::Q2_K => ty = if meta.n_gqa() >= 4 { T::Q4_K } else { T::Q3_K },
                M::Q2_K_S if meta.n_gqa() >= 4 => ty = T::Q4_K,
                M::Q3_K_M => ty = if i < 2 { T::Q5_K } else { T::Q4_K },
                M::Q3_K_L => ty = T::Q5_K,
                M::Q4_K_M | M::Q5_K_M if use_more_bits(i, n) => ty = T::Q6_K,
                M::Q4_K_S if i < 4 => ty = T::Q5_K,
                _ => {}
            }
            if meta.is_70b() && matches!(ty, T::Q3_K | T::Q4_K) {
                // 8 heads share each attn_v row: more bits cost little
                ty = T::Q5_K;
            }
            if meta.n_expert == 8 {
                ty = T::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::AttnK {
            if meta.n_expert == 8 {
                ty = T::Q8_0;
            }
        } else if cat == Category::FfnDown {
            let (i, n) = self.layer_info(self.i_ffn_down, t)?;
            match m {
                M::Q2_K => ty = T::Q3_K,
                M::Q2_K_S if i < n / 8 => ty = T::Q4_K,
                // (Falcon alone keeps Q3_K where !use_more_bits)
                M::Q3_K_M => ty = if i < n / 16 { T::Q5_K } else { T::Q4_K },
                M::Q3_K_L => ty = T::Q5_K,
                M::Q4_K_M | M::Q5_K_M if use_more_bits(i, n) => ty = T::Q6_K,
                M::Q4_K_S if i < n / 8 => ty = T::Q5_K,
                M::Q4_0 if self.opts.has_imatrix && i < n / 8 => ty = T::Q4_1,
                M::Q5_0 if self.opts.has_imatrix && i < n / 8 => ty = T::Q5_1,
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if cat == Category::AttnOutput {
            if meta.n_expert == 8 {
                if matches!(m, M::Q2_K | M::Q3_K_S | M::Q3_K_M | M::Q4_K_S | M::Q4_K_M) {
                    ty = T::Q5_K;
                }
            } else {
                match m {
                    M::Q2_K => ty = T::Q3_K,
                    M::Q3_K_M => ty = T::Q4_K,
                    M::Q3_K_L => ty = T::Q5_K,
                    _ => {}
                }
            }
        } else if cat == Category::FfnGate {
            // the layer is only used by IQ3_XS, but its parse can fail with experts
            self.layer_info(self.i_ffn_gate, t)?;
            self.i_ffn_gate += 1;
        } else if cat == Category::FfnUp {
            self.layer_info(self.i_ffn_up, t)?;
            self.i_ffn_up += 1;
        }
        // (attn_qkv's own branch in llama.cpp is unreachable: attn_v-like tensors match first;
        // attn_q's rules concern IQ3 mixtures only)
        Ok(ty)
    }

    /// `tensor_type_fallback`: a type whose blocks fit the row.
    fn fallback(
        &mut self,
        t: &TensorInfo,
        target: GgmlType,
    ) -> Result<(GgmlType, Option<String>), MixtureError> {
        use GgmlType as T;
        let ncols = t.ne(0);
        let qk = target.block_size() as u64;
        if ncols % qk == 0 {
            return Ok((target, None));
        }
        self.n_fallback += 1;
        let mut ret = match target {
            T::IQ1_S
            | T::IQ1_M
            | T::IQ2_XXS
            | T::IQ2_XS
            | T::IQ2_S
            | T::IQ3_XXS
            | T::IQ3_S
            | T::IQ4_XS => T::IQ4_NL,
            T::Q2_K | T::Q3_K | T::TQ1_0 | T::TQ2_0 => T::Q4_0,
            T::Q4_K => T::Q5_0,
            T::Q5_K => T::Q5_1,
            T::Q6_K => T::Q8_0,
            _ if qk <= 32 => target,
            _ => {
                return Err(MixtureError::NoFallback {
                    tensor: t.name.clone(),
                    ncols,
                    block: qk,
                    ty: target,
                })
            }
        };
        let mut note = format!("ncols {ncols} not divisible by {qk} (required for type {target})");
        if ncols % ret.block_size() as u64 != 0 {
            note.push_str(", must use F16 due to unusual shape");
            ret = T::F16;
        }
        note.push_str(&format!(" -> falling back to {ret}"));
        Ok((ret, Some(note)))
    }
}

#[cfg(test)]
mod tests {
    //! Synthetic models. Every expectation below was derived by reading llama.cpp's
    //! `src/llama-quant.cpp` (b11312) as summarized in the module docs, not by running it.
    use super::*;
    use GgmlType as T;

    /// A llama-7B-like model: `n_layer` layers, n_embd 4096, n_ff 11008 (43 × 256), 32 heads,
    /// `n_head_kv` KV heads, vocab 32000, untied output unless `tied`.
    fn llama(n_layer: u32, n_head_kv: u32, tied: bool) -> (ModelMeta, Vec<TensorInfo>) {
        let meta = ModelMeta {
            arch: Arch::Llama,
            n_layer,
            n_head: 32,
            n_head_kv,
            n_expert: 0,
        };
        let kv = 128 * u64::from(n_head_kv);
        let mut ts = vec![
            TensorInfo::new("token_embd.weight", &[4096, 32000], T::F16),
            TensorInfo::new("output_norm.weight", &[4096], T::F32),
        ];
        if !tied {
            ts.push(TensorInfo::new("output.weight", &[4096, 32000], T::F16));
        }
        for i in 0..n_layer {
            let b = |s: &str| format!("blk.{i}.{s}");
            ts.push(TensorInfo::new(b("attn_norm.weight"), &[4096], T::F32));
            ts.push(TensorInfo::new(b("attn_q.weight"), &[4096, 4096], T::F16));
            ts.push(TensorInfo::new(b("attn_k.weight"), &[4096, kv], T::F16));
            ts.push(TensorInfo::new(b("attn_v.weight"), &[4096, kv], T::F16));
            ts.push(TensorInfo::new(
                b("attn_output.weight"),
                &[4096, 4096],
                T::F16,
            ));
            ts.push(TensorInfo::new(b("ffn_norm.weight"), &[4096], T::F32));
            ts.push(TensorInfo::new(
                b("ffn_gate.weight"),
                &[4096, 11008],
                T::F16,
            ));
            ts.push(TensorInfo::new(b("ffn_up.weight"), &[4096, 11008], T::F16));
            ts.push(TensorInfo::new(
                b("ffn_down.weight"),
                &[11008, 4096],
                T::F16,
            ));
        }
        (meta, ts)
    }

    fn ty(p: &Plan, name: &str) -> GgmlType {
        p.get(name).unwrap_or_else(|| panic!("{name} planned")).ty
    }

    /// `use_more_bits(i, 32)`: i < 4, i >= 28, or (i − 4) % 3 == 2.
    const MORE_BITS_32: &[i32] = &[0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31];

    #[test]
    fn parse_names_and_errors() {
        assert_eq!(Mixture::parse("gguf:q4_k_m").unwrap(), Mixture::Q4_K_M);
        assert_eq!(Mixture::parse("Q4_K_M").unwrap(), Mixture::Q4_K_M);
        assert_eq!(Mixture::parse("q4_k").unwrap(), Mixture::Q4_K_M);
        assert_eq!(Mixture::parse("GGUF:BF16").unwrap(), Mixture::BF16);
        for m in Mixture::ALL {
            assert_eq!(Mixture::parse(m.name()).unwrap(), *m);
            assert_eq!(Mixture::parse(&m.llama_name()).unwrap(), *m);
        }
        let e = Mixture::parse("q4_k_x").unwrap_err().to_string();
        assert!(
            e.contains("'q4_k_x'") && e.contains("q2_k_s") && e.contains("f32"),
            "{e}"
        );
    }

    #[test]
    fn use_more_bits_of_32_layers() {
        let got: Vec<i32> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(got, MORE_BITS_32);
    }

    #[test]
    fn q4_k_m_on_llama_7b_with_gqa_4() {
        let (meta, ts) = llama(32, 8, false);
        let p = plan(Mixture::Q4_K_M, &meta, &ts).unwrap();
        assert_eq!(p.n_fallback, 0);
        assert_eq!(p.tensors.len(), ts.len());
        assert_eq!(ty(&p, "output.weight"), T::Q6_K);
        assert_eq!(ty(&p, "token_embd.weight"), T::Q4_K);
        assert_eq!(ty(&p, "output_norm.weight"), T::F32);
        for i in 0..32 {
            let bumped = if MORE_BITS_32.contains(&i) {
                T::Q6_K
            } else {
                T::Q4_K
            };
            assert_eq!(
                ty(&p, &format!("blk.{i}.attn_v.weight")),
                bumped,
                "layer {i}"
            );
            assert_eq!(
                ty(&p, &format!("blk.{i}.ffn_down.weight")),
                bumped,
                "layer {i}"
            );
            for s in ["attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"] {
                assert_eq!(ty(&p, &format!("blk.{i}.{s}.weight")), T::Q4_K);
            }
            assert_eq!(ty(&p, &format!("blk.{i}.attn_norm.weight")), T::F32);
        }
        // llama.cpp's order: non-layer tensors first, then layer by layer (blk.2 before blk.10)
        let names: Vec<&str> = p.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names[..3],
            ["output.weight", "output_norm.weight", "token_embd.weight"]
        );
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(pos("blk.2.attn_k.weight") < pos("blk.10.attn_k.weight"));
    }

    #[test]
    fn q2_k_and_q3_k_on_llama_7b() {
        let (meta, ts) = llama(32, 8, false);
        let p = plan(Mixture::Q2_K, &meta, &ts).unwrap();
        for i in 0..32 {
            let t = |s: &str| ty(&p, &format!("blk.{i}.{s}.weight"));
            assert_eq!(t("attn_v"), T::Q4_K); // GQA 4
            assert_eq!(t("ffn_down"), T::Q3_K);
            assert_eq!(t("attn_output"), T::Q3_K);
            assert_eq!(t("attn_q"), T::Q2_K);
        }
        assert_eq!(ty(&p, "output.weight"), T::Q6_K);
        assert_eq!(ty(&p, "token_embd.weight"), T::Q2_K);

        let p = plan(Mixture::Q3_K_M, &meta, &ts).unwrap();
        for i in 0..32 {
            let t = |s: &str| ty(&p, &format!("blk.{i}.{s}.weight"));
            assert_eq!(t("attn_v"), if i < 2 { T::Q5_K } else { T::Q4_K });
            assert_eq!(t("ffn_down"), if i < 2 { T::Q5_K } else { T::Q4_K }); // n/16 = 2
            assert_eq!(t("attn_output"), T::Q4_K);
            assert_eq!(t("ffn_up"), T::Q3_K);
        }
        let p = plan(Mixture::Q3_K_S, &meta, &ts).unwrap();
        assert_eq!(ty(&p, "blk.0.attn_v.weight"), T::Q3_K);
        assert_eq!(ty(&p, "blk.0.ffn_down.weight"), T::Q3_K);

        // without GQA (MHA, like llama-2-7b), q2_k's attn_v is Q3_K; q2_k_s's stays Q2_K
        let (meta, ts) = llama(32, 32, false);
        let p = plan(Mixture::Q2_K, &meta, &ts).unwrap();
        assert_eq!(ty(&p, "blk.5.attn_v.weight"), T::Q3_K);
        let p = plan(Mixture::Q2_K_S, &meta, &ts).unwrap();
        assert_eq!(ty(&p, "blk.5.attn_v.weight"), T::Q2_K);
        assert_eq!(ty(&p, "blk.3.ffn_down.weight"), T::Q4_K); // below 32/8
        assert_eq!(ty(&p, "blk.4.ffn_down.weight"), T::Q2_K);
    }

    #[test]
    fn q4_k_s_q5_k_m_and_legacy_types() {
        let (meta, ts) = llama(32, 8, false);
        let p = plan(Mixture::Q4_K_S, &meta, &ts).unwrap();
        for i in 0..32 {
            let t = |s: &str| ty(&p, &format!("blk.{i}.{s}.weight"));
            assert_eq!(t("attn_v"), if i < 4 { T::Q5_K } else { T::Q4_K });
            assert_eq!(t("ffn_down"), if i < 4 { T::Q5_K } else { T::Q4_K });
        }
        let p = plan(Mixture::Q5_K_M, &meta, &ts).unwrap();
        for i in 0..32 {
            let bumped = if MORE_BITS_32.contains(&i) {
                T::Q6_K
            } else {
                T::Q5_K
            };
            assert_eq!(ty(&p, &format!("blk.{i}.attn_v.weight")), bumped);
            assert_eq!(ty(&p, &format!("blk.{i}.ffn_down.weight")), bumped);
        }
        // q4_0: output Q6_K; with an imatrix the first n/8 ffn_down become Q4_1
        let p = plan(Mixture::Q4_0, &meta, &ts).unwrap();
        assert_eq!(ty(&p, "output.weight"), T::Q6_K);
        assert_eq!(ty(&p, "blk.0.ffn_down.weight"), T::Q4_0);
        let opts = PlanOptions {
            has_imatrix: true,
            ..Default::default()
        };
        let p = plan_with(Mixture::Q5_0, &meta, &ts, &opts).unwrap();
        assert_eq!(ty(&p, "blk.3.ffn_down.weight"), T::Q5_1);
        assert_eq!(ty(&p, "blk.4.ffn_down.weight"), T::Q5_0);
        // q8_0 keeps output at Q8_0; f16 puts every matrix in F16 and leaves norms alone
        let p = plan(Mixture::Q8_0, &meta, &ts).unwrap();
        assert_eq!(ty(&p, "output.weight"), T::Q8_0);
        let p = plan(Mixture::F16, &meta, &ts).unwrap();
        assert!(p
            .tensors
            .iter()
            .all(|t| t.ty == if t.quantizable { T::F16 } else { T::F32 }));
    }

    #[test]
    fn tied_embeddings_take_the_output_rule() {
        let (meta, ts) = llama(32, 8, true);
        let p = plan(Mixture::Q4_K_M, &meta, &ts).unwrap();
        assert_eq!(ty(&p, "token_embd.weight"), T::Q6_K);
        let p = plan(Mixture::Q8_0, &meta, &ts).unwrap();
        assert_eq!(ty(&p, "token_embd.weight"), T::Q8_0);
    }

    #[test]
    fn llama_70b_lifts_attn_v() {
        let (meta, ts) = llama(80, 8, false);
        assert!(meta.is_70b());
        let p = plan(Mixture::Q3_K_S, &meta, &ts).unwrap();
        assert!((0..80).all(|i| ty(&p, &format!("blk.{i}.attn_v.weight")) == T::Q5_K));
        let p = plan(Mixture::Q2_K_S, &meta, &ts).unwrap(); // GQA 4 → Q4_K → Q5_K
        assert_eq!(ty(&p, "blk.40.attn_v.weight"), T::Q5_K);
        // 80 layers without GQA is llama's 65B: no lift
        let (meta, ts) = llama(80, 32, false);
        assert!(!meta.is_70b());
        let p = plan(Mixture::Q3_K_S, &meta, &ts).unwrap();
        assert_eq!(ty(&p, "blk.40.attn_v.weight"), T::Q3_K);
    }

    #[test]
    fn rows_that_are_not_whole_blocks_fall_back() {
        // n_embd 576 (SmolLM2-135M): 576 = 18 × 32, not a multiple of 256
        let meta = ModelMeta {
            arch: Arch::Llama,
            n_layer: 1,
            n_head: 9,
            n_head_kv: 3,
            n_expert: 0,
        };
        let ts = vec![
            TensorInfo::new("token_embd.weight", &[576, 49152], T::F16),
            TensorInfo::new("blk.0.attn_q.weight", &[576, 576], T::F16),
            TensorInfo::new("blk.0.ffn_down.weight", &[1536, 576], T::F16),
            TensorInfo::new("blk.0.odd.weight", &[100, 4], T::F16),
        ];
        let p = plan(Mixture::Q4_K_M, &meta, &ts).unwrap();
        assert_eq!(ty(&p, "token_embd.weight"), T::Q8_0); // tied, not whole Q4_K blocks
        assert_eq!(ty(&p, "blk.0.attn_q.weight"), T::Q5_0);
        assert_eq!(ty(&p, "blk.0.ffn_down.weight"), T::Q6_K); // layer 0: use_more_bits
        assert_eq!(ty(&p, "blk.0.odd.weight"), T::F16);
        assert_eq!(p.n_fallback, 2);
        let note = p
            .get("blk.0.odd.weight")
            .unwrap()
            .fallback
            .as_deref()
            .unwrap();
        assert!(note.contains("must use F16"), "{note}");
        // q4_0: the tied embedding wants Q6_K, which then falls back to Q8_0 (and counts)
        let p = plan(Mixture::Q4_0, &meta, &ts).unwrap();
        assert_eq!(ty(&p, "token_embd.weight"), T::Q8_0);
        assert!(p.get("token_embd.weight").unwrap().fallback.is_some());
        assert_eq!(p.n_fallback, 2); // token_embd and odd (Q4_0 → F16)
        for (m, want) in [
            (Mixture::Q2_K, T::Q4_0),
            (Mixture::Q3_K_S, T::Q4_0),
            (Mixture::Q5_K_S, T::Q5_1),
            (Mixture::Q6_K, T::Q8_0),
        ] {
            let p = plan(m, &meta, &ts).unwrap();
            assert_eq!(ty(&p, "blk.0.attn_q.weight"), want, "{m}");
        }
    }

    #[test]
    fn mixtral_like_experts() {
        let meta = ModelMeta {
            arch: Arch::Llama,
            n_layer: 32,
            n_head: 32,
            n_head_kv: 8,
            n_expert: 8,
        };
        let mut ts = vec![TensorInfo::new("output.weight", &[4096, 32000], T::F16)];
        for i in 0..32 {
            let b = |s: &str| format!("blk.{i}.{s}");
            ts.push(TensorInfo::new(b("attn_k.weight"), &[4096, 1024], T::F16));
            ts.push(TensorInfo::new(b("attn_v.weight"), &[4096, 1024], T::F16));
            ts.push(TensorInfo::new(
                b("attn_output.weight"),
                &[4096, 4096],
                T::F16,
            ));
            ts.push(TensorInfo::new(
                b("ffn_gate_inp.weight"),
                &[4096, 8],
                T::F32,
            ));
            ts.push(TensorInfo::new(
                b("ffn_down_exps.weight"),
                &[14336, 4096, 8],
                T::F16,
            ));
            ts.push(TensorInfo::new(
                b("ffn_up_exps.weight"),
                &[4096, 14336, 8],
                T::F16,
            ));
        }
        let p = plan(Mixture::Q4_K_M, &meta, &ts).unwrap();
        assert_eq!(ty(&p, "blk.7.attn_v.weight"), T::Q8_0);
        assert_eq!(ty(&p, "blk.7.attn_k.weight"), T::Q8_0);
        assert_eq!(ty(&p, "blk.7.attn_output.weight"), T::Q5_K);
        assert_eq!(ty(&p, "blk.7.ffn_gate_inp.weight"), T::F32); // routers stay
        assert_eq!(ty(&p, "blk.0.ffn_down_exps.weight"), T::Q6_K); // layer from the name
        assert_eq!(ty(&p, "blk.4.ffn_down_exps.weight"), T::Q4_K);
        assert_eq!(ty(&p, "blk.6.ffn_down_exps.weight"), T::Q6_K);
        // with experts, an ffn tensor outside a block cannot be placed
        ts.push(TensorInfo::new(
            "ffn_up_shared.weight",
            &[4096, 4096],
            T::F16,
        ));
        let e = plan(Mixture::Q4_K_M, &meta, &ts).unwrap_err().to_string();
        assert!(
            e.contains("ffn_up_shared.weight") && e.contains("layer"),
            "{e}"
        );
    }

    #[test]
    fn options() {
        let (meta, ts) = llama(32, 8, false);
        let opts = PlanOptions {
            pure: true,
            ..Default::default()
        };
        let p = plan_with(Mixture::Q4_K_M, &meta, &ts, &opts).unwrap();
        assert!(p
            .tensors
            .iter()
            .all(|t| t.ty == if t.quantizable { T::Q4_K } else { T::F32 }));
        let opts = PlanOptions {
            leave_output_tensor: true,
            token_embedding_type: Some(T::Q8_0),
            ..Default::default()
        };
        let p = plan_with(Mixture::Q4_K_M, &meta, &ts, &opts).unwrap();
        assert_eq!(ty(&p, "output.weight"), T::F16);
        assert_eq!(ty(&p, "token_embd.weight"), T::Q8_0);
    }

    #[test]
    fn duplicates_and_metadata_errors() {
        let (meta, mut ts) = llama(1, 8, false);
        ts.push(ts[3].clone());
        let e = plan(Mixture::Q8_0, &meta, &ts).unwrap_err();
        assert!(matches!(e, MixtureError::DuplicateTensor { .. }), "{e}");
        assert_eq!(scan_layer("blk.12.attn_v.weight"), Some(12));
        assert_eq!(scan_layer("blk.x.attn_v.weight"), None);
        assert_eq!(scan_layer("output.weight"), None);
    }

    #[test]
    fn n_dims_ignores_trailing_ones() {
        assert_eq!(TensorInfo::new("a", &[576, 1], T::F32).n_dims(), 1);
        assert_eq!(TensorInfo::new("a", &[576, 2], T::F32).n_dims(), 2);
        assert_eq!(TensorInfo::new("a", &[576, 2, 1, 1], T::F32).n_dims(), 2);
        assert_eq!(TensorInfo::new("a", &[576, 1, 8], T::F32).n_dims(), 3);
        assert_eq!(TensorInfo::new("a", &[], T::F32).n_dims(), 1);
    }
}
