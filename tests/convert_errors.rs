//! `autoround-cpu convert` on bad input: a clear error naming the problem, exit status 1, no
//! panic, and nothing written (no output, no temporary files left beside it).

use autoround_cpu::formats::safetensors::{write_safetensors, SafetensorsModel};
use autoround_cpu::formats::GgmlType;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/convert")
        .join(name)
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "autoround-convert-err-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

/// Run `convert`, expect failure; returns stderr.
fn fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_autoround-cpu"))
        .arg("convert")
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a clean failure, got {:?}: {err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// The folder holds exactly `names`.
fn only(dir: &Path, names: &[&str]) {
    let mut got: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "left in {}", dir.display());
}

/// tiny-qwen2 with its safetensors rewritten by `edit` (name, dtype, shape, bytes).
fn edited_qwen2(
    dir: &Path,
    edit: impl Fn(&mut Vec<(String, GgmlType, Vec<usize>, Vec<u8>)>),
) -> PathBuf {
    let m = dir.join("model");
    copy_dir(&fixture("tiny-qwen2"), &m);
    let st = SafetensorsModel::open_file(&m.join("model.safetensors")).unwrap();
    let mut ts: Vec<(String, GgmlType, Vec<usize>, Vec<u8>)> = st
        .names()
        .iter()
        .map(|n| {
            let t = st.tensor(n).unwrap();
            (n.to_string(), t.dtype, t.shape.clone(), t.data.to_vec())
        })
        .collect();
    drop(st);
    edit(&mut ts);
    let views: Vec<(String, GgmlType, Vec<usize>, &[u8])> = ts
        .iter()
        .map(|(n, d, s, b)| (n.clone(), *d, s.clone(), b.as_slice()))
        .collect();
    write_safetensors(&m.join("model.safetensors"), &views, None).unwrap();
    m
}

