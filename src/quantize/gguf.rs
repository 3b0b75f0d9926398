//! Whole-model GGUF quantization, as `llama-quantize` does it: the same per-tensor types
//! ([`mixture`](super::mixture)), the same quantizers (`autoround_kernels::quantize`, byte-identical
//! with ggml's), the same metadata edits and the same file layout, so that from the same input
//! (and the same imatrix) the output file is byte-identical to llama-quantize's.
//!
//! What llama-quantize does, and so what this does (llama.cpp b11312, `src/llama-quant.cpp`):
//! - **Metadata**: every key of the input in order; then `general.quantization_version` (2) and
//!   `general.file_type` (the mixture's ftype) are removed and appended at the end; split keys
//!   are removed; with an imatrix, `quantize.imatrix.file` (the path as given, at most 127
//!   bytes), `quantize.imatrix.dataset` (the first data set, if any),
//!   `quantize.imatrix.entries_count` and `quantize.imatrix.chunks_count` (if positive) are
//!   appended the same way.
//! - **Tensors**: in llama.cpp's order (layer number, then name), each padded to the alignment.
//!   A tensor already of its target type is copied; any other is converted to f32 and quantized
//!   with its imatrix entry (`sums / count`), if the imatrix has one of the right length.
//!
//! The output is written through a temporary file and renamed at the end: a failure (or an
//! interruption noticed through [`QuantizeOptions::cancel`]) leaves nothing behind.

use super::mixture::{self, Mixture, ModelMeta, Plan, PlanOptions};
use super::source::WeightSource;
use anyhow::{anyhow, bail, Context};
use autoround_formats::gguf::{GgufError, GgufValue, GgufWriter};
use autoround_formats::imatrix::Imatrix;
use autoround_kernels::{quantize as q, reference, GgmlType};
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// `GGML_QNT_VERSION`.
pub const QUANTIZATION_VERSION: u32 = 2;

/// An importance matrix and the name llama-quantize would record for it.
pub struct ImatrixInput {
    pub imatrix: Imatrix,
    /// Stored as `quantize.imatrix.file`: llama-quantize stores the path as given on its
    /// command line.
    pub file_name: String,
}

/// What to quantize to, and how.
pub struct QuantizeOptions<'a> {
    pub mixture: Mixture,
    /// llama-quantize's type options (`--pure`, `--output-tensor-type`, ...). `has_imatrix` is
    /// set from [`imatrix`](Self::imatrix).
    pub plan: PlanOptions,
    pub imatrix: Option<&'a ImatrixInput>,
    /// Checked between slabs of rows: when set, the run stops and nothing is written.
    pub cancel: Option<&'a AtomicBool>,
    /// Tensors whose bytes are already made (the tuner's blocks): given a tensor's name and its
    /// planned type, the finished bytes, or `None` to quantize it from the source as usual.
    pub packed: Option<&'a PackedFn<'a>>,
}

/// See [`QuantizeOptions::packed`].
pub type PackedFn<'a> = dyn Fn(&str, GgmlType) -> Option<anyhow::Result<Vec<u8>>> + Sync + 'a;

/// Progress reports, for a progress bar.
pub enum Progress<'a> {
    /// The plan is made: this many weights (elements) will be written in all.
    Start { total_elements: u64 },
    /// A tensor begins.
    Tensor {
        index: usize,
        name: &'a str,
        from: GgmlType,
        to: GgmlType,
    },
    /// This many more elements are done.
    Advance(u64),
    /// Something the user should know (fallbacks, missing imatrix entries, requantization).
    Note(String),
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Summary {
    pub n_tensors: usize,
    /// Tensors whose type changed.
    pub n_quantized: usize,
    /// Tensors whose rows forced a fallback type.
    pub n_fallback: usize,
    pub n_elements: u64,
    /// Bytes of tensor data in and out (without metadata and padding).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The whole output file.
    pub file_size: u64,
    pub seconds: f64,
}

