//! Debug dumps of intermediate tensors, for bit-level comparison with llama.cpp.
//!
//! With `AUTOROUND_TRACE_DIR=DIR` set, every forward pass writes its intermediates to
//! `DIR/step<k>/<name>.f32` (`k` counts forward passes from 0), named as llama.cpp's graph names
//! them (`attn_norm-0`, `Qcur-0`, ..., `result_output`): a header line `name ne0 ne1 0 0`, then
//! the values as little-endian f32. `tools/build-llama-dump.sh` builds the llama.cpp side and
//! `tools/compare-dumps.py` compares the two. Unset, tracing costs one branch per tensor.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

fn dir() -> Option<&'static PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| std::env::var_os("AUTOROUND_TRACE_DIR").map(PathBuf::from))
        .as_ref()
}

static STEP: AtomicUsize = AtomicUsize::new(0);

/// Whether tracing is on.
pub fn enabled() -> bool {
    dir().is_some()
}

/// Start the next forward pass's directory.
pub fn next_step() {
    if enabled() {
        STEP.fetch_add(1, Ordering::SeqCst);
    }
}

/// Write `data` (`rows × row_len`) as `name` (with `-layer` appended when given).
pub fn dump(name: &str, layer: Option<usize>, data: &[f32], row_len: usize) {
    let Some(d) = dir() else { return };
    let step = STEP.load(Ordering::SeqCst).saturating_sub(1);
    let d = d.join(format!("step{step}"));
    let name = match layer {
        Some(l) => format!("{name}-{l}"),
        None => name.to_string(),
    };
    let mut bytes = format!("{name} {row_len} {} 0 0\n", data.len() / row_len.max(1)).into_bytes();
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let res = std::fs::create_dir_all(&d)
        .and_then(|_| std::fs::write(d.join(format!("{name}.f32")), bytes));
    if let Err(e) = res {
        eprintln!("AUTOROUND_TRACE_DIR: cannot write {name}: {e}");
    }
}
