//! llama.cpp importance matrices ("imatrix" files): per weight matrix, the mean squared input
//! activation of each column, which importance-aware quantization weighs its errors by.
//!
//! # The two forms
//!
//! **GGUF** (llama-imatrix's default): a GGUF file with `general.type = "imatrix"`,
//! `imatrix.datasets` (array of strings), `imatrix.chunk_count` and `imatrix.chunk_size` (u32),
//! and per weight `W` two F32 tensors: `W.in_sum2`, shape `[ne0, n_mat]` (sums of squared
//! activations per column, per expert matrix), and `W.counts`, shape `[1, n_mat]` (tokens summed).
//! Trailing dimensions of 1 are not stored (`[ne0]`, `[1]` for a dense weight).
//!
//! **Legacy** `.dat` (`--output-format dat`), little-endian:
//!
//! ```text
//! i32 n_entries (≥ 1)
//! n_entries × { i32 len | name (len bytes) | i32 ncall | i32 nval (≥ 1) | nval × f32 }
//! optional trailer: i32 chunk_count | i32 len | dataset name (len bytes)
//! ```
//!
//! where each value is `(sum / count) · ncall` and `ncall = ⌈max count / chunk_size⌉`.
//!
//! # What llama-quantize uses
//!
//! [`Imatrix::importance`] gives the per-column vector exactly as llama-quantize computes it from
//! each form (its `load_imatrix`, llama.cpp b11312): GGUF `sum / count` per matrix (1 where the
//! count is 0), legacy `value / ncall` (the value itself where `ncall ≤ 0`); llama-quantize uses
//! it for a tensor when its length is `ne[0] · ne[2]`.
//!
//! # Fidelity
//!
//! Reading follows llama.cpp's `common/imatrix-loader.cpp`; it is stricter in that a truncated
//! legacy trailer, non-UTF-8 or NUL-containing names, duplicate entries, negative `ncall` or
//! chunk counts, non-finite values, counts that are negative or not finite, an `in_sum2` whose
//! length is not a multiple of its `counts`, and GGUF files without the three `imatrix.*` keys
//! (which llama-quantize also refuses) are errors here, where llama.cpp reads something
//! undefined or fails later. Bytes after a complete legacy trailer are ignored, as llama.cpp
//! ignores them. Writing reproduces llama-imatrix's bytes: [`Imatrix::encode_gguf`] is
//! `save_imatrix`, [`Imatrix::to_legacy_form`] + [`Imatrix::encode_legacy`] is
//! `save_imatrix_legacy`, and [`Imatrix::to_gguf_form`] is `llama-imatrix --in-file x.dat -c N`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::gguf::{GgufError, GgufHeader, GgufValue, GgufValueType, GgufWriter};
use crate::GgmlType;

/// Metadata key: the calibration data sets (array of strings).
pub const KEY_DATASETS: &str = "imatrix.datasets";
/// Metadata key: chunks the matrix was computed over (u32).
pub const KEY_CHUNK_COUNT: &str = "imatrix.chunk_count";
/// Metadata key: tokens per chunk (u32).
pub const KEY_CHUNK_SIZE: &str = "imatrix.chunk_size";
/// Tensor-name suffix of the sums of squared activations.
pub const SUFFIX_SUMS: &str = ".in_sum2";
/// Tensor-name suffix of the token counts.
pub const SUFFIX_COUNTS: &str = ".counts";

/// Which form an [`Imatrix`] holds (and which file form it was read from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImatrixFormat {
    Gguf,
    Legacy,
}

impl fmt::Display for ImatrixFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImatrixFormat::Gguf => "GGUF",
            ImatrixFormat::Legacy => "legacy .dat",
        })
    }
}

/// One weight's data, as the file form stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImatrixEntry {
    /// GGUF form: sums of squared activations, `n_mat` runs of `ne0` columns. Legacy form: the
    /// stored values, `(sum / count) · ncall`.
    pub sums: Vec<f32>,
    /// GGUF form: tokens summed, one per matrix. Legacy form: one value, `ncall`.
    pub counts: Vec<i64>,
}

/// An importance matrix: entries by weight name (sorted, as both forms store them), plus the
/// file's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Imatrix {
    pub format: ImatrixFormat,
    pub entries: BTreeMap<String, ImatrixEntry>,
    /// Calibration data sets (a legacy file holds at most one).
    pub datasets: Vec<String>,
    /// Chunks the matrix was computed over (legacy: the trailer's value, 0 without a trailer).
    pub chunk_count: u32,
    /// Tokens per chunk (0 in the legacy form, which does not record it).
    pub chunk_size: u32,
}

