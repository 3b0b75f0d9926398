//! The generation engine: batched generation gives each prompt the tokens it gets alone, stop
//! strings, `max_tokens`, cancellation, a bounded batch and refused prompts.

mod common;

use autoround_cpu::engine::{
    Engine, EngineOptions, Event, FinishReason, GenerateError, GenerateParams, Prompt,
    SamplingParams,
};
use autoround_cpu::model::llama::{KvCache, Logits, Model};
use autoround_cpu::model::ModelSource;

/// Greedy tokens of one prompt alone, with the plain forward pass (as `run` does).
fn greedy_alone(model: &Model, prompt: &[u32], n: usize, eog: impl Fn(u32) -> bool) -> Vec<u32> {
    let mut cache = KvCache::new(&model.cfg, 256);
    let mut logits = model.forward(prompt, &mut cache, Logits::Last).unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let t = common::argmax(&logits);
        if eog(t) {
            break;
        }
        out.push(t);
        logits = model.forward(&[t], &mut cache, Logits::Last).unwrap();
    }
    out
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        sampling: SamplingParams::greedy(),
        max_tokens,
        ..Default::default()
    }
}

#[test]
fn engine_generation() {
    let Some(path) = common::model("Q8_0") else {
        return;
    };
    let src = ModelSource::open(&path).unwrap();
    let model = src.load().unwrap();
    let tok = src.tokenizer().unwrap();
    let texts = [
        "The capital of France is",
        "Once upon a time, in a small village,",
        "1, 2, 3, 4,",
    ];
    let prompts: Vec<Prompt> = texts.iter().map(|&t| t.into()).collect();
    let n = 16;
    // (declared before the engines that borrow them)
    let mut events = Vec::new();
    let mut seen = 0;

    // batched (two at a time, so the third waits for a free slot) = each alone
    let mut engine = Engine::new(
        &model,
        &tok,
        EngineOptions {
            n_ctx: 256,
            max_batch: 2,
        },
    );
    let outs = engine.generate(&prompts, &greedy(n)).unwrap();
    assert!(engine.is_idle());
    for (t, o) in texts.iter().zip(&outs) {
        let ids = tok.encode(t, true, true).unwrap();
        let want = greedy_alone(&model, &ids, n, |t| tok.is_eog(t));
        assert_eq!(o.tokens, want, "{t:?}");
        assert_eq!(o.text, tok.decode(&want), "{t:?}");
        assert_eq!(o.finish.prompt_tokens, ids.len());
        // an end-of-generation token counts
        let (reason, count) = if want.len() == n {
            (FinishReason::Length, n)
        } else {
            (FinishReason::Stop, want.len() + 1)
        };
        assert_eq!(o.finish.reason, reason);
        assert_eq!(o.finish.completion_tokens, count);
    }

    // a stop string taken from the middle of the first answer: the text ends before it
    let full = &outs[1].text;
    let cut = full.char_indices().nth(full.chars().count() / 2).unwrap().0;
    let stop = full[cut..].chars().take(4).collect::<String>();
    let at = full.find(&stop).unwrap();
    let params = GenerateParams {
        stop: vec![stop.clone()],
        ..greedy(n)
    };
    let o = engine.generate(&prompts[1..2], &params).unwrap().remove(0);
    assert_eq!(o.finish.reason, FinishReason::Stop, "stop {stop:?}");
    assert_eq!(o.text, full[..at], "stop {stop:?}");

    // cancellation: a sink that stops listening after 3 tokens
    let ids = tok.encode(texts[0], true, true).unwrap();
    engine
        .submit(
            &Prompt::Tokens(ids),
            greedy(n),
            Box::new(|ev: Event| {
                let listening = seen < 3;
                if let Event::Token { .. } = ev {
                    seen += 1;
                }
                events.push(ev);
                listening
            }),
        )
        .unwrap();
    engine.run_to_end().unwrap();
    drop(engine);
    let Some(Event::Done(f)) = events.last() else {
        panic!("no Done event: {events:?}");
    };
    assert_eq!(f.reason, FinishReason::Cancelled);
    assert_eq!(f.completion_tokens, 4);

    // refused prompts
    let mut engine = Engine::new(
        &model,
        &tok,
        EngineOptions {
            n_ctx: 8,
            max_batch: 4,
        },
    );
    let long = Prompt::from("one two three four five six seven eight nine ten");
    assert!(matches!(
        engine.generate(&[long], &greedy(4)),
        Err(GenerateError::PromptTooLong { n_ctx: 8, .. })
    ));
    assert!(matches!(
        engine.generate(&[Prompt::Tokens(vec![])], &greedy(4)),
        Err(GenerateError::EmptyPrompt)
    ));
    assert!(matches!(
        engine.generate(&[Prompt::Tokens(vec![u32::MAX])], &greedy(4)),
        Err(GenerateError::BadToken { .. })
    ));
    // the context bounds max_tokens: 8 - prompt
    let o = engine
        .generate(&[Prompt::Tokens(vec![1, 504, 3303])], &greedy(100))
        .unwrap()
        .remove(0);
    assert!(o.finish.completion_tokens <= 5);
    assert!(engine.is_idle());
}