#[test]
fn unknown_architecture() {
    let dir = tmpdir("arch");
    let m = dir.join("model");
    copy_dir(&fixture("tiny-qwen2"), &m);
    let cfg = std::fs::read_to_string(m.join("config.json")).unwrap();
    let cfg = cfg
        .replace("\"qwen2\"", "\"gpt_neox\"")
        .replace("Qwen2ForCausalLM", "GPTNeoXForCausalLM");
    std::fs::write(m.join("config.json"), cfg).unwrap();
    let out = dir.join("out.gguf");
    let err = fails(&[
        "-m",
        m.to_str().unwrap(),
        "--to",
        "gguf",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("unsupported architecture")
            && err.contains("gpt_neox")
            && err.contains("config.json"),
        "{err}"
    );
    only(&dir, &["model"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unsupported_dtype() {
    let dir = tmpdir("dtype");
    let m = edited_qwen2(&dir, |ts| {
        let t = ts
            .iter_mut()
            .find(|t| t.0 == "model.layers.0.mlp.up_proj.weight")
            .unwrap();
        let n: usize = t.2.iter().product();
        t.1 = GgmlType::I8;
        t.3 = vec![1u8; n];
    });
    let out = dir.join("out.gguf");
    let err = fails(&[
        "-m",
        m.to_str().unwrap(),
        "--to",
        "gguf",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("model.layers.0.mlp.up_proj.weight") && err.contains("I8"),
        "{err}"
    );
    only(&dir, &["model"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_tensor() {
    let dir = tmpdir("missing");
    let m = edited_qwen2(&dir, |ts| {
        ts.retain(|t| t.0 != "model.layers.1.mlp.down_proj.weight")
    });
    let out = dir.join("out.gguf");
    let err = fails(&[
        "-m",
        m.to_str().unwrap(),
        "--to",
        "gguf",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("model.layers.1.mlp.down_proj.weight") && err.contains("missing"),
        "{err}"
    );
    only(&dir, &["model"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unmappable_tensor() {
    let dir = tmpdir("unmapped");
    let m = edited_qwen2(&dir, |ts| {
        ts.push((
            "model.vision_tower.weight".into(),
            GgmlType::F32,
            vec![2],
            vec![0; 8],
        ))
    });
    let out = dir.join("out.gguf");
    let err = fails(&[
        "-m",
        m.to_str().unwrap(),
        "--to",
        "gguf",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("cannot map tensor 'model.vision_tower.weight'"),
        "{err}"
    );
    only(&dir, &["model"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn existing_output_needs_overwrite() {
    let dir = tmpdir("exists");
    let out = dir.join("out.gguf");
    std::fs::write(&out, b"keep me").unwrap();
    let m = fixture("tiny-qwen3");
    let err = fails(&[
        "-m",
        m.to_str().unwrap(),
        "--to",
        "gguf",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("already exists") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    // --to hf onto an existing folder.
    let hf = dir.join("hf");
    std::fs::create_dir(&hf).unwrap();
    std::fs::write(hf.join("x"), b"keep").unwrap();
    let g = fixture("tiny-qwen3.auto.gguf");
    let err = fails(&[
        "-m",
        g.to_str().unwrap(),
        "--to",
        "hf",
        "-o",
        hf.to_str().unwrap(),
    ]);
    assert!(err.contains("already exists"), "{err}");
    only(&hf, &["x"]);
    // --to hf from a folder (it reads GGUF files): named, not an mmap error.
    let err = fails(&[
        "-m",
        m.to_str().unwrap(),
        "--to",
        "hf",
        "-o",
        dir.join("hf2").to_str().unwrap(),
    ]);
    assert!(
        err.contains("is a folder") && err.contains("--to gguf"),
        "{err}"
    );
    only(&dir, &["out.gguf", "hf"]);
    // With --overwrite both are replaced, atomically (nothing else left behind).
    for (src, o, to) in [(&m, &out, "gguf"), (&g, &hf, "hf")] {
        let st = Command::new(env!("CARGO_BIN_EXE_autoround-cpu"))
            .args([
                "convert",
                "-m",
                src.to_str().unwrap(),
                "--to",
                to,
                "-o",
                o.to_str().unwrap(),
                "--overwrite",
            ])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    assert!(std::fs::read(&out).unwrap().starts_with(b"GGUF"));
    assert!(hf.join("config.json").is_file() && !hf.join("x").exists());
    only(&dir, &["out.gguf", "hf"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_and_inputs() {
    let dir = tmpdir("args");
    let out = dir.join("o");
    let m = fixture("tiny-qwen3");
    let err = fails(&[
        "-m",
        m.to_str().unwrap(),
        "--to",
        "onnx",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("--to onnx") && err.contains("gguf or hf"),
        "{err}"
    );
    let err = fails(&[
        "-m",
        m.to_str().unwrap(),
        "--to",
        "gguf",
        "--outtype",
        "q4",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("--outtype") && err.contains("q4"), "{err}");
    let err = fails(&[
        "-m",
        dir.join("nope").to_str().unwrap(),
        "--to",
        "gguf",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("not found"), "{err}");
    // A GGUF given where a folder is expected, and the reverse.
    let g = fixture("tiny-qwen3.auto.gguf");
    let err = fails(&[
        "-m",
        g.to_str().unwrap(),
        "--to",
        "gguf",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("not a folder"), "{err}");
    let err = fails(&[
        "-m",
        m.to_str().unwrap(),
        "--to",
        "hf",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("tiny-qwen3"), "{err}");
    // A GGUF of an architecture that has no Hugging Face counterpart here.
    let bad = dir.join("gpt2.gguf");
    let mut w = autoround_cpu::formats::gguf::GgufWriter::new(3, 32);
    w.add_kv(
        "general.architecture",
        autoround_cpu::formats::gguf::GgufValue::String("gpt2".into()),
    );
    w.write_to_path(&bad).unwrap();
    let err = fails(&[
        "-m",
        bad.to_str().unwrap(),
        "--to",
        "hf",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("architecture 'gpt2'"), "{err}");
    only(&dir, &["gpt2.gguf"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
