//! An auto_round checkpoint made by our tuner (SmolLM2-135M-Instruct, W4A16, group 128, a short
//! tuning run) serves: the server's greedy tokens equal `run`'s for the same prompt, and chat
//! completions work with the folder's own chat template.

mod common;
#[path = "common/server.rs"]
mod http;

use serde_json::json;
use std::path::PathBuf;
use std::process::Output;

use common::cli as bin;

use common::path_str as s;

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn tuned_auto_round_folder_serves_runs_greedy_tokens() {
    let Some(gguf) = common::model("F16") else {
        return;
    };
    let dir: PathBuf =
        std::env::temp_dir().join(format!("autoround-serve-ar-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let float = dir.join("float");
    let packed = dir.join("packed");
    ok(&bin(&[
        "convert",
        "-m",
        s(&gguf),
        "--to",
        "hf",
        "--dtype",
        "f16",
        "-o",
        s(&float),
    ]));
    let calib = common::shared_data("calib.txt");
    ok(&bin(&[
        "quantize",
        "-m",
        s(&float),
        "--format",
        "auto_round",
        "--scheme",
        "W4A16",
        "--iters",
        "2",
        "--nsamples",
        "4",
        "--seqlen",
        "64",
        "--batch_size",
        "2",
        "--dataset",
        s(&calib),
        "--concat",
        "-t",
        "2",
        "-o",
        s(&packed),
    ]));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(packed.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["quantization_config"]["quant_method"], "auto-round");

    let prompt = "The capital of France is";
    let n = 24;
    let out = ok(&bin(&[
        "run",
        "-m",
        s(&packed),
        "-p",
        prompt,
        "-n",
        &n.to_string(),
        "--temp",
        "0",
        "--ignore-eos",
        "-t",
        "2",
    ]));
    let from_run = out
        .strip_prefix(prompt)
        .unwrap_or_else(|| panic!("run's output does not start with the prompt: {out:?}"))
        .strip_suffix('\n')
        .unwrap();

    let srv = http::Server::start(&packed, &["-c", "512"]);
    let body = json!({"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": true});
    let v = http::post(&srv.addr, "/v1/completions", &body).json();
    assert_eq!(v["usage"]["completion_tokens"], n);
    assert_eq!(
        v["choices"][0]["text"], from_run,
        "the server's greedy text differs from run's"
    );
    // streamed, the same
    let body = json!({"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": true, "stream": true});
    let r = http::post(&srv.addr, "/v1/completions", &body);
    let ev = r.events();
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let text: String = ev[..ev.len() - 1]
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(e).unwrap();
            v["choices"][0]["text"].as_str().unwrap_or("").to_string()
        })
        .collect();
    assert_eq!(text, from_run);
    // chat, with the folder's template
    let body = json!({"messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 8, "temperature": 0});
    let v = http::post(&srv.addr, "/v1/chat/completions", &body).json();
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}
