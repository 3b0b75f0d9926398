//! The scalar reference: dequantization, activation quantization and dot products, written to
//! be the *specification* every SIMD kernel is tested against.
//!
//! # What "reference" means here
//!
//! * **Dequantization** ([`dequantize_row`]) is bit-exact with ggml's `dequantize_row_*`
//!   (`ggml/src/ggml-quants.c`) and with the numpy dequantization of the Python `gguf` package
//!   (`gguf-py/gguf/quants.py`); `kernels/tests/dequant_vs_gguf_py.rs` checks the latter for every
//!   type gguf-py knows. The evaluation order of every float operation follows ggml (for example
//!   Q4_1 is `q*d + m`, the K-quants compute `d*sc` and `dmin*m` first, Q6_K is `(d*sc)*q`).
//!   Rust never contracts `a*b + c` into a fused multiply-add, and neither does numpy; ggml's
//!   `ggml-base` library (where `dequantize_row_*` lives) is built without `-march=native`, so
//!   on x86-64 it does not fuse either.
//! * **Activation quantization** ([`quantize_row_q8_0`], [`quantize_row_q8_1`],
//!   [`quantize_row_q8_k`], [`quantize_row_to`]) follows `quantize_row_q8_0_ref`,
//!   `quantize_row_q8_1_ref` and `quantize_row_q8_K_ref` from `ggml-quants.c`. (llama.cpp's
//!   AVX2 `quantize_row_q8_0`/`q8_1` round ties to even where the `_ref` versions use `roundf`,
//!   i.e. ties away from zero; they differ only on exact `.5` ties.)
//! * **Dot products** (`vec_dot_*`, [`vec_dot`]) follow the `_generic` versions in
//!   `ggml/src/ggml-cpu/quants.c`: integer sums per (sub-)block exactly as ggml forms them, and
//!   the same float operations in the same order. They are what llama.cpp computes on a CPU
//!   without a SIMD implementation for the type; SIMD kernels (ours and llama.cpp's) reassociate
//!   the float sums and agree only to rounding.
//!
//! # Byte layouts
//!
//! Blocks are parsed from byte slices with explicit little-endian reads (no `unsafe`, no
//! transmutes). Each type's layout is documented on its dequantization function, in
//! [`float`], [`legacy`], [`kquants`] and [`nonlinear`]. "f16" below always means an IEEE
//! binary16 stored little-endian; conversion to f32 is exact.
//!
//! # Entry points
//!
//! The typed functions (`dequantize_row_q4_0`, `vec_dot_q4_k_q8_k`, ...) panic if their
//! buffers do not have the sizes the type requires; the dispatching functions
//! ([`dequantize_row`], [`quantize_row_to`], [`vec_dot`]) check first and return a
//! [`KernelError`] instead.

use crate::{GgmlType, KernelError};

pub mod float;
pub mod kquants;
pub mod legacy;
pub mod math;
pub mod nonlinear;

pub use float::{
    dequantize_row_bf16, dequantize_row_f16, dequantize_row_f32, fp32_to_bf16_bits,
    quantize_row_bf16, quantize_row_f16, quantize_row_f32, vec_dot_bf16, vec_dot_f16, vec_dot_f32,
};
pub use kquants::{
    dequantize_row_q2_k, dequantize_row_q3_k, dequantize_row_q4_k, dequantize_row_q5_k,
    dequantize_row_q6_k, dequantize_row_q8_k, quantize_row_q8_k, vec_dot_q2_k_q8_k,
    vec_dot_q3_k_q8_k, vec_dot_q4_k_q8_k, vec_dot_q5_k_q8_k, vec_dot_q6_k_q8_k,
};
pub use legacy::{
    dequantize_row_q4_0, dequantize_row_q4_1, dequantize_row_q5_0, dequantize_row_q5_1,
    dequantize_row_q8_0, dequantize_row_q8_1, quantize_row_q8_0, quantize_row_q8_1,
    vec_dot_q4_0_q8_0, vec_dot_q4_1_q8_1, vec_dot_q5_0_q8_0, vec_dot_q5_1_q8_1, vec_dot_q8_0_q8_0,
};
pub use nonlinear::{
    dequantize_row_iq4_nl, dequantize_row_iq4_xs, dequantize_row_mxfp4, vec_dot_iq4_nl_q8_0,
    vec_dot_iq4_xs_q8_k, vec_dot_mxfp4_q8_0,
};

