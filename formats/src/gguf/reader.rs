//! The GGUF reader: [`GgufHeader::parse`] validates a whole file's bytes, [`GgufFile`] maps a file
//! and hands out tensor data as zero-copy slices of the map.
//!
//! Parsing is defensive: every read is bounds-checked, every size computation is checked for
//! overflow, counts and lengths are bounded by the bytes that remain before anything is allocated
//! for them, and array nesting is capped at [`GGUF_MAX_ARRAY_DEPTH`]. A malformed file gives a
//! [`GgufError::Malformed`] naming the key or tensor, the byte offset and what was expected.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::types::*;
use crate::GgmlType;

/// One tensor's entry in the tensor-info table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as stored: ggml order, `ne[0]` (the row length, contiguous) first.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Start of the data, relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes (ggml row bytes times the other dimensions).
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements (1 for a tensor with no dimensions). Never overflows for infos read by
    /// [`GgufHeader::parse`]; saturates for hand-made ones.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |n, &d| n.saturating_mul(d))
    }
}

/// A parsed GGUF header: version, metadata, tensor infos and the data-section layout.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, GgufValue)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Data-section alignment (`general.alignment`, default 32).
    pub alignment: u64,
    /// Absolute byte offset of the data section (the end of the header, padded to `alignment`).
    pub data_offset: u64,
}

impl GgufHeader {
    /// Parse header, metadata and tensor infos from the whole file's bytes.
    ///
    /// Validates everything the format requires (see the [module docs](super)) and that every
    /// tensor's data range lies inside `bytes`; tensor data itself is never read.
    pub fn parse(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
        Parser::new(bytes).header()
    }

    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The info of a tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// `general.architecture` (`"llama"`, `"qwen2"`, ...), if present and a string.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(GgufValue::as_str)
    }

    /// Absolute byte range of a tensor's data in the file.
    pub fn tensor_range(&self, t: &TensorInfo) -> Option<std::ops::Range<u64>> {
        let start = self.data_offset.checked_add(t.offset)?;
        Some(start..start.checked_add(t.size)?)
    }
}

/// A memory-mapped GGUF file with its parsed header. Tensor data are borrowed from the map.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    header: GgufHeader,
}

impl GgufFile {
    /// Map the file and parse its header. Only the header's pages are touched; tensor data are
    /// read from the map when used. Errors name the path.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |op: &'static str| {
            let path = path.clone();
            move |source| GgufError::Io { path, op, source }
        };
        let file = File::open(&path).map_err(io("open"))?;
        // SAFETY: the map is only read. Like every mmap-based model loader (llama.cpp included)
        // we rely on the file not being truncated or modified while it is mapped; our own writer
        // never modifies a file in place (it writes a temporary file and renames it over).
        let mmap = unsafe { Mmap::map(&file) }.map_err(io("mmap"))?;
        let header = GgufHeader::parse(&mmap).map_err(|e| e.with_path(&path))?;
        Ok(GgufFile { path, mmap, header })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.header.get(key)
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensor(name)
    }

    /// The data of a tensor of this file: a zero-copy slice of the map (its range was validated
    /// at open).
    ///
    /// # Panics
    /// If `t` is not one of this file's tensor infos and its range lies outside the file.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        self.try_tensor_data(t).unwrap_or_else(|| {
            panic!(
                "tensor '{}' (offset {}, {} bytes) lies outside {}: not a tensor of this file",
                t.name,
                t.offset,
                t.size,
                self.path.display()
            )
        })
    }

    /// [`tensor_data`](Self::tensor_data), or `None` if `t`'s range lies outside the file.
    pub fn try_tensor_data(&self, t: &TensorInfo) -> Option<&[u8]> {
        let r = self.header.tensor_range(t)?;
        let start = usize::try_from(r.start).ok()?;
        let end = usize::try_from(r.end).ok()?;
        self.mmap.get(start..end)
    }

    /// The whole mapped file.
    pub fn file_bytes(&self) -> &[u8] {
        &self.mmap
    }
}

impl Deref for GgufFile {
    type Target = GgufHeader;

    fn deref(&self) -> &GgufHeader {
        &self.header
    }
}

/// A failed read: where and what; the caller adds the [`Location`].
struct Fail {
    offset: u64,
    problem: Problem,
}

impl Fail {
    fn at(self, location: Location) -> GgufError {
        GgufError::Malformed {
            path: None,
            offset: self.offset,
            location,
            problem: self.problem,
        }
    }
}

