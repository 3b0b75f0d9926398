//! The GGUF writer: metadata and tensors in, a GGUF file out, laid out exactly as llama.cpp's
//! `gguf_write_to_file` lays it out, so that rewriting a file llama.cpp wrote gives identical
//! bytes.
//!
//! Layout: header, metadata and tensor infos, zero padding to the alignment, then each tensor's
//! data in the order added, each padded with zeros to the alignment (the last one too). Tensor
//! offsets are assigned in that order.
//!
//! Tensor data may also be *deferred*: only its size is known when the header is written, and the
//! bytes are produced one tensor at a time by
//! [`write_streaming_to_path`](GgufWriter::write_streaming_to_path) (the quantizer does this, so a
//! model larger than memory never has to be held at once).

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::reader::{align_up, tensor_size, GgufFile};
use super::types::*;
use crate::GgmlType;

/// A tensor waiting to be written; its data may borrow a mapped file, or come later.
#[derive(Debug, Clone)]
struct PendingTensor<'a> {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: TensorBytes<'a>,
}

#[derive(Debug, Clone)]
enum TensorBytes<'a> {
    Ready(Cow<'a, [u8]>),
    /// Produced while writing; the size in bytes.
    Deferred(u64),
}

impl TensorBytes<'_> {
    fn len(&self) -> u64 {
        match self {
            TensorBytes::Ready(d) => d.len() as u64,
            TensorBytes::Deferred(n) => *n,
        }
    }
}

/// Collects metadata and tensors, then writes a GGUF file.
#[derive(Debug, Clone)]
pub struct GgufWriter<'a> {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<PendingTensor<'a>>,
}

