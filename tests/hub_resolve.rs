//! `-m owner/name` through a fake Hugging Face hub cache (HF_HUB_CACHE, HF_HUB_OFFLINE=1; no
//! network): the binary runs the cached model and prints what it prints for the same model given
//! by path. The cache is laid out as the hub writes it: `refs/main` holds the commit,
//! `snapshots/<commit>/<file>` are relative symlinks into `blobs/` (which here link to the real
//! test model, so nothing big is copied).

mod common;

use autoround_cpu::convert::{gguf_to_hf, HfDtype, HfOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HASH: &str = "1111111111111111111111111111111111111111";

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("arc-hub-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Puts the files `(name in the repo, real file)` into the cache as repo `repo`, revision main.
#[cfg(unix)]
fn put(cache: &Path, repo: &str, files: &[(String, PathBuf)]) -> PathBuf {
    let dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let snap = dir.join("snapshots").join(HASH);
    std::fs::create_dir_all(dir.join("blobs")).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    for (i, (name, real)) in files.iter().enumerate() {
        let blob = dir.join("blobs").join(format!("blob{i:04}"));
        std::os::unix::fs::symlink(real.canonicalize().unwrap(), &blob).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/blob{i:04}"), snap.join(name)).unwrap();
    }
    std::fs::create_dir_all(dir.join("refs")).unwrap();
    std::fs::write(dir.join("refs/main"), HASH).unwrap();
    snap
}

/// The binary with the fake cache, offline, and no other hub variable from the caller.
fn cli(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autoround-cpu"))
        .args(args)
        .env("HF_HUB_CACHE", cache)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("HF_HOME")
        .env_remove("HF_TOKEN")
        .env_remove("HF_ENDPOINT")
        .output()
        .expect("runs the binary")
}

fn ok(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "failed: {e}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const RUN: &[&str] = &[
    "-p",
    "The capital of France is",
    "-n",
    "4",
    "--temp",
    "0",
    "-t",
    "2",
];

fn run(cache: &Path, model: &str) -> String {
    let mut args = vec!["run", "-m", model];
    args.extend_from_slice(RUN);
    ok(&cli(cache, &args))
}

#[test]
fn missing_repo_and_bad_paths_are_clear_errors() {
    let cache = tmpdir("missing");
    let o = cli(
        &cache,
        &["run", "-m", "nobody/nothing", "-p", "hi", "-n", "1"],
    );
    common::assert_clean_error(
        &o,
        &["nobody/nothing", "not in the local cache", "HF_HUB_OFFLINE"],
    );
    for bad in ["./nope/model", "nope/model.gguf", "a/b/c"] {
        let o = cli(&cache, &["run", "-m", bad, "-p", "hi", "-n", "1"]);
        common::assert_clean_error(&o, &[bad, "no such file or directory"]);
    }
    std::fs::remove_dir_all(&cache).ok();
}

#[cfg(unix)]
#[test]
fn gguf_repo_runs_like_the_file() {
    let Some(q41) = common::model("Q4_1") else {
        return;
    };
    let cache = tmpdir("gguf");
    let name = "SmolLM2-135M-Instruct.Q4_1.gguf".to_string();
    put(&cache, "test/smol-gguf", &[(name.clone(), q41.clone())]);
    let want = run(&cache, q41.to_str().unwrap());
    assert!(!want.is_empty());
    assert_eq!(run(&cache, "test/smol-gguf"), want);
    assert_eq!(run(&cache, &format!("test/smol-gguf:{name}")), want);
    assert_eq!(run(&cache, &format!("test/smol-gguf@{HASH}")), want);

    // Two GGUFs: the error lists them and says how to pick one.
    let other = "SmolLM2-135M-Instruct.Q4_1-copy.gguf".to_string();
    put(
        &cache,
        "test/smol-two",
        &[(name.clone(), q41.clone()), (other.clone(), q41)],
    );
    let o = cli(
        &cache,
        &["run", "-m", "test/smol-two", "-p", "hi", "-n", "1"],
    );
    common::assert_clean_error(&o, &["test/smol-two:FILE", &name, &other]);
    assert_eq!(run(&cache, &format!("test/smol-two:{other}")), want);
    std::fs::remove_dir_all(&cache).ok();
}

#[cfg(unix)]
#[test]
fn hf_folder_repo_runs_like_the_folder() {
    let Some(q41) = common::model("Q4_1") else {
        return;
    };
    let dir = tmpdir("hf");
    // A sharded F16 folder (two safetensors and an index) made from the GGUF.
    let hf = dir.join("hf");
    let opts = HfOptions {
        dtype: HfDtype::F16,
        max_shard_bytes: 100 << 20,
        ..HfOptions::default()
    };
    let s = gguf_to_hf(&q41, &hf, &opts).unwrap();
    assert!(s.shards > 1, "expected shards, got {}", s.shards);
    let cache = dir.join("cache");
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&hf)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_str().unwrap().to_string(), e.path())
        })
        .collect();
    files.sort();
    assert!(files.iter().any(|f| f.0 == "model.safetensors.index.json"));
    let snap = put(&cache, "test/smol-hf", &files);
    let want = run(&cache, hf.to_str().unwrap());
    assert!(!want.is_empty());
    assert_eq!(run(&cache, "test/smol-hf"), want);
    assert_eq!(run(&cache, snap.to_str().unwrap()), want);

    // A shard missing from the cache is named, offline.
    let shard = files
        .iter()
        .find(|f| f.0.ends_with(".safetensors"))
        .unwrap()
        .0
        .clone();
    std::fs::remove_file(snap.join(&shard)).unwrap();
    let o = cli(
        &cache,
        &["run", "-m", "test/smol-hf", "-p", "hi", "-n", "1"],
    );
    common::assert_clean_error(&o, &["test/smol-hf", &shard, "HF_HUB_OFFLINE"]);
    std::fs::remove_dir_all(&dir).ok();
}
