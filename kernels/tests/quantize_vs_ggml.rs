//! The weight quantizers (`autoround_kernels::quantize`) against llama.cpp's own
//! `ggml_quantize_chunk`, byte for byte, with and without an importance matrix.
//!
//! The reference is `tools/ggml-harness/quantize.c` linked against the peer llama.cpp's
//! `libggml-base.a` (built by `tools/build-ggml-harness.sh`, which builds the peer through
//! `../shared/tools/peer-llama-cpp.sh` if needed; `GGML_QUANT_HARNESS` names a prebuilt harness
//! instead). Inputs: seeded random rows from many distributions (gaussian, uniform, heavy-tailed
//! with outliers, all-zero, a single non-zero among signed zeros, ~1e-30, ~1e-37, ~1e4, constant,
//! all-positive, half-zero sub-blocks, values on a coarse grid (rounding ties), f16-rounded
//! gaussians), several row lengths, and several imatrix shapes (log-normal, uniform, with zeros,
//! all ones, all zeros); plus, when the F16 test model is present, real weight rows from it.
//!
//! `QUANT_VS_GGML_ROWS=N` (default 12) sets the rows per distribution and row length, for
//! longer soak runs.
//!
//! Without the harness (no peer build, no C compiler) the test prints SKIP and passes, unless
//! the `CI` environment variable is set (and not "0"/"false"), where it fails.

use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use autoround_kernels::quantize::{can_quantize, quantize_rows};
use autoround_kernels::GgmlType;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The harness binary: `GGML_QUANT_HARNESS`, else whatever `tools/build-ggml-harness.sh` builds.
/// `None` (after a loud SKIP) if it cannot be had outside CI; a panic under CI.
fn harness() -> Option<&'static Path> {
    static H: OnceLock<Option<PathBuf>> = OnceLock::new();
    H.get_or_init(|| {
        let found = find_harness();
        match found {
            Ok(p) => Some(p),
            Err(why) => {
                if in_ci() {
                    panic!("ggml quantize harness unavailable under CI: {why}");
                }
                eprintln!("SKIP quantize_vs_ggml: {why}");
                eprintln!("SKIP quantize_vs_ggml: run tools/build-ggml-harness.sh (needs the peer llama.cpp and a C compiler), or set GGML_QUANT_HARNESS");
                None
            }
        }
    })
    .as_deref()
}

fn find_harness() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("GGML_QUANT_HARNESS") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("GGML_QUANT_HARNESS={} is not a file", p.display()))
        };
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/build-ggml-harness.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("").trim();
    let p = PathBuf::from(last);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{} printed no binary path", script.display()))
    }
}

// ---------------------------------------------------------------------------------------------
// Seeded data.

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn sign(&mut self) -> f32 {
        if self.next() & 1 == 0 {
            1.0
        } else {
            -1.0
        }
    }
    /// Standard normal (Box-Muller).
    fn gauss(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    /// Log-uniform in [lo, hi].
    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + (hi.ln() - lo.ln()) * self.unit()).exp()
    }
}

#[derive(Clone, Copy, Debug)]
enum Dist {
    Gauss,
    Uniform,
    HeavyTailed,
    Zero,
    SingleNonZero,
    Tiny,
    Subnormalish,
    Large,
    Constant,
    Positive,
    HalfZeroBlocks,
    Grid,
    F16Gauss,
}

const DISTS: &[Dist] = &[
    Dist::Gauss,
    Dist::Uniform,
    Dist::HeavyTailed,
    Dist::Zero,
    Dist::SingleNonZero,
    Dist::Tiny,
    Dist::Subnormalish,
    Dist::Large,
    Dist::Constant,
    Dist::Positive,
    Dist::HalfZeroBlocks,
    Dist::Grid,
    Dist::F16Gauss,
];

