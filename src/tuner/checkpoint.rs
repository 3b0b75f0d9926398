//! Resumable tuning: after every block the tuned layers and the loop's state are saved in a
//! checkpoint folder, so a run that is killed (power cut, out of memory, Ctrl-C) goes on from the
//! next block when it is started again with the same settings, and writes the same files an
//! uninterrupted run writes.
//!
//! The folder holds `block-NNNNN.safetensors` (each layer's codes as I8, scales and zero points as
//! F32, for double-quantized K-quant layers also the super scales `d`/`dmin`, its scheme in the
//! metadata) and `state.json` (the settings' fingerprint, the next block,
//! the batch sampler's state and each block's losses). Both are written atomically, the block
//! file first, so `state.json` never names a block that is not on disk.
//!
//! The two activation chains are not stored (for a 7B model at 128 × 2048 tokens they are 8 GiB);
//! on resume they are rebuilt by replaying the finished blocks forward ([`Chains::replay`]), which
//! costs two forward passes per block against the hundreds of a tuned block.
//!
//! [`Chains::replay`]: super::run::Chains::replay

use super::block::Lin;
use super::qdq::{IntScheme, SuperQuant};
use super::run::{Chains, TunedLinear};
use super::signround::TuneStats;
use anyhow::{bail, Context, Result};
use autoround_formats::safetensors::{write_safetensors, SafetensorsModel};
use autoround_kernels::GgmlType;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const VERSION: u64 = 1;

/// One finished block as saved: its losses and time.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockRecord {
    pub stats: TuneStats,
    pub seconds: f64,
}

/// What a checkpoint holds: enough to rebuild the [`Chains`] and go on.
pub struct Resumed {
    pub next_block: usize,
    /// The batch sampler's `(generator, order, position)`.
    pub sampler: (u64, Vec<usize>, usize),
    pub layers: Vec<TunedLinear>,
    pub blocks: Vec<BlockRecord>,
}

/// A checkpoint folder bound to one run's settings.
pub struct Checkpoint {
    dir: PathBuf,
    fingerprint: String,
    blocks: Vec<BlockRecord>,
}

