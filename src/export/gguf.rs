//! Tuned GGUF: the tuner's integer codes and scales written as llama.cpp blocks, the rest of the
//! file exactly as `quantize --iters 0` (llama-quantize) writes it.
//!
//! The legacy types are one symmetric full-range group of 32 weights per block, which is the
//! tuner's `int_sym` scheme with group 32 (as in the reference's `GGUF_SCHEME_FACTS`):
//!
//! | type | scheme | block |
//! |---|---|---|
//! | Q4_0 | 4-bit sym, g32 | f16 d, 16 bytes: byte j = q[j] \| q[j+16] << 4, w = d·(q − 8) |
//! | Q5_0 | 5-bit sym, g32 | f16 d, u32 high bits (bit j of q[j]), 16 bytes of low nibbles as Q4_0, w = d·(q − 16) |
//! | Q8_0 | 8-bit sym, g32 | f16 d, 32 × i8, w = d·q |
//!
//! The tuner's code for a symmetric b-bit weight is `q + 2^(b−1)`, which is exactly the unsigned
//! nibble llama.cpp stores, and its scales are already rounded to f16, so packing is lossless: the
//! GGUF dequantizes to the very weights the tuner's last block pass used.
//!
//! Which tensors take tuned blocks is decided by the mixture's plan: a block linear whose planned
//! type is the tuned type. Everything else (embeddings, the output head, tensors a mixture gives
//! another type) is quantized from float by llama.cpp's rules, as the reference does for GGUF
//! (embedding and head by RTN).

use crate::quantize::gguf::{quantize_to_gguf, Progress, QuantizeOptions, Summary};
use crate::quantize::mixture::{Mixture, PlanOptions};
use crate::tuner::block::Lin;
use crate::tuner::qdq::{IntScheme, SuperQuant};
use crate::tuner::run::TunedLinear;
use anyhow::{bail, Context, Result};
use autoround_kernels::quantize::{fp32_to_fp16, pack_k_block, KBlock};
use autoround_kernels::GgmlType;
use std::collections::HashMap;
use std::path::Path;

/// The tuning scheme whose codes and scales a GGUF type stores unchanged (the reference's
/// `GGUF_SCHEME_FACTS`), for the types tuned output supports.
pub fn tuned_scheme(ty: GgmlType) -> Option<IntScheme> {
    let dq = |bits, groups| Some(SuperQuant { bits, groups });
    let (bits, group_size, sym, dq) = match ty {
        GgmlType::Q4_0 => (4, 32, true, None),
        GgmlType::Q5_0 => (5, 32, true, None),
        GgmlType::Q8_0 => (8, 32, true, None),
        GgmlType::Q2_K => (2, 16, false, dq(4, 16)),
        GgmlType::Q3_K => (3, 16, true, dq(6, 16)),
        GgmlType::Q4_K => (4, 32, false, dq(6, 8)),
        GgmlType::Q5_K => (5, 32, false, dq(6, 8)),
        GgmlType::Q6_K => (6, 16, true, dq(8, 16)),
        _ => return None,
    };
    Some(IntScheme {
        bits,
        group_size,
        sym,
        dq,
    })
}

/// The type a mixture gives the block linears (llama.cpp's base type of the file type).
pub fn mixture_base_type(m: Mixture) -> Option<GgmlType> {
    Some(match m {
        Mixture::Q4_0 => GgmlType::Q4_0,
        Mixture::Q5_0 => GgmlType::Q5_0,
        Mixture::Q8_0 => GgmlType::Q8_0,
        Mixture::Q4_1 => GgmlType::Q4_1,
        Mixture::Q5_1 => GgmlType::Q5_1,
        Mixture::Q2_K | Mixture::Q2_K_S => GgmlType::Q2_K,
        Mixture::Q3_K_S | Mixture::Q3_K_M | Mixture::Q3_K_L => GgmlType::Q3_K,
        Mixture::Q4_K_S | Mixture::Q4_K_M => GgmlType::Q4_K,
        Mixture::Q5_K_S | Mixture::Q5_K_M => GgmlType::Q5_K,
        Mixture::Q6_K => GgmlType::Q6_K,
        Mixture::F16 | Mixture::BF16 | Mixture::F32 => return None,
    })
}

