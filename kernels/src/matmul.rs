//! Blocks of dot products for matrix multiplication, dispatched by CPU tier at run time.
//!
//! [`vec_dot_rows`] computes every dot product between a block of weight rows and a set of
//! activation rows (already converted to the weight type's vec-dot type). The `avx2` tier runs
//! the *same* scalar reference code compiled with AVX2/FMA/F16C enabled: the source fixes the
//! order of every float operation and Rust never contracts or reassociates floats, so results
//! are bit-identical to the scalar tier while LLVM vectorizes the integer work. Hand-written
//! SIMD kernels (a later issue) will replace this tier type by type.

use crate::dispatch::{Tier, TierError};
use crate::reference;
use crate::GgmlType;

/// The tier in use (from `AUTOROUND_ISA` or the CPU), decided once.
pub fn tier() -> Result<Tier, TierError> {
    Tier::selected()
}

/// `out[i * n_tok + t] = dot(weight row i, activation row t)` for `i < out.len() / n_tok`.
///
/// `w` holds whole weight rows of `cols` elements of type `ty`; `acts` holds `n_tok` rows of the
/// vec-dot type. Panics if the type has no dot product or the buffers do not fit (callers check
/// types and shapes when they load weights).
pub fn vec_dot_rows(
    ty: GgmlType,
    cols: usize,
    w: &[u8],
    acts: &[u8],
    n_tok: usize,
    out: &mut [f32],
) {
    let tier = Tier::selected().unwrap_or(Tier::Scalar);
    vec_dot_rows_tier(tier, ty, cols, w, acts, n_tok, out)
}

/// [`vec_dot_rows`] on a given tier (tests compare tiers with this). Asking for a tier the CPU
/// lacks runs the scalar code.
pub fn vec_dot_rows_tier(
    tier: Tier,
    ty: GgmlType,
    cols: usize,
    w: &[u8],
    acts: &[u8],
    n_tok: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if tier >= Tier::Avx2 && Tier::supported(Tier::Avx2) {
        // SAFETY: the CPU reports AVX2, FMA and F16C (checked just above).
        unsafe { vec_dot_rows_avx2(ty, cols, w, acts, n_tok, out) };
        return;
    }
    let _ = tier;
    vec_dot_rows_impl(ty, cols, w, acts, n_tok, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_rows_avx2(
    ty: GgmlType,
    cols: usize,
    w: &[u8],
    acts: &[u8],
    n_tok: usize,
    out: &mut [f32],
) {
    if let Some(kind) = Legacy::of(ty) {
        // SAFETY (of the closure): we are inside an AVX2-enabled function on an AVX2 CPU.
        return legacy_rows(kind, cols, w, acts, n_tok, out, |a, b| unsafe {
            dot32_lanes_avx2(a, b)
        });
    }
    if ty == GgmlType::F16 && cols % 8 == 0 {
        // SAFETY (of the closures): we are inside an AVX2/FMA/F16C function on such a CPU.
        return f16_rows(
            cols,
            w,
            acts,
            n_tok,
            out,
            |b, d| unsafe { widen_f16_avx2(b, d) },
            |a, b| unsafe { dot8_lanes_avx2(a, b) },
        );
    }
    vec_dot_rows_impl(ty, cols, w, acts, n_tok, out)
}

/// [`dot32_lanes`] with AVX2 (`maddubs` on |a| and sign-adjusted b). Exact while no
/// lane has a = b = -128 (pairs then saturate): weights here are at least -16 (Q4/Q5) or come
/// from Q8_0 files, and activations come from our quantizers, which never produce -128.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn dot32_lanes_avx2(a: &[i8], b: &[i8]) -> [i32; 8] {
    use std::arch::x86_64::*;
    assert!(a.len() >= 32 && b.len() >= 32);
    // SAFETY: both slices hold at least 32 bytes (asserted); unaligned loads are allowed.
    let (va, vb) = unsafe {
        (
            _mm256_loadu_si256(a.as_ptr() as *const __m256i),
            _mm256_loadu_si256(b.as_ptr() as *const __m256i),
        )
    };
    let ax = _mm256_sign_epi8(va, va);
    let sy = _mm256_sign_epi8(vb, va);
    let p16 = _mm256_maddubs_epi16(ax, sy);
    let p32 = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
    let mut out = [0i32; 8];
    // SAFETY: `out` holds 8 i32 (32 bytes).
    unsafe { _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, p32) };
    out
}

