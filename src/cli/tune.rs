//! `autoround-cpu quantize --format auto_round`: AutoRound tuning (or round-to-nearest with
//! `--iters 0`) of a Hugging Face folder into an auto_round checkpoint.

use super::args::QuantizeArgs;
use crate::export::auto_round::{module_name, write_auto_round, Packing, RecordedSettings};
use crate::model::load::ModelSource;
use crate::tuner::block::Lin;
use crate::tuner::calib::{build_samples, read_texts, CalibOptions};
use crate::tuner::qdq::{IntScheme, ScaleDtype};
use crate::tuner::run::{
    block_shape, loss_mask, rtn_model, tune_model, Chains, TuneSpec, TunedLinear,
};
use crate::tuner::signround::SignRoundOptions;
use anyhow::{bail, Context, Result};
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

/// Everything resolved from the flags, checked before any long work.
struct Plan {
    scheme: IntScheme,
    group_size: i64,
    iters: usize,
    lr: f32,
    minmax_lr: f32,
    nsamples: usize,
    seqlen: usize,
    batch_size: usize,
    packing: Packing,
}

fn plan(a: &QuantizeArgs) -> Result<Plan> {
    let (mut bits, mut group_size) = preset(&a.scheme).with_context(|| {
        format!(
            "--scheme {}: unknown scheme (W2A16, W2A16G64, W2A16G32, W3A16, W4A16, W8A16)",
            a.scheme
        )
    })?;
    if let Some(b) = a.bits {
        bits = b;
    }
    if !matches!(bits, 2 | 3 | 4 | 8) {
        bail!("--bits {bits}: the auto_round formats pack 2, 3, 4 or 8 bits");
    }
    if let Some(g) = a.group_size {
        group_size = g;
    }
    if group_size == 0 || group_size < -1 {
        bail!("--group_size {group_size}: use a positive group size, or -1 for one group per row");
    }
    let sym = !a.asym;
    let packing = Packing::parse(&a.format, bits, sym).with_context(|| {
        format!(
            "--format {}: unknown format (auto_round, auto_round:auto_gptq, auto_round:auto_awq, or gguf:<type>)",
            a.format
        )
    })?;
    if packing == Packing::AutoAwq && bits != 4 {
        bail!(
            "--format {}: AWQ packing holds 4-bit weights only, not {bits}-bit",
            a.format
        );
    }
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
    let lr = a.lr.or(lr).unwrap_or(if iters == 0 {
        5e-3
    } else if a.best && iters >= 1000 && bits <= 3 {
        2.0 / iters as f32
    } else {
        1.0 / iters as f32
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
        scheme: IntScheme {
            bits,
            group_size: if group_size < 0 {
                0
            } else {
                group_size as usize
            },
            sym,
        },
        group_size,
        iters,
        lr,
        minmax_lr,
        nsamples,
        seqlen: a.seqlen.unwrap_or(2048),
        batch_size,
        packing,
    })
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
                "--format {} needs a Hugging Face folder as the model ({} is a file); convert a GGUF with `autoround-cpu convert --to hf`, or choose a gguf: format",
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
    let mut kept_float = Vec::new();
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
    let scheme_of = |b: usize, lin: Lin| (!kept.contains(&module_name(b, lin))).then_some(scheme);

    // Output folder.
    let out: PathBuf = match (&a.output, &a.output_dir) {
        (Some(o), _) => o.clone(),
        (None, Some(d)) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("creating the output folder {}", d.display()))?;
            let stem = a
                .model
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into());
            let g = if p.group_size < 0 {
                "-1".to_string()
            } else {
                p.group_size.to_string()
            };
            d.join(format!("{stem}-w{}g{g}", p.scheme.bits))
        }
        (None, None) => bail!("give --output_dir DIR or -o FOLDER"),
    };
    if out.exists() && !a.overwrite {
        bail!("{} exists; pass --overwrite to replace it", out.display());
    }
    if out.canonicalize().ok() == a.model.canonicalize().ok() {
        bail!("the output {} is the input model", out.display());
    }

    let t0 = Instant::now();
    let n_blocks = model.layers.len();
    let tuned: Vec<TunedLinear> = if p.iters == 0 {
        eprintln!(
            "round-to-nearest {}-bit {} group {} of {} blocks, {threads} thread(s)",
            scheme.bits,
            if scheme.sym { "sym" } else { "asym" },
            p.group_size,
            n_blocks
        );
        rtn_model(&model, ScaleDtype::F16, &scheme_of, &mut |_| {})
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
        let need = chains + per_block + acts;
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
        let ds = a.dataset.as_deref().context(
            "--dataset FILE[,FILE] is required for tuning (.txt or .jsonl calibration text; nothing is downloaded)",
        )?;
        let paths: Vec<PathBuf> = ds.split(',').map(PathBuf::from).collect();
        let texts = read_texts(&paths)?;
        let tok = source.tokenizer()?;
        let copts = CalibOptions {
            nsamples: p.nsamples,
            seqlen: p.seqlen,
            seed: a.seed,
            concat: a.concat,
        };
        let samples = build_samples(&texts, &tok, &copts)?;
        let pad = tok.special_ids().pad;
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
            },
            enable_quanted_input: !a.disable_quanted_input,
            seed: a.seed,
        };
        eprintln!(
            "tuning {} blocks: {}-bit {} group {}, {} iters, lr {}, batch {}, {} samples x {} tokens, {threads} thread(s), about {:.1} GiB",
            n_blocks,
            scheme.bits,
            if scheme.sym { "sym" } else { "asym" },
            p.group_size,
            p.iters,
            p.lr,
            p.batch_size,
            p.nsamples,
            p.seqlen,
            need as f64 / (1u64 << 30) as f64
        );
        let bar = indicatif::ProgressBar::new((n_blocks * p.iters) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {percent:>3}% {elapsed_precise} ETA {eta_precise} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let mut chains = Chains::start(&model, &samples, &spec);
        let mut all = Vec::new();
        let mut best_so_far = f64::MAX;
        let verbose = a.verbose;
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
            &mut |rep, _| {
                if let Some(s) = &rep.stats {
                    if verbose {
                        bar.suspend(|| {
                            eprintln!(
                                "block {}/{}: loss iter 0: {:.6e} -> iter {}: {:.6e} ({:.1} s)",
                                rep.block + 1,
                                rep.n_blocks,
                                s.init_loss,
                                s.best_iter,
                                s.best_loss,
                                rep.seconds
                            )
                        });
                    }
                }
                all.extend_from_slice(rep.layers);
                Ok(())
            },
        )?;
        bar.finish_and_clear();
        all
    };
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
    let bytes = write_auto_round(
        &a.model,
        st,
        &tuned,
        &kept_float,
        &settings,
        p.packing,
        &out,
        a.overwrite,
    )?;
    eprintln!(
        "wrote {} ({}, {} quantized layers, {:.1} MiB) in {:.1} s (tuning {:.1} s), peak RSS {:.0} MiB",
        out.display(),
        p.packing.name(),
        tuned.len(),
        bytes as f64 / (1024.0 * 1024.0),
        t0.elapsed().as_secs_f64(),
        tune_secs,
        peak_rss().unwrap_or(0) as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
