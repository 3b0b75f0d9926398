//! `autoround-cpu inspect FILE`: metadata and tensor table of a GGUF or safetensors file.

use super::args::InspectArgs;
use anyhow::Context;
use autoround_formats::gguf::{GgufFile, GgufValue};
use autoround_formats::safetensors::SafetensorsModel;

fn show(v: &GgufValue, full: bool) -> String {
    match v {
        GgufValue::String(s) => {
            let s = format!("{s:?}");
            if !full && s.len() > 80 {
                format!(
                    "{}…\" ({} bytes)",
                    &s[..s
                        .char_indices()
                        .take_while(|(i, _)| *i < 76)
                        .last()
                        .map_or(0, |x| x.0)],
                    s.len()
                )
            } else {
                s
            }
        }
        GgufValue::Array(t, items) => {
            let shown: Vec<String> = items
                .iter()
                .take(if full { usize::MAX } else { 5 })
                .map(|x| show(x, full))
                .collect();
            let more = if items.len() > shown.len() {
                ", …"
            } else {
                ""
            };
            format!("[{}{}] ({} × {:?})", shown.join(", "), more, items.len(), t)
        }
        other => format!("{other:?}")
            .split_once('(')
            .map_or(String::new(), |x| x.1.trim_end_matches(')').to_string()),
    }
}

pub fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let is_st = a.file.extension().is_some_and(|e| e == "safetensors");
    if is_st {
        let st = SafetensorsModel::open_file(&a.file)
            .with_context(|| format!("reading {}", a.file.display()))?;
        println!("{}: safetensors", a.file.display());
        let mut names: Vec<&str> = st.names().into_iter().collect();
        names.sort();
        println!("\n{:>5}  {:<50} {:<6} shape", "#", "tensor", "dtype");
        for (i, n) in names.iter().enumerate() {
            let t = st.tensor(n)?;
            println!(
                "{:>5}  {:<50} {:<6} {:?}",
                i,
                n,
                t.dtype.to_string(),
                t.shape
            );
        }
        return Ok(());
    }
    let f = GgufFile::open(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let h = f.header();
    println!(
        "{}: GGUF v{}, {} metadata keys, {} tensors, alignment {}, data at offset {}",
        a.file.display(),
        h.version,
        h.metadata.len(),
        h.tensors.len(),
        h.alignment,
        h.data_offset
    );
    println!("\n{:>5}  {:<45} {:<8} value", "#", "key", "type");
    for (i, (k, v)) in h.metadata.iter().enumerate() {
        println!(
            "{:>5}  {:<45} {:<8} {}",
            i,
            k,
            format!("{:?}", v.value_type()),
            show(v, a.full)
        );
    }
    println!(
        "\n{:>5}  {:<40} {:<8} {:<22} {:>12} {:>12}",
        "#", "tensor", "type", "shape (ne0, ne1, ...)", "offset", "bytes"
    );
    let mut total = 0u64;
    for (i, t) in h.tensors.iter().enumerate() {
        total += t.size;
        println!(
            "{:>5}  {:<40} {:<8} {:<22} {:>12} {:>12}",
            i,
            t.name,
            t.ty.to_string(),
            format!("{:?}", t.dims),
            t.offset,
            t.size
        );
    }
    let n: u64 = h.tensors.iter().map(|t| t.n_elements()).sum();
    println!(
        "\n{} parameters, {:.2} MiB of tensor data, {:.3} bits per weight",
        n,
        total as f64 / 1048576.0,
        total as f64 * 8.0 / n.max(1) as f64
    );
    Ok(())
}
