//! Robustness: thousands of mutated and truncated GGUF headers go through `GgufHeader::parse`,
//! which must return `Ok` or `Err` and never panic (nor allocate by a hostile count).
//!
//! Inputs: a synthetic GGUF written in-test (always), and the real model
//! `$AUTOROUND_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf` (default models dir
//! `~/.cache/autoround-cpu/models`; fetch it with `tools/fetch-models.sh`): its metadata with the
//! 49152-entry vocabulary arrays cut to a few hundred entries (fast, so most iterations go there),
//! and a smaller number of iterations over the untouched full header.
//!
//! Mutations: truncation anywhere, random byte flips, overwriting the file's real u64 counts and
//! lengths with huge values (u64::MAX, 2^40, ...), overwriting its u32 type ids (value types,
//! ggml types, dimension counts, the version) with other ids, inserted and deleted bytes, and
//! combinations. The loop is seeded, so a failure is reproducible from the printed iteration.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Instant;

use autoround_formats::gguf::{GgufFile, GgufHeader, GgufValue, GgufValueType, GgufWriter};
use autoround_formats::GgmlType;

fn models_dir() -> PathBuf {
    match std::env::var_os("AUTOROUND_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/autoround-cpu/models"),
    }
}

/// xorshift64*: a tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Width {
    U32,
    U64,
}

#[derive(Debug, Clone, Copy)]
struct Field {
    at: usize,
    width: Width,
    /// Inside an array's elements (most of the real header: the vocabulary).
    in_array: bool,
}

/// Offsets of every count, length and type id of a *valid* GGUF, found by walking it here,
/// independently of the parser under test.
struct Walk<'a> {
    b: &'a [u8],
    pos: usize,
    fields: Vec<Field>,
    in_array: bool,
}

impl Walk<'_> {
    fn field(&mut self, width: Width) -> u64 {
        let n = if width == Width::U32 { 4 } else { 8 };
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(&self.b[self.pos..self.pos + n]);
        self.fields.push(Field {
            at: self.pos,
            width,
            in_array: self.in_array,
        });
        self.pos += n;
        u64::from_le_bytes(v)
    }
    fn string(&mut self) {
        let n = self.field(Width::U64);
        self.pos += n as usize;
    }
    fn value(&mut self, ty: u64) {
        match ty {
            0 | 1 | 7 => self.pos += 1,
            2 | 3 => self.pos += 2,
            4..=6 => self.pos += 4,
            10..=12 => self.pos += 8,
            8 => self.string(),
            9 => {
                let elem = self.field(Width::U32);
                let n = self.field(Width::U64);
                let outer = self.in_array;
                self.in_array = true;
                for _ in 0..n {
                    self.value(elem);
                }
                self.in_array = outer;
            }
            _ => panic!("walker: bad type {ty} in a file that should be valid"),
        }
    }
    fn run(b: &[u8]) -> Vec<Field> {
        let mut w = Walk {
            b,
            pos: 4,
            fields: Vec::new(),
            in_array: false,
        };
        w.field(Width::U32); // version
        let n_tensors = w.field(Width::U64);
        let n_kv = w.field(Width::U64);
        for _ in 0..n_kv {
            w.string();
            let ty = w.field(Width::U32);
            w.value(ty);
        }
        for _ in 0..n_tensors {
            w.string();
            let n_dims = w.field(Width::U32);
            for _ in 0..n_dims {
                w.field(Width::U64);
            }
            w.field(Width::U32); // ggml type
            w.field(Width::U64); // offset
        }
        w.fields
    }
}

const HUGE: &[u64] = &[
    u64::MAX,
    u64::MAX - 1,
    u64::MAX - 7,
    1 << 63,
    i64::MAX as u64,
    (1 << 63) - 8,
    1 << 40,
    1 << 32,
    (1 << 32) - 1,
    1 << 31,
    1 << 30,
    (1 << 30) + 1,
    1 << 29,
    1 << 24,
    0,
    1,
    2,
    31,
    32,
    33,
];

