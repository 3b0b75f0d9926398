//! Calibration data: local text files → token sequences, following the reference AutoRound's
//! rules for a text dataset (`auto_round/calib_dataset.py`; see `shared/research/autoround.md`
//! §1.2).
//!
//! **Reading** ([`read_texts`]). Each file is one of:
//! - *JSON Lines*: chosen when the extension is `.jsonl` (any case) or the first non-empty line
//!   starts with `{`. Every non-blank line must be a JSON object with a string `text` field;
//!   each such line is one text. Blank lines are skipped.
//! - *JSON array* (not named `.jsonl`, content starting with `[`): objects with a string `text`.
//! - *Parquet* (`.parquet`, as the Hugging Face hub stores datasets): the `text` column, null
//!   rows skipped.
//! - *Plain text*: one text per paragraph. A paragraph is a maximal run of lines that are not
//!   blank, where a blank line is empty or holds only whitespace (`\n` and `\r\n` endings both
//!   work). The lines of a paragraph are joined with `\n`, exactly as written (no trimming
//!   inside lines); blank lines themselves are not part of any text.
//!
//! `--dataset` entries that are not files but `owner/name[:split]` are looked up in the local
//! Hugging Face hub cache ([`resolve_datasets`]); nothing is downloaded.
//!
//! A file that yields no text at all is an error, as are unreadable files, bytes that are not
//! UTF-8 and malformed JSON Lines; each error names the file and where.
//!
//! **Samples** ([`build_samples`]). As the reference does:
//! 1. shuffle the texts with the seed (the reference uses the `datasets` shuffle, which we cannot
//!    reproduce; we use a Fisher–Yates shuffle driven by splitmix64, see [`shuffle`]);
//! 2. tokenize each text with the tokenizer's defaults, as the HF tokenizer does with
//!    `add_special_tokens=True`: BOS first when the model asks for it
//!    ([`Tokenizer::add_bos`]), and special tokens written in the text are parsed;
//! 3. truncate to `seqlen` tokens;
//! 4. keep a sample only if it has exactly `seqlen` tokens after truncation (shorter ones are
//!    dropped, never padded) and its last token occurs at most `seqlen / 2` times (integer
//!    division) in the sample;
//! 5. take the first `nsamples` survivors.
//!
//! With [`CalibOptions::concat`] the shuffled texts are instead tokenized without truncation,
//! joined (with EOS between texts when the vocabulary has one), cut into consecutive
//! `seqlen`-token chunks (a short tail is dropped), and the same last-token rule is applied to
//! each chunk.
//!
//! Fewer than `nsamples` survivors is [`CalibError::TooLittle`], raised before any tuning work.

use autoround_formats::tokenizer::{Tokenizer, TokenizerError};
use std::path::{Path, PathBuf};

/// How calibration samples are made. Defaults are the reference's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalibOptions {
    /// Number of samples wanted (reference default 128).
    pub nsamples: usize,
    /// Tokens per sample (reference default 2048).
    pub seqlen: usize,
    /// Seed of the text shuffle (reference default 42).
    pub seed: u64,
    /// Join all texts and cut them into `seqlen` chunks instead of one sample per text.
    pub concat: bool,
}

impl Default for CalibOptions {
    fn default() -> Self {
        CalibOptions {
            nsamples: 128,
            seqlen: 2048,
            seed: 42,
            concat: false,
        }
    }
}

