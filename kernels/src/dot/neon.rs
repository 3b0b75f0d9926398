//! aarch64 NEON row kernels for [`super::dot_rows`]: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 against
//! Q8_0/Q8_1 activations, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K against Q8_K, and the float types (F16,
//! BF16, F32) against f32 activations.
//!
//! Each block's weights are widened to signed bytes in 16-byte registers, and the exact integer
//! sum with the activations' bytes comes from `sdot` where the CPU has the dot-product extension
//! (written as inline assembly: its intrinsics are not stable Rust yet), or from
//! `smull`/`sadalp` in base NEON (i16 products of two bytes within ±127·128 cannot overflow). The
//! float part follows the reference block by block. The float rows convert their weights to f32
//! exactly (F16 with `fcvtl`, BF16 with a 16-bit shift) and sum with four `fmla` accumulators.

use super::Act;
use crate::reference::f16_at;
use crate::GgmlType;
use std::arch::aarch64::*;
use std::arch::asm;

/// # Safety
/// The CPU must have NEON, and with `dotprod` the dot-product extension. The buffers must have
/// the sizes [`super::dot_rows`] checks, for a type [`super::neon_handles`] accepts.
pub unsafe fn dot_rows(
    dotprod: bool,
    ty: GgmlType,
    cols: usize,
    w: &[u8],
    act: Act<'_>,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if dotprod {
            rows_dotprod(ty, cols, w, act, out)
        } else {
            rows_base(ty, cols, w, act, out)
        }
    }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn rows_dotprod(ty: GgmlType, cols: usize, w: &[u8], act: Act<'_>, out: &mut [f32]) {
    // SAFETY: the features are enabled; sizes are the caller's contract.
    unsafe { rows::<true>(ty, cols, w, act, out) }
}

#[target_feature(enable = "neon")]
unsafe fn rows_base(ty: GgmlType, cols: usize, w: &[u8], act: Act<'_>, out: &mut [f32]) {
    // SAFETY: as above.
    unsafe { rows::<false>(ty, cols, w, act, out) }
}

#[inline(always)]
unsafe fn rows<const DOT: bool>(
    ty: GgmlType,
    cols: usize,
    w: &[u8],
    act: Act<'_>,
    out: &mut [f32],
) {
    use GgmlType as T;
    let rb = ty.row_bytes(cols as u64).expect("whole blocks") as usize;
    for (row, o) in w.chunks_exact(rb).zip(out.iter_mut()) {
        // SAFETY: `row` is one whole row of `ty`, `act` the activation row of its vec-dot type
        // (or `cols` floats) (checked by `dot_rows`); every kernel reads only inside them.
        *o = unsafe {
            match (ty, act) {
                (T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1 | T::Q8_0, Act::Quant(a)) => {
                    legacy::<DOT>(ty, row, a)
                }
                (T::Q2_K, Act::Quant(a)) => q2_k::<DOT>(row, a),
                (T::Q3_K, Act::Quant(a)) => q3_k::<DOT>(row, a),
                (T::Q4_K | T::Q5_K, Act::Quant(a)) => q45_k::<DOT>(ty == T::Q5_K, row, a),
                (T::Q6_K, Act::Quant(a)) => q6_k::<DOT>(row, a),
                (T::F16, Act::F32(a)) => float_row::<F16>(row, a),
                (T::BF16, Act::F32(a)) => float_row::<BF16>(row, a),
                (T::F32, Act::F32(a)) => float_row::<F32>(row, a),
                _ => unreachable!("{ty}: no NEON kernel for these activations (neon_handles)"),
            }
        };
    }
}

