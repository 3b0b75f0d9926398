//! GGUF metadata values, their type ids, format limits and the error type.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::GgmlType;

/// The four magic bytes every GGUF file starts with (`47 47 55 46`).
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Oldest version read and written (v1 used 32-bit counts and is not supported).
pub const GGUF_MIN_VERSION: u32 = 2;
/// Newest version read and written. v3 only added big-endian files; little-endian v2 and v3 files
/// are laid out identically.
pub const GGUF_MAX_VERSION: u32 = 3;
/// Data-section alignment when `general.alignment` is absent.
pub const GGUF_DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key holding a non-default alignment (type `u32`, a power of two).
pub const GGUF_KEY_ALIGNMENT: &str = "general.alignment";
/// ggml's `GGML_MAX_DIMS`: a tensor has at most 4 dimensions.
pub const GGUF_MAX_DIMS: usize = 4;
/// ggml's `GGML_MAX_NAME`: llama.cpp rejects tensor names of 64 bytes or more, so the writer does too.
pub const GGML_MAX_NAME: usize = 64;
/// Longest string accepted, as llama.cpp's `GGUF_MAX_STRING_LENGTH` (1 GiB).
pub const GGUF_MAX_STRING_LEN: u64 = 1 << 30;
/// Most elements in one array, as llama.cpp's `GGUF_MAX_ARRAY_ELEMENTS`.
pub const GGUF_MAX_ARRAY_LEN: u64 = 1 << 30;
/// Deepest nesting of arrays accepted (an array of arrays of strings has depth 2), so that a
/// hostile file cannot make the recursive reader overflow the stack.
pub const GGUF_MAX_ARRAY_DEPTH: usize = 8;

/// Type id of a metadata value, as stored in the file (`u32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgufValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl GgufValueType {
    /// Every type, in id order.
    pub const ALL: [GgufValueType; 13] = [
        GgufValueType::U8,
        GgufValueType::I8,
        GgufValueType::U16,
        GgufValueType::I16,
        GgufValueType::U32,
        GgufValueType::I32,
        GgufValueType::F32,
        GgufValueType::Bool,
        GgufValueType::String,
        GgufValueType::Array,
        GgufValueType::U64,
        GgufValueType::I64,
        GgufValueType::F64,
    ];

    /// The type for a stored id, `None` for unknown ids.
    pub fn from_id(id: u32) -> Option<GgufValueType> {
        GgufValueType::ALL.get(usize::try_from(id).ok()?).copied()
    }

    /// The id stored in the file.
    pub const fn id(self) -> u32 {
        self as u32
    }

    /// llama.cpp's short name (`"u32"`, `"str"`, `"arr"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            GgufValueType::U8 => "u8",
            GgufValueType::I8 => "i8",
            GgufValueType::U16 => "u16",
            GgufValueType::I16 => "i16",
            GgufValueType::U32 => "u32",
            GgufValueType::I32 => "i32",
            GgufValueType::F32 => "f32",
            GgufValueType::Bool => "bool",
            GgufValueType::String => "str",
            GgufValueType::Array => "arr",
            GgufValueType::U64 => "u64",
            GgufValueType::I64 => "i64",
            GgufValueType::F64 => "f64",
        }
    }

    /// Encoded size of a value of this type, `None` for strings and arrays (variable size).
    pub const fn fixed_size(self) -> Option<u64> {
        match self {
            GgufValueType::U8 | GgufValueType::I8 | GgufValueType::Bool => Some(1),
            GgufValueType::U16 | GgufValueType::I16 => Some(2),
            GgufValueType::U32 | GgufValueType::I32 | GgufValueType::F32 => Some(4),
            GgufValueType::U64 | GgufValueType::I64 | GgufValueType::F64 => Some(8),
            GgufValueType::String | GgufValueType::Array => None,
        }
    }

    /// The fewest bytes a value of this type takes (a string: its `u64` length; an array: its
    /// element type and `u64` count). Used to bound counts by the bytes that remain.
    pub const fn min_encoded_size(self) -> u64 {
        match self.fixed_size() {
            Some(n) => n,
            None => match self {
                GgufValueType::String => 8,
                _ => 4 + 8,
            },
        }
    }
}