fn gen_row(rng: &mut Rng, dist: Dist, n: usize) -> Vec<f32> {
    let sigma = rng.log_uniform(1e-3, 2.0);
    let g = |rng: &mut Rng| (rng.gauss() * sigma) as f32;
    match dist {
        Dist::Gauss => (0..n).map(|_| g(rng)).collect(),
        Dist::Uniform => {
            let a = rng.log_uniform(1e-2, 10.0);
            (0..n)
                .map(|_| ((rng.unit() * 2.0 - 1.0) * a) as f32)
                .collect()
        }
        Dist::HeavyTailed => (0..n)
            .map(|_| {
                let v = g(rng);
                match rng.below(50) {
                    0 => v * rng.log_uniform(10.0, 200.0) as f32,
                    // Student-t-like: gauss / sqrt(uniform).
                    1..=5 => v / (rng.unit() as f32 + 1e-3).sqrt(),
                    _ => v,
                }
            })
            .collect(),
        Dist::Zero => vec![0.0; n],
        Dist::SingleNonZero => {
            let mut v: Vec<f32> = (0..n).map(|_| 0.0 * rng.sign()).collect();
            let k = rng.below(n);
            v[k] = rng.sign() * rng.log_uniform(1e-6, 1e3) as f32;
            v
        }
        Dist::Tiny => (0..n).map(|_| g(rng) * 1e-30).collect(),
        Dist::Subnormalish => (0..n).map(|_| g(rng) * 1e-37).collect(),
        Dist::Large => (0..n).map(|_| g(rng) * 1e4).collect(),
        Dist::Constant => {
            let c = rng.sign() * rng.log_uniform(1e-4, 1e2) as f32;
            vec![c; n]
        }
        Dist::Positive => {
            let off = rng.log_uniform(1e-3, 1.0) as f32;
            (0..n).map(|_| g(rng).abs() + off).collect()
        }
        Dist::HalfZeroBlocks => {
            let mut v: Vec<f32> = (0..n).map(|_| g(rng)).collect();
            for b in v.chunks_mut(16) {
                if rng.next() & 1 == 0 {
                    b.fill(0.0);
                }
            }
            v
        }
        Dist::Grid => {
            // Small multiples of a power-of-two step: many exact ties in the roundings.
            let step = [0.25f32, 0.5, 1.0, 1.0 / 64.0][rng.below(4)];
            let k = 1 + rng.below(12) as i32;
            (0..n)
                .map(|_| (rng.below(2 * k as usize + 1) as i32 - k) as f32 * step)
                .collect()
        }
        Dist::F16Gauss => (0..n)
            .map(|_| half::f16::from_f32(g(rng) * 0.05).to_f32())
            .collect(),
    }
}

#[derive(Clone, Copy, Debug)]
enum ImatrixKind {
    LogNormal,
    Uniform,
    SomeZeros,
    Ones,
    AllZero,
}

const IMATRIX_KINDS: &[ImatrixKind] = &[
    ImatrixKind::LogNormal,
    ImatrixKind::Uniform,
    ImatrixKind::SomeZeros,
    ImatrixKind::Ones,
    ImatrixKind::LogNormal,
    ImatrixKind::AllZero,
];

fn gen_imatrix(rng: &mut Rng, kind: ImatrixKind, n: usize) -> Vec<f32> {
    match kind {
        ImatrixKind::LogNormal => (0..n).map(|_| (2.0 * rng.gauss()).exp() as f32).collect(),
        ImatrixKind::Uniform => (0..n).map(|_| (0.1 + rng.unit()) as f32).collect(),
        ImatrixKind::SomeZeros => (0..n)
            .map(|_| {
                if rng.below(5) == 0 {
                    0.0
                } else {
                    (1.5 * rng.gauss()).exp() as f32
                }
            })
            .collect(),
        ImatrixKind::Ones => vec![1.0; n],
        ImatrixKind::AllZero => vec![0.0; n],
    }
}

// ---------------------------------------------------------------------------------------------
// Running the harness and comparing.

/// One `ggml_quantize_chunk` call.
struct Case {
    label: String,
    n_per_row: usize,
    src: Vec<f32>,
    imatrix: Option<Vec<f32>>,
}