impl<'a> GgufWriter<'a> {
    /// An empty writer for GGUF `version` (2 or 3) whose data section is aligned to `alignment`.
    ///
    /// The writer only uses `alignment`; a non-default one (not 32) must also be added by the
    /// caller as `general.alignment` (a `u32`) — [`write_to`](Self::write_to) checks that they
    /// agree, so that readers find the data where it was written.
    pub fn new(version: u32, alignment: u64) -> Self {
        GgufWriter {
            version,
            alignment,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// A writer holding `file`'s version, alignment, metadata (in order) and all its tensors (in
    /// order, borrowing their data from the map). Writing it unchanged reproduces a file written
    /// by llama.cpp byte for byte.
    pub fn from_file(file: &'a GgufFile) -> Self {
        GgufWriter {
            version: file.version,
            alignment: file.alignment,
            metadata: file.metadata.clone(),
            tensors: file
                .tensors()
                .iter()
                .map(|t| PendingTensor {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    ty: t.ty,
                    data: TensorBytes::Ready(Cow::Borrowed(file.tensor_data(t))),
                })
                .collect(),
        }
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Set a metadata value: an existing key keeps its position and gets the new value, a new key
    /// is appended.
    pub fn add_kv(&mut self, key: impl Into<String>, value: GgufValue) {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.metadata.push((key, value)),
        }
    }

    /// Remove a metadata key, returning its value.
    pub fn remove_kv(&mut self, key: &str) -> Option<GgufValue> {
        let i = self.metadata.iter().position(|(k, _)| k == key)?;
        Some(self.metadata.remove(i).1)
    }

    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The metadata, in write order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// Append a tensor. `dims` are in ggml order (row length first); `data` must be exactly the
    /// tensor's size in bytes. Rejects duplicate names, names llama.cpp cannot load (64 bytes or
    /// more), more than 4 dimensions, rows that are not whole blocks and wrong data sizes.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: Vec<u64>,
        ty: GgmlType,
        data: Cow<'a, [u8]>,
    ) -> Result<(), GgufError> {
        self.push_tensor(name.into(), dims, ty, Some(data))
    }

    /// Append a tensor whose bytes are produced later, while writing, by
    /// [`write_streaming_to_path`](Self::write_streaming_to_path). Same checks as
    /// [`add_tensor`](Self::add_tensor); returns the size in bytes the producer must write.
    pub fn add_tensor_deferred(
        &mut self,
        name: impl Into<String>,
        dims: Vec<u64>,
        ty: GgmlType,
    ) -> Result<u64, GgufError> {
        self.push_tensor(name.into(), dims, ty, None)?;
        Ok(self.tensors.last().map_or(0, |t| t.data.len()))
    }

    fn push_tensor(
        &mut self,
        name: String,
        dims: Vec<u64>,
        ty: GgmlType,
        data: Option<Cow<'a, [u8]>>,
    ) -> Result<(), GgufError> {
        let index = self.tensors.len() as u64;
        let invalid = |problem| GgufError::Invalid {
            path: None,
            location: Location::Tensor {
                index,
                name: Some(name.clone()),
            },
            problem,
        };
        if let Some(first_index) = self.tensors.iter().position(|t| t.name == name) {
            return Err(invalid(Problem::DuplicateTensor {
                first_index: first_index as u64,
            }));
        }
        if name.len() >= GGML_MAX_NAME {
            return Err(invalid(Problem::NameTooLong { found: name.len() }));
        }
        if dims.len() > GGUF_MAX_DIMS {
            return Err(invalid(Problem::TooManyDims {
                found: dims.len() as u64,
            }));
        }
        if let Some((axis, &found)) = dims.iter().enumerate().find(|(_, &d)| d > i64::MAX as u64) {
            return Err(invalid(Problem::DimTooLarge { axis, found }));
        }
        let expected = tensor_size(&dims, ty).map_err(invalid)?;
        let data = match data {
            Some(data) => {
                if expected != data.len() as u64 {
                    return Err(invalid(Problem::DataSize {
                        dims,
                        ty,
                        expected,
                        found: data.len() as u64,
                    }));
                }
                TensorBytes::Ready(data)
            }
            None => TensorBytes::Deferred(expected),
        };
        self.tensors.push(PendingTensor {
            name,
            dims,
            ty,
            data,
        });
        Ok(())
    }

    /// Number of tensors added.
    pub fn n_tensors(&self) -> usize {
        self.tensors.len()
    }

    /// Check what cannot be checked while adding: version, alignment, `general.alignment`,
    /// keys and array element types.
    fn validate(&self) -> Result<(), GgufError> {
        let header = |problem| GgufError::Invalid {
            path: None,
            location: Location::Header,
            problem,
        };
        if !(GGUF_MIN_VERSION..=GGUF_MAX_VERSION).contains(&self.version) {
            return Err(header(Problem::UnsupportedVersion {
                found: self.version,
            }));
        }
        if !self.alignment.is_power_of_two() || self.alignment > u32::MAX.into() {
            return Err(header(Problem::BadAlignment {
                found: self.alignment,
            }));
        }
        for (index, (key, value)) in self.metadata.iter().enumerate() {
            let invalid = |problem| GgufError::Invalid {
                path: None,
                location: Location::Key {
                    index: index as u64,
                    key: Some(key.clone()),
                },
                problem,
            };
            if key.is_empty() {
                return Err(invalid(Problem::EmptyKey));
            }
            if let Some(first_index) = self.metadata[..index].iter().position(|(k, _)| k == key) {
                return Err(invalid(Problem::DuplicateKey {
                    first_index: first_index as u64,
                }));
            }
            check_value(value, 0).map_err(invalid)?;
            if key == GGUF_KEY_ALIGNMENT {
                match *value {
                    GgufValue::U32(a) if u64::from(a) == self.alignment => {}
                    GgufValue::U32(a) => {
                        return Err(invalid(Problem::AlignmentMismatch {
                            key: Some(a.into()),
                            writer: self.alignment,
                        }))
                    }
                    ref other => {
                        return Err(invalid(Problem::AlignmentType {
                            found: other.value_type(),
                        }))
                    }
                }
            }
        }
        if self.alignment != GGUF_DEFAULT_ALIGNMENT && self.get(GGUF_KEY_ALIGNMENT).is_none() {
            return Err(header(Problem::AlignmentMismatch {
                key: None,
                writer: self.alignment,
            }));
        }
        Ok(())
    }

    /// Header, metadata and tensor infos, padded to the alignment.
    fn encode_header(&self) -> Result<Vec<u8>, GgufError> {
        let mut buf = Vec::new();
        buf.extend_from_slice(&GGUF_MAGIC);
        buf.extend_from_slice(&self.version.to_le_bytes());
        put_u64(&mut buf, self.tensors.len() as u64);
        put_u64(&mut buf, self.metadata.len() as u64);
        for (key, value) in &self.metadata {
            put_str(&mut buf, key);
            buf.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut buf, value);
        }
        let mut offset = 0u64;
        for (index, t) in self.tensors.iter().enumerate() {
            put_str(&mut buf, &t.name);
            buf.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for &d in &t.dims {
                put_u64(&mut buf, d);
            }
            buf.extend_from_slice(&t.ty.id().to_le_bytes());
            put_u64(&mut buf, offset);
            offset = offset
                .checked_add(t.data.len())
                .and_then(|end| align_up(end, self.alignment))
                .ok_or_else(|| GgufError::Invalid {
                    path: None,
                    location: Location::Tensor {
                        index: index as u64,
                        name: Some(t.name.clone()),
                    },
                    problem: Problem::SizeOverflow {
                        dims: t.dims.clone(),
                        ty: t.ty,
                    },
                })?;
        }
        pad(&mut buf, self.alignment);
        Ok(buf)
    }