/// Signature shared by the typed dequantization functions.
pub type DequantizeFn = fn(src: &[u8], dst: &mut [f32]);
/// Signature shared by the typed dot products: `n` elements, weight row bytes `x`, activation
/// row bytes `y` (in the weight type's [`vec_dot_type`]).
pub type VecDotFn = fn(n: usize, x: &[u8], y: &[u8]) -> f32;
/// Signature shared by the typed activation quantizers.
pub type QuantizeFn = fn(x: &[f32], out: &mut [u8]);

/// The typed dequantization function for `ty`, if the reference has one.
pub fn dequantize_fn(ty: GgmlType) -> Option<DequantizeFn> {
    use GgmlType as T;
    Some(match ty {
        T::F32 => dequantize_row_f32,
        T::F16 => dequantize_row_f16,
        T::BF16 => dequantize_row_bf16,
        T::Q4_0 => dequantize_row_q4_0,
        T::Q4_1 => dequantize_row_q4_1,
        T::Q5_0 => dequantize_row_q5_0,
        T::Q5_1 => dequantize_row_q5_1,
        T::Q8_0 => dequantize_row_q8_0,
        T::Q8_1 => dequantize_row_q8_1,
        T::Q2_K => dequantize_row_q2_k,
        T::Q3_K => dequantize_row_q3_k,
        T::Q4_K => dequantize_row_q4_k,
        T::Q5_K => dequantize_row_q5_k,
        T::Q6_K => dequantize_row_q6_k,
        T::Q8_K => dequantize_row_q8_k,
        T::IQ4_NL => dequantize_row_iq4_nl,
        T::IQ4_XS => dequantize_row_iq4_xs,
        T::MXFP4 => dequantize_row_mxfp4,
        _ => return None,
    })
}

/// Whether [`dequantize_row`] supports `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    dequantize_fn(ty).is_some()
}

/// Dequantize `n = dst.len()` elements of type `ty` from `src` (exactly the bytes of n elements).
///
/// Errors: [`KernelError::Unsupported`] for types without a reference dequantization,
/// [`KernelError::RaggedRow`] if `n` is not a multiple of the block size,
/// [`KernelError::SourceSize`] if `src` is not exactly `n / block_size * type_size` bytes.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    let f = dequantize_fn(ty).ok_or(KernelError::Unsupported(ty))?;
    check_row(ty, dst.len(), src.len())?;
    f(src, dst);
    Ok(())
}

/// The type ggml quantizes activations to before a dot product with weights of type `ty`
/// (`type_traits_cpu[ty].vec_dot_type`): Q4_0, Q5_0, Q8_0, IQ4_NL, MXFP4 → Q8_0; Q4_1, Q5_1 →
/// Q8_1; the K-quants and IQ4_XS → Q8_K; F32, F16, BF16 → themselves. Other types (which have
/// no reference dot product here) map to themselves.
#[inline(always)]
pub fn vec_dot_type(ty: GgmlType) -> GgmlType {
    use GgmlType as T;
    match ty {
        T::Q4_0 | T::Q5_0 | T::Q8_0 | T::IQ4_NL | T::MXFP4 => T::Q8_0,
        T::Q4_1 | T::Q5_1 => T::Q8_1,
        T::Q2_K | T::Q3_K | T::Q4_K | T::Q5_K | T::Q6_K | T::IQ4_XS => T::Q8_K,
        other => other,
    }
}

/// The typed activation quantizer for `ty`, if `ty` is one of the vec-dot types
/// (F32, F16, BF16, Q8_0, Q8_1, Q8_K).
pub fn quantize_fn(ty: GgmlType) -> Option<QuantizeFn> {
    use GgmlType as T;
    Some(match ty {
        T::F32 => quantize_row_f32,
        T::F16 => quantize_row_f16,
        T::BF16 => quantize_row_bf16,
        T::Q8_0 => quantize_row_q8_0,
        T::Q8_1 => quantize_row_q8_1,
        T::Q8_K => quantize_row_q8_k,
        _ => return None,
    })
}

