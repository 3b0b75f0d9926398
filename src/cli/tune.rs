//! `autoround-cpu quantize --format auto_round`: AutoRound tuning (or round-to-nearest with
//! `--iters 0`) of a Hugging Face folder into an auto_round checkpoint.

use super::args::{GradMode, QuantizeArgs};
use crate::export::auto_round::{module_name, write_auto_round, Packing, RecordedSettings};
use crate::export::gguf::{mixture_base_type, tuned_scheme, write_tuned_gguf};
use crate::model::llama::Model;
use crate::model::load::ModelSource;
use crate::quantize::gguf::{plan_for, QuantizeOptions};
use crate::quantize::mixture::{Mixture, PlanOptions};
use crate::tuner::block::Lin;
use crate::tuner::calib::{build_samples, read_texts, resolve_datasets, CalibOptions};
use crate::tuner::checkpoint::{fnv64, BlockRecord, Checkpoint};
use crate::tuner::head::{final_norm, head_result, tune_head, HeadData};
use crate::tuner::qdq::{IntScheme, QuantLayer, ScaleDtype};
use crate::tuner::run::{
    block_shape, loss_mask, rtn_model, tune_model, Chains, TuneSpec, TunedLinear,
};
use crate::tuner::signround::{SignRoundOptions, TuneStats};
use anyhow::{bail, Context, Result};
use autoround_kernels::gemm::Precision;
use autoround_kernels::GgmlType;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

/// A named scheme: (bits, group size); every preset is symmetric.
fn preset(name: &str) -> Option<(u32, i64)> {
    Some(match name.to_ascii_uppercase().as_str() {
        "W2A16" => (2, 128),
        "W2A16G64" => (2, 64),
        "W2A16G32" => (2, 32),
        "W3A16" => (3, 128),
        "W4A16" => (4, 128),
        "W8A16" => (8, 128),
        _ => return None,
    })
}

/// One output of a run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum OutFormat {
    AutoRound(Packing),
    /// A GGUF mixture: its block linears of the types [`tuned_scheme`] knows take tuned blocks.
    Gguf {
        mixture: Mixture,
    },
}

/// Everything resolved from the flags, checked before any long work.
struct Plan {
    formats: Vec<OutFormat>,
    scheme: IntScheme,
    group_size: i64,
    iters: usize,
    lr: f32,
    minmax_lr: f32,
    /// Neither --lr nor a recipe set the lr: each layer's comes from its bits (and the min-max
    /// lr too when --minmax_lr is not given).
    lr_by_bits: bool,
    minmax_by_bits: bool,
    nsamples: usize,
    seqlen: usize,
    batch_size: usize,
}