/// What is wrong with an imatrix file (or with an [`Imatrix`] to write).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    #[error("{what} at byte {offset}: needs {needed} bytes, only {remaining} left")]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        remaining: u64,
    },
    #[error("no entries (n_entries = {found})")]
    NoEntries { found: i64 },
    #[error("{what} at byte {offset} is {found}, expected {expected}")]
    BadValue {
        what: String,
        offset: u64,
        found: i64,
        expected: &'static str,
    },
    #[error("entry #{index} name at byte {offset}: {why}")]
    BadName {
        index: usize,
        offset: u64,
        why: String,
    },
    #[error("entry '{name}' appears twice")]
    DuplicateEntry { name: String },
    #[error("entry '{name}': value #{index} is {value}, expected a finite number")]
    NonFinite {
        name: String,
        index: usize,
        value: f32,
    },
    #[error("dataset name at byte {offset} is not valid UTF-8")]
    BadDataset { offset: u64 },
    #[error("not a valid GGUF imatrix: {0}")]
    Gguf(#[source] Box<GgufError>),
    #[error("metadata key '{key}' is missing (llama-quantize needs {KEY_DATASETS}, {KEY_CHUNK_COUNT} and {KEY_CHUNK_SIZE})")]
    MissingKey { key: &'static str },
    #[error("metadata key '{key}' has type {found}, expected {expected}")]
    KeyType {
        key: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error("entry '{name}' has {present} but no {missing} tensor")]
    Unpaired {
        name: String,
        present: &'static str,
        missing: &'static str,
    },
    #[error("tensor '{tensor}' has type {ty}, expected F32")]
    TensorType { tensor: String, ty: GgmlType },
    #[error("entry '{name}': {nval} sums do not split into {ncounts} matrices")]
    CountsShape {
        name: String,
        nval: u64,
        ncounts: u64,
    },
    #[error("entry '{name}': count #{index} is {value}, expected a finite non-negative number")]
    BadCount {
        name: String,
        index: usize,
        value: f32,
    },
    #[error("{what} is {found}, which the {form} form cannot hold")]
    TooLarge {
        what: String,
        found: u64,
        form: ImatrixFormat,
    },
    #[error("this imatrix is in the {found} form; {hint}")]
    WrongForm {
        found: ImatrixFormat,
        hint: &'static str,
    },
    #[error("chunk size is 0: the counts cannot be converted to chunks")]
    NoChunkSize,
}

/// Errors reading, writing or checking an importance matrix.
#[derive(Debug, thiserror::Error)]
pub enum ImatrixError {
    /// An I/O error on a named file.
    #[error("{}: {op}: {source}", .path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The file (or the matrix to write) is not valid.
    #[error("{}{problem}", .path.as_ref().map_or(String::from("imatrix: "), |p| format!("imatrix {}: ", p.display())))]
    Invalid {
        path: Option<PathBuf>,
        problem: Problem,
    },
    /// [`Imatrix::check_model`]: a weight the model quantizes has no entry.
    #[error("imatrix has no entry for {tensor}")]
    NoEntry { tensor: String },
    /// [`Imatrix::check_model`]: an entry's length is not the weight's row length (times its
    /// expert count).
    #[error("imatrix entry for {tensor} has length {len} vs row {row}{}", if *.n_mat > 1 { format!(" × {} experts", .n_mat) } else { String::new() })]
    Length {
        tensor: String,
        len: u64,
        row: u64,
        n_mat: u64,
    },
}

impl ImatrixError {
    /// The problem, for [`ImatrixError::Invalid`].
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ImatrixError::Invalid { problem, .. } => Some(problem),
            _ => None,
        }
    }

    fn with_path(self, path: &Path) -> ImatrixError {
        match self {
            ImatrixError::Invalid {
                path: None,
                problem,
            } => ImatrixError::Invalid {
                path: Some(path.to_path_buf()),
                problem,
            },
            other => other,
        }
    }
}

impl From<Problem> for ImatrixError {
    fn from(problem: Problem) -> ImatrixError {
        ImatrixError::Invalid {
            path: None,
            problem,
        }
    }
}