/// Σ of the 16 products `w[i]·a[i]` added to `acc` (four i32 lanes).
#[inline(always)]
unsafe fn dot16<const DOT: bool>(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    if DOT {
        let mut acc = acc;
        // SAFETY: only reached from `rows_dotprod`, whose CPU has the dot-product extension.
        unsafe {
            asm!(
                "sdot {acc:v}.4s, {w:v}.16b, {a:v}.16b",
                acc = inout(vreg) acc,
                w = in(vreg) w,
                a = in(vreg) a,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        acc
    } else {
        let lo = vmull_s8(vget_low_s8(w), vget_low_s8(a));
        let hi = vmull_high_s8(w, a);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

/// The exact sum of 32 products.
#[inline(always)]
pub(crate) unsafe fn dot32<const DOT: bool>(w: [int8x16_t; 2], a: *const u8) -> i32 {
    // SAFETY: the caller points `a` at 32 readable bytes.
    unsafe {
        let a0 = vld1q_s8(a as *const i8);
        let a1 = vld1q_s8(a.add(16) as *const i8);
        let acc = dot16::<DOT>(vdupq_n_s32(0), w[0], a0);
        vaddvq_s32(dot16::<DOT>(acc, w[1], a1))
    }
}

/// Bits `16h .. 16h + 16` of `qh` as bytes holding 16 (bit set) or 0.
#[inline(always)]
unsafe fn high_bits(qh: u32, h: u32) -> uint8x16_t {
    let half = (qh >> (16 * h)) as u16;
    let bytes = vcombine_u8(vdup_n_u8(half as u8), vdup_n_u8((half >> 8) as u8));
    let masks: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: 16 bytes.
    let set = vtstq_u8(bytes, unsafe { vld1q_u8(masks.as_ptr()) });
    vandq_u8(set, vdupq_n_u8(16))
}

/// The 32-element types: `Σ_b d_w·d_a·Σq_w·q_a` (+ `m_w·s_a` for Q4_1/Q5_1).
#[inline(always)]
unsafe fn legacy<const DOT: bool>(ty: GgmlType, row: &[u8], a: &[u8]) -> f32 {
    use GgmlType as T;
    let wb = ty.type_size();
    let ab = if matches!(ty, T::Q4_1 | T::Q5_1) {
        36
    } else {
        34
    };
    let mut sum = 0f32;
    for (x, y) in row.chunks_exact(wb).zip(a.chunks_exact(ab)) {
        // SAFETY: `x` is one block of `ty`, `y` one activation block (32 bytes at ab - 32).
        unsafe {
            let v: [int8x16_t; 2] = match ty {
                T::Q8_0 => [
                    vld1q_s8(x[2..].as_ptr() as *const i8),
                    vld1q_s8(x[18..].as_ptr() as *const i8),
                ],
                T::Q4_0 | T::Q4_1 => {
                    let qs = vld1q_u8(x[wb - 16..].as_ptr());
                    let lo = vandq_u8(qs, vdupq_n_u8(15));
                    let hi = vshrq_n_u8::<4>(qs);
                    let off = vdupq_n_u8(if ty == T::Q4_0 { 8 } else { 0 });
                    [
                        vreinterpretq_s8_u8(vsubq_u8(lo, off)),
                        vreinterpretq_s8_u8(vsubq_u8(hi, off)),
                    ]
                }
                _ => {
                    let at = if ty == T::Q5_0 { 2 } else { 4 };
                    let qh = u32::from_le_bytes([x[at], x[at + 1], x[at + 2], x[at + 3]]);
                    let qs = vld1q_u8(x[wb - 16..].as_ptr());
                    let lo = vorrq_u8(vandq_u8(qs, vdupq_n_u8(15)), high_bits(qh, 0));
                    let hi = vorrq_u8(vshrq_n_u8::<4>(qs), high_bits(qh, 1));
                    let off = vdupq_n_u8(if ty == T::Q5_0 { 16 } else { 0 });
                    [
                        vreinterpretq_s8_u8(vsubq_u8(lo, off)),
                        vreinterpretq_s8_u8(vsubq_u8(hi, off)),
                    ]
                }
            };
            let isum = dot32::<DOT>(v, y[ab - 32..].as_ptr());
            sum += f16_at(x, 0) * f16_at(y, 0) * isum as f32;
            if ab == 36 {
                sum += f16_at(x, 2) * f16_at(y, 2);
            }
        }
    }
    sum
}

/// Q8_K's scale and its 16 block sums.
#[inline(always)]
fn q8_k_head(y: &[u8]) -> (f32, [i32; 16]) {
    let d = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
    let bs = std::array::from_fn(|i| i16::from_le_bytes([y[260 + 2 * i], y[261 + 2 * i]]) as i32);
    (d, bs)
}

/// Q4_K/Q5_K: `d·d8·Σ_j sc_j·Σq·a − dmin·d8·Σ_j m_j·Σa`.
#[inline(always)]
unsafe fn q45_k<const DOT: bool>(high: bool, row: &[u8], a: &[u8]) -> f32 {
    let wb = if high { 176 } else { 144 };
    let qs_off = if high { 48 } else { 16 };
    let mut sum = 0f32;
    for (x, y) in row.chunks_exact(wb).zip(a.chunks_exact(292)) {
        let (d8, bs) = q8_k_head(y);
        let mut isum = 0i32;
        let mut msum = 0i32;
        for c in 0..4 {
            // SAFETY: 32 bytes of quants at qs_off + 32c (and 32 of high bits at 16) inside the
            // block; 64 activation bytes at 4 + 64c inside the activation block.
            unsafe {
                let q = [
                    vld1q_u8(x[qs_off + 32 * c..].as_ptr()),
                    vld1q_u8(x[qs_off + 32 * c + 16..].as_ptr()),
                ];
                let mut lo = [
                    vandq_u8(q[0], vdupq_n_u8(15)),
                    vandq_u8(q[1], vdupq_n_u8(15)),
                ];
                let mut hi = [vshrq_n_u8::<4>(q[0]), vshrq_n_u8::<4>(q[1])];
                if high {
                    for h in 0..2 {
                        let qh = vld1q_u8(x[16 + 16 * h..].as_ptr());
                        let bit = |k: i8| {
                            let s = vshlq_u8(qh, vdupq_n_s8(-k));
                            vshlq_n_u8::<4>(vandq_u8(s, vdupq_n_u8(1)))
                        };
                        lo[h] = vorrq_u8(lo[h], bit(2 * c as i8));
                        hi[h] = vorrq_u8(hi[h], bit(2 * c as i8 + 1));
                    }
                }
                let s8 =
                    |v: [uint8x16_t; 2]| [vreinterpretq_s8_u8(v[0]), vreinterpretq_s8_u8(v[1])];
                for (k, v) in [s8(lo), s8(hi)].into_iter().enumerate() {
                    let j = 2 * c + k;
                    let (sc, m) = crate::reference::kquants::get_scale_min_k4(j, &x[4..16]);
                    isum += sc as i32 * dot32::<DOT>(v, y[4 + 32 * j..].as_ptr());
                    msum += m as i32 * (bs[2 * j] + bs[2 * j + 1]);
                }
            }
        }
        sum += f16_at(x, 0) * d8 * isum as f32 - f16_at(x, 2) * d8 * msum as f32;
    }
    sum
}

/// Q6_K: `d·d8·Σ_j sc_j·Σ(q − 32)·a` over sub-blocks of 16.
#[inline(always)]
unsafe fn q6_k<const DOT: bool>(row: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in row.chunks_exact(210).zip(a.chunks_exact(292)) {
        let d8 = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        let mut isum = 0i32;
        for n in 0..2 {
            for h in 0..2 {
                // SAFETY: 16 low-bit bytes at 64n + 16h (and + 32), 16 high-bit bytes at
                // 128 + 32n + 16h, inside the 210-byte block.
                unsafe {
                    let ql0 = vld1q_u8(x[64 * n + 16 * h..].as_ptr());
                    let ql1 = vld1q_u8(x[64 * n + 32 + 16 * h..].as_ptr());
                    let qh = vld1q_u8(x[128 + 32 * n + 16 * h..].as_ptr());
                    let m4 = vdupq_n_u8(15);
                    let m2 = vdupq_n_u8(3);
                    let vals = [
                        vorrq_u8(vandq_u8(ql0, m4), vshlq_n_u8::<4>(vandq_u8(qh, m2))),
                        vorrq_u8(
                            vandq_u8(ql1, m4),
                            vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<2>(qh), m2)),
                        ),
                        vorrq_u8(
                            vshrq_n_u8::<4>(ql0),
                            vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<4>(qh), m2)),
                        ),
                        vorrq_u8(vshrq_n_u8::<4>(ql1), vshlq_n_u8::<4>(vshrq_n_u8::<6>(qh))),
                    ];
                    for (k, v) in vals.into_iter().enumerate() {
                        // elements 128n + 32k + 16h .. + 16: sub-block 8n + 2k + h
                        let e = 128 * n + 32 * k + 16 * h;
                        let v = vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8(32));
                        let ya = vld1q_s8(y[4 + e..].as_ptr() as *const i8);
                        let s = vaddvq_s32(dot16::<DOT>(vdupq_n_s32(0), v, ya));
                        isum += (x[192 + e / 16] as i8) as i32 * s;
                    }
                }
            }
        }
        sum += f16_at(x, 208) * d8 * isum as f32;
    }
    sum
}