/// What can go wrong turning calibration files into samples.
#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    /// No calibration file was given.
    #[error("no calibration files given")]
    NoFiles,
    /// A file could not be read.
    #[error("calibration file {path}: cannot read it: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid UTF-8.
    #[error("calibration file {path}: not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { path: PathBuf, offset: usize },
    /// A JSON Lines line is not JSON, not an object, or has no string `text` field.
    #[error("calibration file {path}, line {line}: {msg}")]
    Jsonl {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    /// A file holds no text.
    #[error("calibration file {path} holds no text")]
    Empty { path: PathBuf },
    /// A Parquet file that cannot be read as a text column.
    #[error("calibration file {path}: {msg}")]
    Parquet { path: PathBuf, msg: String },
    /// A dataset named as `owner/name` that is not in the local Hugging Face hub cache.
    #[error(
        "--dataset {id}: no such file, and not a dataset in the Hugging Face hub cache ({looked}); \
         nothing is downloaded: fetch it first (`huggingface-cli download --repo-type dataset \
         {id}`) or pass .txt/.jsonl/.parquet files"
    )]
    NotInCache { id: String, looked: String },
    /// Options that cannot make samples.
    #[error("calibration options: {0}")]
    BadOptions(String),
    /// The tokenizer failed on a text.
    #[error("tokenizing calibration text: {0}")]
    Tokenize(#[from] TokenizerError),
    /// Not enough text for the samples asked for.
    #[error(
        "too little calibration text: {survived} sample(s) of {seqlen} tokens survived out of \
         {texts} text(s) read{mode}, but {nsamples} are needed; use a smaller --seqlen, give \
         more (or longer) text, or lower --nsamples (at most {survived} would do now)"
    )]
    TooLittle {
        survived: usize,
        texts: usize,
        nsamples: usize,
        seqlen: usize,
        /// Empty, or a note on the mode (concat / per text).
        mode: String,
    },
}

/// Reads every file (see the module docs for the formats) and returns all texts, in file order.
pub fn read_texts(paths: &[PathBuf]) -> Result<Vec<String>, CalibError> {
    if paths.is_empty() {
        return Err(CalibError::NoFiles);
    }
    let mut out = Vec::new();
    for p in paths {
        let texts = read_file(p)?;
        if texts.is_empty() {
            return Err(CalibError::Empty { path: p.clone() });
        }
        out.extend(texts);
    }
    Ok(out)
}

/// The files of `--dataset`'s comma-separated entries: each is a local file, or a Hugging Face
/// dataset `owner/name[:split]` already in the local hub cache (`$HF_HUB_CACHE`, else
/// `$HF_HOME/hub`, else `~/.cache/huggingface/hub`; never downloaded): the `.parquet`, `.jsonl`,
/// `.json` and `.txt` files of its `main` snapshot, only those of the split (default `train`)
/// when file names tell splits apart, in name order.
pub fn resolve_datasets(spec: &str) -> Result<Vec<PathBuf>, CalibError> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let p = PathBuf::from(item);
        let (id, split) = item.split_once(':').unwrap_or((item, ""));
        let hub_like = !p.exists()
            && id.matches('/').count() == 1
            && !id.starts_with(['.', '/'])
            && Path::new(id).extension().is_none();
        if !hub_like {
            out.push(p);
            continue;
        }
        out.extend(hub_dataset_files(
            &hub_cache_dir().unwrap_or_default(),
            id,
            split,
        )?);
    }
    Ok(out)
}

fn hub_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(d).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

fn hub_dataset_files(cache: &Path, id: &str, split: &str) -> Result<Vec<PathBuf>, CalibError> {
    let repo = cache.join(format!("datasets--{}", id.replace('/', "--")));
    let missing = |what: &str| CalibError::NotInCache {
        id: id.to_string(),
        looked: format!("{} {what}", repo.display()),
    };
    let snaps = repo.join("snapshots");
    let snap = match std::fs::read_to_string(repo.join("refs/main")) {
        Ok(rev) => snaps.join(rev.trim()),
        Err(_) => {
            // no ref: the most recently written snapshot
            let mut all: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&snaps)
                .map_err(|_| missing("does not exist"))?
                .filter_map(|e| e.ok())
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .collect();
            all.sort();
            all.pop().ok_or_else(|| missing("has no snapshot"))?.1
        }
    };
    let mut files = Vec::new();
    let mut stack = vec![snap.clone()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x, "parquet" | "jsonl" | "json" | "txt"))
            {
                files.push(p);
            }
        }
    }
    files.sort();
    let rel = |p: &PathBuf| {
        p.strip_prefix(&snap)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let want = if split.is_empty() { "train" } else { split };
    let of_split: Vec<PathBuf> = files
        .iter()
        .filter(|p| rel(p).contains(want))
        .cloned()
        .collect();
    if !of_split.is_empty() {
        return Ok(of_split);
    }
    if !split.is_empty() {
        return Err(missing(&format!("has no files of split '{split}'")));
    }
    if files.is_empty() {
        return Err(missing("has no .parquet/.jsonl/.json/.txt files"));
    }
    Ok(files)
}

