//! autoround-formats: the file formats autoround-cpu reads and writes.
//!
//! - [`gguf`]: zero-copy memory-mapped GGUF reader (v2, v3) and an atomic writer.
//! - [`safetensors`]: Hugging Face safetensors (single file or sharded index) over mmap.
//! - [`hf`]: `config.json` of the Llama family (llama, mistral, qwen2, qwen3).
//! - [`tokenizer`]: tokenizers from `tokenizer.json` or from GGUF metadata, chat templates.

mod atomic;
pub mod autoround;
pub mod gguf;
pub mod hf;
pub mod imatrix;
pub mod parquet;
pub mod safetensors;
pub mod tokenizer;

pub use autoround_kernels::GgmlType;
