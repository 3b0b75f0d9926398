//! Dot products of quantized weight rows with one activation row: the engine's fast path for
//! decode (one token, a matrix-vector product bound by the bytes of weights it reads).
//!
//! The activation row is quantized on the fly to the weight type's vec-dot type, as llama.cpp
//! does (Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants), except for the
//! float weights (F16, BF16, F32), which meet f32 activations. The scalar reference
//! ([`crate::reference::vec_dot`]) is the spec: every tier forms the same exact integer sum per
//! block and differs from it only in the order of the float additions (tests bound the
//! difference as llama.cpp's test-quantize-fns does).
//!
//! | tier | where | what |
//! |---|---|---|
//! | scalar | everywhere | the reference, row by row |
//! | avx2 | x86-64 with AVX2+FMA+F16C | [`x86`]: 32-byte blocks through `maddubs`/`madd` |
//! | avx512 | x86-64 with AVX-512 VL/BW + VNNI | [`x86`] with `vpdpbusd` for the 32-element types |
//! | neon | AArch64 | `neon`: `sdot` (dot-product extension) or `smull`/`sadalp`; float rows with `fmla` |
//!
//! Find the Q4_K dot product in [`x86`] (`q4_k_rows`) and its spec in
//! [`crate::reference::vec_dot_q4_k_q8_k`].

use crate::dispatch::Tier;
use crate::reference;
use crate::GgmlType;

pub mod act;
#[cfg(target_arch = "aarch64")]
pub mod neon;
#[cfg(target_arch = "x86_64")]
pub mod x86;

/// The activation row of a [`dot_rows`] call.
#[derive(Clone, Copy)]
pub enum Act<'a> {
    /// Packed blocks of the weight type's [`reference::vec_dot_type`].
    Quant(&'a [u8]),
    /// Plain floats (F16, BF16 and F32 weights).
    F32(&'a [f32]),
}

/// Whether the activations for weights of `ty` stay f32 ([`Act::F32`]) in the fast path: the
/// float weight types, whose values convert to f32 exactly.
pub fn takes_f32(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F16 | GgmlType::BF16 | GgmlType::F32)
}

/// Whether tier `tier` has a kernel for `ty` (others run the reference row by row).
pub fn has_simd_on(tier: Tier, ty: GgmlType) -> bool {
    match tier {
        Tier::Scalar => false,
        Tier::Neon => cfg!(target_arch = "aarch64") && neon_handles(ty),
        _ => has_simd(ty),
    }
}

/// Whether the NEON tier has a kernel for `ty`: for every type the x86 tiers have one for.
pub fn neon_handles(ty: GgmlType) -> bool {
    has_simd(ty)
}

/// Whether the x86 tiers have a kernel for `ty` (others run the reference row by row).
pub fn has_simd(ty: GgmlType) -> bool {
    use GgmlType as T;
    matches!(
        ty,
        T::Q4_0
            | T::Q4_1
            | T::Q5_0
            | T::Q5_1
            | T::Q8_0
            | T::Q2_K
            | T::Q3_K
            | T::Q4_K
            | T::Q5_K
            | T::Q6_K
            | T::F16
            | T::BF16
            | T::F32
    )
}

