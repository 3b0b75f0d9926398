//! `autoround-cpu bench`: the tests it runs, the token counts its rates use, its two output
//! formats, and its refusals. (Only shapes and arithmetic are checked here: speed is compared
//! with llama.cpp by tools/bench-vs-llama-cpp.sh, never in a pass/fail test.)

mod common;

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    common::cli(&[&["bench"], args].concat())
}

#[test]
fn jsonl_rows_count_every_sequence_s_tokens() {
    let Some(m) = common::model("Q8_0") else {
        return;
    };
    let m = m.to_str().unwrap();
    let o = bench(&[
        "-m",
        m,
        "-p",
        "40",
        "-n",
        "5",
        "--parallel",
        "1,3",
        "-t",
        "1",
        "-r",
        "2",
        "-o",
        "jsonl",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let tests: Vec<&str> = rows.iter().map(|r| r["test"].as_str().unwrap()).collect();
    assert_eq!(tests, ["pp40", "tg5", "tg5x3"]);
    for (r, (prompt, gen, par)) in rows.iter().zip([(40, 0, 1), (0, 5, 1), (0, 5, 3)]) {
        assert_eq!(r["n_prompt"], prompt, "{r}");
        assert_eq!(r["n_gen"], gen, "{r}");
        assert_eq!(r["n_parallel"], par, "{r}");
        assert_eq!(r["n_threads"], 1, "{r}");
        let ns = r["samples_ns"].as_array().unwrap();
        let ts = r["samples_ts"].as_array().unwrap();
        assert_eq!((ns.len(), ts.len()), (2, 2), "{r}");
        // each rate is all the test's tokens (every sequence's) over that repetition's time
        let tokens = (prompt + gen * par) as f64;
        for (n, t) in ns.iter().zip(ts) {
            let (n, t) = (n.as_f64().unwrap(), t.as_f64().unwrap());
            assert!(n > 0.0, "{r}");
            let want = tokens / (n / 1e9);
            assert!((t - want).abs() <= 1e-6 * want, "{t} vs {want}: {r}");
        }
    }
}

#[test]
fn markdown_table_has_llama_bench_s_columns() {
    let Some(m) = common::model("Q8_0") else {
        return;
    };
    let o = bench(&[
        "-m",
        m.to_str().unwrap(),
        "-p",
        "0",
        "-n",
        "3",
        "--parallel",
        "2",
        "-t",
        "1",
        "-r",
        "1",
        "--no-warmup",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let cols = |l: &str| -> Vec<String> {
        l.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    assert_eq!(
        cols(lines[0]),
        ["model", "size", "params", "backend", "threads", "test", "t/s"]
    );
    let row = cols(lines[2]);
    assert_eq!(row[4], "1");
    assert_eq!(row[5], "tg3x2");
    let rate: f64 = row[6].split(" ± ").next().unwrap().parse().unwrap();
    assert!(rate > 0.0, "{out}");
}

#[test]
fn bad_counts_are_refused_by_name() {
    let Some(m) = common::model("Q8_0") else {
        return;
    };
    let m = m.to_str().unwrap();
    let o = bench(&["-m", m, "-p", "0", "-n", "2", "--parallel", "0"]);
    common::assert_clean_error(&o, &["--parallel"]);
    let o = bench(&["-m", m, "-p", "0", "-n", "2", "-t", "0"]);
    common::assert_clean_error(&o, &["-t"]);
    let o = bench(&["-m", m, "-p", "0", "-n", "0"]);
    common::assert_clean_error(&o, &["nothing to run"]);
    let o = bench(&["-m", m, "-n", "2", "-o", "csv"]);
    common::assert_clean_error(&o, &["csv"]);
}

#[test]
fn repack_says_what_it_did() {
    let Some(m) = common::model("Q8_0") else {
        return;
    };
    let m = m.to_str().unwrap();
    let args = [
        "-m",
        m,
        "-p",
        "0",
        "-n",
        "2",
        "--parallel",
        "16",
        "-r",
        "1",
        "--repack",
    ];
    let o = bench(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    if autoround_kernels::qgemm::available() {
        // SmolLM2: 7 matrices in each of 30 layers, and the tied output
        assert!(
            err.contains("unpacked 211 matrices into AMX int8 tiles"),
            "{err}"
        );
    } else {
        assert!(err.contains("--repack: ignored"), "{err}");
    }
    // a tier pinned below AMX: said, and the run goes on without tiles
    let o = Command::new(env!("CARGO_BIN_EXE_autoround-cpu"))
        .arg("bench")
        .args(args)
        .env("AUTOROUND_ISA", "scalar")
        .output()
        .expect("runs the binary");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("--repack: ignored: no AMX-INT8 tiles here"),
        "{err}"
    );
    let o = bench(&[&args[..], &["--numerics", "llama-cpp"]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("--repack: ignored with --numerics llama-cpp"),
        "{err}"
    );
}