const TYPE_IDS: &[u32] = &[
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    30,
    31,
    36,
    39,
    40,
    255,
    0x0300_0000,
    i32::MAX as u32,
    u32::MAX,
];

#[derive(Default)]
struct Stats {
    runs: u64,
    ok: u64,
    panics: Vec<String>,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn parse(&mut self, bytes: &[u8], what: impl FnOnce() -> String) {
        self.runs += 1;
        match catch_unwind(AssertUnwindSafe(|| GgufHeader::parse(bytes))) {
            Ok(Ok(_)) => self.ok += 1,
            Ok(Err(e)) => {
                // The problem's variant name, e.g. "Truncated".
                let kind = match e.problem() {
                    Some(p) => format!("{p:?}")
                        .split([' ', '{', '('])
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                    None => format!("{e:?}"),
                };
                *self.errors.entry(kind).or_default() += 1;
            }
            Err(_) => self.panics.push(what()),
        }
    }

    fn report(&self, label: &str, elapsed: f64) {
        let errors: u64 = self.errors.values().sum();
        eprintln!(
            "[gguf_mutation] {label}: {} inputs in {elapsed:.1} s: {} parsed, {errors} rejected, {} panics; errors by kind: {:?}",
            self.runs,
            self.ok,
            self.panics.len(),
            self.errors
        );
        for p in self.panics.iter().take(10) {
            eprintln!("[gguf_mutation] PANIC on {p}");
        }
    }
}

/// Mutate `buf` in place within `0..header_len` (or shrink/grow it when `resize`), parse, undo.
/// Each iteration parses exactly one variant.
fn campaign(
    label: &str,
    mut buf: Vec<u8>,
    header_len: usize,
    iterations: u64,
    seed: u64,
    resize: bool,
) -> Stats {
    assert!(
        GgufHeader::parse(&buf).is_ok(),
        "{label}: the unmutated input must parse"
    );
    let fields = Walk::run(&buf);
    let structural: Vec<Field> = fields.iter().copied().filter(|f| !f.in_array).collect();
    assert!(
        !structural.is_empty() && fields.iter().all(|f| f.at < header_len),
        "{label}: walker found fields outside the header"
    );
    let mut rng = Rng(seed);
    let mut stats = Stats::default();
    let start = Instant::now();
    for i in 0..iterations {
        // (offset, original bytes) to restore after this iteration.
        let mut saved: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut overwrite = |buf: &mut Vec<u8>, at: usize, new: &[u8]| {
            let end = (at + new.len()).min(buf.len());
            saved.push((at, buf[at..end].to_vec()));
            buf[at..end].copy_from_slice(&new[..end - at]);
        };
        let pick_field = |rng: &mut Rng| {
            if rng.below(10) < 7 {
                rng.pick(&structural)
            } else {
                rng.pick(&fields)
            }
        };
        let kind = rng.below(if resize { 7 } else { 6 });
        let mut len = buf.len();
        let mut desc = format!("{label} seed {seed} iteration {i}: ");
        match kind {
            // Truncation, mostly inside the header, sometimes inside the data.
            0 => {
                len = if rng.below(8) == 0 {
                    header_len + rng.below((buf.len() - header_len) as u64 + 1) as usize
                } else {
                    rng.below(header_len as u64 + 1) as usize
                };
                desc += &format!("truncate to {len}");
            }
            // Byte flips.
            1 => {
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(header_len as u64) as usize;
                    let x = (rng.next() as u8).max(1);
                    let b = buf[at] ^ x;
                    overwrite(&mut buf, at, &[b]);
                    desc += &format!("flip {at} ^= {x:#04x}; ");
                }
            }
            // A count or length (or any u64 field) set huge.
            2 | 3 => {
                let f = pick_field(&mut rng);
                if f.width == Width::U64 || kind == 3 {
                    let v = if rng.below(4) == 0 {
                        rng.next()
                    } else {
                        rng.pick(HUGE)
                    };
                    overwrite(&mut buf, f.at, &v.to_le_bytes());
                    desc += &format!("u64 at {} = {v}", f.at);
                } else {
                    let v = rng.pick(TYPE_IDS);
                    overwrite(&mut buf, f.at, &v.to_le_bytes());
                    desc += &format!("u32 at {} = {v}", f.at);
                }
            }
            // A type id (or any u32 field) replaced.
            4 => {
                let f = pick_field(&mut rng);
                let v = if rng.below(4) == 0 {
                    rng.next() as u32
                } else {
                    rng.pick(TYPE_IDS)
                };
                overwrite(&mut buf, f.at, &v.to_le_bytes());
                desc += &format!("u32 at {} = {v}", f.at);
            }
            // Two field mutations and a truncation.
            5 => {
                for _ in 0..2 {
                    let f = pick_field(&mut rng);
                    let v = rng.pick(HUGE);
                    let n = if f.width == Width::U32 { 4 } else { 8 };
                    overwrite(&mut buf, f.at, &v.to_le_bytes()[..n]);
                    desc += &format!("field at {} = {v}; ", f.at);
                }
                len = rng.below(buf.len() as u64 + 1) as usize;
                desc += &format!("truncate to {len}");
            }
            // Inserted or deleted bytes (small inputs only: this copies the buffer).
            _ => {
                let at = rng.below(header_len as u64) as usize;
                let n = 1 + rng.below(16) as usize;
                let mut shifted = buf.clone();
                if rng.below(2) == 0 {
                    let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                    shifted.splice(at..at, junk);
                    desc += &format!("insert {n} bytes at {at}");
                } else {
                    let end = (at + n).min(shifted.len());
                    shifted.drain(at..end);
                    desc += &format!("delete {n} bytes at {at}");
                }
                stats.parse(&shifted, || desc.clone());
                continue;
            }
        }
        stats.parse(&buf[..len], || desc);
        for (at, orig) in saved.into_iter().rev() {
            buf[at..at + orig.len()].copy_from_slice(&orig);
        }
    }
    stats.report(label, start.elapsed().as_secs_f64());
    stats
}

