//! Rewriting real GGUF files (written by llama.cpp) with `GgufWriter::from_file` gives
//! byte-identical files, and the reference Python reader (`gguf`, via tools/check_gguf_py.py)
//! reads our output as we do.
//!
//! Models come from `$AUTOROUND_MODELS` (default `~/.cache/autoround-cpu/models`):
//! `SmolLM2-135M-Instruct.Q4_1.gguf` (tools/fetch-models.sh) and, when present, the F16, Q8_0 and
//! Q4_K_M files llama-quantize makes from it. Missing files are skipped with a message; with `CI`
//! set, the Q4_1 model and the Python `gguf` package are required.

use std::borrow::Cow;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use autoround_formats::gguf::{GgufFile, GgufHeader, GgufValue, GgufValueType, GgufWriter};
use autoround_formats::GgmlType;

fn models_dir() -> PathBuf {
    match std::env::var_os("AUTOROUND_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/autoround-cpu/models"),
    }
}

fn ci() -> bool {
    std::env::var_os("CI").is_some()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "autoround-gguf-rewrite-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Compare two files in 1 MiB chunks; on a difference, name the first differing offset.
fn assert_same_bytes(a: &Path, b: &Path) {
    let (la, lb) = (
        std::fs::metadata(a).expect("stat a").len(),
        std::fs::metadata(b).expect("stat b").len(),
    );
    let (mut fa, mut fb) = (
        File::open(a).expect("open a"),
        File::open(b).expect("open b"),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut offset = 0u64;
    while offset < la.min(lb) {
        let n = (la.min(lb) - offset).min(1 << 20) as usize;
        fa.read_exact(&mut ba[..n]).expect("read a");
        fb.read_exact(&mut bb[..n]).expect("read b");
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            panic!(
                "{} and {} differ first at byte offset {} ({:#04x} vs {:#04x})",
                a.display(),
                b.display(),
                offset + i as u64,
                ba[i],
                bb[i]
            );
        }
        offset += n as u64;
    }
    assert_eq!(
        la,
        lb,
        "{} and {} have equal contents up to {} bytes but different lengths",
        a.display(),
        b.display(),
        la.min(lb)
    );
}

/// Whether `python3` can import `gguf`. Without it: fail under CI, else print why we skip.
fn python_gguf_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import gguf"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = "python3 cannot `import gguf` (pip install gguf numpy): \
                   the Python cross-check is SKIPPED";
        assert!(!ci(), "{msg} (CI is set: it is required)");
        eprintln!("[gguf_rewrite] {msg}");
    }
    ok
}

/// Run tools/check_gguf_py.py on `path` and compare what the Python reader saw with `h`.
fn python_agrees(path: &Path, h: &GgufHeader) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/check_gguf_py.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{} {} failed: {}",
        script.display(),
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON from the script");
    let num = |k: &str| py[k].as_u64().unwrap_or_else(|| panic!("no {k} in {py}"));
    assert_eq!(num("tensor_count"), h.tensors.len() as u64, "tensor count");
    assert_eq!(num("kv_count"), h.metadata.len() as u64, "kv count");
    assert_eq!(num("version"), u64::from(h.version));
    assert_eq!(num("alignment"), h.alignment);
    assert_eq!(num("data_offset"), h.data_offset);
    let keys: Vec<(String, u64)> = serde_json::from_value(py["keys"].clone()).expect("keys");
    let ours: Vec<(String, u64)> = h
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), u64::from(v.value_type().id())))
        .collect();
    assert_eq!(keys, ours, "keys and value types");
    type PyTensor = (String, u32, Vec<u64>, u64, u64);
    let tensors: Vec<PyTensor> = serde_json::from_value(py["tensors"].clone()).expect("tensors");
    let ours: Vec<PyTensor> = h
        .tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.ty.id(),
                t.dims.clone(),
                h.data_offset + t.offset,
                t.size,
            )
        })
        .collect();
    assert_eq!(tensors, ours, "tensor infos");
    eprintln!(
        "[gguf_rewrite] python gguf agrees on {}: {} tensors, {} keys",
        path.display(),
        h.tensors.len(),
        h.metadata.len()
    );
}