fn plan(a: &QuantizeArgs) -> Result<Plan> {
    let mut iters = a.iters.unwrap_or(200);
    let mut nsamples = a.nsamples.unwrap_or(128);
    let mut lr = None;
    if a.light {
        iters = a.iters.unwrap_or(50);
        lr = Some(5e-3);
    }
    if a.best {
        iters = a.iters.unwrap_or(1000);
        nsamples = a.nsamples.unwrap_or(512);
    }
    // The formats; a gguf: one fixes the scheme (its blocks store one layout).
    let names: Vec<&str> = a
        .format
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    if names.is_empty() {
        bail!("--format is empty");
    }
    let mut gguf: Option<(String, Option<IntScheme>)> = None;
    let mut gguf_mixtures = Vec::new();
    for f in &names {
        if !f.starts_with("gguf") {
            continue;
        }
        let m = Mixture::parse(f).map_err(|e| anyhow::anyhow!("--format {f}: {e}"))?;
        let Some(ty) = mixture_base_type(m) else {
            bail!("--format {f}: a float GGUF has nothing to tune; use --iters 0 (or `convert --to gguf`)");
        };
        if let Some((g, _)) = &gguf {
            bail!(
                "--format {g},{f}: one GGUF type per tuning run (each is tuned for its own types)"
            );
        }
        gguf = Some((f.to_string(), tuned_scheme(ty)));
        gguf_mixtures.push((m, ty));
    }
    let (mut bits, mut group_size) = match (&a.scheme, &gguf) {
        (None, Some((_, Some(s)))) => (s.bits, s.group_size as i64),
        (s, _) => {
            let s = s.as_deref().unwrap_or("W4A16");
            preset(s).with_context(|| {
                format!(
                    "--scheme {s}: unknown scheme (W2A16, W2A16G64, W2A16G32, W3A16, W4A16, W8A16)"
                )
            })?
        }
    };
    if let Some(b) = a.bits {
        bits = b;
    }
    if let Some(g) = a.group_size {
        group_size = g;
    }
    if group_size == 0 || group_size < -1 {
        bail!("--group_size {group_size}: use a positive group size, or -1 for one group per row");
    }
    // a GGUF type's own scheme unless the flags ask for another (then refused below)
    let gguf_scheme = gguf.as_ref().and_then(|(_, s)| *s);
    let sym = match gguf_scheme {
        Some(s) if !a.asym => s.sym,
        _ => !a.asym,
    };
    let scheme = IntScheme {
        bits,
        group_size: if group_size < 0 {
            0
        } else {
            group_size as usize
        },
        sym,
        dq: gguf_scheme.and_then(|s| s.dq),
    };
    if let Some((f, Some(s))) = &gguf {
        if *s != scheme {
            bail!(
                "--format {f} stores {}-bit {} groups of {}, but the flags ask for {bits}-bit {} groups of {group_size}: drop --scheme/--bits/--group_size/--asym, or write {f} in a separate run",
                s.bits,
                if s.sym { "symmetric" } else { "asymmetric" },
                s.group_size,
                if sym { "symmetric" } else { "asymmetric" }
            );
        }
    }
    let mut formats = Vec::new();
    let mut gguf_iter = gguf_mixtures.into_iter();
    for f in &names {
        let of = if f.starts_with("gguf") {
            let (mixture, _) = gguf_iter.next().expect("one per gguf name");
            OutFormat::Gguf { mixture }
        } else {
            let packing = Packing::parse(f, bits, sym).with_context(|| {
                format!(
                    "--format {f}: unknown format (auto_round, auto_round:auto_gptq, auto_round:auto_awq, auto_gptq, auto_awq, fake, or gguf:<type>)"
                )
            })?;
            if packing != Packing::Fake && !matches!(bits, 2 | 3 | 4 | 8) {
                bail!("--bits {bits}: the auto_round formats pack 2, 3, 4 or 8 bits");
            }
            if matches!(packing, Packing::AutoAwq | Packing::Awq) && bits != 4 {
                bail!("--format {f}: AWQ packing holds 4-bit weights only, not {bits}-bit");
            }
            OutFormat::AutoRound(packing)
        };
        if formats.contains(&of) {
            bail!("--format {}: {f} is named twice", a.format);
        }
        formats.push(of);
    }
    if !(2..=8).contains(&bits) {
        bail!("--bits {bits}: 2 to 8 bits");
    }
    if formats.len() > 1 && a.output.is_some() {
        bail!(
            "--format {}: several outputs need --output_dir DIR, not -o",
            a.format
        );
    }
    let lr_by_bits = a.lr.or(lr).is_none() && iters > 0;
    let lr = a.lr.or(lr).unwrap_or(if iters == 0 {
        5e-3
    } else {
        // the reference's auto lr (`_lr_for_bits`): 2/iters for <= 3 bits at >= 1000 iters,
        // --best or not; per layer for mixed bits
        SignRoundOptions::auto_lr(iters, bits)
    });
    if !(lr.is_finite() && lr > 0.0) {
        bail!("--lr {lr}: the learning rate must be a positive number");
    }
    let minmax_lr = a.minmax_lr.unwrap_or(lr);
    let batch_size = a.batch_size.unwrap_or(8).min(nsamples);
    if batch_size == 0 {
        bail!("--batch_size must be at least 1");
    }
    Ok(Plan {
        formats,
        scheme,
        group_size,
        iters,
        lr,
        minmax_lr,
        lr_by_bits,
        minmax_by_bits: lr_by_bits && a.minmax_lr.is_none(),
        nsamples,
        seqlen: a.seqlen.unwrap_or(2048),
        batch_size,
    })
}

/// One `--layer_config` entry.
struct LayerRule {
    key: String,
    re: regex::Regex,
    bits: Option<u32>,
    group_size: Option<i64>,
    sym: Option<bool>,
}

/// `--layer_config`: a JSON object, or the path of a file holding one.
fn parse_layer_config(arg: &str) -> Result<Vec<LayerRule>> {
    let text = if arg.trim_start().starts_with('{') {
        arg.to_string()
    } else {
        std::fs::read_to_string(arg).with_context(|| {
            format!("--layer_config {arg}: not a JSON object, nor a readable file")
        })?
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("--layer_config: not valid JSON: {text}"))?;
    let obj = v
        .as_object()
        .context("--layer_config: expected a JSON object of layer name -> settings")?;
    let mut rules = Vec::new();
    for (key, cfg) in obj {
        let o = cfg.as_object().with_context(|| {
            format!("--layer_config '{key}': expected an object like {{\"bits\": 8}}, got {cfg}")
        })?;
        for k in o.keys() {
            if !matches!(k.as_str(), "bits" | "group_size" | "sym" | "data_type") {
                bail!("--layer_config '{key}': unknown setting '{k}' (bits, group_size, sym)");
            }
        }
        if let Some(dt) = o.get("data_type").and_then(|d| d.as_str()) {
            if !matches!(dt, "int" | "fp" | "float") {
                bail!("--layer_config '{key}': data_type '{dt}' is not supported (int, or fp with bits 16)");
            }
        }
        let num = |k: &str| -> Result<Option<i64>> {
            match o.get(k) {
                None => Ok(None),
                Some(x) => x.as_i64().map(Some).with_context(|| {
                    format!("--layer_config '{key}': {k} must be an integer, got {x}")
                }),
            }
        };
        let bits = num("bits")?;
        if bits.is_some_and(|b| !(2..=8).contains(&b) && b < 16) {
            bail!(
                "--layer_config '{key}': bits {} (2 to 8, or 16 for float)",
                bits.unwrap_or(0)
            );
        }
        let group_size = num("group_size")?;
        if group_size.is_some_and(|g| g == 0 || g < -1) {
            bail!(
                "--layer_config '{key}': group_size {} (positive, or -1 for whole rows)",
                group_size.unwrap_or(0)
            );
        }
        let sym =
            match o.get("sym") {
                None => None,
                Some(x) => Some(x.as_bool().with_context(|| {
                    format!("--layer_config '{key}': sym must be true or false")
                })?),
            };
        let float = o
            .get("data_type")
            .and_then(|d| d.as_str())
            .is_some_and(|d| d != "int");
        rules.push(LayerRule {
            re: regex::Regex::new(key)
                .with_context(|| format!("--layer_config '{key}': not a layer name or a regex"))?,
            key: key.clone(),
            bits: if float {
                Some(16)
            } else {
                bits.map(|b| b as u32)
            },
            group_size,
            sym,
        });
    }
    Ok(rules)
}

