//! The `auto_round` checkpoint (and its GPTQ/AWQ packings): a Hugging Face folder whose quantized
//! linear layers are replaced by packed `qweight` / `qzeros` / `scales` tensors, with a
//! `quantization_config` in config.json that vLLM, SGLang and transformers read.
//!
//! Layouts are those of [`autoround_formats::autoround`]; which one is used follows the
//! reference's routing: symmetric schemes are `auto_round:auto_gptq` (GPTQ v1, zeros − 1),
//! 4-bit asymmetric ones `auto_round:auto_awq`, other asymmetric ones plain `auto_round` (GPTQ
//! layout, zeros stored as they are).

use super::{write_dir_atomically, write_synced};
use crate::tuner::block::Lin;
use crate::tuner::run::TunedLinear;
use anyhow::{bail, Context, Result};
use autoround_formats::autoround::{
    pack_awq_qweight, pack_awq_qzeros, pack_gptq_qweight, pack_gptq_qzeros,
};
use autoround_formats::safetensors::{write_index, write_safetensors, SafetensorsModel};
use autoround_kernels::GgmlType;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// How the integer codes are packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// `auto_round:auto_gptq`: GPTQ layout, zero points stored minus one.
    AutoGptq,
    /// plain `auto_round`: GPTQ layout, zero points as they are.
    AutoRound,
    /// `auto_round:auto_awq`: AWQ layout (4-bit).
    AutoAwq,
    /// `fake`: the quantize-dequantized weights as f32, an ordinary float checkpoint (for
    /// evaluation with any float tool).
    Fake,
    /// standalone `auto_gptq`: the `auto_round:auto_gptq` tensors plus a trivial `g_idx`, with
    /// GPTQ's own `quantization_config` (`quant_method: "gptq"`, mixed bits as GPTQModel's
    /// `dynamic`).
    Gptq,
    /// standalone `auto_awq`: the `auto_round:auto_awq` tensors with AWQ's own
    /// `quantization_config` (`quant_method: "awq"`, `version: "gemm"`).
    Awq,
}

impl Packing {
    pub fn name(self) -> &'static str {
        match self {
            Packing::AutoGptq => "auto_round:auto_gptq",
            Packing::AutoRound => "auto_round",
            Packing::AutoAwq => "auto_round:auto_awq",
            Packing::Fake => "fake",
            Packing::Gptq => "auto_gptq",
            Packing::Awq => "auto_awq",
        }
    }

    /// Whether the tensors are GPTQ's layout with zero points minus one.
    fn gptq_minus_one(self) -> bool {
        matches!(self, Packing::AutoGptq | Packing::Gptq)
    }

    /// The reference's choice for `format="auto_round"`.
    pub fn default_for(bits: u32, sym: bool) -> Packing {
        if sym {
            Packing::AutoGptq
        } else if bits == 4 {
            Packing::AutoAwq
        } else {
            Packing::AutoRound
        }
    }

    /// Parse `auto_round`, `auto_round:auto_gptq`, `auto_round:auto_awq`, `auto_round:gptqmodel`
    /// (the last one without g_idx is plain `auto_round`).
    pub fn parse(format: &str, bits: u32, sym: bool) -> Option<Packing> {
        Some(match format {
            "auto_round" => Packing::default_for(bits, sym),
            "auto_round:auto_gptq" => Packing::AutoGptq,
            "auto_round:auto_awq" => Packing::AutoAwq,
            "fake" => Packing::Fake,
            "auto_gptq" => Packing::Gptq,
            "auto_awq" => Packing::Awq,
            _ => return None,
        })
    }
}

/// The tuning settings recorded in `quantization_config` (keys equal to the reference's defaults
/// are left out, as the reference does).
#[derive(Clone, Debug)]
pub struct RecordedSettings {
    pub bits: u32,
    pub group_size: i64,
    pub sym: bool,
    pub iters: usize,
    pub lr: f32,
    pub minmax_lr: f32,
    pub nsamples: usize,
    pub seqlen: usize,
    pub batch_size: usize,
    pub enable_minmax_tuning: bool,
    pub enable_quanted_input: bool,
}

