//! autoround-cpu: AutoRound quantization, GGUF, and a CPU inference engine for Llama-family models.
//!
//! - [`tensor`]: weights borrowed from memory-mapped files and the reference matmul.
//! - [`model`]: the Llama-family decoder (Llama, Mistral, Qwen2, Qwen3) in f32.
//! - [`engine`]: sampling, generation and perplexity on top of the model.
//! - [`quantize`]: llama-quantize-compatible GGUF quantization of whole models.
//! - [`convert`]: Hugging Face folder ⇄ GGUF.
//! - [`tuner`]: groundwork for the AutoRound tuner (calibration data so far).
//! - [`cli`]: the `autoround-cpu` command line.

pub mod cli;
pub mod convert;
pub mod engine;
pub mod export;
pub mod model;
pub mod quantize;
pub mod server;
pub mod tensor;
pub mod tuner;

pub use autoround_formats as formats;
pub use autoround_kernels as kernels;