impl Summary {
    /// Bits per weight of the output's tensor data.
    pub fn bpw_out(&self) -> f64 {
        self.bytes_out as f64 * 8.0 / self.n_elements.max(1) as f64
    }
    /// Bits per weight of the input's tensor data.
    pub fn bpw_in(&self) -> f64 {
        self.bytes_in as f64 * 8.0 / self.n_elements.max(1) as f64
    }
}

/// The tensor types for `src` under `opts`, in output order.
pub fn plan_for(src: &dyn WeightSource, opts: &QuantizeOptions) -> anyhow::Result<Plan> {
    let meta = ModelMeta::from_metadata(src.metadata())
        .with_context(|| format!("{}: reading the model's hyper-parameters", src.describe()))?;
    let mut plan_opts = opts.plan.clone();
    plan_opts.has_imatrix = opts.imatrix.is_some();
    Ok(mixture::plan_with(
        opts.mixture,
        &meta,
        src.tensors(),
        &plan_opts,
    )?)
}

/// The output metadata: the input's keys with llama-quantize's edits (see the module docs).
pub fn output_metadata(src: &dyn WeightSource, opts: &QuantizeOptions) -> Vec<(String, GgufValue)> {
    let mut md: Vec<(String, GgufValue)> = src.metadata().to_vec();
    let mut set = |key: &str, v: GgufValue| {
        md.retain(|(k, _)| k != key);
        md.push((key.to_string(), v));
    };
    set(
        "general.quantization_version",
        GgufValue::U32(QUANTIZATION_VERSION),
    );
    set("general.file_type", GgufValue::U32(opts.mixture.ftype()));
    md.retain(|(k, _)| {
        !matches!(
            k.as_str(),
            "split.no" | "split.count" | "split.tensors.count"
        )
    });
    let mut set = |key: &str, v: GgufValue| {
        md.retain(|(k, _)| k != key);
        md.push((key.to_string(), v));
    };
    if let Some(im) = opts.imatrix {
        set(
            "quantize.imatrix.file",
            GgufValue::String(truncate_127(&im.file_name)),
        );
        if let Some(ds) = im.imatrix.datasets.first() {
            set(
                "quantize.imatrix.dataset",
                GgufValue::String(truncate_127(ds)),
            );
        }
        set(
            "quantize.imatrix.entries_count",
            GgufValue::U32(im.imatrix.entries.len() as u32),
        );
        if im.imatrix.chunk_count > 0 {
            set(
                "quantize.imatrix.chunks_count",
                GgufValue::U32(im.imatrix.chunk_count),
            );
        }
    }
    md
}

