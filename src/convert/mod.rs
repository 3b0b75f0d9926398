//! Conversion between Hugging Face folders (config.json, safetensors, tokenizer files) and GGUF.

use crate::quantize::source::WeightSource;
use std::path::Path;

/// A Hugging Face folder as the quantizer's input (tensors in llama.cpp's names and layout).
pub fn open_hf_source(dir: &Path) -> anyhow::Result<Box<dyn WeightSource>> {
    anyhow::bail!(
        "{}: quantizing from a Hugging Face folder needs the HF -> GGUF converter, not built yet; convert to GGUF first",
        dir.display()
    )
}
