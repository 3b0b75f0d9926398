//! `convert` on the real test model (SmolLM2-135M-Instruct; skipped with a message when the
//! model files have not been made):
//!
//! - F16 GGUF -> HF folder -> F16 GGUF: every tensor byte-identical, every metadata key kept;
//! - Q4_1 GGUF -> HF folder (f32) -> F16 GGUF: byte-identical to llama-quantize's F16 of the
//!   same Q4_1 file (both dequantize Q4_1 and round to F16);
//! - the HF folder runs in our engine: prompt tokens and greedy tokens equal llama.cpp's on the
//!   F16 GGUF (tests/fixtures/llama_cpp/golden.json);
//! - HF -> GGUF equals llama.cpp's convert_hf_to_gguf.py on the same folder, byte for byte, when
//!   tools/convert-golden.sh has recorded it (~/.cache/autoround-cpu/convert-golden/; skipped
//!   otherwise, CI included: that script needs torch, ~4 GB of wheels).

mod common;

use autoround_cpu::convert::{gguf_to_hf, HfDtype, HfOptions, HfSource, OutType};
use autoround_cpu::engine::{Sampler, SamplingParams};
use autoround_cpu::formats::gguf::GgufFile;
use autoround_cpu::model::llama::{KvCache, Logits, Numerics};
use autoround_cpu::model::ModelSource;
use std::path::{Path, PathBuf};

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("autoround-convert-rt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Tensors of `b` equal those of `a` by name (type, dims, bytes).
fn same_tensors(a: &Path, b: &Path) {
    let (a, b) = (GgufFile::open(a).unwrap(), GgufFile::open(b).unwrap());
    assert_eq!(a.tensors().len(), b.tensors().len());
    for t in a.tensors() {
        let u = b
            .tensor(&t.name)
            .unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!((t.ty, &t.dims), (u.ty, &u.dims), "{}", t.name);
        assert!(
            a.tensor_data(t) == b.tensor_data(u),
            "{}: bytes differ",
            t.name
        );
    }
}

#[test]
fn f16_gguf_to_hf_and_back_is_lossless() {
    let Some(f16) = common::model("F16") else {
        return;
    };
    let dir = tmpdir("f16");
    let hf = dir.join("SmolLM2-135M-Instruct-hf");
    let s = gguf_to_hf(&f16, &hf, &HfOptions::default()).unwrap();
    assert_eq!((s.tensors, s.shards, s.torch_dtype), (272, 1, "float16"));
    let out = dir.join("back.gguf");
    HfSource::open(&hf, OutType::F16)
        .unwrap()
        .write_gguf(&out, &mut |_, _| {})
        .unwrap();
    same_tensors(&f16, &out);
    // Every key of the original comes back with its value; the only new ones are the head
    // sizes transformers' LlamaConfig always reports (so llama.cpp's converter writes them too).
    let (a, b) = (GgufFile::open(&f16).unwrap(), GgufFile::open(&out).unwrap());
    for (k, v) in &a.header().metadata {
        assert_eq!(b.get(k), Some(v), "metadata key {k}");
    }
    let extra: Vec<&str> = b
        .header()
        .metadata
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| a.get(k).is_none())
        .collect();
    assert_eq!(
        extra,
        ["llama.attention.key_length", "llama.attention.value_length"]
    );

    // llama.cpp's converter on the same folder, if recorded.
    let golden = std::env::var_os("AUTOROUND_CONVERT_GOLDEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::models_dir().join("../convert-golden"))
        .join("smollm2.f16.gguf");
    if golden.is_file() {
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(&golden).unwrap(),
            "differs from llama.cpp's convert_hf_to_gguf.py output {} (tools/compare_gguf.py shows how)",
            golden.display()
        );
    } else {
        eprintln!(
            "SKIP: {} is missing: run tools/convert-golden.sh to compare with llama.cpp's convert_hf_to_gguf.py",
            golden.display()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn q4_1_to_hf_to_f16_equals_llama_quantize() {
    let (Some(q41), Some(f16)) = (common::model("Q4_1"), common::model("F16")) else {
        return;
    };
    let dir = tmpdir("q41");
    let hf = dir.join("hf");
    let s = gguf_to_hf(&q41, &hf, &HfOptions::default()).unwrap();
    assert_eq!(s.torch_dtype, "float32");
    let out = dir.join("f16.gguf");
    HfSource::open(&hf, OutType::F16)
        .unwrap()
        .write_gguf(&out, &mut |_, _| {})
        .unwrap();
    same_tensors(&f16, &out);
    // An explicit dtype: bf16 safetensors.
    let hf16 = dir.join("hf-bf16");
    let s = gguf_to_hf(
        &q41,
        &hf16,
        &HfOptions {
            dtype: HfDtype::Bf16,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.torch_dtype, "bfloat16");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hf_folder_runs_like_llama_cpp() {
    let Some(f16) = common::model("F16") else {
        return;
    };
    let dir = tmpdir("engine");
    let hf = dir.join("hf");
    gguf_to_hf(&f16, &hf, &HfOptions::default()).unwrap();
    let src = ModelSource::open(&hf).unwrap();
    assert!(matches!(src, ModelSource::Hf { .. }));
    let tok = src.tokenizer().unwrap();
    let mut model = src.load().unwrap();
    // compared with llama.cpp's own tokens and perplexity: its arithmetic
    model.numerics = Numerics::LlamaCpp;
    let golden = common::golden();
    let cases = golden["models"]["F16"]["greedy"].as_array().unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    for case in cases {
        let prompt = tok
            .encode(case["prompt"].as_str().unwrap(), true, true)
            .unwrap();
        assert_eq!(
            prompt,
            ids(&case["prompt_ids"]),
            "prompt tokens of {}",
            case["prompt"]
        );
    }
    // Greedy tokens of the first prompt (24 of them, to keep the test short).
    let case = &cases[0];
    let want = ids(&case["tokens"]);
    let prompt = ids(&case["prompt_ids"]);
    let mut cache = KvCache::new(&model.cfg, 256);
    let mut sampler = Sampler::new(SamplingParams::greedy());
    let mut logits = model.forward(&prompt, &mut cache, Logits::Last).unwrap();
    let mut got = vec![];
    for _ in 0..24 {
        for (id, x) in logits.iter_mut().enumerate() {
            if tok.is_eog(id as u32) {
                *x = f32::NEG_INFINITY;
            }
        }
        let next = sampler.sample(&logits);
        got.push(next);
        logits = model.forward(&[next], &mut cache, Logits::Last).unwrap();
    }
    assert_eq!(
        got,
        want[..24],
        "greedy tokens of the HF folder vs llama.cpp on the F16 GGUF"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