/// The four 2-bit fields of 16 bytes, as signed bytes (0..=3): field `k` is bits `2k .. 2k + 2`
/// of each byte (Q2_K's and Q3_K's layout: field `k` of byte `32n + l` is element
/// `128n + 32k + l`).
#[inline(always)]
unsafe fn crumbs(q: uint8x16_t) -> [int8x16_t; 4] {
    let m2 = vdupq_n_u8(3);
    [
        vreinterpretq_s8_u8(vandq_u8(q, m2)),
        vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<2>(q), m2)),
        vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<4>(q), m2)),
        vreinterpretq_s8_u8(vshrq_n_u8::<6>(q)),
    ]
}

/// `acc + Σ_k scale_j·(Σ v_k·a)` lane by lane, for the 16-element sub-blocks `j = 8n + 2k + h`
/// of a Q2_K/Q3_K super-block: `v[k]` holds the values of elements `128n + 32k + 16h .. + 16`
/// (as [`crumbs`] lays them out), `y` is the Q8_K block. Exact: each lane stays far inside i32.
#[inline(always)]
unsafe fn scaled_quad<const DOT: bool>(
    acc: int32x4_t,
    v: [int8x16_t; 4],
    (n, h): (usize, usize),
    scales: &[i32; 16],
    y: &[u8],
) -> int32x4_t {
    let mut acc = acc;
    for (k, vk) in v.into_iter().enumerate() {
        let e = 128 * n + 32 * k + 16 * h;
        // SAFETY: 16 activation bytes at 4 + e <= 244 inside the 292-byte Q8_K block.
        unsafe {
            let ya = vld1q_s8(y[4 + e..].as_ptr() as *const i8);
            acc = vmlaq_n_s32(acc, dot16::<DOT>(vdupq_n_s32(0), vk, ya), scales[e / 16]);
        }
    }
    acc
}

