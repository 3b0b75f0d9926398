//! Scalar reference **weight** quantizers, byte-identical to llama.cpp's
//! `ggml_quantize_chunk` (`ggml/src/ggml-quants.c`, llama.cpp as vendored by
//! llama-cpp-python 0.3.36, commit 0c1e57098).
//!
//! # What is reproduced
//!
//! [`quantize_rows`] writes exactly the bytes `ggml_quantize_chunk(ty, src, dst, 0, nrows,
//! n_per_row, imatrix)` writes, with and without an importance matrix, for Q4_0, Q4_1, Q5_0,
//! Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K. ggml dispatches as follows, and so do we:
//!
//! | type              | `imatrix == NULL`                 | `imatrix != NULL`                       |
//! |-------------------|-----------------------------------|-----------------------------------------|
//! | Q4_0 Q4_1 Q5_0 Q5_1 | `quantize_row_*_ref`            | `quantize_row_*_impl` per row (`sigma2` over the whole row) |
//! | Q8_0              | `quantize_row_q8_0_ref`           | the same (the imatrix is ignored)       |
//! | Q2_K … Q6_K       | `quantize_row_*_ref`              | `quantize_row_*_impl` per row           |
//!
//! (ggml's `_impl` functions for Q3_K–Q6_K also have a branch for NULL weights; `ggml_quantize_chunk`
//! never takes it, so it is not reproduced: our `_impl` functions require the weights.)
//!
//! The imatrix holds one weight per column (`n_per_row` values), shared by every row.
//!
//! # Numerics
//!
//! `ggml-quants.c` is part of `ggml-base`, compiled with `-O3 -std=gnu11` and no `-march`, i.e.
//! plain x86-64 SSE2: every float operation is an IEEE f32 operation in source order, nothing
//! is fused (no FMA) and no sum is reassociated. The Rust here performs the same operations in
//! the same order (`a * b + c` is written as such and never as `mul_add`), including:
//!
//! * `nearest_int` ([`crate::reference`]'s copy): the `x + 1.5·2^23` bit trick, with ggml's range
//!   assert compiled out, so out-of-range inputs give the same garbage as in C;
//! * `GGML_FP32_TO_FP16` / `GGML_FP16_TO_FP32`: ggml's own bit-manipulating converters
//!   ([`fp32_to_fp16`], [`fp16_to_fp32`]), NaN handling included;
//! * C's float→integer conversions as gcc emits them on x86-64 (`cvttss2si`/`cvttps2dq`: NaN and
//!   out-of-range give `INT_MIN`, then the low byte is kept);
//! * integer→`int8_t`/`uint8_t` stores wrap (two's complement truncation).
//!
//! Inputs with NaN or infinities are not part of the tested contract (ggml's
//! `ggml_validate_row_data` rejects such rows in files anyway): a soak run with NaN and ±Inf
//! sprinkled in did match ggml byte for byte, but some results there hang on NaN payloads
//! (`nearest_int(NaN)`), which compilers do not promise to propagate identically.

use crate::reference::check_row;
use crate::{GgmlType, KernelError};

pub mod kquants;
pub mod legacy;
mod search;

pub use kquants::{
    pack_k_block, quantize_q2_k, quantize_q3_k, quantize_q4_k, quantize_q5_k, quantize_q6_k,
    quantize_row_q2_k_impl, quantize_row_q2_k_ref, quantize_row_q3_k_impl, quantize_row_q3_k_ref,
    quantize_row_q4_k_impl, quantize_row_q4_k_ref, quantize_row_q5_k_impl, quantize_row_q5_k_ref,
    quantize_row_q6_k_impl, quantize_row_q6_k_ref, KBlock,
};
pub use legacy::{
    quantize_q4_0, quantize_q4_1, quantize_q5_0, quantize_q5_1, quantize_q8_0,
    quantize_row_q4_0_impl, quantize_row_q4_0_ref, quantize_row_q4_1_impl, quantize_row_q4_1_ref,
    quantize_row_q5_0_impl, quantize_row_q5_0_ref, quantize_row_q5_1_impl, quantize_row_q5_1_ref,
    quantize_row_q8_0_ref,
};

/// Signature shared by the per-type chunk quantizers ([`quantize_q4_0`], ...): rows of
/// `n_per_row` elements from `src`, optional imatrix (`n_per_row` weights), into `dst`.
/// They panic on inconsistent sizes; [`quantize_rows`] checks first.
pub type QuantizeChunkFn =
    fn(src: &[f32], n_per_row: usize, imatrix: Option<&[f32]>, dst: &mut [u8]);