impl fmt::Display for GgufValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Element type and elements. The element type is kept so that empty arrays are rewritten
    /// identically; every element must have that type (the writer checks).
    Array(GgufValueType, Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// The type id this value is stored with.
    pub fn value_type(&self) -> GgufValueType {
        match self {
            GgufValue::U8(_) => GgufValueType::U8,
            GgufValue::I8(_) => GgufValueType::I8,
            GgufValue::U16(_) => GgufValueType::U16,
            GgufValue::I16(_) => GgufValueType::I16,
            GgufValue::U32(_) => GgufValueType::U32,
            GgufValue::I32(_) => GgufValueType::I32,
            GgufValue::F32(_) => GgufValueType::F32,
            GgufValue::Bool(_) => GgufValueType::Bool,
            GgufValue::String(_) => GgufValueType::String,
            GgufValue::Array(..) => GgufValueType::Array,
            GgufValue::U64(_) => GgufValueType::U64,
            GgufValue::I64(_) => GgufValueType::I64,
            GgufValue::F64(_) => GgufValueType::F64,
        }
    }

    /// Any integer type holding a non-negative value (not `Bool`, not floats).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type whose value fits in `i64` (not `Bool`, not floats).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => i64::try_from(v).ok(),
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            _ => None,
        }
    }

    /// [`as_u64`](Self::as_u64) narrowed to `u32`.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_u64().and_then(|v| u32::try_from(v).ok())
    }

    /// Floats and integers, converted to `f64` (64-bit integers may round).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            GgufValue::U64(v) => Some(v as f64),
            GgufValue::I64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(_, items) => Some(items),
            _ => None,
        }
    }

    /// The element type of an array.
    pub fn array_type(&self) -> Option<GgufValueType> {
        match self {
            GgufValue::Array(ty, _) => Some(*ty),
            _ => None,
        }
    }

    /// The elements of an array of strings (an empty array counts only if typed as strings);
    /// `None` for anything else.
    pub fn as_str_array(&self) -> Option<Vec<&str>> {
        match self {
            GgufValue::Array(GgufValueType::String, items) => {
                items.iter().map(GgufValue::as_str).collect()
            }
            _ => None,
        }
    }
}

/// Where in a GGUF file (or in a writer's input) a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Magic, version and the two counts.
    Header,
    /// Metadata entry number `index` (0-based); `key` once it has been read.
    Key { index: u64, key: Option<String> },
    /// Tensor info number `index` (0-based); `name` once it has been read.
    Tensor { index: u64, name: Option<String> },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Header => f.write_str("header"),
            Location::Key {
                index,
                key: Some(k),
            } => write!(f, "key #{index} '{k}'"),
            Location::Key { index, key: None } => write!(f, "key #{index}"),
            Location::Tensor {
                index,
                name: Some(n),
            } => write!(f, "tensor #{index} '{n}'"),
            Location::Tensor { index, name: None } => write!(f, "tensor #{index}"),
        }
    }
}

/// What is wrong, with what was expected and what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    #[error("bad magic {found:02x?}, expected \"GGUF\" (47 47 55 46)")]
    BadMagic { found: [u8; 4] },
    #[error("{}", version_message(*.found))]
    UnsupportedVersion { found: u32 },
    #[error("{what}: needs {needed} bytes, only {remaining} left")]
    Truncated {
        what: &'static str,
        needed: u64,
        remaining: u64,
    },
    #[error("{what}: {found} exceeds the limit of {max}")]
    TooLarge {
        what: &'static str,
        found: u64,
        max: u64,
    },
    #[error("{what} is not valid UTF-8 (valid up to byte {valid_up_to})")]
    InvalidUtf8 {
        what: &'static str,
        valid_up_to: usize,
    },
    #[error("empty key, expected a non-empty name")]
    EmptyKey,
    #[error("duplicate key, first defined by key #{first_index}")]
    DuplicateKey { first_index: u64 },
    #[error("unknown value type id {found}, expected 0..=12")]
    UnknownValueType { found: u32 },
    #[error("arrays nested deeper than {max} levels")]
    NestingTooDeep { max: usize },
    #[error("array element type is {declared} but element #{index} is {found}")]
    ArrayElementType {
        declared: GgufValueType,
        index: usize,
        found: GgufValueType,
    },
    #[error("general.alignment must have type u32, found {found}")]
    AlignmentType { found: GgufValueType },
    #[error("alignment must be a nonzero power of two, found {found}")]
    BadAlignment { found: u64 },
    #[error(
        "general.alignment is {}, but the writer aligns to {writer} \
         (set general.alignment to a u32, or leave it out for 32)",
        .key.map_or("absent".to_string(), |v| v.to_string())
    )]
    AlignmentMismatch { key: Option<u64>, writer: u64 },
    #[error("duplicate tensor name, first used by tensor #{first_index}")]
    DuplicateTensor { first_index: u64 },
    #[error("tensor name is {found} bytes, llama.cpp accepts at most {}", GGML_MAX_NAME - 1)]
    NameTooLong { found: usize },
    #[error("{found} dimensions, expected at most {GGUF_MAX_DIMS}")]
    TooManyDims { found: u64 },
    #[error(
        "dimension {axis} is {found}, expected at most {} (i64::MAX)",
        i64::MAX
    )]
    DimTooLarge { axis: usize, found: u64 },
    #[error("unknown or removed ggml type id {found}")]
    UnknownGgmlType { found: u32 },
    #[error("{ty}: row of {ne0} elements is not a multiple of the block size {block}")]
    RaggedRow { ty: GgmlType, ne0: u64, block: u64 },
    #[error("shape {dims:?} of type {ty}: element count or byte size overflows")]
    SizeOverflow { dims: Vec<u64>, ty: GgmlType },
    #[error("data offset {found} is not a multiple of the alignment {alignment}")]
    MisalignedOffset { found: u64, alignment: u64 },
    #[error(
        "data of {size} bytes at offset {offset} of the data section (which starts at byte \
         {data_offset}) ends past the end of the file ({file_len} bytes)"
    )]
    DataOutOfRange {
        data_offset: u64,
        offset: u64,
        size: u64,
        file_len: u64,
    },
    #[error("data is {found} bytes, shape {dims:?} of type {ty} needs {expected}")]
    DataSize {
        dims: Vec<u64>,
        ty: GgmlType,
        expected: u64,
        found: u64,
    },
}

