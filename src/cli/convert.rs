//! `autoround-cpu convert`: a Hugging Face folder to GGUF (`--to gguf`), or a GGUF file to a
//! Hugging Face folder (`--to hf`). See [`crate::convert`].

use super::args::ConvertArgs;
use crate::convert::{gguf_to_hf, HfDtype, HfOptions, HfSource, OutType};
use crate::quantize::source::WeightSource;
use anyhow::{anyhow, bail, Context};
use std::io::{IsTerminal, Write};
use std::time::Instant;

pub fn convert(a: ConvertArgs) -> anyhow::Result<()> {
    if !a.model.exists() {
        bail!("{}: not found", a.model.display());
    }
    if a.output.exists() && !a.overwrite {
        bail!(
            "{}: already exists; pass --overwrite to replace it",
            a.output.display()
        );
    }
    if let (Ok(i), Ok(o)) = (a.model.canonicalize(), a.output.canonicalize()) {
        if i == o {
            bail!("{}: the output is the input", a.output.display());
        }
    }
    let start = Instant::now();
    match a.to.to_ascii_lowercase().as_str() {
        "gguf" => {
            let outtype: OutType = a
                .outtype
                .parse()
                .map_err(|e: String| anyhow!("--outtype: {e}"))?;
            if a.output.is_dir() {
                bail!(
                    "{}: is a folder; --to gguf writes a file",
                    a.output.display()
                );
            }
            let src = HfSource::open(&a.model, outtype)?;
            let n = src.tensors().len();
            eprintln!(
                "converting {} ({}, {} tensors) to {} GGUF",
                a.model.display(),
                src.arch(),
                n,
                src.out_type().name()
            );
            let tty = std::io::stderr().is_terminal();
            src.write_gguf(&a.output, &mut |i, n| {
                if tty {
                    eprint!("\r  tensor {}/{n}", i + 1);
                    let _ = std::io::stderr().flush();
                }
            })
            .with_context(|| format!("converting {}", a.model.display()))?;
            if tty {
                eprintln!();
            }
            let size = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
            eprintln!(
                "wrote {} ({:.1} MiB) in {:.1} s",
                a.output.display(),
                size as f64 / (1 << 20) as f64,
                start.elapsed().as_secs_f64()
            );
        }
        "hf" => {
            let dtype: HfDtype = a
                .dtype
                .parse()
                .map_err(|e: String| anyhow!("--dtype: {e}"))?;
            if a.max_shard_mib == 0 {
                bail!("--max-shard-mib must be at least 1");
            }
            let opts = HfOptions {
                dtype,
                max_shard_bytes: a.max_shard_mib << 20,
                overwrite: a.overwrite,
            };
            if a.model.is_dir() {
                bail!(
                    "--to hf reads a GGUF file, and {} is a folder; to dequantize an auto_round/GPTQ/AWQ folder, convert it to an F32 GGUF (--to gguf --outtype f32) first",
                    a.model.display()
                );
            }
            let s = gguf_to_hf(&a.model, &a.output, &opts)?;
            eprintln!(
                "wrote {} ({}: {} tensors, {}, {} shard(s), {:.1} MiB; tokenizer: {}) in {:.1} s",
                a.output.display(),
                s.architecture,
                s.tensors,
                s.torch_dtype,
                s.shards,
                s.bytes as f64 / (1 << 20) as f64,
                s.tokenizer_files.join(", "),
                start.elapsed().as_secs_f64()
            );
        }
        other => bail!("--to {other}: expected gguf or hf"),
    }
    Ok(())
}
