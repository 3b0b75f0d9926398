//! The Llama-family decoder (Llama, Mistral, Qwen2 with q/k/v bias, Qwen3 with q/k RMSNorm) in
//! f32, over weights of any supported ggml type borrowed from a GGUF or safetensors map.

pub mod config;
pub mod hub;
pub mod llama;
pub mod load;
pub mod trace;

pub use config::{Arch, ModelConfig, RopeLayout};
pub use llama::{KvCache, Layer, MatmulObserver, MatmulSite, Model};
pub use load::{LoadError, ModelSource};
