//! Hugging Face safetensors over memory maps: a single `model.safetensors` or a sharded model
//! described by `model.safetensors.index.json`, plus an atomic writer.
//!
//! Reading is zero-copy: [`StTensor::data`] borrows straight from the mapped file. Only the
//! floating-point dtypes a Llama-family checkpoint stores its weights in are handed out
//! (`F32`, `F16`, `BF16`, and `I32` for packed integer weights); any other dtype is a [`SafetensorsError::UnsupportedDtype`] naming the
//! tensor. Malformed files never panic: every problem is an error naming the file (and the
//! tensor or key where there is one).
//!
//! ```no_run
//! use autoround_formats::safetensors::SafetensorsModel;
//! let model = SafetensorsModel::open_dir(std::path::Path::new("SmolLM2-135M"))?;
//! let t = model.tensor("model.embed_tokens.weight")?;
//! println!("{} {:?} {:?} {} bytes", t.name, t.dtype, t.shape, t.data.len());
//! # Ok::<(), autoround_formats::safetensors::SafetensorsError>(())
//! ```

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, SafeTensors, View};

use crate::GgmlType;

/// File name of a single-file checkpoint inside a model directory.
pub const SINGLE_FILE: &str = "model.safetensors";
/// File name of the shard index of a sharded checkpoint inside a model directory.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Errors of the safetensors reader and writer. Each names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    /// The file could not be opened, mapped, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file (header length, JSON header, offsets, size).
    #[error("{}: not a valid safetensors file: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    /// `model.safetensors.index.json` is malformed or inconsistent with its shards.
    #[error("{}: invalid shard index: {msg}", path.display())]
    Index { path: PathBuf, msg: String },
    /// A directory holds neither `model.safetensors` nor `model.safetensors.index.json`.
    #[error("{}: no {SINGLE_FILE} or {INDEX_FILE} in this directory", dir.display())]
    NotFound { dir: PathBuf },
    /// The requested tensor is in none of the files.
    #[error("tensor '{name}' not found in {}", path.display())]
    MissingTensor { name: String, path: PathBuf },
    /// The tensor is stored in a dtype this reader does not hand out.
    #[error("{}: tensor '{name}' has dtype {dtype}, expected F32, F16, BF16 or I32", path.display())]
    UnsupportedDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    /// A tensor given to the writer is inconsistent (size, dtype, duplicate name).
    #[error("{}: cannot write tensor '{name}': {msg}", path.display())]
    InvalidTensor {
        path: PathBuf,
        name: String,
        msg: String,
    },
}

fn io_err(path: &Path, source: std::io::Error) -> SafetensorsError {
    SafetensorsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One mapped safetensors file and its parsed header.
struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// Byte offset of the data section (8 + header length).
    data_start: usize,
    metadata: Metadata,
}

impl Shard {
    fn open(path: &Path) -> Result<Shard, SafetensorsError> {
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        let len = file.metadata().map_err(|e| io_err(path, e))?.len();
        if len < 8 {
            return Err(SafetensorsError::Format {
                path: path.to_path_buf(),
                msg: format!("file is {len} bytes, shorter than the 8-byte header length"),
            });
        }
        // SAFETY: the map is read-only and private to this process. As with every mmap-based
        // reader, the file must not be truncated or modified while it is mapped; weights files
        // are written once (atomically, see `write_safetensors`) and then only read.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| io_err(path, e))?;
        let (n, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| SafetensorsError::Format {
                path: path.to_path_buf(),
                msg: describe_st_error(&e),
            })?;
        Ok(Shard {
            path: path.to_path_buf(),
            mmap,
            data_start: 8 + n,
            metadata,
        })
    }
}

fn describe_st_error(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => "header length is missing (file shorter than 8 bytes)".into(),
        E::HeaderTooLarge => "header length is larger than the 100 MB limit".into(),
        E::InvalidHeaderLength => "header length points past the end of the file".into(),
        E::InvalidHeader(u) => format!("header is not UTF-8: {u}"),
        E::InvalidHeaderDeserialization(j) => format!("header is not valid JSON: {j}"),
        E::MetadataIncompleteBuffer => {
            "file size does not match the header (truncated or trailing bytes)".into()
        }
        E::InvalidOffset(name) => {
            format!("tensor '{name}' has data_offsets that are not contiguous and in order")
        }
        E::TensorInvalidInfo => "a tensor's data_offsets disagree with its shape and dtype".into(),
        E::ValidationOverflow => "a tensor's shape overflows".into(),
        E::MisalignedSlice => "a tensor's size is not a whole number of bytes".into(),
        other => other.to_string(),
    }
}

