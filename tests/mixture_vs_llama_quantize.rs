//! Our mixture plan chooses the same type for every tensor as llama.cpp's llama-quantize.
//!
//! For each mixture, `llama-quantize --allow-requantize` turns the F16 test model
//! (SmolLM2-135M-Instruct: llama architecture, 30 layers, n_embd 576 — not a multiple of 256,
//! so the fallbacks are exercised — GQA 3, tied embeddings) into a GGUF; we read that file's tensor
//! types with our GGUF reader and compare them, and their order, with
//! [`plan_with`](autoround_cpu::quantize::mixture::plan_with) on the input's tensors. The count of
//! fallbacks is compared with llama-quantize's "N of M tensor(s) required fallback quantization".
//! A few extra runs cover the options: an importance matrix (made here by llama-imatrix; q2_k_s
//! requires one, q4_0/q5_0 change with one), `--pure`, `--output-tensor-type` and
//! `--token-embedding-type`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use autoround_cpu::quantize::mixture::{plan_with, Mixture, ModelMeta, PlanOptions, TensorInfo};
use autoround_formats::gguf::GgufFile;
use autoround_formats::GgmlType;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run a llama.cpp tool; its stdout and stderr together, or a panic with them.
fn run(bin: &Path, tool: &str, args: &[&str]) -> String {
    let out = Command::new(bin.join(tool))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

/// llama-quantize's "WARNING: N of M tensor(s) required fallback quantization" (0 when absent).
fn reported_fallbacks(log: &str) -> usize {
    log.lines()
        .find_map(|l| {
            let rest = l.split("WARNING: ").nth(1)?;
            rest.contains("required fallback quantization")
                .then(|| rest.split_whitespace().next()?.parse().ok())?
        })
        .unwrap_or(0)
}

struct Case {
    label: String,
    mixture: Mixture,
    opts: PlanOptions,
    args: Vec<String>,
}

#[test]
fn every_mixture_matches_llama_quantize() {
    let Some(bin) = common::llama_cpp_bin() else {
        return;
    };
    let Some(model) = common::model("F16") else {
        return;
    };
    let t_all = Instant::now();
    let dir = TempDir(std::env::temp_dir().join(format!("arc-mixture-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();

    // An importance matrix from llama.cpp itself (q2_k_s cannot be made without one).
    let calib = common::shared_data("calib.txt");
    if !calib.is_file() {
        let msg = format!("{} (calibration text) is missing", calib.display());
        assert!(!common::in_ci(), "{msg}");
        eprintln!("SKIP: {msg}");
        return;
    }
    let text = std::fs::read(&calib).unwrap_or_else(|e| panic!("{}: {e}", calib.display()));
    let slice = dir.0.join("calib-slice.txt");
    std::fs::write(&slice, &text[..text.len().min(8000)]).unwrap();
    let imatrix = dir.0.join("imatrix.gguf");
    run(
        &bin,
        "llama-imatrix",
        &[
            "-m",
            model.to_str().unwrap(),
            "-f",
            slice.to_str().unwrap(),
            "-c",
            "128",
            "--chunks",
            "2",
            "-t",
            "1",
            "-o",
            imatrix.to_str().unwrap(),
        ],
    );
    let imatrix_args = vec!["--imatrix".to_string(), imatrix.display().to_string()];

    // q2_k_s is refused without an imatrix, as `requires_imatrix` says
    let out = Command::new(bin.join("llama-quantize"))
        .args(["--allow-requantize", model.to_str().unwrap()])
        .arg(dir.0.join("refused.gguf"))
        .args(["Q2_K_S", "2"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "llama-quantize made Q2_K_S without an imatrix"
    );
    assert!(Mixture::Q2_K_S.requires_imatrix());
    assert!(Mixture::ALL
        .iter()
        .all(|m| m.requires_imatrix() == (*m == Mixture::Q2_K_S)));

    let mut cases: Vec<Case> = Mixture::ALL
        .iter()
        .map(|&m| {
            let needs = m.requires_imatrix();
            Case {
                label: m.name().into(),
                mixture: m,
                opts: PlanOptions {
                    has_imatrix: needs,
                    ..Default::default()
                },
                args: if needs { imatrix_args.clone() } else { vec![] },
            }
        })
        .collect();
    for m in [Mixture::Q4_0, Mixture::Q5_0] {
        cases.push(Case {
            label: format!("{m} +imatrix"),
            mixture: m,
            opts: PlanOptions {
                has_imatrix: true,
                ..Default::default()
            },
            args: imatrix_args.clone(),
        });
    }
    cases.push(Case {
        label: "q4_k_m --pure".into(),
        mixture: Mixture::Q4_K_M,
        opts: PlanOptions {
            pure: true,
            ..Default::default()
        },
        args: vec!["--pure".into()],
    });
    cases.push(Case {
        label: "q3_k_m --output-tensor-type q5_0".into(),
        mixture: Mixture::Q3_K_M,
        opts: PlanOptions {
            output_tensor_type: Some(GgmlType::Q5_0),
            ..Default::default()
        },
        args: vec!["--output-tensor-type".into(), "q5_0".into()],
    });
    cases.push(Case {
        label: "q5_k_s --token-embedding-type q8_0".into(),
        mixture: Mixture::Q5_K_S,
        opts: PlanOptions {
            token_embedding_type: Some(GgmlType::Q8_0),
            ..Default::default()
        },
        args: vec!["--token-embedding-type".into(), "q8_0".into()],
    });

    let input = GgufFile::open(&model).unwrap();
    let meta = ModelMeta::from_gguf(&input).unwrap();
    assert_eq!((meta.n_layer, meta.n_gqa(), meta.n_expert), (30, 3, 0));
    let tensors: Vec<TensorInfo> = input.tensors().iter().map(TensorInfo::from).collect();

    // A token-embedding type whose blocks do not fit the 576-element rows: llama-quantize takes
    // it without a fallback and fails when it quantizes; we refuse it when planning.
    let out = Command::new(bin.join("llama-quantize"))
        .args(["--allow-requantize", "--token-embedding-type", "q4_k"])
        .arg(&model)
        .arg(dir.0.join("refused.gguf"))
        .args(["Q5_K_S", "2"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "llama-quantize took q4_K rows of 576"
    );
    let opts = PlanOptions {
        token_embedding_type: Some(GgmlType::Q4_K),
        ..Default::default()
    };
    let e = plan_with(Mixture::Q5_K_S, &meta, &tensors, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("token_embd.weight") && e.contains("576"), "{e}");

    let mut report = Vec::new();
    let mut failures = Vec::new();
    for case in &cases {
        let t0 = Instant::now();
        let out = dir.0.join("out.gguf");
        let name = case.mixture.llama_name();
        let mut args: Vec<&str> = vec!["--allow-requantize"];
        args.extend(case.args.iter().map(String::as_str));
        args.extend([model.to_str().unwrap(), out.to_str().unwrap(), &name, "2"]);
        let log = run(&bin, "llama-quantize", &args);
        let theirs = GgufFile::open(&out).unwrap();
        let ours = plan_with(case.mixture, &meta, &tensors, &case.opts).unwrap();

        let mut differ = Vec::new();
        if theirs.tensors().len() != ours.tensors.len() {
            differ.push(format!(
                "{} tensors vs our {}",
                theirs.tensors().len(),
                ours.tensors.len()
            ));
        }
        for (i, (t, p)) in theirs.tensors().iter().zip(&ours.tensors).enumerate() {
            if t.name != p.name {
                differ.push(format!(
                    "#{i}: llama.cpp writes {} where we order {}",
                    t.name, p.name
                ));
            } else if t.ty != p.ty {
                differ.push(format!("{}: llama.cpp {} vs our {}", t.name, t.ty, p.ty));
            }
        }
        let fallbacks = reported_fallbacks(&log);
        if fallbacks != ours.n_fallback {
            differ.push(format!(
                "llama-quantize reports {fallbacks} fallbacks, we count {}",
                ours.n_fallback
            ));
        }
        let general_ftype = theirs.get("general.file_type").and_then(|v| v.as_u32());
        if general_ftype != Some(case.mixture.ftype()) {
            differ.push(format!(
                "general.file_type {general_ftype:?} vs our ftype {}",
                case.mixture.ftype()
            ));
        }
        let mut types = std::collections::BTreeMap::<String, usize>::new();
        for t in theirs.tensors() {
            *types.entry(t.ty.to_string()).or_default() += 1;
        }
        report.push(format!(
            "{:<36} {:>3} tensors compared, {:<5} fallbacks {:>3}/{:<3} {:>5.1}s  {:?}",
            case.label,
            theirs.tensors().len(),
            if differ.is_empty() { "equal" } else { "DIFFER" },
            fallbacks,
            ours.n_fallback,
            t0.elapsed().as_secs_f64(),
            types
        ));
        if !differ.is_empty() {
            failures.push(format!("{}:\n  {}", case.label, differ.join("\n  ")));
        }
        drop(theirs);
        std::fs::remove_file(&out).unwrap();
    }
    eprintln!("{}", report.join("\n"));
    eprintln!("total {:.1}s", t_all.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
