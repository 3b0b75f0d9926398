//! Importance-matrix files made by llama.cpp's llama-imatrix, in both forms, read and written by
//! `autoround_formats::imatrix`, checked against llama.cpp itself and gguf-py.
//!
//! llama-imatrix runs on the F16 test model (`$AUTOROUND_MODELS/SmolLM2-135M-Instruct.F16.gguf`,
//! made by tools/make-models.sh) over the first 20000 bytes of ../shared/data/calib.txt
//! (`-c 128 --chunks 4 -t 1`: with other jobs on the two cores, `-t 2` ran about 3× slower, as
//! ggml's threads spin-wait; the file does not depend on the thread count), once writing GGUF and
//! once `--output-format dat`. Then:
//!
//! - both files read; the same entries, data set and chunk count; the same importance vectors
//!   (to float rounding: the legacy form stores `(sum/count)·ncall`);
//! - the GGUF form's sums and counts equal gguf-py's reading, bit for bit;
//! - what we write is byte-identical to llama.cpp's files: GGUF from GGUF, legacy from legacy,
//!   legacy converted from the GGUF form (llama-imatrix's `save_imatrix_legacy`), and GGUF
//!   converted from the legacy form (`llama-imatrix --in-file x.dat -c 128`);
//! - llama-imatrix reads our files back (`--in-file ... --show-statistics`, and combining);
//! - llama-quantize (`--imatrix`, q4_k_m) makes byte-identical models from ours and from its own;
//! - the matrix fits the model ([`Imatrix::check_model`]);
//! - thousands of truncated and mutated copies of both files parse to `Ok` or `Err`, never a
//!   panic.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use autoround_formats::gguf::GgufFile;
use autoround_formats::imatrix::{Imatrix, ImatrixError, ImatrixFormat};

/// Run a llama.cpp tool in `dir`; its stdout and stderr together, or a panic with them.
fn run(bin: &Path, dir: &Path, tool: &str, args: &[&str]) -> String {
    let out = Command::new(bin.join(tool))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

/// llama.cpp's bin folder, the F16 model, and a folder holding `calib.txt` (the calibration
/// slice), `llama.gguf` and `llama.dat` made by llama-imatrix. Made once per test process.
struct Fixture {
    bin: PathBuf,
    model: PathBuf,
    dir: PathBuf,
}

fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let bin = common::llama_cpp_bin()?;
        let model = common::model("F16")?;
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("imatrix_files");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let calib = common::workspace_root().join("../shared/data/calib.txt");
        if !calib.is_file() {
            let msg = format!("{} (calibration text) is missing", calib.display());
            assert!(!common::in_ci(), "{msg}");
            eprintln!("SKIP: {msg}");
            return None;
        }
        let text = std::fs::read(&calib).unwrap_or_else(|e| panic!("{}: {e}", calib.display()));
        std::fs::write(dir.join("calib.txt"), &text[..text.len().min(20000)]).unwrap();
        let t0 = Instant::now();
        for (out, extra) in [
            ("llama.gguf", &[][..]),
            ("llama.dat", &["--output-format", "dat"][..]),
        ] {
            let mut args = vec![
                "-m",
                model.to_str().unwrap(),
                "-f",
                "calib.txt",
                "-c",
                "128",
                "--chunks",
                "4",
                "-t",
                "1",
                "-o",
                out,
            ];
            args.extend(extra);
            run(&bin, &dir, "llama-imatrix", &args);
        }
        eprintln!(
            "llama-imatrix, both forms: {:.1}s",
            t0.elapsed().as_secs_f64()
        );
        Some(Fixture { bin, model, dir })
    })
    .as_ref()
}

fn python_has_gguf() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import gguf"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let msg = "python3 with the `gguf` package is needed (pip install gguf)";
        assert!(!common::in_ci(), "{msg}");
        eprintln!("SKIP: {msg}");
    }
    ok
}