fn assert_stats(label: &str, s: &Stats, min_runs: u64) {
    assert!(
        s.panics.is_empty(),
        "{label}: {} of {} inputs made GgufHeader::parse panic, first: {}",
        s.panics.len(),
        s.runs,
        s.panics[0]
    );
    assert!(s.runs >= min_runs, "{label}: only {} inputs", s.runs);
    assert!(
        s.ok > 0,
        "{label}: no mutated input parsed: the mutations are too blunt"
    );
    // The mutations must reach many different checks, not just the first one.
    assert!(
        s.errors.len() >= 6,
        "{label}: only {} kinds of errors seen: {:?}",
        s.errors.len(),
        s.errors
    );
    assert!(
        s.errors.contains_key("Truncated"),
        "{label}: {:?}",
        s.errors
    );
}

/// A synthetic GGUF with every value type, nested and empty arrays, and three tensors.
fn synthetic() -> Vec<u8> {
    use GgufValue as V;
    let f32_data: Vec<u8> = (0..64u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let q8_data = vec![3u8; 2 * 34];
    let q4k_data = vec![5u8; 144];
    let mut w = GgufWriter::new(3, 64);
    w.add_kv("general.alignment", V::U32(64));
    w.add_kv("general.architecture", V::String("llama".into()));
    w.add_kv("a.u8", V::U8(1));
    w.add_kv("a.i8", V::I8(-1));
    w.add_kv("a.u16", V::U16(2));
    w.add_kv("a.i16", V::I16(-2));
    w.add_kv("a.u32", V::U32(3));
    w.add_kv("a.i32", V::I32(-3));
    w.add_kv("a.f32", V::F32(0.5));
    w.add_kv("a.bool", V::Bool(true));
    w.add_kv("a.u64", V::U64(4));
    w.add_kv("a.i64", V::I64(-4));
    w.add_kv("a.f64", V::F64(0.25));
    let strings = |n: usize| {
        V::Array(
            GgufValueType::String,
            (0..n).map(|i| V::String(format!("tok{i}"))).collect(),
        )
    };
    w.add_kv("tokenizer.ggml.tokens", strings(40));
    w.add_kv(
        "tokenizer.ggml.token_type",
        V::Array(GgufValueType::I32, (0..40).map(V::I32).collect()),
    );
    w.add_kv(
        "a.f32s",
        V::Array(
            GgufValueType::F32,
            (0..8).map(|i| V::F32(i as f32)).collect(),
        ),
    );
    w.add_kv("a.empty", V::Array(GgufValueType::U64, vec![]));
    w.add_kv(
        "a.nested",
        V::Array(
            GgufValueType::Array,
            vec![strings(3), strings(0), strings(2)],
        ),
    );
    w.add_kv("a.str", V::String("a longer string value".into()));
    w.add_tensor("t.f32", vec![16, 4], GgmlType::F32, Cow::Owned(f32_data))
        .expect("f32");
    w.add_tensor("t.q8_0", vec![32, 2], GgmlType::Q8_0, Cow::Owned(q8_data))
        .expect("q8_0");
    w.add_tensor("t.q4_k", vec![256], GgmlType::Q4_K, Cow::Owned(q4k_data))
        .expect("q4_K");
    let mut out = Vec::new();
    w.write_to(&mut out).expect("write synthetic");
    out
}

#[test]
fn mutated_synthetic_headers_never_panic() {
    let bytes = synthetic();
    let header_len = GgufHeader::parse(&bytes)
        .expect("synthetic parses")
        .data_offset as usize;
    let s = campaign("synthetic", bytes, header_len, 12_000, 0x5EED_0001, true);
    assert_stats("synthetic", &s, 12_000);
}

#[test]
fn mutated_real_headers_never_panic() {
    let path = models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        let msg = format!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !! gguf_mutation: REAL-FILE PART SKIPPED: {} is missing.\n\
             !! Only the synthetic GGUF was mutated. Fetch the model with tools/fetch-models.sh\n\
             !! (or set AUTOROUND_MODELS to the folder holding it).\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
            path.display()
        );
        if std::env::var_os("CI").is_some() {
            panic!("{msg}\n(CI is set: the model is required)");
        }
        eprintln!("{msg}");
        return;
    }
    let file = GgufFile::open(&path).expect("open the real model");

    // 1. The real metadata and all 272 tensor infos, with the vocabulary arrays cut to a few
    //    hundred entries so that one parse is fast.
    let mut w = GgufWriter::from_file(&file);
    let mut cut = 0;
    for (key, value) in &file.metadata {
        if let GgufValue::Array(ty, items) = value {
            if items.len() > 300 {
                w.add_kv(key.clone(), GgufValue::Array(*ty, items[..300].to_vec()));
                cut += 1;
            }
        }
    }
    assert!(
        cut >= 2,
        "expected the vocabulary arrays to be cut, cut {cut}"
    );
    let mut reduced = Vec::with_capacity(file.file_bytes().len());
    w.write_to(&mut reduced).expect("write reduced");
    let reduced_header = GgufHeader::parse(&reduced).expect("reduced parses");
    assert_eq!(reduced_header.tensors.len(), file.tensors().len());
    let header_len = reduced_header.data_offset as usize;
    let s = campaign(
        "real (vocab cut)",
        reduced,
        header_len,
        12_000,
        0x5EED_0002,
        false,
    );
    assert_stats("real (vocab cut)", &s, 12_000);

    // 2. The untouched full header (1.8 MB, 100k strings): fewer iterations, each parse is
    //    slower.
    let full = file.file_bytes().to_vec();
    let header_len = file.data_offset as usize;
    drop(file);
    let s = campaign("real (full)", full, header_len, 800, 0x5EED_0003, false);
    assert!(s.panics.is_empty(), "real (full): {:?}", &s.panics[..1]);
    assert_eq!(s.runs, 800);
}
