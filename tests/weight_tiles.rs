//! Weights unpacked at load into AMX int8 tiles (`--repack`, `Model::unpack_tiles`): a prompt's
//! logits keep every bit (the tile products are the per-call ones without the unpacking), and
//! sixteen sequences decoded together on the tiles are as close to llama.cpp's arithmetic as
//! each decoded alone by the decode kernels (another float order, so within rounding).
//! Skipped, with a message, on CPUs without AMX-INT8, where unpacking is refused.

mod common;

use autoround_cpu::model::llama::{KvCache, Logits, Model, Numerics, Segment};
use autoround_cpu::model::ModelSource;
use autoround_kernels::qgemm;

fn amx() -> bool {
    let ok = qgemm::available();
    if !ok {
        eprintln!("SKIP: this CPU has no AMX-INT8 tiles (or the OS refused the tile state)");
    }
    ok
}

fn prompt_logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let mut cache = KvCache::new(&model.cfg, 128);
    model.forward(tokens, &mut cache, Logits::From(0)).unwrap()
}

#[test]
fn a_prompt_s_logits_keep_every_bit() {
    if !amx() {
        return;
    }
    for variant in ["Q8_0", "Q4_K_M", "Q4_0"] {
        let Some(path) = common::model(variant) else {
            return;
        };
        let src = ModelSource::open(&path).unwrap();
        let mut model = src.load().unwrap();
        let tokens: Vec<u32> = (0..45).map(|i| 1 + (i * 7919) % 40000).collect();
        let before = prompt_logits(&model, &tokens);
        let (n, bytes) = model.unpack_tiles();
        assert!(
            n >= 7 * model.cfg.n_layer,
            "{variant}: only {n} matrices unpacked"
        );
        assert!(bytes > 0);
        assert!(model.matrices().filter(|w| w.tiles.is_some()).count() == n);
        // a second call changes nothing
        assert_eq!(model.unpack_tiles(), (0, 0));
        let after = prompt_logits(&model, &tokens);
        assert_eq!(before.len(), after.len());
        let same = before
            .iter()
            .zip(&after)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{variant}: the tiles changed a prompt's logits");
    }
}

#[test]
fn sixteen_sequences_on_tiles_agree_with_each_alone() {
    if !amx() {
        return;
    }
    let Some(path) = common::model("Q4_K_M") else {
        return;
    };
    let src = ModelSource::open(&path).unwrap();
    let mut model = src.load().unwrap();
    let vocab = model.cfg.vocab_size;
    let prompts: Vec<Vec<u32>> = (0..16u32)
        .map(|s| {
            (0..3 + s % 5)
                .map(|i| 1 + (s * 131 + i * 977) % 30000)
                .collect()
        })
        .collect();
    let next = [
        9u32, 504, 3303, 282, 1820, 2683, 314, 253, 1345, 28, 11, 77, 4200, 613, 95, 18,
    ];
    // each alone: the prompt, then one decode step (one token: the decode kernels), in both
    // arithmetics
    let alone = |model: &Model| -> Vec<Vec<f32>> {
        prompts
            .iter()
            .zip(next)
            .map(|(p, t)| {
                let mut cache = KvCache::new(&model.cfg, 32);
                model.forward(p, &mut cache, Logits::Last).unwrap();
                model.forward(&[t], &mut cache, Logits::Last).unwrap()
            })
            .collect()
    };
    let fast = alone(&model);
    model.numerics = Numerics::LlamaCpp;
    let exact = alone(&model);
    model.numerics = Numerics::Fast;
    model.unpack_tiles();
    // together: the prompts one by one, then one step of all 16 (the tiles)
    let mut caches: Vec<KvCache> = prompts
        .iter()
        .map(|p| {
            let mut cache = KvCache::new(&model.cfg, 32);
            model.forward(p, &mut cache, Logits::Last).unwrap();
            cache
        })
        .collect();
    let mut segs: Vec<Segment> = caches
        .iter_mut()
        .zip(&next)
        .map(|(cache, t)| Segment {
            tokens: std::slice::from_ref(t),
            cache,
        })
        .collect();
    let mut logits = Vec::new();
    model.forward_batch(&mut segs, &mut logits).unwrap();
    assert_eq!(logits.len(), 16 * vocab);
    // Both fast products sit within rounding of llama.cpp's arithmetic, which SmolLM2 amplifies
    // to about 1% of its logits (a Q8 activation level moved; see tests/fast_path.rs): the
    // tiles must not be further from it than the decode kernels are. A wrong product moves
    // logits by whole units.
    let mean_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() as f64)
            .sum::<f64>()
            / a.len() as f64
    };
    let (mut tiles_off, mut fast_off, mut same_top, mut fast_top) = (0f64, 0f64, 0, 0);
    for s in 0..16 {
        let got = &logits[s * vocab..(s + 1) * vocab];
        assert!(
            got != &fast[s][..],
            "sequence {s}: bit-identical, so not the tile path"
        );
        tiles_off += mean_diff(got, &exact[s]) / 16.0;
        fast_off += mean_diff(&fast[s], &exact[s]) / 16.0;
        same_top += (common::argmax(got) == common::argmax(&exact[s])) as usize;
        fast_top += (common::argmax(&fast[s]) == common::argmax(&exact[s])) as usize;
        let spread = exact[s].iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(&exact[s])
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 0.1 * spread,
            "sequence {s}: logits {worst} from llama.cpp's arithmetic (largest |logit| {spread})"
        );
    }
    eprintln!(
        "mean |logit - llama.cpp arithmetic|: tiles {tiles_off:.4}, decode kernels {fast_off:.4}; top token agrees for {same_top}/16 and {fast_top}/16"
    );
    assert!(
        tiles_off <= 1.5 * fast_off,
        "tiles {tiles_off} vs decode kernels {fast_off}"
    );
    // (a near tie may fall either way)
    assert!(
        same_top + 1 >= fast_top,
        "top token agrees for {same_top} of 16, with the decode kernels {fast_top}"
    );
}
