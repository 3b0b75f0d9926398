//! Unit tests: GGUF bytes built by hand (independently of [`GgufWriter`]) parse as expected, the
//! writer reproduces them exactly, and malformed input gives the right error.

use std::borrow::Cow;
use std::path::PathBuf;

use super::*;
use crate::GgmlType;

/// A tiny little-endian GGUF byte builder, independent of the writer.
#[derive(Default)]
struct B(Vec<u8>);

impl B {
    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    /// Magic, version and counts.
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> B {
        let mut b = B::default();
        b.raw(b"GGUF").u32(version).u64(n_tensors).u64(n_kv);
        b
    }
    /// Key and value type id.
    fn key(&mut self, key: &str, ty: u32) -> &mut Self {
        self.str(key).u32(ty)
    }
    fn tensor_info(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    fn pad(&mut self, alignment: usize) -> &mut Self {
        let padded = self.0.len().next_multiple_of(alignment);
        self.0.resize(padded, 0);
        self
    }
}

/// Type ids, spelled out as numbers on purpose (the file format).
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STR: u32 = 8;
const T_ARR: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

/// Tensor data used by the hand-built files: an f32 [4, 2] and a q8_0 [32, 1].
fn f32_data() -> Vec<u8> {
    (0..8)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect()
}
fn q8_data() -> Vec<u8> {
    (0..34u8).map(|i| i.wrapping_mul(7)).collect()
}

/// A file with every value type, nested and empty arrays, and two tensors.
fn every_type_file(version: u32, alignment: Option<u32>) -> Vec<u8> {
    let n_kv = 18 + u64::from(alignment.is_some());
    let mut b = B::header(version, 2, n_kv);
    if let Some(a) = alignment {
        b.key("general.alignment", T_U32).u32(a);
    }
    b.key("t.u8", T_U8).raw(&[200]);
    b.key("t.i8", T_I8).raw(&(-100i8).to_le_bytes());
    b.key("t.u16", T_U16).raw(&60000u16.to_le_bytes());
    b.key("t.i16", T_I16).raw(&(-30000i16).to_le_bytes());
    b.key("t.u32", T_U32).u32(4_000_000_000);
    b.key("t.i32", T_I32)
        .raw(&(-2_000_000_000i32).to_le_bytes());
    b.key("t.f32", T_F32).raw(&1.5f32.to_le_bytes());
    b.key("t.bool", T_BOOL).raw(&[1]);
    b.key("t.str", T_STR).str("héllo");
    b.key("t.u64", T_U64).u64(u64::MAX);
    b.key("t.i64", T_I64).raw(&i64::MIN.to_le_bytes());
    b.key("t.f64", T_F64).raw(&(-2.25f64).to_le_bytes());
    b.key("t.arr_i32", T_ARR).u32(T_I32).u64(3);
    for v in [1i32, -2, 3] {
        b.raw(&v.to_le_bytes());
    }
    b.key("t.arr_str", T_ARR).u32(T_STR).u64(2).str("a").str("");
    b.key("t.arr_empty_f32", T_ARR).u32(T_F32).u64(0);
    b.key("t.arr_bool", T_ARR)
        .u32(T_BOOL)
        .u64(3)
        .raw(&[0, 1, 0]);
    // Array of arrays of strings: [["x", "yz"], []].
    b.key("t.nested", T_ARR).u32(T_ARR).u64(2);
    b.u32(T_STR).u64(2).str("x").str("yz");
    b.u32(T_STR).u64(0);
    b.key("t.empty_str", T_STR).str("");

    let align = alignment.map_or(32, |a| a as usize);
    b.tensor_info("w.f32", &[4, 2], 0, 0);
    let q8_offset = 32usize.next_multiple_of(align) as u64;
    b.tensor_info("w.q8_0", &[32, 1], 8, q8_offset);
    b.pad(align);
    b.raw(&f32_data()).pad(align);
    b.raw(&q8_data()).pad(align);
    b.0
}

fn malformed(bytes: &[u8]) -> (Location, Problem, u64, String) {
    match GgufHeader::parse(bytes) {
        Err(e @ GgufError::Malformed { .. }) => {
            let msg = e.to_string();
            let GgufError::Malformed {
                location,
                problem,
                offset,
                ..
            } = e
            else {
                unreachable!()
            };
            (location, problem, offset, msg)
        }
        other => panic!("expected a Malformed error, got {other:?}"),
    }
}

fn check_every_type(h: &GgufHeader, bytes: &[u8], version: u32, alignment: u64) {
    assert_eq!(h.version, version);
    assert_eq!(h.alignment, alignment);
    let v = |k: &str| h.get(k).unwrap_or_else(|| panic!("missing {k}"));
    assert_eq!(v("t.u8"), &GgufValue::U8(200));
    assert_eq!(v("t.i8"), &GgufValue::I8(-100));
    assert_eq!(v("t.u16"), &GgufValue::U16(60000));
    assert_eq!(v("t.i16"), &GgufValue::I16(-30000));
    assert_eq!(v("t.u32"), &GgufValue::U32(4_000_000_000));
    assert_eq!(v("t.i32"), &GgufValue::I32(-2_000_000_000));
    assert_eq!(v("t.f32"), &GgufValue::F32(1.5));
    assert_eq!(v("t.bool"), &GgufValue::Bool(true));
    assert_eq!(v("t.str"), &GgufValue::String("héllo".into()));
    assert_eq!(v("t.u64"), &GgufValue::U64(u64::MAX));
    assert_eq!(v("t.i64"), &GgufValue::I64(i64::MIN));
    assert_eq!(v("t.f64"), &GgufValue::F64(-2.25));
    assert_eq!(
        v("t.arr_i32"),
        &GgufValue::Array(
            GgufValueType::I32,
            vec![GgufValue::I32(1), GgufValue::I32(-2), GgufValue::I32(3)]
        )
    );
    assert_eq!(v("t.arr_str").as_str_array(), Some(vec!["a", ""]));
    assert_eq!(
        v("t.arr_empty_f32"),
        &GgufValue::Array(GgufValueType::F32, vec![])
    );
    assert_eq!(
        v("t.arr_bool")
            .as_array()
            .map(|a| a.iter().map(|b| b.as_bool()).collect()),
        Some(vec![Some(false), Some(true), Some(false)])
    );
    let nested = v("t.nested").as_array().expect("nested is an array");
    assert_eq!(nested.len(), 2);
    assert_eq!(nested[0].as_str_array(), Some(vec!["x", "yz"]));
    assert_eq!(nested[1], GgufValue::Array(GgufValueType::String, vec![]));
    assert_eq!(v("t.nested").array_type(), Some(GgufValueType::Array));
    assert_eq!(v("t.empty_str").as_str(), Some(""));
    // File order is kept.
    let keys: Vec<&str> = h.metadata.iter().map(|(k, _)| k.as_str()).collect();
    let skip = usize::from(alignment != 32);
    assert_eq!(keys[skip], "t.u8");
    assert_eq!(keys.last(), Some(&"t.empty_str"));

    assert_eq!(h.tensors.len(), 2);
    let f = h.tensor("w.f32").expect("w.f32");
    assert_eq!(
        (f.dims.as_slice(), f.ty, f.offset, f.size),
        (&[4u64, 2][..], GgmlType::F32, 0, 32)
    );
    assert_eq!(f.n_elements(), 8);
    let q = h.tensor("w.q8_0").expect("w.q8_0");
    assert_eq!(
        (q.dims.as_slice(), q.ty, q.size),
        (&[32u64, 1][..], GgmlType::Q8_0, 34)
    );
    assert_eq!(q.offset, alignment.max(32));
    assert_eq!(h.data_offset % alignment, 0);
    let data = |t: &TensorInfo| {
        let r = h.tensor_range(t).expect("range");
        &bytes[r.start as usize..r.end as usize]
    };
    assert_eq!(data(f), f32_data().as_slice());
    assert_eq!(data(q), q8_data().as_slice());
    assert_eq!(h.tensor("nope"), None);
    assert_eq!(h.get("nope"), None);
}

#[test]
fn parses_every_value_type_v3() {
    let bytes = every_type_file(3, None);
    let h = GgufHeader::parse(&bytes).expect("parse");
    check_every_type(&h, &bytes, 3, 32);
}

#[test]
fn parses_v2_with_alignment_64() {
    let bytes = every_type_file(2, Some(64));
    let h = GgufHeader::parse(&bytes).expect("parse");
    check_every_type(&h, &bytes, 2, 64);
    assert_eq!(h.get(GGUF_KEY_ALIGNMENT), Some(&GgufValue::U32(64)));
    assert_eq!(h.tensor("w.q8_0").map(|t| t.offset), Some(64));
}

#[test]
fn empty_file_has_no_padding_requirement() {
    // No tensors, no metadata: llama.cpp's writer still pads the header to 32 bytes.
    let mut b = B::header(3, 0, 0);
    b.pad(32);
    let h = GgufHeader::parse(&b.0).expect("parse");
    assert_eq!(
        (h.tensors.len(), h.metadata.len(), h.data_offset),
        (0, 0, 32)
    );
    let mut out = Vec::new();
    GgufWriter::new(3, 32).write_to(&mut out).expect("write");
    assert_eq!(out, b.0);
}

/// Build the writer equivalent of `every_type_file`.
fn every_type_writer<'a>(
    version: u32,
    alignment: Option<u32>,
    f: &'a [u8],
    q: &'a [u8],
) -> GgufWriter<'a> {
    let mut w = GgufWriter::new(version, alignment.map_or(32, u64::from));
    use GgufValue as V;
    if let Some(a) = alignment {
        w.add_kv("general.alignment", V::U32(a));
    }
    w.add_kv("t.u8", V::U8(200));
    w.add_kv("t.i8", V::I8(-100));
    w.add_kv("t.u16", V::U16(60000));
    w.add_kv("t.i16", V::I16(-30000));
    w.add_kv("t.u32", V::U32(4_000_000_000));
    w.add_kv("t.i32", V::I32(-2_000_000_000));
    w.add_kv("t.f32", V::F32(1.5));
    w.add_kv("t.bool", V::Bool(true));
    w.add_kv("t.str", V::String("héllo".into()));
    w.add_kv("t.u64", V::U64(u64::MAX));
    w.add_kv("t.i64", V::I64(i64::MIN));
    w.add_kv("t.f64", V::F64(-2.25));
    w.add_kv(
        "t.arr_i32",
        V::Array(GgufValueType::I32, vec![V::I32(1), V::I32(-2), V::I32(3)]),
    );
    w.add_kv(
        "t.arr_str",
        V::Array(
            GgufValueType::String,
            vec![V::String("a".into()), V::String("".into())],
        ),
    );
    w.add_kv("t.arr_empty_f32", V::Array(GgufValueType::F32, vec![]));
    w.add_kv(
        "t.arr_bool",
        V::Array(
            GgufValueType::Bool,
            vec![V::Bool(false), V::Bool(true), V::Bool(false)],
        ),
    );
    w.add_kv(
        "t.nested",
        V::Array(
            GgufValueType::Array,
            vec![
                V::Array(
                    GgufValueType::String,
                    vec![V::String("x".into()), V::String("yz".into())],
                ),
                V::Array(GgufValueType::String, vec![]),
            ],
        ),
    );
    w.add_kv("t.empty_str", V::String(String::new()));
    w.add_tensor("w.f32", vec![4, 2], GgmlType::F32, Cow::Borrowed(f))
        .expect("add f32");
    w.add_tensor("w.q8_0", vec![32, 1], GgmlType::Q8_0, Cow::Borrowed(q))
        .expect("add q8_0");
    w
}

