//! Chat templates rendered as Hugging Face transformers renders them: every expected string in
//! tests/fixtures/chat_templates.json was produced by transformers + jinja2
//! (tools/chat_template_golden.py), never by this crate.

use autoround_cpu::engine::{ChatMessage, ChatTemplate, ChatTemplateError};
use autoround_cpu::model::ModelSource;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(serde::Deserialize)]
struct Fixture {
    templates: BTreeMap<String, String>,
    cases: Vec<Case>,
    probes: Vec<Probe>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    template: String,
    bos_token: String,
    eos_token: String,
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    extra_json: String,
    requires: Vec<String>,
    expected: Option<String>,
    error: Option<ErrorSpec>,
}

#[derive(serde::Deserialize)]
struct Probe {
    name: String,
    source: String,
    messages: Vec<ChatMessage>,
    requires: Vec<String>,
    expected: Option<String>,
    error: Option<ErrorSpec>,
}

#[derive(serde::Deserialize, Debug)]
struct ErrorSpec {
    kind: String,
    line: Option<usize>,
    message: String,
}

fn fixture() -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("chat_templates.json parses")
}

/// minijinja features that some jinja2 behaviours need; cases requiring an absent one are
/// skipped (with a message).
fn available(feature: &str) -> bool {
    match feature {
        "loop_controls" => {
            ChatTemplate::new("{% for x in [1] %}{% break %}{% endfor %}", "", "").is_ok()
        }
        "preserve_order" => ChatTemplate::new("{{ {'b': 1, 'a': 2} | tojson }}", "", "")
            .and_then(|t| t.render(&[], false))
            .is_ok_and(|s| s == r#"{"b": 1, "a": 2}"#),
        other => panic!("unknown feature {other}"),
    }
}

fn missing_feature(requires: &[String]) -> Option<&str> {
    requires.iter().find(|f| !available(f)).map(String::as_str)
}

/// The first differing position, for readable failures.
fn diff(expected: &str, got: &str) -> String {
    let at = expected
        .char_indices()
        .zip(got.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or(expected.len().min(got.len()));
    let lo = expected[..at]
        .char_indices()
        .rev()
        .nth(40)
        .map(|(i, _)| i)
        .unwrap_or(0);
    format!(
        "first difference at byte {at}:\n  expected …{:?}\n  got      …{:?}",
        &expected[lo..],
        got.get(lo..).unwrap_or(got)
    )
}

#[test]
fn golden_cases_match_transformers() {
    let fx = fixture();
    let mut compiled: HashMap<(String, String, String), ChatTemplate> = HashMap::new();
    let (mut passed, mut skipped) = (0, 0);
    let mut failures = Vec::new();
    for case in &fx.cases {
        if let Some(f) = missing_feature(&case.requires) {
            eprintln!("skipping {}: needs minijinja feature {f}", case.name);
            skipped += 1;
            continue;
        }
        let key = (
            case.template.clone(),
            case.bos_token.clone(),
            case.eos_token.clone(),
        );
        let t = compiled.entry(key).or_insert_with(|| {
            ChatTemplate::new(
                &fx.templates[&case.template],
                &case.bos_token,
                &case.eos_token,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.template))
        });
        let got = t.render_with_json(&case.messages, case.add_generation_prompt, &case.extra_json);
        match (&case.expected, &case.error, got) {
            (Some(want), _, Ok(got)) if *want == got => {
                // The serde_json-map entry point agrees where key order cannot differ.
                let extra: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&case.extra_json).unwrap();
                if extra.values().all(|v| !v.to_string().contains('{')) {
                    let via_map = t
                        .render_with(&case.messages, case.add_generation_prompt, &extra)
                        .unwrap();
                    assert_eq!(via_map, got, "{}: render_with", case.name);
                }
                if extra.is_empty() {
                    let plain = t
                        .render(&case.messages, case.add_generation_prompt)
                        .unwrap();
                    assert_eq!(plain, got, "{}: render", case.name);
                }
                passed += 1;
            }
            (Some(want), _, Ok(got)) => {
                failures.push(format!("{}: {}", case.name, diff(want, &got)))
            }
            (None, Some(err), Err(ChatTemplateError::Raised { message }))
                if err.kind == "raised" && err.message == message =>
            {
                passed += 1
            }
            (_, _, other) => failures.push(format!(
                "{}: expected {:?} / {:?}, got {other:?}",
                case.name, case.expected, case.error
            )),
        }
    }
    eprintln!(
        "{passed} cases equal to transformers, {skipped} skipped, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(passed >= 100, "only {passed} cases ran");
}

#[test]
fn golden_probes_match_jinja2() {
    let fx = fixture();
    let (mut passed, mut skipped) = (0, 0);
    let mut failures = Vec::new();
    for p in &fx.probes {
        if let Some(f) = missing_feature(&p.requires) {
            eprintln!("skipping probe {}: needs minijinja feature {f}", p.name);
            skipped += 1;
            continue;
        }
        let got =
            ChatTemplate::new(&p.source, "<s>", "</s>").and_then(|t| t.render(&p.messages, true));
        match (&p.expected, &p.error, got) {
            (Some(want), _, Ok(got)) if *want == got => passed += 1,
            (Some(want), _, Ok(got)) => failures.push(format!("{}: {}", p.name, diff(want, &got))),
            (None, Some(e), Err(ChatTemplateError::Raised { message }))
                if e.kind == "raised" && e.message == message =>
            {
                passed += 1
            }
            (None, Some(e), Err(ChatTemplateError::Syntax { line, msg }))
                if e.kind == "syntax" && line == e.line =>
            {
                eprintln!("probe {}: jinja2 {:?} / ours {msg:?}", p.name, e.message);
                passed += 1
            }
            (_, _, other) => failures.push(format!(
                "{}: expected {:?} / {:?}, got {other:?}",
                p.name, p.expected, p.error
            )),
        }
    }
    eprintln!(
        "{passed} probes equal to jinja2, {skipped} skipped, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn raise_exception_gives_the_templates_message() {
    let fx = fixture();
    let case = fx
        .cases
        .iter()
        .find(|c| c.name == "mistral-v0.3/not-alternating")
        .expect("the Mistral not-alternating case");
    let want = &case.error.as_ref().expect("an error case").message;
    assert!(want.contains("must alternate user/assistant"), "{want}");
    let t = ChatTemplate::new(&fx.templates["mistral-v0.3"], "<s>", "</s>").unwrap();
    let two_users = [
        ChatMessage::new("user", "first"),
        ChatMessage::new("user", "second"),
    ];
    match t.render(&two_users, true) {
        Err(e @ ChatTemplateError::Raised { .. }) => {
            let ChatTemplateError::Raised { message } = &e else {
                unreachable!()
            };
            assert_eq!(message, want);
            assert!(e.to_string().contains(want.as_str()), "{e}");
        }
        other => panic!("expected ChatTemplateError::Raised, got {other:?}"),
    }
}

#[test]
fn syntax_errors_are_errors_with_a_line() {
    // The lines jinja2 3.1.6 reports for these.
    for (source, line) in [
        ("{% for m in messages %}\n{{ m.content }}\n", 2),
        ("ok\n{{ messages[0]. }}", 2),
        ("{% if x %}{% endfor %}", 1),
        ("a\n\n{{ 'unterminated }}", 3),
        ("{% set %}", 1),
    ] {
        match ChatTemplate::new(source, "<s>", "</s>") {
            Err(e @ ChatTemplateError::Syntax { .. }) => {
                let ChatTemplateError::Syntax { line: got, msg } = &e else {
                    unreachable!()
                };
                assert!(!msg.is_empty());
                assert!(e.to_string().contains("syntax error"), "{e}");
                assert_eq!(*got, Some(line), "{source:?}: {e}");
            }
            other => panic!("{source:?}: expected a syntax error, got {other:?}"),
        }
    }
    // Errors while rendering are errors too (jinja2 raises UndefinedError here).
    let t = ChatTemplate::new("a\n{{ messages[5].content.upper() }}", "", "").unwrap();
    match t.render(&[ChatMessage::new("user", "x")], false) {
        Err(ChatTemplateError::Render { line, msg }) => {
            assert_eq!(line, Some(2), "{msg}");
        }
        other => panic!("expected a render error, got {other:?}"),
    }
}

fn smollm2_cases(fx: &Fixture) -> Vec<&Case> {
    let cases: Vec<&Case> = fx
        .cases
        .iter()
        .filter(|c| c.template == "smollm2" && c.expected.is_some())
        .collect();
    assert!(cases.len() >= 10);
    cases
}

#[test]
fn from_model_finds_the_smollm2_gguf_template() {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let path = home.join(".cache/autoround-cpu/models/SmolLM2-135M-Instruct.Q8_0.gguf");
    if !path.is_file() {
        eprintln!(
            "skipping: {} is absent (tools/fetch-models.sh fetches it)",
            path.display()
        );
        return;
    }
    let fx = fixture();
    let src = ModelSource::open(&path).unwrap();
    let t = ChatTemplate::from_model(&src)
        .unwrap()
        .expect("SmolLM2's GGUF has tokenizer.chat_template");
    assert_eq!(t.source(), fx.templates["smollm2"]);
    let cases = smollm2_cases(&fx);
    // The GGUF's BOS/EOS are the tokenizer_config.json tokens transformers uses.
    assert_eq!(
        t.special_token("bos_token"),
        Some(cases[0].bos_token.as_str())
    );
    assert_eq!(
        t.special_token("eos_token"),
        Some(cases[0].eos_token.as_str())
    );
    for c in cases {
        let got = t.render(&c.messages, c.add_generation_prompt).unwrap();
        assert_eq!(&got, c.expected.as_ref().unwrap(), "{}", c.name);
    }
}

#[test]
fn from_model_finds_the_smollm2_folder_template() {
    let dir = Path::new("/tmp/ar/smol-hf");
    if !dir.join("tokenizer_config.json").is_file() {
        eprintln!("skipping: {} is absent", dir.display());
        return;
    }
    let fx = fixture();
    let t = match ModelSource::open(dir) {
        Ok(src) => ChatTemplate::from_model(&src),
        // The folder may lack weights the loader insists on; the template does not need them.
        Err(_) => ChatTemplate::from_hf_dir(dir),
    }
    .unwrap()
    .expect("SmolLM2's tokenizer_config.json has a chat_template");
    assert_eq!(t.source(), fx.templates["smollm2"]);
    assert_eq!(t.special_token("bos_token"), Some("<|im_start|>"));
    assert_eq!(t.special_token("unk_token"), Some("<|endoftext|>"));
    for c in smollm2_cases(&fx) {
        let got = t.render(&c.messages, c.add_generation_prompt).unwrap();
        assert_eq!(&got, c.expected.as_ref().unwrap(), "{}", c.name);
    }
}

/// A scratch folder removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("ct-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.0.join(file), text).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn hf_folder_template_lookup_follows_transformers() {
    let fx = fixture();
    let qwen = &fx.templates["qwen2.5"];
    let chatml = &fx.templates["chatml"];

    // chat_template.jinja wins over tokenizer_config.json; special tokens as {content} objects.
    let d = Scratch::new("jinja");
    d.write("chat_template.jinja", qwen);
    d.write(
        "tokenizer_config.json",
        &serde_json::json!({
            "chat_template": chatml,
            "bos_token": {"content": "<s>", "lstrip": false},
            "eos_token": "<|im_end|>",
            "pad_token": null,
        })
        .to_string(),
    );
    let t = ChatTemplate::from_hf_dir(&d.0).unwrap().unwrap();
    assert_eq!(t.source(), qwen.as_str());
    assert_eq!(t.special_token("bos_token"), Some("<s>"));
    assert_eq!(t.special_token("eos_token"), Some("<|im_end|>"));
    assert_eq!(t.special_token("pad_token"), None);

    // A list of named templates: "default" is taken.
    let d = Scratch::new("list");
    d.write(
        "tokenizer_config.json",
        &serde_json::json!({"chat_template": [
            {"name": "tool_use", "template": chatml},
            {"name": "default", "template": qwen},
        ], "eos_token": "<|im_end|>"})
        .to_string(),
    );
    d.write(
        "special_tokens_map.json",
        r#"{"bos_token": "<B>", "eos_token": "<ignored>"}"#,
    );
    let t = ChatTemplate::from_hf_dir(&d.0).unwrap().unwrap();
    assert_eq!(t.source(), qwen.as_str());
    assert_eq!(t.special_token("bos_token"), Some("<B>"));
    assert_eq!(t.special_token("eos_token"), Some("<|im_end|>"));
    let case = fx
        .cases
        .iter()
        .find(|c| c.name == "qwen2.5/multi-turn/agp=True")
        .unwrap();
    assert_eq!(
        t.render(&case.messages, true).unwrap(),
        *case.expected.as_ref().unwrap()
    );

    // Several templates and no default: an error naming them, as transformers raises.
    let d = Scratch::new("nodefault");
    d.write(
        "tokenizer_config.json",
        &serde_json::json!({"chat_template": [
            {"name": "a", "template": chatml}, {"name": "b", "template": qwen}]})
        .to_string(),
    );
    match ChatTemplate::from_hf_dir(&d.0) {
        Err(e @ ChatTemplateError::Config { .. }) => {
            assert!(e.to_string().contains("default"), "{e}")
        }
        other => panic!("expected a config error, got {other:?}"),
    }

    // A processor's chat_template.json.
    let d = Scratch::new("json");
    d.write(
        "chat_template.json",
        &serde_json::json!({ "chat_template": chatml }).to_string(),
    );
    let t = ChatTemplate::from_hf_dir(&d.0).unwrap().unwrap();
    assert_eq!(t.source(), chatml.as_str());

    // No template at all.
    let d = Scratch::new("none");
    d.write("tokenizer_config.json", r#"{"eos_token": "</s>"}"#);
    assert!(ChatTemplate::from_hf_dir(&d.0).unwrap().is_none());

    // A broken template names its file.
    let d = Scratch::new("broken");
    d.write("chat_template.jinja", "{% if %}");
    match ChatTemplate::from_hf_dir(&d.0) {
        Err(e @ ChatTemplateError::Syntax { .. }) => {
            assert!(e.to_string().contains("chat_template.jinja"), "{e}")
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }

    // The in-tree converter fixture keeps its template in chat_template.jinja.
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/convert/tiny-llama-hf");
    let want = std::fs::read_to_string(tiny.join("chat_template.jinja")).unwrap();
    let t = ChatTemplate::from_hf_dir(&tiny).unwrap().unwrap();
    assert_eq!(t.source(), want);
}

#[test]
fn chatml_is_llama_cpps_fallback() {
    let fx = fixture();
    let t = ChatTemplate::chatml();
    assert_eq!(t.source(), fx.templates["chatml"]);
    let mut n = 0;
    for c in fx.cases.iter().filter(|c| c.template == "chatml") {
        let got = t.render(&c.messages, c.add_generation_prompt).unwrap();
        assert_eq!(&got, c.expected.as_ref().unwrap(), "{}", c.name);
        n += 1;
    }
    assert!(n >= 10);
}
