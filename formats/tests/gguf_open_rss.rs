//! Opening a GGUF maps it and parses only the header: resident memory must not grow by anything
//! like the file's size. The real model (~98 MB, 1.8 MB header with a 49152-token vocabulary) is
//! opened and the growth of VmRSS is checked; then all tensor data is touched, to show that the
//! measurement does see the map's pages once they are read.
//!
//! This file holds a single test so that no other test runs in the process while RSS is measured.

use std::path::PathBuf;

use autoround_formats::gguf::GgufFile;

fn models_dir() -> PathBuf {
    match std::env::var_os("AUTOROUND_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/autoround-cpu/models"),
    }
}

/// Resident set size in bytes (Linux: VmRSS from /proc/self/status).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

#[test]
#[cfg(target_os = "linux")]
fn open_does_not_touch_tensor_data() {
    let path = models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        let msg = format!(
            "{} is missing: fetch it with tools/fetch-models.sh",
            path.display()
        );
        assert!(
            std::env::var_os("CI").is_none(),
            "{msg} (CI is set: it is required)"
        );
        eprintln!("[gguf_open_rss] !!! SKIPPED: {msg}");
        return;
    }
    const MIB: u64 = 1 << 20;
    let before = rss_bytes();
    let file = GgufFile::open(&path).expect("open");
    let after_open = rss_bytes();
    let data_bytes: u64 = file.tensors().iter().map(|t| t.size).sum();
    let grew = after_open.saturating_sub(before);
    eprintln!(
        "[gguf_open_rss] file {} MiB (tensor data {} MiB, header {:.1} MiB): RSS grew {:.1} MiB at open",
        file.file_bytes().len() as u64 / MIB,
        data_bytes / MIB,
        file.data_offset as f64 / MIB as f64,
        grew as f64 / MIB as f64
    );
    assert!(data_bytes > 64 * MIB, "expected a ~100 MB model");
    assert!(
        grew < 16 * MIB,
        "opening raised RSS by {grew} bytes: tensor data must not be touched at open"
    );

    // Touch every page of every tensor: now RSS must grow by about the data size, which shows
    // that the measurement above would have caught reading the data.
    let mut sum = 0u64;
    for t in file.tensors() {
        let data = file.tensor_data(t);
        sum += data
            .iter()
            .step_by(4096)
            .map(|&b| u64::from(b))
            .sum::<u64>();
        sum += data.last().map_or(0, |&b| u64::from(b));
    }
    let after_touch = rss_bytes();
    eprintln!(
        "[gguf_open_rss] after reading all tensor data: RSS grew {:.1} MiB more (checksum {sum})",
        after_touch.saturating_sub(after_open) as f64 / MIB as f64
    );
    assert!(
        after_touch.saturating_sub(after_open) > data_bytes / 2,
        "touching {data_bytes} bytes of tensor data raised RSS by only {} bytes: the RSS \
         measurement does not work here",
        after_touch.saturating_sub(after_open)
    );
}
