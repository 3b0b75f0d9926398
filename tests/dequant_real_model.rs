//! Our reference dequantization equals gguf-py's on the real model's tensors: for every test
//! model (Q4_1 as shipped; F16, Q8_0, Q4_K_M from llama-quantize), every tensor of layer 0 and
//! of the last layer, every ffn_down (where Q4_K_M keeps its Q4_K), the token embedding and the
//! output norm are dequantized by both and compared
//! bit for bit. This covers each type the files hold (F32, F16, Q4_1, Q8_0, Q5_0, Q4_K, Q6_K).

mod common;

use autoround_formats::gguf::GgufFile;
use autoround_kernels::reference;
use std::process::Command;

fn python_has_gguf() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import gguf, numpy"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let msg = "python3 with the `gguf` and `numpy` packages is needed (pip install gguf numpy)";
        assert!(!common::in_ci(), "{msg}");
        eprintln!("SKIP: {msg}");
    }
    ok
}

#[test]
fn real_model_tensors_dequantize_like_gguf_py() {
    if !python_has_gguf() {
        return;
    }
    let tool = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/gguf_py_dequant.py");
    let dir = std::env::temp_dir().join(format!("arc-deq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut checked = std::collections::BTreeMap::<String, usize>::new();
    for variant in ["Q4_1", "F16", "Q8_0", "Q4_K_M"] {
        let Some(path) = common::model(variant) else {
            continue;
        };
        let f = GgufFile::open(&path).unwrap();
        let last = format!(
            "blk.{}.",
            f.tensors()
                .iter()
                .filter(|t| t.name.ends_with("attn_norm.weight"))
                .count()
                - 1
        );
        let picked: Vec<_> = f
            .tensors()
            .iter()
            .filter(|t| {
                t.name.starts_with("blk.0.")
                    || t.name.ends_with("ffn_down.weight")
                    || t.name.starts_with(&last)
                    || !t.name.starts_with("blk.")
            })
            .collect();
        let mut args = Vec::new();
        for (i, t) in picked.iter().enumerate() {
            let input = dir.join(format!("{variant}-{i}.bin"));
            std::fs::write(&input, f.tensor_data(t)).unwrap();
            args.extend([
                t.ty.name().to_string(),
                input.display().to_string(),
                t.n_elements().to_string(),
                dir.join(format!("{variant}-{i}.f32")).display().to_string(),
            ]);
        }
        let st = Command::new("python3")
            .arg(&tool)
            .args(&args)
            .status()
            .unwrap();
        assert!(st.success(), "gguf_py_dequant.py failed for {variant}");
        for (i, t) in picked.iter().enumerate() {
            let want = std::fs::read(dir.join(format!("{variant}-{i}.f32"))).unwrap();
            let mut got = vec![0f32; t.n_elements() as usize];
            reference::dequantize_row(t.ty, f.tensor_data(t), &mut got).unwrap();
            assert_eq!(want.len(), got.len() * 4, "{variant} {}", t.name);
            for (j, (g, w)) in got.iter().zip(want.chunks_exact(4)).enumerate() {
                let w = f32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                assert!(
                    g.to_bits() == w.to_bits(),
                    "{variant} {} ({}): element {j}: ours {g}, gguf-py {w}",
                    t.name,
                    t.ty
                );
            }
            *checked.entry(t.ty.to_string()).or_default() += 1;
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    eprintln!("tensors compared bit for bit, by type: {checked:?}");
    if common::in_ci() {
        for ty in ["Q4_1", "Q8_0", "F16", "Q4_K", "Q6_K"] {
            assert!(
                checked.contains_key(ty),
                "no {ty} tensor was compared: {checked:?}"
            );
        }
    }
}
