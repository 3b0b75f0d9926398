//! `Model::forward` refuses an empty batch, a batch past the cache's capacity and an unknown
//! token with the error that names it, and leaves the cache usable.

mod common;

use autoround_cpu::model::llama::{ForwardError, KvCache, Logits};
use autoround_cpu::model::ModelSource;

#[test]
fn bad_batches_are_refused_and_the_cache_stays_usable() {
    let Some(path) = common::synthetic("ci") else {
        return;
    };
    let src = ModelSource::open(&path).unwrap();
    let model = src.load().unwrap();
    let mut cache = KvCache::new(&model.cfg, 4);
    assert!(matches!(
        model.forward(&[], &mut cache, Logits::Last),
        Err(ForwardError::Empty)
    ));
    assert!(matches!(
        model.forward(&[1, 2, 3, 4, 5], &mut cache, Logits::Last),
        Err(ForwardError::ContextFull {
            have: 0,
            add: 5,
            n_ctx: 4
        })
    ));
    let vocab = model.cfg.vocab_size as u32;
    assert!(matches!(
        model.forward(&[vocab], &mut cache, Logits::Last),
        Err(ForwardError::BadToken { .. })
    ));
    assert_eq!(cache.len(), 0);
    let logits = model.forward(&[1, 2], &mut cache, Logits::From(0)).unwrap();
    assert_eq!(logits.len(), 2 * vocab as usize);
    assert_eq!(cache.len(), 2);
    assert!(matches!(
        model.forward(&[1, 2, 3], &mut cache, Logits::Last),
        Err(ForwardError::ContextFull {
            have: 2,
            add: 3,
            n_ctx: 4
        })
    ));
}
