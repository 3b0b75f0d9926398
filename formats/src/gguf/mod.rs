//! GGUF, the file format of llama.cpp: a zero-copy memory-mapped reader and an atomic writer.
//!
//! # The format (little-endian throughout)
//!
//! ```text
//! magic "GGUF" (47 47 55 46) | u32 version (2 or 3) | u64 tensor_count | u64 kv_count
//! kv_count × metadata:   string key | u32 value type | value
//! tensor_count × info:   string name | u32 n_dims (≤ 4) | n_dims × u64 ne (ne[0] = row length
//!                        first) | u32 ggml type | u64 offset (from the data section's start)
//! zero padding to the alignment (`general.alignment`, a u32 power of two; default 32)
//! data section:          each tensor's data at its offset (a multiple of the alignment),
//!                        zero-padded to the alignment
//! ```
//!
//! A string is a `u64` byte length and UTF-8 bytes (no terminator). A value is stored by its
//! type ([`GgufValueType`]): fixed-size scalars (a bool is one byte), a string, or an array: `u32`
//! element type, `u64` count, then the elements without type ids (arrays may nest). A tensor's size
//! is its ggml row bytes (`ne[0]` must be whole blocks of its [`GgmlType`](crate::GgmlType)) times
//! the other dimensions. llama.cpp's `ggml/src/gguf.cpp` is the reference; the reader rejects what
//! it rejects, except that: strings must also be valid UTF-8 (we hand out `String`s); tensor data
//! need only be aligned and inside the file, not packed in info order; tensor names of 64 bytes or
//! more are read (the writer refuses them, as llama.cpp cannot load them); and arrays may nest (up
//! to [`GGUF_MAX_ARRAY_DEPTH`] levels, as gguf-py allows).
//!
//! # Why our own reader and writer
//!
//! The `gguf-rs` crate was evaluated: it copies the whole mapped file (`mmap[4..].to_vec()`) to
//! parse it and returns no tensor views, so tensors could not borrow the map. Here [`GgufFile`]
//! touches only the header's pages at open and [`GgufFile::tensor_data`] returns slices of the map,
//! and [`GgufWriter`] can write tensors borrowed from such a map (`Cow::Borrowed`) without copying
//! them. [`GgufWriter::from_file`] followed by [`GgufWriter::write_to_path`] reproduces a file
//! written by llama.cpp byte for byte.
//!
//! Parsing never panics and never allocates by an untrusted count beyond what the remaining bytes
//! can hold; see [`reader`].
pub mod reader;
pub mod types;
pub mod writer;

#[cfg(test)]
mod tests;

pub use reader::{GgufFile, GgufHeader, TensorInfo};
pub use types::{
    GgufError, GgufValue, GgufValueType, Location, Problem, GGUF_DEFAULT_ALIGNMENT,
    GGUF_KEY_ALIGNMENT, GGUF_MAGIC, GGUF_MAX_ARRAY_DEPTH, GGUF_MAX_DIMS,
};
pub use writer::GgufWriter;