fn read_file(path: &Path) -> Result<Vec<String>, CalibError> {
    if path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
    {
        if let Err(source) = std::fs::metadata(path) {
            return Err(CalibError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
        return autoround_formats::parquet::read_text_column(path, "text").map_err(|msg| {
            CalibError::Parquet {
                path: path.to_path_buf(),
                msg,
            }
        });
    }
    let bytes = std::fs::read(path).map_err(|source| CalibError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| CalibError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let by_ext = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
    let by_content = text
        .lines()
        .map(str::trim_start)
        .find(|l| !l.is_empty())
        .is_some_and(|l| l.starts_with('{'));
    if !by_ext && text.trim_start().starts_with('[') {
        parse_json_array(path, text)
    } else if by_ext || by_content {
        parse_jsonl(path, text)
    } else {
        Ok(split_paragraphs(text))
    }
}

fn parse_jsonl(path: &Path, text: &str) -> Result<Vec<String>, CalibError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |msg: String| CalibError::Jsonl {
            path: path.to_path_buf(),
            line: i + 1,
            msg,
        };
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| err(format!("not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| err("not a JSON object (expected {\"text\": \"...\"})".into()))?;
        match obj.get("text") {
            Some(serde_json::Value::String(s)) => out.push(s.clone()),
            Some(_) => return Err(err("field \"text\" is not a string".into())),
            None => return Err(err("no \"text\" field".into())),
        }
    }
    Ok(out)
}

/// A JSON array of objects with a string `text` field (a `.json` dataset file).
fn parse_json_array(path: &Path, text: &str) -> Result<Vec<String>, CalibError> {
    let err = |line: usize, msg: String| CalibError::Jsonl {
        path: path.to_path_buf(),
        line,
        msg,
    };
    let v: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| err(e.line(), format!("not a JSON array: {e}")))?;
    v.iter()
        .enumerate()
        .map(|(i, o)| match o.get("text") {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            _ => Err(err(1, format!("element {i} has no string \"text\" field"))),
        })
        .collect()
}

/// Paragraphs: maximal runs of non-blank lines, joined with `\n`.
fn split_paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(cur.join("\n"));
                cur.clear();
            }
        } else {
            cur.push(line);
        }
    }
    if !cur.is_empty() {
        out.push(cur.join("\n"));
    }
    out
}

/// splitmix64 (Steele, Lea, Flood 2014): a small, well-mixed 64-bit generator.
/// The splitmix64 generator: the project's one source of seeded randomness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n ≥ 1), by rejection so there is no modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next();
            if x < zone {
                return x % n;
            }
        }
    }
}

/// Shuffles `items` in place: Fisher–Yates from the last index down, each swap partner drawn
/// uniformly from `0..=i` by a splitmix64 generator started at `seed`. Deterministic for a seed,
/// on every platform.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = SplitMix64(seed);
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// The reference's keep rule for one (already truncated) sample.
fn keep(ids: &[u32], seqlen: usize) -> bool {
    if ids.len() < seqlen {
        return false;
    }
    let last = ids[ids.len() - 1];
    ids.iter().filter(|&&t| t == last).count() <= seqlen / 2
}

