//! A streaming GGUF writer: the same layout as [`GgufWriter`](autoround_formats::gguf::GgufWriter)
//! (header, metadata, tensor infos, padding, each tensor's data padded to the alignment), but the
//! tensors' bytes are asked for one at a time while writing, so converting a model never holds
//! more than one converted tensor in memory. Written to `<path>.tmp.<pid>`, fsynced, then renamed
//! over `path`; on any error the temporary file is removed and `path` is untouched.

use crate::quantize::mixture::TensorInfo;
use anyhow::{bail, Context, Result};
use autoround_formats::gguf::GgufValue;
use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => buf.push(*x),
        GgufValue::I8(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => buf.push(u8::from(*x)),
        GgufValue::String(s) => put_str(buf, s),
        GgufValue::Array(ty, items) => {
            buf.extend_from_slice(&ty.id().to_le_bytes());
            buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                put_value(buf, it);
            }
        }
        GgufValue::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
    }
}

fn tensor_size(t: &TensorInfo) -> Result<u64> {
    let ne0 = *t.ne.first().unwrap_or(&1);
    let bs = t.ty.block_size() as u64;
    if ne0 % bs != 0 {
        bail!(
            "tensor '{}': row of {ne0} is not whole {} blocks",
            t.name,
            t.ty.name()
        );
    }
    let rows: u64 = t.ne.iter().skip(1).product();
    Ok(ne0 / bs * t.ty.type_size() as u64 * rows)
}

fn align(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Write a GGUF v3 file. `data(i)` returns tensor `i`'s bytes; each must have the tensor's size.
pub fn write_streaming<'a>(
    path: &Path,
    metadata: &[(String, GgufValue)],
    tensors: &[TensorInfo],
    alignment: u64,
    data: &mut dyn FnMut(usize) -> Result<Cow<'a, [u8]>>,
) -> Result<()> {
    let mut header = Vec::new();
    header.extend_from_slice(b"GGUF");
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut header, k);
        header.extend_from_slice(&v.value_type().id().to_le_bytes());
        put_value(&mut header, v);
    }
    let mut sizes = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for t in tensors {
        if t.name.len() >= 64 {
            bail!(
                "tensor name '{}' is 64 bytes or longer; llama.cpp cannot load it",
                t.name
            );
        }
        put_str(&mut header, &t.name);
        header.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
        for d in &t.ne {
            header.extend_from_slice(&d.to_le_bytes());
        }
        header.extend_from_slice(&t.ty.id().to_le_bytes());
        header.extend_from_slice(&offset.to_le_bytes());
        let size = tensor_size(t)?;
        sizes.push(size);
        offset = align(offset + size, alignment);
    }
    let pad = (align(header.len() as u64, alignment) - header.len() as u64) as usize;
    header.resize(header.len() + pad, 0);

    let tmp = temp_path(path);
    let result = (|| -> Result<()> {
        let f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(&header)?;
        let zeros = vec![0u8; alignment as usize];
        for (i, t) in tensors.iter().enumerate() {
            let bytes = data(i)?;
            if bytes.len() as u64 != sizes[i] {
                bail!(
                    "tensor '{}': {} bytes of data for a size of {}",
                    t.name,
                    bytes.len(),
                    sizes[i]
                );
            }
            w.write_all(&bytes)?;
            let p = (align(sizes[i], alignment) - sizes[i]) as usize;
            w.write_all(&zeros[..p])?;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// `<path>.tmp.<pid>`, beside `path`.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".tmp.{}", std::process::id()));
    PathBuf::from(s)
}
