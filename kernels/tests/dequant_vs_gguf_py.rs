//! The scalar reference dequantization against the Python `gguf` package (gguf-py's numpy
//! dequantization), bit for bit.
//!
//! For every type both sides support, seeded random blocks (plus edge cases: zero, ±65504,
//! subnormal and negative f16 scales, all-0x00 / all-0xFF / patterned quant bytes) are written
//! to a temp file and dequantized by `tools/gguf_py_dequant.py`; every output value must have
//! the same f32 bit pattern as ours (`-0.0` and `0.0` count as different).
//!
//! The only leniency: for the raw F16 type, f16 NaN inputs must give NaN on both sides but the
//! NaN payload may differ (converters quiet signalling NaNs differently; no finite value is
//! affected). Quantized types never see NaN/Inf scales here (ggml's own quantizers never write
//! them), so they compare strictly.
//!
//! If `python3 -c 'import gguf, numpy'` fails the test panics when the `CI` environment
//! variable is set and otherwise prints a loud SKIP and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

use autoround_kernels::{reference, GgmlType};

/// splitmix64: small, seeded, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn fill(&mut self, b: &mut [u8]) {
        for x in b {
            *x = self.next() as u8;
        }
    }
}

/// Interesting finite f16 scales: zeros of both signs, the extremes, subnormals, ±1, ...
const F16_EDGES: &[u16] = &[
    0x0000, // 0
    0x8000, // -0
    0x7BFF, // 65504
    0xFBFF, // -65504
    0x0001, // smallest subnormal
    0x8001, // -smallest subnormal
    0x03FF, // largest subnormal
    0x0400, // smallest normal
    0x3C00, // 1
    0xBC00, // -1
    0x3555, // ~1/3
    0x1800, // 2^-9
    0xA4CD, // ~ -0.0188
    0x7800, // 32768
];

/// e8m0 exponents worth testing for MXFP4: the subnormal special cases, 1.0, the top.
const E8M0_EDGES: &[u8] = &[0, 1, 2, 3, 100, 127, 128, 129, 200, 253, 254, 255];

fn random_finite_f16(rng: &mut Rng) -> u16 {
    loop {
        let h = rng.next() as u16;
        if h & 0x7C00 != 0x7C00 {
            return h;
        }
    }
}

/// Byte offsets of the f16 scale fields in one block.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType as T;
    match ty {
        T::Q4_0 | T::Q5_0 | T::Q8_0 | T::IQ4_NL | T::IQ4_XS => &[0],
        T::Q3_K => &[108],
        T::Q4_1 | T::Q5_1 | T::Q4_K | T::Q5_K => &[0, 2],
        T::Q2_K => &[80, 82],
        T::Q6_K => &[208],
        T::MXFP4 => &[],
        other => panic!("no block description for {other}"),
    }
}

/// `n_blocks` blocks of `ty`: block `i` has quant bytes that are all 0x00 (i % 8 == 0), all
/// 0xFF (i % 8 == 1), 0x55/0xAA patterned (i % 8 == 2) or random, and scales that walk through
/// the edge values in the first blocks and are random afterwards (edge or random finite).
fn gen_blocks(ty: GgmlType, n_blocks: usize, rng: &mut Rng) -> Vec<u8> {
    let size = ty.type_size();
    let mut out = vec![0u8; n_blocks * size];
    for (i, b) in out.chunks_exact_mut(size).enumerate() {
        match i % 8 {
            0 => b.fill(0x00),
            1 => b.fill(0xFF),
            2 => b
                .iter_mut()
                .enumerate()
                .for_each(|(k, x)| *x = if k % 2 == 0 { 0x55 } else { 0xAA }),
            _ => rng.fill(b),
        }
        for (k, &off) in f16_fields(ty).iter().enumerate() {
            let h = if i < 4 * F16_EDGES.len() {
                // Cycle every pairing of edge scales over the first blocks (offset per field
                // so that d and m/dmin differ).
                F16_EDGES[(i / 2 + 5 * k) % F16_EDGES.len()]
            } else if rng.below(3) == 0 {
                F16_EDGES[rng.below(F16_EDGES.len() as u64) as usize]
            } else {
                random_finite_f16(rng)
            };
            b[off..off + 2].copy_from_slice(&h.to_le_bytes());
        }
        if ty == GgmlType::MXFP4 && i % 2 == 0 {
            b[0] = E8M0_EDGES[(i / 2) % E8M0_EDGES.len()];
        }
    }
    out
}

/// Raw element bytes for the block-size-1 float types: random bit patterns (NaN/Inf included)
/// followed by every f16 edge value (as F16, and as the upper half of BF16/F32 values).
fn gen_floats(ty: GgmlType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let size = ty.type_size();
    let mut out = vec![0u8; n * size];
    rng.fill(&mut out);
    let edges: Vec<u16> = F16_EDGES
        .iter()
        .copied()
        .chain([0x7C00, 0xFC00, 0x7E00, 0x7C01])
        .collect();
    for (e, slot) in edges.iter().zip(out.chunks_exact_mut(size)) {
        match size {
            2 => slot.copy_from_slice(&e.to_le_bytes()),
            4 => slot.copy_from_slice(&((*e as u32) << 16).to_le_bytes()),
            _ => unreachable!(),
        }
    }
    out
}