/// A safetensors checkpoint (one file or several shards), memory-mapped.
pub struct SafetensorsModel {
    /// What errors call this model: the single file, or the index of a sharded model.
    origin: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name -> index into `shards`, sorted by name.
    index: BTreeMap<String, usize>,
    /// `__metadata__` of the first shard (or `metadata` of the index), if any.
    metadata: HashMap<String, String>,
}

impl std::fmt::Debug for SafetensorsModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsModel")
            .field("origin", &self.origin)
            .field(
                "shards",
                &self.shards.iter().map(|s| &s.path).collect::<Vec<_>>(),
            )
            .field("tensors", &self.index.len())
            .finish()
    }
}

/// A tensor borrowed from a mapped safetensors file.
#[derive(Debug, Clone)]
pub struct StTensor<'a> {
    /// The tensor's name as stored.
    pub name: &'a str,
    /// `F32`, `F16`, `BF16`, `I32` (packed integer weights) or `I8`.
    pub dtype: GgmlType,
    /// Shape as stored: row-major, Hugging Face (PyTorch) order, outermost dimension first.
    pub shape: Vec<usize>,
    /// The raw little-endian bytes, zero-copy from the mapping (not necessarily aligned).
    pub data: &'a [u8],
}

impl StTensor<'_> {
    /// Number of elements (product of the shape; 1 for a scalar).
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The safetensors dtype for a ggml type, for the types the writer accepts.
fn dtype_for(ty: GgmlType) -> Option<Dtype> {
    Some(match ty {
        GgmlType::F32 => Dtype::F32,
        GgmlType::F16 => Dtype::F16,
        GgmlType::BF16 => Dtype::BF16,
        GgmlType::F64 => Dtype::F64,
        GgmlType::I8 => Dtype::I8,
        GgmlType::I16 => Dtype::I16,
        GgmlType::I32 => Dtype::I32,
        GgmlType::I64 => Dtype::I64,
        _ => return None,
    })
}

/// The ggml type for a safetensors dtype, for the dtypes the reader hands out.
fn ggml_for(dtype: Dtype) -> Option<GgmlType> {
    match dtype {
        Dtype::F32 => Some(GgmlType::F32),
        Dtype::F16 => Some(GgmlType::F16),
        Dtype::BF16 => Some(GgmlType::BF16),
        // packed integer weights of auto_round / GPTQ / AWQ checkpoints
        Dtype::I32 => Some(GgmlType::I32),
        // the tuner's checkpoints (integer codes)
        Dtype::I8 => Some(GgmlType::I8),
        _ => None,
    }
}

#[derive(serde::Deserialize)]
struct IndexJson {
    #[serde(default)]
    metadata: Option<HashMap<String, serde_json::Value>>,
    weight_map: HashMap<String, String>,
}

