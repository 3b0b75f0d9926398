//! `autoround-cpu quantize --format gguf:<mixture> --iters 0` against llama-quantize: from the
//! same F16 GGUF (and the same imatrix, made by llama-imatrix), the two output files must be
//! byte-identical — metadata, tensor order, types and every block.
//!
//! Two inputs: SmolLM2-135M (rows of 576, so most K-quant choices fall back to Q5_0/Q8_0) and the
//! synthetic Llama-shaped model of tools/make-synthetic-model (rows of 512 and 1536, whole
//! K-quant blocks everywhere). Files we write must also load in llama.cpp (it generates,
//! llama-perplexity runs) and in the `gguf` Python package.
//!
//! Needs llama.cpp (../shared/tools/peer-llama-cpp.sh) and the models of tools/make-models.sh;
//! outside CI the tests skip with a message when they are missing.

mod common;

use autoround_cpu::formats::gguf::GgufFile;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The mixtures the issue names, with and without an imatrix.
const NAMED: [&str; 7] = ["q4_0", "q8_0", "q4_k_m", "q2_k", "q3_k_m", "q5_k_m", "q6_k"];
/// The other mixtures (run on the synthetic model, where their K-quant rules matter).
const OTHERS: [&str; 10] = [
    "q3_k_s", "q3_k_l", "q4_1", "q4_k_s", "q5_0", "q5_1", "q5_k_s", "f16", "bf16", "f32",
];

fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("autoround-qvl-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// llama-imatrix on one 512-token chunk of the calibration text.
fn llama_imatrix(bin: &Path, model: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("imatrix.gguf");
    run(Command::new(bin.join("llama-imatrix"))
        .arg("-m")
        .arg(model)
        .arg("-f")
        .arg(common::shared_data("calib.txt"))
        .arg("-o")
        .arg(&out)
        .args(["--chunks", "1", "-c", "512", "-t", "2"]));
    out
}

/// Quantize `model` to `mixture` with both tools; panic naming the first differing tensor.
fn compare(bin: &Path, model: &Path, mixture: &str, imatrix: Option<&Path>, dir: &Path) -> PathBuf {
    let tag = if imatrix.is_some() { "-im" } else { "" };
    let theirs = dir.join(format!("llama-{mixture}{tag}.gguf"));
    let ours = dir.join(format!("ours-{mixture}{tag}.gguf"));
    let mut lq = Command::new(bin.join("llama-quantize"));
    lq.arg("--allow-requantize");
    if let Some(im) = imatrix {
        lq.arg("--imatrix").arg(im);
    }
    run(lq.arg(model).arg(&theirs).arg(mixture).arg("2"));
    let mut us = Command::new(env!("CARGO_BIN_EXE_autoround-cpu"));
    us.arg("quantize")
        .arg("-m")
        .arg(model)
        .arg("--format")
        .arg(format!("gguf:{mixture}"))
        .args(["--iters", "0", "-t", "2", "-o"])
        .arg(&ours);
    if let Some(im) = imatrix {
        us.arg("--imatrix").arg(im);
    }
    run(&mut us);
    let a = std::fs::read(&ours).expect("our output");
    let b = std::fs::read(&theirs).expect("llama-quantize's output");
    if a != b {
        panic!(
            "{mixture}{tag} on {}: {}",
            model.display(),
            first_difference(&ours, &theirs)
        );
    }
    eprintln!(
        "[quantize] {mixture}{tag} on {}: byte-identical ({} bytes)",
        model.display(),
        a.len()
    );
    std::fs::remove_file(&theirs).ok();
    ours
}

/// Where two GGUF files part: metadata, tensor table or which tensor's data.
fn first_difference(ours: &Path, theirs: &Path) -> String {
    let (a, b) = match (GgufFile::open(ours), GgufFile::open(theirs)) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => return format!("cannot open both: {:?} / {:?}", a.err(), b.err()),
    };
    let (ha, hb) = (a.header(), b.header());
    if ha.metadata != hb.metadata {
        let ka: Vec<_> = ha.metadata.iter().map(|(k, _)| k.as_str()).collect();
        let kb: Vec<_> = hb.metadata.iter().map(|(k, _)| k.as_str()).collect();
        if ka != kb {
            return format!("metadata keys differ:\nours   {ka:?}\ntheirs {kb:?}");
        }
        for ((k, va), (_, vb)) in ha.metadata.iter().zip(&hb.metadata) {
            if va != vb {
                return format!("metadata value of {k} differs: ours {va:?}, theirs {vb:?}");
            }
        }
    }
    for (ta, tb) in a.tensors().iter().zip(b.tensors()) {
        if ta.name != tb.name || ta.ty != tb.ty || ta.dims != tb.dims {
            return format!(
                "tensor table differs: ours {} {} {:?}, theirs {} {} {:?}",
                ta.name,
                ta.ty.name(),
                ta.dims,
                tb.name,
                tb.ty.name(),
                tb.dims
            );
        }
        let (da, db) = (a.tensor_data(ta), b.tensor_data(tb));
        if da != db {
            let at = da.iter().zip(db).position(|(x, y)| x != y).unwrap_or(0);
            return format!(
                "tensor {} ({}) differs first at byte {at} of {}",
                ta.name,
                ta.ty.name(),
                da.len()
            );
        }
    }
    "files differ outside the tensors (header layout or padding)".into()
}

