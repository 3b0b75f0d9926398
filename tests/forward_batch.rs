//! `Model::forward_batch` (continuous batching): several sequences in one pass give each the
//! logits it gets alone, bit for bit while the batch is under the prefill threshold (the decode
//! kernels work row by row); a refused segment leaves every cache as it was.

mod common;

use autoround_cpu::model::llama::{ForwardError, KvCache, Logits, Model, Segment};
use autoround_cpu::model::ModelSource;

/// Greedy steps of one sequence alone: the logits after the prompt and after each of `steps`
/// generated tokens.
fn alone(model: &Model, prompt: &[u32], steps: usize) -> Vec<Vec<f32>> {
    let mut cache = KvCache::new(&model.cfg, 64);
    let mut out = vec![model.forward(prompt, &mut cache, Logits::Last).unwrap()];
    for _ in 0..steps {
        let next = common::argmax(out.last().unwrap());
        out.push(model.forward(&[next], &mut cache, Logits::Last).unwrap());
    }
    out
}

#[test]
fn batched_steps_equal_each_sequence_alone() {
    let Some(path) = common::model("Q4_K_M") else {
        return;
    };
    let src = ModelSource::open(&path).unwrap();
    let model = src.load().unwrap();
    let vocab = model.cfg.vocab_size;
    let prompts: [&[u32]; 3] = [
        &[1, 504, 3303, 282],
        &[1, 1820],
        &[1, 2683, 314, 253, 1345, 28],
    ];
    let steps = 6;
    let want: Vec<_> = prompts.iter().map(|p| alone(&model, p, steps)).collect();

    // the first two start together; the third joins at step 2 with its whole prompt in the
    // same pass as the others' decode tokens
    let mut caches: Vec<KvCache> = (0..3).map(|_| KvCache::new(&model.cfg, 64)).collect();
    let mut got: Vec<Vec<Vec<f32>>> = vec![Vec::new(); 3];
    let mut logits = Vec::new();
    for step in 0..=steps + 2 {
        let active: Vec<usize> = (0..3)
            .filter(|&i| {
                let start = if i == 2 { 2 } else { 0 };
                step >= start && step <= start + steps
            })
            .collect();
        let toks: Vec<Vec<u32>> = active
            .iter()
            .map(|&i| match got[i].last() {
                None => prompts[i].to_vec(),
                Some(l) => vec![common::argmax(l)],
            })
            .collect();
        let mut segs: Vec<Segment> = Vec::new();
        for (i, cache) in caches.iter_mut().enumerate() {
            if let Some(k) = active.iter().position(|&a| a == i) {
                segs.push(Segment {
                    tokens: &toks[k],
                    cache,
                });
            }
        }
        model.forward_batch(&mut segs, &mut logits).unwrap();
        assert_eq!(logits.len(), active.len() * vocab);
        for (k, &i) in active.iter().enumerate() {
            got[i].push(logits[k * vocab..(k + 1) * vocab].to_vec());
        }
    }
    for i in 0..3 {
        assert_eq!(got[i].len(), steps + 1);
        for (s, (g, w)) in got[i].iter().zip(&want[i]).enumerate() {
            assert!(
                g == w,
                "sequence {i} step {s}: batched logits differ from alone"
            );
        }
        assert_eq!(caches[i].len(), prompts[i].len() + steps);
    }
}

#[test]
fn a_refused_segment_changes_no_cache() {
    let Some(path) = common::synthetic("ci") else {
        return;
    };
    let src = ModelSource::open(&path).unwrap();
    let model = src.load().unwrap();
    let mut a = KvCache::new(&model.cfg, 8);
    let mut b = KvCache::new(&model.cfg, 4);
    model.forward(&[1, 2], &mut a, Logits::Last).unwrap();
    let mut logits = Vec::new();
    let vocab = model.cfg.vocab_size as u32;
    for (tb, want) in [
        (&[1u32, 2, 3, 4, 5][..], "context"),
        (&[][..], "empty"),
        (&[vocab][..], "token"),
    ] {
        let mut segs = [
            Segment {
                tokens: &[3],
                cache: &mut a,
            },
            Segment {
                tokens: tb,
                cache: &mut b,
            },
        ];
        let e = model.forward_batch(&mut segs, &mut logits).unwrap_err();
        let ok = match e {
            ForwardError::ContextFull { .. } => want == "context",
            ForwardError::Empty => want == "empty",
            ForwardError::BadToken { .. } => want == "token",
        };
        assert!(ok, "{want}: got {e}");
        assert_eq!((a.len(), b.len()), (2, 0));
    }
    assert!(matches!(
        model.forward_batch(&mut [], &mut logits),
        Err(ForwardError::Empty)
    ));
    // and the caches still work
    let mut segs = [
        Segment {
            tokens: &[3],
            cache: &mut a,
        },
        Segment {
            tokens: &[1, 2, 3],
            cache: &mut b,
        },
    ];
    model.forward_batch(&mut segs, &mut logits).unwrap();
    assert_eq!((a.len(), b.len()), (3, 3));
    assert_eq!(logits.len(), 2 * vocab as usize);
}