/// The chunk quantizer for `ty` (ggml's `quantize_<type>`), if there is one.
pub fn quantize_chunk_fn(ty: GgmlType) -> Option<QuantizeChunkFn> {
    use GgmlType as T;
    Some(match ty {
        T::Q4_0 => quantize_q4_0,
        T::Q4_1 => quantize_q4_1,
        T::Q5_0 => quantize_q5_0,
        T::Q5_1 => quantize_q5_1,
        T::Q8_0 => quantize_q8_0,
        T::Q2_K => quantize_q2_k,
        T::Q3_K => quantize_q3_k,
        T::Q4_K => quantize_q4_k,
        T::Q5_K => quantize_q5_k,
        T::Q6_K => quantize_q6_k,
        _ => return None,
    })
}

/// Whether [`quantize_rows`] supports `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    quantize_chunk_fn(ty).is_some()
}

/// Quantize `src` (rows of `n_per_row` f32) to type `ty` into `dst`, exactly as
/// `ggml_quantize_chunk(ty, src, dst, 0, src.len() / n_per_row, n_per_row, imatrix)` does.
///
/// `imatrix`, if given, holds `n_per_row` importance weights (one per column). `dst` must be
/// exactly `nrows` rows of `ty`.
///
/// Errors: [`KernelError::Unsupported`] for types without a quantizer here;
/// [`KernelError::RaggedRow`] if `n_per_row` is not a multiple of the block size, or `src.len()`
/// not a multiple of `n_per_row` (reported with `block = n_per_row`); [`KernelError::SourceSize`]
/// if `dst` has the wrong size, or if the imatrix does not hold `n_per_row` values (reported as
/// f32 bytes: `got = 4 * imatrix.len()`, `want = 4 * n_per_row`).
// `%` rather than `is_multiple_of`: the workspace supports Rust 1.80.
#[allow(clippy::manual_is_multiple_of)]
pub fn quantize_rows(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<(), KernelError> {
    let f = quantize_chunk_fn(ty).ok_or(KernelError::Unsupported(ty))?;
    if n_per_row == 0 {
        // No columns: only an empty chunk makes sense.
        return check_row(ty, src.len(), dst.len());
    }
    let block = ty.block_size();
    if n_per_row % block != 0 {
        return Err(KernelError::RaggedRow {
            ty,
            n: n_per_row,
            block,
        });
    }
    if src.len() % n_per_row != 0 {
        return Err(KernelError::RaggedRow {
            ty,
            n: src.len(),
            block: n_per_row,
        });
    }
    check_row(ty, src.len(), dst.len())?;
    if let Some(qw) = imatrix {
        if qw.len() != n_per_row {
            return Err(KernelError::SourceSize {
                ty,
                n: n_per_row,
                got: 4 * qw.len(),
                want: 4 * n_per_row,
            });
        }
    }
    f(src, n_per_row, imatrix, dst);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shared helpers.

/// `GROUP_MAX_EPS` in ggml-quants.c: groups whose largest magnitude is below it are all-zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `GGML_FP32_TO_FP16` as built into `ggml-base` on x86-64 without F16C
/// (`ggml_compute_fp32_to_fp16`, the FP16 library's bit trick): round to nearest even, overflow
/// to infinity, and every NaN becomes `0x7E00` with the input's sign.
#[inline]
pub fn fp32_to_fp16(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xFF00_0000).max(0x7100_0000);
    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    ((sign >> 16)
        | if shl1_w > 0xFF00_0000 {
            0x7E00
        } else {
            nonsign
        }) as u16
}

/// ggml's `GGML_FP16_TO_FP32` (`ggml_compute_fp16_to_fp32`): exact for every finite value.
#[inline]
pub fn fp16_to_fp32(h: u16) -> f32 {
    let w = (h as u32) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);
    let exp_offset = 0xE0u32 << 23;
    let exp_scale = f32::from_bits(0x0780_0000); // 2^-112
    let normalized_value = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;
    let magic_mask = 126u32 << 23;
    let denormalized_value = f32::from_bits((two_w >> 17) | magic_mask) - 0.5;
    let denormalized_cutoff = 1u32 << 27;
    let result = sign
        | if two_w < denormalized_cutoff {
            denormalized_value.to_bits()
        } else {
            normalized_value.to_bits()
        };
    f32::from_bits(result)
}

/// Store `GGML_FP32_TO_FP16(v)` little-endian at `b[off..off + 2]`; returns the f16 bits.
#[inline]
pub(crate) fn put_f16(b: &mut [u8], off: usize, v: f32) -> u16 {
    let h = fp32_to_fp16(v);
    b[off..off + 2].copy_from_slice(&h.to_le_bytes());
    h
}

/// C's `(int)x` for a float as gcc compiles it on x86-64 (`cvttss2si`, `cvttps2dq`): truncation
/// toward zero, and the "integer indefinite" `INT_MIN` for NaN and values outside the i32 range
/// (where Rust's `as` would saturate). ggml's `(int8_t)f` / `(uint8_t)f` casts are this followed
/// by keeping the low byte (checked against the disassembly of `libggml-base.a`).
#[inline(always)]
pub(crate) fn c_f32_to_i32(x: f32) -> i32 {
    if (-2_147_483_648.0..2_147_483_648.0).contains(&x) {
        x as i32
    } else {
        i32::MIN
    }
}