/// Q2_K: `d·d8·Σ_j (sc_j & 15)·Σq·a − dmin·d8·Σ_j (sc_j >> 4)·bsum_j` over sub-blocks of 16,
/// the 2-bit values used as they are (0..=3).
#[inline(always)]
unsafe fn q2_k<const DOT: bool>(row: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in row.chunks_exact(84).zip(a.chunks_exact(292)) {
        let (d8, bs) = q8_k_head(y);
        let scales: [i32; 16] = std::array::from_fn(|j| (x[j] & 15) as i32);
        let msum: i32 = (0..16).map(|j| (x[j] >> 4) as i32 * bs[j]).sum();
        let mut acc = vdupq_n_s32(0);
        for n in 0..2 {
            for h in 0..2 {
                // SAFETY: 16 quant bytes at 16 + 32n + 16h inside the 84-byte block; `y` is a
                // whole Q8_K block.
                unsafe {
                    let q = vld1q_u8(x[16 + 32 * n + 16 * h..].as_ptr());
                    acc = scaled_quad::<DOT>(acc, crumbs(q), (n, h), &scales, y);
                }
            }
        }
        let isum = vaddvq_s32(acc);
        sum += f16_at(x, 80) * d8 * isum as f32 - f16_at(x, 82) * d8 * msum as f32;
    }
    sum
}