/// The LM head's scheme with `--quant_lm_head` (or a `--layer_config` entry "lm_head"), or `None`
/// when it stays in float, with the reason said.
fn head_plan(
    a: &QuantizeArgs,
    p: &Plan,
    model: &Model<'_>,
    scheme: IntScheme,
    rule: Option<&LayerRule>,
    apply_rule: &dyn Fn(&LayerRule, &mut IntScheme),
    check_scheme: &dyn Fn(&str, &str, &IntScheme) -> Result<()>,
) -> Result<Option<IntScheme>> {
    let wanted = match rule {
        Some(r) => !r.bits.is_some_and(|b| b >= 16),
        None => a.quant_lm_head,
    };
    if !wanted {
        return Ok(None);
    }
    if p.formats
        .iter()
        .all(|f| matches!(f, OutFormat::Gguf { .. }))
    {
        eprintln!(
            "note: lm_head with --format {}: the GGUF mixture quantizes output.weight itself (llama.cpp's type for it, round-to-nearest, as the reference does)",
            a.format
        );
        return Ok(None);
    }
    if model.output.is_none() {
        eprintln!("warning: this model's LM head is its token embeddings (tie_word_embeddings): it stays in float, as the reference keeps it");
        return Ok(None);
    }
    if p.formats.contains(&OutFormat::AutoRound(Packing::Awq)) {
        bail!("a quantized lm_head cannot go into the auto_awq format (AWQ checkpoints keep it in float); use auto_round or auto_round:auto_awq, or drop --quant_lm_head");
    }
    let (rows, cols) = (model.cfg.vocab_size, model.cfg.n_embd);
    let mut s = scheme;
    if let Some(r) = rule {
        apply_rule(r, &mut s);
        check_scheme(&r.key, "lm_head", &s)?;
        if s.group_size > 0 && cols % s.group_size != 0 {
            bail!(
                "--layer_config 'lm_head': group_size {} does not divide its rows of {cols}",
                s.group_size
            );
        }
    }
    if rows % 32 != 0 || cols % 32 != 0 {
        eprintln!("note: lm_head ({rows} x {cols}) stays in float: its dimensions are not multiples of 32 (the reference's rule)");
        return Ok(None);
    }
    Ok(Some(s))
}

/// The type `mixture` gives each block linear of the Hugging Face folder `dir` (llama.cpp's
/// choice, with its fallbacks for rows that are not whole blocks).
fn gguf_layer_types(
    dir: &std::path::Path,
    mixture: Mixture,
) -> Result<Vec<((usize, Lin), GgmlType)>> {
    let src = crate::convert::open_hf_source(dir)?;
    let opts = QuantizeOptions {
        mixture,
        plan: PlanOptions::default(),
        imatrix: None,
        cancel: None,
        packed: None,
    };
    let plan = plan_for(&*src, &opts)?;
    let mut out = Vec::new();
    for t in &plan.tensors {
        let Some(rest) = t.name.strip_prefix("blk.") else {
            continue;
        };
        let Some((b, stem)) = rest.split_once('.') else {
            continue;
        };
        let (Ok(b), Some(lin)) = (
            b.parse::<usize>(),
            Lin::ALL
                .into_iter()
                .find(|l| stem == format!("{}.weight", l.gguf_stem())),
        ) else {
            continue;
        };
        out.push(((b, lin), t.ty));
    }
    Ok(out)
}

/// The model folder's `.safetensors` files and `config.json`, with their sizes, sorted.
fn model_files(model: &std::path::Path) -> Result<Vec<(String, u64)>> {
    let mut files: Vec<(String, u64)> = Vec::new();
    for e in std::fs::read_dir(model).with_context(|| format!("reading {}", model.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") || name == "config.json" {
            files.push((name, e.metadata()?.len()));
        }
    }
    files.sort();
    Ok(files)
}

