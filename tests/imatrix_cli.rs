//! `autoround-cpu imatrix` on bad input: clear errors naming the problem, never a panic, and no
//! output file left behind (or an existing one left as it was).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cli;

use common::assert_clean_error;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("arc-imatrix-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

use common::path_str as s;

#[test]
fn bad_inputs_are_clear_errors() {
    let d = temp_dir("bad");
    let out = d.0.join("out.gguf");
    let text = d.0.join("short.txt");
    std::fs::write(&text, "Just a few words, far from two chunks.\n").unwrap();

    // A model that cannot be opened (before the text is even read).
    let o = cli(&[
        "imatrix",
        "-m",
        "/nonexistent/m.gguf",
        "-f",
        s(&text),
        "-o",
        s(&out),
    ]);
    assert_clean_error(&o, &["/nonexistent/m.gguf"]);
    let junk = d.0.join("junk.gguf");
    std::fs::write(&junk, b"not a gguf file at all").unwrap();
    let o = cli(&["imatrix", "-m", s(&junk), "-f", s(&text), "-o", s(&out)]);
    assert_clean_error(&o, &["junk.gguf"]);

    // An unreadable text file.
    let o = cli(&[
        "imatrix",
        "-m",
        s(&junk),
        "-f",
        "/nonexistent/calib.txt",
        "-o",
        s(&out),
    ]);
    assert_clean_error(&o, &["/nonexistent/calib.txt"]);
    let bin = d.0.join("binary.txt");
    std::fs::write(&bin, [0xffu8, 0xfe, 0x00, 0x41]).unwrap();
    let o = cli(&["imatrix", "-m", s(&junk), "-f", s(&bin), "-o", s(&out)]);
    assert_clean_error(&o, &["binary.txt", "UTF-8"]);

    // Output problems are found before any work.
    let o = cli(&[
        "imatrix",
        "-m",
        s(&junk),
        "-f",
        s(&text),
        "-o",
        "/nonexistent/dir/x.gguf",
    ]);
    assert_clean_error(&o, &["/nonexistent/dir", "does not exist"]);
    let o = cli(&["imatrix", "-m", s(&junk), "-f", s(&text), "-o", s(&d.0)]);
    assert_clean_error(&o, &["is a directory"]);
    let existing = d.0.join("existing.gguf");
    std::fs::write(&existing, b"keep me").unwrap();
    let o = cli(&[
        "imatrix",
        "-m",
        s(&junk),
        "-f",
        s(&text),
        "-o",
        s(&existing),
    ]);
    assert_clean_error(&o, &["existing.gguf", "--overwrite"]);
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");

    // Bad options.
    let o = cli(&[
        "imatrix",
        "-m",
        s(&junk),
        "-f",
        s(&text),
        "-o",
        s(&out),
        "-c",
        "0",
    ]);
    assert_clean_error(&o, &["--ctx-size"]);
    let o = cli(&[
        "imatrix",
        "-m",
        s(&junk),
        "-f",
        s(&text),
        "-o",
        s(&out),
        "--chunks",
        "0",
    ]);
    assert_clean_error(&o, &["--chunks"]);
    let o = cli(&[
        "imatrix",
        "-m",
        s(&junk),
        "-f",
        s(&text),
        "--output-format",
        "csv",
    ]);
    assert_eq!(o.status.code(), Some(2), "clap rejects the value");

    // Text too short for llama-imatrix's two chunks, with a real model.
    let Some(model) = common::model("Q4_1") else {
        return;
    };
    let o = cli(&["imatrix", "-m", s(&model), "-f", s(&text), "-o", s(&out)]);
    assert_clean_error(&o, &["you need at least 1024 tokens", "only"]);
    let o = cli(&[
        "imatrix",
        "-m",
        s(&model),
        "-f",
        s(&text),
        "-o",
        s(&out),
        "-c",
        "8",
        "--from-chunk",
        "5",
    ]);
    assert_clean_error(&o, &["skipping 5 chunks"]);
    let empty = d.0.join("empty.txt");
    std::fs::write(&empty, "\n").unwrap();
    let o = cli(&["imatrix", "-m", s(&model), "-f", s(&empty), "-o", s(&out)]);
    assert_clean_error(&o, &["empty.txt", "empty"]);
    assert!(!out.exists(), "no output after a failure");
    let leftovers: Vec<_> = std::fs::read_dir(&d.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// A tiny run end to end: the file is written (legacy form for a .dat name), reads back, and
/// `--overwrite` replaces it; `--save-frequency` copies are named `<output>.at_<n>`.
#[test]
fn small_run_writes_both_forms() {
    let Some(model) = common::model("Q4_1") else {
        return;
    };
    let d = temp_dir("small");
    // 64-token chunks: tokens enough for 2 chunks of a short text, in seconds.
    let text = d.0.join("calib.txt");
    let para =
        "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. ";
    std::fs::write(&text, para.repeat(12)).unwrap();
    let gguf = d.0.join("m.gguf");
    let args = |out: &Path| {
        vec![
            "imatrix".to_string(),
            "-m".into(),
            s(&model).into(),
            "-f".into(),
            s(&text).into(),
            "-o".into(),
            s(out).into(),
            "-c".into(),
            "64".into(),
            "--chunks".into(),
            "2".into(),
            "-t".into(),
            "2".into(),
        ]
    };
    let run = |a: Vec<String>| {
        let o = Command::new(env!("CARGO_BIN_EXE_autoround-cpu"))
            .args(&a)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{a:?}: {err}");
        (String::from_utf8_lossy(&o.stdout).into_owned(), err)
    };
    let mut a = args(&gguf);
    a.extend(["--save-frequency".into(), "1".into()]);
    let (stdout, _) = run(a);
    assert!(stdout.contains("Final estimate: PPL = "), "{stdout}");
    let m = autoround_formats::imatrix::Imatrix::read(&gguf).unwrap();
    assert_eq!(m.format, autoround_formats::imatrix::ImatrixFormat::Gguf);
    assert_eq!((m.chunk_count, m.chunk_size), (2, 64));
    assert_eq!(m.datasets, vec![s(&text).to_string()]);
    assert_eq!(m.entries.len(), 30 * 7);
    assert!(m.entries.values().all(|e| e.counts == [128]));
    // Both chunks run side by side in one micro-batch: the count jumps from 0 to 2 chunks.
    assert!(!d.0.join("m.gguf.at_1").exists());
    let at = autoround_formats::imatrix::Imatrix::read(d.0.join("m.gguf.at_2")).unwrap();
    assert_eq!(at, m);

    // The same run to a .dat name: the legacy form of the same sums.
    let dat = d.0.join("m.dat");
    let mut a = args(&dat);
    a.push("--no-ppl".into());
    let (stdout, _) = run(a);
    assert!(!stdout.contains("PPL"), "{stdout}");
    let l = autoround_formats::imatrix::Imatrix::read(&dat).unwrap();
    assert_eq!(l.format, autoround_formats::imatrix::ImatrixFormat::Legacy);
    assert_eq!(std::fs::read(&dat).unwrap(), m.encode_legacy().unwrap());

    // An existing output is replaced only with --overwrite.
    let mut a = args(&gguf);
    a.extend(["--overwrite".into(), "--output-format".into(), "dat".into()]);
    run(a);
    assert_eq!(std::fs::read(&gguf).unwrap(), std::fs::read(&dat).unwrap());
}