/// A bounds-checked little-endian cursor over the file's bytes.
struct Parser<'b> {
    bytes: &'b [u8],
    pos: usize,
}

/// Fewest bytes of one metadata entry: key length, type id, a 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Fewest bytes of one tensor info: name length, n_dims, type id, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

impl<'b> Parser<'b> {
    fn new(bytes: &'b [u8]) -> Self {
        Parser { bytes, pos: 0 }
    }

    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn fail(&self, problem: Problem) -> Fail {
        Fail {
            offset: self.offset(),
            problem,
        }
    }

    /// Take `n` bytes, or fail (without moving) if fewer remain.
    fn take(&mut self, n: u64, what: &'static str) -> Result<&'b [u8], Fail> {
        let truncated = |p: &Self| {
            p.fail(Problem::Truncated {
                what,
                needed: n,
                remaining: p.remaining(),
            })
        };
        let len = usize::try_from(n).map_err(|_| truncated(self))?;
        let end = self.pos.checked_add(len).ok_or_else(|| truncated(self))?;
        let s = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| truncated(self))?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Fail> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Fail> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Fail> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, Fail> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Fail unless `count` items of at least `min_size` bytes each can fit in what remains.
    fn check_count(&self, count: u64, min_size: u64, what: &'static str) -> Result<(), Fail> {
        let needed = count.saturating_mul(min_size);
        if needed > self.remaining() {
            return Err(self.fail(Problem::Truncated {
                what,
                needed,
                remaining: self.remaining(),
            }));
        }
        Ok(())
    }

    fn string(&mut self, what: &'static str) -> Result<String, Fail> {
        let start = self.pos;
        let len = self.u64(what)?;
        if len > GGUF_MAX_STRING_LEN {
            self.pos = start;
            return Err(self.fail(Problem::TooLarge {
                what,
                found: len,
                max: GGUF_MAX_STRING_LEN,
            }));
        }
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(Fail {
                offset: (start + 8) as u64,
                problem: Problem::InvalidUtf8 {
                    what,
                    valid_up_to: e.valid_up_to(),
                },
            }),
        }
    }

    fn value_type(&mut self) -> Result<GgufValueType, Fail> {
        let at = self.offset();
        let id = self.u32("value type")?;
        GgufValueType::from_id(id).ok_or(Fail {
            offset: at,
            problem: Problem::UnknownValueType { found: id },
        })
    }