const GGUF_PY_DUMP: &str = r#"
import json, sys, gguf
r = gguf.GGUFReader(sys.argv[1])
f = lambda k: r.fields[k].contents()
print(json.dumps({
    "general.type": f("general.type"),
    "datasets": f("imatrix.datasets"),
    "chunk_count": f("imatrix.chunk_count"),
    "chunk_size": f("imatrix.chunk_size"),
    "tensors": {t.name: {"type": int(t.tensor_type), "hex": t.data.tobytes().hex()} for t in r.tensors},
}))
"#;

fn floats(hex: &str) -> Vec<f32> {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    bytes
        .chunks_exact(4)
        .map(|s| f32::from_le_bytes(s.try_into().unwrap()))
        .collect()
}

#[test]
fn llama_cpp_imatrix_files_read_write_and_quantize() {
    let Some(fx) = fixture() else {
        return;
    };
    let t_all = Instant::now();
    let (bin, dir) = (&fx.bin, &fx.dir);
    let model = fx.model.to_str().unwrap();
    let g = Imatrix::read(dir.join("llama.gguf")).unwrap();
    let d = Imatrix::read(dir.join("llama.dat")).unwrap();

    // -- the two forms agree ---------------------------------------------------------------
    assert_eq!(
        (g.format, d.format),
        (ImatrixFormat::Gguf, ImatrixFormat::Legacy)
    );
    assert_eq!(g.entries.len(), 210, "7 matrices × 30 layers");
    assert!(g.entries.keys().eq(d.entries.keys()));
    assert_eq!(g.datasets, ["calib.txt"]);
    assert_eq!(d.datasets, ["calib.txt"]);
    assert_eq!((g.chunk_count, g.chunk_size), (4, 128));
    assert_eq!((d.chunk_count, d.chunk_size), (4, 0));
    let mut n_values = 0;
    for name in g.entries.keys() {
        let (a, b) = (g.importance(name).unwrap(), d.importance(name).unwrap());
        assert_eq!(a.len(), b.len(), "{name}");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-6 * x.abs().max(y.abs()),
                "{name}[{i}]: GGUF {x} vs legacy {y}"
            );
        }
        assert_eq!(
            g.entries[name].counts,
            [512],
            "{name}: 4 chunks of 128 tokens"
        );
        assert_eq!(d.entries[name].counts, [4], "{name}: ncall");
        n_values += a.len();
    }
    eprintln!(
        "{} entries, {n_values} importance values agree between the forms",
        g.entries.len()
    );

    // -- gguf-py reads the same GGUF -----------------------------------------------------------
    if python_has_gguf() {
        let out = Command::new("python3")
            .args(["-c", GGUF_PY_DUMP])
            .arg(dir.join("llama.gguf"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["general.type"], "imatrix");
        assert_eq!(v["datasets"], serde_json::json!(g.datasets));
        assert_eq!(v["chunk_count"], g.chunk_count);
        assert_eq!(v["chunk_size"], g.chunk_size);
        let tensors = v["tensors"].as_object().unwrap();
        assert_eq!(tensors.len(), 2 * g.entries.len());
        for (name, e) in &g.entries {
            let sums = &tensors[&format!("{name}.in_sum2")];
            let counts = &tensors[&format!("{name}.counts")];
            assert_eq!(
                (sums["type"].as_u64(), counts["type"].as_u64()),
                (Some(0), Some(0))
            );
            let s = floats(sums["hex"].as_str().unwrap());
            assert!(
                s.iter()
                    .map(|x| x.to_bits())
                    .eq(e.sums.iter().map(|x| x.to_bits())),
                "{name}: in_sum2 differs from gguf-py's"
            );
            let c: Vec<i64> = floats(counts["hex"].as_str().unwrap())
                .iter()
                .map(|&x| x as i64)
                .collect();
            assert_eq!(c, e.counts, "{name}: counts differ from gguf-py's");
        }
        eprintln!("gguf-py: {} tensors equal", tensors.len());
    }

    // -- the matrix fits the model -------------------------------------------------------------
    let f = GgufFile::open(&fx.model).unwrap();
    let tensors = || {
        f.tensors()
            .iter()
            .map(|t| (t.name.as_str(), t.dims.as_slice()))
    };
    g.check_model(tensors()).unwrap();
    d.check_model(tensors()).unwrap();
    let mut short = g.clone();
    short.entries.remove("blk.3.ffn_down.weight");
    let e = short.check_model(tensors()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "imatrix has no entry for blk.3.ffn_down.weight"
    );
    let mut swapped = g.clone();
    let up = swapped.entries["blk.3.ffn_up.weight"].clone();
    swapped.entries.insert("blk.3.ffn_down.weight".into(), up);
    let e = swapped.check_model(tensors()).unwrap_err();
    assert!(matches!(e, ImatrixError::Length { .. }));
    assert_eq!(
        e.to_string(),
        "imatrix entry for blk.3.ffn_down.weight has length 576 vs row 1536"
    );

    // -- what we write is what llama-imatrix writes ---------------------------------------------
    let bytes = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let same = |ours: &str, theirs: &str| {
        let (a, b) = (bytes(ours), bytes(theirs));
        assert!(
            a == b,
            "{ours} ({} bytes) differs from {theirs} ({} bytes)",
            a.len(),
            b.len()
        );
    };
    g.write_gguf(dir.join("ours.gguf")).unwrap();
    same("ours.gguf", "llama.gguf");
    d.write_legacy(dir.join("ours.dat")).unwrap();
    same("ours.dat", "llama.dat");
    g.write_legacy(dir.join("ours-from-gguf.dat")).unwrap();
    same("ours-from-gguf.dat", "llama.dat");
    d.to_gguf_form(128)
        .unwrap()
        .write_gguf(dir.join("ours-from-dat.gguf"))
        .unwrap();
    run(
        bin,
        dir,
        "llama-imatrix",
        &[
            "-m",
            model,
            "--in-file",
            "llama.dat",
            "-c",
            "128",
            "-o",
            "llama-from-dat.gguf",
        ],
    );
    same("ours-from-dat.gguf", "llama-from-dat.gguf");
    assert!(
        d.write_gguf(dir.join("refused.gguf")).is_err(),
        "legacy form needs a chunk size"
    );

    // -- llama-imatrix reads ours ---------------------------------------------------------------
    for ours in ["ours.gguf", "ours.dat"] {
        // llama-imatrix fails on a file it cannot read; its log (written by a thread it does not
        // join) may be lost at exit, so only a printed tensor count is checked
        let log = run(
            bin,
            dir,
            "llama-imatrix",
            &["-m", model, "--in-file", ours, "--show-statistics"],
        );
        assert!(
            !log.contains("Computing statistics for") || log.contains("(210 tensors)"),
            "{log}"
        );
    }
    run(
        bin,
        dir,
        "llama-imatrix",
        &[
            "-m",
            model,
            "--in-file",
            "ours.gguf",
            "--in-file",
            "ours.dat",
            "-c",
            "128",
            "-o",
            "combined.gguf",
        ],
    );
    let combined = Imatrix::read(dir.join("combined.gguf")).unwrap();
    assert_eq!(combined.entries.len(), 210);
    assert_eq!(combined.entries["blk.0.attn_q.weight"].counts, [1024]);

    // -- llama-quantize makes the same model from ours and from its own ------------------------
    let t0 = Instant::now();
    for (ours, theirs, file) in [
        ("ours.gguf", "llama.gguf", "imatrix.gguf"),
        ("ours.dat", "llama.dat", "imatrix.dat"),
    ] {
        let mut made = Vec::new();
        for (sub, src) in [("theirs", theirs), ("ours", ours)] {
            // the same relative path in each folder: llama-quantize records it in the model
            let sub = dir.join(sub);
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::copy(dir.join(src), sub.join(file)).unwrap();
            let log = run(
                bin,
                &sub,
                "llama-quantize",
                &[
                    "--allow-requantize",
                    "--imatrix",
                    file,
                    model,
                    "q4_k_m.gguf",
                    "Q4_K_M",
                    "2",
                ],
            );
            assert!(
                log.contains("loaded 210 importance matrix entries"),
                "{log}"
            );
            made.push(std::fs::read(sub.join("q4_k_m.gguf")).unwrap());
        }
        assert!(
            made[0] == made[1],
            "Q4_K_M from {ours} differs from the one from {theirs}"
        );
        let q = GgufFile::open(dir.join("ours/q4_k_m.gguf")).unwrap();
        assert_eq!(
            q.get("quantize.imatrix.entries_count")
                .and_then(|v| v.as_u32()),
            Some(210)
        );
        assert_eq!(
            q.get("quantize.imatrix.chunks_count")
                .and_then(|v| v.as_u32()),
            Some(4)
        );
        assert_eq!(
            q.get("quantize.imatrix.dataset").and_then(|v| v.as_str()),
            Some("calib.txt")
        );
        eprintln!(
            "llama-quantize --imatrix {file}: ours and theirs byte-identical ({} bytes)",
            made[0].len()
        );
        drop(q);
        for sub in ["theirs", "ours"] {
            std::fs::remove_file(dir.join(sub).join("q4_k_m.gguf")).unwrap();
        }
    }
    eprintln!(
        "quantizing: {:.1}s; test total {:.1}s",
        t0.elapsed().as_secs_f64(),
        t_all.elapsed().as_secs_f64()
    );
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
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Offsets of the i32 fields of a legacy file (entry count, name lengths, ncalls, value counts,
/// trailer), found by walking it here, independently of the parser.
fn legacy_fields(b: &[u8]) -> Vec<usize> {
    let i32_at = |p: usize| i32::from_le_bytes(b[p..p + 4].try_into().unwrap());
    let mut fields = vec![0];
    let mut p = 4;
    for _ in 0..i32_at(0) {
        fields.push(p);
        p += 4 + i32_at(p) as usize;
        fields.extend([p, p + 4]);
        p += 8 + 4 * i32_at(p + 4) as usize;
    }
    fields.extend([p, p + 4]);
    fields
}

#[test]
fn mutated_imatrix_files_never_panic() {
    let Some(fx) = fixture() else {
        return;
    };
    let t0 = Instant::now();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut n_parsed = 0usize;
    let mut n_err = 0usize;
    let mut check = |what: &str, b: &[u8]| -> bool {
        let r = catch_unwind(AssertUnwindSafe(|| Imatrix::parse(b)));
        let r = r.unwrap_or_else(|_| panic!("parse panicked on {what}"));
        n_parsed += 1;
        if let Err(e) = &r {
            n_err += 1;
            assert!(!e.to_string().is_empty());
        }
        r.is_ok()
    };
    for name in ["llama.gguf", "llama.dat"] {
        let orig = std::fs::read(fx.dir.join(name)).unwrap();
        let len = orig.len();
        assert!(check("the original", &orig));
        // where a cut still leaves a valid file: the legacy trailer is optional; a GGUF's last
        // tensor is followed by alignment padding
        let first_ok_cut = if name.ends_with(".dat") {
            *legacy_fields(&orig).iter().rev().nth(1).unwrap()
        } else {
            len - 32
        };
        let mut cuts: Vec<usize> = (0..4096.min(len)).collect();
        cuts.extend((len.saturating_sub(64))..len);
        cuts.extend((0..1500).map(|_| rng.below(len)));
        for cut in cuts {
            let ok = check(&format!("{name} cut at {cut}"), &orig[..cut]);
            assert!(
                !ok || cut >= first_ok_cut,
                "{name} cut at {cut} of {len} parsed"
            );
        }
        let mut b = orig.clone();
        for i in 0..3000 {
            b.copy_from_slice(&orig);
            // most mutations in the header / first entries, where the structure is
            let span = if i % 2 == 0 { 40_000.min(len) } else { len };
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(span);
                b[at] = rng.next() as u8;
            }
            check(&format!("{name} mutation #{i}"), &b);
        }
        if name.ends_with(".dat") {
            let hostile = [-1i32, 0, 1, i32::MAX, i32::MIN, 1 << 20, 4096];
            for (k, &at) in legacy_fields(&orig).iter().enumerate() {
                for v in hostile {
                    b.copy_from_slice(&orig);
                    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
                    check(&format!("{name} field #{k} at {at} = {v}"), &b);
                }
            }
        }
    }
    eprintln!(
        "{n_parsed} truncated/mutated files parsed ({n_err} errors, no panic) in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}