#[test]
fn rewriting_real_models_is_byte_identical() {
    let dir = temp_dir("models");
    let python = python_gguf_available();
    let mut rewritten = 0;
    for quant in ["Q4_1", "F16", "Q8_0", "Q4_K_M"] {
        let name = format!("SmolLM2-135M-Instruct.{quant}.gguf");
        let path = models_dir().join(&name);
        if !path.exists() {
            if quant == "Q4_1" {
                let msg = format!(
                    "{} is missing: fetch it with tools/fetch-models.sh",
                    path.display()
                );
                assert!(!ci(), "{msg} (CI is set: it is required)");
                eprintln!("[gguf_rewrite] !!! SKIPPED {name}: {msg}");
            } else {
                eprintln!(
                    "[gguf_rewrite] skipped {name}: not present (made by tools/make-models.sh)"
                );
            }
            continue;
        }
        let file = GgufFile::open(&path).expect("open");
        assert!(!file.tensors().is_empty());
        let out = dir.join(&name);
        GgufWriter::from_file(&file)
            .write_to_path(&out)
            .expect("rewrite");
        assert_same_bytes(&path, &out);
        let again = GgufFile::open(&out).expect("open rewritten");
        assert_eq!(again.header(), file.header());
        if python {
            python_agrees(&out, again.header());
        }
        eprintln!(
            "[gguf_rewrite] {name}: rewritten byte-identical ({} bytes, {} tensors)",
            file.file_bytes().len(),
            file.tensors().len()
        );
        drop(again);
        std::fs::remove_file(&out).expect("remove rewritten");
        rewritten += 1;
    }
    eprintln!("[gguf_rewrite] {rewritten} model file(s) rewritten");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// Independently of the models: what our writer writes, the Python reader reads as we do,
/// including nested and empty arrays, a non-default alignment and v2.
#[test]
fn python_reads_our_writer_output() {
    if !python_gguf_available() {
        return;
    }
    use GgufValue as V;
    let dir = temp_dir("python");
    let f32_data: Vec<u8> = (0..32u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let q4k = vec![7u8; 2 * 144];
    for (version, alignment) in [(3u32, 32u64), (2, 64), (3, 128)] {
        let mut w = GgufWriter::new(version, alignment);
        if alignment != 32 {
            w.add_kv("general.alignment", V::U32(alignment as u32));
        }
        w.add_kv("general.architecture", V::String("llama".into()));
        w.add_kv("a.u8", V::U8(1));
        w.add_kv("a.i8", V::I8(-1));
        w.add_kv("a.u16", V::U16(2));
        w.add_kv("a.i16", V::I16(-2));
        w.add_kv("a.u32", V::U32(3));
        w.add_kv("a.i32", V::I32(-3));
        w.add_kv("a.f32", V::F32(0.5));
        w.add_kv("a.bool", V::Bool(true));
        w.add_kv("a.u64", V::U64(u64::MAX));
        w.add_kv("a.i64", V::I64(-4));
        w.add_kv("a.f64", V::F64(0.25));
        w.add_kv("a.str", V::String("ünïcode".into()));
        w.add_kv(
            "a.strs",
            V::Array(
                GgufValueType::String,
                vec![V::String("x".into()), V::String(String::new())],
            ),
        );
        w.add_kv("a.empty", V::Array(GgufValueType::F32, vec![]));
        w.add_kv(
            "a.nested",
            V::Array(
                GgufValueType::Array,
                vec![
                    V::Array(GgufValueType::String, vec![V::String("y".into())]),
                    V::Array(GgufValueType::String, vec![]),
                ],
            ),
        );
        w.add_tensor("t.f32", vec![8, 4], GgmlType::F32, Cow::Borrowed(&f32_data))
            .expect("f32");
        w.add_tensor("t.q4_k", vec![256, 2], GgmlType::Q4_K, Cow::Borrowed(&q4k))
            .expect("q4_K");
        let path = dir.join(format!("v{version}-a{alignment}.gguf"));
        w.write_to_path(&path).expect("write");
        let file = GgufFile::open(&path).expect("open");
        assert_eq!(file.alignment, alignment);
        python_agrees(&path, file.header());
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