/// Q3_K: `d·d8·Σ_j (sc_j − 32)·Σ v·a` over sub-blocks of 16, the 3-bit values as signed bytes
/// `v = low − 4` where the element's hmask bit is clear, `low` where it is set (−4..=3). Each
/// super-block's sum is one exact integer before the float multiply (no cancellation between
/// lanes).
#[inline(always)]
unsafe fn q3_k<const DOT: bool>(row: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in row.chunks_exact(110).zip(a.chunks_exact(292)) {
        let d8 = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        let scales = crate::reference::kquants::q3_k_scales(&x[96..108]);
        let mut acc = vdupq_n_s32(0);
        for n in 0..2 {
            for h in 0..2 {
                // SAFETY: 16 quant bytes at 32 + 32n + 16h and 16 hmask bytes at 16h inside the
                // 110-byte block; `y` is a whole Q8_K block.
                unsafe {
                    let low = crumbs(vld1q_u8(x[32 + 32 * n + 16 * h..].as_ptr()));
                    let hm = vld1q_u8(x[16 * h..].as_ptr());
                    let v = std::array::from_fn(|k| {
                        // element 128n + 32k + l has its high bit at bit 4n + k of hmask[l]
                        let set = vtstq_u8(hm, vdupq_n_u8(1 << (4 * n + k)));
                        let off = vbicq_u8(vdupq_n_u8(4), set);
                        vsubq_s8(low[k], vreinterpretq_s8_u8(off))
                    });
                    acc = scaled_quad::<DOT>(acc, v, (n, h), &scales, y);
                }
            }
        }
        sum += f16_at(x, 108) * d8 * vaddvq_s32(acc) as f32;
    }
    sum
}

/// The float weight types, as the const parameter of [`float_row`].
const F16: u8 = 0;
const BF16: u8 = 1;
const F32: u8 = 2;

/// Four f16 (as bits) converted to f32, exactly, with `fcvtl` (base AArch64 Advanced SIMD;
/// written as inline assembly because the `vcvt_f32_f16` intrinsic is stable only since Rust
/// 1.94, newer than the workspace's `rust-version`).
#[inline(always)]
unsafe fn f16x4(h: uint16x4_t) -> float32x4_t {
    let f: float32x4_t;
    // SAFETY: `fcvtl` exists on every AArch64 CPU; it reads only `h` and writes only `f`.
    unsafe {
        asm!(
            "fcvtl {f:v}.4s, {h:v}.4h",
            f = lateout(vreg) f,
            h = in(vreg) h,
            options(pure, nomem, nostack),
        );
    }
    f
}

/// Four weights from element `i` of a float row at `p`, converted to f32 exactly (BF16: the
/// bits shifted into the high half of an f32).
#[inline(always)]
unsafe fn weights4<const KIND: u8>(p: *const u8, i: usize) -> float32x4_t {
    // SAFETY: the caller points `p` at a row with elements i .. i + 4.
    unsafe {
        match KIND {
            F16 => f16x4(vreinterpret_u16_u8(vld1_u8(p.add(2 * i)))),
            BF16 => vreinterpretq_f32_u32(vshll_n_u16::<16>(vreinterpret_u16_u8(vld1_u8(
                p.add(2 * i),
            )))),
            _ => vreinterpretq_f32_u8(vld1q_u8(p.add(4 * i))),
        }
    }
}

/// Weight `i` of a float row, as f32 (the scalar tail).
#[inline(always)]
fn weight1<const KIND: u8>(row: &[u8], i: usize) -> f32 {
    match KIND {
        F16 => f16_at(row, 2 * i),
        BF16 => f32::from_bits((u16::from_le_bytes([row[2 * i], row[2 * i + 1]]) as u32) << 16),
        _ => f32::from_le_bytes([row[4 * i], row[4 * i + 1], row[4 * i + 2], row[4 * i + 3]]),
    }
}

