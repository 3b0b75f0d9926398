//! A Hugging Face folder (config.json, model.safetensors, tokenizer.json) loads and computes the
//! same model as the GGUF it was made from.
//!
//! The folder is built here from llama.cpp's F16 GGUF of SmolLM2 by undoing llama.cpp's Q/K row
//! permutation (convert_hf_to_gguf.py's `permute`), so the HF path runs RoPE in the half-split
//! (NEOX) layout on rows the GGUF path rotates in adjacent pairs: equal logits check the
//! safetensors reader, config.json, both RoPE layouts and the HF tokenizer at once.

mod common;

use autoround_cpu::model::llama::{KvCache, Logits};
use autoround_cpu::model::ModelSource;
use autoround_formats::gguf::GgufFile;
use autoround_formats::safetensors::write_safetensors;
use autoround_kernels::GgmlType;

/// GGUF rows of a Q or K matrix back to Hugging Face order (inverse of llama.cpp's permute):
/// HF row `h*hd + half*hd/2 + i` is GGUF row `h*hd + 2*i + half`.
fn unpermute(data: &[u8], rows: usize, row_bytes: usize, n_head: usize) -> Vec<u8> {
    let hd = rows / n_head;
    let mut out = vec![0u8; data.len()];
    for h in 0..n_head {
        for half in 0..2 {
            for i in 0..hd / 2 {
                let src = h * hd + 2 * i + half;
                let dst = h * hd + half * hd / 2 + i;
                out[dst * row_bytes..(dst + 1) * row_bytes]
                    .copy_from_slice(&data[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    out
}

#[test]
fn hf_folder_made_from_gguf_gives_the_same_logits() {
    let Some(path) = common::model("F16") else {
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    let dir = std::env::temp_dir().join(format!("arc-hf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let (n_head, n_head_kv) = (9, 3);
    let mut owned: Vec<(String, GgmlType, Vec<usize>, Vec<u8>)> = Vec::new();
    for t in f.tensors() {
        let hf_name = match t.name.as_str() {
            "token_embd.weight" => "model.embed_tokens.weight".to_string(),
            "output_norm.weight" => "model.norm.weight".to_string(),
            n => {
                let rest = n.strip_prefix("blk.").expect("block tensor");
                let (layer, what) = rest.split_once('.').unwrap();
                let hf = match what {
                    "attn_norm.weight" => "input_layernorm.weight",
                    "ffn_norm.weight" => "post_attention_layernorm.weight",
                    "attn_q.weight" => "self_attn.q_proj.weight",
                    "attn_k.weight" => "self_attn.k_proj.weight",
                    "attn_v.weight" => "self_attn.v_proj.weight",
                    "attn_output.weight" => "self_attn.o_proj.weight",
                    "ffn_gate.weight" => "mlp.gate_proj.weight",
                    "ffn_up.weight" => "mlp.up_proj.weight",
                    "ffn_down.weight" => "mlp.down_proj.weight",
                    other => panic!("unexpected tensor {other}"),
                };
                format!("model.layers.{layer}.{hf}")
            }
        };
        let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        let data = f.tensor_data(t);
        let data = if t.name.ends_with("attn_q.weight") || t.name.ends_with("attn_k.weight") {
            let heads = if t.name.ends_with("attn_q.weight") {
                n_head
            } else {
                n_head_kv
            };
            unpermute(data, shape[0], data.len() / shape[0], heads)
        } else {
            data.to_vec()
        };
        owned.push((hf_name, t.ty, shape, data));
    }
    let tensors: Vec<(String, GgmlType, Vec<usize>, &[u8])> = owned
        .iter()
        .map(|(n, ty, s, d)| (n.clone(), *ty, s.clone(), d.as_slice()))
        .collect();
    write_safetensors(&dir.join("model.safetensors"), &tensors, None).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
            "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
            "num_key_value_heads": 3, "rms_norm_eps": 1e-05, "rope_theta": 100000.0,
            "max_position_embeddings": 8192, "vocab_size": 49152, "tie_word_embeddings": true,
            "bos_token_id": 1, "eos_token_id": 2}"#,
    )
    .unwrap();
    let gguf_src = ModelSource::open(&path).unwrap();
    gguf_src.tokenizer().unwrap().save_hf_dir(&dir).unwrap();

    let hf_src = ModelSource::open(&dir).unwrap();
    let (gm, hm) = (gguf_src.load().unwrap(), hf_src.load().unwrap());
    let (gt, ht) = (gguf_src.tokenizer().unwrap(), hf_src.tokenizer().unwrap());
    let prompt = "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n";
    let ids = gt.encode(prompt, true, true).unwrap();
    assert_eq!(
        ids,
        ht.encode(prompt, true, true).unwrap(),
        "tokenizers agree"
    );

    let (mut gc, mut hc) = (KvCache::new(&gm.cfg, 128), KvCache::new(&hm.cfg, 128));
    let mut gl = gm.forward(&ids, &mut gc, Logits::Last).unwrap();
    let mut hl = hm.forward(&ids, &mut hc, Logits::Last).unwrap();
    for step in 0..16 {
        // Compare log-probabilities (a uniform shift of all logits changes nothing). Same
        // weights and math; only the order of the head dimensions in Q·K differs (the rows are
        // permuted), and the f16 rounding in attention (as llama.cpp does it) turns that into
        // noise of a few hundredths; a wrong RoPE layout or tensor mapping gives O(1).
        let lsm = |l: &[f32]| {
            let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z = l.iter().map(|&x| ((x - m) as f64).exp()).sum::<f64>().ln() as f32 + m;
            l.iter().map(|&x| x - z).collect::<Vec<f32>>()
        };
        let (gp, hp) = (lsm(&gl), lsm(&hl));
        let max_diff = gp
            .iter()
            .zip(&hp)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("step {step}: log-probabilities differ by at most {max_diff:.5}");
        assert!(
            max_diff < 0.1,
            "step {step}: log-probabilities differ by up to {max_diff}"
        );
        let argmax = |l: &[f32]| {
            l.iter()
                .enumerate()
                .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
                .0
        };
        let (a, b) = (argmax(&gl), argmax(&hl));
        assert_eq!(a, b, "step {step}: greedy tokens differ");
        gl = gm.forward(&[a as u32], &mut gc, Logits::Last).unwrap();
        hl = hm.forward(&[a as u32], &mut hc, Logits::Last).unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
}