#[inline(always)]
fn vec_dot_rows_impl(
    ty: GgmlType,
    cols: usize,
    w: &[u8],
    acts: &[u8],
    n_tok: usize,
    out: &mut [f32],
) {
    if let Some(kind) = Legacy::of(ty) {
        return legacy_rows(kind, cols, w, acts, n_tok, out, dot32_lanes);
    }
    if ty == GgmlType::F16 && cols % 8 == 0 {
        return f16_rows(cols, w, acts, n_tok, out, widen_f16, dot8_lanes);
    }
    if ty == GgmlType::Q4_K {
        return q4_k_rows(cols, w, acts, n_tok, out);
    }
    if ty == GgmlType::Q6_K {
        return q6_k_rows(cols, w, acts, n_tok, out);
    }
    let wb = ty.row_bytes(cols as u64).expect("whole blocks") as usize;
    let ab = reference::vec_dot_type(ty)
        .row_bytes(cols as u64)
        .expect("whole blocks") as usize;
    assert_eq!(w.len(), wb * (out.len() / n_tok.max(1)), "weight rows");
    assert_eq!(acts.len(), ab * n_tok, "activation rows");
    macro_rules! run {
        ($f:path) => {{
            for (wr, o) in w.chunks_exact(wb).zip(out.chunks_exact_mut(n_tok)) {
                for (t, ot) in o.iter_mut().enumerate() {
                    *ot = $f(cols, wr, &acts[t * ab..(t + 1) * ab]);
                }
            }
        }};
    }
    use reference::*;
    use GgmlType as T;
    match ty {
        T::F32 => run!(vec_dot_f32),
        T::F16 => run!(vec_dot_f16),
        T::BF16 => run!(vec_dot_bf16),
        T::Q4_0 => run!(vec_dot_q4_0_q8_0),
        T::Q4_1 => run!(vec_dot_q4_1_q8_1),
        T::Q5_0 => run!(vec_dot_q5_0_q8_0),
        T::Q5_1 => run!(vec_dot_q5_1_q8_1),
        T::Q8_0 => run!(vec_dot_q8_0_q8_0),
        T::Q2_K => run!(vec_dot_q2_k_q8_k),
        T::Q3_K => run!(vec_dot_q3_k_q8_k),
        T::Q4_K => run!(vec_dot_q4_k_q8_k),
        T::Q5_K => run!(vec_dot_q5_k_q8_k),
        T::Q6_K => run!(vec_dot_q6_k_q8_k),
        T::IQ4_NL => run!(vec_dot_iq4_nl_q8_0),
        T::IQ4_XS => run!(vec_dot_iq4_xs_q8_k),
        T::MXFP4 => run!(vec_dot_mxfp4_q8_0),
        other => panic!("no dot product for {other}"),
    }
}

/// F16 weights · F16 activations in the order of llamafile's tinyBLAS on AVX2, which llama.cpp
/// uses for F16 matrices on x86: eight f32 lanes, lane `l` accumulating elements `k ≡ l (mod 8)`
/// with fused multiply-adds, then `((x0+x4)+(x2+x6)) + ((x1+x5)+(x3+x7))`. (The reference
/// [`reference::vec_dot_f16`] sums in f64 as ggml's scalar code does; the two agree to ~1e-6.)
#[inline(always)]
fn f16_rows(
    cols: usize,
    w: &[u8],
    acts: &[u8],
    n_tok: usize,
    out: &mut [f32],
    widen: impl Fn(&[u8], &mut [f32]),
    dot8: impl Fn(&[f32], &[f32]) -> f32,
) {
    let mut a = vec![0f32; n_tok * cols];
    widen(acts, &mut a);
    let mut wr = vec![0f32; cols];
    for (row, o) in w.chunks_exact(cols * 2).zip(out.chunks_exact_mut(n_tok)) {
        widen(row, &mut wr);
        for (t, ot) in o.iter_mut().enumerate() {
            let at = &a[t * cols..(t + 1) * cols];
            // llama.cpp takes tinyBLAS for two or more tokens, ggml_vec_dot_f16 for one.
            *ot = if n_tok == 1 {
                dot_f16_ggml(&wr, at)
            } else {
                dot8(&wr, at)
            };
        }
    }
}