/// Makes the calibration samples from `texts` (see the module docs for the rules). Every sample
/// has exactly `opts.seqlen` tokens; there are exactly `opts.nsamples` of them.
pub fn build_samples(
    texts: &[String],
    tok: &Tokenizer,
    opts: &CalibOptions,
) -> Result<Vec<Vec<u32>>, CalibError> {
    if opts.seqlen == 0 {
        return Err(CalibError::BadOptions("seqlen must be at least 1".into()));
    }
    if opts.nsamples == 0 {
        return Err(CalibError::BadOptions("nsamples must be at least 1".into()));
    }
    let mut order: Vec<&String> = texts.iter().collect();
    shuffle(&mut order, opts.seed);
    let mut samples: Vec<Vec<u32>> = Vec::with_capacity(opts.nsamples.min(1024));
    let mut survived = 0usize;
    if opts.concat {
        let eos = tok.eos_id();
        let mut buf: Vec<u32> = Vec::new();
        for (k, t) in order.iter().enumerate() {
            if k > 0 {
                if let Some(e) = eos {
                    buf.push(e);
                }
            }
            buf.extend(tok.encode(t, true, true)?);
            // Cut full chunks as they come, so we can stop early.
            let mut start = 0;
            while buf.len() - start >= opts.seqlen {
                let chunk = &buf[start..start + opts.seqlen];
                start += opts.seqlen;
                if keep(chunk, opts.seqlen) {
                    survived += 1;
                    if samples.len() < opts.nsamples {
                        samples.push(chunk.to_vec());
                    }
                }
            }
            buf.drain(..start);
            if samples.len() == opts.nsamples {
                return Ok(samples);
            }
        }
    } else {
        for t in &order {
            let mut ids = tok.encode(t, true, true)?;
            ids.truncate(opts.seqlen);
            if keep(&ids, opts.seqlen) {
                survived += 1;
                samples.push(ids);
                if samples.len() == opts.nsamples {
                    return Ok(samples);
                }
            }
        }
    }
    Err(CalibError::TooLittle {
        survived,
        texts: texts.len(),
        nsamples: opts.nsamples,
        seqlen: opts.seqlen,
        mode: if opts.concat {
            " (joined, concat mode)".into()
        } else {
            " (one sample per text; texts shorter than seqlen are dropped, concat mode joins them)"
                .into()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoround_formats::gguf::GgufFile;
    use std::io::Write;

    fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("autoround-calib-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    fn smollm_tok() -> Option<Tokenizer> {
        let dir = std::env::var("AUTOROUND_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into()))
                    .join(".cache/autoround-cpu/models")
            });
        let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
        if !p.is_file() {
            eprintln!(
                "SKIP: {} is missing (run tools/fetch-models.sh)",
                p.display()
            );
            return None;
        }
        let f = GgufFile::open(&p).unwrap();
        Some(Tokenizer::from_gguf(&f).unwrap())
    }

    #[test]
    fn text_paragraphs() {
        let p = tmp(
            "a.txt",
            b"first line\nsecond line\n\n  \n\r\nthird para\r\nmore\n\n\nlast",
        );
        let t = read_texts(&[p]).unwrap();
        assert_eq!(
            t,
            vec!["first line\nsecond line", "third para\nmore", "last"]
        );
    }

    #[test]
    fn jsonl_by_extension_and_by_content() {
        let a = tmp(
            "a.jsonl",
            b"{\"text\": \"one\"}\n\n{\"text\": \"two\", \"x\": 1}\n",
        );
        let b = tmp("b.txt", b"\n  {\"text\": \"three\"}\n");
        let t = read_texts(&[a, b]).unwrap();
        assert_eq!(t, vec!["one", "two", "three"]);
    }

    #[test]
    fn bad_files() {
        let e = read_texts(&[]).unwrap_err();
        assert!(matches!(e, CalibError::NoFiles));

        let missing = std::env::temp_dir().join("autoround-calib-definitely-missing.txt");
        let e = read_texts(std::slice::from_ref(&missing))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read") && e.contains(&missing.display().to_string()),
            "{e}"
        );

        let p = tmp("bad.txt", b"abc\xffdef");
        let e = read_texts(&[p]).unwrap_err();
        assert!(matches!(e, CalibError::NotUtf8 { offset: 3, .. }), "{e}");
        assert!(e.to_string().contains("offset 3"));

        let p = tmp("bad1.jsonl", b"{\"text\": \"ok\"}\n{not json\n");
        let e = read_texts(&[p]).unwrap_err().to_string();
        assert!(
            e.contains("bad1.jsonl") && e.contains("line 2") && e.contains("not JSON"),
            "{e}"
        );

        let p = tmp("bad2.jsonl", b"{\"text\": \"ok\"}\n\n{\"body\": \"x\"}\n");
        let e = read_texts(&[p]).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("no \"text\""), "{e}");

        let p = tmp("bad3.jsonl", b"{\"text\": 5}\n");
        let e = read_texts(&[p]).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("not a string"), "{e}");

        let p = tmp("bad4.jsonl", b"[\"text\"]\n");
        let e = read_texts(&[p]).unwrap_err().to_string();
        assert!(
            e.contains("line 1") && e.contains("not a JSON object"),
            "{e}"
        );

        for (name, body) in [
            ("e.txt", &b""[..]),
            ("w.txt", b" \n\n \t\n"),
            ("e.jsonl", b"\n"),
        ] {
            let p = tmp(name, body);
            let e = read_texts(&[p]).unwrap_err();
            assert!(matches!(e, CalibError::Empty { .. }), "{name}: {e}");
            assert!(e.to_string().contains("holds no text"));
        }
    }

    /// Parquet files as pyarrow writes them (tools/parquet_fixture.py): the text column across
    /// row groups, nulls skipped, snappy and zstd; gzip refused by name.
    #[test]
    fn parquet_text_column() {
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for f in ["calib-snappy.parquet", "calib-zstd.parquet"] {
            let t = read_texts(&[fx.join(f)]).unwrap();
            assert_eq!(t.len(), 3, "{f}");
            assert!(t[0].starts_with("It is a truth") && t[2].starts_with("Sir Walter"));
        }
        let e = read_texts(&[fx.join("calib-gzip.parquet")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("calib-gzip.parquet") && e.contains("GZIP"),
            "{e}"
        );
        let e = read_texts(&[tmp("not.parquet", b"hello")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not.parquet") && e.contains("not a Parquet file"),
            "{e}"
        );
    }

    /// `owner/name[:split]` finds a dataset's files in a hub cache laid out as huggingface_hub
    /// writes it (refs/main → snapshots/REV), the train split by default; a missing one says
    /// where it looked and that nothing is downloaded.
    #[test]
    fn hub_cache_datasets() {
        let cache = std::env::temp_dir().join(format!("arc-hub-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);
        let repo = cache.join("datasets--someone--tiny-text");
        let snap = repo.join("snapshots/abc123");
        std::fs::create_dir_all(snap.join("data")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        std::fs::copy(
            fx.join("calib-snappy.parquet"),
            snap.join("data/train-00000.parquet"),
        )
        .unwrap();
        std::fs::write(snap.join("data/validation.jsonl"), "{\"text\": \"v\"}\n").unwrap();
        std::fs::write(snap.join("README.md"), "# card").unwrap();
        let f = hub_dataset_files(&cache, "someone/tiny-text", "").unwrap();
        assert_eq!(f, vec![snap.join("data/train-00000.parquet")]);
        assert_eq!(read_texts(&f).unwrap().len(), 3);
        let f = hub_dataset_files(&cache, "someone/tiny-text", "validation").unwrap();
        assert_eq!(read_texts(&f).unwrap(), vec!["v".to_string()]);
        let e = hub_dataset_files(&cache, "someone/tiny-text", "test")
            .unwrap_err()
            .to_string();
        assert!(e.contains("split 'test'"), "{e}");
        let e = hub_dataset_files(&cache, "nobody/nothing", "")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nobody/nothing")
                && e.contains("datasets--nobody--nothing")
                && e.contains("nothing is downloaded"),
            "{e}"
        );
        // a local file is taken as such, an owner/name that is not one goes to the cache
        let local = tmp("local.txt", b"some text\n");
        assert_eq!(
            resolve_datasets(local.to_str().unwrap()).unwrap(),
            vec![local]
        );
        let _ = std::fs::remove_dir_all(&cache);
    }

    #[test]
    fn shuffle_is_deterministic_and_a_permutation() {
        let base: Vec<u32> = (0..100).collect();
        let mut a = base.clone();
        let mut b = base.clone();
        let mut c = base.clone();
        shuffle(&mut a, 42);
        shuffle(&mut b, 42);
        shuffle(&mut c, 43);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, base);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, base);
        // Pinned so that the order never silently changes between versions.
        let mut small: Vec<u32> = (0..8).collect();
        shuffle(&mut small, 42);
        assert_eq!(small, [3, 1, 6, 2, 4, 0, 7, 5]);
    }

    #[test]
    fn keep_rule() {
        assert!(!keep(&[1, 2, 3], 4)); // short: dropped
        assert!(keep(&[1, 2, 3, 4], 4));
        // Last token 7 occurs 2 times of seqlen 4: 2 <= 4/2, kept.
        assert!(keep(&[7, 1, 2, 7], 4));
        // 3 times: dropped.
        assert!(!keep(&[7, 7, 2, 7], 4));
        // Other tokens may repeat freely.
        assert!(keep(&[5, 5, 5, 1], 4));
        // Odd seqlen: 5/2 = 2.
        assert!(!keep(&[9, 9, 1, 2, 9], 5));
        assert!(keep(&[9, 3, 1, 2, 9], 5));
    }

    #[test]
    fn samples_filter_and_order() {
        let Some(tok) = smollm_tok() else { return };
        let long = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        let short = "Too short.".to_string();
        let repeated = "a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a".to_string();
        let texts = vec![long.clone(), short, repeated.clone(), long.clone()];
        assert!(tok.encode(&repeated, true, true).unwrap().len() >= 16);
        let opts = CalibOptions {
            nsamples: 2,
            seqlen: 16,
            seed: 42,
            concat: false,
        };
        let s = build_samples(&texts, &tok, &opts).unwrap();
        assert_eq!(s.len(), 2);
        let want: Vec<u32> = tok.encode(&long, true, true).unwrap()[..16].to_vec();
        // Only the two long texts survive (short: too few tokens; repeated: last token repeats).
        assert_eq!(s, vec![want.clone(), want]);
        let e = build_samples(
            &texts,
            &tok,
            &CalibOptions {
                nsamples: 3,
                ..opts.clone()
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                CalibError::TooLittle {
                    survived: 2,
                    texts: 4,
                    ..
                }
            ),
            "{e}"
        );

        // Same seed, same samples; the order follows the shuffle.
        let many: Vec<String> = (0..20)
            .map(|i| format!("Sample number {i} says something about item {i}. ").repeat(4))
            .collect();
        let o = CalibOptions {
            nsamples: 5,
            ..opts.clone()
        };
        let a = build_samples(&many, &tok, &o).unwrap();
        assert_eq!(a, build_samples(&many, &tok, &o).unwrap());
        let mut order: Vec<&String> = many.iter().collect();
        shuffle(&mut order, 42);
        let first: Vec<u32> = tok.encode(order[0], true, true).unwrap()[..16].to_vec();
        assert_eq!(a[0], first);
        let b = build_samples(&many, &tok, &CalibOptions { seed: 7, ..o }).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn concat_mode() {
        let Some(tok) = smollm_tok() else { return };
        let texts: Vec<String> = (0..10).map(|i| format!("Short text {i}.")).collect();
        let opts = CalibOptions {
            nsamples: 2,
            seqlen: 8,
            seed: 1,
            concat: true,
        };
        // Per text, none survives...
        let e = build_samples(
            &texts,
            &tok,
            &CalibOptions {
                concat: false,
                ..opts.clone()
            },
        )
        .unwrap_err();
        assert!(matches!(e, CalibError::TooLittle { survived: 0, .. }));
        // ...joined, they do: the chunks are the joined stream, EOS between texts.
        let s = build_samples(&texts, &tok, &opts).unwrap();
        let mut order: Vec<&String> = texts.iter().collect();
        shuffle(&mut order, 1);
        let eos = tok.eos_id().expect("SmolLM2 has EOS");
        let mut stream = Vec::new();
        for (k, t) in order.iter().enumerate() {
            if k > 0 {
                stream.push(eos);
            }
            stream.extend(tok.encode(t, true, true).unwrap());
        }
        assert_eq!(s, vec![stream[..8].to_vec(), stream[8..16].to_vec()]);
        assert!(s[0].contains(&eos));
        let e = build_samples(
            &texts,
            &tok,
            &CalibOptions {
                nsamples: 1000,
                ..opts
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("concat"), "{e}");
    }

    #[test]
    fn too_little_message_and_bad_options() {
        let Some(tok) = smollm_tok() else { return };
        let texts = vec!["Hello.".to_string(), "World.".to_string()];
        let e = build_samples(&texts, &tok, &CalibOptions::default()).unwrap_err();
        let m = e.to_string();
        for want in [
            "too little calibration text",
            "0 sample(s) of 2048 tokens survived",
            "2 text(s) read",
            "128 are needed",
            "--seqlen",
            "more (or longer) text",
            "--nsamples",
        ] {
            assert!(m.contains(want), "missing {want:?} in: {m}");
        }
        let e = build_samples(
            &texts,
            &tok,
            &CalibOptions {
                seqlen: 0,
                ..Default::default()
            },
        );
        assert!(matches!(e, Err(CalibError::BadOptions(_))));
        let e = build_samples(
            &texts,
            &tok,
            &CalibOptions {
                nsamples: 0,
                ..Default::default()
            },
        );
        assert!(matches!(e, Err(CalibError::BadOptions(_))));
    }

    #[test]
    fn real_calib_file() {
        let Some(tok) = smollm_tok() else { return };
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/calib.txt");
        let p = if p.is_file() {
            p
        } else {
            PathBuf::from("/work/shared/data/calib.txt")
        };
        if !p.is_file() {
            eprintln!("SKIP: {} is missing", p.display());
            return;
        }
        let texts = read_texts(&[p]).unwrap();
        assert!(!texts.is_empty());
        // Recorded with the SmolLM2 tokenizer on the calib.txt of this commit (821 paragraphs):
        // (seqlen, concat, survivors).
        let expected = [
            (512usize, false, 7usize),
            (512, true, 133),
            (2048, false, 0),
            (2048, true, 33),
        ];
        for (seqlen, concat, want) in expected {
            {
                let opts = CalibOptions {
                    nsamples: usize::MAX / 2,
                    seqlen,
                    seed: 42,
                    concat,
                };
                match build_samples(&texts, &tok, &opts) {
                    Err(CalibError::TooLittle {
                        survived, texts, ..
                    }) => {
                        eprintln!(
                            "calib.txt: {texts} texts, seqlen {seqlen}, concat {concat}: \
                             {survived} samples"
                        );
                        assert_eq!(survived, want, "seqlen {seqlen}, concat {concat}");
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        // Asking for what is there works, and every sample is full length.
        let o = CalibOptions {
            nsamples: 8,
            seqlen: 512,
            seed: 42,
            concat: true,
        };
        let s = build_samples(&texts, &tok, &o).unwrap();
        assert!(s.iter().all(|x| x.len() == 512));
    }
}