/// The `quantization_config` object.
pub fn quantization_config(
    s: &RecordedSettings,
    packing: Packing,
    extra: &Map<String, Value>,
) -> Value {
    let mut m = Map::new();
    m.insert("bits".into(), json!(s.bits));
    m.insert("group_size".into(), json!(s.group_size));
    m.insert("sym".into(), json!(s.sym));
    m.insert("data_type".into(), json!("int"));
    if s.iters != 200 {
        m.insert("iters".into(), json!(s.iters));
    }
    let default_lr = if s.iters == 0 {
        5e-3
    } else {
        1.0 / s.iters as f32
    };
    if (s.lr - default_lr).abs() > 1e-9 {
        m.insert("lr".into(), super::f32_to_json(s.lr));
    }
    if (s.minmax_lr - s.lr).abs() > 1e-9 {
        m.insert("minmax_lr".into(), super::f32_to_json(s.minmax_lr));
    }
    if s.nsamples != 128 {
        m.insert("nsamples".into(), json!(s.nsamples));
    }
    if s.seqlen != 2048 {
        m.insert("seqlen".into(), json!(s.seqlen));
    }
    if s.batch_size != 8 {
        m.insert("batch_size".into(), json!(s.batch_size));
    }
    if !s.enable_minmax_tuning {
        m.insert("enable_minmax_tuning".into(), json!(false));
    }
    if !s.enable_quanted_input {
        m.insert("enable_quanted_input".into(), json!(false));
    }
    m.insert(
        "autoround_version".into(),
        json!(concat!("autoround-cpu ", env!("CARGO_PKG_VERSION"))),
    );
    m.insert("block_name_to_quantize".into(), json!("model.layers"));
    m.insert("quant_method".into(), json!("auto-round"));
    m.insert("packing_format".into(), json!(packing.name()));
    if !extra.is_empty() {
        m.insert("extra_config".into(), Value::Object(extra.clone()));
    }
    Value::Object(m)
}

/// The Hugging Face module name of a tuned layer (`model.layers.3.self_attn.q_proj`, or
/// `lm_head`).
pub fn module_name(block: usize, lin: Lin) -> String {
    if lin == Lin::Head {
        return lin.hf_module().to_string();
    }
    format!("model.layers.{block}.{}", lin.hf_module())
}

fn le_bytes_u32(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn f16_bytes(v: impl Iterator<Item = f32>) -> Vec<u8> {
    v.flat_map(|x| half::f16::from_f32(x).to_le_bytes())
        .collect()
}

/// A tensor to write: `(name or suffix, dtype, shape, little-endian bytes)`.
pub type TensorOut<N, B> = (N, GgmlType, Vec<usize>, B);

/// The packed tensors of one layer.
pub fn pack_layer(
    t: &TunedLinear,
    packing: Packing,
) -> Result<Vec<TensorOut<&'static str, Vec<u8>>>> {
    let bits = t.scheme.bits;
    let (o, i) = (t.rows, t.cols);
    let g = t.n_groups();
    // scales and zeros transposed to [group, out]
    let mut scales_t = vec![0f32; g * o];
    let mut zeros_t = vec![0u32; g * o];
    for r in 0..o {
        for gi in 0..g {
            scales_t[gi * o + r] = t.scale[r * g + gi];
            zeros_t[gi * o + r] = t.zero(r * g + gi) as u32;
        }
    }
    let name = module_name(t.block, t.lin);
    let (qweight, qw_shape, qzeros, qz_shape) = match packing {
        Packing::AutoGptq | Packing::AutoRound | Packing::Gptq => {
            let qw = pack_gptq_qweight(&t.codes, o, i, bits)
                .with_context(|| format!("{name}: packing qweight"))?;
            let qz = pack_gptq_qzeros(&zeros_t, g, o, bits, packing.gptq_minus_one())
                .with_context(|| format!("{name}: packing qzeros"))?;
            (
                qw,
                vec![i * bits as usize / 32, o],
                qz,
                vec![g, o * bits as usize / 32],
            )
        }
        Packing::Fake => bail!("{name}: the fake format is not packed"),
        Packing::AutoAwq | Packing::Awq => {
            if bits != 4 {
                bail!("{name}: AWQ packing is 4-bit only, this layer has {bits} bits");
            }
            let qw = pack_awq_qweight(&t.codes, o, i)?;
            let qz = pack_awq_qzeros(&zeros_t, g, o)?;
            (qw, vec![i, o / 8], qz, vec![g, o / 8])
        }
    };
    let mut out = vec![
        ("qweight", GgmlType::I32, qw_shape, le_bytes_u32(&qweight)),
        ("qzeros", GgmlType::I32, qz_shape, le_bytes_u32(&qzeros)),
        (
            "scales",
            GgmlType::F16,
            vec![g, o],
            f16_bytes(scales_t.into_iter()),
        ),
    ];
    if packing == Packing::Gptq {
        // the group of every input column (no act-order: column / group size)
        let g_idx: Vec<u32> = (0..i).map(|c| (c / t.gs) as u32).collect();
        out.push(("g_idx", GgmlType::I32, vec![i], le_bytes_u32(&g_idx)));
    }
    Ok(out)
}

/// A group size as the configs write it: -1 for whole rows.
fn gs_value(group_size: usize) -> i64 {
    if group_size == 0 {
        -1
    } else {
        group_size as i64
    }
}