/// `out[r] = dot(weight row r, act)` for `r < out.len()`, on `tier`.
///
/// `w` holds `out.len()` whole rows of `cols` elements of type `ty`. Panics if the buffers do
/// not fit or the type has no dot product (callers check types and shapes at load).
pub fn dot_rows(tier: Tier, ty: GgmlType, cols: usize, w: &[u8], act: Act<'_>, out: &mut [f32]) {
    let rb = ty.row_bytes(cols as u64).expect("whole blocks") as usize;
    assert_eq!(w.len(), rb * out.len(), "{ty}: weight rows");
    match act {
        Act::F32(a) => {
            assert!(takes_f32(ty), "{ty}: f32 activations");
            assert_eq!(a.len(), cols, "activation row");
        }
        Act::Quant(a) => {
            let vt = reference::vec_dot_type(ty);
            assert_eq!(
                a.len(),
                vt.row_bytes(cols as u64).expect("whole blocks") as usize,
                "activation row"
            );
        }
    }
    #[cfg(target_arch = "x86_64")]
    if tier >= Tier::Avx2 && has_simd(ty) && Tier::supported(tier) {
        // SAFETY: `Tier::supported` checked that the CPU has the tier's features; the buffer
        // sizes were checked above.
        unsafe { x86::dot_rows(tier >= Tier::Avx512, ty, cols, w, act, out) };
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if tier == Tier::Neon && neon_handles(ty) && Tier::supported(tier) {
        // SAFETY: `Tier::supported` checked NEON (and `dotprod` is passed as detected); the
        // buffer sizes were checked above.
        let dotprod = crate::dispatch::Features::get().dotprod;
        unsafe { neon::dot_rows(dotprod, ty, cols, w, act, out) };
        return;
    }
    let _ = tier;
    scalar_rows(ty, cols, w, act, out)
}

/// [`dot_rows`] for several activation rows (tokens of sequences decoded together):
/// `outs[t][r] = dot(weight row r, acts[t])`. Where the tier has a several-token kernel for
/// `ty`, each weight block is read once for all the tokens; every result is bit-identical to
/// [`dot_rows`] on that token alone.
pub fn dot_rows_multi(
    tier: Tier,
    ty: GgmlType,
    cols: usize,
    w: &[u8],
    acts: &[Act<'_>],
    outs: &mut [&mut [f32]],
) {
    assert_eq!(acts.len(), outs.len(), "one output per activation row");
    let rows = outs.first().map_or(0, |o| o.len());
    #[cfg(target_arch = "x86_64")]
    if acts.len() > 1 && tier >= Tier::Avx2 && Tier::supported(tier) {
        let rb = ty.row_bytes(cols as u64).expect("whole blocks") as usize;
        assert_eq!(w.len(), rb * rows, "{ty}: weight rows");
        let ab = reference::vec_dot_type(ty)
            .row_bytes(cols as u64)
            .expect("whole blocks") as usize;
        let mut quant: [&[u8]; 16] = [&[]; 16];
        let all_quant = acts.len() <= 16
            && acts.iter().zip(quant.iter_mut()).all(|(a, q)| match a {
                Act::Quant(a) if a.len() == ab => {
                    *q = a;
                    true
                }
                _ => false,
            });
        if all_quant && outs.iter().all(|o| o.len() == rows) {
            let quant = &quant[..acts.len()];
            // SAFETY: `Tier::supported` checked the tier's features; sizes checked above.
            if unsafe { x86::dot_rows_multi(tier >= Tier::Avx512, ty, cols, w, quant, outs) } {
                return;
            }
        }
    }
    for (a, o) in acts.iter().zip(outs.iter_mut()) {
        dot_rows(tier, ty, cols, w, *a, o);
    }
}

/// The reference, row by row (float rows against f32 activations: each product in f32, summed
/// in f64, as ggml's scalar F16 code).
pub fn scalar_rows(ty: GgmlType, cols: usize, w: &[u8], act: Act<'_>, out: &mut [f32]) {
    let rb = ty.row_bytes(cols as u64).expect("whole blocks") as usize;
    match act {
        Act::F32(a) => {
            let mut wf = vec![0f32; cols];
            for (row, o) in w.chunks_exact(rb).zip(out.iter_mut()) {
                reference::dequantize_row(ty, row, &mut wf).expect("a float type");
                let mut s = 0f64;
                for (v, x) in wf.iter().zip(a) {
                    s += (v * x) as f64;
                }
                *o = s as f32;
            }
        }
        Act::Quant(a) => {
            let f = reference::vec_dot_fn(ty).unwrap_or_else(|| panic!("no dot product for {ty}"));
            for (row, o) in w.chunks_exact(rb).zip(out.iter_mut()) {
                *o = f(cols, row, a);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
