//! Our engine against llama.cpp on SmolLM2-135M-Instruct in the shipped Q4_1 and llama-quantize'd
//! F16, Q8_0 and Q4_K_M: prompt tokens, 64 greedy tokens for three prompts, and perplexity on
//! ../shared/data/eval.txt (`-c 512`), all recorded from llama.cpp by tools/make-golden.sh.
//!
//! Perplexity runs the first `AUTOROUND_PPL_CHUNKS` windows (default 4, to keep the test run
//! short; the closing measurements use all 40) and must be within 0.1% of llama-perplexity's
//! running estimate after the same number of windows.

mod common;

use autoround_cpu::engine::{perplexity, PerplexityOptions, Sampler, SamplingParams};
use autoround_cpu::model::llama::{KvCache, Logits, Numerics};
use autoround_cpu::model::ModelSource;

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn check_greedy(variant: &str) {
    let Some(path) = common::model(variant) else {
        return;
    };
    let golden = common::golden();
    let cases = golden["models"][variant]["greedy"]
        .as_array()
        .unwrap_or_else(|| panic!("no golden greedy data for {variant}"));
    let src = ModelSource::open(&path).unwrap();
    let tok = src.tokenizer().unwrap();
    let mut model = src.load().unwrap();
    // compared with llama.cpp's own tokens and perplexity: its arithmetic
    model.numerics = Numerics::LlamaCpp;
    let known_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/llama_cpp/known-divergences.json");
    let known: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(known_path).unwrap()).unwrap();
    let mut failures = Vec::new();
    for (ci, case) in cases.iter().enumerate() {
        let prompt = case["prompt"].as_str().unwrap();
        let want_prompt = ids(&case["prompt_ids"]);
        let got_prompt = tok.encode(prompt, true, true).unwrap();
        assert_eq!(
            got_prompt, want_prompt,
            "{variant}: prompt tokens of {prompt:?}"
        );
        let want = ids(&case["tokens"]);
        let mut cache = KvCache::new(&model.cfg, 512);
        let mut sampler = Sampler::new(SamplingParams::greedy());
        let mut logits = model
            .forward(&got_prompt, &mut cache, Logits::Last)
            .unwrap();
        let mut got = Vec::new();
        let mut note = String::new();
        for i in 0..want.len() {
            // llama.cpp's ignore_eos: end-of-generation tokens get a logit bias of -inf.
            for (id, x) in logits.iter_mut().enumerate() {
                if tok.is_eog(id as u32) {
                    *x = f32::NEG_INFINITY;
                }
            }
            let next = sampler.sample(&logits);
            if next != want[i] && note.is_empty() {
                let (a, b) = (logits[next as usize], logits[want[i] as usize]);
                note = format!("first difference at token {i}: ours {next} (logit {a:.4}), llama.cpp {} (logit {b:.4})", want[i]);
            }
            got.push(next);
            logits = model.forward(&[next], &mut cache, Logits::Last).unwrap();
        }
        let matched = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        match known[variant][ci.to_string()].as_u64() {
            // A recorded divergence: hold the line, and say so if it has moved.
            Some(k) if matched < k as usize => failures.push(format!(
                "{prompt:?}: regression, {matched} tokens match, {k} did before: {note}"
            )),
            Some(k) if matched > k as usize => eprintln!(
                "{variant} prompt {ci}: {matched} tokens match now, known-divergences.json says {k}: tighten it"
            ),
            Some(k) => eprintln!(
                "{variant} prompt {ci}: KNOWN DIVERGENCE after {k} of {} tokens: {note}",
                want.len()
            ),
            None if got != want => failures.push(format!(
                "{prompt:?}: {note}\n  ours:      {got:?}\n  llama.cpp: {want:?}"
            )),
            None => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{variant}: greedy tokens differ from llama.cpp:\n{}",
        failures.join("\n")
    );
}

fn check_perplexity(variant: &str) {
    let Some(path) = common::model(variant) else {
        return;
    };
    let golden = common::golden();
    let g = &golden["models"][variant]["perplexity"];
    let running: Vec<f64> = g["running"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let chunks: usize = std::env::var("AUTOROUND_PPL_CHUNKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let chunks = chunks.clamp(1, running.len());
    let text =
        std::fs::read_to_string(common::shared_data("eval.txt")).expect("../shared/data/eval.txt");
    let src = ModelSource::open(&path).unwrap();
    let tok = src.tokenizer().unwrap();
    let mut model = src.load().unwrap();
    // compared with llama.cpp's own tokens and perplexity: its arithmetic
    model.numerics = Numerics::LlamaCpp;
    let tokens = tok.encode(&text, true, false).unwrap();
    let bos = if tok.add_bos() { tok.bos_id() } else { None };
    let r = perplexity(
        &model,
        &tokens,
        bos,
        &PerplexityOptions {
            n_ctx: 512,
            n_chunks: Some(chunks),
        },
        |_, _, _| {},
    )
    .unwrap();
    let want = running[chunks - 1];
    let rel = (r.ppl - want).abs() / want;
    eprintln!("{variant}: ppl over {chunks} chunks: ours {:.4}, llama.cpp {want:.4}, relative difference {:.5}%", r.ppl, rel * 100.0);
    for (i, (a, b)) in r.running.iter().zip(&running).enumerate() {
        eprintln!("  [{}] ours {a:.4} llama.cpp {b:.4}", i + 1);
    }
    let known_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/llama_cpp/known-divergences.json");
    let known: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(known_path).unwrap()).unwrap();
    // The issue asks for 0.1%. Variants computed bit for bit as llama.cpp does must agree to the
    // 4 decimals llama-perplexity prints.
    let exact = known["perplexity_exact"]["variants"]
        .as_array()
        .is_some_and(|v| v.iter().any(|x| x.as_str() == Some(variant)));
    if exact {
        assert!(
            (r.ppl - want).abs() <= 0.6e-4,
            "{variant}: perplexity {:.6} differs from llama.cpp's {want:.4} (this variant is bit-exact with llama.cpp)",
            r.ppl
        );
    }
    assert!(
        rel < 1e-3,
        "{variant}: perplexity {:.4} is not within 0.1% of llama.cpp's {want:.4}",
        r.ppl
    );
}

#[test]
fn greedy_q4_1() {
    check_greedy("Q4_1");
}
#[test]
fn greedy_f16() {
    check_greedy("F16");
}
#[test]
fn greedy_q8_0() {
    check_greedy("Q8_0");
}
#[test]
fn greedy_q4_k_m() {
    check_greedy("Q4_K_M");
}
#[test]
fn perplexity_q4_1() {
    check_perplexity("Q4_1");
}
#[test]
fn perplexity_f16() {
    check_perplexity("F16");
}
#[test]
fn perplexity_q8_0() {
    check_perplexity("Q8_0");
}
#[test]
fn perplexity_q4_k_m() {
    check_perplexity("Q4_K_M");
}
