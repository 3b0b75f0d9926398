//! Tokenizers from small hand-made GGUF files (written with our GGUF writer): SentencePiece
//! ("llama") and byte-level BPE ("gpt2") paths of `Tokenizer::from_gguf`, and the errors for
//! missing or mistyped metadata.

use std::path::{Path, PathBuf};

use autoround_formats::gguf::{GgufFile, GgufValue, GgufValueType, GgufWriter};
use autoround_formats::tokenizer::{Tokenizer, VocabKind};

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("autoround-tokvocab-{}-{name}", std::process::id()))
}

fn strs(v: &[String]) -> GgufValue {
    GgufValue::Array(
        GgufValueType::String,
        v.iter().map(|s| GgufValue::String(s.clone())).collect(),
    )
}

/// A tiny SentencePiece vocabulary: <unk> <s> </s>, 256 byte tokens, then scored pieces.
fn spm_kv() -> Vec<(String, GgufValue)> {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0f32; 3];
    for b in 0..=255u32 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (t, s) in [
        ("▁", -1.0f32),
        ("T", -4.0),
        ("h", -4.0),
        ("e", -4.0),
        ("c", -4.0),
        ("a", -4.0),
        ("t", -4.0),
        ("▁T", -3.0),
        ("he", -2.0),
        ("▁The", -1.5),
        ("▁c", -3.0),
        ("at", -2.5),
        ("▁cat", -1.0),
        ("<|im_start|>", 0.0),
    ] {
        tokens.push(t.into());
        types.push(if t.starts_with("<|") { 3 } else { 1 });
        scores.push(s);
    }
    vec![
        (
            "general.architecture".into(),
            GgufValue::String("llama".into()),
        ),
        (
            "tokenizer.ggml.model".into(),
            GgufValue::String("llama".into()),
        ),
        ("tokenizer.ggml.tokens".into(), strs(&tokens)),
        (
            "tokenizer.ggml.scores".into(),
            GgufValue::Array(
                GgufValueType::F32,
                scores.into_iter().map(GgufValue::F32).collect(),
            ),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            GgufValue::Array(
                GgufValueType::I32,
                types.into_iter().map(GgufValue::I32).collect(),
            ),
        ),
        ("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(2)),
        ("tokenizer.ggml.unknown_token_id".into(), GgufValue::U32(0)),
        ("tokenizer.ggml.add_bos_token".into(), GgufValue::Bool(true)),
        (
            "tokenizer.chat_template".into(),
            GgufValue::String("{{ messages }}".into()),
        ),
    ]
}

fn write(name: &str, kv: Vec<(String, GgufValue)>) -> PathBuf {
    let mut w = GgufWriter::new(3, 32);
    for (k, v) in kv {
        w.add_kv(k, v);
    }
    let path = tmp(name);
    w.write_to_path(&path).unwrap();
    path
}

fn load(name: &str, kv: Vec<(String, GgufValue)>) -> Result<Tokenizer, String> {
    let path = write(name, kv);
    let file = GgufFile::open(&path).unwrap();
    let r = Tokenizer::from_gguf(&file).map_err(|e| e.to_string());
    std::fs::remove_file(&path).unwrap();
    r
}

#[test]
fn sentencepiece_from_gguf() {
    let t = load("spm", spm_kv()).unwrap();
    assert_eq!(t.kind(), VocabKind::Spm);
    assert!(t.add_bos());
    assert_eq!(t.chat_template(), Some("{{ messages }}"));
    let id = |s: &str| t.token_id(s).unwrap();
    let ids = t.encode("The cat", true, true).unwrap();
    assert_eq!(ids, vec![1, id("▁The"), id("▁cat")]);
    assert_eq!(t.decode(&ids), "<s> The cat");
    assert_eq!(t.decode(&ids[1..]), "The cat");
    // "ç" is not a piece: byte fallback (C3 A7), and back.
    let ids = t.encode("ça", false, true).unwrap();
    assert_eq!(ids, vec![id("▁"), id("<0xC3>"), id("<0xA7>"), id("a")]);
    assert_eq!(t.decode(&ids), "ça");
    assert_eq!(t.token_to_piece(id("<0xC3>")), vec![0xC3]);
    // A control token is parsed only with parse_special; the text after it gets a ▁ prefix.
    let ids = t.encode("<|im_start|>cat", false, true).unwrap();
    assert_eq!(ids, vec![id("<|im_start|>"), id("▁cat")]);
    let ids = t.encode("<|im_start|>cat", false, false).unwrap();
    assert!(!ids.contains(&id("<|im_start|>")));
    assert!(t.is_eog(2));
    // Saving a SentencePiece vocabulary as tokenizer.json is not supported (clear error).
    let e = t.to_hf_json(false).unwrap_err().to_string();
    assert!(e.contains("SentencePiece"), "{e}");
}