impl Imatrix {
    /// Read a file in either form (GGUF when it starts with the GGUF magic). Errors name the
    /// path and the problem.
    pub fn read(path: impl AsRef<Path>) -> Result<Imatrix, ImatrixError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ImatrixError::Io {
            path: path.to_path_buf(),
            op: "read",
            source,
        })?;
        Imatrix::parse(&bytes).map_err(|e| e.with_path(path))
    }

    /// Parse a whole file's bytes in either form. Never panics; allocations are bounded by the
    /// bytes present.
    pub fn parse(bytes: &[u8]) -> Result<Imatrix, ImatrixError> {
        if bytes.starts_with(&crate::gguf::GGUF_MAGIC) {
            parse_gguf(bytes)
        } else {
            parse_legacy(bytes)
        }
        .map_err(ImatrixError::from)
    }

    /// The importance vector of one weight, exactly as llama-quantize computes it.
    pub fn importance(&self, name: &str) -> Option<Vec<f32>> {
        let e = self.entries.get(name)?;
        Some(match self.format {
            ImatrixFormat::Gguf => {
                let ne0 = e.sums.len() / e.counts.len().max(1);
                let mut out = Vec::with_capacity(e.sums.len());
                for (j, &c) in e.counts.iter().enumerate() {
                    let count = c as f32;
                    let run = &e.sums[j * ne0..(j + 1) * ne0];
                    if count > 0.0 {
                        out.extend(run.iter().map(|&s| s / count));
                    } else {
                        out.resize(out.len() + ne0, 1.0);
                    }
                }
                out
            }
            ImatrixFormat::Legacy => {
                let ncall = e.counts.first().copied().unwrap_or(0);
                if ncall > 0 {
                    let n = ncall as f32;
                    e.sums.iter().map(|&s| s / n).collect()
                } else {
                    e.sums.clone()
                }
            }
        })
    }

    /// Every entry's importance vector (see [`importance`](Self::importance)).
    pub fn importances(&self) -> BTreeMap<String, Vec<f32>> {
        self.entries
            .keys()
            .filter_map(|k| Some((k.clone(), self.importance(k)?)))
            .collect()
    }

    /// The legacy form of this matrix, as llama-imatrix's `save_imatrix_legacy` makes it from the
    /// GGUF form with chunks of [`chunk_size`](Self::chunk_size): entries whose counts are all 0
    /// are dropped, `ncall = ⌈max count / chunk_size⌉`, each value becomes
    /// `(sum / count) · ncall` (1 where the count is 0), and the trailer keeps the chunk count and
    /// the last data set. A legacy-form matrix is returned as it is.
    pub fn to_legacy_form(&self) -> Result<Imatrix, ImatrixError> {
        if self.format == ImatrixFormat::Legacy {
            return Ok(self.clone());
        }
        if self.chunk_size == 0 {
            return Err(Problem::NoChunkSize.into());
        }
        let chunk = i64::from(self.chunk_size);
        let mut entries = BTreeMap::new();
        for (name, e) in &self.entries {
            if e.counts.is_empty() || e.counts.iter().all(|&c| c == 0) {
                continue;
            }
            let max = e.counts.iter().copied().max().unwrap_or(0);
            let ncall = (max + (chunk - 1)) / chunk;
            let ncall = i32::try_from(ncall).map_err(|_| Problem::TooLarge {
                what: format!("ncall of entry '{name}'"),
                found: ncall as u64,
                form: ImatrixFormat::Legacy,
            })?;
            let per = e.sums.len() / e.counts.len();
            if per == 0 || per * e.counts.len() != e.sums.len() {
                return Err(Problem::CountsShape {
                    name: name.clone(),
                    nval: e.sums.len() as u64,
                    ncounts: e.counts.len() as u64,
                }
                .into());
            }
            let sums = e
                .sums
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let count = e.counts[i / per] as f32;
                    let (v, count) = if count == 0.0 { (1.0, 1.0) } else { (v, count) };
                    (v / count) * ncall as f32
                })
                .collect();
            entries.insert(
                name.clone(),
                ImatrixEntry {
                    sums,
                    counts: vec![i64::from(ncall)],
                },
            );
        }
        Ok(Imatrix {
            format: ImatrixFormat::Legacy,
            entries,
            datasets: self.datasets.last().cloned().into_iter().collect(),
            chunk_count: self.chunk_count,
            chunk_size: 0,
        })
    }

    /// The GGUF form of this matrix, as `llama-imatrix --in-file x.dat` reconstructs it with
    /// chunks of `chunk_size` tokens (its `-c`): sums `value · chunk_size`, counts
    /// `ncall · chunk_size`, chunk count `max count / chunk_size`. A GGUF-form matrix is returned
    /// as it is.
    pub fn to_gguf_form(&self, chunk_size: u32) -> Result<Imatrix, ImatrixError> {
        if self.format == ImatrixFormat::Gguf {
            return Ok(self.clone());
        }
        if chunk_size == 0 {
            return Err(Problem::NoChunkSize.into());
        }
        let cs = chunk_size as f32;
        let mut max_count = 0i64;
        let mut entries = BTreeMap::new();
        for (name, e) in &self.entries {
            let ncall = e.counts.first().copied().unwrap_or(0);
            let count = ncall.saturating_mul(i64::from(chunk_size));
            max_count = max_count.max(count);
            entries.insert(
                name.clone(),
                ImatrixEntry {
                    // llama.cpp accumulates into zeros: 0 + x (which also turns -0 into +0)
                    sums: e.sums.iter().map(|&s| 0.0 + s * cs).collect(),
                    counts: vec![count],
                },
            );
        }
        let chunks = max_count / i64::from(chunk_size);
        Ok(Imatrix {
            format: ImatrixFormat::Gguf,
            entries,
            datasets: self.datasets.clone(),
            chunk_count: u32::try_from(chunks).map_err(|_| Problem::TooLarge {
                what: "chunk count".into(),
                found: chunks as u64,
                form: ImatrixFormat::Gguf,
            })?,
            chunk_size,
        })
    }

    /// The GGUF file's bytes, laid out as llama-imatrix's `save_imatrix` writes them. Needs the
    /// GGUF form (convert a legacy one with [`to_gguf_form`](Self::to_gguf_form)).
    pub fn encode_gguf(&self) -> Result<Vec<u8>, ImatrixError> {
        let mut buf = Vec::new();
        self.gguf_writer()?
            .write_to(&mut buf)
            .map_err(|e| Problem::Gguf(Box::new(e)).into())
            .map(|()| buf)
    }

    fn gguf_writer(&self) -> Result<GgufWriter<'static>, ImatrixError> {
        if self.format != ImatrixFormat::Gguf {
            return Err(Problem::WrongForm {
                found: self.format,
                hint: "convert it with to_gguf_form(chunk_size) to write GGUF",
            }
            .into());
        }
        let mut w = GgufWriter::new(3, crate::gguf::GGUF_DEFAULT_ALIGNMENT);
        w.add_kv("general.type", GgufValue::String("imatrix".into()));
        w.add_kv(
            KEY_DATASETS,
            GgufValue::Array(
                GgufValueType::String,
                self.datasets
                    .iter()
                    .map(|d| GgufValue::String(d.clone()))
                    .collect(),
            ),
        );
        w.add_kv(KEY_CHUNK_COUNT, GgufValue::U32(self.chunk_count));
        w.add_kv(KEY_CHUNK_SIZE, GgufValue::U32(self.chunk_size));
        for (name, e) in &self.entries {
            let nmat = e.counts.len() as u64;
            let nval = e.sums.len() as u64;
            if nval == 0 || nmat == 0 {
                continue;
            }
            #[allow(clippy::manual_is_multiple_of)] // `%`: the workspace supports Rust 1.80
            if nval % nmat != 0 {
                return Err(Problem::CountsShape {
                    name: name.clone(),
                    nval,
                    ncounts: nmat,
                }
                .into());
            }
            // ggml_new_tensor_2d(ne0, nmat) written with ggml_n_dims: trailing 1s dropped
            let dims = |ne0: u64| if nmat > 1 { vec![ne0, nmat] } else { vec![ne0] };
            let gguf_err = |e| ImatrixError::from(Problem::Gguf(Box::new(e)));
            let sums: Vec<u8> = e.sums.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.add_tensor(
                format!("{name}{SUFFIX_SUMS}"),
                dims(nval / nmat),
                GgmlType::F32,
                Cow::Owned(sums),
            )
            .map_err(gguf_err)?;
            let counts: Vec<u8> = e
                .counts
                .iter()
                .flat_map(|&c| (c as f32).to_le_bytes())
                .collect();
            w.add_tensor(
                format!("{name}{SUFFIX_COUNTS}"),
                dims(1),
                GgmlType::F32,
                Cow::Owned(counts),
            )
            .map_err(gguf_err)?;
        }
        Ok(w)
    }

    /// The legacy `.dat` file's bytes, laid out as llama-imatrix's `save_imatrix_legacy` writes
    /// them (a GGUF-form matrix is converted by [`to_legacy_form`](Self::to_legacy_form) first).
    pub fn encode_legacy(&self) -> Result<Vec<u8>, ImatrixError> {
        if self.format != ImatrixFormat::Legacy {
            return self.to_legacy_form()?.encode_legacy();
        }
        let too_large = |what: String, found: u64| {
            ImatrixError::from(Problem::TooLarge {
                what,
                found,
                form: ImatrixFormat::Legacy,
            })
        };
        let i32_of =
            |what: &dyn Fn() -> String, n: u64| i32::try_from(n).map_err(|_| too_large(what(), n));
        let mut out = Vec::new();
        let n = i32_of(&|| "entry count".into(), self.entries.len() as u64)?;
        out.extend_from_slice(&n.to_le_bytes());
        for (name, e) in &self.entries {
            let len = i32_of(&|| format!("name length of '{name}'"), name.len() as u64)?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            let ncall = e.counts.first().copied().unwrap_or(0);
            let ncall = i32::try_from(ncall)
                .map_err(|_| too_large(format!("ncall of entry '{name}'"), ncall as u64))?;
            out.extend_from_slice(&ncall.to_le_bytes());
            let nval = i32_of(&|| format!("length of entry '{name}'"), e.sums.len() as u64)?;
            out.extend_from_slice(&nval.to_le_bytes());
            for v in &e.sums {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        let chunks = i32_of(&|| "chunk count".into(), self.chunk_count.into())?;
        out.extend_from_slice(&chunks.to_le_bytes());
        let dataset = self.datasets.last().map_or("", String::as_str);
        let len = i32_of(&|| "dataset name length".into(), dataset.len() as u64)?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(dataset.as_bytes());
        Ok(out)
    }

    /// Write the GGUF form atomically (a temporary file renamed over `path`).
    pub fn write_gguf(&self, path: impl AsRef<Path>) -> Result<(), ImatrixError> {
        let bytes = self.encode_gguf()?;
        write_bytes(path.as_ref(), &bytes)
    }

    /// Write the legacy `.dat` form atomically (converting a GGUF-form matrix first).
    pub fn write_legacy(&self, path: impl AsRef<Path>) -> Result<(), ImatrixError> {
        let bytes = self.encode_legacy()?;
        write_bytes(path.as_ref(), &bytes)
    }

    /// Check that this matrix fits a model whose tensors are `(name, dims)` (ggml order,
    /// `dims[0]` the row length), as llama-quantize will use it:
    ///
    /// - every weight that llama-imatrix records and llama-quantize quantizes with it — a
    ///   `blk.*` tensor ending in `.weight` with at least two dimensions, not a `*_norm` nor a
    ///   MoE router (`ffn_gate_inp`) — must have an entry ([`ImatrixError::NoEntry`]);
    /// - every entry for a model tensor other than `token_embd.weight` (which llama-quantize
    ///   skips) must have length `dims[0] · dims[2]` ([`ImatrixError::Length`]).
    ///
    /// Entries for tensors the model does not have are ignored, as llama-quantize ignores them.
    pub fn check_model<'a>(
        &self,
        tensors: impl IntoIterator<Item = (&'a str, &'a [u64])>,
    ) -> Result<(), ImatrixError> {
        for (name, dims) in tensors {
            let dim = |i: usize| dims.get(i).copied().unwrap_or(1);
            let n_dims = (1..dims.len().min(4))
                .rev()
                .find(|&i| dims[i] > 1)
                .map_or(1, |i| i + 1);
            match self.entries.get(name) {
                None => {
                    let recorded = name.starts_with("blk.")
                        && name.ends_with(".weight")
                        && n_dims >= 2
                        && !name.contains("_norm")
                        && !name.contains("ffn_gate_inp");
                    if recorded {
                        return Err(ImatrixError::NoEntry {
                            tensor: name.into(),
                        });
                    }
                }
                Some(e) if name != "token_embd.weight" => {
                    let (row, n_mat) = (dim(0), dim(2));
                    let len = e.sums.len() as u64;
                    if Some(len) != row.checked_mul(n_mat) {
                        return Err(ImatrixError::Length {
                            tensor: name.into(),
                            len,
                            row,
                            n_mat,
                        });
                    }
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), ImatrixError> {
    let io = |p: &Path, op: &'static str, source| ImatrixError::Io {
        path: p.to_path_buf(),
        op,
        source,
    };
    crate::atomic::write_atomically(
        path,
        |tmp| std::fs::write(tmp, bytes).map_err(|e| io(tmp, "write", e)),
        io,
    )
}

fn check_finite(name: &str, values: &[f32]) -> Result<(), Problem> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Problem::NonFinite {
            name: name.into(),
            index,
            value: values[index],
        }),
    }
}

