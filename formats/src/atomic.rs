//! Atomic file writes, shared by every writer in this crate: an interrupted or failed write never
//! leaves a partial file at the destination.

use std::fs::File;
use std::path::{Path, PathBuf};

/// `<path>.tmp.<pid>`, beside `path` so the final rename stays on one file system.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    PathBuf::from(tmp)
}

/// Produce the file with `write(tmp)` at [`temp_path`], fsync it, rename it over `path`, then
/// fsync the directory (best effort: not every platform can). On any error the temporary file is
/// removed and `path` is untouched. `io_err(path, operation, error)` maps the I/O failures of the
/// steps after `write`.
pub(crate) fn write_atomically<E>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
    io_err: impl Fn(&Path, &'static str, std::io::Error) -> E,
) -> Result<(), E> {
    let tmp = temp_path(path);
    let result = (|| {
        write(&tmp)?;
        let f = File::options()
            .append(true)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, "open", e))?;
        f.sync_all().map_err(|e| io_err(&tmp, "fsync", e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, "rename temporary file over", e))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        // The file may not exist (creating it may have been what failed).
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