/// Quantize the activations `x` into `out` as type `ty`, one of the vec-dot types (F32, F16,
/// BF16, Q8_0, Q8_1, Q8_K), exactly as ggml's reference quantizers do.
///
/// `out` must be exactly the bytes of `x.len()` elements of `ty`.
/// Errors: `Unsupported` for other types, `RaggedRow`, and `SourceSize` (here about `out`).
pub fn quantize_row_to(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), KernelError> {
    let f = quantize_fn(ty).ok_or(KernelError::Unsupported(ty))?;
    check_row(ty, x.len(), out.len())?;
    f(x, out);
    Ok(())
}

/// The activation quantizer the CPU engine uses for `ty`: ggml-cpu's, which on x86 differs from
/// the `_ref` quantizers for Q8_0 and Q8_1 ([`legacy::quantize_row_q8_0_x86`]); elsewhere the
/// same as [`quantize_fn`]. (On aarch64, ggml's NEON quantizers agree with the `_ref` ones up to
/// ties; a NEON tier will pin this down when it lands.)
pub fn engine_quantize_fn(ty: GgmlType) -> Option<QuantizeFn> {
    match ty {
        #[cfg(target_arch = "x86_64")]
        GgmlType::Q8_0 => Some(legacy::quantize_row_q8_0_x86),
        #[cfg(target_arch = "x86_64")]
        GgmlType::Q8_1 => Some(legacy::quantize_row_q8_1_x86),
        other => quantize_fn(other),
    }
}

/// The typed dot product for weights of type `ty` (activations in [`vec_dot_type`]`(ty)`).
#[inline(always)]
pub fn vec_dot_fn(ty: GgmlType) -> Option<VecDotFn> {
    use GgmlType as T;
    Some(match ty {
        T::F32 => vec_dot_f32,
        T::F16 => vec_dot_f16,
        T::BF16 => vec_dot_bf16,
        T::Q4_0 => vec_dot_q4_0_q8_0,
        T::Q4_1 => vec_dot_q4_1_q8_1,
        T::Q5_0 => vec_dot_q5_0_q8_0,
        T::Q5_1 => vec_dot_q5_1_q8_1,
        T::Q8_0 => vec_dot_q8_0_q8_0,
        T::Q2_K => vec_dot_q2_k_q8_k,
        T::Q3_K => vec_dot_q3_k_q8_k,
        T::Q4_K => vec_dot_q4_k_q8_k,
        T::Q5_K => vec_dot_q5_k_q8_k,
        T::Q6_K => vec_dot_q6_k_q8_k,
        T::IQ4_NL => vec_dot_iq4_nl_q8_0,
        T::IQ4_XS => vec_dot_iq4_xs_q8_k,
        T::MXFP4 => vec_dot_mxfp4_q8_0,
        _ => return None,
    })
}

/// Dot product of `n` elements: weight row `x` (type `ty`, exactly its bytes) with activation
/// row `y` (type [`vec_dot_type`]`(ty)`, exactly its bytes, as made by [`quantize_row_to`]).
///
/// For F32/F16/BF16 weights (activations of the same type) the products are formed in f32 and
/// accumulated in f64, then rounded to f32 once: ggml's scalar `ggml_vec_dot_f16`/`_bf16`/`_f32`
/// (`ggml_float` is `double`). Quantized types follow the ggml-cpu `_generic` dot products.
///
/// Errors: `Unsupported`, `RaggedRow` (n not a multiple of either type's block size),
/// `SourceSize` (for `x` with type `ty`, or for `y` with the vec-dot type).
pub fn vec_dot(ty: GgmlType, n: usize, x: &[u8], y: &[u8]) -> Result<f32, KernelError> {
    let f = vec_dot_fn(ty).ok_or(KernelError::Unsupported(ty))?;
    check_row(ty, n, x.len())?;
    check_row(vec_dot_type(ty), n, y.len())?;
    Ok(f(n, x, y))
}

// ---------------------------------------------------------------------------------------------
// Shared helpers.

/// Check that `n` elements of `ty` form whole blocks and take exactly `bytes` bytes.
pub(crate) fn check_row(ty: GgmlType, n: usize, bytes: usize) -> Result<(), KernelError> {
    let block = ty.block_size();
    if n % block != 0 {
        return Err(KernelError::RaggedRow { ty, n, block });
    }
    let want = (n / block)
        .checked_mul(ty.type_size())
        .ok_or(KernelError::SourceSize {
            ty,
            n,
            got: bytes,
            want: usize::MAX,
        })?;
    if bytes != want {
        return Err(KernelError::SourceSize {
            ty,
            n,
            got: bytes,
            want,
        });
    }
    Ok(())
}

