//! `autoround-cpu quantize` on bad input: a clear error naming the problem, no panic, and nothing
//! written (no output file, no temporary file left beside it).

mod common;

use autoround_formats::imatrix::{Imatrix, ImatrixEntry, ImatrixFormat};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn quantize(args: &[&str]) -> Output {
    common::cli(&[&["quantize"], args].concat())
}

use common::assert_clean_error;

fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("autoround-qcli-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// The folder holds exactly `names` (no temporary files).
fn assert_only(dir: &Path, names: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want, "files in {}", dir.display());
}

use common::path_str as s;

#[test]
fn bad_flags_are_named_before_any_work() {
    let Some(model) = common::model("F16") else {
        return;
    };
    let dir = tmp_dir("flags");
    let out = dir.join("x.gguf");
    let m = s(&model);
    let o = s(&out);
    assert_clean_error(
        &quantize(&["-m", m, "--format", "gguf:q4_k_m", "-o", o]),
        &["--iters 200", "--iters 0"],
    );
    assert_clean_error(
        &quantize(&["-m", m, "--format", "gguf:q9_k", "--iters", "0", "-o", o]),
        &["unknown mixture 'gguf:q9_k'", "q4_k_m"],
    );
    assert_clean_error(
        &quantize(&["-m", m, "--format", "auto_round", "--iters", "0", "-o", o]),
        &["--format auto_round", "gguf:"],
    );
    assert_clean_error(
        &quantize(&[
            "-m",
            m,
            "--format",
            "gguf:q4_0",
            "--iters",
            "0",
            "--output-tensor-type",
            "q9",
            "-o",
            o,
        ]),
        &["--output-tensor-type q9"],
    );
    assert_clean_error(
        &quantize(&[
            "-m",
            "/nonexistent/model.gguf",
            "--format",
            "gguf:q4_0",
            "--iters",
            "0",
            "-o",
            o,
        ]),
        &["/nonexistent/model.gguf", "not found"],
    );
    assert_clean_error(
        &quantize(&[
            "-m",
            m,
            "--format",
            "gguf:q4_0",
            "--iters",
            "0",
            "-o",
            s(&dir.join("no/such/dir/x.gguf")),
        ]),
        &["does not exist"],
    );
    // --output_dir is created when missing (the file is named after the model).
    let made = dir.join("made/here");
    let o2 = quantize(&[
        "-m",
        m,
        "--format",
        "gguf:q8_0",
        "--iters",
        "0",
        "-t",
        "2",
        "--output_dir",
        s(&made),
    ]);
    assert!(
        o2.status.success(),
        "{}",
        String::from_utf8_lossy(&o2.stderr)
    );
    assert!(made.join("SmolLM2-135M-Instruct-Q8_0.gguf").is_file());
    std::fs::remove_dir_all(dir.join("made")).expect("cleanup");
    // q2_k_s needs an imatrix, as llama-quantize says.
    assert_clean_error(
        &quantize(&["-m", m, "--format", "gguf:q2_k_s", "--iters", "0", "-o", o]),
        &["q2_k_s needs an importance matrix", "--imatrix"],
    );
    // A truncated model file.
    let bytes = std::fs::read(&model).expect("model");
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &bytes[..100_000]).expect("write");
    assert_clean_error(
        &quantize(&[
            "-m",
            s(&cut),
            "--format",
            "gguf:q4_0",
            "--iters",
            "0",
            "-o",
            o,
        ]),
        &["cut.gguf"],
    );
    assert_only(&dir, &["cut.gguf"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn existing_output_is_kept_unless_overwrite() {
    let Some(model) = common::model("F16") else {
        return;
    };
    let dir = tmp_dir("exists");
    let out = dir.join("out.gguf");
    std::fs::write(&out, b"precious").expect("write");
    let args = [
        "-m",
        s(&model),
        "--format",
        "gguf:q8_0",
        "--iters",
        "0",
        "-t",
        "2",
        "-o",
        s(&out),
    ];
    assert_clean_error(&quantize(&args), &["out.gguf exists", "--overwrite"]);
    assert_eq!(std::fs::read(&out).expect("read"), b"precious");
    // The input itself as output: refused even with --overwrite.
    let mut same = args.to_vec();
    same[9] = s(&model);
    same.push("--overwrite");
    assert_clean_error(&quantize(&same), &["is the input model"]);
    let mut ok = args.to_vec();
    ok.push("--overwrite");
    let o = quantize(&ok);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("BPW") && e.contains("MB/s"), "summary: {e}");
    assert!(std::fs::metadata(&out).expect("out").len() > 100_000_000);
    assert_only(&dir, &["out.gguf"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// An importance matrix made for another model: names that match but lengths that do not, or
/// no name that matches at all.
#[test]
fn imatrix_for_another_model_is_refused() {
    let Some(model) = common::model("F16") else {
        return;
    };
    let dir = tmp_dir("imatrix");
    let out = dir.join("out.gguf");
    let write = |name: &str, entries: &[(&str, usize)]| -> PathBuf {
        let im = Imatrix {
            format: ImatrixFormat::Gguf,
            entries: entries
                .iter()
                .map(|&(n, len)| {
                    (
                        n.to_string(),
                        ImatrixEntry {
                            sums: vec![1.0; len],
                            counts: vec![512],
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
            datasets: vec!["calib.txt".into()],
            chunk_count: 1,
            chunk_size: 512,
        };
        let p = dir.join(name);
        im.write_gguf(&p).expect("write imatrix");
        p
    };
    // SmolLM2's rows are 576 long; an imatrix from a model with rows of 1024.
    let wrong_len = write("wrong-len.gguf", &[("blk.0.attn_q.weight", 1024)]);
    assert_clean_error(
        &quantize(&[
            "-m",
            s(&model),
            "--format",
            "gguf:q4_0",
            "--iters",
            "0",
            "--imatrix",
            s(&wrong_len),
            "-o",
            s(&out),
        ]),
        &["blk.0.attn_q.weight", "1024", "576", "another model"],
    );
    let no_match = write("no-match.gguf", &[("model.layers.0.mlp.down_proj", 576)]);
    assert_clean_error(
        &quantize(&[
            "-m",
            s(&model),
            "--format",
            "gguf:q4_0",
            "--iters",
            "0",
            "--imatrix",
            s(&no_match),
            "-o",
            s(&out),
        ]),
        &["no entry for any tensor", "another model"],
    );
    std::fs::write(dir.join("junk.gguf"), b"GGUF\x03\x00\x00\x00junk").expect("write");
    assert_clean_error(
        &quantize(&[
            "-m",
            s(&model),
            "--format",
            "gguf:q4_0",
            "--iters",
            "0",
            "--imatrix",
            s(&dir.join("junk.gguf")),
            "-o",
            s(&out),
        ]),
        &["junk.gguf"],
    );
    assert_only(&dir, &["wrong-len.gguf", "no-match.gguf", "junk.gguf"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// A full disk (here: a file-size limit, with SIGXFSZ ignored so that the write fails with
/// EFBIG as it would with ENOSPC): the error names the file, and nothing is left behind.
#[test]
fn full_disk_leaves_nothing_behind() {
    let Some(model) = common::model("F16") else {
        return;
    };
    let dir = tmp_dir("full");
    let out = dir.join("out.gguf");
    let script = format!(
        "trap '' XFSZ; ulimit -f 20000; exec \"$0\" quantize -m '{}' --format gguf:q8_0 --iters 0 -t 2 -o '{}'",
        s(&model),
        s(&out)
    );
    let o = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_autoround-cpu"))
        .output()
        .expect("sh");
    assert_clean_error(&o, &["writing", "out.gguf", "File too large"]);
    assert_only(&dir, &[]);
    std::fs::remove_dir_all(&dir).ok();
}
