//! The OpenAI-compatible server, driven over HTTP: greedy chat answers equal llama-server's
//! (golden data from tools/make-chat-golden.sh) plain and streamed, completions, concurrent
//! requests, a client that disconnects mid-stream, the API key, and bad requests answered with
//! OpenAI-style 4xx JSON errors while the server keeps serving. Also the real `openai` Python
//! client and curl.

mod common;
#[path = "common/server.rs"]
mod http;

use http::{post, raw, request, Server};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

fn golden() -> Value {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama_cpp/chat_golden.json");
    let s = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (run tools/make-chat-golden.sh)", p.display()));
    serde_json::from_str(&s).unwrap()
}

fn chat_body(case: &Value, stream: bool) -> Value {
    json!({
        "model": "x",
        "messages": case["messages"],
        "max_tokens": case["max_tokens"],
        "temperature": 0,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

/// The text and finish reason of a streamed chat answer, checking the chunks' shape.
fn streamed(r: &http::Response) -> (String, String, Value) {
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let ev = r.events();
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"), "{}", r.body);
    let chunks: Vec<Value> = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut text = String::new();
    let mut finish = String::new();
    let mut usage = Value::Null;
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
        if let Some(u) = c.get("usage") {
            usage = u.clone();
            continue;
        }
        let ch = &c["choices"][0];
        if let Some(t) = ch["delta"]["content"].as_str() {
            text.push_str(t);
        }
        if let Some(f) = ch["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (text, finish, usage)
}

/// Whether our greedy answer `ours` is llama-server's (`case`): the same text, or the same up
/// to a step where llama.cpp's two most likely tokens were within 0.1 in log-probability (a
/// near tie another order of float additions may break the other way; the texts may differ
/// after it). Panics on any other difference.
fn same_greedy(ours: &str, case: &Value, what: &str) -> bool {
    let mut prefix = String::new();
    for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
        let next = prefix.clone() + step["token"].as_str().unwrap();
        if ours.starts_with(&next) {
            prefix = next;
            continue;
        }
        let margin = step["margin"].as_f64().unwrap();
        assert!(
            margin < 0.1,
            "{what}: our answer leaves llama-server's at step {i} (its margin {margin}):\nours:   {ours:?}\ntheirs: {:?}",
            case["content"]
        );
        eprintln!("{what}: differs from step {i}, a near tie in llama.cpp (margin {margin})");
        return false;
    }
    assert_eq!(ours, case["content"].as_str().unwrap(), "{what}");
    true
}

fn error_of(r: &http::Response, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.body);
    let v = r.json();
    let e = &v["error"];
    assert!(e["type"].is_string(), "{v}");
    e["message"].as_str().unwrap().to_string()
}

#[test]
fn chat_completions_match_llama_server() {
    let gold = golden();
    for variant in ["Q8_0", "Q4_K_M"] {
        let Some(model) = common::model(variant) else {
            return;
        };
        // llama.cpp's arithmetic, so that greedy answers can be compared token for token
        let srv = Server::start(&model, &["-c", "2048", "--numerics", "llama-cpp"]);
        let (mut exact, mut total) = (0, 0);
        for case in gold["models"][variant].as_array().unwrap() {
            let r = post(&srv.addr, "/v1/chat/completions", &chat_body(case, false));
            assert_eq!(r.status, 200, "{}", r.body);
            let v = r.json();
            assert_eq!(v["object"], "chat.completion");
            let c = &v["choices"][0];
            assert_eq!(c["message"]["role"], "assistant");
            assert_eq!(v["usage"]["prompt_tokens"], case["prompt_tokens"]);
            let text = c["message"]["content"].as_str().unwrap();
            let what = format!("{variant} {}", case["messages"]);
            if same_greedy(text, case, &what) {
                exact += 1;
                assert_eq!(c["finish_reason"], case["finish_reason"], "{what}");
                assert_eq!(v["usage"]["completion_tokens"], case["completion_tokens"]);
            }
            let r = post(&srv.addr, "/v1/chat/completions", &chat_body(case, true));
            let (streamed_text, finish, usage) = streamed(&r);
            assert_eq!(
                streamed_text, text,
                "{what}: streamed and plain answers differ"
            );
            assert_eq!(finish, c["finish_reason"].as_str().unwrap());
            assert_eq!(usage["completion_tokens"], v["usage"]["completion_tokens"]);
            total += 1;
        }
        eprintln!("{variant}: {exact} of {total} answers equal llama-server's exactly");
    }
}

#[test]
fn concurrent_requests_disconnects_and_errors() {
    let Some(model) = common::model("Q8_0") else {
        return;
    };
    let srv = Server::start(
        &model,
        &["-c", "256", "--parallel", "4", "--max-body", "4096"],
    );
    let addr = srv.addr.clone();
    assert_eq!(
        request(&addr, "GET", "/health", &[], "").json()["status"],
        "ok"
    );
    let models = request(&addr, "GET", "/v1/models", &[], "").json();
    assert_eq!(models["object"], "list");
    assert!(models["data"][0]["id"].is_string());

    // completions, alone, then six at once (more than --parallel): the same text each time
    let prompts = [
        "The capital of France is",
        "Water boils at",
        "My favourite colour is",
    ];
    let body = |p: &str, stream: bool| json!({"prompt": p, "max_tokens": 20, "temperature": 0, "stream": stream, "ignore_eos": true});
    let alone: Vec<String> = prompts
        .iter()
        .map(|p| {
            let v = post(&addr, "/v1/completions", &body(p, false)).json();
            assert_eq!(v["object"], "text_completion");
            assert_eq!(v["usage"]["completion_tokens"], 20);
            v["choices"][0]["text"].as_str().unwrap().to_string()
        })
        .collect();
    let together: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|i| {
                let addr = &addr;
                let p = prompts[i % 3];
                s.spawn(move || {
                    let r = post(addr, "/v1/completions", &body(p, i % 2 == 0));
                    if i % 2 == 0 {
                        let ev = r.events();
                        assert_eq!(ev.last().unwrap(), "[DONE]");
                        ev[..ev.len() - 1]
                            .iter()
                            .map(|e| {
                                let v: Value = serde_json::from_str(e).unwrap();
                                v["choices"][0]["text"].as_str().unwrap_or("").to_string()
                            })
                            .collect::<String>()
                    } else {
                        r.json()["choices"][0]["text"].as_str().unwrap().to_string()
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, t) in together.iter().enumerate() {
        assert_eq!(t, &alone[i % 3], "request {i} in a batch of 6");
    }

    // a streaming client that reads two events and hangs up; the server goes on
    {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let b = json!({"prompt": "Tell me a long story.", "max_tokens": 200, "stream": true})
            .to_string();
        write!(
            s,
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let mut n = 0;
        let mut line = String::new();
        while n < 2 {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line.starts_with("data: ") {
                n += 1;
            }
        }
    }
    let v = post(&addr, "/v1/completions", &body(prompts[0], false)).json();
    assert_eq!(v["choices"][0]["text"], alone[0].as_str());

    // bad requests: 4xx with an OpenAI error body
    let chat = "/v1/chat/completions";
    let m = error_of(&request(&addr, "POST", chat, &[], "{\"messages\": [}"), 400);
    assert!(m.contains("not valid JSON"), "{m}");
    let m = error_of(&post(&addr, chat, &json!({"messages": "hi"})), 400);
    assert!(m.contains("invalid type"), "{m}");
    let m = error_of(
        &post(
            &addr,
            chat,
            &json!({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
        ),
        400,
    );
    assert!(m.contains("invalid type"), "{m}");
    let m = error_of(&post(&addr, chat, &json!({"messages": []})), 400);
    assert!(m.contains("messages"), "{m}");
    let m = error_of(
        &post(
            &addr,
            chat,
            &json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}),
        ),
        400,
    );
    assert!(m.contains("n = 1"), "{m}");
    let m = error_of(
        &post(
            &addr,
            chat,
            &json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 3}),
        ),
        400,
    );
    assert!(m.contains("temperature"), "{m}");
    let m = error_of(
        &post(
            &addr,
            chat,
            &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}),
        ),
        400,
    );
    assert!(m.contains("context"), "{m}");
    let long = "word ".repeat(300);
    let m = error_of(
        &post(
            &addr,
            chat,
            &json!({"messages": [{"role": "user", "content": long}]}),
        ),
        400,
    );
    assert!(m.contains("context"), "{m}");
    let m = error_of(
        &post(
            &addr,
            "/v1/completions",
            &json!({"prompt": [1, 2, 99999999]}),
        ),
        400,
    );
    assert!(m.contains("vocabulary"), "{m}");
    let big = json!({"prompt": "x".repeat(5000)});
    let m = error_of(&post(&addr, "/v1/completions", &big), 413);
    assert!(m.contains("4096"), "{m}");
    error_of(&request(&addr, "GET", "/v1/nothing", &[], ""), 404);
    error_of(&request(&addr, "GET", chat, &[], ""), 405);
    // a request line that is not HTTP: the server answers and lives on
    let r = raw(&addr, b"HELLO\r\n\r\n");
    assert!((400..500).contains(&r.status), "{r:?}");
    let v = post(&addr, "/v1/completions", &body(prompts[1], false)).json();
    assert_eq!(v["choices"][0]["text"], alone[1].as_str());
}

/// A chat template that refuses the conversation (`raise_exception`, as Mistral's does when
/// roles do not alternate) is a 400 naming the template's message; other requests go on.
#[test]
fn a_failing_chat_template_is_a_bad_request() {
    let Some(model) = common::model("Q8_0") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ar-tmpl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tmpl = dir.join("strict.jinja");
    std::fs::write(
        &tmpl,
        "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('system messages are not supported') }}{% endif %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    )
    .unwrap();
    let srv = Server::start(
        &model,
        &["-c", "256", "--chat-template-file", tmpl.to_str().unwrap()],
    );
    let chat = "/v1/chat/completions";
    let bad = json!({"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]});
    let m = error_of(&post(&srv.addr, chat, &bad), 400);
    assert!(m.contains("system messages are not supported"), "{m}");
    let good = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    assert_eq!(post(&srv.addr, chat, &good).status, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn api_key_is_required_when_set() {
    let Some(model) = common::model("Q8_0") else {
        return;
    };
    let srv = Server::start(&model, &["-c", "128", "--api-key", "s3cret"]);
    let body = json!({"prompt": "Hi", "max_tokens": 2}).to_string();
    for auth in [None, Some("Bearer nope"), Some("s3cret")] {
        let h: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let r = request(&srv.addr, "POST", "/v1/completions", &h, &body);
        error_of(&r, 401);
    }
    let r = request(
        &srv.addr,
        "POST",
        "/v1/completions",
        &[("Authorization", "Bearer s3cret")],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    error_of(&request(&srv.addr, "GET", "/v1/models", &[], ""), 401);
    assert_eq!(request(&srv.addr, "GET", "/health", &[], "").status, 200);
}

/// The real `openai` Python package (tests/server_openai.py) and curl against the server.
#[test]
fn openai_python_client_and_curl() {
    let Some(model) = common::model("Q8_0") else {
        return;
    };
    let have_openai = Command::new("python3")
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success());
    let have_curl = Command::new("curl").arg("--version").output().is_ok();
    if !have_openai || !have_curl {
        let msg = "the openai Python package or curl is missing (tools/test.sh installs them)";
        assert!(!common::in_ci(), "{msg}");
        eprintln!("SKIP: {msg}");
        return;
    }
    let srv = Server::start(
        &model,
        &["-c", "2048", "--numerics", "llama-cpp", "--api-key", "k"],
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/server_openai.py");
    let gold =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama_cpp/chat_golden.json");
    let out = Command::new("python3")
        .arg(&script)
        .arg(format!("http://{}/v1", srv.addr))
        .arg(&gold)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/server_openai.py failed:\n{text}"
    );
    assert!(text.contains("openai client: all checks passed"), "{text}");

    // curl: a streamed chat answer, and an error status
    let url = format!("http://{}/v1/chat/completions", srv.addr);
    let case = &golden()["models"]["Q8_0"][0];
    let out = Command::new("curl")
        .args([
            "-sS",
            "-N",
            "-H",
            "Authorization: Bearer k",
            "-H",
            "Content-Type: application/json",
            "-d",
        ])
        .arg(chat_body(case, true).to_string())
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success());
    let body = String::from_utf8(out.stdout).unwrap();
    let fake = http::Response {
        status: 200,
        headers: vec![("content-type".into(), "text/event-stream".into())],
        body,
    };
    let (text, _, _) = streamed(&fake);
    assert_eq!(text, case["content"].as_str().unwrap());
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Authorization: Bearer k",
            "-d",
            "{",
        ])
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "400");
}
