//! Quantization of whole models.
//!
//! - [`mixture`]: llama-quantize's per-tensor type choices (`q4_k_m`, `q3_k_s`, ...).

pub mod mixture;