/// F16 bytes to f32 (exact; the same values as [`crate::reference::dequantize_row`]), with F16C
/// when the AVX2 tier is selected. Converts `min(dst.len(), src.len() / 2)` values.
pub fn f16_to_f32_row(src: &[u8], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if matches!(tier(), Ok(t) if t >= Tier::Avx2) {
        // SAFETY: tiers from Avx2 up are selected only when the CPU has AVX2 and F16C.
        unsafe { widen_f16_avx2(src, dst) };
        return;
    }
    widen_f16(src, dst)
}

/// f16 (little-endian bytes) to f32, exactly.
fn widen_f16(b: &[u8], dst: &mut [f32]) {
    for (d, c) in dst.iter_mut().zip(b.chunks_exact(2)) {
        *d = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
    }
}

/// tinyBLAS's 8-lane fused multiply-add dot product and its horizontal sum (`len % 8 == 0`).
fn dot8_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (ac, bc) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] = ac[l].mul_add(bc[l], acc[l]);
        }
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// [`widen_f16`] with F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn widen_f16_avx2(b: &[u8], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = dst.len().min(b.len() / 2);
    let n8 = n / 8 * 8;
    for i in (0..n8).step_by(8) {
        // SAFETY: i + 8 <= n, so 16 bytes of `b` and 8 floats of `dst` are in bounds.
        unsafe {
            let h = _mm_loadu_si128(b.as_ptr().add(2 * i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
    }
    widen_f16(&b[2 * n8..2 * n], &mut dst[n8..n]);
}

/// [`dot8_lanes`] with AVX2/FMA: the same operations, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot8_lanes_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    assert!(a.len() == b.len() && a.len() % 8 == 0);
    let mut acc = _mm256_setzero_ps();
    for i in (0..a.len()).step_by(8) {
        // SAFETY: i + 8 <= len for both slices (asserted above).
        unsafe {
            acc = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
                acc,
            );
        }
    }
    let h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_movehdup_ps(h));
    _mm_cvtss_f32(h)
}

/// The 32-element block types whose dot products are an integer sum per block plus a little
/// float arithmetic. Their rows are decoded once per call (quants to i8, scales to f32) so that
/// the per-token loop is a plain i8 dot product. The float part follows ggml-cpu's x86 kernels
/// (what llama.cpp runs on this kind of machine), which differ from the `_generic` reference
/// only in rounding: every tier here computes the same bits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Legacy {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
}

impl Legacy {
    fn of(ty: GgmlType) -> Option<Legacy> {
        Some(match ty {
            GgmlType::Q4_0 => Legacy::Q4_0,
            GgmlType::Q4_1 => Legacy::Q4_1,
            GgmlType::Q5_0 => Legacy::Q5_0,
            GgmlType::Q5_1 => Legacy::Q5_1,
            GgmlType::Q8_0 => Legacy::Q8_0,
            _ => return None,
        })
    }
    /// Whether the activations are Q8_1 (with the block sum `s`) rather than Q8_0.
    fn q8_1(self) -> bool {
        matches!(self, Legacy::Q4_1 | Legacy::Q5_1)
    }
}