/// llama-quantize copies override strings with `strncpy(.., 127)`: at most 127 bytes (here cut
/// back to a character boundary, so the value stays UTF-8).
fn truncate_127(s: &str) -> String {
    let mut end = s.len().min(127);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Quantize `src` into the GGUF file `out` (atomically). `progress` is called from this thread.
pub fn quantize_to_gguf(
    src: &dyn WeightSource,
    out: &Path,
    opts: &QuantizeOptions,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<Summary> {
    let t0 = Instant::now();
    let plan = plan_for(src, opts)?;
    let infos = src.tensors();

    // Check everything that can be checked before writing anything.
    let mut importance: Vec<Option<Vec<f32>>> = vec![None; plan.tensors.len()];
    let mut order = Vec::with_capacity(plan.tensors.len());
    // Fallbacks, grouped by what happened: (message, first tensor, count).
    let mut fallbacks: Vec<(String, String, usize)> = Vec::new();
    for (k, p) in plan.tensors.iter().enumerate() {
        let i = infos
            .iter()
            .position(|t| t.name == p.name)
            .ok_or_else(|| anyhow!("internal: planned tensor '{}' not in the source", p.name))?;
        let t = &infos[i];
        if p.ty != t.ty {
            if !(q::can_quantize(p.ty) || is_float(p.ty)) {
                bail!(
                    "tensor '{}': no quantizer for {} here (types supported: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, F16, BF16, F32)",
                    p.name,
                    p.ty.name()
                );
            }
            if !reference::can_dequantize(t.ty) {
                bail!(
                    "tensor '{}': cannot read its type {} to requantize it",
                    p.name,
                    t.ty.name()
                );
            }
        }
        if let Some(fb) = &p.fallback {
            match fallbacks.iter_mut().find(|(m, _, _)| m == fb) {
                Some(e) => e.2 += 1,
                None => fallbacks.push((fb.clone(), p.name.clone(), 1)),
            }
        }
        order.push(i);
        if p.ty == t.ty || is_float(p.ty) {
            continue;
        }
        if let Some(im) = opts.imatrix {
            match im.imatrix.importance(&p.name) {
                None => progress(Progress::Note(format!(
                    "{}: no importance-matrix entry, quantized without one",
                    p.name
                ))),
                Some(v) => {
                    let want = t.ne[0] * t.ne.get(2).copied().unwrap_or(1);
                    if v.len() as u64 == want {
                        importance[k] = Some(v);
                    } else if p.name != "token_embd.weight" {
                        bail!(
                            "tensor '{}': the importance matrix has {} values where this model needs {} (row length {}): is the imatrix for another model?",
                            p.name,
                            v.len(),
                            want,
                            t.ne[0]
                        );
                    }
                }
            }
        }
    }
    for (msg, first, n) in &fallbacks {
        progress(Progress::Note(match n {
            1 => format!("{first}: {msg}"),
            _ => format!("{first} and {} more: {msg}", n - 1),
        }));
    }
    for (k, (p, &i)) in plan.tensors.iter().zip(&order).enumerate() {
        // tensor_requires_imatrix: the Q2_K tensors of a q2_k_s file, but for the embeddings
        // and output.
        // (tensors given packed, the tuner's, need none)
        let needs = opts.mixture.requires_imatrix()
            && p.ty == GgmlType::Q2_K
            && p.ty != infos[i].ty
            && !matches!(p.name.as_str(), "token_embd.weight" | "output.weight")
            && opts.packed.and_then(|f| f(&p.name, p.ty)).is_none();
        if needs && importance[k].is_none() {
            bail!(
                "tensor '{}': {} needs an importance matrix for its Q2_K tensors (llama-quantize refuses too); pass --imatrix FILE (make one with `autoround-cpu imatrix`)",
                p.name,
                opts.mixture
            );
        }
    }
    if let Some(im) = opts.imatrix {
        let matched = importance.iter().filter(|v| v.is_some()).count();
        let wanted = plan
            .tensors
            .iter()
            .zip(&order)
            .filter(|(p, &i)| p.ty != infos[i].ty && !is_float(p.ty))
            .count();
        if matched == 0 && wanted > 0 {
            bail!(
                "the importance matrix ({} entries, e.g. '{}') has no entry for any tensor of {}: it was made for another model",
                im.imatrix.entries.len(),
                im.imatrix.entries.keys().next().map_or("", |s| s.as_str()),
                src.describe()
            );
        }
    }
    let requantized: Vec<&str> = plan
        .tensors
        .iter()
        .zip(&order)
        .filter(|(p, &i)| p.ty != infos[i].ty && infos[i].ty.is_quantized())
        .map(|(p, _)| p.name.as_str())
        .collect();
    if let Some(first) = requantized.first() {
        let i = order[plan
            .tensors
            .iter()
            .position(|p| p.name == *first)
            .unwrap_or(0)];
        progress(Progress::Note(format!(
            "requantizing {} tensor(s) that are already quantized (e.g. '{first}', {}): the result is worse than quantizing the float model",
            requantized.len(),
            infos[i].ty.name()
        )));
    }

    // The header: metadata and tensor infos; all data deferred.
    let mut w = GgufWriter::new(3, src.alignment());
    for (k, v) in output_metadata(src, opts) {
        w.add_kv(k, v);
    }
    let mut n_elements = 0u64;
    let mut bytes_in = 0u64;
    let mut bytes_out = 0u64;
    for (p, &i) in plan.tensors.iter().zip(&order) {
        let t = &infos[i];
        bytes_out += w.add_tensor_deferred(p.name.clone(), t.ne.clone(), p.ty)?;
        let n: u64 = t.ne.iter().product();
        n_elements += n;
        bytes_in += autoround_formats::gguf::reader::tensor_size(&t.ne, t.ty)
            .map_err(|e| anyhow!("tensor '{}': {e}", t.name))?;
    }
    let file_size = w.file_size()?;
    progress(Progress::Start {
        total_elements: n_elements,
    });

    let mut n_quantized = 0usize;
    w.write_streaming_to_path(out, |k, sink: &mut dyn Write| -> anyhow::Result<()> {
        let p = &plan.tensors[k];
        let t = &infos[order[k]];
        progress(Progress::Tensor {
            index: k,
            name: &p.name,
            from: t.ty,
            to: p.ty,
        });
        if let Some(bytes) = opts.packed.and_then(|f| f(&p.name, p.ty)) {
            let bytes = bytes?;
            let want = autoround_formats::gguf::reader::tensor_size(&t.ne, p.ty)
                .map_err(|e| anyhow!("tensor '{}': {e}", p.name))?;
            if bytes.len() as u64 != want {
                bail!(
                    "tensor '{}': {} packed bytes where {} needs {want}",
                    p.name,
                    bytes.len(),
                    p.ty.name()
                );
            }
            n_quantized += 1;
            sink.write_all(&bytes)
                .with_context(|| format!("writing {} (tensor '{}')", out.display(), p.name))?;
            progress(Progress::Advance(t.ne.iter().product()));
            return Ok(());
        }
        let data = src.tensor_bytes(order[k])?;
        let written = if p.ty == t.ty {
            sink.write_all(&data)
                .map_err(anyhow::Error::from)
                .map(|()| {
                    progress(Progress::Advance(t.ne.iter().product()));
                })
        } else {
            n_quantized += 1;
            convert_tensor(
                &p.name,
                &data,
                t.ty,
                p.ty,
                &t.ne,
                importance[k].as_deref(),
                opts.cancel,
                sink,
                progress,
            )
        };
        // A failed write (a full disk): say which file.
        written.map_err(|e| match e.downcast_ref::<std::io::Error>() {
            Some(_) => e.context(format!("writing {} (tensor '{}')", out.display(), p.name)),
            None => e,
        })
    })
    .map_err(|e| {
        if e.downcast_ref::<GgufError>().is_some() {
            e.context(format!("writing {}", out.display()))
        } else {
            e
        }
    })?;
    Ok(Summary {
        n_tensors: plan.tensors.len(),
        n_quantized,
        n_fallback: plan.n_fallback,
        n_elements,
        bytes_in,
        bytes_out,
        file_size,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn is_float(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// Rows converted per slab: at most ~64 MiB of f32 at a time.
const SLAB_ELEMENTS: usize = 16 << 20;
/// Elements per parallel task (llama-quantize's `min_chunk_size`, 32·512).
const CHUNK_ELEMENTS: usize = 32 * 512;

/// Convert one tensor `data` of type `from` to type `to`, slab by slab, into `sink`.
#[allow(clippy::too_many_arguments)]
fn convert_tensor(
    name: &str,
    data: &[u8],
    from: GgmlType,
    to: GgmlType,
    ne: &[u64],
    imatrix: Option<&[f32]>,
    cancel: Option<&AtomicBool>,
    sink: &mut dyn Write,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<()> {
    let n_per_row = ne[0] as usize;
    let n_rows: usize = ne[1..].iter().product::<u64>() as usize;
    let nrows_per_matrix = ne.get(1).copied().unwrap_or(1).max(1) as usize;
    let row_in = (n_per_row / from.block_size()) * from.type_size();
    let row_out = (n_per_row / to.block_size()) * to.type_size();
    if data.len() != row_in * n_rows {
        bail!(
            "tensor '{name}': {} bytes where {} rows of {n_per_row} {} need {}",
            data.len(),
            n_rows,
            from.name(),
            row_in * n_rows
        );
    }
    let slab_rows = (SLAB_ELEMENTS / n_per_row.max(1)).clamp(1, n_rows.max(1));
    let task_rows = CHUNK_ELEMENTS.div_ceil(n_per_row.max(1)).max(1);
    let mut f32_buf = vec![0f32; slab_rows * n_per_row];
    let mut out_buf = vec![0u8; slab_rows * row_out];
    let mut r0 = 0;
    while r0 < n_rows {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            bail!("interrupted");
        }
        let rows = slab_rows.min(n_rows - r0);
        let src = &data[r0 * row_in..(r0 + rows) * row_in];
        let f = &mut f32_buf[..rows * n_per_row];
        let dst = &mut out_buf[..rows * row_out];
        f.par_chunks_mut(task_rows * n_per_row)
            .zip(src.par_chunks(task_rows * row_in))
            .try_for_each(|(f, s)| match from {
                // The same values as the reference, with F16C where there is one.
                GgmlType::F16 => {
                    autoround_kernels::matmul::f16_to_f32_row(s, f);
                    Ok(())
                }
                _ => reference::dequantize_row(from, s, f),
            })
            .with_context(|| format!("tensor '{name}': reading {}", from.name()))?;
        // Rows of one slab may span several matrices (3-D tensors): each row takes the imatrix
        // slice of its own matrix, so tasks never cross a matrix boundary.
        let tasks: Vec<(usize, usize)> = {
            let mut v = Vec::new();
            let mut r = r0;
            while r < r0 + rows {
                let matrix_end = (r / nrows_per_matrix + 1) * nrows_per_matrix;
                let end = (r + task_rows).min(r0 + rows).min(matrix_end);
                v.push((r, end));
                r = end;
            }
            v
        };
        let mut f_parts = Vec::with_capacity(tasks.len());
        let mut d_parts = Vec::with_capacity(tasks.len());
        {
            let (mut f_rest, mut d_rest) = (&f[..], &mut dst[..]);
            for &(a, b) in &tasks {
                let (fh, ft) = f_rest.split_at((b - a) * n_per_row);
                let (dh, dt) = d_rest.split_at_mut((b - a) * row_out);
                f_parts.push((a, fh));
                d_parts.push(dh);
                f_rest = ft;
                d_rest = dt;
            }
        }
        f_parts
            .into_par_iter()
            .zip(d_parts.into_par_iter())
            .try_for_each(|((a, fh), dh)| -> anyhow::Result<()> {
                let qw = imatrix.map(|m| {
                    let j = a / nrows_per_matrix;
                    &m[j * n_per_row..(j + 1) * n_per_row]
                });
                quantize_chunk(to, fh, n_per_row, qw, dh)
                    .with_context(|| format!("tensor '{name}': quantizing to {}", to.name()))
            })?;
        sink.write_all(dst)?;
        progress(Progress::Advance((rows * n_per_row) as u64));
        r0 += rows;
    }
    Ok(())
}

/// `ggml_quantize_chunk` for one chunk of rows, float targets included.
fn quantize_chunk(
    to: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
) -> anyhow::Result<()> {
    match to {
        GgmlType::F32 => {
            for (v, o) in src.iter().zip(dst.chunks_exact_mut(4)) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        // ggml_fp32_to_fp16_row and ggml_fp32_to_bf16_row_ref, in ggml-base.
        GgmlType::F16 => {
            for (v, o) in src.iter().zip(dst.chunks_exact_mut(2)) {
                o.copy_from_slice(&q::fp32_to_fp16(*v).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (v, o) in src.iter().zip(dst.chunks_exact_mut(2)) {
                o.copy_from_slice(&reference::float::fp32_to_bf16_bits(*v).to_le_bytes());
            }
        }
        _ => q::quantize_rows(to, src, n_per_row, imatrix, dst)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::mixture::TensorInfo;
    use autoround_formats::gguf::GgufFile;
    use std::borrow::Cow;

    /// A two-tensor llama model held in memory.
    struct Mem {
        md: Vec<(String, GgufValue)>,
        infos: Vec<TensorInfo>,
        data: Vec<Vec<u8>>,
    }

    impl WeightSource for Mem {
        fn describe(&self) -> String {
            "memory".into()
        }
        fn metadata(&self) -> &[(String, GgufValue)] {
            &self.md
        }
        fn tensors(&self) -> &[TensorInfo] {
            &self.infos
        }
        fn tensor_bytes(&self, i: usize) -> anyhow::Result<Cow<'_, [u8]>> {
            Ok(Cow::Borrowed(&self.data[i]))
        }
    }

    fn mem() -> Mem {
        let f32s = |n: usize, k: f32| -> Vec<u8> {
            (0..n)
                .flat_map(|i| ((i as f32 * k).sin()).to_le_bytes())
                .collect()
        };
        Mem {
            md: vec![
                (
                    "general.architecture".into(),
                    GgufValue::String("llama".into()),
                ),
                ("llama.block_count".into(), GgufValue::U32(1)),
                ("llama.attention.head_count".into(), GgufValue::U32(2)),
                ("general.file_type".into(), GgufValue::U32(0)),
            ],
            infos: vec![
                TensorInfo::new("token_embd.weight", &[64, 8], GgmlType::F32),
                TensorInfo::new("blk.0.attn_q.weight", &[64, 64], GgmlType::F32),
            ],
            data: vec![f32s(64 * 8, 0.37), f32s(64 * 64, 0.11)],
        }
    }

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("autoround-qgguf-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn cancel_leaves_nothing_and_a_full_run_reads_back() {
        let src = mem();
        let d = dir("cancel");
        let out = d.join("out.gguf");
        let stop = AtomicBool::new(true);
        let opts = |cancel| QuantizeOptions {
            mixture: Mixture::Q8_0,
            plan: PlanOptions::default(),
            imatrix: None,
            cancel,
            packed: None,
        };
        let e = quantize_to_gguf(&src, &out, &opts(Some(&stop)), &mut |_| {}).unwrap_err();
        assert!(format!("{e:#}").contains("interrupted"), "{e:#}");
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            0,
            "nothing left behind"
        );

        let mut advanced = 0;
        let s = quantize_to_gguf(&src, &out, &opts(None), &mut |p| {
            if let Progress::Advance(n) = p {
                advanced += n
            }
        })
        .unwrap();
        assert_eq!(advanced, 64 * 72);
        assert_eq!((s.n_tensors, s.n_quantized), (2, 2));
        let f = GgufFile::open(&out).unwrap();
        // llama-quantize's metadata edits: file type and quantization version moved to the end.
        let keys: Vec<&str> = f
            .header()
            .metadata
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "general.architecture",
                "llama.block_count",
                "llama.attention.head_count",
                "general.quantization_version",
                "general.file_type"
            ]
        );
        assert_eq!(f.get("general.file_type"), Some(&GgufValue::U32(7)));
        // llama.cpp's order: token_embd (no layer) first; both Q8_0, values within Q8_0's step.
        let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["token_embd.weight", "blk.0.attn_q.weight"]);
        for (t, raw) in f.tensors().iter().zip([&src.data[0], &src.data[1]]) {
            assert_eq!(t.ty, GgmlType::Q8_0);
            let mut back = vec![0f32; raw.len() / 4];
            reference::dequantize_row(t.ty, f.tensor_data(t), &mut back).unwrap();
            for (b, r) in back.iter().zip(raw.chunks_exact(4)) {
                let r = f32::from_le_bytes(r.try_into().unwrap());
                assert!((b - r).abs() <= 1.0 / 127.0 + 1e-6, "{b} vs {r}");
            }
        }
        std::fs::remove_dir_all(&d).ok();
    }
}