/// Number of rows in a chunk, panicking (typed entry points document it) on inconsistent sizes.
#[track_caller]
#[allow(clippy::manual_is_multiple_of)] // Rust 1.80
pub(crate) fn assert_chunk(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &[u8],
) -> usize {
    crate::reference::assert_row(ty, src.len(), dst.len());
    if n_per_row == 0 {
        assert!(
            src.is_empty(),
            "{ty}: n_per_row = 0 with {} elements",
            src.len()
        );
        return 0;
    }
    assert!(
        n_per_row % ty.block_size() == 0 && src.len() % n_per_row == 0,
        "{ty}: n_per_row {n_per_row} must be a multiple of {} and divide {} elements",
        ty.block_size(),
        src.len()
    );
    if let Some(qw) = imatrix {
        assert_eq!(qw.len(), n_per_row, "{ty}: imatrix length vs n_per_row");
    }
    src.len() / n_per_row
}

/// ggml's `quantize_q*` / `quantize_q*_K` driver: the `_ref` function on the whole chunk without
/// an imatrix, else the `_impl` function row by row.
#[inline(always)]
pub(crate) fn chunk(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
    reference: fn(&[f32], &mut [u8]),
    weighted: fn(&[f32], &[f32], &mut [u8]),
) {
    let nrows = assert_chunk(ty, src, n_per_row, imatrix, dst);
    match imatrix {
        None => reference(src, dst),
        Some(qw) if nrows > 0 => {
            let row_bytes = dst.len() / nrows;
            for (x, y) in src
                .chunks_exact(n_per_row)
                .zip(dst.chunks_exact_mut(row_bytes))
            {
                weighted(x, qw, y);
            }
        }
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_conversions_match_half_for_finite_values() {
        let mut s = 0x1234_5678u32;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let f = f32::from_bits(s);
            if f.is_nan() {
                assert_eq!(fp32_to_fp16(f) & 0x7FFF, 0x7E00);
                continue;
            }
            let h = fp32_to_fp16(f);
            assert_eq!(h, half::f16::from_f32(f).to_bits(), "{f:e}");
            assert_eq!(
                fp16_to_fp32(h).to_bits(),
                half::f16::from_bits(h).to_f32().to_bits()
            );
        }
        for h in 0..=u16::MAX {
            let x = half::f16::from_bits(h);
            if !x.is_nan() {
                assert_eq!(fp16_to_fp32(h).to_bits(), x.to_f32().to_bits(), "{h:#x}");
            }
        }
    }

    #[test]
    fn c_conversion_is_cvtt() {
        assert_eq!(c_f32_to_i32(8.99), 8);
        assert_eq!(c_f32_to_i32(-0.7), 0);
        assert_eq!(c_f32_to_i32(f32::NAN), i32::MIN);
        assert_eq!(c_f32_to_i32(f32::INFINITY), i32::MIN);
        assert_eq!(c_f32_to_i32(3e9), i32::MIN);
        assert_eq!(c_f32_to_i32(-2_147_483_648.0), i32::MIN);
    }

    #[test]
    fn quantize_rows_checks_sizes() {
        let x = vec![0.5f32; 64];
        let mut out = vec![0u8; 36];
        assert!(quantize_rows(GgmlType::Q4_0, &x, 64, None, &mut out).is_ok());
        assert!(quantize_rows(GgmlType::Q4_0, &x, 32, Some(&[1.0; 32]), &mut out).is_ok());
        assert!(matches!(
            quantize_rows(GgmlType::Q4_0, &x, 48, None, &mut out),
            Err(KernelError::RaggedRow { .. })
        ));
        assert!(matches!(
            quantize_rows(GgmlType::Q4_0, &x, 64, Some(&[1.0; 32]), &mut out),
            Err(KernelError::SourceSize { .. })
        ));
        assert!(matches!(
            quantize_rows(GgmlType::Q4_0, &x, 64, None, &mut out[..35]),
            Err(KernelError::SourceSize { .. })
        ));
        assert!(matches!(
            quantize_rows(GgmlType::IQ2_XXS, &x, 64, None, &mut out),
            Err(KernelError::Unsupported(_))
        ));
        assert!(matches!(
            quantize_rows(GgmlType::Q4_K, &x, 64, None, &mut out),
            Err(KernelError::RaggedRow { .. })
        ));
        assert!(quantize_rows(GgmlType::Q4_K, &[], 0, None, &mut []).is_ok());
        assert!(quantize_rows(GgmlType::Q4_K, &[], 256, None, &mut []).is_ok());
    }
}