impl SafetensorsModel {
    /// Opens the checkpoint in a Hugging Face model directory: `model.safetensors.index.json`
    /// (with its shards) if present, else `model.safetensors`.
    pub fn open_dir(dir: &Path) -> Result<Self, SafetensorsError> {
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return Self::open_index(&index);
        }
        let single = dir.join(SINGLE_FILE);
        if single.is_file() {
            return Self::open_file(&single);
        }
        if !dir.is_dir() {
            return Err(io_err(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
            ));
        }
        Err(SafetensorsError::NotFound {
            dir: dir.to_path_buf(),
        })
    }

    /// Opens a single safetensors file.
    pub fn open_file(path: &Path) -> Result<Self, SafetensorsError> {
        let shard = Shard::open(path)?;
        let index = shard
            .metadata
            .offset_keys()
            .into_iter()
            .map(|name| (name, 0usize))
            .collect();
        let metadata = shard.metadata.metadata().clone().unwrap_or_default();
        Ok(SafetensorsModel {
            origin: path.to_path_buf(),
            shards: vec![shard],
            index,
            metadata,
        })
    }

    /// Opens a sharded checkpoint from its `model.safetensors.index.json`; the shards are
    /// looked up next to the index. Every tensor of the weight map must be in the shard it is
    /// mapped to.
    pub fn open_index(index_path: &Path) -> Result<Self, SafetensorsError> {
        let bad = |msg: String| SafetensorsError::Index {
            path: index_path.to_path_buf(),
            msg,
        };
        let text = std::fs::read_to_string(index_path).map_err(|e| io_err(index_path, e))?;
        let parsed: IndexJson = serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "expected {{\"weight_map\": {{tensor: shard file}}}}: {e}"
            ))
        })?;
        if parsed.weight_map.is_empty() {
            return Err(bad("weight_map is empty".into()));
        }
        let dir = index_path.parent().unwrap_or(Path::new("."));

        // Open each distinct shard once, in name order for determinism.
        let mut shard_names: Vec<&String> = parsed.weight_map.values().collect();
        shard_names.sort();
        shard_names.dedup();
        let mut shards = Vec::with_capacity(shard_names.len());
        let mut shard_of: HashMap<&str, usize> = HashMap::new();
        for name in shard_names {
            let rel = Path::new(name);
            let safe =
                !name.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
            if !safe {
                return Err(bad(format!(
                    "shard file name '{name}' must be a relative path inside the model directory"
                )));
            }
            let shard = Shard::open(&dir.join(rel))?;
            shard_of.insert(name.as_str(), shards.len());
            shards.push(shard);
        }

        let mut index = BTreeMap::new();
        for (tensor, shard_name) in &parsed.weight_map {
            let si = shard_of[shard_name.as_str()];
            if shards[si].metadata.info(tensor).is_none() {
                return Err(bad(format!(
                    "tensor '{tensor}' is mapped to shard '{shard_name}', which does not contain it"
                )));
            }
            index.insert(tensor.clone(), si);
        }

        let mut metadata: HashMap<String, String> = shards
            .first()
            .and_then(|s| s.metadata.metadata().clone())
            .unwrap_or_default();
        if let Some(m) = parsed.metadata {
            for (k, v) in m {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                metadata.entry(k).or_insert(v);
            }
        }

        Ok(SafetensorsModel {
            origin: index_path.to_path_buf(),
            shards,
            index,
            metadata,
        })
    }

    /// The file this model was opened from (the single file, or the shard index).
    pub fn path(&self) -> &Path {
        &self.origin
    }

    /// The mapped files (one, or each shard).
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.index.keys().map(String::as_str).collect()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The free-form `__metadata__` string map (empty if none).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// The tensor of this name, zero-copy. Errors name the tensor when it is missing or of an
    /// unsupported dtype.
    pub fn tensor(&self, name: &str) -> Result<StTensor<'_>, SafetensorsError> {
        let (key, &si) =
            self.index
                .get_key_value(name)
                .ok_or_else(|| SafetensorsError::MissingTensor {
                    name: name.to_string(),
                    path: self.origin.clone(),
                })?;
        let shard = &self.shards[si];
        let info = shard
            .metadata
            .info(name)
            .ok_or_else(|| SafetensorsError::MissingTensor {
                name: name.to_string(),
                path: shard.path.clone(),
            })?;
        let dtype = ggml_for(info.dtype).ok_or_else(|| SafetensorsError::UnsupportedDtype {
            path: shard.path.clone(),
            name: name.to_string(),
            dtype: format!("{:?}", info.dtype),
        })?;
        let (s, e) = info.data_offsets;
        let data = s
            .checked_add(shard.data_start)
            .zip(e.checked_add(shard.data_start))
            .and_then(|(a, b)| shard.mmap.get(a..b))
            .ok_or_else(|| SafetensorsError::Format {
                path: shard.path.clone(),
                msg: format!("tensor '{name}' data_offsets [{s}, {e}] lie outside the file"),
            })?;
        Ok(StTensor {
            name: key.as_str(),
            dtype,
            shape: info.shape.clone(),
            data,
        })
    }
}

/// A tensor handed to the safetensors serializer.
struct WriteView<'a> {
    dtype: Dtype,
    shape: &'a [usize],
    data: &'a [u8],
}