/// `^name$` with the regex metacharacters of a module name escaped.
fn exact_regex(name: &str) -> String {
    format!("^{}$", regex::escape(name))
}

/// GPTQ's own `quantization_config` (format `auto_gptq`, as the reference's
/// `export_to_autogptq` writes it): layers whose scheme differs from the global one, and layers
/// left in float, as GPTQModel's `dynamic` rules on their exact names.
pub fn gptq_config(s: &RecordedSettings, tuned: &[TunedLinear], kept_float: &[String]) -> Value {
    let mut dynamic = Map::new();
    for t in tuned {
        let gs = gs_value(t.scheme.group_size);
        if t.scheme.bits != s.bits || gs != s.group_size || t.scheme.sym != s.sym {
            dynamic.insert(
                format!("+:{}", exact_regex(&module_name(t.block, t.lin))),
                json!({"bits": t.scheme.bits, "group_size": gs, "sym": t.scheme.sym}),
            );
        }
    }
    for m in kept_float {
        dynamic.insert(format!("-:{}", exact_regex(m)), json!({}));
    }
    let mut m = Map::new();
    m.insert("bits".into(), json!(s.bits));
    m.insert("group_size".into(), json!(s.group_size));
    m.insert("sym".into(), json!(s.sym));
    m.insert("desc_act".into(), json!(false));
    m.insert("true_sequential".into(), json!(false));
    m.insert("damp_percent".into(), json!(0.01));
    m.insert(
        "lm_head".into(),
        json!(tuned.iter().any(|t| t.lin == Lin::Head)),
    );
    m.insert("quant_method".into(), json!("gptq"));
    m.insert("checkpoint_format".into(), json!("gptq"));
    m.insert("provider".into(), json!("auto-round"));
    m.insert(
        "autoround_version".into(),
        json!(concat!("autoround-cpu ", env!("CARGO_PKG_VERSION"))),
    );
    if !dynamic.is_empty() {
        m.insert("dynamic".into(), Value::Object(dynamic));
    }
    Value::Object(m)
}

/// AWQ's own `quantization_config` (format `auto_awq`, as the reference's `export_to_awq`
/// writes it). AWQ has one scheme for every quantized layer.
pub fn awq_config(s: &RecordedSettings, kept_float: &[String]) -> Value {
    json!({
        "quant_method": "awq",
        "version": "gemm",
        "bits": s.bits,
        "group_size": s.group_size,
        "zero_point": !s.sym,
        "provider": "auto-round",
        "modules_to_not_convert": if kept_float.is_empty() { Value::Null } else { json!(kept_float) },
    })
}

/// Files copied from the source folder beside the weights.
const SIDE_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
];