#[inline(always)]
fn f16_le(b: &[u8], off: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// Decode one weight row: quants into `q` (as the integers the reference multiplies), `d` and
/// `m` (Q4_1/Q5_1 only) per block.
#[inline(always)]
fn decode_legacy_row(kind: Legacy, row: &[u8], q: &mut [i8], d: &mut [f32], m: &mut [f32]) {
    let bs = match kind {
        Legacy::Q4_0 => 18,
        Legacy::Q4_1 => 20,
        Legacy::Q5_0 => 22,
        Legacy::Q5_1 => 24,
        Legacy::Q8_0 => 34,
    };
    for (b, blk) in row.chunks_exact(bs).enumerate() {
        let qb = &mut q[b * 32..(b + 1) * 32];
        d[b] = f16_le(blk, 0);
        match kind {
            Legacy::Q4_0 | Legacy::Q4_1 => {
                let (off, bias) = if kind == Legacy::Q4_0 { (2, 8) } else { (4, 0) };
                if kind == Legacy::Q4_1 {
                    m[b] = f16_le(blk, 2);
                }
                for j in 0..16 {
                    qb[j] = (blk[off + j] & 0x0F) as i8 - bias;
                    qb[j + 16] = (blk[off + j] >> 4) as i8 - bias;
                }
            }
            Legacy::Q5_0 | Legacy::Q5_1 => {
                let (hoff, bias) = if kind == Legacy::Q5_0 {
                    (2, 16)
                } else {
                    (4, 0)
                };
                if kind == Legacy::Q5_1 {
                    m[b] = f16_le(blk, 2);
                }
                let qh =
                    u32::from_le_bytes([blk[hoff], blk[hoff + 1], blk[hoff + 2], blk[hoff + 3]]);
                let qs = &blk[hoff + 4..hoff + 20];
                for j in 0..16 {
                    let h0 = (((qh >> j) << 4) & 0x10) as u8;
                    let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                    qb[j] = ((qs[j] & 0x0F) | h0) as i8 - bias;
                    qb[j + 16] = ((qs[j] >> 4) | h1) as i8 - bias;
                }
            }
            Legacy::Q8_0 => {
                for j in 0..32 {
                    qb[j] = blk[2 + j] as i8;
                }
            }
        }
    }
}

/// The eight partial sums ggml's AVX2 kernels form for a 32-element block: lane `k` holds
/// `Σ a[j]·b[j]` over `j = 4k..4k+3` (`maddubs` then `madd` with ones).
#[inline(always)]
fn dot32_lanes(a: &[i8], b: &[i8]) -> [i32; 8] {
    let (a, b): (&[i8; 32], &[i8; 32]) = (a.try_into().unwrap(), b.try_into().unwrap());
    let mut s = [0i32; 8];
    for (k, sk) in s.iter_mut().enumerate() {
        for j in 4 * k..4 * k + 4 {
            *sk += a[j] as i32 * b[j] as i32;
        }
    }
    s
}

/// ggml's `hsum_float_8` (and tinyBLAS's `hsum`): `((x0+x4)+(x2+x6)) + ((x1+x5)+(x3+x7))`.
#[inline(always)]
pub(crate) fn hsum8(x: &[f32; 8]) -> f32 {
    ((x[0] + x[4]) + (x[2] + x[6])) + ((x[1] + x[5]) + (x[3] + x[7]))
}

/// ggml's AVX2 `ggml_vec_dot_f16` on f16 values held in f32 (llama.cpp's one-token F16 matmul and
/// its flash-attention Q·K): four 8-lane fused multiply-add accumulators over steps of 32, reduced
/// `(s0+s2) + (s1+s3)` lane-wise, then `(t0+t1) + (t2+t3)` with `t = low half + high half`; any
/// tail beyond a multiple of 32 is added in f64.
#[inline(always)]
pub fn dot_f16_ggml(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let np = n & !31;
    let mut acc = [[0f32; 8]; 4];
    for i in (0..np).step_by(32) {
        for (j, accj) in acc.iter_mut().enumerate() {
            for (l, lane) in accj.iter_mut().enumerate() {
                let k = i + j * 8 + l;
                *lane = a[k].mul_add(b[k], *lane);
            }
        }
    }
    let mut x = [0f32; 8];
    for l in 0..8 {
        x[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let t = [x[0] + x[4], x[1] + x[5], x[2] + x[6], x[3] + x[7]];
    let mut sum = ((t[0] + t[1]) + (t[2] + t[3])) as f64;
    for k in np..n {
        sum += (a[k] * b[k]) as f64;
    }
    sum as f32
}

#[inline(always)]
fn legacy_rows(
    kind: Legacy,
    cols: usize,
    w: &[u8],
    acts: &[u8],
    n_tok: usize,
    out: &mut [f32],
    dot32_lanes: impl Fn(&[i8], &[i8]) -> [i32; 8],
) {
    let nb = cols / 32;
    let wb = w.len() / (out.len() / n_tok.max(1)).max(1);
    let ab = if kind.q8_1() { 36 } else { 34 };
    let qoff = ab - 32;
    assert_eq!(acts.len(), ab * nb * n_tok, "activation rows");
    // Activations: quants gathered contiguously, scales (and sums) decoded once.
    let mut aq = vec![0i8; n_tok * cols];
    let mut ad = vec![0f32; n_tok * nb];
    let mut asum = vec![0f32; if kind.q8_1() { n_tok * nb } else { 0 }];
    for (i, blk) in acts.chunks_exact(ab).enumerate() {
        ad[i] = f16_le(blk, 0);
        if kind.q8_1() {
            asum[i] = f16_le(blk, 2);
        }
        for j in 0..32 {
            aq[i * 32 + j] = blk[qoff + j] as i8;
        }
    }
    let mut wq = vec![0i8; cols];
    let mut wd = vec![0f32; nb];
    let mut wm = vec![0f32; nb];
    for (row, o) in w.chunks_exact(wb).zip(out.chunks_exact_mut(n_tok)) {
        decode_legacy_row(kind, row, &mut wq, &mut wd, &mut wm);
        for (t, ot) in o.iter_mut().enumerate() {
            let aqt = &aq[t * cols..(t + 1) * cols];
            let adt = &ad[t * nb..(t + 1) * nb];
            // ggml-cpu's x86 kernels (ggml_vec_dot_*_q8_* for one token, llamafile's tinyBLAS
            // for more, which agree): d = dx*dy per block, fused into 8 float lanes, then one
            // horizontal sum, plus Σ m*s kept apart for the types with a minimum.
            let mut acc = [0f32; 8];
            let mut summs = 0f32;
            for b in 0..nb {
                let lanes = dot32_lanes(&wq[b * 32..b * 32 + 32], &aqt[b * 32..b * 32 + 32]);
                let d = wd[b] * adt[b];
                for l in 0..8 {
                    acc[l] = d.mul_add(lanes[l] as f32, acc[l]);
                }
                if kind.q8_1() {
                    summs += wm[b] * asum[t * nb + b];
                }
            }
            *ot = if kind.q8_1() {
                hsum8(&acc) + summs
            } else {
                hsum8(&acc)
            };
        }
    }
}

/// Rows of a Q4_K × Q8_K product from which llama.cpp's repacked AVX2 kernels take the
/// four-row GEMM path (`ggml_gemm_q4_K_8x8_q8_K`) instead of the GEMV: batches of more than three
/// rows, in whole groups of four; the rest go through the GEMV.
pub fn q4_k_gemm_rows(n_tok: usize) -> usize {
    if n_tok > 3 {
        n_tok - n_tok % 4
    } else {
        0
    }
}

/// Q4_K weights in the float order of llama.cpp's repacked AVX2 kernels (`q4_K_8x8_q8_K`, used
/// on x86 for every Q4_K matrix with a multiple of 8 rows). Per super-block the integer sums of
/// scales × quants and of mins × activation sums are exact; the GEMV then adds them as
/// `acc = fma(isum, d·d8, acc)` and `accmin = fma(imin, dmin·d8, accmin)` once per super-block,
/// the GEMM once per pair of 32-element sub-blocks; the result is `acc - accmin`.
#[inline(always)]
fn q4_k_rows(cols: usize, w: &[u8], acts: &[u8], n_tok: usize, out: &mut [f32]) {
    const WB: usize = 144;
    const AB: usize = 292;
    let nb = cols / 256;
    assert_eq!(w.len(), nb * WB * (out.len() / n_tok.max(1)), "weight rows");
    assert_eq!(acts.len(), nb * AB * n_tok, "activation rows");
    let gemm = q4_k_gemm_rows(n_tok);
    let mut q = vec![0i8; cols];
    let mut sc = vec![0i32; nb * 8];
    let mut mn = vec![0i32; nb * 8];
    let mut dd = vec![0f32; nb * 2];
    for (row, o) in w.chunks_exact(nb * WB).zip(out.chunks_exact_mut(n_tok)) {
        for (b, x) in row.chunks_exact(WB).enumerate() {
            dd[2 * b] = f16_le(x, 0);
            dd[2 * b + 1] = f16_le(x, 2);
            for j in 0..8 {
                let (s, m) = reference::kquants::get_scale_min_k4(j, &x[4..16]);
                sc[8 * b + j] = s as i32;
                mn[8 * b + j] = m as i32;
            }
            let qs = &x[16..144];
            for c in 0..4 {
                for i in 0..32 {
                    let byte = qs[32 * c + i];
                    q[256 * b + 64 * c + i] = (byte & 15) as i8;
                    q[256 * b + 64 * c + 32 + i] = (byte >> 4) as i8;
                }
            }
        }
        for (t, ot) in o.iter_mut().enumerate() {
            let a = &acts[t * nb * AB..(t + 1) * nb * AB];
            let (mut acc, mut accm) = (0f32, 0f32);
            for b in 0..nb {
                let y = &a[b * AB..(b + 1) * AB];
                let d8 = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
                let (d, dmin) = (dd[2 * b] * d8, dd[2 * b + 1] * d8);
                let mut dots = [0i32; 8];
                for (j, dj) in dots.iter_mut().enumerate() {
                    let qw = &q[256 * b + 32 * j..256 * b + 32 * j + 32];
                    let qa = &y[4 + 32 * j..4 + 32 * j + 32];
                    let mut sum = 0i32;
                    for i in 0..32 {
                        sum += qw[i] as i32 * qa[i] as i8 as i32;
                    }
                    *dj = sum;
                }
                let bsum = |j: usize| {
                    let at = |k: usize| i16::from_le_bytes([y[260 + 2 * k], y[261 + 2 * k]]) as i32;
                    at(2 * j) + at(2 * j + 1)
                };
                let (s, m) = (&sc[8 * b..8 * b + 8], &mn[8 * b..8 * b + 8]);
                if t < gemm {
                    for p in 0..4 {
                        let (j0, j1) = (2 * p, 2 * p + 1);
                        let isum = s[j0] * dots[j0] + s[j1] * dots[j1];
                        let imin = m[j0] * bsum(j0) + m[j1] * bsum(j1);
                        acc = (isum as f32).mul_add(d, acc);
                        accm = (imin as f32).mul_add(dmin, accm);
                    }
                } else {
                    let isum: i32 = (0..8).map(|j| s[j] * dots[j]).sum();
                    let imin: i32 = (0..8).map(|j| m[j] * bsum(j)).sum();
                    acc = (isum as f32).mul_add(d, acc);
                    accm = (imin as f32).mul_add(dmin, accm);
                }
            }
            *ot = acc - accm;
        }
    }
}

/// Q6_K weights in the float order llama.cpp uses on an AVX2 machine: for batches of 8 rows or
/// more its tiled K-quant matmul (`acc = fma(d·isum, d8, acc)` per super-block, with the exact
/// integer `isum = Σ scale·(q - 32)·q8`), otherwise `ggml_vec_dot_q6_K_q8_K`'s AVX2 kernel: eight
/// integer lanes (lane `l` takes bytes `4l..4l+3` of every 32-element chunk, less
/// `32·Σ scale·bsum` over the 16-element sub-blocks `2l` and `2l+1`), each accumulated as
/// `fma(d8·d, lane, acc)` per super-block and summed by `hsum8` at the end.
#[inline(always)]
fn q6_k_rows(cols: usize, w: &[u8], acts: &[u8], n_tok: usize, out: &mut [f32]) {
    const WB: usize = 210;
    const AB: usize = 292;
    let nb = cols / 256;
    assert_eq!(w.len(), nb * WB * (out.len() / n_tok.max(1)), "weight rows");
    assert_eq!(acts.len(), nb * AB * n_tok, "activation rows");
    let tiled = n_tok >= 8;
    let mut q = vec![0i8; cols]; // unsigned 6-bit quants, 0..63
    let mut sc = vec![0i32; nb * 16];
    let mut dw = vec![0f32; nb];
    for (row, o) in w.chunks_exact(nb * WB).zip(out.chunks_exact_mut(n_tok)) {
        for (b, x) in row.chunks_exact(WB).enumerate() {
            dw[b] = f16_le(x, 208);
            for j in 0..16 {
                sc[16 * b + j] = x[192 + j] as i8 as i32;
            }
            for e in 0..256 {
                q[256 * b + e] =
                    (reference::kquants::q6_k_value(&x[0..128], &x[128..192], e) + 32) as i8;
            }
        }
        for (t, ot) in o.iter_mut().enumerate() {
            let a = &acts[t * nb * AB..(t + 1) * nb * AB];
            if tiled {
                let mut acc = 0f32;
                for b in 0..nb {
                    let y = &a[b * AB..(b + 1) * AB];
                    let d8 = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
                    let mut isum = 0i32;
                    for j in 0..16 {
                        let mut s = 0i32;
                        for i in 0..16 {
                            let e = 16 * j + i;
                            s += (q[256 * b + e] as i32 - 32) * y[4 + e] as i8 as i32;
                        }
                        isum += sc[16 * b + j] * s;
                    }
                    acc = (dw[b] * isum as f32).mul_add(d8, acc);
                }
                *ot = acc;
            } else {
                let mut acc = [0f32; 8];
                for b in 0..nb {
                    let y = &a[b * AB..(b + 1) * AB];
                    let d8 = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
                    let d = d8 * dw[b];
                    let s = &sc[16 * b..16 * b + 16];
                    let mut lanes = [0i32; 8];
                    for chunk in 0..8 {
                        // 32 elements, 256-element offset 32*chunk; scale per 16
                        for byte in 0..32 {
                            let e = 32 * chunk + byte;
                            lanes[byte / 4] +=
                                s[e / 16] * q[256 * b + e] as i32 * y[4 + e] as i8 as i32;
                        }
                    }
                    for (l, lane) in lanes.iter_mut().enumerate() {
                        let bs =
                            |k: usize| i16::from_le_bytes([y[260 + 2 * k], y[261 + 2 * k]]) as i32;
                        *lane -= 32 * (s[2 * l] * bs(2 * l) + s[2 * l + 1] * bs(2 * l + 1));
                        acc[l] = d.mul_add(*lane as f32, acc[l]);
                    }
                }
                *ot = hsum8(&acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tier gives bit-identical results to the scalar reference.
    #[test]
    fn tiers_agree_bitwise_with_the_reference() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let cols = 512;
        for ty in [
            T::Q4_0,
            T::Q4_1,
            T::Q5_0,
            T::Q5_1,
            T::Q8_0,
            T::Q2_K,
            T::Q3_K,
            T::Q4_K,
            T::Q5_K,
            T::Q6_K,
            T::F16,
        ] {
            let wb = ty.row_bytes(cols).unwrap() as usize;
            let xs: Vec<f32> = (0..cols as usize * 3)
                .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let mut w = vec![0u8; wb * 3];
            // Random weight bytes: scales may be any f16, NaN included (compared as NaN == NaN).
            for b in w.iter_mut() {
                *b = (next() & 0xff) as u8;
            }
            if ty == T::F16 {
                // Finite weights in [-1, 1], so the two summation orders can be compared.
                for c in w.chunks_exact_mut(2) {
                    let v = half::f16::from_f32((next() % 2001) as f32 / 1000.0 - 1.0);
                    c.copy_from_slice(&v.to_bits().to_le_bytes());
                }
            }
            let vt = reference::vec_dot_type(ty);
            let ab = vt.row_bytes(cols).unwrap() as usize;
            let mut acts = vec![0u8; ab * 2];
            for (t, a) in acts.chunks_exact_mut(ab).enumerate() {
                reference::quantize_row_to(vt, &xs[t * cols as usize..(t + 1) * cols as usize], a)
                    .unwrap();
            }
            let mut out = vec![0f32; 6];
            let mut scalar = vec![0f32; 6];
            vec_dot_rows(ty, cols as usize, &w, &acts, 2, &mut out);
            vec_dot_rows_tier(Tier::Scalar, ty, cols as usize, &w, &acts, 2, &mut scalar);
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            for r in 0..3 {
                for t in 0..2 {
                    let (wr, ar) = (&w[r * wb..(r + 1) * wb], &acts[t * ab..(t + 1) * ab]);
                    let want = reference::vec_dot(ty, cols as usize, wr, ar).unwrap();
                    let (got, sc) = (out[r * 2 + t], scalar[r * 2 + t]);
                    assert!(same(got, sc), "{ty}: tiers differ: {got} vs {sc}");
                    if matches!(
                        ty,
                        T::F16
                            | T::Q4_0
                            | T::Q4_1
                            | T::Q5_0
                            | T::Q5_1
                            | T::Q8_0
                            | T::Q4_K
                            | T::Q6_K
                    ) {
                        // ggml-cpu's x86 summation order vs the `_generic` reference: equal up to
                        // f32 rounding (scales here may be any f16, so relative to the size).
                        let tol = 1e-5 * (1.0 + want.abs());
                        assert!(
                            !want.is_finite() || (got - want).abs() <= tol,
                            "{ty}: {got} vs {want}"
                        );
                    } else {
                        assert!(same(got, want), "{ty}: {got} vs reference {want}");
                    }
                }
            }
        }
    }
    use GgmlType as T;
}