/// Everything that decides a tuning run's result, as `key value` fields joined by `;` (a
/// checkpoint made with another fingerprint is not resumed): the model's files, the scheme of
/// every layer, the tuning settings and the calibration tokens themselves.
fn fingerprint(
    model: &std::path::Path,
    p: &Plan,
    spec: &TuneSpec,
    kept_float: &[String],
    layer_schemes: &str,
    samples: &[Vec<u32>],
) -> Result<String> {
    let files = model_files(model)?;
    let config = std::fs::read(model.join("config.json")).unwrap_or_default();
    let tokens: Vec<u8> = samples
        .iter()
        .flat_map(|s| s.iter().flat_map(|t| t.to_le_bytes()))
        .collect();
    let o = &spec.opts;
    Ok([
        format!(
            "model {}",
            model
                .canonicalize()
                .unwrap_or_else(|_| model.to_path_buf())
                .display()
        ),
        format!("files {:016x}", fnv64(format!("{files:?}").as_bytes())),
        format!("config {:016x}", fnv64(&config)),
        format!(
            "scheme {}-bit {} group {}",
            p.scheme.bits,
            if p.scheme.sym { "sym" } else { "asym" },
            p.group_size
        ),
        format!(
            "float layers {:016x}",
            fnv64(kept_float.join(",").as_bytes())
        ),
        format!("layer schemes {:016x}", fnv64(layer_schemes.as_bytes())),
        format!("scale dtype {:?}", spec.scale_dtype),
        format!("precision {:?}", spec.prec),
        format!("torch gradients {}", spec.torch_grads),
        format!("iters {}", o.iters),
        format!("lr {}", o.lr),
        format!("minmax_lr {}", o.minmax_lr),
        format!("lr by bits {} {}", o.lr_by_bits, o.minmax_by_bits),
        format!("minmax tuning {}", o.enable_minmax),
        format!("batch_size {}", o.batch_size),
        format!("best-loss kept {}", !o.not_use_best_mse),
        format!("quanted input {}", spec.enable_quanted_input),
        format!("seed {}", spec.seed),
        format!("nsamples {}", p.nsamples),
        format!("seqlen {}", p.seqlen),
        format!("calibration tokens {:016x}", fnv64(&tokens)),
    ]
    .join(";"))
}