/// llama.cpp's blocks of `ty` for a tuned layer, rows in the layer's (Hugging Face) order.
pub fn pack_tuned(t: &TunedLinear, ty: GgmlType) -> Result<Vec<u8>> {
    let want = tuned_scheme(ty).with_context(|| format!("no tuned packing for {}", ty.name()))?;
    let bs = ty.block_size();
    if t.scheme != want || t.gs != want.group_size || t.cols % bs != 0 {
        bail!(
            "blk.{}.{}: tuned as {}-bit {} group {} over {} columns, but {} stores {}-bit {} groups of {} in blocks of {}",
            t.block,
            t.lin.gguf_stem(),
            t.scheme.bits,
            if t.scheme.sym { "sym" } else { "asym" },
            t.gs,
            t.cols,
            ty.name(),
            want.bits,
            if want.sym { "symmetric" } else { "asymmetric" },
            want.group_size,
            bs
        );
    }
    let nb = t.cols / bs;
    let mut out = vec![0u8; t.rows * nb * ty.type_size()];
    let mut blocks = out.chunks_exact_mut(ty.type_size());
    if let Some(sq) = want.dq {
        // K-quants: the group scales (and mins) as integers of the super-block's d (and dmin)
        let subs = bs / want.group_size;
        debug_assert_eq!(subs, sq.groups);
        let level = |x: f32, d: f32| if d == 0.0 { 0 } else { (x / d).round() as i32 };
        let (lo, hi) = if want.sym {
            let h = 1i32 << (sq.bits - 1);
            (-h, h - 1)
        } else {
            (0, (1i32 << sq.bits) - 1)
        };
        let mut scales = vec![0i32; subs];
        let mut mins = vec![0i32; if want.sym { 0 } else { subs }];
        for sb in 0..t.rows * nb {
            let d = t.d[sb];
            for j in 0..subs {
                scales[j] = level(t.scale[sb * subs + j], d).clamp(lo, hi);
                if !want.sym {
                    mins[j] = level(t.zp[sb * subs + j], t.dmin[sb]).clamp(lo, hi);
                }
            }
            let kb = KBlock {
                levels: &t.codes[sb * bs..(sb + 1) * bs],
                scales: &scales,
                mins: &mins,
                d,
                dmin: t.dmin.get(sb).copied().unwrap_or(0.0),
            };
            pack_k_block(ty, &kb, blocks.next().expect("sized"));
        }
        return Ok(out);
    }
    for r in 0..t.rows {
        for b in 0..nb {
            let y = blocks.next().expect("sized");
            let d = fp32_to_fp16(t.scale[r * nb + b]);
            y[..2].copy_from_slice(&d.to_le_bytes());
            let q = &t.codes[r * t.cols + b * 32..r * t.cols + (b + 1) * 32];
            match ty {
                GgmlType::Q4_0 => {
                    for j in 0..16 {
                        y[2 + j] = q[j] | (q[j + 16] << 4);
                    }
                }
                GgmlType::Q5_0 => {
                    let qh = (0..32).fold(0u32, |h, j| h | (u32::from(q[j] >> 4) << j));
                    y[2..6].copy_from_slice(&qh.to_le_bytes());
                    for j in 0..16 {
                        y[6 + j] = (q[j] & 15) | ((q[j + 16] & 15) << 4);
                    }
                }
                GgmlType::Q8_0 => {
                    for (o, &c) in y[2..].iter_mut().zip(q) {
                        *o = (c as i32 - 128) as i8 as u8;
                    }
                }
                _ => unreachable!("tuned_scheme admits these three"),
            }
        }
    }
    Ok(out)
}

