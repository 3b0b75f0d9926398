//! A decode step allocates nothing: after a prompt and two warm-up steps (which size the
//! cache's working buffers, the thread-local activation rows and the decode pool), eight more
//! steps through `Model::forward_into` make no heap allocation on any thread, counted by a
//! global allocator. Run on every weight kind the decode path has: F16 (the synthetic model),
//! and where the fetched files exist SmolLM2 in Q4_K_M and Q8_0.

mod common;

use autoround_cpu::model::llama::{KvCache, Logits};
use autoround_cpu::model::ModelSource;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(SeqCst) {
            ALLOCATIONS.fetch_add(1, SeqCst);
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(SeqCst) {
            ALLOCATIONS.fetch_add(1, SeqCst);
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn decode_steps_allocate_nothing(path: &Path) {
    let src = ModelSource::open(path).unwrap();
    let model = src.load().unwrap();
    let mut cache = KvCache::new(&model.cfg, 64);
    let mut logits = Vec::new();
    let prompt: Vec<u32> = (1..20).collect();
    model
        .forward_into(&prompt, &mut cache, Logits::Last, None, &mut logits)
        .unwrap();
    for t in 0..2 {
        model
            .forward_into(&[t + 5], &mut cache, Logits::Last, None, &mut logits)
            .unwrap();
    }
    ALLOCATIONS.store(0, SeqCst);
    COUNTING.store(true, SeqCst);
    for t in 0..8 {
        model
            .forward_into(&[t + 7], &mut cache, Logits::Last, None, &mut logits)
            .unwrap();
    }
    COUNTING.store(false, SeqCst);
    let n = ALLOCATIONS.load(SeqCst);
    assert!(logits.iter().all(|x| x.is_finite()));
    assert_eq!(
        n,
        0,
        "{}: {n} allocations in 8 decode steps",
        path.display()
    );
}

#[test]
fn decode_steps_allocate_nothing_on_every_weight_kind() {
    let mut paths = Vec::new();
    paths.extend(common::synthetic("ci"));
    for variant in ["Q4_K_M", "Q8_0"] {
        paths.extend(common::model(variant));
    }
    if paths.is_empty() {
        return;
    }
    for p in &paths {
        decode_steps_allocate_nothing(p);
    }
}
