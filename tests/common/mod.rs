//! Shared helpers of the integration tests: where the test models live, and the golden data.
#![allow(dead_code)]

use std::path::PathBuf;

/// The model cache (`AUTOROUND_MODELS`, default `~/.cache/autoround-cpu/models`).
pub fn models_dir() -> PathBuf {
    if let Ok(d) = std::env::var("AUTOROUND_MODELS") {
        return PathBuf::from(d);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".cache/autoround-cpu/models")
}

/// Whether the llama.cpp peer (built for the native CPU) runs the same float kernels as our
/// engine, so that float results can be compared bit for bit. Our engine's tier is AVX2/FMA; on a
/// CPU with AVX-512, llama.cpp's AVX-512 kernels sum in another order and results differ in the
/// last bits (up to a few 1e-3 relative in imatrix sums), so tests compare within tolerance there.
pub fn llama_cpp_runs_our_kernels() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Path of `SmolLM2-135M-Instruct.{variant}.gguf`, or `None` (with a loud message) when it has not
/// been made. Under CI a missing model is a failure, not a skip.
pub fn model(variant: &str) -> Option<PathBuf> {
    let p = models_dir().join(format!("SmolLM2-135M-Instruct.{variant}.gguf"));
    if p.is_file() {
        return Some(p);
    }
    let msg = format!(
        "{} is missing: run tools/fetch-models.sh (Q4_1) and tools/make-models.sh (F16, Q8_0, Q4_K_M)",
        p.display()
    );
    if in_ci() {
        panic!("{msg}");
    }
    eprintln!("SKIP: {msg}");
    None
}

/// Path of `synthetic-{preset}.F16.gguf` (made by tools/make-models.sh with
/// tools/make-synthetic-model), or `None` with a SKIP message; under CI a missing file fails.
pub fn synthetic(preset: &str) -> Option<PathBuf> {
    let p = models_dir().join(format!("synthetic-{preset}.F16.gguf"));
    if p.is_file() {
        return Some(p);
    }
    let msg = format!(
        "{} is missing: run tools/make-models.sh (tools/make-synthetic-model --preset {preset})",
        p.display()
    );
    if in_ci() {
        panic!("{msg}");
    }
    eprintln!("SKIP: {msg}");
    None
}

/// The golden data recorded from llama.cpp by tools/make-golden.sh.
pub fn golden() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama_cpp/golden.json");
    let s = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (run tools/make-golden.sh)", p.display()));
    serde_json::from_str(&s).expect("golden.json parses")
}

/// `../shared/data/<name>` beside the checkout.
pub fn shared_data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(name)
}

/// The workspace root (the folder whose `Cargo.toml` has `[workspace]`), also from the tests of a
/// member crate (which include this file by `#[path]`).
pub fn workspace_root() -> PathBuf {
    let start = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut d = start.clone();
    loop {
        let toml = std::fs::read_to_string(d.join("Cargo.toml")).unwrap_or_default();
        if toml.lines().any(|l| l.trim() == "[workspace]") {
            return d;
        }
        if !d.pop() {
            return start;
        }
    }
}

/// llama.cpp's bin folder: the last stdout line of the peer script (`PEER_LLAMA_CPP`, default
/// `../shared/tools/peer-llama-cpp.sh` beside the checkout), which builds llama.cpp once if needed.
/// `None` (with a SKIP message) when the script is missing or fails; under CI that is a failure.
pub fn llama_cpp_bin() -> Option<PathBuf> {
    static BIN: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let found = BIN.get_or_init(|| {
        // llama.cpp's AMX path (weights repacked at load) dies with SIGSEGV in
        // ggml_backend_amx_mul_mat on machines with AMX here; every llama.cpp tool the tests run
        // reads this variable (--no-repack). Results do not depend on it.
        std::env::set_var("LLAMA_ARG_REPACK", "0");
        let script = std::env::var_os("PEER_LLAMA_CPP")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("../shared/tools/peer-llama-cpp.sh"));
        if !script.is_file() {
            return Err(format!(
                "the llama.cpp peer script {} is missing",
                script.display()
            ));
        }
        let out = std::process::Command::new("bash")
            .arg(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let bin = stdout.lines().last().map(str::trim).unwrap_or_default();
        if !out.status.success() || bin.is_empty() || !std::path::Path::new(bin).is_dir() {
            return Err(format!("{} failed ({})", script.display(), out.status));
        }
        Ok(PathBuf::from(bin))
    });
    match found {
        Ok(bin) => Some(bin.clone()),
        Err(msg) => {
            assert!(!in_ci(), "{msg}");
            eprintln!("SKIP: {msg}");
            None
        }
    }
}

/// Runs our binary with `args` and waits for it. (The binary is known to the main package's
/// tests only; other crates' tests include this module too.)
pub fn cli(args: &[&str]) -> std::process::Output {
    let bin = option_env!("CARGO_BIN_EXE_autoround-cpu")
        .expect("common::cli runs in the autoround-cpu package's tests");
    std::process::Command::new(bin)
        .args(args)
        .output()
        .expect("runs the binary")
}

/// A path as the command line takes it (test paths are UTF-8).
pub fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A command failed cleanly: non-zero exit, no panic, and stderr names every one of `needles`.
pub fn assert_clean_error(o: &std::process::Output, needles: &[&str]) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure; stderr: {e}");
    assert!(!e.contains("panicked"), "panicked: {e}");
    for n in needles {
        assert!(e.contains(n), "stderr should mention {n:?}: {e}");
    }
}

/// The index of the largest value (the first of equals), as greedy sampling picks it.
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}