/// Write the checkpoint folder `out` from the float Hugging Face folder `src` and the tuned
/// layers. Layers of the source that were not tuned are copied unchanged; `kept_float` names the
/// modules deliberately left in float (recorded in `extra_config` with 16 bits).
#[allow(clippy::too_many_arguments)]
pub fn write_auto_round(
    src: &Path,
    st: &SafetensorsModel,
    tuned: &[TunedLinear],
    kept_float: &[String],
    settings: &RecordedSettings,
    packing: Packing,
    out: &Path,
    overwrite: bool,
) -> Result<u64> {
    let mut config: Value = serde_json::from_slice(
        &std::fs::read(src.join("config.json"))
            .with_context(|| format!("reading {}/config.json", src.display()))?,
    )
    .with_context(|| format!("{}/config.json is not JSON", src.display()))?;
    let mut extra = Map::new();
    for m in kept_float {
        extra.insert(m.clone(), json!({"bits": 16, "data_type": "fp"}));
    }
    // Layers whose scheme differs from the global one (--layer_config): the differing keys.
    for t in tuned {
        let mut d = Map::new();
        if t.lin == Lin::Head {
            // a layer outside the blocks: all its scheme keys, as the reference writes them
            d.insert("bits".into(), json!(t.scheme.bits));
            d.insert("group_size".into(), json!(gs_value(t.scheme.group_size)));
            d.insert("sym".into(), json!(t.scheme.sym));
            d.insert("data_type".into(), json!("int"));
            extra.insert(module_name(t.block, t.lin), Value::Object(d));
            continue;
        }
        if t.scheme.bits != settings.bits {
            d.insert("bits".into(), json!(t.scheme.bits));
        }
        let gs = gs_value(t.scheme.group_size);
        if gs != settings.group_size {
            d.insert("group_size".into(), json!(gs));
        }
        if t.scheme.sym != settings.sym {
            d.insert("sym".into(), json!(t.scheme.sym));
        }
        if !d.is_empty() {
            extra.insert(module_name(t.block, t.lin), Value::Object(d));
        }
    }
    let qc = match packing {
        Packing::Gptq => gptq_config(settings, tuned, kept_float),
        Packing::Awq => {
            if let Some(t) = tuned.iter().find(|t| {
                t.scheme.bits != settings.bits
                    || t.scheme.sym != settings.sym
                    || gs_value(t.scheme.group_size) != settings.group_size
            }) {
                bail!(
                    "{}: the auto_awq format has one scheme for all layers; use auto_round:auto_awq for mixed schemes",
                    module_name(t.block, t.lin)
                );
            }
            awq_config(settings, kept_float)
        }
        _ => quantization_config(settings, packing, &extra),
    };
    if packing != Packing::Fake {
        let c = config
            .as_object_mut()
            .context("config.json is not an object")?;
        c.insert("quantization_config".into(), qc.clone());
        if matches!(packing, Packing::Gptq | Packing::Awq) {
            // as the reference's GPTQ/AWQ exports (their kernels want f16; weights not cast)
            c.insert("torch_dtype".into(), json!("float16"));
        }
    }

    // Tensors: packed layers first (in layer order), then the source's other tensors.
    let mut replaced: HashSet<String> = HashSet::new();
    let mut owned: Vec<TensorOut<String, Vec<u8>>> = Vec::new();
    for t in tuned {
        let name = module_name(t.block, t.lin);
        if packing == Packing::Fake {
            let w: Vec<u8> = t
                .dequantize()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            owned.push((
                format!("{name}.weight"),
                GgmlType::F32,
                vec![t.rows, t.cols],
                w,
            ));
            replaced.insert(format!("{name}.weight"));
            continue;
        }
        for (suffix, ty, shape, bytes) in pack_layer(t, packing)? {
            owned.push((format!("{name}.{suffix}"), ty, shape, bytes));
        }
        replaced.insert(format!("{name}.weight"));
        let bias = format!("{name}.bias");
        if let Ok(b) = st.tensor(&bias) {
            let mut f = vec![0f32; b.n_elements()];
            autoround_kernels::reference::dequantize_row(b.dtype, b.data, &mut f)
                .with_context(|| format!("{bias}: unsupported dtype"))?;
            owned.push((
                bias.clone(),
                GgmlType::F16,
                b.shape.clone(),
                f16_bytes(f.into_iter()),
            ));
            replaced.insert(bias);
        }
    }
    let mut list: Vec<TensorOut<String, Cow<[u8]>>> = owned
        .into_iter()
        .map(|(n, t, s, b)| (n, t, s, Cow::Owned(b)))
        .collect();
    for name in st.names() {
        if replaced.contains(name) {
            continue;
        }
        let t = st.tensor(name)?;
        list.push((
            name.to_string(),
            t.dtype,
            t.shape.clone(),
            Cow::Borrowed(t.data),
        ));
    }
    // Shards of at most 2 GiB, as the reference's save_pretrained default (5 GB) would not split
    // a small model either.
    const MAX_SHARD: usize = 2 << 30;
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut cur = 0usize;
    for (k, item) in list.iter().enumerate() {
        if cur > 0 && cur + item.3.len() > MAX_SHARD {
            shards.push(Vec::new());
            cur = 0;
        }
        cur += item.3.len();
        shards.last_mut().expect("one shard").push(k);
    }
    let total: u64 = list.iter().map(|x| x.3.len() as u64).sum();
    write_dir_atomically(out, overwrite, |tmp| {
        let n = shards.len();
        let mut weight_map = BTreeMap::new();
        for (si, shard) in shards.iter().enumerate() {
            let fname = crate::export::shard_file_name(si, n);
            let items: Vec<(String, GgmlType, Vec<usize>, &[u8])> = shard
                .iter()
                .map(|&k| {
                    (
                        list[k].0.clone(),
                        list[k].1,
                        list[k].2.clone(),
                        list[k].3.as_ref(),
                    )
                })
                .collect();
            let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
            write_safetensors(&tmp.join(&fname), &items, Some(meta))?;
            for &k in shard {
                weight_map.insert(list[k].0.clone(), fname.clone());
            }
        }
        if n > 1 {
            write_index(
                &tmp.join("model.safetensors.index.json"),
                &weight_map,
                Some(total),
            )?;
        }
        write_synced(
            &tmp.join("config.json"),
            format!("{}\n", serde_json::to_string_pretty(&config)?).as_bytes(),
        )?;
        if packing != Packing::Fake {
            write_synced(
                &tmp.join("quantization_config.json"),
                format!("{}\n", serde_json::to_string_pretty(&qc)?).as_bytes(),
            )?;
        }
        for f in SIDE_FILES {
            let p = src.join(f);
            if p.is_file() {
                let body = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                write_synced(&tmp.join(f), &body)?;
            }
        }
        Ok(())
    })?;
    Ok(total)
}