/// Write `out` from the Hugging Face folder `model_dir` with `mixture`'s types, the tensors of
/// `tuned` as their tuned blocks. `heads` is `(n_head, n_head_kv)`, for llama.cpp's row order of
/// the Q and K projections.
pub fn write_tuned_gguf(
    model_dir: &Path,
    tuned: &[TunedLinear],
    mixture: Mixture,
    heads: (usize, usize),
    out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Summary> {
    let src = crate::convert::open_hf_source(model_dir)
        .with_context(|| format!("opening the Hugging Face folder {}", model_dir.display()))?;
    // a tuned LM head is for the other formats: the mixture quantizes output.weight itself
    let by_name: HashMap<String, &TunedLinear> = tuned
        .iter()
        .filter(|t| t.lin != Lin::Head)
        .map(|t| (format!("blk.{}.{}.weight", t.block, t.lin.gguf_stem()), t))
        .collect();
    let packed = |name: &str, ty: GgmlType| -> Option<Result<Vec<u8>>> {
        let t = by_name.get(name)?;
        tuned_scheme(ty)?;
        Some(pack_tuned(t, ty).map(|bytes| {
            let h = match t.lin {
                Lin::Q => heads.0,
                Lin::K => heads.1,
                _ => return bytes,
            };
            let row_bytes = bytes.len() / t.rows;
            crate::convert::permute_rows(&bytes, t.rows, row_bytes, h)
        }))
    };
    let opts = QuantizeOptions {
        mixture,
        plan: PlanOptions::default(),
        imatrix: None,
        cancel: None,
        packed: Some(&packed),
    };
    quantize_to_gguf(&*src, out, &opts, progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoround_kernels::reference;

    /// Packed blocks dequantize (with the reference dequantizer of each type, checked against
    /// llama.cpp elsewhere) to exactly the weights the tuner computed with: `scale · (code −
    /// 2^(b−1))`, and for the asymmetric K-quants `scale · code − min`, the scales and mins
    /// being integers of the super-block's f16 `d` and `dmin`.
    #[test]
    fn packed_blocks_dequantize_to_the_tuned_weights() {
        let mut rng = crate::tuner::calib::SplitMix64(7);
        let f16 = |x: f32| half::f16::from_f32(x).to_f32();
        let signed =
            |rng: &mut crate::tuner::calib::SplitMix64, n: u64| rng.below(2 * n) as f32 - n as f32;
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
        ] {
            let s = tuned_scheme(ty).unwrap();
            let (rows, cols) = (3, 512);
            let ng = rows * cols / s.group_size;
            let levels = 1u64 << s.bits;
            let mut t = TunedLinear {
                block: 0,
                lin: Lin::Up,
                rows,
                cols,
                scheme: s,
                gs: s.group_size,
                scale: Vec::new(),
                zp: Vec::new(),
                codes: (0..rows * cols).map(|_| rng.below(levels) as u8).collect(),
                d: Vec::new(),
                dmin: Vec::new(),
            };
            match s.dq {
                None => {
                    t.scale = (0..ng)
                        .map(|i| f16(signed(&mut rng, 500) * 1e-4 + i as f32 * 1e-7))
                        .collect();
                }
                Some(q) => {
                    let n_sb = ng / q.groups;
                    t.d = (0..n_sb)
                        .map(|_| f16(signed(&mut rng, 1000).abs() * 1e-6 + 1e-6))
                        .collect();
                    let top = 1u64 << (q.bits - 1);
                    for gi in 0..ng {
                        let d = t.d[gi / q.groups];
                        let k = if s.sym {
                            signed(&mut rng, top)
                        } else {
                            rng.below(2 * top) as f32
                        };
                        t.scale.push(k * d);
                    }
                    if !s.sym {
                        t.dmin = (0..n_sb)
                            .map(|_| f16(signed(&mut rng, 1000).abs() * 1e-6))
                            .collect();
                        for gi in 0..ng {
                            t.zp.push(rng.below(2 * top) as f32 * t.dmin[gi / q.groups]);
                        }
                    }
                }
            }
            let bytes = pack_tuned(&t, ty).unwrap();
            assert_eq!(bytes.len(), rows * cols / ty.block_size() * ty.type_size());
            let mut w = vec![0f32; rows * cols];
            reference::dequantize_row(ty, &bytes, &mut w).unwrap();
            assert_eq!(w, t.dequantize(), "{}", ty.name());
        }
    }

    #[test]
    fn a_scheme_the_type_cannot_hold_is_refused() {
        let t = TunedLinear {
            block: 2,
            lin: Lin::Q,
            rows: 1,
            cols: 64,
            scheme: IntScheme {
                bits: 4,
                group_size: 64,
                sym: true,
                dq: None,
            },
            gs: 64,
            scale: vec![1.0],
            zp: Vec::new(),
            codes: vec![8; 64],
            d: Vec::new(),
            dmin: Vec::new(),
        };
        let e = pack_tuned(&t, GgmlType::Q4_0).unwrap_err().to_string();
        assert!(e.contains("blk.2.attn_q") && e.contains("group 64"), "{e}");
    }
}
