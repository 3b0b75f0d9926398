//! Writers of tuned checkpoints: the auto_round family (GPTQ / AWQ packing) and tuned GGUF.
//!
//! Folders are written atomically ([`write_dir_atomically`]): into a hidden temporary folder
//! beside the destination, renamed into place only when every file is complete.

pub mod auto_round;
pub mod gguf;

use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};

/// Build a folder at `out` with `fill(tmp)` writing into a temporary folder, then rename it into
/// place (replacing an existing `out` only if `overwrite`). On error nothing is left behind and
/// an existing `out` is untouched.
pub fn write_dir_atomically(
    out: &Path,
    overwrite: bool,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    if out.exists() && !overwrite {
        return Err(anyhow!(
            "{} exists; pass --overwrite to replace it",
            out.display()
        ));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let leaf = out
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a folder name", out.display()))?
        .to_string_lossy()
        .into_owned();
    let tmp = parent.join(format!(".{leaf}.tmp.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| -> Result<()> {
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        fill(&tmp)?;
        if out.exists() {
            let old = parent.join(format!(".{leaf}.old.{}", std::process::id()));
            std::fs::rename(out, &old)
                .with_context(|| format!("moving the old {} aside", out.display()))?;
            if let Err(e) = std::fs::rename(&tmp, out) {
                let _ = std::fs::rename(&old, out);
                return Err(e)
                    .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()));
            }
            if old.is_dir() {
                std::fs::remove_dir_all(&old)?;
            } else {
                std::fs::remove_file(&old)?;
            }
        } else {
            std::fs::rename(&tmp, out)
                .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
        }
        if let Ok(d) = std::fs::File::open(&parent) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.with_context(|| format!("writing {}", out.display()))
}

/// Write a small file and fsync it.
pub fn write_synced(path: &Path, body: &[u8]) -> Result<()> {
    std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))?;
    std::fs::File::open(path)?.sync_all()?;
    Ok(())
}

/// The file name of shard `i` (0-based) of `n` safetensors shards, as transformers names them.
pub fn shard_file_name(i: usize, n: usize) -> String {
    if n == 1 {
        "model.safetensors".to_string()
    } else {
        format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
    }
}

/// The shortest decimal that reads back as the same f32, as a JSON number (so 1e-5 stays 1e-05
/// instead of 9.999999747378752e-06).
pub fn f32_to_json(x: f32) -> serde_json::Value {
    let f: f64 = format!("{x}").parse().unwrap_or(f64::from(x));
    serde_json::json!(f)
}
