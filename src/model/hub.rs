//! `-m owner/name`: a model named by its Hugging Face repo id, found in the local hub cache
//! (the layout `huggingface_hub` and the `hf-hub` crate share), downloaded only when a file is
//! missing and `HF_HUB_OFFLINE` is not set.
//!
//! The cache layout: `<cache>/models--owner--name/refs/<revision>` holds a commit hash,
//! `<cache>/models--owner--name/snapshots/<hash>/<file>` the files (symlinks into `blobs/` when
//! the hub wrote them, plain files when copied there).
//!
//! Lookups read the cache directly rather than through `hf_hub::CacheRepo::get`, which cannot
//! list a snapshot, does not trim a ref file ending in a newline and does not resolve a revision
//! given as a commit hash (a snapshot with no ref); the folder name comes from `hf_hub::Repo`.

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Files copied beside config.json when the repo has them (tokenizer side files, chat templates,
/// quantization configs); config.json, tokenizer.json and the safetensors are always needed.
const SIDE_FILES: &[&str] = &[
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "quantization_config.json",
    "quantize_config.json",
];

const INDEX_FILE: &str = "model.safetensors.index.json";

/// Errors resolving a `-m` argument that is neither a local path nor a model in the hub cache.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{path}: no such file or directory (nor a Hugging Face repo id owner/name[:FILE][@REVISION])")]
    NotFound { path: PathBuf },
    #[error("{arg}: no such file or directory, and no Hugging Face cache folder to look it up in (set HF_HUB_CACHE or HF_HOME)")]
    NoCacheDir { arg: String },
    #[error("{arg}: no such file or directory, and the Hugging Face repo {repo} (revision '{rev}') is not in the local cache {cache}; HF_HUB_OFFLINE is set, so nothing was downloaded (unset it, or download the model first: huggingface-cli download {repo})")]
    RepoNotCached {
        arg: String,
        repo: String,
        rev: String,
        cache: PathBuf,
    },
    #[error("{repo}: '{file}' is not in the local Hugging Face cache {cache} (revision '{rev}'); HF_HUB_OFFLINE is set, so it was not downloaded (unset it, or download the model first: huggingface-cli download {repo})")]
    NotCached {
        repo: String,
        rev: String,
        file: String,
        cache: PathBuf,
    },
    #[error("{repo}: {what} not in the local Hugging Face cache {cache}, and fetching it from {endpoint} failed: {err} (check the repo id, the network, and HF_TOKEN for a gated repo; or download the model first and set HF_HUB_OFFLINE=1)")]
    Download {
        repo: String,
        what: String,
        cache: PathBuf,
        endpoint: String,
        err: Box<ApiError>,
    },
    #[error(
        "{repo} has several .gguf files; pick one with {repo}:FILE (e.g. {repo}:{first}): {list}"
    )]
    SeveralGguf {
        repo: String,
        first: String,
        list: String,
    },
    #[error("{repo} (revision '{rev}') has neither config.json nor a .gguf file (files: {list})")]
    NoModel {
        repo: String,
        rev: String,
        list: String,
    },
    #[error("{repo} (revision '{rev}') has no file '{file}'{hint}")]
    NoSuchFile {
        repo: String,
        rev: String,
        file: String,
        hint: String,
    },
    #[error("{repo} (revision '{rev}') has config.json but no safetensors weights (model.safetensors or {INDEX_FILE}; files: {list})")]
    NoWeights {
        repo: String,
        rev: String,
        list: String,
    },
    #[error("{path}: {msg}")]
    BadIndex { path: PathBuf, msg: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where a `-m` argument points: an existing path is used as it is; otherwise `owner/name`
/// (optionally `owner/name:FILE` to pick one file, e.g. a .gguf in a repo of several quantizations,
/// and optionally `@revision`) is resolved through the Hugging Face hub cache
/// ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub): a GGUF file, or a
/// folder (the snapshot folder holding config.json, tokenizer files and weights).
///
/// Files missing from the cache are downloaded (with a progress bar, `HF_TOKEN` if set,
/// `HF_ENDPOINT` if set) unless `HF_HUB_OFFLINE` is set; a model that is wholly in the cache
/// never touches the network.
pub fn resolve_model(arg: &Path) -> Result<PathBuf, HubError> {
    if arg.exists() {
        return Ok(arg.to_path_buf());
    }
    let Some(spec) = parse_spec(arg) else {
        return Err(not_found(arg));
    };
    let Some(cache) = cache_dir() else {
        return Err(HubError::NoCacheDir { arg: spec.arg });
    };
    resolve_at(
        arg,
        &cache,
        (!offline_from_env()).then(Hub::from_env).as_ref(),
    )
}

/// [`resolve_model`] with the hub cache folder and the offline switch given (for tests: no
/// process environment is read, except `HF_TOKEN`/`HF_ENDPOINT` when online).
pub fn resolve_model_in(arg: &Path, cache: &Path, offline: bool) -> Result<PathBuf, HubError> {
    resolve_at(arg, cache, (!offline).then(Hub::from_env).as_ref())
}

/// The hub cache folder: $HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub,
/// $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return Some(d);
    }
    if let Some(d) = var("HF_HOME") {
        return Some(d.join("hub"));
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return Some(d.join("huggingface/hub"));
    }
    var("HOME").map(|h| h.join(".cache/huggingface/hub"))
}