fn version_message(found: u32) -> String {
    if found == 1 {
        "GGUF version 1 is not supported (it used 32-bit counts), expected version 2 or 3".into()
    } else if found != 0 && found & 0xFFFF == 0 {
        format!(
            "GGUF version {found} (0x{found:08x}) is not supported: this looks like a big-endian \
             file, expected a little-endian version 2 or 3"
        )
    } else {
        format!("GGUF version {found} is not supported, expected 2 or 3")
    }
}

/// Errors reading or writing GGUF.
///
/// Every variant names the file when it is known (parsing bytes with
/// [`GgufHeader::parse`](super::GgufHeader::parse) does not know it; [`GgufFile`](super::GgufFile)
/// adds it), the key or tensor, the byte offset where that applies, and what was expected and
/// found (in [`Problem`]).
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// An I/O error on a named file; `op` says what was being done.
    #[error("{}: {op}: {source}", .path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// An I/O error writing to a stream with no file name ([`GgufWriter::write_to`](super::GgufWriter::write_to)).
    #[error("writing GGUF stream: {0}")]
    Write(#[source] std::io::Error),
    /// The file is not valid GGUF.
    #[error("{}: {location}, at byte offset {offset}: {problem}", file_label(.path))]
    Malformed {
        path: Option<PathBuf>,
        offset: u64,
        location: Location,
        problem: Problem,
    },
    /// The writer was given something it cannot write.
    #[error("{}: cannot write {location}: {problem}", file_label(.path))]
    Invalid {
        path: Option<PathBuf>,
        location: Location,
        problem: Problem,
    },
}

fn file_label(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None => "GGUF".to_string(),
    }
}

impl GgufError {
    /// The problem, for [`Malformed`](GgufError::Malformed) and [`Invalid`](GgufError::Invalid).
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            GgufError::Malformed { problem, .. } | GgufError::Invalid { problem, .. } => {
                Some(problem)
            }
            _ => None,
        }
    }

    /// The file this error is about, if known.
    pub fn path(&self) -> Option<&Path> {
        match self {
            GgufError::Io { path, .. } => Some(path),
            GgufError::Malformed { path, .. } | GgufError::Invalid { path, .. } => path.as_deref(),
            GgufError::Write(_) => None,
        }
    }

    /// Attach `path` where the error does not name a file yet.
    pub fn with_path(self, path: &Path) -> GgufError {
        match self {
            GgufError::Malformed {
                path: None,
                offset,
                location,
                problem,
            } => GgufError::Malformed {
                path: Some(path.to_path_buf()),
                offset,
                location,
                problem,
            },
            GgufError::Invalid {
                path: None,
                location,
                problem,
            } => GgufError::Invalid {
                path: Some(path.to_path_buf()),
                location,
                problem,
            },
            GgufError::Write(source) => GgufError::Io {
                path: path.to_path_buf(),
                op: "write",
                source,
            },
            other => other,
        }
    }
}
