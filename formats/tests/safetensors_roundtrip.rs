//! safetensors: writer -> reader round trips, sharded checkpoints, and the errors for missing
//! tensors, unsupported dtypes and inconsistent shard indexes.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use autoround_formats::safetensors::{
    write_index, write_safetensors, SafetensorsError, SafetensorsModel,
};
use autoround_formats::GgmlType;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("autoround-st-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect()
}

fn bf16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
        .collect()
}

#[test]
fn single_file_round_trip() {
    let d = tmpdir("single");
    let vals: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    let (a, b, c) = (
        f32_bytes(&vals),
        f16_bytes(&vals[..12]),
        bf16_bytes(&vals[..6]),
    );
    let scalar = f32_bytes(&[7.0]);
    let tensors: Vec<(String, GgmlType, Vec<usize>, &[u8])> = vec![
        (
            "model.embed_tokens.weight".into(),
            GgmlType::F32,
            vec![4, 6],
            &a,
        ),
        ("model.norm.weight".into(), GgmlType::F16, vec![12], &b),
        ("lm_head.weight".into(), GgmlType::BF16, vec![2, 3], &c),
        ("scalar".into(), GgmlType::F32, vec![], &scalar),
        ("empty".into(), GgmlType::F16, vec![0, 5], &[]),
    ];
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(&d.join("model.safetensors"), &tensors, Some(meta)).unwrap();
    // No temporary file left behind.
    let names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["model.safetensors"]);

    let m = SafetensorsModel::open_dir(&d).unwrap();
    assert_eq!(m.len(), 5);
    assert_eq!(m.metadata()["format"], "pt");
    for (name, ty, shape, data) in &tensors {
        let t = m.tensor(name).unwrap();
        assert_eq!(t.name, name);
        assert_eq!(t.dtype, *ty);
        assert_eq!(&t.shape, shape);
        assert_eq!(t.data, *data);
        assert_eq!(t.n_elements() * ty.type_size(), data.len());
    }
    let t = m.tensor("lm_head.weight").unwrap();
    let got: Vec<f32> = t
        .data
        .chunks_exact(2)
        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    assert_eq!(got, vals[..6]);

    // The same file opened directly.
    let m2 = SafetensorsModel::open_file(&d.join("model.safetensors")).unwrap();
    assert_eq!(m2.names(), m.names());

    // Errors name the tensor and the file.
    let e = m.tensor("model.layers.0.mlp.up_proj.weight").unwrap_err();
    assert!(matches!(e, SafetensorsError::MissingTensor { .. }));
    let e = e.to_string();
    assert!(
        e.contains("model.layers.0.mlp.up_proj.weight") && e.contains("model.safetensors"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn unsupported_dtype_names_tensor_and_dtype() {
    let d = tmpdir("dtype");
    let q = vec![1u8; 32];
    let ok = f32_bytes(&[1.0, 2.0]);
    write_safetensors(
        &d.join("model.safetensors"),
        &[
            (
                "model.layers.0.qweight".into(),
                GgmlType::I64,
                vec![2, 2],
                &q,
            ),
            ("bias".into(), GgmlType::F32, vec![2], &ok),
        ],
        None,
    )
    .unwrap();
    let m = SafetensorsModel::open_dir(&d).unwrap();
    let e = m.tensor("model.layers.0.qweight").unwrap_err().to_string();
    assert!(
        e.contains("model.layers.0.qweight") && e.contains("I64") && e.contains("BF16"),
        "{e}"
    );
    assert!(m.tensor("bias").is_ok());

    // The writer refuses what it cannot store and inconsistent sizes, naming the tensor.
    let p = d.join("bad.safetensors");
    let e = write_safetensors(
        &p,
        &[("w".into(), GgmlType::Q4_0, vec![32], &[0u8; 18])],
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("'w'") && e.contains("q4_0"), "{e}");
    let e = write_safetensors(&p, &[("w".into(), GgmlType::F32, vec![3], &ok)], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("'w'") && e.contains("12 bytes"), "{e}");
    let e = write_safetensors(
        &p,
        &[
            ("w".into(), GgmlType::F32, vec![2], &ok),
            ("w".into(), GgmlType::F32, vec![2], &ok),
        ],
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("duplicate"), "{e}");
    assert!(!p.exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn sharded_round_trip() {
    let d = tmpdir("sharded");
    let a = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
    let b = bf16_bytes(&[5.0, 6.0]);
    let c = f16_bytes(&[7.0, 8.0, 9.0]);
    write_safetensors(
        &d.join("model-00001-of-00002.safetensors"),
        &[
            ("a".into(), GgmlType::F32, vec![2, 2], &a),
            ("b".into(), GgmlType::BF16, vec![2], &b),
        ],
        Some(HashMap::from([("format".to_string(), "pt".to_string())])),
    )
    .unwrap();
    write_safetensors(
        &d.join("model-00002-of-00002.safetensors"),
        &[("c".into(), GgmlType::F16, vec![3], &c)],
        None,
    )
    .unwrap();
    let mut map = BTreeMap::new();
    map.insert(
        "a".to_string(),
        "model-00001-of-00002.safetensors".to_string(),
    );
    map.insert(
        "b".to_string(),
        "model-00001-of-00002.safetensors".to_string(),
    );
    map.insert(
        "c".to_string(),
        "model-00002-of-00002.safetensors".to_string(),
    );
    write_index(&d.join("model.safetensors.index.json"), &map, Some(26)).unwrap();

    let m = SafetensorsModel::open_dir(&d).unwrap();
    assert_eq!(m.names(), vec!["a", "b", "c"]);
    assert_eq!(m.files().len(), 2);
    assert_eq!(m.tensor("a").unwrap().data, &a[..]);
    assert_eq!(m.tensor("b").unwrap().data, &b[..]);
    assert_eq!(m.tensor("c").unwrap().data, &c[..]);
    assert_eq!(m.tensor("c").unwrap().dtype, GgmlType::F16);
    assert_eq!(m.metadata()["total_size"], "26");
    let e = m.tensor("d").unwrap_err().to_string();
    assert!(
        e.contains("'d'") && e.contains("model.safetensors.index.json"),
        "{e}"
    );

    // Inconsistent indexes: each error names the index (or the missing shard).
    let index = d.join("model.safetensors.index.json");
    let write = |json: &str| std::fs::write(&index, json).unwrap();
    write(r#"{"weight_map": {"a": "model-00002-of-00002.safetensors"}}"#);
    let e = SafetensorsModel::open_dir(&d).unwrap_err().to_string();
    assert!(
        e.contains("'a'") && e.contains("index.json") && e.contains("does not contain"),
        "{e}"
    );
    write(r#"{"weight_map": {"a": "missing.safetensors"}}"#);
    let e = SafetensorsModel::open_dir(&d).unwrap_err().to_string();
    assert!(e.contains("missing.safetensors"), "{e}");
    write(r#"{"weight_map": {"a": "../model-00001-of-00002.safetensors"}}"#);
    let e = SafetensorsModel::open_dir(&d).unwrap_err().to_string();
    assert!(e.contains("relative path inside"), "{e}");
    write(r#"{"weight_map": {}}"#);
    let e = SafetensorsModel::open_dir(&d).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    write(r#"{"metadata": {}}"#);
    let e = SafetensorsModel::open_dir(&d).unwrap_err().to_string();
    assert!(e.contains("weight_map") && e.contains("index.json"), "{e}");

    // A directory with neither file.
    std::fs::remove_file(&index).unwrap();
    let e = SafetensorsModel::open_dir(&d).unwrap_err().to_string();
    assert!(
        e.contains("model.safetensors.index.json") && e.contains("no model.safetensors"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}
