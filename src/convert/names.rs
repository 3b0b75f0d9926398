//! Tensor names: Hugging Face (`model.layers.3.self_attn.q_proj.weight`) ⇄ llama.cpp
//! (`blk.3.attn_q.weight`) for the Llama family (llama, mistral, qwen2, qwen3), as gguf-py's
//! `TensorNameMap` maps them for those architectures.

/// Per-layer names: Hugging Face module path after `model.layers.N.` ⇄ llama.cpp name after
/// `blk.N.`.
const LAYER: &[(&str, &str)] = &[
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
    ("post_attention_layernorm", "ffn_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// Whole-model names.
const GLOBAL: &[(&str, &str)] = &[
    ("model.embed_tokens", "token_embd"),
    ("model.norm", "output_norm"),
    ("lm_head", "output"),
];

fn split_suffix(name: &str) -> Option<(&str, &str)> {
    [".weight", ".bias"]
        .iter()
        .find_map(|s| name.strip_suffix(s).map(|base| (base, *s)))
}

/// The llama.cpp name of a Hugging Face tensor, `None` if it is not one of the family's.
pub fn hf_to_gguf(name: &str) -> Option<String> {
    let (base, suffix) = split_suffix(name)?;
    if let Some((_, g)) = GLOBAL.iter().find(|(h, _)| *h == base) {
        return Some(format!("{g}{suffix}"));
    }
    let rest = base.strip_prefix("model.layers.")?;
    let (n, module) = rest.split_once('.')?;
    let bid: usize = n.parse().ok().filter(|_| !n.starts_with('+'))?;
    let (_, g) = LAYER.iter().find(|(h, _)| *h == module)?;
    Some(format!("blk.{bid}.{g}{suffix}"))
}

/// The Hugging Face name of a llama.cpp tensor, `None` if it has none (e.g. `rope_freqs.weight`).
pub fn gguf_to_hf(name: &str) -> Option<String> {
    let (base, suffix) = split_suffix(name)?;
    if let Some((h, _)) = GLOBAL.iter().find(|(_, g)| *g == base) {
        return Some(format!("{h}{suffix}"));
    }
    let rest = base.strip_prefix("blk.")?;
    let (n, module) = rest.split_once('.')?;
    let bid: usize = n.parse().ok().filter(|_| !n.starts_with('+'))?;
    let (h, _) = LAYER.iter().find(|(_, g)| *g == module)?;
    Some(format!("model.layers.{bid}.{h}{suffix}"))
}

/// The block number of a llama.cpp or Hugging Face tensor name: its first all-digit part.
pub fn block_id(name: &str) -> Option<usize> {
    name.split('.')
        .find(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways() {
        for (h, g) in [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("model.norm.weight", "output_norm.weight"),
            ("lm_head.weight", "output.weight"),
            (
                "model.layers.0.self_attn.q_proj.weight",
                "blk.0.attn_q.weight",
            ),
            (
                "model.layers.12.self_attn.k_proj.bias",
                "blk.12.attn_k.bias",
            ),
            (
                "model.layers.3.self_attn.q_norm.weight",
                "blk.3.attn_q_norm.weight",
            ),
            (
                "model.layers.29.post_attention_layernorm.weight",
                "blk.29.ffn_norm.weight",
            ),
            (
                "model.layers.1.mlp.down_proj.weight",
                "blk.1.ffn_down.weight",
            ),
        ] {
            assert_eq!(hf_to_gguf(h).as_deref(), Some(g));
            assert_eq!(gguf_to_hf(g).as_deref(), Some(h));
        }
        for bad in [
            "model.layers.x.mlp.up_proj.weight",
            "model.layers.1.mlp.experts.weight",
            "model.rotary_emb.inv_freq",
            "vision.weight",
        ] {
            assert_eq!(hf_to_gguf(bad), None, "{bad}");
        }
        assert_eq!(gguf_to_hf("rope_freqs.weight"), None);
        assert_eq!(block_id("blk.7.attn_q.weight"), Some(7));
        assert_eq!(block_id("model.layers.10.mlp.up_proj.weight"), Some(10));
        assert_eq!(block_id("output.weight"), None);
    }
}
