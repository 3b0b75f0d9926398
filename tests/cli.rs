//! The command line on good and bad input: clear errors naming the problem, never a panic.

mod common;

use autoround_formats::gguf::{GgufValue, GgufWriter};
use autoround_kernels::GgmlType;
use std::borrow::Cow;
use std::process::Output;

use common::cli;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails with a message containing every one of `needles`, and without a panic.
use common::assert_clean_error;

#[test]
fn missing_model_is_named() {
    let o = cli(&["run", "-m", "/nonexistent/model.gguf", "-p", "hi"]);
    assert_clean_error(&o, &["/nonexistent/model.gguf"]);
}

#[test]
fn bad_flag_is_rejected_with_usage() {
    let o = cli(&["run", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--no-such-flag"));
}

#[test]
fn truncated_gguf_is_a_clear_error() {
    let Some(path) = common::model("Q4_1") else {
        return;
    };
    let bytes = std::fs::read(&path).unwrap();
    let dir = std::env::temp_dir().join(format!("arc-cli-trunc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for cut in [3usize, 20, 5000, bytes.len() / 2] {
        let p = dir.join(format!("cut{cut}.gguf"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let o = cli(&["run", "-m", p.to_str().unwrap(), "-p", "hi", "-n", "1"]);
        assert_clean_error(&o, &[&format!("cut{cut}.gguf")]);
        let o = cli(&["inspect", p.to_str().unwrap()]);
        assert_clean_error(&o, &[&format!("cut{cut}.gguf")]);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unknown_architecture_is_named() {
    let dir = std::env::temp_dir().join(format!("arc-cli-arch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("gpt9.gguf");
    let mut w = GgufWriter::new(3, 32);
    w.add_kv("general.architecture", GgufValue::String("gpt9".into()));
    let data = vec![0u8; 4 * 8];
    w.add_tensor(
        "token_embd.weight",
        vec![8, 1],
        GgmlType::F32,
        Cow::Owned(data),
    )
    .unwrap();
    w.write_to_path(&p).unwrap();
    let o = cli(&["run", "-m", p.to_str().unwrap(), "-p", "hi"]);
    assert_clean_error(&o, &["gpt9", "not supported"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn prompt_longer_than_context_is_refused() {
    let Some(path) = common::model("Q4_1") else {
        return;
    };
    let prompt = "word ".repeat(100);
    let o = cli(&[
        "run",
        "-m",
        path.to_str().unwrap(),
        "-p",
        &prompt,
        "-c",
        "32",
        "-n",
        "4",
    ]);
    assert_clean_error(&o, &["longer than the context of 32"]);
}

#[test]
fn inspect_lists_metadata_and_every_tensor() {
    let Some(path) = common::model("Q4_1") else {
        return;
    };
    let o = cli(&["inspect", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("GGUF v3, 33 metadata keys, 272 tensors"),
        "{out}"
    );
    assert!(out.contains("general.architecture"));
    assert!(out.contains("blk.29.ffn_down.weight"));
    assert!(out.contains("token_embd.weight") && out.contains("Q8_0"));
}

#[test]
fn doctor_reports_features_and_types() {
    let o = cli(&["doctor", "-t", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("threads:  2"), "{out}");
    assert!(out.contains("Q4_K") && out.contains("Q8_K"), "{out}");
}

#[test]
fn perplexity_refuses_too_short_text() {
    let Some(path) = common::model("Q4_1") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("arc-cli-ppl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("short.txt");
    std::fs::write(&f, "Only a few words.").unwrap();
    let o = cli(&[
        "perplexity",
        "-m",
        path.to_str().unwrap(),
        "-f",
        f.to_str().unwrap(),
        "-c",
        "128",
    ]);
    assert_clean_error(&o, &["you need at least 256 tokens"]);
    std::fs::remove_dir_all(&dir).ok();
}