/// A tiny byte-level BPE vocabulary: the 256 byte characters, a few merges, one control token.
fn bpe_kv(pre: Option<&str>) -> Vec<(String, GgufValue)> {
    let bytes: Vec<String> = {
        // GPT-2 byte characters, in byte order.
        let mut out = vec![];
        let mut n = 0u32;
        for b in 0..=255u32 {
            let printable = (0x21..=0x7E).contains(&b)
                || (0xA1..=0xAC).contains(&b)
                || (0xAE..=0xFF).contains(&b);
            let c = if printable {
                b
            } else {
                n += 1;
                255 + n
            };
            out.push(char::from_u32(c).unwrap().to_string());
        }
        out
    };
    let mut tokens = vec!["<|endoftext|>".to_string()];
    tokens.extend(bytes);
    let merges = ["Ġ c", "a t", "Ġc at", "h e", "T he"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    let mut types = vec![1i32; tokens.len()];
    types[0] = 3;
    let mut kv = vec![
        (
            "tokenizer.ggml.model".to_string(),
            GgufValue::String("gpt2".into()),
        ),
        ("tokenizer.ggml.tokens".into(), strs(&tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            GgufValue::Array(
                GgufValueType::I32,
                types.into_iter().map(GgufValue::I32).collect(),
            ),
        ),
        (
            "tokenizer.ggml.merges".into(),
            strs(&merges.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(0)),
    ];
    if let Some(p) = pre {
        kv.push(("tokenizer.ggml.pre".into(), GgufValue::String(p.into())));
    }
    kv
}

#[test]
fn byte_level_bpe_from_gguf() {
    // llama-bpe turns BOS on by default.
    let t = load("bpe-llama3", bpe_kv(Some("llama-bpe"))).unwrap();
    assert!(t.add_bos());
    let id = |s: &str| t.token_id(s).unwrap();
    let ids = t.encode("The cat<|endoftext|>", true, true).unwrap();
    assert_eq!(ids, vec![0, id("The"), id("Ġcat"), 0]);
    assert_eq!(t.decode(&ids[1..]), "The cat<|endoftext|>");
    assert!(t.warnings().is_empty(), "{:?}", t.warnings());
    assert!(t.is_eog(0));

    // An unknown pre type falls back to llama.cpp's default regexes, with a warning.
    let t = load("bpe-unknown", bpe_kv(Some("no-such-pre"))).unwrap();
    assert!(
        t.warnings().iter().any(|w| w.contains("no-such-pre")),
        "{:?}",
        t.warnings()
    );
    assert!(!t.add_bos());
    assert_eq!(t.encode("The cat", false, false).unwrap().len(), 2);

    // No merges: an error naming the key.
    let mut kv = bpe_kv(Some("gpt-2"));
    kv.retain(|(k, _)| k != "tokenizer.ggml.merges");
    let e = load("bpe-nomerges", kv).unwrap_err();
    assert!(e.contains("tokenizer.ggml.merges"), "{e}");
}

#[test]
fn metadata_errors_name_key_and_file() {
    let edit = |key: &str, v: Option<GgufValue>| {
        let mut kv = spm_kv();
        kv.retain(|(k, _)| k != key);
        if let Some(v) = v {
            kv.push((key.to_string(), v));
        }
        kv
    };
    let cases = [
        ("tokenizer.ggml.model", None, "missing"),
        ("tokenizer.ggml.tokens", None, "missing"),
        ("tokenizer.ggml.model", Some(GgufValue::U32(1)), "a string"),
        (
            "tokenizer.ggml.model",
            Some(GgufValue::String("bert".into())),
            "bert",
        ),
        (
            "tokenizer.ggml.tokens",
            Some(GgufValue::String("x".into())),
            "array of strings",
        ),
        (
            "tokenizer.ggml.bos_token_id",
            Some(GgufValue::String("1".into())),
            "unsigned integer",
        ),
        (
            "tokenizer.ggml.add_bos_token",
            Some(GgufValue::U8(1)),
            "a bool",
        ),
        ("tokenizer.ggml.chat_template", None, ""),
        (
            "tokenizer.ggml.scores",
            Some(strs(&["a".to_string()])),
            "array of f32",
        ),
        (
            "tokenizer.ggml.token_type",
            Some(GgufValue::Array(
                GgufValueType::I32,
                vec![GgufValue::I32(1)],
            )),
            "token_type",
        ),
    ];
    for (i, (key, value, want)) in cases.into_iter().enumerate() {
        let r = load(&format!("err{i}"), edit(key, value));
        if want.is_empty() {
            r.unwrap();
            continue;
        }
        let e = r.unwrap_err();
        assert!(e.contains(key) && e.contains(want), "{key}: {e}");
        assert!(
            e.contains("autoround-tokvocab"),
            "error should name the file: {e}"
        );
    }
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    parse_special: bool,
}

/// A vocabulary-only SentencePiece GGUF (about 1100 pieces, byte fallback, control and
/// user-defined tokens) and the ids llama.cpp's `llama-tokenize` gives for 221 strings, both made
/// by tools/make-tokenizer-fixtures.sh.
#[test]
fn tiny_sentencepiece_matches_llama_cpp() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tokenizer");
    let file = GgufFile::open(dir.join("spm-tiny.gguf")).unwrap();
    let t = Tokenizer::from_gguf(&file).unwrap();
    assert_eq!(t.kind(), VocabKind::Spm);
    assert!(t.add_bos() && t.warnings().is_empty());
    assert!(t.chat_template().unwrap().contains("<|im_start|>"));
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("spm-tiny.json")).unwrap()).unwrap();
    assert!(cases.len() > 200);
    let mut failures = vec![];
    for c in &cases {
        let got = t.encode(&c.text, true, c.parse_special).unwrap();
        if got != c.ids {
            failures.push(format!(
                "{:?} (parse_special {}):\n   llama.cpp {:?}\n   ours      {:?}",
                c.text, c.parse_special, c.ids, got
            ));
        }
        // Without BOS and special tokens, decoding gives the text back (the prefix space the
        // tokenizer adds is removed again).
        if !c.text.contains('<') {
            let ids = t.encode(&c.text, false, c.parse_special).unwrap();
            assert_eq!(t.decode(&ids), c.text, "ids {ids:?}");
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} strings differ from llama.cpp:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