impl View for WriteView<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Writes a safetensors file atomically: to `<path>.tmp.<pid>` next to it, fsync, then rename over
/// `path` (and fsync of the directory where the platform allows it).
///
/// Each tensor is `(name, dtype, shape, little-endian data)`; dtype is one of F32, F16, BF16,
/// F64, I8, I16, I32, I64 and the data must be exactly `product(shape) * element size` bytes.
/// The header is padded to 8 bytes, tensors are laid out as the `safetensors` crate orders them.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, GgmlType, Vec<usize>, &[u8])],
    metadata: Option<HashMap<String, String>>,
) -> Result<(), SafetensorsError> {
    let invalid = |name: &str, msg: String| SafetensorsError::InvalidTensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        msg,
    };
    let mut seen = HashSet::new();
    let mut views = Vec::with_capacity(tensors.len());
    for (name, ty, shape, data) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(invalid(name, "duplicate tensor name".into()));
        }
        if name == "__metadata__" {
            return Err(invalid(name, "'__metadata__' is reserved".into()));
        }
        let dtype = dtype_for(*ty).ok_or_else(|| {
            invalid(
                name,
                format!(
                    "ggml type {} has no safetensors dtype (F32, F16, BF16, F64, I8..I64 only)",
                    ty.name()
                ),
            )
        })?;
        let want = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(ty.type_size()))
            .ok_or_else(|| invalid(name, format!("shape {shape:?} overflows")))?;
        if want != data.len() {
            return Err(invalid(
                name,
                format!(
                    "shape {shape:?} of {} needs {want} bytes, got {}",
                    ty.name(),
                    data.len()
                ),
            ));
        }
        views.push((name.as_str(), WriteView { dtype, shape, data }));
    }

    crate::atomic::write_atomically(
        path,
        |tmp| {
            safetensors::tensor::serialize_to_file(views, metadata, tmp).map_err(|e| match e {
                safetensors::SafeTensorError::IoError(io) => io_err(tmp, io),
                other => SafetensorsError::Format {
                    path: path.to_path_buf(),
                    msg: other.to_string(),
                },
            })
        },
        |p, _, e| io_err(p, e),
    )
}

/// Writes a `model.safetensors.index.json` for shards already written with
/// [`write_safetensors`]: `weight_map` maps each tensor name to its shard's file name.
pub fn write_index(
    path: &Path,
    weight_map: &BTreeMap<String, String>,
    total_size: Option<u64>,
) -> Result<(), SafetensorsError> {
    let mut root = serde_json::Map::new();
    if let Some(total) = total_size {
        root.insert(
            "metadata".into(),
            serde_json::json!({ "total_size": total }),
        );
    }
    root.insert(
        "weight_map".into(),
        serde_json::to_value(weight_map).map_err(|e| SafetensorsError::Index {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?,
    );
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(root)).map_err(|e| {
        SafetensorsError::Index {
            path: path.to_path_buf(),
            msg: e.to_string(),
        }
    })?;
    crate::atomic::write_atomically(
        path,
        |tmp| std::fs::write(tmp, format!("{text}\n")).map_err(|e| io_err(tmp, e)),
        |p, _, e| io_err(p, e),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("autoround-st-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trip_and_errors() {
        let d = tmpdir("rt");
        let p = d.join("model.safetensors");
        let a: Vec<u8> = (0..24u8).collect();
        let b: Vec<u8> = vec![7; 8];
        let c: Vec<u8> = vec![1, 2, 3, 4];
        write_safetensors(
            &p,
            &[
                ("a".into(), GgmlType::F32, vec![2, 3], &a),
                ("b".into(), GgmlType::BF16, vec![4], &b),
                ("c".into(), GgmlType::I16, vec![2], &c),
            ],
            Some(HashMap::from([("format".to_string(), "pt".to_string())])),
        )
        .unwrap();
        let m = SafetensorsModel::open_dir(&d).unwrap();
        assert_eq!(m.names(), vec!["a", "b", "c"]);
        assert_eq!(m.metadata().get("format").map(String::as_str), Some("pt"));
        let t = m.tensor("a").unwrap();
        assert_eq!(
            (t.dtype, t.shape.clone(), t.data),
            (GgmlType::F32, vec![2, 3], &a[..])
        );
        let e = m.tensor("c").unwrap_err().to_string();
        assert!(e.contains("'c'") && e.contains("I16"), "{e}");
        let e = m.tensor("nope").unwrap_err().to_string();
        assert!(
            e.contains("'nope'") && e.contains("model.safetensors"),
            "{e}"
        );
        // Writer rejects a size mismatch, naming the tensor.
        let e = write_safetensors(&p, &[("x".into(), GgmlType::F16, vec![3], &a)], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'x'") && e.contains("6 bytes"), "{e}");
        let e = SafetensorsModel::open_dir(&d.join("missing")).unwrap_err();
        assert!(matches!(e, SafetensorsError::Io { .. }), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