#[test]
fn writer_reproduces_hand_built_bytes() {
    let (f, q) = (f32_data(), q8_data());
    for (version, alignment) in [(3, None), (2, Some(64)), (3, Some(128))] {
        let expected = every_type_file(version, alignment);
        let mut out = Vec::new();
        every_type_writer(version, alignment, &f, &q)
            .write_to(&mut out)
            .expect("write");
        assert_eq!(out.len(), expected.len(), "v{version} {alignment:?}");
        assert!(
            out == expected,
            "v{version} alignment {alignment:?}: bytes differ"
        );
        let h = GgufHeader::parse(&out).expect("parse written");
        check_every_type(&h, &out, version, alignment.map_or(32, u64::from));
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("autoround-gguf-unit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

#[test]
fn file_round_trip_through_disk() {
    let dir = temp_dir("roundtrip");
    let path = dir.join("a.gguf");
    let (f, q) = (f32_data(), q8_data());
    every_type_writer(3, Some(64), &f, &q)
        .write_to_path(&path)
        .expect("write_to_path");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("a.gguf")],
        "temp file left behind"
    );

    let file = GgufFile::open(&path).expect("open");
    assert_eq!(file.path(), path.as_path());
    check_every_type(file.header(), file.file_bytes(), 3, 64);
    let t = file.tensor("w.q8_0").expect("tensor");
    assert_eq!(file.tensor_data(t), q.as_slice());
    assert_eq!(file.tensors().len(), 2);
    assert_eq!(file.get("t.u8").and_then(GgufValue::as_u64), Some(200));
    // Deref to the header.
    assert_eq!(file.alignment, 64);

    // Rewriting from the file, over the file itself, gives identical bytes.
    let before = std::fs::read(&path).expect("read");
    GgufWriter::from_file(&file)
        .write_to_path(&path)
        .expect("rewrite in place");
    assert_eq!(std::fs::read(&path).expect("read"), before);
    // The map still holds the old (identical) contents.
    assert_eq!(file.tensor_data(t), q.as_slice());

    // Changing a value keeps its position.
    let mut w = GgufWriter::from_file(&file);
    w.add_kv("t.u8", GgufValue::U8(7));
    w.add_kv("t.new", GgufValue::Bool(false));
    assert_eq!(w.remove_kv("t.i8"), Some(GgufValue::I8(-100)));
    let mut out = Vec::new();
    w.write_to(&mut out).expect("write");
    let h = GgufHeader::parse(&out).expect("parse");
    assert_eq!(h.metadata[1], ("t.u8".to_string(), GgufValue::U8(7)));
    assert_eq!(
        h.metadata.last(),
        Some(&("t.new".to_string(), GgufValue::Bool(false)))
    );
    assert_eq!(h.get("t.i8"), None);
    drop(file);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn open_errors_name_the_path() {
    let dir = temp_dir("open-errors");
    let missing = dir.join("missing.gguf");
    let e = GgufFile::open(&missing).expect_err("missing file");
    assert!(matches!(e, GgufError::Io { op: "open", .. }), "{e:?}");
    assert_eq!(e.path(), Some(missing.as_path()));
    assert!(e.to_string().contains("missing.gguf"), "{e}");

    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"GGML\x03\0\0\0").expect("write");
    let e = GgufFile::open(&bad).expect_err("bad magic");
    assert_eq!(e.path(), Some(bad.as_path()));
    assert!(matches!(e.problem(), Some(Problem::BadMagic { found }) if found == b"GGML"));
    assert!(e.to_string().starts_with(&bad.display().to_string()), "{e}");

    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").expect("write");
    let e = GgufFile::open(&empty).expect_err("empty");
    assert!(
        matches!(e.problem(), Some(Problem::Truncated { .. })),
        "{e:?}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn write_to_path_failure_leaves_nothing() {
    let dir = temp_dir("write-fail");
    let path = dir.join("out.gguf");
    // Alignment 64 without general.alignment: rejected before anything is created.
    let e = GgufWriter::new(3, 64)
        .write_to_path(&path)
        .expect_err("mismatch");
    assert!(
        matches!(
            e.problem(),
            Some(Problem::AlignmentMismatch {
                key: None,
                writer: 64
            })
        ),
        "{e:?}"
    );
    assert_eq!(e.path(), Some(path.as_path()));
    // A directory that does not exist: creating the temporary file fails.
    let e = GgufWriter::new(3, 32)
        .write_to_path(&dir.join("no/such/dir.gguf"))
        .expect_err("no dir");
    assert!(matches!(e, GgufError::Io { op: "create", .. }), "{e:?}");
    assert_eq!(std::fs::read_dir(&dir).expect("read dir").count(), 0);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn writer_rejects_bad_input() {
    let data = [0u8; 36];
    let mut w = GgufWriter::new(3, 32);
    let e = w
        .add_tensor("a", vec![32, 2], GgmlType::Q8_0, Cow::Borrowed(&data[..35]))
        .expect_err("size");
    assert!(
        matches!(
            e.problem(),
            Some(Problem::DataSize {
                expected: 68,
                found: 35,
                ..
            })
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("'a'"), "{e}");
    let e = w
        .add_tensor("a", vec![33], GgmlType::Q4_0, Cow::Borrowed(&data[..18]))
        .expect_err("ragged");
    assert!(
        matches!(
            e.problem(),
            Some(Problem::RaggedRow {
                ne0: 33,
                block: 32,
                ..
            })
        ),
        "{e:?}"
    );
    let e = w
        .add_tensor(
            "a",
            vec![1, 1, 1, 1, 1],
            GgmlType::I8,
            Cow::Borrowed(&data[..1]),
        )
        .expect_err("dims");
    assert!(
        matches!(e.problem(), Some(Problem::TooManyDims { found: 5 })),
        "{e:?}"
    );
    let e = w
        .add_tensor(
            "x".repeat(64),
            vec![1],
            GgmlType::I8,
            Cow::Borrowed(&data[..1]),
        )
        .expect_err("name");
    assert!(
        matches!(e.problem(), Some(Problem::NameTooLong { found: 64 })),
        "{e:?}"
    );
    let e = w
        .add_tensor(
            "a",
            vec![u64::MAX / 2, 4],
            GgmlType::F32,
            Cow::Borrowed(&data[..0]),
        )
        .expect_err("overflow");
    assert!(
        matches!(e.problem(), Some(Problem::SizeOverflow { .. })),
        "{e:?}"
    );
    w.add_tensor("a", vec![9], GgmlType::F32, Cow::Borrowed(&data[..36]))
        .expect("ok");
    let e = w
        .add_tensor("a", vec![9], GgmlType::F32, Cow::Borrowed(&data[..36]))
        .expect_err("dup");
    assert!(
        matches!(
            e.problem(),
            Some(Problem::DuplicateTensor { first_index: 0 })
        ),
        "{e:?}"
    );
    assert_eq!(w.n_tensors(), 1);

    let write_err = |w: &GgufWriter| w.write_to(&mut Vec::new()).expect_err("write must fail");
    let mut w2 = w.clone();
    w2.add_kv("general.alignment", GgufValue::U64(32));
    assert!(matches!(
        write_err(&w2).problem(),
        Some(Problem::AlignmentType {
            found: GgufValueType::U64
        })
    ));
    let mut w2 = w.clone();
    w2.add_kv("general.alignment", GgufValue::U32(64));
    assert!(matches!(
        write_err(&w2).problem(),
        Some(Problem::AlignmentMismatch {
            key: Some(64),
            writer: 32
        })
    ));
    let mut w2 = w.clone();
    w2.add_kv("", GgufValue::U8(0));
    assert!(matches!(write_err(&w2).problem(), Some(Problem::EmptyKey)));
    let mut w2 = w.clone();
    w2.add_kv(
        "mixed",
        GgufValue::Array(GgufValueType::U8, vec![GgufValue::U8(1), GgufValue::I8(1)]),
    );
    assert!(matches!(
        write_err(&w2).problem(),
        Some(Problem::ArrayElementType { index: 1, .. })
    ));
    let mut deep = GgufValue::Array(GgufValueType::U8, vec![]);
    for _ in 0..GGUF_MAX_ARRAY_DEPTH {
        deep = GgufValue::Array(GgufValueType::Array, vec![deep]);
    }
    let mut w2 = w.clone();
    w2.add_kv("deep", deep);
    assert!(matches!(
        write_err(&w2).problem(),
        Some(Problem::NestingTooDeep { .. })
    ));
    for (version, alignment) in [(1, 32), (4, 32), (3, 0), (3, 48)] {
        let e = GgufWriter::new(version, alignment)
            .write_to(&mut Vec::new())
            .expect_err("hdr");
        assert!(
            matches!(
                e.problem(),
                Some(Problem::UnsupportedVersion { .. } | Problem::BadAlignment { .. })
            ),
            "{e:?}"
        );
    }
    // The valid writer does write.
    let mut out = Vec::new();
    w.write_to(&mut out).expect("write");
    assert_eq!(out.len(), 64 + 64);
}

#[test]
fn deepest_accepted_nesting_round_trips() {
    let mut deep = GgufValue::Array(
        GgufValueType::String,
        vec![GgufValue::String("leaf".into())],
    );
    for _ in 1..GGUF_MAX_ARRAY_DEPTH {
        deep = GgufValue::Array(GgufValueType::Array, vec![deep]);
    }
    let mut w = GgufWriter::new(3, 32);
    w.add_kv("deep", deep.clone());
    let mut out = Vec::new();
    w.write_to(&mut out).expect("write");
    let h = GgufHeader::parse(&out).expect("parse");
    assert_eq!(h.get("deep"), Some(&deep));
}

#[test]
fn value_accessors() {
    use GgufValue as V;
    assert_eq!(V::U8(5).as_u64(), Some(5));
    assert_eq!(V::I32(-1).as_u64(), None);
    assert_eq!(V::I64(7).as_u64(), Some(7));
    assert_eq!(V::Bool(true).as_u64(), None);
    assert_eq!(V::F32(1.0).as_u64(), None);
    assert_eq!(V::U64(u64::MAX).as_i64(), None);
    assert_eq!(V::U64(5).as_i64(), Some(5));
    assert_eq!(V::I16(-5).as_i64(), Some(-5));
    assert_eq!(V::U64(1 << 40).as_u32(), None);
    assert_eq!(V::U16(9).as_u32(), Some(9));
    assert_eq!(V::F32(0.5).as_f64(), Some(0.5));
    assert_eq!(V::I8(-3).as_f64(), Some(-3.0));
    assert_eq!(V::U64(3).as_f64(), Some(3.0));
    assert_eq!(V::Bool(true).as_f64(), None);
    assert_eq!(V::String("s".into()).as_str(), Some("s"));
    assert_eq!(V::U8(1).as_str(), None);
    assert_eq!(V::Bool(false).as_bool(), Some(false));
    assert_eq!(V::U8(0).as_bool(), None);
    let strs = V::Array(GgufValueType::String, vec![V::String("a".into())]);
    assert_eq!(strs.as_str_array(), Some(vec!["a"]));
    assert_eq!(strs.as_array().map(<[_]>::len), Some(1));
    assert_eq!(
        V::Array(GgufValueType::U8, vec![V::U8(1)]).as_str_array(),
        None
    );
    assert_eq!(V::Array(GgufValueType::U8, vec![]).as_str_array(), None);
    assert_eq!(
        V::Array(GgufValueType::String, vec![]).as_str_array(),
        Some(vec![])
    );
    assert_eq!(V::U8(1).as_array(), None);
    for ty in GgufValueType::ALL {
        assert_eq!(GgufValueType::from_id(ty.id()), Some(ty));
    }
    assert_eq!(GgufValueType::from_id(13), None);
    assert_eq!(V::F64(1.0).value_type(), GgufValueType::F64);
}

// ---- malformed input ----

/// A minimal valid file: one u32 key, one f32 [2] tensor.
fn minimal(version: u32) -> B {
    let mut b = B::header(version, 1, 1);
    b.key("k", T_U32).u32(1);
    b.tensor_info("t", &[2], 0, 0);
    b.pad(32).raw(&[0; 8]).pad(32);
    b
}

#[test]
fn minimal_file_parses() {
    let h = GgufHeader::parse(&minimal(3).0).expect("parse");
    assert_eq!(
        (h.metadata.len(), h.tensors.len(), h.data_offset),
        (1, 1, 96)
    );
    assert_eq!(minimal(3).0.len(), 128);
}

#[test]
fn rejects_bad_magic_and_versions() {
    let mut b = minimal(3);
    b.0[0] = b'X';
    let (loc, p, off, msg) = malformed(&b.0);
    assert_eq!((loc, off), (Location::Header, 0));
    assert!(matches!(p, Problem::BadMagic { found } if &found == b"XGUF"));
    assert!(msg.contains("GGUF"), "{msg}");

    for v in [0u32, 1, 4, 0x0300_0000] {
        let (_, p, off, msg) = malformed(&minimal(v).0);
        assert_eq!(p, Problem::UnsupportedVersion { found: v });
        assert_eq!(off, 4);
        assert!(msg.contains("expected"), "{msg}");
        if v == 1 {
            assert!(msg.contains("32-bit counts"), "{msg}");
        }
        if v == 0x0300_0000 {
            assert!(msg.contains("big-endian"), "{msg}");
        }
    }
    assert!(GgufHeader::parse(&minimal(2).0).is_ok());
}

#[test]
fn rejects_every_truncation() {
    let bytes = minimal(3).0;
    // The data (8 bytes at 96) must be there; the padding after it need not.
    for len in 0..96 + 8 {
        let (_, p, _, _) = malformed(&bytes[..len]);
        assert!(
            matches!(
                p,
                Problem::Truncated { .. } | Problem::DataOutOfRange { .. }
            ),
            "cut at {len}: {p:?}"
        );
    }
    for len in 96 + 8..=bytes.len() {
        assert!(GgufHeader::parse(&bytes[..len]).is_ok(), "cut at {len}");
    }
    // Cutting into the tensor data is a range error naming the tensor.
    let (loc, p, _, msg) = malformed(&bytes[..103]);
    assert_eq!(
        loc,
        Location::Tensor {
            index: 0,
            name: Some("t".into())
        }
    );
    assert!(
        matches!(
            p,
            Problem::DataOutOfRange {
                data_offset: 96,
                offset: 0,
                size: 8,
                file_len: 103
            }
        ),
        "{p:?}"
    );
    assert!(msg.contains("'t'"), "{msg}");
}

#[test]
fn rejects_huge_counts_and_lengths_without_allocating() {
    // Tensor count, kv count.
    for at in [8usize, 16] {
        for huge in [u64::MAX, 1 << 40, 1 << 62] {
            let mut b = minimal(3).0;
            b[at..at + 8].copy_from_slice(&huge.to_le_bytes());
            let (loc, p, _, _) = malformed(&b);
            assert_eq!(loc, Location::Header);
            assert!(matches!(p, Problem::Truncated { .. }), "{p:?}");
        }
    }
    // Key length.
    let mut b = minimal(3).0;
    b[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    let (loc, p, off, _) = malformed(&b);
    assert_eq!(
        (loc, off),
        (
            Location::Key {
                index: 0,
                key: None
            },
            24
        )
    );
    assert!(
        matches!(
            p,
            Problem::TooLarge {
                found: u64::MAX,
                ..
            }
        ),
        "{p:?}"
    );
    let mut b = minimal(3).0;
    b[24..32].copy_from_slice(&(1u64 << 20).to_le_bytes());
    let (_, p, _, _) = malformed(&b);
    assert!(
        matches!(
            p,
            Problem::Truncated {
                needed: 1_048_576,
                ..
            }
        ),
        "{p:?}"
    );

    // Array count, string array count, string length in an array.
    for (elem, huge) in [
        (T_U8, u64::MAX),
        (T_STR, 1 << 40),
        (T_ARR, 1 << 29),
        (T_U64, 1 << 61),
    ] {
        let mut b = B::header(3, 0, 1);
        b.key("arr", T_ARR).u32(elem).u64(huge).raw(&[0; 64]);
        let (loc, p, _, msg) = malformed(&b.0);
        assert_eq!(
            loc,
            Location::Key {
                index: 0,
                key: Some("arr".into())
            }
        );
        assert!(
            matches!(p, Problem::Truncated { .. } | Problem::TooLarge { .. }),
            "{p:?}"
        );
        assert!(msg.contains("'arr'"), "{msg}");
    }
    let mut b = B::header(3, 0, 1);
    b.key("arr", T_ARR)
        .u32(T_STR)
        .u64(2)
        .str("ok")
        .u64(u64::MAX - 3);
    let (_, p, off, _) = malformed(&b.0);
    assert!(matches!(p, Problem::TooLarge { .. }), "{p:?}");
    assert_eq!(off, (b.0.len() - 8) as u64);
}

#[test]
fn rejects_bad_keys_and_values() {
    // Duplicate key.
    let mut b = B::header(3, 0, 2);
    b.key("a", T_U8).raw(&[1]).key("a", T_U8).raw(&[2]);
    let (loc, p, off, _) = malformed(&b.0);
    assert_eq!(
        loc,
        Location::Key {
            index: 1,
            key: Some("a".into())
        }
    );
    assert_eq!(p, Problem::DuplicateKey { first_index: 0 });
    assert_eq!(off, 24 + 9 + 4 + 1);
    // Empty key.
    let mut b = B::header(3, 0, 1);
    b.key("", T_U8).raw(&[1]);
    assert_eq!(malformed(&b.0).1, Problem::EmptyKey);
    // Invalid UTF-8 in a key and in a string value.
    let mut b = B::header(3, 0, 1);
    b.u64(2).raw(&[b'a', 0xff]).u32(T_U8).raw(&[1]);
    let (loc, p, _, _) = malformed(&b.0);
    assert_eq!(
        loc,
        Location::Key {
            index: 0,
            key: None
        }
    );
    assert!(
        matches!(
            p,
            Problem::InvalidUtf8 {
                what: "key",
                valid_up_to: 1
            }
        ),
        "{p:?}"
    );
    let mut b = B::header(3, 0, 1);
    b.key("s", T_STR).u64(3).raw(&[0xe2, 0x82, 0x28]);
    let (loc, p, off, _) = malformed(&b.0);
    assert_eq!(
        loc,
        Location::Key {
            index: 0,
            key: Some("s".into())
        }
    );
    assert!(
        matches!(
            p,
            Problem::InvalidUtf8 {
                what: "string value",
                ..
            }
        ),
        "{p:?}"
    );
    assert_eq!(off, 24 + 9 + 4 + 8);
    // Unknown value types, also as array element type.
    for ty in [13u32, 99, u32::MAX] {
        let mut b = B::header(3, 0, 1);
        b.key("x", ty).raw(&[0; 16]);
        assert_eq!(malformed(&b.0).1, Problem::UnknownValueType { found: ty });
        let mut b = B::header(3, 0, 1);
        b.key("x", T_ARR).u32(ty).u64(0);
        assert_eq!(malformed(&b.0).1, Problem::UnknownValueType { found: ty });
    }
    // Nesting one level deeper than accepted.
    let mut b = B::header(3, 0, 1);
    b.key("deep", T_ARR);
    for _ in 0..GGUF_MAX_ARRAY_DEPTH {
        b.u32(T_ARR).u64(1);
    }
    b.u32(T_U8).u64(0);
    let (_, p, _, _) = malformed(&b.0);
    assert_eq!(
        p,
        Problem::NestingTooDeep {
            max: GGUF_MAX_ARRAY_DEPTH
        }
    );
    // Alignment: wrong type, zero, not a power of two.
    let mut b = B::header(3, 0, 1);
    b.key("general.alignment", T_U64).u64(32);
    let (loc, p, off, msg) = malformed(&b.0);
    assert_eq!(
        p,
        Problem::AlignmentType {
            found: GgufValueType::U64
        }
    );
    assert_eq!(
        (loc, off),
        (
            Location::Key {
                index: 0,
                key: Some("general.alignment".into())
            },
            24
        )
    );
    assert!(msg.contains("u32") && msg.contains("u64"), "{msg}");
    for a in [0u32, 48, 3] {
        let mut b = B::header(3, 0, 1);
        b.key("general.alignment", T_U32).u32(a);
        assert_eq!(malformed(&b.0).1, Problem::BadAlignment { found: a.into() });
    }
}

#[test]
fn rejects_bad_tensor_infos() {
    let one = |name: &str, dims: &[u64], ty: u32, offset: u64, data: usize| {
        let mut b = B::header(3, 1, 0);
        b.tensor_info(name, dims, ty, offset)
            .pad(32)
            .raw(&vec![0; data]);
        b.0
    };
    let loc_t = Location::Tensor {
        index: 0,
        name: Some("t".into()),
    };
    // Removed and unknown ggml type ids.
    for id in [4u32, 5, 31, 36, 40, u32::MAX] {
        let (loc, p, _, msg) = malformed(&one("t", &[32], id, 0, 1024));
        assert_eq!(loc, loc_t);
        assert_eq!(p, Problem::UnknownGgmlType { found: id });
        assert!(
            msg.contains("'t'") && msg.contains(&id.to_string()),
            "{msg}"
        );
    }
    // Too many dimensions.
    let (_, p, _, _) = malformed(&one("t", &[1, 1, 1, 1, 1], 0, 0, 64));
    assert_eq!(p, Problem::TooManyDims { found: 5 });
    // Negative (as i64) dimension.
    let (_, p, _, _) = malformed(&one("t", &[1, 1 << 63], 0, 0, 64));
    assert_eq!(
        p,
        Problem::DimTooLarge {
            axis: 1,
            found: 1 << 63
        }
    );
    // Ragged row.
    let (_, p, _, msg) = malformed(&one("t", &[48, 2], 2, 0, 1024));
    assert_eq!(
        p,
        Problem::RaggedRow {
            ty: GgmlType::Q4_0,
            ne0: 48,
            block: 32
        }
    );
    assert!(msg.contains("48") && msg.contains("32"), "{msg}");
    // Element count and byte size overflow.
    for dims in [
        &[1u64 << 32, 1 << 32][..],
        &[1 << 62, 2],
        &[1 << 40, 1 << 10, 1 << 10, 1 << 10],
    ] {
        let (_, p, _, _) = malformed(&one("t", dims, 0, 0, 64));
        assert!(matches!(p, Problem::SizeOverflow { .. }), "{dims:?}: {p:?}");
    }
    // Misaligned offset, data past the end, offset overflow.
    let (loc, p, _, _) = malformed(&one("t", &[2], 0, 8, 64));
    assert_eq!(
        (loc, p),
        (
            loc_t.clone(),
            Problem::MisalignedOffset {
                found: 8,
                alignment: 32
            }
        )
    );
    let (_, p, _, _) = malformed(&one("t", &[16], 0, 32, 64));
    assert!(
        matches!(
            p,
            Problem::DataOutOfRange {
                offset: 32,
                size: 64,
                ..
            }
        ),
        "{p:?}"
    );
    let (_, p, _, _) = malformed(&one("t", &[8], 0, u64::MAX - 31, 64));
    assert!(matches!(p, Problem::DataOutOfRange { .. }), "{p:?}");
    // Zero-element tensors are fine, even at the very end of the file.
    let h = GgufHeader::parse(&one("t", &[0, 5], 2, 0, 0)).expect("empty tensor");
    assert_eq!((h.tensors[0].size, h.tensors[0].n_elements()), (0, 0));
    // No dimensions: one element.
    let h = GgufHeader::parse(&one("t", &[], 0, 0, 4)).expect("scalar");
    assert_eq!((h.tensors[0].size, h.tensors[0].n_elements()), (4, 1));
    // Duplicate names.
    let mut b = B::header(3, 2, 0);
    b.tensor_info("t", &[8], 0, 0)
        .tensor_info("t", &[8], 0, 32)
        .pad(32)
        .raw(&[0; 64]);
    let (loc, p, _, _) = malformed(&b.0);
    assert_eq!(
        loc,
        Location::Tensor {
            index: 1,
            name: Some("t".into())
        }
    );
    assert_eq!(p, Problem::DuplicateTensor { first_index: 0 });
}