/// A run that stops before its first block is saved leaves no empty checkpoint folder behind
/// (`remove_dir` removes only an empty one).
impl Drop for Checkpoint {
    fn drop(&mut self) {
        if self.blocks.is_empty() {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// A short hash (FNV-1a, 64 bits) for folder names and token fingerprints.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn block_file(dir: &Path, b: usize) -> PathBuf {
    dir.join(format!("block-{b:05}.safetensors"))
}

/// Write `body` to `path` through a temporary file, fsync, rename.
fn write_atomic(path: &Path, body: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    crate::export::write_synced(&tmp, body)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

impl Checkpoint {
    /// Open (or create) the checkpoint at `dir` for a run whose settings are summed up by
    /// `fingerprint`. A folder left by a run with other settings is an error that says how the
    /// settings differ; an unreadable one is an error too (nothing is deleted behind the user's
    /// back).
    pub fn open(dir: &Path, fingerprint: &str) -> Result<(Checkpoint, Option<Resumed>)> {
        let state_path = dir.join("state.json");
        let mut ck = Checkpoint {
            dir: dir.to_path_buf(),
            fingerprint: fingerprint.to_string(),
            blocks: Vec::new(),
        };
        if !state_path.is_file() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the checkpoint folder {}", dir.display()))?;
            return Ok((ck, None));
        }
        let bad = |what: String| {
            anyhow::anyhow!(
                "the checkpoint {} is unreadable ({what}); remove the folder to start over",
                dir.display()
            )
        };
        let state: Value = serde_json::from_slice(
            &std::fs::read(&state_path)
                .with_context(|| format!("reading {}", state_path.display()))?,
        )
        .map_err(|e| bad(format!("state.json: {e}")))?;
        if state["version"].as_u64() != Some(VERSION) {
            return Err(bad(format!("version {}", state["version"])));
        }
        let theirs = state["fingerprint"].as_str().unwrap_or("");
        if theirs != fingerprint {
            let differ: Vec<String> = theirs
                .split(';')
                .zip(fingerprint.split(';'))
                .filter(|(a, b)| a != b)
                .map(|(a, b)| format!("{a} then, {b} now"))
                .collect();
            bail!(
                "the checkpoint {} was made with other settings ({}); rerun with those settings to resume, or remove the folder to start over",
                dir.display(),
                differ.join(", ")
            );
        }
        let next_block = state["next_block"]
            .as_u64()
            .ok_or_else(|| bad("next_block".into()))? as usize;
        let s = &state["sampler"];
        let sampler = (
            s["rng"].as_u64().ok_or_else(|| bad("sampler.rng".into()))?,
            s["indices"]
                .as_array()
                .ok_or_else(|| bad("sampler.indices".into()))?
                .iter()
                .map(|v| v.as_u64().map(|x| x as usize))
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| bad("sampler.indices".into()))?,
            s["pos"].as_u64().ok_or_else(|| bad("sampler.pos".into()))? as usize,
        );
        for r in state["blocks"]
            .as_array()
            .ok_or_else(|| bad("blocks".into()))?
        {
            let f = |k: &str| r[k].as_f64().ok_or_else(|| bad(format!("blocks.{k}")));
            ck.blocks.push(BlockRecord {
                stats: TuneStats {
                    init_loss: f("init_loss")?,
                    best_loss: f("best_loss")?,
                    best_iter: f("best_iter")? as usize,
                },
                seconds: f("seconds")?,
            });
        }
        if ck.blocks.len() != next_block {
            return Err(bad(format!(
                "{} block records for next block {next_block}",
                ck.blocks.len()
            )));
        }
        let mut layers = Vec::new();
        for b in 0..next_block {
            layers.extend(read_block(&block_file(dir, b), b).map_err(|e| bad(format!("{e:#}")))?);
        }
        let blocks = ck.blocks.clone();
        Ok((
            ck,
            Some(Resumed {
                next_block,
                sampler,
                layers,
                blocks,
            }),
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Save block `block`'s layers, then the state that says the loop goes on from `chains`.
    pub fn save_block(
        &mut self,
        block: usize,
        layers: &[TunedLinear],
        record: BlockRecord,
        chains: &Chains,
    ) -> Result<()> {
        if block != self.blocks.len() || chains.next_block != block + 1 {
            bail!(
                "checkpoint out of step: block {block} after {} saved",
                self.blocks.len()
            );
        }
        write_block(&block_file(&self.dir, block), layers)?;
        self.blocks.push(record);
        let (rng, indices, pos) = chains.sampler.state();
        let state = json!({
            "version": VERSION,
            "fingerprint": self.fingerprint,
            "next_block": chains.next_block,
            "sampler": {"rng": rng, "indices": indices, "pos": pos},
            "blocks": self.blocks.iter().map(|r| json!({
                "init_loss": r.stats.init_loss,
                "best_loss": r.stats.best_loss,
                "best_iter": r.stats.best_iter,
                "seconds": r.seconds,
            })).collect::<Vec<_>>(),
        });
        write_atomic(
            &self.dir.join("state.json"),
            serde_json::to_string_pretty(&state)?.as_bytes(),
        )
    }

    /// The run's files are written: the checkpoint is no longer needed.
    pub fn remove(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("removing the checkpoint {}", self.dir.display()))
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write_block(path: &Path, layers: &[TunedLinear]) -> Result<()> {
    let mut bufs: Vec<(String, GgmlType, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut meta = HashMap::new();
    for l in layers {
        let m = l.lin.hf_module();
        let ng = l.n_groups();
        meta.insert(
            m.to_string(),
            json!({
                "bits": l.scheme.bits,
                "group_size": l.scheme.group_size,
                "sym": l.scheme.sym,
                "gs": l.gs,
                "super_bits": l.scheme.dq.map(|d| d.bits),
                "super_groups": l.scheme.dq.map(|d| d.groups),
            })
            .to_string(),
        );
        bufs.push((
            format!("{m}.codes"),
            GgmlType::I8,
            vec![l.rows, l.cols],
            l.codes.clone(),
        ));
        bufs.push((
            format!("{m}.scale"),
            GgmlType::F32,
            vec![l.rows, ng],
            f32_bytes(&l.scale),
        ));
        if !l.scheme.sym {
            bufs.push((
                format!("{m}.zp"),
                GgmlType::F32,
                vec![l.rows, ng],
                f32_bytes(&l.zp),
            ));
        }
        for (name, v) in [("d", &l.d), ("dmin", &l.dmin)] {
            if !v.is_empty() {
                bufs.push((
                    format!("{m}.{name}"),
                    GgmlType::F32,
                    vec![v.len()],
                    f32_bytes(v),
                ));
            }
        }
    }
    let tensors: Vec<(String, GgmlType, Vec<usize>, &[u8])> = bufs
        .iter()
        .map(|(n, t, s, d)| (n.clone(), *t, s.clone(), d.as_slice()))
        .collect();
    write_safetensors(path, &tensors, Some(meta))
        .with_context(|| format!("writing {}", path.display()))
}

fn read_block(path: &Path, block: usize) -> Result<Vec<TunedLinear>> {
    let st = SafetensorsModel::open_file(path)?;
    let mut out = Vec::new();
    for lin in Lin::ALL {
        let m = lin.hf_module();
        let Some(meta) = st.metadata().get(m) else {
            continue;
        };
        let meta: Value = serde_json::from_str(meta)?;
        let num = |k: &str| {
            meta[k]
                .as_u64()
                .with_context(|| format!("{}: {m}: no {k}", path.display()))
        };
        let scheme = IntScheme {
            bits: num("bits")? as u32,
            group_size: num("group_size")? as usize,
            sym: meta["sym"].as_bool().context("sym")?,
            dq: match (meta["super_bits"].as_u64(), meta["super_groups"].as_u64()) {
                (Some(bits), Some(groups)) => Some(SuperQuant {
                    bits: bits as u32,
                    groups: groups as usize,
                }),
                _ => None,
            },
        };
        let codes = st.tensor(&format!("{m}.codes"))?;
        let [rows, cols] = codes.shape[..] else {
            bail!("{}: {m}.codes is not 2-D", path.display());
        };
        let f32s = |name: String| -> Result<Vec<f32>> {
            let t = st.tensor(&name)?;
            Ok(t.data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let gs = num("gs")? as usize;
        let l = TunedLinear {
            block,
            lin,
            rows,
            cols,
            scheme,
            gs,
            scale: f32s(format!("{m}.scale"))?,
            zp: if scheme.sym {
                Vec::new()
            } else {
                f32s(format!("{m}.zp"))?
            },
            codes: codes.data.to_vec(),
            d: if scheme.dq.is_some() {
                f32s(format!("{m}.d"))?
            } else {
                Vec::new()
            },
            dmin: if scheme.dq.is_some() && !scheme.sym {
                f32s(format!("{m}.dmin"))?
            } else {
                Vec::new()
            },
        };
        if gs == 0
            || l.scale.len() != rows * l.n_groups()
            || (!scheme.sym && l.zp.len() != l.scale.len())
            || scheme.dq.is_some_and(|q| {
                let nsb = l.scale.len() / q.groups.max(1);
                l.d.len() != nsb || (!scheme.sym && l.dmin.len() != nsb)
            })
        {
            bail!("{}: {m}: scales do not match the shape", path.display());
        }
        out.push(l);
    }
    Ok(out)
}
