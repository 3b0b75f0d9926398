//! Conversion between Hugging Face folders (config.json, safetensors, tokenizer files) and GGUF:
//! `autoround-cpu convert`.
//!
//! - [`hf_to_gguf`]: [`HfSource`], a Hugging Face folder as a
//!   [`WeightSource`](crate::quantize::source::WeightSource) that yields what llama.cpp's
//!   `convert_hf_to_gguf.py` would write (names, Q/K permutation, types, metadata, tokenizer);
//!   `convert --to gguf` streams it into a GGUF file.
//! - [`gguf_to_hf`]: a GGUF file dequantized into a Hugging Face folder.
//! - [`names`]: tensor names in both conventions.

mod chkhsh;
pub mod gguf_to_hf;
pub mod hf_to_gguf;
mod metadata;
pub mod names;
mod sha256;
mod spm_model;
pub mod vocab;

pub use gguf_to_hf::{gguf_to_hf, HfDtype, HfOptions, HfSummary};
pub use hf_to_gguf::{permute_rows, HfSource, OutType};

use crate::quantize::source::WeightSource;
use std::path::Path;

/// A Hugging Face folder as the quantizer's input: the tensors and metadata llama.cpp's
/// `convert_hf_to_gguf.py --outtype auto` would write (F16 or BF16 as the checkpoint is; F32
/// checkpoints become F16), so quantizing a folder equals converting with llama.cpp and then
/// running llama-quantize.
pub fn open_hf_source(dir: &Path) -> anyhow::Result<Box<dyn WeightSource>> {
    Ok(Box::new(HfSource::open(dir, OutType::Auto)?))
}