/// Quantize every case with the harness (one process, requests streamed by a writer thread).
fn run_harness(bin: &Path, ty: GgmlType, cases: &[Case]) -> Vec<Vec<u8>> {
    let mut child = Command::new(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut w = BufWriter::new(stdin);
            for c in cases {
                let nrows = c.src.len() / c.n_per_row;
                for v in [ty.id(), nrows as u32, c.n_per_row as u32] {
                    w.write_all(&v.to_le_bytes()).unwrap();
                }
                w.write_all(&(c.imatrix.is_some() as u32).to_le_bytes())
                    .unwrap();
                for v in c.src.iter().chain(c.imatrix.iter().flatten()) {
                    w.write_all(&v.to_le_bytes()).unwrap();
                }
            }
            w.flush().unwrap();
        });
        let outs = cases
            .iter()
            .map(|c| {
                let nrows = (c.src.len() / c.n_per_row) as u64;
                let want = ty.row_bytes(c.n_per_row as u64).unwrap() * nrows;
                let mut buf = vec![0u8; want as usize];
                stdout
                    .read_exact(&mut buf)
                    .unwrap_or_else(|e| panic!("{ty} {}: reading harness output: {e}", c.label));
                buf
            })
            .collect();
        let status = child.wait().unwrap();
        assert!(status.success(), "harness exited with {status}");
        outs
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Compare ours with ggml's for every case; print a summary and the first mismatching block
/// (with its input) for each imatrix mode; panic if anything differs.
fn compare(what: &str, ty: GgmlType, cases: &[Case], theirs: &[Vec<u8>]) {
    let bs = ty.block_size();
    let tsz = ty.type_size();
    let mut failures = Vec::new();
    // [without imatrix, with imatrix]: (rows, blocks, mismatched blocks)
    let mut stats = [(0usize, 0usize, 0usize); 2];
    for (c, want) in cases.iter().zip(theirs) {
        let mut ours = vec![0u8; want.len()];
        quantize_rows(ty, &c.src, c.n_per_row, c.imatrix.as_deref(), &mut ours)
            .unwrap_or_else(|e| panic!("{ty} {}: {e}", c.label));
        let mode = c.imatrix.is_some() as usize;
        let st = &mut stats[mode];
        st.0 += c.src.len() / c.n_per_row;
        st.1 += want.len() / tsz;
        for (bi, (a, b)) in ours.chunks(tsz).zip(want.chunks(tsz)).enumerate() {
            if a != b {
                st.2 += 1;
                if st.2 == 1 {
                    let row = bi * bs / c.n_per_row;
                    let input: Vec<String> = c.src[bi * bs..(bi + 1) * bs]
                        .iter()
                        .map(|v| format!("{v:e}"))
                        .collect();
                    failures.push(format!(
                        "{ty} {} (imatrix: {}): first mismatch in block {bi} (row {row}, block {} of the row)\n  ours: {}\n  ggml: {}\n  input: [{}]",
                        c.label,
                        c.imatrix.is_some(),
                        bi % (c.n_per_row / bs),
                        hex(a),
                        hex(b),
                        input.join(", ")
                    ));
                }
            }
        }
    }
    for (mode, (rows, blocks, bad)) in stats.iter().enumerate() {
        if *rows > 0 {
            eprintln!(
                "{what}: {ty:>5} {:<10} rows {rows:>5}  blocks {blocks:>6}  identical {:>6}  different {bad}",
                if mode == 1 { "imatrix" } else { "no imatrix" },
                blocks - bad
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Seeded random cases for `ty`: every distribution at every row length, without and with an
/// imatrix.
fn random_cases(ty: GgmlType, rows_per_case: usize) -> Vec<Case> {
    let lens: &[usize] = if ty.block_size() == 256 {
        &[256, 512, 2304]
    } else {
        &[32, 64, 576]
    };
    let mut rng = Rng(0x5eed_0000 ^ ty.id() as u64);
    let mut cases = Vec::new();
    let mut kind_i = 0;
    for with_imatrix in [false, true] {
        for &n in lens {
            for &dist in DISTS {
                let mut src = Vec::with_capacity(n * rows_per_case);
                for _ in 0..rows_per_case {
                    src.extend(gen_row(&mut rng, dist, n));
                }
                let (imatrix, ikind) = if with_imatrix {
                    let kind = IMATRIX_KINDS[kind_i % IMATRIX_KINDS.len()];
                    kind_i += 1;
                    (Some(gen_imatrix(&mut rng, kind, n)), format!(" {kind:?}"))
                } else {
                    (None, String::new())
                };
                cases.push(Case {
                    label: format!("{dist:?} n_per_row={n}{ikind}"),
                    n_per_row: n,
                    src,
                    imatrix,
                });
            }
        }
    }
    cases
}

fn check_type(ty: GgmlType) {
    assert!(can_quantize(ty));
    let Some(bin) = harness() else { return };
    // QUANT_VS_GGML_ROWS scales the run up for a soak test (rows per distribution and length).
    let rows = std::env::var("QUANT_VS_GGML_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let cases = random_cases(ty, rows);
    let theirs = run_harness(bin, ty, &cases);
    compare("random", ty, &cases, &theirs);
}

#[test]
fn q4_0_matches_ggml() {
    check_type(GgmlType::Q4_0);
}
#[test]
fn q4_1_matches_ggml() {
    check_type(GgmlType::Q4_1);
}
#[test]
fn q5_0_matches_ggml() {
    check_type(GgmlType::Q5_0);
}
#[test]
fn q5_1_matches_ggml() {
    check_type(GgmlType::Q5_1);
}
#[test]
fn q8_0_matches_ggml() {
    check_type(GgmlType::Q8_0);
}
#[test]
fn q2_k_matches_ggml() {
    check_type(GgmlType::Q2_K);
}
#[test]
fn q3_k_matches_ggml() {
    check_type(GgmlType::Q3_K);
}
#[test]
fn q4_k_matches_ggml() {
    check_type(GgmlType::Q4_K);
}
#[test]
fn q5_k_matches_ggml() {
    check_type(GgmlType::Q5_K);
}
#[test]
fn q6_k_matches_ggml() {
    check_type(GgmlType::Q6_K);
}

// ---------------------------------------------------------------------------------------------
// Real weights: rows of F16 tensors of the test model (a minimal GGUF reader, enough for
// tensor infos; the kernels crate does not depend on the formats crate).

fn models_dir() -> PathBuf {
    if let Ok(d) = std::env::var("AUTOROUND_MODELS") {
        return PathBuf::from(d);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".cache/autoround-cpu/models")
}

struct Reader<R: Read>(R);

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        self.0.read_exact(&mut b).expect("truncated GGUF");
        b
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        assert!(n < 1 << 20, "GGUF string too long");
        let mut b = vec![0u8; n];
        self.0.read_exact(&mut b).expect("truncated GGUF");
        String::from_utf8_lossy(&b).into_owned()
    }
    /// Skip a metadata value of type `t`; returns it as u64 if it is an integer.
    fn skip_value(&mut self, t: u32) -> Option<u64> {
        match t {
            0 | 1 | 7 => Some(self.bytes::<1>()[0] as u64),
            2 | 3 => Some(u16::from_le_bytes(self.bytes()) as u64),
            4 | 5 => Some(self.u32() as u64),
            6 => {
                self.u32();
                None
            }
            8 => {
                self.string();
                None
            }
            9 => {
                let et = self.u32();
                let n = self.u64();
                for _ in 0..n {
                    self.skip_value(et);
                }
                None
            }
            10 | 11 => Some(self.u64()),
            12 => {
                self.u64();
                None
            }
            _ => panic!("unknown GGUF value type {t}"),
        }
    }
}

/// `(name, dims, type id, absolute data offset)` of every tensor.
fn gguf_tensors(path: &Path) -> Vec<(String, Vec<u64>, u32, u64)> {
    let f = std::fs::File::open(path).unwrap();
    let mut r = Reader(std::io::BufReader::new(f));
    assert_eq!(&r.bytes::<4>(), b"GGUF");
    let version = r.u32();
    assert!(version >= 2, "GGUF v{version}");
    let n_tensors = r.u64();
    let n_kv = r.u64();
    let mut alignment = 32u64;
    for _ in 0..n_kv {
        let key = r.string();
        let t = r.u32();
        let v = r.skip_value(t);
        if key == "general.alignment" {
            alignment = v.expect("integer alignment");
        }
    }
    let mut infos = Vec::new();
    for _ in 0..n_tensors {
        let name = r.string();
        let nd = r.u32();
        let dims: Vec<u64> = (0..nd).map(|_| r.u64()).collect();
        let t = r.u32();
        let off = r.u64();
        infos.push((name, dims, t, off));
    }
    let pos = r.0.stream_position().unwrap();
    let data_start = pos.div_ceil(alignment) * alignment;
    for i in &mut infos {
        i.3 += data_start;
    }
    infos
}

/// The first `nrows` rows of an F16 tensor, as f32.
fn read_f16_rows(path: &Path, offset: u64, n_per_row: usize, nrows: usize) -> Vec<f32> {
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut b = vec![0u8; n_per_row * nrows * 2];
    f.read_exact(&mut b).unwrap();
    b.chunks_exact(2)
        .map(|h| half::f16::from_bits(u16::from_le_bytes([h[0], h[1]])).to_f32())
        .collect()
}

#[test]
fn real_f16_weights_match_ggml() {
    let path = models_dir().join("SmolLM2-135M-Instruct.F16.gguf");
    if !path.is_file() {
        let msg = format!(
            "{} is missing: run tools/fetch-models.sh and tools/make-models.sh",
            path.display()
        );
        if in_ci() {
            panic!("{msg}");
        }
        eprintln!("SKIP real_f16_weights_match_ggml: {msg}");
        return;
    }
    let Some(bin) = harness() else { return };
    let tensors = gguf_tensors(&path);
    let wanted = [
        "blk.0.attn_q.weight",
        "blk.0.attn_v.weight",
        "blk.3.ffn_gate.weight",
        "blk.5.ffn_down.weight",
        "blk.29.ffn_down.weight",
        "token_embd.weight",
    ];
    let mut rng = Rng(0xf16);
    let mut sources = Vec::new();
    for name in wanted {
        let (_, dims, t, off) = tensors
            .iter()
            .find(|t| t.0 == name)
            .unwrap_or_else(|| panic!("{name} not in {}", path.display()));
        assert_eq!(*t, GgmlType::F16.id(), "{name} is not F16");
        let n_per_row = dims[0] as usize;
        let nrows = 24.min(dims[1] as usize);
        let src = read_f16_rows(&path, *off, n_per_row, nrows);
        let imatrix = gen_imatrix(&mut rng, ImatrixKind::LogNormal, n_per_row);
        sources.push((name, n_per_row, src, imatrix));
    }
    use GgmlType as T;
    for ty in [
        T::Q4_0,
        T::Q4_1,
        T::Q5_0,
        T::Q5_1,
        T::Q8_0,
        T::Q2_K,
        T::Q3_K,
        T::Q4_K,
        T::Q5_K,
        T::Q6_K,
    ] {
        let mut cases = Vec::new();
        for (name, n_per_row, src, imatrix) in &sources {
            if n_per_row % ty.block_size() != 0 {
                continue;
            }
            for im in [None, Some(imatrix.clone())] {
                cases.push(Case {
                    label: format!("{name} n_per_row={n_per_row}"),
                    n_per_row: *n_per_row,
                    src: src.clone(),
                    imatrix: im,
                });
            }
        }
        let theirs = run_harness(bin, ty, &cases);
        compare("real F16", ty, &cases, &theirs);
    }
}
