//! `autoround-cpu chat` in a real pseudo-terminal (tmux): a typed question gets llama-server's
//! greedy answer (golden data from tools/make-chat-golden.sh), streamed; /save, /load, /reset;
//! Ctrl-C stops an answer and the chat goes on; /quit leaves.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(args).output().expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn keys(&self, keys: &[&str]) {
        let mut a = vec!["send-keys", "-t", &self.0];
        a.extend_from_slice(keys);
        self.run(&a);
    }
    /// The whole pane, wrapped lines joined.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-J", "-S", "-", "-t", &self.0])
    }
    /// Waits until the pane satisfies `f`, up to `secs`.
    fn wait(&self, secs: u64, what: &str, f: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if f(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "timed out waiting for {what}; the pane:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.0])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

#[test]
fn chat_in_a_terminal() {
    let Some(model) = common::model("Q8_0") else {
        return;
    };
    if Command::new("tmux").arg("-V").output().is_err() {
        let msg = "tmux is missing (tools/test.sh installs it)";
        assert!(!common::in_ci(), "{msg}");
        eprintln!("SKIP: {msg}");
        return;
    }
    let gold: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/llama_cpp/chat_golden.json"),
        )
        .unwrap(),
    )
    .unwrap();
    // a case with no near tie in llama.cpp's greedy choices (see tools/chat_golden.py)
    let case = gold["models"]["Q8_0"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["messages"].as_array().unwrap().len() == 1
                && c["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|s| s["margin"].as_f64().unwrap() >= 0.1)
        })
        .expect("a golden case without near ties");
    let question = case["messages"][0]["content"].as_str().unwrap();
    let answer = case["content"].as_str().unwrap();

    let dir = std::env::temp_dir().join(format!("ar-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("conv.json");
    let name = format!("ar-chat-{}", std::process::id());
    let cmd = format!(
        "{} chat -m {} --numerics llama-cpp --temp 0 -n {} -t 2 -c 2048",
        env!("CARGO_BIN_EXE_autoround-cpu"),
        model.display(),
        case["max_tokens"]
    );
    let t = Tmux(name.clone());
    t.run(&[
        "new-session",
        "-d",
        "-s",
        &name,
        "-x",
        "220",
        "-y",
        "50",
        &cmd,
    ]);
    t.wait(120, "the prompt", |s| {
        s.lines().any(|l| l.starts_with("> "))
    });

    // a question, answered as llama-server answers it, then the speed line
    t.keys(&[question, "Enter"]);
    let s = t.wait(120, "the answer", |s| s.contains(" t/s; prompt "));
    assert!(
        s.contains(answer),
        "the answer is not llama-server's {answer:?}:\n{s}"
    );

    // /save writes the conversation
    t.keys(&[&format!("/save {}", saved.display()), "Enter"]);
    t.wait(30, "/save", |s| s.contains("(saved 2 messages"));
    let conv: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    assert_eq!(conv[0]["role"], "user");
    assert_eq!(conv[0]["content"], question);
    assert_eq!(conv[1]["role"], "assistant");
    assert_eq!(conv[1]["content"], answer);

    // Ctrl-C stops a long answer; the chat goes on
    t.keys(&["/reset", "Enter"]);
    t.wait(30, "/reset", |s| s.contains("(conversation cleared)"));
    let before = t.screen().matches(" t/s; prompt ").count();
    t.keys(&[
        "Tell me a very long story about a dragon and a knight.",
        "Enter",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    t.keys(&["C-c"]);
    let s = t.wait(60, "the stopped answer", |s| s.contains("(stopped)]"));
    assert_eq!(s.matches(" t/s; prompt ").count(), before + 1);
    assert!(t.alive(), "Ctrl-C ended the chat");

    // /load brings the saved conversation back
    t.keys(&[&format!("/load {}", saved.display()), "Enter"]);
    t.wait(30, "/load", |s| s.contains("(loaded 2 messages"));
    t.keys(&["/quit", "Enter"]);
    let t0 = Instant::now();
    while t.alive() && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!t.alive(), "/quit did not leave");
    let _ = std::fs::remove_dir_all(&dir);
}