/// [`check_row`] for the typed entry points, which document that they panic.
#[track_caller]
pub(crate) fn assert_row(ty: GgmlType, n: usize, bytes: usize) {
    if let Err(e) = check_row(ty, n, bytes) {
        panic!("{e}");
    }
}

/// f16 (little-endian, at `off`) to f32. Exact for every non-NaN value.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    half::f16::from_bits(u16_at(b, off)).to_f32()
}

#[inline(always)]
pub(crate) fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

#[inline(always)]
pub(crate) fn i16_at(b: &[u8], off: usize) -> i16 {
    i16::from_le_bytes([b[off], b[off + 1]])
}

#[inline(always)]
pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline(always)]
pub(crate) fn f32_at(b: &[u8], off: usize) -> f32 {
    f32::from_bits(u32_at(b, off))
}

/// f32 to f16 bits, round to nearest even (ggml's `GGML_FP32_TO_FP16` for finite values).
#[inline(always)]
pub(crate) fn f32_to_f16_bits(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// ggml's `nearest_int`: round to nearest, ties to even, via the 1.5·2^23 trick. Only meaningful
/// for |x| <= 2^22 (ggml asserts that); reproduced bit for bit rather than with `round`.
#[inline(always)]
pub(crate) fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0f32;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// C's `roundf` (half away from zero), inline: for |x| < 2^23 (where floats can have a fraction)
/// the truncation and `x - t` are exact, so this is `roundf` bit for bit; larger values, infinities
/// and NaNs are returned as they are, as `roundf` does.
#[inline(always)]
pub(crate) fn roundf(x: f32) -> f32 {
    // Branch-free (the fraction is unpredictable): t ± 1 by the fraction's size, then x's sign
    // (rounding away from zero keeps the sign; for results of 0 it is roundf's signed zero).
    let t = (x as i32) as f32;
    let f = x - t;
    let r = t + f32::from(u8::from(f >= 0.5)) - f32::from(u8::from(f <= -0.5));
    if x.abs() < 8_388_608.0 {
        r.copysign(x)
    } else {
        x
    }
}

/// C's `MAX(a, b)` macro, `a > b ? a : b`, including its NaN behaviour (unlike `f32::max`).
#[inline(always)]
pub(crate) fn c_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundf_is_libm_roundf() {
        let mut v = vec![
            0.5f32,
            -0.5,
            1.5,
            -1.5,
            2.5,
            0.49999997,
            -0.49999997,
            -0.0,
            0.0,
            0.3,
            -0.3,
        ];
        v.extend([
            8_388_607.5f32,
            -8_388_607.5,
            8_388_608.0,
            1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        let mut s = 0x1234_5678u32;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            v.push(f32::from_bits(s));
        }
        for x in v {
            let (a, b) = (roundf(x), x.round());
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{x}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-126.7), -127);
        assert_eq!(nearest_int(127.49), 127);
    }

    #[test]
    fn check_row_reports_ragged_and_size() {
        assert!(matches!(
            check_row(GgmlType::Q4_0, 33, 18),
            Err(KernelError::RaggedRow {
                n: 33,
                block: 32,
                ..
            })
        ));
        assert!(matches!(
            check_row(GgmlType::Q4_0, 64, 35),
            Err(KernelError::SourceSize {
                got: 35,
                want: 36,
                ..
            })
        ));
        assert!(check_row(GgmlType::Q4_0, 64, 36).is_ok());
        assert!(check_row(GgmlType::Q4_K, 0, 0).is_ok());
    }

    #[test]
    fn vec_dot_types_have_quantizers_and_matching_block_sizes() {
        for &t in GgmlType::ALL {
            if vec_dot_fn(t).is_some() {
                let vt = vec_dot_type(t);
                assert!(quantize_fn(vt).is_some(), "{t}: no quantizer for {vt}");
                assert_eq!(t.block_size(), vt.block_size(), "{t} vs {vt}");
                assert!(can_dequantize(t));
            }
        }
    }
}
