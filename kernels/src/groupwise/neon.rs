//! aarch64 NEON group-wise row kernel for [`super::dot_rows`]: each chunk's codes widened to
//! signed bytes (2/3/4-bit codes as they are, 8-bit ones as stored, `q − 128`), the exact
//! `Σ q'·a` from `sdot` or `smull`/`sadalp` ([`crate::dot::neon`]'s `dot32`), then the split
//! form of the x86 kernels: `Σ_g s_g·Σ_c d_c·Σq'·a − Σ_g s_g·z'_g·Σ_c d_c·Σa`.

use super::{GroupAct, GroupRows, CHUNK};
use crate::dot::neon::dot32;
use crate::reference::f16_at;
use std::arch::aarch64::*;

/// # Safety
/// The CPU must have NEON, and with `dotprod` the dot-product extension; `out` has one value
/// per row of `w` and `act` one chunk per 32 columns (as [`super::dot_rows`] checks).
pub unsafe fn dot_rows(dotprod: bool, w: &GroupRows<'_>, act: &GroupAct, out: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if dotprod {
            rows_dotprod(w, act, out)
        } else {
            rows_base(w, act, out)
        }
    }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn rows_dotprod(w: &GroupRows<'_>, act: &GroupAct, out: &mut [f32]) {
    // SAFETY: the features are enabled; sizes are the caller's contract.
    unsafe { rows::<true>(w, act, out) }
}

#[target_feature(enable = "neon")]
unsafe fn rows_base(w: &GroupRows<'_>, act: &GroupAct, out: &mut [f32]) {
    // SAFETY: as above.
    unsafe { rows::<false>(w, act, out) }
}

/// The chunk at `p` as two registers of signed bytes `q'` (codes 0..16, then 16..32).
#[inline(always)]
unsafe fn chunk(bits: u32, p: *const u8) -> [int8x16_t; 2] {
    // SAFETY: `p` points at one whole chunk of `bits`.
    unsafe {
        match bits {
            8 => [vld1q_s8(p as *const i8), vld1q_s8(p.add(16) as *const i8)],
            4 => {
                let q = vld1q_u8(p);
                [
                    vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(15))),
                    vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)),
                ]
            }
            _ => {
                // byte j of the 8 holds codes j, j+8, j+16, j+24 in bit pairs 0, 2, 4, 6
                let b = vld1_u8(p);
                let m = vdup_n_u8(3);
                let c0 = vcombine_u8(vand_u8(b, m), vand_u8(vshr_n_u8::<2>(b), m));
                let c1 = vcombine_u8(vand_u8(vshr_n_u8::<4>(b), m), vshr_n_u8::<6>(b));
                let (c0, c1) = if bits == 3 {
                    let hi = (p.add(8) as *const u32).read_unaligned();
                    (
                        vorrq_u8(c0, high_bit(hi as u16)),
                        vorrq_u8(c1, high_bit((hi >> 16) as u16)),
                    )
                } else {
                    (c0, c1)
                };
                [vreinterpretq_s8_u8(c0), vreinterpretq_s8_u8(c1)]
            }
        }
    }
}

/// Bit j of `h` as byte j holding 4 (set) or 0.
#[inline(always)]
unsafe fn high_bit(h: u16) -> uint8x16_t {
    let bytes = vcombine_u8(vdup_n_u8(h as u8), vdup_n_u8((h >> 8) as u8));
    let masks: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: 16 bytes.
    let set = vtstq_u8(bytes, unsafe { vld1q_u8(masks.as_ptr()) });
    vandq_u8(set, vdupq_n_u8(4))
}

#[inline(always)]
unsafe fn rows<const DOT: bool>(w: &GroupRows<'_>, act: &GroupAct, out: &mut [f32]) {
    let bits = w.spec.bits;
    let cb = w.spec.chunk_bytes();
    let nc = w.cols / CHUNK;
    let per_group = w.spec.group / CHUNK;
    let ng = nc.div_ceil(per_group);
    let bias = w.spec.code_bias() as f32;
    for (r, o) in out.iter_mut().enumerate() {
        let mut sum = 0f32;
        let mut corr = 0f32;
        for g in 0..ng {
            let mut gsum = 0f32;
            let mut zsum = 0f32;
            for c in g * per_group..((g + 1) * per_group).min(nc) {
                let blk = &act.q8[c * 34..(c + 1) * 34];
                // SAFETY: chunk c of row r lies inside `w.codes`; the activation block has 34
                // bytes, its 32 values from byte 2.
                let idot = unsafe {
                    let q = chunk(bits, w.codes.as_ptr().add((r * nc + c) * cb));
                    dot32::<DOT>(q, blk.as_ptr().add(2))
                };
                gsum += f16_at(blk, 0) * idot as f32;
                zsum += act.sums[c];
            }
            let k = r * ng + g;
            let s = half::f16::from_bits(w.scales[k]).to_f32();
            sum += s * gsum;
            corr += s * (f32::from(w.zeros[k]) - bias) * zsum;
        }
        *o = sum - corr;
    }
}
