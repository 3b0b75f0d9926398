//! Where the quantizer's input comes from: a model's tensors and GGUF metadata, as they would be in
//! an unquantized (or already quantized) GGUF file.
//!
//! A GGUF file is one source ([`GgufSource`]); a Hugging Face folder is another (its tensors are
//! renamed, permuted and converted on the fly by `crate::convert`). The quantizer only sees this
//! trait, so every input goes through the same type choices and the same writer.

use crate::quantize::mixture::TensorInfo;
use autoround_formats::gguf::{GgufFile, GgufValue};
use std::borrow::Cow;

/// A model's tensors and metadata, in llama.cpp's naming (`blk.N.attn_q.weight`, ...).
pub trait WeightSource: Sync {
    /// What this source is, for messages (a path).
    fn describe(&self) -> String;
    /// GGUF metadata in write order (the quantizer adds `general.file_type` and
    /// `general.quantization_version` itself).
    fn metadata(&self) -> &[(String, GgufValue)];
    /// Every tensor: llama.cpp name, ggml dims (row length first) and the type its bytes are in.
    fn tensors(&self) -> &[TensorInfo];
    /// The bytes of tensor `i` (index into [`tensors`](Self::tensors)) in its type; borrowed from
    /// a memory map where possible.
    fn tensor_bytes(&self, i: usize) -> anyhow::Result<Cow<'_, [u8]>>;
    /// GGUF alignment of the output (32 unless the metadata says `general.alignment`).
    fn alignment(&self) -> u64 {
        match self
            .metadata()
            .iter()
            .find(|(k, _)| k == "general.alignment")
        {
            Some((_, GgufValue::U32(a))) => u64::from(*a),
            _ => 32,
        }
    }
}

/// A GGUF file as a source: metadata and tensors exactly as stored.
pub struct GgufSource {
    file: GgufFile,
    tensors: Vec<TensorInfo>,
}

impl GgufSource {
    pub fn new(file: GgufFile) -> GgufSource {
        let tensors = file.tensors().iter().map(TensorInfo::from).collect();
        GgufSource { file, tensors }
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }
}

impl WeightSource for GgufSource {
    fn describe(&self) -> String {
        self.file.path().display().to_string()
    }
    fn metadata(&self) -> &[(String, GgufValue)] {
        &self.file.header().metadata
    }
    fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }
    fn tensor_bytes(&self, i: usize) -> anyhow::Result<Cow<'_, [u8]>> {
        let t = &self.file.tensors()[i];
        self.file
            .try_tensor_data(t)
            .map(Cow::Borrowed)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: tensor '{}' lies outside the file",
                    self.describe(),
                    t.name
                )
            })
    }
    fn alignment(&self) -> u64 {
        self.file.header().alignment
    }
}