    /// A value of type `ty`; `depth` is the number of enclosing arrays.
    fn value(&mut self, ty: GgufValueType, depth: usize) -> Result<GgufValue, Fail> {
        Ok(match ty {
            GgufValueType::U8 => GgufValue::U8(self.u8("u8 value")?),
            GgufValueType::I8 => GgufValue::I8(i8::from_le_bytes(self.array("i8 value")?)),
            GgufValueType::U16 => GgufValue::U16(u16::from_le_bytes(self.array("u16 value")?)),
            GgufValueType::I16 => GgufValue::I16(i16::from_le_bytes(self.array("i16 value")?)),
            GgufValueType::U32 => GgufValue::U32(self.u32("u32 value")?),
            GgufValueType::I32 => GgufValue::I32(i32::from_le_bytes(self.array("i32 value")?)),
            GgufValueType::F32 => GgufValue::F32(f32::from_le_bytes(self.array("f32 value")?)),
            // Like llama.cpp: any nonzero byte is true (the writer writes 0 or 1).
            GgufValueType::Bool => GgufValue::Bool(self.u8("bool value")? != 0),
            GgufValueType::String => GgufValue::String(self.string("string value")?),
            GgufValueType::U64 => GgufValue::U64(self.u64("u64 value")?),
            GgufValueType::I64 => GgufValue::I64(i64::from_le_bytes(self.array("i64 value")?)),
            GgufValueType::F64 => GgufValue::F64(f64::from_le_bytes(self.array("f64 value")?)),
            GgufValueType::Array => {
                if depth >= GGUF_MAX_ARRAY_DEPTH {
                    return Err(self.fail(Problem::NestingTooDeep {
                        max: GGUF_MAX_ARRAY_DEPTH,
                    }));
                }
                let elem = self.value_type()?;
                let count_at = self.offset();
                let count = self.u64("array length")?;
                if count > GGUF_MAX_ARRAY_LEN {
                    return Err(Fail {
                        offset: count_at,
                        problem: Problem::TooLarge {
                            what: "array length",
                            found: count,
                            max: GGUF_MAX_ARRAY_LEN,
                        },
                    });
                }
                self.check_count(count, elem.min_encoded_size(), "array elements")?;
                // `count` now is at most the remaining bytes, so this allocation is bounded by
                // the input's size.
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem, depth + 1)?);
                }
                GgufValue::Array(elem, items)
            }
        })
    }

    fn header(mut self) -> Result<GgufHeader, GgufError> {
        let at_header = |f: Fail| f.at(Location::Header);

        let magic = self.array::<4>("magic").map_err(at_header)?;
        if magic != GGUF_MAGIC {
            return Err(Fail {
                offset: 0,
                problem: Problem::BadMagic { found: magic },
            }
            .at(Location::Header));
        }
        let version = self.u32("version").map_err(at_header)?;
        if !(GGUF_MIN_VERSION..=GGUF_MAX_VERSION).contains(&version) {
            return Err(Fail {
                offset: 4,
                problem: Problem::UnsupportedVersion { found: version },
            }
            .at(Location::Header));
        }
        let n_tensors = self.u64("tensor count").map_err(at_header)?;
        let n_kv = self.u64("metadata count").map_err(at_header)?;
        // Every entry takes some bytes: bound both counts before allocating for them.
        let min_total = n_kv
            .saturating_mul(MIN_KV_BYTES)
            .saturating_add(n_tensors.saturating_mul(MIN_TENSOR_INFO_BYTES));
        if min_total > self.remaining() {
            return Err(self
                .fail(Problem::Truncated {
                    what: "metadata and tensor infos",
                    needed: min_total,
                    remaining: self.remaining(),
                })
                .at(Location::Header));
        }

        let (metadata, key_offsets) = self.metadata(n_kv)?;
        let alignment = alignment(&metadata, &key_offsets)?;
        let (tensors, info_offsets) = self.tensor_infos(n_tensors)?;

        // The data section starts at the end of the header, padded to the alignment.
        // (Cannot overflow: the offset is at most the length of a slice, far below u64::MAX.)
        let data_offset = align_up(self.offset(), alignment).unwrap_or(u64::MAX);
        let file_len = self.bytes.len() as u64;
        for (index, (t, &info_at)) in tensors.iter().zip(&info_offsets).enumerate() {
            let location = || Location::Tensor {
                index: index as u64,
                name: Some(t.name.clone()),
            };
            if t.offset % alignment != 0 {
                return Err(Fail {
                    offset: info_at,
                    problem: Problem::MisalignedOffset {
                        found: t.offset,
                        alignment,
                    },
                }
                .at(location()));
            }
            let in_file = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.size))
                .is_some_and(|end| end <= file_len);
            if !in_file {
                return Err(Fail {
                    offset: info_at,
                    problem: Problem::DataOutOfRange {
                        data_offset,
                        offset: t.offset,
                        size: t.size,
                        file_len,
                    },
                }
                .at(location()));
            }
        }

        Ok(GgufHeader {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }

    /// Metadata entries, and the offset of each one's key (for error messages).
    #[allow(clippy::type_complexity)]
    fn metadata(&mut self, n_kv: u64) -> Result<(Vec<(String, GgufValue)>, Vec<u64>), GgufError> {
        // Counts are bounded by the remaining bytes (checked in `header`).
        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut key_offsets = Vec::with_capacity(n_kv as usize);
        let mut seen: HashMap<String, u64> = HashMap::with_capacity(n_kv as usize);
        for index in 0..n_kv {
            let key_at = self.offset();
            let key = self
                .string("key")
                .map_err(|f| f.at(Location::Key { index, key: None }))?;
            let location = || Location::Key {
                index,
                key: Some(key.clone()),
            };
            let fail_at_key = |problem| Fail {
                offset: key_at,
                problem,
            };
            if key.is_empty() {
                return Err(fail_at_key(Problem::EmptyKey).at(location()));
            }
            if let Some(&first_index) = seen.get(&key) {
                return Err(fail_at_key(Problem::DuplicateKey { first_index }).at(location()));
            }
            let ty = self.value_type().map_err(|f| f.at(location()))?;
            let value = self.value(ty, 0).map_err(|f| f.at(location()))?;
            seen.insert(key.clone(), index);
            metadata.push((key, value));
            key_offsets.push(key_at);
        }
        Ok((metadata, key_offsets))
    }

    /// Tensor infos, and the offset of each one's `offset` field (for error messages).
    fn tensor_infos(&mut self, n_tensors: u64) -> Result<(Vec<TensorInfo>, Vec<u64>), GgufError> {
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut info_offsets = Vec::with_capacity(n_tensors as usize);
        let mut seen: HashMap<String, u64> = HashMap::with_capacity(n_tensors as usize);
        for index in 0..n_tensors {
            let name_at = self.offset();
            let name = self
                .string("tensor name")
                .map_err(|f| f.at(Location::Tensor { index, name: None }))?;
            let location = || Location::Tensor {
                index,
                name: Some(name.clone()),
            };
            if let Some(&first_index) = seen.get(&name) {
                return Err(Fail {
                    offset: name_at,
                    problem: Problem::DuplicateTensor { first_index },
                }
                .at(location()));
            }
            let (dims, ty, offset_at, offset, size) =
                self.tensor_info_rest().map_err(|f| f.at(location()))?;
            seen.insert(name.clone(), index);
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                size,
            });
            info_offsets.push(offset_at);
        }
        Ok((tensors, info_offsets))
    }

    /// The part of a tensor info after its name.
    #[allow(clippy::type_complexity)]
    fn tensor_info_rest(&mut self) -> Result<(Vec<u64>, GgmlType, u64, u64, u64), Fail> {
        let n_dims_at = self.offset();
        let n_dims = self.u32("dimension count")?;
        if n_dims as usize > GGUF_MAX_DIMS {
            return Err(Fail {
                offset: n_dims_at,
                problem: Problem::TooManyDims {
                    found: n_dims.into(),
                },
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for axis in 0..n_dims as usize {
            let at = self.offset();
            let d = self.u64("dimension")?;
            if d > i64::MAX as u64 {
                return Err(Fail {
                    offset: at,
                    problem: Problem::DimTooLarge { axis, found: d },
                });
            }
            dims.push(d);
        }
        let ty_at = self.offset();
        let id = self.u32("ggml type")?;
        let ty = GgmlType::from_id(id).ok_or(Fail {
            offset: ty_at,
            problem: Problem::UnknownGgmlType { found: id },
        })?;
        let size = tensor_size(&dims, ty).map_err(|problem| Fail {
            offset: n_dims_at,
            problem,
        })?;
        let offset_at = self.offset();
        let offset = self.u64("data offset")?;
        Ok((dims, ty, offset_at, offset, size))
    }
}

/// Bytes of a tensor of shape `dims` (ggml order) and type `ty`, checking that rows are whole
/// blocks and that neither the element count (which must fit in `i64`, as in ggml) nor the size
/// overflows.
pub fn tensor_size(dims: &[u64], ty: GgmlType) -> Result<u64, Problem> {
    let overflow = || Problem::SizeOverflow {
        dims: dims.to_vec(),
        ty,
    };
    let n_elements = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
    match n_elements {
        Some(n) if n <= i64::MAX as u64 => {}
        _ => return Err(overflow()),
    }
    let ne0 = dims.first().copied().unwrap_or(1);
    let block = ty.block_size() as u64;
    if ne0 % block != 0 {
        return Err(Problem::RaggedRow { ty, ne0, block });
    }
    let row = ty.row_bytes(ne0).ok_or_else(overflow)?;
    dims.iter()
        .skip(1)
        .try_fold(row, |n, &d| n.checked_mul(d))
        .ok_or_else(overflow)
}

/// `general.alignment`, checked: type u32, a nonzero power of two. Default 32.
fn alignment(metadata: &[(String, GgufValue)], key_offsets: &[u64]) -> Result<u64, GgufError> {
    let Some((index, (key, value))) = metadata
        .iter()
        .enumerate()
        .find(|(_, (k, _))| k == GGUF_KEY_ALIGNMENT)
    else {
        return Ok(GGUF_DEFAULT_ALIGNMENT);
    };
    let fail = |problem| GgufError::Malformed {
        path: None,
        offset: key_offsets.get(index).copied().unwrap_or(0),
        location: Location::Key {
            index: index as u64,
            key: Some(key.clone()),
        },
        problem,
    };
    match *value {
        GgufValue::U32(a) if a.is_power_of_two() => Ok(a.into()),
        GgufValue::U32(a) => Err(fail(Problem::BadAlignment { found: a.into() })),
        ref other => Err(fail(Problem::AlignmentType {
            found: other.value_type(),
        })),
    }
}

/// `n` rounded up to a multiple of `alignment` (a power of two), `None` on overflow.
pub(crate) fn align_up(n: u64, alignment: u64) -> Option<u64> {
    let mask = alignment - 1;
    n.checked_add(mask).map(|m| m & !mask)
}