fn setup(model: Option<PathBuf>) -> Option<(PathBuf, PathBuf)> {
    let model = model?;
    let bin = common::llama_cpp_bin()?;
    Some((bin, model))
}

#[test]
fn smollm2_named_mixtures_without_imatrix() {
    let Some((bin, model)) = setup(common::model("F16")) else {
        return;
    };
    let dir = tmp_dir("smol");
    for m in NAMED {
        let f = compare(&bin, &model, m, None, &dir);
        std::fs::remove_file(f).ok();
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn smollm2_named_mixtures_with_imatrix() {
    let Some((bin, model)) = setup(common::model("F16")) else {
        return;
    };
    let dir = tmp_dir("smol-im");
    let im = llama_imatrix(&bin, &model, &dir);
    for m in NAMED.iter().chain(&["q2_k_s"]) {
        let f = compare(&bin, &model, m, Some(&im), &dir);
        std::fs::remove_file(f).ok();
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn synthetic_every_mixture_without_imatrix() {
    let Some((bin, model)) = setup(common::synthetic("ci")) else {
        return;
    };
    let dir = tmp_dir("synth");
    for m in NAMED.iter().chain(&OTHERS) {
        let f = compare(&bin, &model, m, None, &dir);
        std::fs::remove_file(f).ok();
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn synthetic_k_mixtures_with_imatrix() {
    let Some((bin, model)) = setup(common::synthetic("ci")) else {
        return;
    };
    let dir = tmp_dir("synth-im");
    let im = llama_imatrix(&bin, &model, &dir);
    let with_im = [
        "q4_0", "q8_0", "q4_k_m", "q2_k", "q2_k_s", "q3_k_m", "q5_k_m", "q6_k", "q3_k_s", "q4_k_s",
        "q5_k_s", "q5_0",
    ];
    for m in with_im {
        let f = compare(&bin, &model, m, Some(&im), &dir);
        std::fs::remove_file(f).ok();
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Our q4_0 and q4_k_m files (from the synthetic model, whose K-quant tensors really are
/// K-quants, and from SmolLM2) load in llama.cpp and in the `gguf` Python package.
#[test]
fn our_files_load_in_llama_cpp_and_gguf_py() {
    let Some((bin, smol)) = setup(common::model("F16")) else {
        return;
    };
    let Some(synth) = common::synthetic("ci") else {
        return;
    };
    let dir = tmp_dir("load");
    let script = common::workspace_root().join("tools/check_gguf_py.py");
    let text = common::shared_data("eval.txt");
    for (model, m) in [(&smol, "q4_0"), (&smol, "q4_k_m"), (&synth, "q4_k_m")] {
        let ours = dir.join(format!("ours-{m}.gguf"));
        run(Command::new(env!("CARGO_BIN_EXE_autoround-cpu"))
            .arg("quantize")
            .arg("-m")
            .arg(model)
            .arg("--format")
            .arg(format!("gguf:{m}"))
            .args(["--iters", "0", "-t", "2", "--overwrite", "-o"])
            .arg(&ours));
        let gen = run(Command::new(bin.join("llama-completion"))
            .arg("-m")
            .arg(&ours)
            .args([
                "-p",
                "The capital of France is",
                "-n",
                "8",
                "-t",
                "2",
                "--temp",
                "0",
            ])
            .args(["-no-cnv", "--no-warmup"]));
        let generated = String::from_utf8_lossy(&gen.stdout);
        assert!(
            generated.len() > "The capital of France is".len(),
            "llama-completion generated nothing from {}: {generated:?}",
            ours.display()
        );
        let ppl = run(Command::new(bin.join("llama-perplexity"))
            .arg("-m")
            .arg(&ours)
            .arg("-f")
            .arg(&text)
            .args(["-c", "128", "--chunks", "2", "-t", "2"]));
        let log = String::from_utf8_lossy(&ppl.stderr).into_owned()
            + &String::from_utf8_lossy(&ppl.stdout);
        let est = log
            .lines()
            .find_map(|l| l.split("Final estimate: PPL = ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no final perplexity from llama-perplexity on {}:\n{log}",
                    ours.display()
                )
            });
        assert!(
            est.is_finite() && est > 1.0,
            "perplexity {est} on {}",
            ours.display()
        );
        let py = run(Command::new("python3").arg(&script).arg(&ours));
        let v: serde_json::Value =
            serde_json::from_slice(&py.stdout).expect("JSON from check_gguf_py");
        let ours_file = GgufFile::open(&ours).expect("our reader");
        assert_eq!(
            v["tensor_count"].as_u64(),
            Some(ours_file.tensors().len() as u64),
            "gguf-py's tensor count"
        );
        eprintln!(
            "[quantize] {} from {}: llama.cpp generates, perplexity {est:.2} (2 chunks of 128), gguf-py reads {} tensors",
            m,
            model.display(),
            ours_file.tensors().len()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// From a Hugging Face folder: `quantize -m FOLDER` equals converting the folder to GGUF
/// (`convert --to gguf`, which is byte-identical with llama.cpp's convert_hf_to_gguf.py: see
/// tests/convert_fixtures.rs) and running llama-quantize on that.
#[test]
fn hf_folder_quantizes_like_convert_then_llama_quantize() {
    let Some((bin, model)) = setup(common::model("F16")) else {
        return;
    };
    let dir = tmp_dir("hf");
    let folder = dir.join("smollm2-hf");
    let gguf = dir.join("converted.gguf");
    let ours = env!("CARGO_BIN_EXE_autoround-cpu");
    run(Command::new(ours)
        .args(["convert", "--to", "hf", "-m"])
        .arg(&model)
        .arg("-o")
        .arg(&folder));
    run(Command::new(ours)
        .args(["convert", "--to", "gguf", "-m"])
        .arg(&folder)
        .arg("-o")
        .arg(&gguf));
    for m in ["q4_k_m", "q4_0"] {
        let theirs = dir.join(format!("llama-{m}.gguf"));
        let from_folder = dir.join(format!("ours-{m}.gguf"));
        run(Command::new(bin.join("llama-quantize"))
            .arg(&gguf)
            .arg(&theirs)
            .arg(m)
            .arg("2"));
        run(Command::new(ours)
            .arg("quantize")
            .arg("-m")
            .arg(&folder)
            .arg("--format")
            .arg(format!("gguf:{m}"))
            .args(["--iters", "0", "-t", "2", "-o"])
            .arg(&from_folder));
        let (a, b) = (
            std::fs::read(&from_folder).expect("ours"),
            std::fs::read(&theirs).expect("theirs"),
        );
        if a != b {
            panic!(
                "{m} from the folder: {}",
                first_difference(&from_folder, &theirs)
            );
        }
        eprintln!("[quantize] {m} from an HF folder: byte-identical with convert + llama-quantize");
    }
    std::fs::remove_dir_all(&dir).ok();
}
