//! Robustness of the safetensors reader: more than 10,000 mutated and truncated variants of a
//! realistic file (30 tensors of a small Llama-shaped model) go through `open_file` and every
//! `tensor()`. None may panic; every failure must be an error naming the file.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use autoround_formats::safetensors::{write_safetensors, SafetensorsModel};
use autoround_formats::GgmlType;

/// xorshift64*: deterministic, no dependency.
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

fn realistic_file(path: &Path) -> Vec<u8> {
    let mut tensors: Vec<(String, GgmlType, Vec<usize>)> = vec![
        (
            "model.embed_tokens.weight".into(),
            GgmlType::BF16,
            vec![64, 16],
        ),
        ("model.norm.weight".into(), GgmlType::F32, vec![16]),
        ("lm_head.weight".into(), GgmlType::F16, vec![64, 16]),
    ];
    for l in 0..3 {
        let p = format!("model.layers.{l}");
        for (n, ty, shape) in [
            ("input_layernorm.weight", GgmlType::F32, vec![16]),
            ("post_attention_layernorm.weight", GgmlType::F32, vec![16]),
            ("self_attn.q_proj.weight", GgmlType::BF16, vec![16, 16]),
            ("self_attn.k_proj.weight", GgmlType::BF16, vec![8, 16]),
            ("self_attn.v_proj.weight", GgmlType::F16, vec![8, 16]),
            ("self_attn.o_proj.weight", GgmlType::BF16, vec![16, 16]),
            ("mlp.gate_proj.weight", GgmlType::BF16, vec![32, 16]),
            ("mlp.up_proj.weight", GgmlType::F16, vec![32, 16]),
            ("mlp.down_proj.weight", GgmlType::BF16, vec![16, 32]),
        ] {
            tensors.push((format!("{p}.{n}"), ty, shape));
        }
    }
    assert_eq!(tensors.len(), 30);
    let datas: Vec<Vec<u8>> = tensors
        .iter()
        .enumerate()
        .map(|(i, (_, ty, shape))| {
            let n: usize = shape.iter().product::<usize>() * ty.type_size();
            (0..n).map(|j| (i * 31 + j * 7) as u8).collect()
        })
        .collect();
    let input: Vec<(String, GgmlType, Vec<usize>, &[u8])> = tensors
        .iter()
        .zip(&datas)
        .map(|((n, t, s), d)| (n.clone(), *t, s.clone(), d.as_slice()))
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(path, &input, Some(meta)).unwrap();
    std::fs::read(path).unwrap()
}

/// Snippets spliced into the JSON header.
const JSON_BITS: &[&str] = &[
    "\"",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "0",
    "-1",
    "1e400",
    "18446744073709551615",
    "18446744073709551616",
    "null",
    "true",
    "\"F8_E4M3\"",
    "\"I32\"",
    "\"XX\"",
    "\"BF16\"",
    "\"dtype\"",
    "\"shape\"",
    "\"data_offsets\"",
    "\"__metadata__\"",
    "[0,0]",
    "[4294967296]",
    "\\u0000",
    "\\ud800",
    "\u{fffd}",
    " ",
    "\n",
    "9999999999",
    "[1,2,3,4,5,6,7,8,9]",
];