/// Peak resident memory of this process (Linux), in bytes.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn tune(a: QuantizeArgs) -> Result<()> {
    let p = plan(&a)?;
    let threads = super::init_threads(a.threads)?;
    if !a.model.is_dir() {
        if a.model.is_file() {
            bail!(
                "--iters {}: tuning (--format {}) needs a Hugging Face folder as the model ({} is a file); convert a GGUF with `autoround-cpu convert --to hf`, or write a gguf: format with --iters 0 (llama.cpp's round-to-nearest)",
                p.iters,
                a.format,
                a.model.display()
            );
        }
        bail!("{}: not found", a.model.display());
    }
    let source = ModelSource::open(&a.model)?;
    let ModelSource::Hf { tensors: st, .. } = &source else {
        bail!("{}: expected a Hugging Face folder", a.model.display());
    };
    let model = source.load()?;
    let sh = block_shape(&model);
    // Which layers are quantized: the reference keeps layers whose dimensions are not multiples
    // of 32 in float; so do we (they could not be packed either).
    let mut kept_float: Vec<String> = Vec::new();
    for b in 0..model.layers.len() {
        for lin in Lin::ALL {
            let (r, c) = sh.dims(lin);
            if r % 32 != 0 || c % 32 != 0 {
                kept_float.push(module_name(b, lin));
            }
        }
    }
    let kept: std::collections::HashSet<String> = kept_float.iter().cloned().collect();
    let scheme = p.scheme;
    // The scheme of every block linear: the global one, or for a gguf: format the one its
    // planned type stores (types that cannot take tuned blocks yet stay for llama.cpp's
    // quantizer, from float).
    let mut schemes: HashMap<(usize, Lin), IntScheme> = HashMap::new();
    let gguf = p.formats.iter().find_map(|f| match f {
        OutFormat::Gguf { mixture, .. } => Some(*mixture),
        _ => None,
    });
    // packed auto_round formats state one scheme (plus per-layer differences); `fake` holds
    // dequantized weights and goes with any
    let has_auto_round = p
        .formats
        .iter()
        .any(|f| matches!(f, OutFormat::AutoRound(pk) if *pk != Packing::Fake));
    let mut untuned: Vec<String> = Vec::new();
    for b in 0..model.layers.len() {
        for lin in Lin::ALL {
            if !kept.contains(&module_name(b, lin)) {
                schemes.insert((b, lin), scheme);
            }
        }
    }
    // A layer's scheme after --layer_config must be one every chosen format can write.
    let check_scheme = |key: &str, name: &str, s: &IntScheme| -> Result<()> {
        let packs = p
            .formats
            .iter()
            .any(|f| matches!(f, OutFormat::AutoRound(pk) if *pk != Packing::Fake));
        if !(2..=8).contains(&s.bits) || (packs && !matches!(s.bits, 2 | 3 | 4 | 8)) {
            bail!("--layer_config '{key}': {} bits for {name}; the auto_round formats pack 2, 3, 4 or 8 bits (16 keeps a layer in float)", s.bits);
        }
        if p.formats.contains(&OutFormat::AutoRound(Packing::AutoAwq)) && (s.bits != 4 || s.sym) {
            bail!(
                "--layer_config '{key}': AWQ packing holds 4-bit asymmetric layers only ({name})"
            );
        }
        if p.formats.contains(&OutFormat::AutoRound(Packing::Awq))
            && (s.bits, s.group_size, s.sym) != (scheme.bits, scheme.group_size, scheme.sym)
        {
            bail!("--layer_config '{key}': the auto_awq format has one scheme for every quantized layer ({name}); use auto_round:auto_awq, or keep the layer in float with bits 16");
        }
        Ok(())
    };
    let apply_rule = |r: &LayerRule, s: &mut IntScheme| {
        if let Some(bits) = r.bits {
            s.bits = bits;
        }
        if let Some(g) = r.group_size {
            s.group_size = if g < 0 { 0 } else { g as usize };
        }
        if let Some(sym) = r.sym {
            s.sym = sym;
        }
    };
    // The LM head: quantized with --quant_lm_head, or when --layer_config names "lm_head".
    let mut head_rule: Option<LayerRule> = None;
    if let Some(lc) = &a.layer_config {
        if gguf.is_some() {
            bail!("--layer_config with --format {}: a GGUF mixture decides each layer's type; drop one of them", a.format);
        }
        let mut rules = parse_layer_config(lc)?;
        if let Some(k) = rules.iter().position(|r| r.key == "lm_head") {
            head_rule = Some(rules.remove(k));
        }
        let mut used = vec![false; rules.len()];
        for b in 0..model.layers.len() {
            for lin in Lin::ALL {
                let name = module_name(b, lin);
                let hit = rules
                    .iter()
                    .position(|r| r.key == name)
                    .or_else(|| rules.iter().position(|r| r.re.is_match(&name)));
                let Some(k) = hit else { continue };
                used[k] = true;
                let r = &rules[k];
                if r.bits.is_some_and(|b| b >= 16) {
                    schemes.remove(&(b, lin));
                    if !kept.contains(&name) {
                        kept_float.push(name);
                    }
                    continue;
                }
                let Some(s) = schemes.get_mut(&(b, lin)) else {
                    continue; // kept in float for its shape
                };
                apply_rule(r, s);
                check_scheme(&r.key, &name, s)?;
            }
        }
        if let Some(k) = used.iter().position(|u| !u) {
            bail!(
                "--layer_config: '{}' matches no linear layer (names look like {}, or lm_head)",
                rules[k].key,
                module_name(0, Lin::Down)
            );
        }
    }
    let head_scheme = head_plan(
        &a,
        &p,
        &model,
        scheme,
        head_rule.as_ref(),
        &apply_rule,
        &check_scheme,
    )?;
    if let Some(mixture) = gguf {
        let types = gguf_layer_types(&a.model, mixture)?;
        // which llama.cpp types the block linears are tuned for (the base scheme printed below
        // is only the mixture's base type)
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for (_, ty) in &types {
            *counts.entry(ty.name()).or_default() += 1;
        }
        eprintln!(
            "gguf:{}: block linears as {}",
            mixture.name(),
            counts
                .iter()
                .map(|(t, n)| format!("{t} x{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for ((b, lin), ty) in types {
            match tuned_scheme(ty) {
                Some(s) if has_auto_round && s != scheme => bail!(
                    "--format {}: gguf:{} stores blk.{b}.{} as {} ({}-bit groups of {}{}), which the auto_round scheme ({}-bit, group {}) cannot share; write them in separate runs",
                    a.format,
                    mixture.name(),
                    lin.gguf_stem(),
                    ty.name(),
                    s.bits,
                    s.group_size,
                    if s.dq.is_some() { " with quantized scales" } else { "" },
                    scheme.bits,
                    p.group_size
                ),
                Some(s) => {
                    schemes.insert((b, lin), s);
                }
                None if has_auto_round => bail!(
                    "--format {}: gguf:{} stores blk.{b}.{} as {}, which is not tuned; write the GGUF in a separate run",
                    a.format,
                    mixture.name(),
                    lin.gguf_stem(),
                    ty.name()
                ),
                None => {
                    schemes.remove(&(b, lin));
                    untuned.push(format!("blk.{b}.{} ({})", lin.gguf_stem(), ty.name()));
                }
            }
        }
        if !untuned.is_empty() && p.iters > 0 {
            eprintln!(
                "note: {} of {} block layers have types that are not tuned (only Q4_0, Q5_0, Q8_0 and the K-quants are); llama.cpp's quantizer writes them from float, e.g. {}",
                untuned.len(),
                model.layers.len() * Lin::ALL.len(),
                untuned[0]
            );
        }
    }
    let scheme_of = |b: usize, lin: Lin| schemes.get(&(b, lin)).copied();
    // the LM head's float weight as a layer to quantize with scheme `s`
    let head_layer = |s: IntScheme| -> Result<QuantLayer> {
        let out = model.output.as_ref().context("an untied LM head")?;
        let (rows, cols) = (model.cfg.vocab_size, model.cfg.n_embd);
        Ok(QuantLayer::new(
            out.to_f32(),
            rows,
            cols,
            s,
            ScaleDtype::F16,
        ))
    };

    // Output paths, all checked before the long work.
    let stem = a
        .model
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());
    let g = if p.group_size < 0 {
        "-1".to_string()
    } else {
        p.group_size.to_string()
    };
    let base = format!("{stem}-w{}g{g}", p.scheme.bits);
    if let Some(d) = &a.output_dir {
        std::fs::create_dir_all(d)
            .with_context(|| format!("creating the output folder {}", d.display()))?;
    }
    let mut outs: Vec<(OutFormat, PathBuf)> = Vec::new();
    for &f in &p.formats {
        let path = match (&a.output, &a.output_dir) {
            (Some(o), _) => o.clone(),
            (None, Some(d)) => d.join(match f {
                OutFormat::AutoRound(Packing::Fake) => format!("{base}-fake"),
                OutFormat::AutoRound(Packing::Gptq) => format!("{base}-gptq"),
                OutFormat::AutoRound(Packing::Awq) => format!("{base}-awq"),
                OutFormat::AutoRound(_) => base.clone(),
                OutFormat::Gguf { mixture, .. } => format!("{stem}-{}.gguf", mixture.llama_name()),
            }),
            (None, None) => bail!("give --output_dir DIR or -o PATH"),
        };
        if path.exists() && !a.overwrite {
            bail!("{} exists; pass --overwrite to replace it", path.display());
        }
        if path.canonicalize().ok() == a.model.canonicalize().ok() {
            bail!("the output {} is the input model", path.display());
        }
        outs.push((f, path));
    }
    let ck_dir = PathBuf::from(format!(
        "{}.resume",
        match (&a.output, &a.output_dir) {
            (Some(o), _) => o.clone(),
            (None, Some(d)) => d.join(&base),
            (None, None) => unreachable!("checked above"),
        }
        .display()
    ));

    let t0 = Instant::now();
    let n_blocks = model.layers.len();
    let mut checkpoint: Option<Checkpoint> = None;
    // Calibration samples (the dataset is read only when something needs it).
    let samples = || -> Result<(Vec<Vec<u32>>, Option<u32>)> {
        let ds = a.dataset.as_deref().context(
            "--dataset FILE[,FILE] is required for tuning (.txt, .jsonl or .parquet calibration text, or a Hugging Face dataset already in the local hub cache; nothing is downloaded)",
        )?;
        let paths = resolve_datasets(ds)?;
        let texts = read_texts(&paths)?;
        let tok = source.tokenizer()?;
        let copts = CalibOptions {
            nsamples: p.nsamples,
            seqlen: p.seqlen,
            seed: a.seed,
            concat: a.concat,
        };
        Ok((build_samples(&texts, &tok, &copts)?, tok.special_ids().pad))
    };
    let opt_rtn = p.iters == 0 && a.dataset.is_some() && !a.disable_opt_rtn;
    let mut tuned: Vec<TunedLinear> = if opt_rtn {
        let (samples, _) = samples()?;
        eprintln!(
            "optimized round-to-nearest (scale search weighted by {} calibration samples x {} tokens) {}-bit {} group {} of {} blocks, {threads} thread(s)",
            p.nsamples,
            p.seqlen,
            scheme.bits,
            if scheme.sym { "sym" } else { "asym (plain RTN: no search)" },
            p.group_size,
            n_blocks
        );
        let bar = indicatif::ProgressBar::new(n_blocks as u64);
        let t = rtn_model(
            &model,
            Some((&samples, p.batch_size)),
            ScaleDtype::F16,
            &scheme_of,
            &mut |_| bar.inc(1),
        );
        bar.finish_and_clear();
        t
    } else if p.iters == 0 {
        eprintln!(
            "round-to-nearest {}-bit {} group {} of {} blocks, {threads} thread(s){}",
            scheme.bits,
            if scheme.sym { "sym" } else { "asym" },
            p.group_size,
            n_blocks,
            if a.disable_opt_rtn {
                ""
            } else {
                " (give --dataset for the reference's optimized RTN)"
            }
        );
        rtn_model(&model, None, ScaleDtype::F16, &scheme_of, &mut |_| {})
    } else {
        // Memory estimate: the two chains and the targets, the block's float weights with the
        // tuned tensors, best snapshot and gradients, and one batch's activations.
        let tokens = (p.nsamples * p.seqlen) as u64;
        let chains = 3 * tokens * sh.d as u64 * 4;
        let block_params: u64 = Lin::ALL
            .iter()
            .map(|&l| {
                let (r, c) = sh.dims(l);
                (r * c) as u64
            })
            .sum();
        let per_block = block_params * 4 * 7;
        let bt = (p.batch_size * p.seqlen) as u64;
        let acts =
            bt * (12 * sh.d as u64 + 6 * sh.ff as u64 + 4 * (sh.n_head * sh.head_dim) as u64) * 4
                + (threads as u64) * 2 * (p.seqlen * p.seqlen) as u64 * 4;
        // the head is tuned after the blocks' buffers are gone: its weight, V, Ŵ, ∂Ŵ, best V and
        // gradients, and chunks of logits
        let head = head_scheme.map_or(0, |_| {
            let (v, d) = (model.cfg.vocab_size as u64, sh.d as u64);
            v * d * 4 * 7 + 3 * 256 * v * 4
        });
        let need = chains + (per_block + acts).max(head);
        // the model's pages count in the resident size as they are read, but are page cache
        let mapped: u64 = model_files(&a.model)?
            .iter()
            .filter(|(name, _)| name.ends_with(".safetensors"))
            .map(|(_, len)| len)
            .sum();
        if let Some(avail) = mem_available() {
            if need > avail * 9 / 10 {
                bail!(
                    "tuning needs about {:.1} GiB (calibration chains {:.1} GiB for {} samples x {} tokens, block {:.1} GiB, batch activations {:.1} GiB) but {:.1} GiB is available; lower --nsamples, --seqlen or --batch_size",
                    need as f64 / (1u64 << 30) as f64,
                    chains as f64 / (1u64 << 30) as f64,
                    p.nsamples,
                    p.seqlen,
                    per_block as f64 / (1u64 << 30) as f64,
                    acts as f64 / (1u64 << 30) as f64,
                    avail as f64 / (1u64 << 30) as f64
                );
            }
        }
        let (samples, pad) = samples()?;
        let mask = loss_mask(&samples, pad);
        let spec = TuneSpec {
            scale_dtype: ScaleDtype::F16,
            opts: SignRoundOptions {
                iters: p.iters,
                lr: p.lr,
                minmax_lr: p.minmax_lr,
                enable_minmax: !a.disable_minmax_tuning,
                batch_size: p.batch_size,
                not_use_best_mse: false,
                lr_by_bits: p.lr_by_bits,
                minmax_by_bits: p.minmax_by_bits,
            },
            enable_quanted_input: !a.disable_quanted_input,
            seed: a.seed,
            prec: if a.disable_amp {
                Precision::F32
            } else {
                Precision::fastest()
            },
            torch_grads: a.grads == GradMode::Torch,
        };
        eprintln!(
            "tuning {} blocks{}: {}-bit {} group {}, {} iters, lr {}, batch {}, {} samples x {} tokens, {threads} thread(s), {}{}, about {:.1} GiB of memory besides the memory-mapped model's {:.1} GiB",
            n_blocks,
            if head_scheme.is_some() { " and lm_head" } else { "" },
            scheme.bits,
            if scheme.sym { "sym" } else { "asym" },
            p.group_size,
            p.iters,
            p.lr,
            p.batch_size,
            p.nsamples,
            p.seqlen,
            match spec.prec {
                Precision::Bf16 => "bf16 products on AMX tiles (--disable_amp: f32)",
                Precision::F32 => "f32 products",
            },
            if spec.torch_grads {
                ", torch's gradients"
            } else {
                ""
            },
            need as f64 / (1u64 << 30) as f64,
            mapped as f64 / (1u64 << 30) as f64
        );
        let head_iters = if head_scheme.is_some() { p.iters } else { 0 };
        let bar = indicatif::ProgressBar::new((n_blocks * p.iters + head_iters) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {percent:>3}% {elapsed_precise} ETA {eta_precise} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        // Resume: a checkpoint beside the output, bound to everything that decides the result.
        let mut listed: Vec<String> = schemes
            .iter()
            .map(|((b, l), s)| {
                let dq = s.dq.map(|q| format!("/{}x{}", q.bits, q.groups));
                format!(
                    "{b}.{}:{}{}{}{}",
                    l.gguf_stem(),
                    s.bits,
                    s.sym,
                    s.group_size,
                    dq.unwrap_or_default()
                )
            })
            .collect();
        if let Some(s) = head_scheme {
            listed.push(format!("lm_head:{}{}{}", s.bits, s.sym, s.group_size));
        }
        listed.sort();
        let fingerprint = fingerprint(
            &a.model,
            &p,
            &spec,
            &kept_float,
            &listed.join(","),
            &samples,
        )?;
        let (mut ck, resumed) = Checkpoint::open(&ck_dir, &fingerprint)?;
        // Ctrl-C: stop at once; finished blocks stay in the checkpoint for a rerun, and a
        // checkpoint folder that holds nothing yet is removed
        let saved = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(
            resumed.as_ref().map_or(0, |r| r.next_block),
        ));
        {
            let (saved, dir) = (saved.clone(), ck_dir.clone());
            let _ = ctrlc::set_handler(move || {
                let n = saved.load(std::sync::atomic::Ordering::SeqCst);
                if n == 0 {
                    let _ = std::fs::remove_dir(&dir);
                    eprintln!("\ninterrupted before the first block was finished; nothing written");
                } else {
                    eprintln!(
                        "\ninterrupted: {n} finished block(s) are in {}; rerun the same command to go on from there",
                        dir.display()
                    );
                }
                std::process::exit(130);
            });
        }
        let verbose = a.verbose;
        // "block k/n: loss iter 0: … -> iter i: … (t s)", or "lm_head: …"
        let log_loss = |what: &str, s: &TuneStats, secs: f64, note: &str| {
            eprintln!(
                "{what}: loss iter 0: {:.6e} -> iter {}: {:.6e} ({secs:.1} s){note}",
                s.init_loss, s.best_iter, s.best_loss,
            )
        };
        let log_block = |b: usize, s: &TuneStats, secs: f64, note: &str| {
            log_loss(&format!("block {}/{n_blocks}", b + 1), s, secs, note)
        };
        let mut all = Vec::new();
        let mut chains = match resumed {
            None => Chains::start(&model, &samples, &spec),
            Some(r) => {
                eprintln!(
                    "resuming from {}: {} of {n_blocks} blocks are done; replaying them",
                    ck_dir.display(),
                    r.next_block
                );
                if verbose {
                    for (b, rec) in r.blocks.iter().enumerate() {
                        log_block(b, &rec.stats, rec.seconds, " [checkpoint]");
                    }
                }
                bar.set_position((r.next_block * p.iters) as u64);
                bar.set_message("replaying finished blocks");
                all = r.layers;
                let done = all.clone();
                Chains::replay(
                    &model,
                    &samples,
                    &spec,
                    &done,
                    r.next_block,
                    r.sampler,
                    &mut |b| bar.set_message(format!("replayed block {}/{n_blocks}", b + 1)),
                )
            }
        };
        let abort_after: Option<usize> = std::env::var("AUTOROUND_CPU_ABORT_AFTER_BLOCK")
            .ok()
            .and_then(|v| v.parse().ok());
        let mut best_so_far = f64::MAX;
        tune_model(
            &model,
            p.seqlen,
            &mask,
            &spec,
            &scheme_of,
            &mut chains,
            &mut |b, i, loss| {
                if i == 0 {
                    best_so_far = f64::MAX;
                }
                best_so_far = best_so_far.min(loss);
                bar.set_message(format!(
                    "block {}/{n_blocks} best loss {best_so_far:.4e}",
                    b + 1
                ));
                bar.inc(1);
            },
            &mut |rep, chains| {
                let stats = rep.stats.clone().context("a tuned block has statistics")?;
                if verbose {
                    bar.suspend(|| log_block(rep.block, &stats, rep.seconds, ""));
                }
                all.extend_from_slice(rep.layers);
                let record = BlockRecord {
                    stats,
                    seconds: rep.seconds,
                };
                ck.save_block(rep.block, rep.layers, record, chains)?;
                saved.store(rep.block + 1, std::sync::atomic::Ordering::SeqCst);
                if abort_after == Some(rep.block) {
                    // test hook: a kill right after a checkpoint
                    std::process::abort();
                }
                Ok(())
            },
        )?;
        if let Some(s) = head_scheme {
            // after the last block: the final norm of both chains feeds the head
            let (eps, norm) = (model.cfg.rms_eps, &model.out_norm);
            let fp_in = final_norm(&std::mem::take(&mut chains.x), norm, eps);
            let q_in = spec
                .enable_quanted_input
                .then(|| final_norm(&std::mem::take(&mut chains.q), norm, eps));
            let t1 = Instant::now();
            let mut l = head_layer(s)?;
            l.torch_grads = spec.torch_grads;
            bar.set_message("lm_head");
            let data = HeadData {
                q_in: q_in.as_deref().unwrap_or(&fp_in),
                fp_in: &fp_in,
                mask: &mask,
                seq_len: p.seqlen,
            };
            let mut best_so_far = f64::MAX;
            let stats = tune_head(
                &mut l,
                &data,
                &spec.opts,
                spec.prec,
                a.seed,
                &mut |_, loss| {
                    best_so_far = best_so_far.min(loss);
                    bar.set_message(format!("lm_head best loss {best_so_far:.4e}"));
                    bar.inc(1);
                },
            );
            if verbose {
                bar.suspend(|| log_loss("lm_head", &stats, t1.elapsed().as_secs_f64(), ""));
            }
            all.push(head_result(&l));
        }
        bar.finish_and_clear();
        checkpoint = Some(ck);
        all
    };
    if let (0, Some(s)) = (p.iters, head_scheme) {
        // round-to-nearest, as the blocks
        tuned.push(head_result(&head_layer(s)?));
    }
    let tune_secs = t0.elapsed().as_secs_f64();
    let settings = RecordedSettings {
        bits: scheme.bits,
        group_size: p.group_size,
        sym: scheme.sym,
        iters: p.iters,
        lr: p.lr,
        minmax_lr: p.minmax_lr,
        nsamples: p.nsamples,
        seqlen: p.seqlen,
        batch_size: p.batch_size,
        enable_minmax_tuning: !a.disable_minmax_tuning,
        enable_quanted_input: !a.disable_quanted_input,
    };
    for (f, out) in &outs {
        let t1 = Instant::now();
        let (what, bytes) = match *f {
            OutFormat::AutoRound(packing) => (
                packing.name().to_string(),
                write_auto_round(
                    &a.model,
                    st,
                    &tuned,
                    &kept_float,
                    &settings,
                    packing,
                    out,
                    a.overwrite,
                )?,
            ),
            OutFormat::Gguf { mixture } => {
                let sum = write_tuned_gguf(
                    &a.model,
                    &tuned,
                    mixture,
                    (model.cfg.n_head, model.cfg.n_head_kv),
                    out,
                    &mut |_| {},
                )?;
                (format!("gguf:{}", mixture.name()), sum.file_size)
            }
        };
        eprintln!(
            "wrote {} ({what}, {} quantized layers, {:.1} MiB) in {:.1} s",
            out.display(),
            tuned.len(),
            bytes as f64 / (1024.0 * 1024.0),
            t1.elapsed().as_secs_f64(),
        );
    }
    if let Some(ck) = checkpoint {
        ck.remove()?;
    }
    eprintln!(
        "done in {:.1} s (tuning {:.1} s), peak RSS {:.0} MiB",
        t0.elapsed().as_secs_f64(),
        tune_secs,
        peak_rss().unwrap_or(0) as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
