//! Quantization of whole models.
//!
//! - [`mixture`]: llama-quantize's per-tensor type choices (`q4_k_m`, `q3_k_s`, ...).
//! - [`gguf`]: the whole-model GGUF quantizer (llama-quantize's output, byte for byte).
//! - [`source`]: the quantizer's input (a GGUF file, or a Hugging Face folder via `crate::convert`).

pub mod gguf;
pub mod mixture;
pub mod source;