fn mutate(base: &[u8], header_end: usize, rng: &mut Rng) -> Vec<u8> {
    let mut v = base.to_vec();
    let pos_in_header = |rng: &mut Rng| 8 + rng.below(header_end - 8);
    match rng.below(9) {
        // Truncate anywhere (most often inside the header).
        0 => {
            let cut = if rng.below(2) == 0 {
                rng.below(header_end + 1)
            } else {
                rng.below(v.len())
            };
            v.truncate(cut);
        }
        // Flip bits in the header.
        1 => {
            for _ in 0..1 + rng.below(4) {
                let p = pos_in_header(rng);
                v[p] ^= 1 << rng.below(8);
            }
        }
        // Random bytes in the header.
        2 => {
            let p = pos_in_header(rng);
            v[p] = rng.next() as u8;
        }
        // Corrupt the header length prefix.
        3 => {
            let n = match rng.below(5) {
                0 => rng.next(),
                1 => u64::MAX,
                2 => (header_end - 8) as u64 + 1,
                3 => (header_end - 8) as u64 - 1,
                _ => rng.below(header_end) as u64,
            };
            v[..8].copy_from_slice(&n.to_le_bytes());
        }
        // Splice a JSON snippet in place of some header bytes (length prefix unchanged).
        4 => {
            let p = pos_in_header(rng);
            let bit = JSON_BITS[rng.below(JSON_BITS.len())].as_bytes();
            for (i, b) in bit.iter().enumerate() {
                if p + i < header_end {
                    v[p + i] = *b;
                }
            }
        }
        // Change a digit (offsets, shapes) to another digit.
        5 => {
            let digits: Vec<usize> = (8..header_end).filter(|&i| v[i].is_ascii_digit()).collect();
            for _ in 0..1 + rng.below(3) {
                let p = digits[rng.below(digits.len())];
                v[p] = b'0' + rng.below(10) as u8;
            }
        }
        // Insert or delete header bytes, fixing up the length prefix (a different valid-length
        // header with shifted content).
        6 => {
            let p = pos_in_header(rng);
            if rng.below(2) == 0 {
                let bit = JSON_BITS[rng.below(JSON_BITS.len())].as_bytes();
                v.splice(p..p, bit.iter().copied());
                let n = (header_end - 8 + bit.len()) as u64;
                v[..8].copy_from_slice(&n.to_le_bytes());
            } else {
                let k = 1 + rng.below(8).min(header_end - p - 1);
                v.drain(p..p + k);
                let n = (header_end - 8 - k) as u64;
                v[..8].copy_from_slice(&n.to_le_bytes());
            }
        }
        // Append or remove trailing data bytes.
        7 => {
            if rng.below(2) == 0 {
                v.extend((0..1 + rng.below(16)).map(|_| rng.next() as u8));
            } else {
                let k = 1 + rng.below(16.min(v.len() - header_end));
                v.truncate(v.len() - k);
            }
        }
        // Mutate tensor data only: must still open, and tensors must still be served.
        _ => {
            if v.len() > header_end {
                let p = header_end + rng.below(v.len() - header_end);
                v[p] = rng.next() as u8;
            }
        }
    }
    v
}

#[test]
fn ten_thousand_mutations_never_panic() {
    // 12,000 small files: tmpfs when there is one, it is much faster than a disk.
    let shm = Path::new("/dev/shm");
    let base_dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir: PathBuf = base_dir.join(format!("autoround-st-mut-{}", std::process::id()));
    let start = std::time::Instant::now();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base_path = dir.join("base.safetensors");
    let base = realistic_file(&base_path);
    let header_len = u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
    let header_end = 8 + header_len;
    assert!(header_len > 2000, "header of {header_len} bytes");
    let base_model = SafetensorsModel::open_file(&base_path).unwrap();
    assert_eq!(base_model.len(), 30);

    let path = dir.join("mutant.safetensors");
    let path_text = path.display().to_string();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut opened, mut rejected) = (0usize, 0usize);
    const N: usize = 12_000;
    for i in 0..N {
        let variant = mutate(&base, header_end, &mut rng);
        std::fs::write(&path, &variant).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<usize, String> {
            let m = SafetensorsModel::open_file(&path).map_err(|e| e.to_string())?;
            let mut served = 0;
            for name in m.names() {
                match m.tensor(name) {
                    Ok(t) => {
                        assert_eq!(t.n_elements() * t.dtype.type_size(), t.data.len());
                        served += 1;
                    }
                    Err(e) => {
                        let e = e.to_string();
                        assert!(
                            e.contains(name),
                            "tensor error without the tensor name: {e}"
                        );
                    }
                }
            }
            let _ = m.tensor("no.such.tensor").unwrap_err();
            Ok(served)
        }));
        match outcome {
            Err(_) => panic!("variant {i} ({} bytes) panicked the reader", variant.len()),
            Ok(Ok(_)) => opened += 1,
            Ok(Err(e)) => {
                assert!(
                    e.contains(&path_text),
                    "variant {i}: error does not name the file: {e}"
                );
                rejected += 1;
            }
        }
    }
    assert_eq!(opened + rejected, N);
    // Both outcomes must actually occur for the test to mean something.
    assert!(
        rejected > N / 2 && opened > 500,
        "opened {opened}, rejected {rejected}"
    );
    eprintln!(
        "{N} variants in {:.1?}: {opened} opened, {rejected} rejected with an error naming the file",
        start.elapsed()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