/// A bounds-checked little-endian cursor over a legacy file.
struct Cursor<'b> {
    b: &'b [u8],
    pos: usize,
}

impl<'b> Cursor<'b> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'b [u8], Problem> {
        if n > self.remaining() {
            return Err(Problem::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n as u64,
                remaining: self.remaining() as u64,
            });
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn i32(&mut self, what: &dyn Fn() -> String) -> Result<i32, Problem> {
        let s = self.take(4, what)?;
        Ok(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
}

fn parse_legacy(bytes: &[u8]) -> Result<Imatrix, Problem> {
    let mut c = Cursor { b: bytes, pos: 0 };
    let n_entries = c.i32(&|| "entry count".into())?;
    if n_entries < 1 {
        return Err(Problem::NoEntries {
            found: n_entries.into(),
        });
    }
    let mut entries = BTreeMap::new();
    for index in 0..n_entries as usize {
        let at = c.pos as u64;
        let len = c.i32(&|| format!("entry #{index}: name length"))?;
        let len = usize::try_from(len).map_err(|_| Problem::BadValue {
            what: format!("entry #{index}: name length"),
            offset: at,
            found: len.into(),
            expected: "≥ 0",
        })?;
        let name_at = c.pos as u64;
        let raw = c.take(len, &|| format!("entry #{index}: name"))?;
        let name = std::str::from_utf8(raw).map_err(|e| Problem::BadName {
            index,
            offset: name_at,
            why: format!("not valid UTF-8 (valid up to byte {})", e.valid_up_to()),
        })?;
        if name.contains('\0') {
            return Err(Problem::BadName {
                index,
                offset: name_at,
                why: "contains a NUL byte".into(),
            });
        }
        let at = c.pos as u64;
        let ncall = c.i32(&|| format!("entry '{name}': ncall"))?;
        if ncall < 0 {
            return Err(Problem::BadValue {
                what: format!("entry '{name}': ncall"),
                offset: at,
                found: ncall.into(),
                expected: "≥ 0",
            });
        }
        let at = c.pos as u64;
        let nval = c.i32(&|| format!("entry '{name}': value count"))?;
        if nval < 1 {
            return Err(Problem::BadValue {
                what: format!("entry '{name}': value count"),
                offset: at,
                found: nval.into(),
                expected: "≥ 1",
            });
        }
        let raw = c.take(nval as usize * 4, &|| {
            format!("entry '{name}': {nval} values")
        })?;
        let sums: Vec<f32> = raw
            .chunks_exact(4)
            .map(|s| f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
            .collect();
        check_finite(name, &sums)?;
        let entry = ImatrixEntry {
            sums,
            counts: vec![ncall.into()],
        };
        if entries.insert(name.to_string(), entry).is_some() {
            return Err(Problem::DuplicateEntry { name: name.into() });
        }
    }
    let mut chunk_count = 0;
    let mut datasets = Vec::new();
    if c.remaining() > 0 {
        let at = c.pos as u64;
        let n = c.i32(&|| "trailer: chunk count".into())?;
        chunk_count = u32::try_from(n).map_err(|_| Problem::BadValue {
            what: "trailer: chunk count".into(),
            offset: at,
            found: n.into(),
            expected: "≥ 0",
        })?;
        if c.remaining() > 0 {
            let len = c.i32(&|| "trailer: dataset name length".into())?;
            if len > 0 {
                let at = c.pos as u64;
                let raw = c.take(len as usize, &|| "trailer: dataset name".into())?;
                let name =
                    std::str::from_utf8(raw).map_err(|_| Problem::BadDataset { offset: at })?;
                // llama.cpp reads it as a C string
                let name = name.split('\0').next().unwrap_or_default();
                datasets.push(name.to_string());
            }
        }
    }
    Ok(Imatrix {
        format: ImatrixFormat::Legacy,
        entries,
        datasets,
        chunk_count,
        chunk_size: 0,
    })
}

fn parse_gguf(bytes: &[u8]) -> Result<Imatrix, Problem> {
    let h = GgufHeader::parse(bytes).map_err(|e| Problem::Gguf(Box::new(e)))?;
    if h.tensors.is_empty() {
        return Err(Problem::NoEntries { found: 0 });
    }
    let key_type = |key: &'static str, v: &GgufValue, expected: &'static str| {
        let found = match v.array_type() {
            Some(t) => format!("array of {t}"),
            None => v.value_type().to_string(),
        };
        Problem::KeyType {
            key,
            found,
            expected,
        }
    };
    let datasets = match h.get(KEY_DATASETS) {
        None => return Err(Problem::MissingKey { key: KEY_DATASETS }),
        Some(v) => v
            .as_str_array()
            .ok_or_else(|| key_type(KEY_DATASETS, v, "array of string"))?
            .into_iter()
            .map(String::from)
            .collect(),
    };
    let u32_key = |key: &'static str| match h.get(key) {
        None => Err(Problem::MissingKey { key }),
        Some(GgufValue::U32(v)) => Ok(*v),
        Some(v) => Err(key_type(key, v, "u32")),
    };
    let chunk_count = u32_key(KEY_CHUNK_COUNT)?;
    let chunk_size = u32_key(KEY_CHUNK_SIZE)?;

    // pair `W.in_sum2` with `W.counts`
    let mut pairs: BTreeMap<&str, [Option<usize>; 2]> = BTreeMap::new();
    for (i, t) in h.tensors.iter().enumerate() {
        if t.name.is_empty() {
            continue;
        }
        if let Some(base) = t.name.strip_suffix(SUFFIX_SUMS) {
            pairs.entry(base).or_default()[0] = Some(i);
        } else if let Some(base) = t.name.strip_suffix(SUFFIX_COUNTS) {
            pairs.entry(base).or_default()[1] = Some(i);
        }
    }
    let floats = |i: usize| -> Result<Vec<f32>, Problem> {
        let t = &h.tensors[i];
        if t.ty != GgmlType::F32 {
            return Err(Problem::TensorType {
                tensor: t.name.clone(),
                ty: t.ty,
            });
        }
        // the parser checked that the range lies inside `bytes`
        let r = h.tensor_range(t).ok_or_else(|| Problem::Truncated {
            what: format!("tensor '{}'", t.name),
            offset: h.data_offset,
            needed: t.size,
            remaining: 0,
        })?;
        let data =
            bytes
                .get(r.start as usize..r.end as usize)
                .ok_or_else(|| Problem::Truncated {
                    what: format!("tensor '{}'", t.name),
                    offset: r.start,
                    needed: t.size,
                    remaining: (bytes.len() as u64).saturating_sub(r.start),
                })?;
        Ok(data
            .chunks_exact(4)
            .map(|s| f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
            .collect())
    };
    let mut entries = BTreeMap::new();
    for (name, pair) in pairs {
        let (sums, counts) = match pair {
            [Some(s), Some(c)] => (s, c),
            [s, _] => {
                let (present, missing) = if s.is_some() {
                    (SUFFIX_SUMS, SUFFIX_COUNTS)
                } else {
                    (SUFFIX_COUNTS, SUFFIX_SUMS)
                };
                return Err(Problem::Unpaired {
                    name: name.into(),
                    present,
                    missing,
                });
            }
        };
        let sums = floats(sums)?;
        let raw_counts = floats(counts)?;
        let (nval, ncounts) = (sums.len() as u64, raw_counts.len() as u64);
        if ncounts == 0 || nval == 0 || nval % ncounts != 0 {
            return Err(Problem::CountsShape {
                name: name.into(),
                nval,
                ncounts,
            });
        }
        check_finite(name, &sums)?;
        let mut counts = Vec::with_capacity(raw_counts.len());
        for (index, &value) in raw_counts.iter().enumerate() {
            // lround; f32 above 2^63 or negative or not finite is not a count
            if !(0.0..9.2e18).contains(&value) {
                return Err(Problem::BadCount {
                    name: name.into(),
                    index,
                    value,
                });
            }
            counts.push(value.round() as i64);
        }
        entries.insert(name.to_string(), ImatrixEntry { sums, counts });
    }
    Ok(Imatrix {
        format: ImatrixFormat::Gguf,
        entries,
        datasets,
        chunk_count,
        chunk_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Imatrix {
        let mut entries = BTreeMap::new();
        entries.insert(
            "blk.0.attn_q.weight".to_string(),
            ImatrixEntry {
                sums: vec![2.0, 4.0, 6.0, 8.0],
                counts: vec![256],
            },
        );
        entries.insert(
            "blk.0.ffn_down_exps.weight".to_string(),
            ImatrixEntry {
                sums: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                counts: vec![128, 0, 64],
            },
        );
        Imatrix {
            format: ImatrixFormat::Gguf,
            entries,
            datasets: vec!["a.txt".into(), "calib.txt".into()],
            chunk_count: 2,
            chunk_size: 128,
        }
    }

    #[test]
    fn importance_as_llama_quantize() {
        let m = sample();
        assert_eq!(
            m.importance("blk.0.attn_q.weight").unwrap(),
            [2.0 / 256.0, 4.0 / 256.0, 6.0 / 256.0, 8.0 / 256.0]
        );
        // per expert; a zero count gives 1s
        assert_eq!(
            m.importance("blk.0.ffn_down_exps.weight").unwrap(),
            [1.0 / 128.0, 2.0 / 128.0, 1.0, 1.0, 5.0 / 64.0, 6.0 / 64.0]
        );
        let legacy = m.to_legacy_form().unwrap();
        assert_eq!(legacy.entries["blk.0.attn_q.weight"].counts, [2]);
        assert_eq!(
            legacy.entries["blk.0.attn_q.weight"].sums,
            [
                2.0 / 256.0 * 2.0,
                4.0 / 256.0 * 2.0,
                6.0 / 256.0 * 2.0,
                8.0 / 256.0 * 2.0
            ]
        );
        assert_eq!(
            legacy.importance("blk.0.attn_q.weight"),
            m.importance("blk.0.attn_q.weight")
        );
        assert_eq!(legacy.datasets, ["calib.txt"]);
    }

    #[test]
    fn both_forms_round_trip() {
        let m = sample();
        let g = m.encode_gguf().unwrap();
        assert_eq!(Imatrix::parse(&g).unwrap(), m);
        let l = m.encode_legacy().unwrap();
        let back = Imatrix::parse(&l).unwrap();
        assert_eq!(back, m.to_legacy_form().unwrap());
        assert_eq!(back.encode_legacy().unwrap(), l);
        let again = back.to_gguf_form(128).unwrap();
        assert_eq!(again.entries["blk.0.attn_q.weight"].counts, [256]);
        assert_eq!(again.chunk_count, 2); // the largest count (256) in chunks of 128
        assert!(m.to_gguf_form(0).is_ok()); // already GGUF
        assert!(back.to_gguf_form(0).is_err());
        let e = back.encode_gguf().unwrap_err().to_string();
        assert!(e.contains("to_gguf_form"), "{e}");
    }

    #[test]
    fn hostile_legacy_files_are_errors() {
        let ok = sample().encode_legacy().unwrap();
        let err = |b: &[u8]| Imatrix::parse(b).unwrap_err().to_string();
        assert!(err(&[]).contains("entry count"));
        assert!(err(&0i32.to_le_bytes()).contains("no entries"));
        assert!(err(&i32::MAX.to_le_bytes()).contains("name length"));
        let mut b = ok.clone();
        b[4..8].copy_from_slice(&(-5i32).to_le_bytes());
        assert!(err(&b).contains("name length"), "{}", err(&b));
        let mut b = ok.clone();
        b[4..8].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(err(&b).contains("needs 2147483647 bytes"), "{}", err(&b));
        // value count of the first entry ("blk.0.attn_q.weight", 19 bytes)
        let at = 4 + 4 + 19 + 4;
        let mut b = ok.clone();
        b[at..at + 4].copy_from_slice(&0i32.to_le_bytes());
        assert!(err(&b).contains("value count"), "{}", err(&b));
        let mut b = ok.clone();
        b[at..at + 4].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(err(&b).contains("values"), "{}", err(&b));
        let mut b = ok.clone();
        b[at + 4..at + 8].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(err(&b).contains("finite"), "{}", err(&b));
        // no trailer, or only the chunk count: accepted, as llama.cpp accepts them
        let entries_end = ok.len() - 4 - 4 - "calib.txt".len();
        assert!(Imatrix::parse(&ok[..entries_end]).is_ok());
        assert_eq!(
            Imatrix::parse(&ok[..entries_end + 4]).unwrap().chunk_count,
            2
        );
        // a cut trailer is not
        assert!(err(&ok[..entries_end + 2]).contains("trailer"));
        assert!(err(&ok[..ok.len() - 1]).contains("dataset"));
        for cut in 0..entries_end {
            assert!(Imatrix::parse(&ok[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn hostile_gguf_files_are_errors() {
        let m = sample();
        let err = |m: &Imatrix| {
            Imatrix::parse(&m.encode_gguf().unwrap())
                .unwrap_err()
                .to_string()
        };
        let mut w = m.gguf_writer().unwrap();
        w.remove_kv(KEY_CHUNK_SIZE);
        let mut b = Vec::new();
        w.write_to(&mut b).unwrap();
        let e = Imatrix::parse(&b).unwrap_err().to_string();
        assert!(
            e.contains("imatrix.chunk_size") && e.contains("missing"),
            "{e}"
        );
        let mut w = m.gguf_writer().unwrap();
        w.add_kv(KEY_CHUNK_COUNT, GgufValue::I32(3));
        let mut b = Vec::new();
        w.write_to(&mut b).unwrap();
        let e = Imatrix::parse(&b).unwrap_err().to_string();
        assert!(e.contains("chunk_count") && e.contains("u32"), "{e}");
        let mut bad = m.clone();
        bad.entries.get_mut("blk.0.attn_q.weight").unwrap().counts = vec![-1];
        assert!(err(&bad).contains("count #0 is -1"));
        let mut bad = m.clone();
        bad.entries.get_mut("blk.0.attn_q.weight").unwrap().sums[1] = f32::INFINITY;
        assert!(err(&bad).contains("value #1"));
        // an unpaired tensor
        let mut w = GgufWriter::new(3, 32);
        w.add_kv(
            KEY_DATASETS,
            GgufValue::Array(GgufValueType::String, vec![]),
        );
        w.add_kv(KEY_CHUNK_COUNT, GgufValue::U32(1));
        w.add_kv(KEY_CHUNK_SIZE, GgufValue::U32(1));
        w.add_tensor("x.in_sum2", vec![2], GgmlType::F32, Cow::Owned(vec![0; 8]))
            .unwrap();
        let mut b = Vec::new();
        w.write_to(&mut b).unwrap();
        let e = Imatrix::parse(&b).unwrap_err().to_string();
        assert!(e.contains("'x'") && e.contains("no .counts"), "{e}");
    }

    #[test]
    fn check_model_names_the_problem() {
        let m = sample();
        let q = [4u64, 4];
        let exps = [4u64, 4, 2];
        let norm = [4u64];
        let ok: [(&str, &[u64]); 3] = [
            ("blk.0.attn_q.weight", &q),
            ("blk.0.attn_norm.weight", &norm),
            ("token_embd.weight", &q),
        ];
        m.check_model(ok).unwrap();
        let missing: [(&str, &[u64]); 1] = [("blk.3.ffn_down.weight", &q)];
        assert_eq!(
            m.check_model(missing).unwrap_err().to_string(),
            "imatrix has no entry for blk.3.ffn_down.weight"
        );
        let wrong: [(&str, &[u64]); 1] = [("blk.0.attn_q.weight", &[1536, 4])];
        assert_eq!(
            m.check_model(wrong).unwrap_err().to_string(),
            "imatrix entry for blk.0.attn_q.weight has length 4 vs row 1536"
        );
        let experts: [(&str, &[u64]); 1] = [("blk.0.ffn_down_exps.weight", &exps)];
        assert_eq!(
            m.check_model(experts).unwrap_err().to_string(),
            "imatrix entry for blk.0.ffn_down_exps.weight has length 6 vs row 4 × 2 experts"
        );
    }
}
