//! The Engine API: batched generation from Rust, without the server.
//!
//! ```text
//! cargo run --release --example generate -- MODEL [PROMPT ...]
//! ```
//! MODEL is a .gguf file, a Hugging Face folder (float, auto_round, GPTQ or AWQ) or a repo id in
//! the local Hugging Face cache. Each prompt is sent through the model's chat template; all of
//! them are generated together (continuous batching), first streamed as the tokens come, then
//! once more with `generate`, which returns every answer at the end.

use autoround_cpu::engine::{
    ChatMessage, ChatTemplate, Engine, EngineOptions, Event, GenerateParams, Prompt, SamplingParams,
};
use autoround_cpu::model::ModelSource;
use std::io::Write;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model_path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: generate MODEL [PROMPT ...]"))?;
    let mut questions: Vec<String> = args.collect();
    if questions.is_empty() {
        questions = vec![
            "What is the capital of France?".into(),
            "Write a haiku about the sea.".into(),
            "Name three primary colours.".into(),
        ];
    }

    // The model borrows the memory-mapped file: keep `src` alive as long as `model`.
    let src = ModelSource::open(std::path::Path::new(&model_path))?;
    let model = src.load()?;
    let tok = src.tokenizer()?;
    let template = ChatTemplate::from_model(&src)?.unwrap_or_else(ChatTemplate::chatml);
    let prompts = questions
        .iter()
        .map(|q| {
            let conversation = [ChatMessage::new("user", q.clone())];
            let text = template.render_prompt(&conversation, tok.add_bos(), tok.add_eos())?;
            Ok(Prompt::Text(text))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let mut engine = Engine::new(
        &model,
        &tok,
        EngineOptions {
            n_ctx: 1024,
            max_batch: 8,
        },
    );
    let params = GenerateParams {
        sampling: SamplingParams::greedy(),
        max_tokens: 48,
        ..Default::default()
    };

    // 1. Streaming: events of all prompts, interleaved, as each batched step produces them.
    let mut answers = vec![String::new(); prompts.len()];
    for (i, event) in engine.stream(&prompts, &params)? {
        match event {
            Event::Token { text, .. } | Event::Text(text) => answers[i].push_str(&text),
            Event::Done(f) => {
                println!(
                    "[{i}] {} ({} tokens, {})",
                    answers[i].trim(),
                    f.completion_tokens,
                    f.reason.as_str()
                );
            }
            Event::Error(e) => anyhow::bail!("prompt {i}: {e}"),
        }
        std::io::stdout().flush()?;
    }

    // 2. All at once: the same greedy answers.
    let outputs = engine.generate(&prompts, &params)?;
    for (i, o) in outputs.iter().enumerate() {
        assert_eq!(o.text, answers[i], "greedy answers are deterministic");
    }
    println!("generate() returned the same {} answers", outputs.len());
    Ok(())
}
