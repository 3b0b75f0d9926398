//! Quantization of whole models.
//!
//! - [`mixture`]: llama-quantize's per-tensor type choices (`q4_k_m`, `q3_k_s`, ...).
//! - [`source`]: the quantizer's input (a GGUF file, or a Hugging Face folder via `crate::convert`).

pub mod mixture;
pub mod source;