/// A float row (F16, BF16 or F32 by `KIND`) against f32 activations: `Σ w_i·a_i`, 16 elements
/// at a time into four independent 4-lane fused multiply-add accumulators, then four at a time
/// into the first, then the last `cols % 4` one by one.
#[inline(always)]
unsafe fn float_row<const KIND: u8>(row: &[u8], a: &[f32]) -> f32 {
    let cols = a.len();
    let (c16, c4) = (cols / 16 * 16, cols / 4 * 4);
    let (w, x) = (row.as_ptr(), a.as_ptr());
    // SAFETY: `row` holds `cols` weights of the kind (checked by `dot_rows`), `a` `cols` floats;
    // every vector load covers elements i .. i + 4 with i + 4 <= c4 <= cols.
    let mut t = unsafe {
        let mut s = [vdupq_n_f32(0.0); 4];
        for i in (0..c16).step_by(16) {
            for (k, sk) in s.iter_mut().enumerate() {
                let e = i + 4 * k;
                *sk = vfmaq_f32(*sk, weights4::<KIND>(w, e), vld1q_f32(x.add(e)));
            }
        }
        for i in (c16..c4).step_by(4) {
            s[0] = vfmaq_f32(s[0], weights4::<KIND>(w, i), vld1q_f32(x.add(i)));
        }
        vaddvq_f32(vaddq_f32(vaddq_f32(s[0], s[1]), vaddq_f32(s[2], s[3])))
    };
    for (i, ai) in a.iter().enumerate().skip(c4) {
        t += weight1::<KIND>(row, i) * ai;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The base-NEON sums equal the `sdot` ones bit for bit (the tier test runs whichever the
    /// CPU has; QEMU has both).
    #[test]
    fn base_and_dotprod_paths_agree() {
        if !crate::dispatch::Features::get().dotprod {
            eprintln!("skipped: this CPU has no dot-product extension");
            return;
        }
        let mut s = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        use GgmlType as T;
        for ty in crate::dot::tests::QUANTIZED {
            let cols = 512;
            let rows = 3;
            let rb = ty.row_bytes(cols as u64).unwrap() as usize;
            let mut w: Vec<u8> = (0..rb * rows).map(|_| next() as u8).collect();
            // finite f16 scales (the random bytes are left in the quants)
            let scale_at: &[usize] = match ty {
                T::Q6_K => &[208],
                T::Q3_K => &[108],
                T::Q2_K => &[80, 82],
                T::Q4_1 | T::Q5_1 | T::Q4_K | T::Q5_K => &[0, 2],
                _ => &[0],
            };
            for blk in w.chunks_exact_mut(ty.type_size()) {
                for &o in scale_at {
                    blk[o..o + 2]
                        .copy_from_slice(&half::f16::from_f32(0.01).to_bits().to_le_bytes());
                }
            }
            let vt = crate::reference::vec_dot_type(ty);
            let x: Vec<f32> = (0..cols)
                .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let mut a = vec![0u8; vt.row_bytes(cols as u64).unwrap() as usize];
            crate::reference::engine_quantize_fn(vt).unwrap()(&x, &mut a);
            let (mut base, mut dot) = (vec![0f32; rows], vec![0f32; rows]);
            // SAFETY: the test runs only where the CPU has NEON and the dot-product extension.
            unsafe {
                dot_rows(false, ty, cols, &w, Act::Quant(&a), &mut base);
                dot_rows(true, ty, cols, &w, Act::Quant(&a), &mut dot);
            }
            assert_eq!(base, dot, "{ty}");
        }
    }

    /// The float rows against the reference for every tail length (`cols % 16` and `cols % 4`
    /// both from 0 to their maximum), including rows shorter than one vector.
    #[test]
    fn float_rows_every_tail() {
        let mut rng = crate::dot::tests::Rng(0x0f1e_2d3c_4b5a_6978);
        for ty in [GgmlType::F16, GgmlType::BF16, GgmlType::F32] {
            for cols in 1..=40usize {
                let rows = 2;
                let vals: Vec<f32> = (0..cols * rows).map(|_| rng.unit() * 4.0).collect();
                let w: Vec<u8> = vals
                    .iter()
                    .flat_map(|&v| match ty {
                        GgmlType::F16 => half::f16::from_f32(v).to_bits().to_le_bytes().to_vec(),
                        GgmlType::BF16 => half::bf16::from_f32(v).to_bits().to_le_bytes().to_vec(),
                        _ => v.to_le_bytes().to_vec(),
                    })
                    .collect();
                let x: Vec<f32> = (0..cols).map(|_| rng.unit()).collect();
                let (mut got, mut want) = (vec![0f32; rows], vec![0f32; rows]);
                // SAFETY: NEON is baseline on AArch64; the buffers hold `rows` rows of `cols`.
                unsafe { dot_rows(false, ty, cols, &w, Act::F32(&x), &mut got) };
                super::super::scalar_rows(ty, cols, &w, Act::F32(&x), &mut want);
                for (r, (g, e)) in got.iter().zip(&want).enumerate() {
                    // Σ|w·a| (before the weights' rounding to the type: close enough for a bound)
                    let row = &vals[r * cols..(r + 1) * cols];
                    let mag: f32 = row.iter().zip(&x).map(|(v, a)| (v * a).abs()).sum();
                    assert!(
                        (g - e).abs() <= 2e-6 * mag,
                        "{ty} cols {cols} row {r}: {g} vs reference {e}"
                    );
                }
            }
        }
    }
}
