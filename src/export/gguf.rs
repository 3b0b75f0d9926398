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
use crate::tuner::qdq::IntScheme;
use crate::tuner::run::TunedLinear;
use anyhow::{bail, Context, Result};
use autoround_kernels::quantize::fp32_to_fp16;
use autoround_kernels::GgmlType;
use std::collections::HashMap;
use std::path::Path;

/// The tuning scheme whose codes a GGUF type stores unchanged, for the types tuned output
/// supports.
pub fn tuned_scheme(ty: GgmlType) -> Option<IntScheme> {
    let bits = match ty {
        GgmlType::Q4_0 => 4,
        GgmlType::Q5_0 => 5,
        GgmlType::Q8_0 => 8,
        _ => return None,
    };
    Some(IntScheme {
        bits,
        group_size: 32,
        sym: true,
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
    if t.scheme != want || t.gs != 32 || t.cols % 32 != 0 {
        bail!(
            "blk.{}.{}: tuned as {}-bit {} group {} over {} columns, but {} stores {}-bit symmetric groups of 32",
            t.block,
            t.lin.gguf_stem(),
            t.scheme.bits,
            if t.scheme.sym { "sym" } else { "asym" },
            t.gs,
            t.cols,
            ty.name(),
            want.bits
        );
    }
    let nb = t.cols / 32;
    let mut out = Vec::with_capacity(t.rows * nb * ty.type_size());
    for r in 0..t.rows {
        for b in 0..nb {
            let d = fp32_to_fp16(t.scale[r * nb + b]);
            out.extend_from_slice(&d.to_le_bytes());
            let q = &t.codes[r * t.cols + b * 32..r * t.cols + (b + 1) * 32];
            match ty {
                GgmlType::Q4_0 => {
                    out.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
                }
                GgmlType::Q5_0 => {
                    let qh = (0..32).fold(0u32, |h, j| h | (u32::from(q[j] >> 4) << j));
                    out.extend_from_slice(&qh.to_le_bytes());
                    out.extend((0..16).map(|j| (q[j] & 15) | ((q[j + 16] & 15) << 4)));
                }
                GgmlType::Q8_0 => out.extend(q.iter().map(|&c| (c as i32 - 128) as i8 as u8)),
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
    let by_name: HashMap<String, &TunedLinear> = tuned
        .iter()
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

    /// Packed blocks dequantize (with the reference dequantizer of each type) to
    /// `scale · (code − 2^(b−1))`, the weights the tuner computed with.
    #[test]
    fn packed_blocks_dequantize_to_the_tuned_weights() {
        let mut rng = crate::tuner::calib::SplitMix64(7);
        for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
            let s = tuned_scheme(ty).unwrap();
            let (rows, cols) = (3, 96);
            let levels = 1u64 << s.bits;
            let t = TunedLinear {
                block: 0,
                lin: Lin::Up,
                rows,
                cols,
                scheme: s,
                gs: 32,
                scale: (0..rows * 3)
                    .map(|i| {
                        let x = (rng.below(1000) as f32 - 500.0) * 1e-4
                            + if i == 0 { 0.0 } else { 1e-6 };
                        half::f16::from_f32(x).to_f32()
                    })
                    .collect(),
                zp: Vec::new(),
                codes: (0..rows * cols).map(|_| rng.below(levels) as u8).collect(),
            };
            let bytes = pack_tuned(&t, ty).unwrap();
            assert_eq!(bytes.len(), rows * 3 * ty.type_size());
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
            },
            gs: 64,
            scale: vec![1.0],
            zp: Vec::new(),
            codes: vec![8; 64],
        };
        let e = pack_tuned(&t, GgmlType::Q4_0).unwrap_err().to_string();
        assert!(e.contains("blk.2.attn_q") && e.contains("group 64"), "{e}");
    }
}
