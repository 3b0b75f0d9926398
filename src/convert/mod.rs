//! Conversion between Hugging Face folders (config.json, safetensors, tokenizer files) and GGUF.