/// `HF_HUB_OFFLINE` set to 1/true/on/yes (as huggingface_hub reads it).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "on" | "yes"
        )
    })
}

/// Where to download from when online.
struct Hub {
    endpoint: String,
    token: Option<String>,
}

impl Hub {
    fn from_env() -> Hub {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Hub {
            endpoint: var("HF_ENDPOINT")
                .map(|e| e.trim_end_matches('/').to_string())
                .unwrap_or_else(|| "https://huggingface.co".into()),
            token: var("HF_TOKEN").map(|t| t.trim().to_string()),
        }
    }
}

/// A parsed `owner/name[:FILE][@REVISION]`.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    arg: String,
    repo: String,
    file: Option<String>,
    rev: String,
}

fn not_found(arg: &Path) -> HubError {
    HubError::NotFound {
        path: arg.to_path_buf(),
    }
}

/// A repo name part: ASCII letters, digits, '-', '_', '.'; not starting or ending with '-' or
/// '.', no "--" or ".." (the hub's rules).
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 96
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
        && !s.contains("--")
        && !s.contains("..")
}

/// A repo-relative file name or revision: no leading '/', no '..' or empty component.
fn valid_rel(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('/') && s.split('/').all(|c| !c.is_empty() && c != "..")
}

/// `owner/name[:FILE][@REVISION]` (the two suffixes in either order), or `None` for anything
/// that looks like a path rather than a repo id.
fn parse_spec(arg: &Path) -> Option<Spec> {
    let s = arg.to_str()?;
    if s.starts_with(['/', '.', '~']) || s.contains('\\') {
        return None;
    }
    let cut = s.find([':', '@']).unwrap_or(s.len());
    let (id, mut rest) = s.split_at(cut);
    let (owner, name) = id.split_once('/')?;
    if !valid_name(owner) || !valid_name(name) {
        return None;
    }
    // `dir/model.gguf` that does not exist is a mistyped path, not a repo.
    let lower = name.to_ascii_lowercase();
    if [".gguf", ".safetensors", ".bin", ".json"]
        .iter()
        .any(|e| lower.ends_with(e))
    {
        return None;
    }
    let (mut file, mut rev) = (None, None);
    while let Some(c) = rest.chars().next() {
        let body = &rest[1..];
        let other = if c == ':' { '@' } else { ':' };
        let end = body.find(other).unwrap_or(body.len());
        let part = &body[..end];
        let slot = if c == ':' { &mut file } else { &mut rev };
        if slot.is_some() || !valid_rel(part) {
            return None;
        }
        *slot = Some(part.to_string());
        rest = &body[end..];
    }
    Some(Spec {
        arg: s.to_string(),
        repo: id.to_string(),
        file,
        rev: rev.unwrap_or_else(|| "main".into()),
    })
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn repo_dir(cache: &Path, spec: &Spec) -> PathBuf {
    cache.join(Repo::new(spec.repo.clone(), RepoType::Model).folder_name())
}

/// The cached snapshot folder of `spec`'s revision: `refs/<rev>` names the commit, or the
/// revision is itself a commit hash with a snapshot.
fn cached_snapshot(cache: &Path, spec: &Spec) -> Option<PathBuf> {
    let dir = repo_dir(cache, spec);
    if let Ok(hash) = std::fs::read_to_string(dir.join("refs").join(&spec.rev)) {
        let hash = hash.trim();
        if !hash.is_empty() && !hash.contains(['/', '\\']) && hash != ".." {
            let snap = dir.join("snapshots").join(hash);
            if snap.is_dir() {
                return Some(snap);
            }
        }
    }
    let snap = dir.join("snapshots").join(&spec.rev);
    (is_commit_hash(&spec.rev) && snap.is_dir()).then_some(snap)
}

/// Every file under `dir`, as repo-relative names with '/' (symlinks followed; broken ones left
/// out, as they are not usable).
fn list_files(dir: &Path) -> Result<Vec<String>, HubError> {
    fn walk(root: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), HubError> {
        let here = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let rd = std::fs::read_dir(&here).map_err(|source| HubError::Io {
            path: here.clone(),
            source,
        })?;
        for e in rd {
            let e = e.map_err(|source| HubError::Io {
                path: here.clone(),
                source,
            })?;
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let rel_name = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            match std::fs::metadata(e.path()) {
                Ok(m) if m.is_dir() => walk(root, &rel_name, out)?,
                Ok(_) => out.push(rel_name),
                Err(_) => {}
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

/// A short list for messages.
fn show_list<S: AsRef<str>>(names: &[S]) -> String {
    const MAX: usize = 20;
    let mut s: Vec<&str> = names.iter().take(MAX).map(|n| n.as_ref()).collect();
    let more = names.len().saturating_sub(MAX);
    let tail = format!("… and {more} more");
    if more > 0 {
        s.push(&tail);
    }
    if s.is_empty() {
        "none".into()
    } else {
        s.join(", ")
    }
}

/// The model files of a repo, seen either in the cache alone or on the hub.
trait Files {
    /// The snapshot folder the files are (or will be) in.
    fn root(&self) -> &Path;
    /// Names of the repo's files (only those cached, for the cache).
    fn list(&self) -> &[String];
    /// Whether [`Files::list`] is the repo's whole file list (the hub's), not just what is cached.
    fn complete(&self) -> bool;
    /// Local path of a file, downloading it if needed.
    fn fetch(&self, spec: &Spec, name: &str) -> Result<PathBuf, HubError>;
}

/// The files of a cached snapshot; a missing one is [`HubError::NotCached`].
struct CacheFiles {
    cache: PathBuf,
    snapshot: PathBuf,
    list: Vec<String>,
}

impl Files for CacheFiles {
    fn root(&self) -> &Path {
        &self.snapshot
    }
    fn list(&self) -> &[String] {
        &self.list
    }
    fn complete(&self) -> bool {
        false
    }
    fn fetch(&self, spec: &Spec, name: &str) -> Result<PathBuf, HubError> {
        let p = self.snapshot.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(HubError::NotCached {
                repo: spec.repo.clone(),
                rev: spec.rev.clone(),
                file: name.into(),
                cache: self.cache.clone(),
            })
        }
    }
}

/// The files of the repo at one commit on the hub; cached ones are used as they are.
struct HubFiles {
    cache: PathBuf,
    endpoint: String,
    snapshot: PathBuf,
    list: Vec<String>,
    api: ApiRepo,
}

impl Files for HubFiles {
    fn root(&self) -> &Path {
        &self.snapshot
    }
    fn list(&self) -> &[String] {
        &self.list
    }
    fn complete(&self) -> bool {
        true
    }
    fn fetch(&self, spec: &Spec, name: &str) -> Result<PathBuf, HubError> {
        if !self.list.iter().any(|f| f == name) {
            let ggufs: Vec<&String> = self.list.iter().filter(|f| is_gguf(f)).collect();
            return Err(HubError::NoSuchFile {
                repo: spec.repo.clone(),
                rev: spec.rev.clone(),
                file: name.into(),
                hint: if ggufs.is_empty() {
                    String::new()
                } else {
                    format!("; its .gguf files: {}", show_list(&ggufs))
                },
            });
        }
        let p = self.snapshot.join(name);
        if p.is_file() {
            return Ok(p);
        }
        self.api.download(name).map_err(|err| HubError::Download {
            repo: spec.repo.clone(),
            what: format!("'{name}' is"),
            cache: self.cache.clone(),
            endpoint: self.endpoint.clone(),
            err: Box::new(err),
        })
    }
}

fn is_gguf(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".gguf")
}

/// A GGUF that is a model, not a multimodal projector beside it.
fn is_model_gguf(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    is_gguf(name) && !base.to_ascii_lowercase().starts_with("mmproj")
}

/// The model of `spec` among `files`: the named file, the config.json folder (with every file it
/// needs fetched), or the repo's one GGUF.
fn resolve_files(spec: &Spec, files: &dyn Files) -> Result<PathBuf, HubError> {
    if let Some(f) = &spec.file {
        return files.fetch(spec, f);
    }
    let list = files.list();
    let has = |n: &str| list.iter().any(|f| f == n);
    if has("config.json") {
        files.fetch(spec, "config.json")?;
        files.fetch(spec, "tokenizer.json")?;
        for f in SIDE_FILES {
            if has(f) {
                files.fetch(spec, f)?;
            }
        }
        if has(INDEX_FILE) {
            let index = files.fetch(spec, INDEX_FILE)?;
            for shard in index_shards(&index)? {
                files.fetch(spec, &shard)?;
            }
        } else if has("model.safetensors") || !files.complete() {
            files.fetch(spec, "model.safetensors")?;
        } else {
            return Err(HubError::NoWeights {
                repo: spec.repo.clone(),
                rev: spec.rev.clone(),
                list: show_list(list),
            });
        }
        return Ok(files.root().to_path_buf());
    }
    let ggufs: Vec<&String> = list.iter().filter(|f| is_model_gguf(f)).collect();
    match ggufs.as_slice() {
        [one] => files.fetch(spec, one),
        [] if !files.complete() => Err(HubError::NotCached {
            repo: spec.repo.clone(),
            rev: spec.rev.clone(),
            file: "config.json (or a .gguf file)".into(),
            cache: PathBuf::new(),
        }),
        [] => Err(HubError::NoModel {
            repo: spec.repo.clone(),
            rev: spec.rev.clone(),
            list: show_list(list),
        }),
        several => Err(HubError::SeveralGguf {
            repo: spec.repo.clone(),
            first: several[0].to_string(),
            list: show_list(several),
        }),
    }
}

/// The shard files named in a `model.safetensors.index.json` (its `weight_map` values).
fn index_shards(path: &Path) -> Result<Vec<String>, HubError> {
    let bad = |msg: String| HubError::BadIndex {
        path: path.to_path_buf(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no \"weight_map\" object".into()))?;
    let mut shards = BTreeSet::new();
    for (tensor, file) in map {
        let f = file
            .as_str()
            .filter(|f| valid_rel(f))
            .ok_or_else(|| bad(format!("weight_map[\"{tensor}\"] is not a file name")))?;
        shards.insert(f.to_string());
    }
    if shards.is_empty() {
        return Err(bad("the weight_map is empty".into()));
    }
    Ok(shards.into_iter().collect())
}

/// The resolution: the cache first; the hub (`hub`, `None` offline) only for what is missing.
fn resolve_at(arg: &Path, cache: &Path, hub: Option<&Hub>) -> Result<PathBuf, HubError> {
    if arg.exists() {
        return Ok(arg.to_path_buf());
    }
    let spec = parse_spec(arg).ok_or_else(|| not_found(arg))?;
    let missing = match cached_snapshot(cache, &spec) {
        Some(snapshot) => {
            let files = CacheFiles {
                cache: cache.to_path_buf(),
                list: list_files(&snapshot)?,
                snapshot,
            };
            match resolve_files(&spec, &files) {
                Ok(p) => return Ok(p),
                Err(HubError::NotCached { file, .. }) => file,
                Err(e) => return Err(e),
            }
        }
        None => String::new(),
    };
    let Some(hub) = hub else {
        return Err(if missing.is_empty() {
            HubError::RepoNotCached {
                arg: spec.arg.clone(),
                repo: spec.repo.clone(),
                rev: spec.rev.clone(),
                cache: cache.to_path_buf(),
            }
        } else {
            HubError::NotCached {
                repo: spec.repo.clone(),
                rev: spec.rev.clone(),
                file: missing,
                cache: cache.to_path_buf(),
            }
        });
    };
    let download_err = |what: String, err: ApiError| HubError::Download {
        repo: spec.repo.clone(),
        what,
        cache: cache.to_path_buf(),
        endpoint: hub.endpoint.clone(),
        err: Box::new(err),
    };
    let what = if missing.is_empty() {
        format!("revision '{}' is", spec.rev)
    } else {
        format!("'{missing}' is")
    };
    let mut builder = ApiBuilder::from_cache(Cache::new(cache.to_path_buf()))
        .with_endpoint(hub.endpoint.clone())
        .with_progress(true);
    if let Some(t) = &hub.token {
        builder = builder.with_token(Some(t.clone()));
    }
    let api = builder.build().map_err(|e| download_err(what.clone(), e))?;
    let info = api
        .repo(Repo::with_revision(
            spec.repo.clone(),
            RepoType::Model,
            spec.rev.clone(),
        ))
        .info()
        .map_err(|e| download_err(what, e))?;
    // Download at the commit the listing came from, so that every file lands in one snapshot.
    let files = HubFiles {
        cache: cache.to_path_buf(),
        endpoint: hub.endpoint.clone(),
        snapshot: repo_dir(cache, &spec).join("snapshots").join(&info.sha),
        list: info.siblings.into_iter().map(|s| s.rfilename).collect(),
        api: api.repo(Repo::with_revision(
            spec.repo.clone(),
            RepoType::Model,
            info.sha.clone(),
        )),
    };
    let out = resolve_files(&spec, &files)?;
    if spec.rev != info.sha {
        // The next (offline) run finds this revision's snapshot.
        let r = Cache::new(cache.to_path_buf())
            .repo(Repo::with_revision(
                spec.repo.clone(),
                RepoType::Model,
                spec.rev.clone(),
            ))
            .create_ref(&info.sha);
        if let Err(e) = r {
            eprintln!(
                "warning: {}: could not record revision '{}' in the cache: {e}",
                spec.repo, spec.rev
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const HASH: &str = "0123456789abcdef0123456789abcdef01234567";
    const HASH2: &str = "fedcba9876543210fedcba9876543210fedcba98";

    /// A temporary folder removed on drop.
    struct Tmp(PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Tmp {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "arc-hub-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Tmp(p)
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Puts `files` (name, bytes) into the snapshot `hash` of `repo` in `cache`, as the hub does
    /// (blobs + relative symlinks) or as plain files, and points `refs/<rev>` at it.
    fn put(cache: &Path, repo: &str, rev: &str, hash: &str, files: &[(&str, &[u8])], links: bool) {
        let dir = cache.join(format!("models--{}", repo.replace('/', "--")));
        let snap = dir.join("snapshots").join(hash);
        for (name, bytes) in files {
            let p = snap.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            if links {
                let blob_name = format!("{hash}-{}", name.replace('/', "_"));
                let blob = dir.join("blobs").join(&blob_name);
                std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
                std::fs::write(&blob, bytes).unwrap();
                let depth = name.matches('/').count() + 2;
                let rel = format!("{}blobs/{blob_name}", "../".repeat(depth));
                #[cfg(unix)]
                std::os::unix::fs::symlink(&rel, &p).unwrap();
                #[cfg(not(unix))]
                std::fs::write(&p, bytes).unwrap();
            } else {
                std::fs::write(&p, bytes).unwrap();
            }
        }
        std::fs::create_dir_all(&snap).unwrap();
        let r = dir.join("refs").join(rev);
        std::fs::create_dir_all(r.parent().unwrap()).unwrap();
        std::fs::write(r, hash).unwrap();
    }

    const INDEX: &[u8] = br#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#;

    fn folder_files() -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("config.json", b"{}"),
            ("tokenizer.json", b"{}"),
            ("tokenizer_config.json", b"{}"),
            ("generation_config.json", b"{}"),
            (INDEX_FILE, INDEX),
            ("model-00001-of-00002.safetensors", b"x"),
            ("model-00002-of-00002.safetensors", b"y"),
            ("README.md", b"hi"),
        ]
    }

    fn offline(arg: &str, cache: &Path) -> Result<PathBuf, HubError> {
        resolve_model_in(Path::new(arg), cache, true)
    }

    #[test]
    fn parses_repo_ids_and_rejects_paths() {
        let p = |s: &str| parse_spec(Path::new(s));
        let s = p("owner/name").unwrap();
        assert_eq!(
            (s.repo.as_str(), s.file, s.rev.as_str()),
            ("owner/name", None, "main")
        );
        let s = p("Qwen/Qwen3-0.6B-GGUF:Qwen3-0.6B-Q8_0.gguf@v1.0").unwrap();
        assert_eq!(s.repo, "Qwen/Qwen3-0.6B-GGUF");
        assert_eq!(s.file.as_deref(), Some("Qwen3-0.6B-Q8_0.gguf"));
        assert_eq!(s.rev, "v1.0");
        let s = p("o/n@refs/pr/1:sub/f.gguf").unwrap();
        assert_eq!(
            (s.file.as_deref(), s.rev.as_str()),
            (Some("sub/f.gguf"), "refs/pr/1")
        );
        for bad in [
            "./x",
            "/abs/x",
            "../x/y",
            "~/x",
            "x",
            "model.gguf",
            "a/b/c",
            "a/b.gguf",
            "dir/model.safetensors",
            "a//b",
            "-a/b",
            "a/b-",
            "a/b--c",
            "a/b:",
            "a/b@",
            "a/b:../x",
            "a/b:/etc/passwd",
            "a b/c",
            "",
        ] {
            assert!(p(bad).is_none(), "{bad:?} should not be a repo id");
        }
    }

    #[test]
    fn malformed_ids_and_missing_paths_are_not_found_without_a_lookup() {
        let t = Tmp::new("malformed");
        for arg in ["./x", "/abs/x/model.gguf", "x", "a/b/c", "dir/m.gguf"] {
            let e = offline(arg, &t.0).unwrap_err();
            assert!(matches!(e, HubError::NotFound { .. }), "{arg}: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains(arg) && msg.contains("no such file"), "{msg}");
        }
        // the cache folder was not touched
        assert_eq!(std::fs::read_dir(&t.0).unwrap().count(), 0);
    }

    #[test]
    fn existing_local_path_is_untouched() {
        let t = Tmp::new("local");
        // even a local folder that looks like a repo id, and one in the cache under that id
        let local = t.0.join("owner/name");
        std::fs::create_dir_all(&local).unwrap();
        put(&t.0, "owner/name", "main", HASH, &folder_files(), false);
        assert_eq!(offline(local.to_str().unwrap(), &t.0).unwrap(), local);
        let f = t.0.join("m.gguf");
        std::fs::write(&f, b"GGUF").unwrap();
        assert_eq!(offline(f.to_str().unwrap(), &t.0).unwrap(), f);
        assert_eq!(resolve_model(&f).unwrap(), f);
    }

    #[test]
    fn repo_id_resolves_to_the_snapshot_folder() {
        for links in [false, true] {
            let t = Tmp::new("folder");
            put(&t.0, "owner/name", "main", HASH, &folder_files(), links);
            let p = offline("owner/name", &t.0).unwrap();
            assert_eq!(p, t.0.join("models--owner--name/snapshots").join(HASH));
            assert!(p.join("config.json").is_file());
            assert!(p.join("model-00002-of-00002.safetensors").is_file());
        }
    }

    #[test]
    fn single_safetensors_folder_and_a_ref_with_a_newline() {
        let t = Tmp::new("single");
        let files: Vec<(&str, &[u8])> = vec![
            ("config.json", b"{}"),
            ("tokenizer.json", b"{}"),
            ("model.safetensors", b"x"),
        ];
        put(&t.0, "o/n", "main", HASH, &files, true);
        let r = t.0.join("models--o--n/refs/main");
        std::fs::write(&r, format!("{HASH}\n")).unwrap();
        let p = offline("o/n", &t.0).unwrap();
        assert_eq!(p, t.0.join("models--o--n/snapshots").join(HASH));
    }

    #[test]
    fn missing_shard_or_tokenizer_offline_is_named() {
        let t = Tmp::new("shard");
        let mut files = folder_files();
        files.retain(|f| f.0 != "model-00002-of-00002.safetensors");
        put(&t.0, "owner/name", "main", HASH, &files, true);
        let e = offline("owner/name", &t.0).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, HubError::NotCached { .. }), "{e:?}");
        for n in [
            "owner/name",
            "model-00002-of-00002.safetensors",
            "HF_HUB_OFFLINE",
        ] {
            assert!(msg.contains(n), "{msg}");
        }
        let t = Tmp::new("tok");
        let mut files = folder_files();
        files.retain(|f| f.0 != "tokenizer.json");
        put(&t.0, "owner/name", "main", HASH, &files, false);
        let msg = offline("owner/name", &t.0).unwrap_err().to_string();
        assert!(msg.contains("'tokenizer.json'"), "{msg}");
    }

    #[test]
    fn named_file_and_single_gguf() {
        for links in [false, true] {
            let t = Tmp::new("gguf");
            let files: Vec<(&str, &[u8])> = vec![
                ("README.md", b"hi"),
                ("m-Q4_K_M.gguf", b"GGUF1"),
                ("mmproj-f16.gguf", b"GGUF2"),
            ];
            put(&t.0, "o/single", "main", HASH, &files, links);
            let snap = t.0.join("models--o--single/snapshots").join(HASH);
            // one model GGUF (the projector does not count)
            let p = offline("o/single", &t.0).unwrap();
            assert_eq!(p, snap.join("m-Q4_K_M.gguf"));
            assert_eq!(std::fs::read(&p).unwrap(), b"GGUF1");
            // a named file
            let p = offline("o/single:mmproj-f16.gguf", &t.0).unwrap();
            assert_eq!(p, snap.join("mmproj-f16.gguf"));
            // a named file that is not cached
            let e = offline("o/single:other.gguf", &t.0).unwrap_err();
            assert!(matches!(e, HubError::NotCached { .. }), "{e:?}");
            assert!(e.to_string().contains("other.gguf"), "{e}");
        }
    }

    #[test]
    fn several_ggufs_are_listed() {
        let t = Tmp::new("several");
        let files: Vec<(&str, &[u8])> = vec![
            ("m-Q4_K_M.gguf", b"a"),
            ("m-Q8_0.gguf", b"b"),
            ("sub/m-F16.gguf", b"c"),
        ];
        put(&t.0, "o/many", "main", HASH, &files, true);
        let e = offline("o/many", &t.0).unwrap_err();
        assert!(matches!(e, HubError::SeveralGguf { .. }), "{e:?}");
        let msg = e.to_string();
        for n in [
            "o/many",
            "m-Q4_K_M.gguf",
            "m-Q8_0.gguf",
            "sub/m-F16.gguf",
            "o/many:FILE",
        ] {
            assert!(msg.contains(n), "{n} missing from: {msg}");
        }
        let p = offline("o/many:sub/m-F16.gguf", &t.0).unwrap();
        assert_eq!(std::fs::read(p).unwrap(), b"c");
    }

    #[test]
    fn missing_repo_offline_is_named() {
        let t = Tmp::new("missing");
        let e = offline("nobody/nothing", &t.0).unwrap_err();
        assert!(matches!(e, HubError::RepoNotCached { .. }), "{e:?}");
        let msg = e.to_string();
        for n in ["nobody/nothing", "no such file", "HF_HUB_OFFLINE", "'main'"] {
            assert!(msg.contains(n), "{n} missing from: {msg}");
        }
        assert!(msg.contains(t.0.to_str().unwrap()), "{msg}");
        // a snapshot with neither config.json nor a GGUF is also "not cached"
        put(&t.0, "o/empty", "main", HASH, &[("README.md", b"hi")], true);
        let e = offline("o/empty", &t.0).unwrap_err();
        assert!(matches!(e, HubError::NotCached { .. }), "{e:?}");
    }

    #[test]
    fn revisions_follow_their_refs() {
        let t = Tmp::new("rev");
        put(&t.0, "o/n", "main", HASH, &[("a.gguf", b"main")], true);
        put(&t.0, "o/n", "v2", HASH2, &[("b.gguf", b"v2")], true);
        let p = |a: &str| std::fs::read(offline(a, &t.0).unwrap()).unwrap();
        assert_eq!(p("o/n"), b"main");
        assert_eq!(p("o/n@main"), b"main");
        assert_eq!(p("o/n@v2"), b"v2");
        // a commit hash names its snapshot directly
        assert_eq!(p(&format!("o/n@{HASH2}")), b"v2");
        // a revision with a '/' (refs/pr/1)
        put(&t.0, "o/n", "refs/pr/1", HASH2, &[], true);
        assert_eq!(p("o/n@refs/pr/1"), b"v2");
        let e = offline("o/n@nope", &t.0).unwrap_err();
        assert!(e.to_string().contains("'nope'"), "{e}");
    }

    #[test]
    fn network_failure_is_a_clear_error() {
        let t = Tmp::new("net");
        // nothing listens on port 1: the connection is refused at once
        let hub = Hub {
            endpoint: "http://127.0.0.1:1".into(),
            token: None,
        };
        let e = resolve_at(Path::new("owner/name"), &t.0, Some(&hub)).unwrap_err();
        assert!(matches!(e, HubError::Download { .. }), "{e:?}");
        let msg = e.to_string();
        for n in [
            "owner/name",
            "not in the local Hugging Face cache",
            "HF_HUB_OFFLINE",
        ] {
            assert!(msg.contains(n), "{n} missing from: {msg}");
        }
        // a partly cached folder names the missing file
        let mut files = folder_files();
        files.retain(|f| f.0 != "model-00001-of-00002.safetensors");
        put(&t.0, "owner/name", "main", HASH, &files, true);
        let msg = resolve_at(Path::new("owner/name"), &t.0, Some(&hub))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("'model-00001-of-00002.safetensors'"), "{msg}");
        // everything cached: the network is not touched even when online
        put(
            &t.0,
            "owner/name",
            "main",
            HASH,
            &folder_files()[5..6],
            true,
        );
        let p = resolve_at(Path::new("owner/name"), &t.0, Some(&hub)).unwrap();
        assert!(p.ends_with(HASH), "{}", p.display());
    }

    /// A tiny hub on localhost: the repo listing and `resolve` (with the headers hf-hub reads).
    fn fake_hub(
        files: Vec<(String, Vec<u8>)>,
        sha: &'static str,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            loop {
                let Ok(Some(req)) = server.recv_timeout(std::time::Duration::from_secs(5)) else {
                    return seen;
                };
                let url = req.url().to_string();
                seen.push(url.clone());
                if url == "/quit" {
                    let _ = req.respond(tiny_http::Response::empty(200));
                    return seen;
                }
                let header = |k: &str, v: &str| tiny_http::Header::from_bytes(k, v).unwrap();
                if url.starts_with("/api/models/o/n/revision/") {
                    let sib: Vec<String> = files
                        .iter()
                        .map(|f| format!("{{\"rfilename\":\"{}\"}}", f.0))
                        .collect();
                    let body = format!("{{\"sha\":\"{sha}\",\"siblings\":[{}]}}", sib.join(","));
                    let _ = req.respond(tiny_http::Response::from_string(body));
                    continue;
                }
                let prefix = format!("/o/n/resolve/{sha}/");
                let found = url
                    .strip_prefix(&prefix)
                    .and_then(|n| files.iter().find(|f| f.0 == n));
                let Some((name, bytes)) = found else {
                    let _ = req.respond(tiny_http::Response::empty(404));
                    continue;
                };
                let range = req
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Range"))
                    .map(|h| h.value.to_string())
                    .unwrap_or_default();
                let start: usize = range
                    .trim_start_matches("bytes=")
                    .split('-')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let end = if range.ends_with("-0") {
                    1
                } else {
                    bytes.len()
                };
                let r = tiny_http::Response::from_data(bytes[start..end].to_vec())
                    .with_status_code(206)
                    .with_header(header("ETag", &format!("\"etag-{name}\"")))
                    .with_header(header("X-Repo-Commit", sha))
                    .with_header(header(
                        "Content-Range",
                        &format!("bytes {start}-{}/{}", end - 1, bytes.len()),
                    ));
                let _ = req.respond(r);
            }
        });
        (format!("http://127.0.0.1:{port}"), h)
    }

    #[test]
    fn missing_files_are_downloaded_into_the_cache_then_found_offline() {
        let t = Tmp::new("download");
        let files: Vec<(String, Vec<u8>)> = folder_files()
            .into_iter()
            .map(|(n, b)| (n.to_string(), b.to_vec()))
            .collect();
        // a shard already cached at the same commit is not downloaded again
        put(&t.0, "o/n", "old", HASH, &folder_files()[5..6], true);
        let (endpoint, server) = fake_hub(files, HASH);
        let hub = Hub {
            endpoint: endpoint.clone(),
            token: None,
        };
        let p = resolve_at(Path::new("o/n"), &t.0, Some(&hub)).unwrap();
        let _ = quit(&endpoint);
        let seen = server.join().unwrap();
        assert_eq!(p, t.0.join("models--o--n/snapshots").join(HASH));
        assert_eq!(
            std::fs::read(p.join("model-00002-of-00002.safetensors")).unwrap(),
            b"y"
        );
        assert!(!seen.iter().any(|u| u.contains("model-00001")), "{seen:?}");
        assert!(!seen.iter().any(|u| u.contains("README")), "{seen:?}");
        assert!(
            seen.iter().any(|u| u.contains("tokenizer_config.json")),
            "{seen:?}"
        );
        // refs/main now names the commit: offline finds it
        assert_eq!(offline("o/n", &t.0).unwrap(), p);
    }

    fn quit(endpoint: &str) -> std::io::Result<()> {
        use std::io::Write;
        let addr = endpoint.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr)?;
        s.write_all(b"GET /quit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut buf)?;
        Ok(())
    }
}