    /// Size in bytes of the whole file.
    pub fn file_size(&self) -> Result<u64, GgufError> {
        let header = self.encode_header()?.len() as u64;
        Ok(self.tensors.iter().fold(header, |n, t| {
            n + t.data.len() + (self.alignment - t.data.len() % self.alignment) % self.alignment
        }))
    }

    /// The error for a deferred tensor that a plain write has no bytes for.
    fn missing_data(&self, index: usize) -> GgufError {
        let t = &self.tensors[index];
        GgufError::Invalid {
            path: None,
            location: Location::Tensor {
                index: index as u64,
                name: Some(t.name.clone()),
            },
            problem: Problem::DataSize {
                dims: t.dims.clone(),
                ty: t.ty,
                expected: t.data.len(),
                found: 0,
            },
        }
    }

    /// Write the file to a stream. Every tensor's data must be present (none deferred).
    pub fn write_to(&self, w: &mut impl Write) -> Result<(), GgufError> {
        self.write_with(w, None, &mut |index, _: &mut dyn Write| {
            Err(self.missing_data(index))
        })
    }

    /// Header, then each tensor: ready bytes as they are, deferred ones from `fill(index, w)`,
    /// which must write exactly the tensor's size (checked).
    fn write_with<E: From<GgufError>>(
        &self,
        w: &mut impl Write,
        path: Option<&Path>,
        fill: &mut dyn FnMut(usize, &mut dyn Write) -> Result<(), E>,
    ) -> Result<(), E> {
        let werr = |source| match path {
            Some(p) => GgufError::Io {
                path: p.to_path_buf(),
                op: "write",
                source,
            },
            None => GgufError::Write(source),
        };
        self.validate()?;
        let header = self.encode_header()?;
        w.write_all(&header).map_err(werr)?;
        for (index, t) in self.tensors.iter().enumerate() {
            match &t.data {
                TensorBytes::Ready(d) => w.write_all(d).map_err(werr)?,
                TensorBytes::Deferred(size) => {
                    let mut counted = CountingWriter {
                        inner: &mut *w,
                        n: 0,
                    };
                    fill(index, &mut counted)?;
                    if counted.n != *size {
                        return Err(GgufError::Invalid {
                            path: None,
                            location: Location::Tensor {
                                index: index as u64,
                                name: Some(t.name.clone()),
                            },
                            problem: Problem::DataSize {
                                dims: t.dims.clone(),
                                ty: t.ty,
                                expected: *size,
                                found: counted.n,
                            },
                        }
                        .into());
                    }
                }
            }
            let len = t.data.len();
            let padding = (self.alignment - len % self.alignment) % self.alignment;
            write_zeros(w, padding).map_err(werr)?;
        }
        w.flush().map_err(werr)?;
        Ok(())
    }