/// Types compared with gguf-py. Q8_1 and Q8_K (activation-only types) are dequantizable here
/// but gguf-py has no dequantization for them; they are checked in the unit tests instead.
const TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::MXFP4,
];
const NOT_IN_GGUF_PY: &[GgmlType] = &[GgmlType::Q8_1, GgmlType::Q8_K];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `Some(())` if python3 with gguf and numpy is usable; otherwise panics under CI, else `None`.
fn python_available() -> Option<()> {
    let ok = Command::new("python3")
        .args(["-c", "import gguf, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some(());
    }
    if std::env::var_os("CI").is_some() {
        panic!("python3 with the `gguf` and `numpy` packages is required under CI (pip install gguf numpy)");
    }
    eprintln!();
    eprintln!("################################################################################");
    eprintln!("## SKIP dequant_vs_gguf_py: `python3 -c 'import gguf, numpy'` failed.         ##");
    eprintln!("## The reference dequantization was NOT compared with gguf-py.                ##");
    eprintln!("## Install with `pip install gguf numpy` (set CI=1 to make this a failure).   ##");
    eprintln!("################################################################################");
    None
}

/// Equal bit patterns, or (F16 only) NaN on both sides.
fn same(ty: GgmlType, ours: f32, theirs: f32) -> bool {
    ours.to_bits() == theirs.to_bits() || (ty == GgmlType::F16 && ours.is_nan() && theirs.is_nan())
}

#[test]
fn every_reference_type_is_covered() {
    for &t in GgmlType::ALL {
        if reference::can_dequantize(t) {
            assert!(
                TYPES.contains(&t) || NOT_IN_GGUF_PY.contains(&t),
                "{t} is dequantizable but not compared with gguf-py: add it to TYPES"
            );
        }
    }
    for &t in TYPES {
        assert!(reference::can_dequantize(t), "{t}");
    }
}

#[test]
fn dequantize_matches_gguf_py_bit_exactly() {
    if python_available().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!(
        "autoround-dequant-vs-gguf-py-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();

    // Inputs and our outputs, one request per type, all sent to one python process.
    let mut rng = Rng(0x005e_ed0f_a11b_10c5);
    let mut cases = Vec::new();
    let mut args: Vec<String> = Vec::new();
    for &ty in TYPES {
        let (bytes, n) = if ty.is_quantized() {
            let n_blocks = if ty.block_size() == 256 { 300 } else { 600 };
            (
                gen_blocks(ty, n_blocks, &mut rng),
                n_blocks * ty.block_size(),
            )
        } else {
            (gen_floats(ty, 8192, &mut rng), 8192)
        };
        let mut ours = vec![0.0f32; n];
        reference::dequantize_row(ty, &bytes, &mut ours).unwrap();
        let input = dir.join(format!("{}.bin", ty.name()));
        let output = dir.join(format!("{}.f32", ty.name()));
        std::fs::write(&input, &bytes).unwrap();
        args.extend([
            ty.to_string(),
            input.display().to_string(),
            n.to_string(),
            output.display().to_string(),
        ]);
        cases.push((ty, ours, output));
    }

    let script = workspace_root().join("tools/gguf_py_dequant.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(&args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let mut failures = Vec::new();
    for (ty, ours, output) in &cases {
        let raw = std::fs::read(output).unwrap();
        assert_eq!(raw.len(), ours.len() * 4, "{ty}: gguf-py output size");
        let theirs: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();

        // Non-vacuous: the data must exercise real values, not mostly zeros.
        let nonzero = ours.iter().filter(|v| **v != 0.0).count();
        assert!(
            nonzero * 2 > ours.len(),
            "{ty}: only {nonzero} of {} values are nonzero",
            ours.len()
        );

        let mut mismatches = 0;
        for (i, (&a, &b)) in ours.iter().zip(&theirs).enumerate() {
            if !same(*ty, a, b) {
                if mismatches < 5 {
                    eprintln!(
                        "{ty}: element {i} (block {}): ours {a:e} ({:#010x}), gguf-py {b:e} ({:#010x})",
                        i / ty.block_size(),
                        a.to_bits(),
                        b.to_bits()
                    );
                }
                mismatches += 1;
            }
        }
        eprintln!("{ty:>7}: {} values, {mismatches} mismatches", ours.len());
        if mismatches > 0 {
            failures.push(format!("{ty}: {mismatches} of {}", ours.len()));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        failures.is_empty(),
        "not bit-exact with gguf-py: {failures:?}"
    );
}
