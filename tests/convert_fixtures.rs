//! `convert --to gguf` against llama.cpp's own converter on tiny checkpoints of each supported
//! architecture (tests/fixtures/convert/, made by tools/convert-golden.sh with
//! convert_hf_to_gguf.py): Llama with Llama 3 RoPE scaling and sharded BF16 safetensors, Mistral
//! in F16 with added tokens, Qwen2 in F32 with biases, Qwen3 in BF16 with q/k norms, a model card
//! and sampling settings; all with SentencePiece tokenizers. Our GGUF must be byte-identical to
//! llama.cpp's for every --outtype recorded. Also GGUF -> HF -> GGUF on these files.

use autoround_cpu::convert::{gguf_to_hf, HfDtype, HfOptions, HfSource, OutType};
use autoround_cpu::formats::gguf::GgufFile;
use autoround_cpu::quantize::source::WeightSource;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/convert")
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("autoround-convert-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// (model folder, outtype, golden file) for every golden in the fixtures.
fn goldens() -> Vec<(PathBuf, String, PathBuf)> {
    let mut out = vec![];
    for e in std::fs::read_dir(fixtures()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".gguf") {
            let (model, outtype) = stem.rsplit_once('.').unwrap();
            out.push((fixtures().join(model), outtype.to_string(), p.clone()));
        }
    }
    out.sort();
    assert!(
        out.len() >= 7,
        "fixtures missing: run tools/convert-golden.sh"
    );
    out
}

#[test]
fn hf_to_gguf_is_byte_identical_to_llama_cpp_converter() {
    let dir = tmpdir("fixtures");
    let mut failures = vec![];
    for (model, outtype, golden) in goldens() {
        let t: OutType = outtype.parse().unwrap();
        let src = HfSource::open(&model, t).unwrap();
        let out = dir.join(golden.file_name().unwrap());
        src.write_gguf(&out, &mut |_, _| {}).unwrap();
        let (ours, theirs) = (
            std::fs::read(&out).unwrap(),
            std::fs::read(&golden).unwrap(),
        );
        if ours != theirs {
            failures.push(format!(
                "{}: differs from llama.cpp's (compare with tools/compare_gguf.py)",
                golden.display()
            ));
            continue;
        }
        // The in-memory writer path gives the same bytes.
        let w = src.to_writer().unwrap();
        let out2 = dir.join("writer.gguf");
        w.write_to_path(&out2).unwrap();
        assert_eq!(
            std::fs::read(&out2).unwrap(),
            theirs,
            "{}: GgufWriter path",
            golden.display()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn weight_source_matches_the_golden_file() {
    // The quantizer's view: metadata without general.file_type / quantization_version, tensors
    // with their types, bytes as written.
    let (model, _, golden) = goldens().into_iter().find(|(_, t, _)| t == "auto").unwrap();
    let src = HfSource::open(&model, OutType::Auto).unwrap();
    let g = GgufFile::open(&golden).unwrap();
    let want: Vec<_> = g
        .header()
        .metadata
        .iter()
        .filter(|(k, _)| k != "general.file_type" && k != "general.quantization_version")
        .cloned()
        .collect();
    assert_eq!(src.metadata(), &want[..]);
    assert_eq!(src.tensors().len(), g.tensors().len());
    for (i, t) in g.tensors().iter().enumerate() {
        let ours = &src.tensors()[i];
        assert_eq!((&ours.name, &ours.ne, ours.ty), (&t.name, &t.dims, t.ty));
        assert_eq!(
            &*src.tensor_bytes(i).unwrap(),
            g.tensor_data(t),
            "{}",
            t.name
        );
    }
    assert_eq!(src.alignment(), 32);
}

#[test]
fn gguf_to_hf_to_gguf_round_trips_the_goldens() {
    // llama.cpp's GGUFs -> our HF folders (tokenizer.model written by us) -> our GGUF again.
    let dir = tmpdir("rt");
    for (_, outtype, golden) in goldens() {
        if outtype != "auto" {
            continue;
        }
        let name = golden
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .replace(".auto", "");
        // Same folder name as the fixture: the converters derive general.* names from it.
        let hf = dir.join(&name);
        let s = gguf_to_hf(&golden, &hf, &HfOptions::default()).unwrap();
        assert_eq!(
            s.tokenizer_files,
            ["tokenizer.model", "tokenizer_config.json"]
        );
        let src = HfSource::open(&hf, OutType::Auto).unwrap();
        let out = dir.join(format!("{name}.gguf"));
        src.write_gguf(&out, &mut |_, _| {}).unwrap();
        let a = GgufFile::open(&golden).unwrap();
        let b = GgufFile::open(&out).unwrap();
        let names = |f: &GgufFile| {
            f.tensors()
                .iter()
                .map(|t| t.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&a), names(&b), "{name}: tensor names");
        for t in a.tensors() {
            let u = b.tensor(&t.name).unwrap();
            assert_eq!((t.ty, &t.dims), (u.ty, &u.dims), "{name}: {}", t.name);
            assert_eq!(
                a.tensor_data(t),
                b.tensor_data(u),
                "{name}: {} bytes",
                t.name
            );
        }
        // What differs, by key. tiny-llama-hf's add_sep_token came from its tokenizer.json's
        // post-processor, which a SentencePiece folder (tokenizer.model) does not have.
        let allowed: &[&str] = if name == "tiny-llama-hf" {
            &["tokenizer.ggml.add_sep_token"]
        } else {
            &[]
        };
        let ka: Vec<&String> = a
            .header()
            .metadata
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !allowed.contains(&k.as_str()))
            .collect();
        let kb: Vec<&String> = b.header().metadata.iter().map(|(k, _)| k).collect();
        assert_eq!(ka, kb, "{name}: metadata keys");
        for (k, v) in &b.header().metadata {
            assert!(a.get(k) == Some(v), "{name}: metadata '{k}' differs");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gguf_to_hf_dtypes() {
    // F32 Qwen2 golden: auto keeps F16/BF16/F32 as they are; an explicit dtype converts all.
    let golden = fixtures().join("tiny-qwen2.bf16.gguf");
    let dir = tmpdir("dtypes");
    for (dtype, want) in [
        (HfDtype::Auto, "bfloat16"),
        (HfDtype::F32, "float32"),
        (HfDtype::F16, "float16"),
    ] {
        let out = dir.join(format!("{dtype:?}"));
        let s = gguf_to_hf(
            &golden,
            &out,
            &HfOptions {
                dtype,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.torch_dtype, want);
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["torch_dtype"], want);
        assert_eq!(cfg["architectures"][0], "Qwen2ForCausalLM");
        assert_eq!(cfg["tie_word_embeddings"], false);
    }
    // Sharding with an index.
    let out = dir.join("sharded");
    let s = gguf_to_hf(
        &golden,
        &out,
        &HfOptions {
            dtype: HfDtype::F32,
            max_shard_bytes: 40_000,
            overwrite: false,
        },
    )
    .unwrap();
    assert!(s.shards > 1, "{s:?}");
    assert!(out.join("model.safetensors.index.json").is_file());
    let src = HfSource::open(&out, OutType::Bf16).unwrap();
    let a = GgufFile::open(&golden).unwrap();
    for (i, t) in src.tensors().iter().enumerate() {
        let g = a.tensor(&t.name).unwrap();
        assert_eq!(
            &*src.tensor_bytes(i).unwrap(),
            a.tensor_data(g),
            "{}",
            t.name
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