    /// Write the file atomically: to `<path>.tmp.<pid>` in the same directory, fsync, then rename
    /// over `path` (and fsync the directory). On error the temporary file is removed and `path` is
    /// untouched. `path` may be the file this writer borrows from: the map keeps the old contents.
    pub fn write_to_path(&self, path: &Path) -> Result<(), GgufError> {
        self.write_streaming_to_path(path, |index, _: &mut dyn Write| {
            Err(self.missing_data(index))
        })
        .map_err(|e| e.with_path(path))
    }

    /// [`write_to_path`](Self::write_to_path) with deferred tensors: `fill(index, w)` writes the
    /// bytes of deferred tensor `index` (in order, each exactly its size) when its turn comes. An
    /// error from `fill` (or a write error, e.g. a full disk) removes the temporary file and
    /// leaves `path` untouched.
    pub fn write_streaming_to_path<E: From<GgufError>>(
        &self,
        path: &Path,
        mut fill: impl FnMut(usize, &mut dyn Write) -> Result<(), E>,
    ) -> Result<(), E> {
        let io = |p: &Path, op: &'static str, source| GgufError::Io {
            path: p.to_path_buf(),
            op,
            source,
        };
        crate::atomic::write_atomically(
            path,
            |tmp| {
                // Validate before creating anything.
                self.validate()?;
                let file = File::create(tmp).map_err(|e| io(tmp, "create", e))?;
                let mut w = BufWriter::with_capacity(1 << 20, file);
                self.write_with(&mut w, Some(tmp), &mut fill)?;
                w.into_inner()
                    .map_err(|e| io(tmp, "write", e.into_error()))?;
                Ok(())
            },
            |p, op, source| E::from(io(p, op, source)),
        )
    }
}

/// Counts the bytes a deferred tensor's producer writes.
struct CountingWriter<'w, W: Write> {
    inner: &'w mut W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Check that array elements have the declared type, recursively, within the nesting limit the
/// reader accepts.
fn check_value(value: &GgufValue, depth: usize) -> Result<(), Problem> {
    if let GgufValue::Array(declared, items) = value {
        if depth >= GGUF_MAX_ARRAY_DEPTH {
            return Err(Problem::NestingTooDeep {
                max: GGUF_MAX_ARRAY_DEPTH,
            });
        }
        if items.len() as u64 > GGUF_MAX_ARRAY_LEN {
            return Err(Problem::TooLarge {
                what: "array length",
                found: items.len() as u64,
                max: GGUF_MAX_ARRAY_LEN,
            });
        }
        for (index, item) in items.iter().enumerate() {
            if item.value_type() != *declared {
                return Err(Problem::ArrayElementType {
                    declared: *declared,
                    index,
                    found: item.value_type(),
                });
            }
            check_value(item, depth + 1)?;
        }
    }
    if let GgufValue::String(s) = value {
        if s.len() as u64 > GGUF_MAX_STRING_LEN {
            return Err(Problem::TooLarge {
                what: "string length",
                found: s.len() as u64,
                max: GGUF_MAX_STRING_LEN,
            });
        }
    }
    Ok(())
}

fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_u64(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

/// A value without its type id (array elements carry none).
fn put_value(buf: &mut Vec<u8>, value: &GgufValue) {
    match value {
        GgufValue::U8(v) => buf.push(*v),
        GgufValue::I8(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::F32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::Bool(v) => buf.push(u8::from(*v)),
        GgufValue::String(s) => put_str(buf, s),
        GgufValue::Array(ty, items) => {
            buf.extend_from_slice(&ty.id().to_le_bytes());
            put_u64(buf, items.len() as u64);
            for item in items {
                put_value(buf, item);
            }
        }
        GgufValue::U64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::F64(v) => buf.extend_from_slice(&v.to_le_bytes()),
    }
}

fn write_zeros(w: &mut impl Write, mut n: u64) -> std::io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64);
        w.write_all(&ZEROS[..k as usize])?;
        n -= k;
    }
    Ok(())
}

/// Zero-pad `buf` to a multiple of `alignment`.
fn pad(buf: &mut Vec<u8>, alignment: u64) {
    let padding = (alignment - buf.len() as u64 % alignment) % alignment;
    buf.resize(buf.len() + padding as usize, 0);
}
