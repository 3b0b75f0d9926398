//! Group-wise integer weights, as auto_round, GPTQ and AWQ checkpoints hold them: INT2, INT3,
//! INT4 and INT8 codes `q`, one f16 scale `s` and one zero point `z` per group of `group`
//! consecutive input columns (any multiple of 32, or the whole row), sym or asym; a weight is
//! `s · (q − z)`.
//!
//! The checkpoints' packing (GPTQ's words run down the *input* dimension, AWQ's across eight
//! outputs) suits GPU kernels, not a row-at-a-time CPU dot product, so a [`GroupMatrix`] holds
//! the same codes repacked at load, row after row, in 32-code chunks laid out for SIMD
//! unpacking (the scales keep their f16 bits, the zero points become u16). Repacking is exact: it
//! moves bits and never rounds.
//!
//! Chunk layouts (codes `c_0 … c_31` of one row):
//!
//! | bits | bytes | layout |
//! |---|---:|---|
//! | 8 | 32 | byte j = `c_j − 128` (as i8) |
//! | 4 | 16 | byte j = `c_j | c_{j+16} << 4` (Q4_0's nibble order) |
//! | 3 | 12 | 8 bytes of the low two bits as for 2 bits, then a u32 whose bit j is bit 2 of `c_j` |
//! | 2 | 8 | byte j = `c_j | c_{j+8} << 2 | c_{j+16} << 4 | c_{j+24} << 6` |
//!
//! **The dot product** ([`dot_rows`]): the activation row is quantized per 32 values to Q8_0
//! (`x ≈ d_c · a`, llama.cpp's activation quantizer) with exact per-chunk sums
//! ([`GroupAct`]). The spec ([`reference_dot`]) forms, per chunk, the exact integer
//! `Σ (q − z)·a` and adds `s · d_c ·` it in f32. The SIMD kernels split the zero point off:
//! `Σ_g s_g·Σ_c d_c·Σ q'·a − Σ_g s_g·z'_g·Σ_c d_c·Σa` (`q' = q`, `z' = z`, or both minus 128 for
//! 8 bits), which needs no per-chunk zero handling; they differ from the spec in float rounding
//! only (bounded in the tests relative to the size of both terms).

use crate::dispatch::Tier;
use crate::GgmlType;

#[cfg(target_arch = "aarch64")]
pub mod neon;
#[cfg(target_arch = "x86_64")]
pub mod x86;

/// Codes per chunk: the unit of the row layout and of the activation quantization.
pub const CHUNK: usize = 32;

/// What is wrong with a group-wise layer's shape or data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GroupError {
    #[error("{0} bits has no group-wise kernel (2, 3, 4 and 8 do)")]
    Bits(u32),
    #[error(
        "group size {group} with {cols} input columns: the kernels need both to be multiples of 32"
    )]
    Group { group: usize, cols: usize },
    #[error("{what}: {got} values, expected {want}")]
    Size {
        what: &'static str,
        got: usize,
        want: usize,
    },
    #[error("code {code} does not fit {bits} bits")]
    Code { code: u32, bits: u32 },
    #[error("zero point {zero} is out of range for {bits} bits")]
    Zero { zero: u32, bits: u32 },
    #[error("scale {0} is not an f16 value (the kernels keep the checkpoint's f16 scales)")]
    Scale(f32),
}

/// Bits and group size of a [`GroupMatrix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSpec {
    pub bits: u32,
    /// Input columns per group (a multiple of [`CHUNK`]).
    pub group: usize,
}

impl GroupSpec {
    /// Check that the kernels handle `bits` and `group` for rows of `cols` (`group == 0`: one
    /// group per row). The last group of a row may be short (576 columns in groups of 128 are
    /// four groups and one of 64), as auto_round pads them.
    pub fn new(bits: u32, group: usize, cols: usize) -> Result<GroupSpec, GroupError> {
        if !matches!(bits, 2 | 3 | 4 | 8) {
            return Err(GroupError::Bits(bits));
        }
        let group = if group == 0 { cols } else { group };
        if group == 0 || !group.is_multiple_of(CHUNK) || !cols.is_multiple_of(CHUNK) {
            return Err(GroupError::Group { group, cols });
        }
        Ok(GroupSpec { bits, group })
    }

    /// Groups in a row of `cols`.
    pub fn groups(self, cols: usize) -> usize {
        cols.div_ceil(self.group)
    }

    /// Bytes of one 32-code chunk.
    pub fn chunk_bytes(self) -> usize {
        4 * self.bits as usize
    }

    /// What stored codes are offset by: 128 for 8 bits (kept as i8), else 0.
    pub fn code_bias(self) -> i32 {
        if self.bits == 8 {
            128
        } else {
            0
        }
    }
}

/// A `rows × cols` matrix of group-wise integer weights in the row layout of the module docs.
#[derive(Debug, Clone)]
pub struct GroupMatrix {
    pub spec: GroupSpec,
    pub rows: usize,
    pub cols: usize,
    /// `rows × cols/32` chunks.
    codes: Vec<u8>,
    /// `rows × groups` f16 bits.
    scales: Vec<u16>,
    /// `rows × groups` zero points (as in the checkpoint, up to `2^bits`).
    zeros: Vec<u16>,
}

/// The rows `r0 .. r0 + n` of a [`GroupMatrix`], as the kernels read them.
#[derive(Clone, Copy)]
pub struct GroupRows<'a> {
    pub spec: GroupSpec,
    pub cols: usize,
    pub codes: &'a [u8],
    pub scales: &'a [u16],
    pub zeros: &'a [u16],
}

impl GroupMatrix {
    /// Repack codes (`rows × cols`, one per byte, row = output), scales and zero points
    /// (`rows × groups`, row-major) into the chunk layout. Scales must be f16 values, zero points at
    /// most `2^bits` (GPTQ v1's stored `2^bits − 1`, plus one).
    pub fn from_codes(
        spec: GroupSpec,
        rows: usize,
        cols: usize,
        codes: &[u8],
        scales: &[f32],
        zeros: &[u32],
    ) -> Result<GroupMatrix, GroupError> {
        let spec = GroupSpec::new(spec.bits, spec.group, cols)?;
        let groups = spec.groups(cols);
        let size = |what, got: usize, want: usize| {
            if got == want {
                Ok(())
            } else {
                Err(GroupError::Size { what, got, want })
            }
        };
        size("codes", codes.len(), rows * cols)?;
        size("scales", scales.len(), rows * groups)?;
        size("zero points", zeros.len(), rows * groups)?;
        let max = (1u32 << spec.bits) - 1;
        if let Some(&c) = codes.iter().find(|&&c| u32::from(c) > max) {
            return Err(GroupError::Code {
                code: c.into(),
                bits: spec.bits,
            });
        }
        // GPTQ v1 stores zero − 1 and readers add the 1 back unmasked: 2^b can come back
        if let Some(&z) = zeros.iter().find(|&&z| z > max + 1) {
            return Err(GroupError::Zero {
                zero: z,
                bits: spec.bits,
            });
        }
        let mut sc = Vec::with_capacity(scales.len());
        for &s in scales {
            let h = half::f16::from_f32(s);
            if h.to_f32() != s && !(s.is_nan() && h.is_nan()) {
                return Err(GroupError::Scale(s));
            }
            sc.push(h.to_bits());
        }
        let cb = spec.chunk_bytes();
        let mut packed = vec![0u8; rows * cols / CHUNK * cb];
        for (src, dst) in codes.chunks_exact(CHUNK).zip(packed.chunks_exact_mut(cb)) {
            pack_chunk(spec.bits, src, dst);
        }
        Ok(GroupMatrix {
            spec,
            rows,
            cols,
            codes: packed,
            scales: sc,
            zeros: zeros.iter().map(|&z| z as u16).collect(),
        })
    }

    /// Groups per row.
    pub fn groups(&self) -> usize {
        self.spec.groups(self.cols)
    }

    /// Bytes this matrix holds (codes, scales, zero points).
    pub fn bytes(&self) -> usize {
        self.codes.len() + 2 * self.scales.len() + 2 * self.zeros.len()
    }

    /// Rows `r0 .. r0 + n`.
    pub fn rows(&self, r0: usize, n: usize) -> GroupRows<'_> {
        let rb = self.cols / CHUNK * self.spec.chunk_bytes();
        let g = self.groups();
        GroupRows {
            spec: self.spec,
            cols: self.cols,
            codes: &self.codes[r0 * rb..(r0 + n) * rb],
            scales: &self.scales[r0 * g..(r0 + n) * g],
            zeros: &self.zeros[r0 * g..(r0 + n) * g],
        }
    }

    /// Row `r` as f32: `s · (q − z)`, exactly.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let rows = self.rows(r, 1);
        let mut codes = [0u8; CHUNK];
        for (c, o) in out[..self.cols].chunks_exact_mut(CHUNK).enumerate() {
            rows.unpack_chunk(0, c, &mut codes);
            let g = c * CHUNK / self.spec.group;
            let s = half::f16::from_bits(rows.scales[g]).to_f32();
            let z = i32::from(rows.zeros[g]);
            for (o, &q) in o.iter_mut().zip(&codes) {
                *o = s * (i32::from(q) - z) as f32;
            }
        }
    }
}

impl GroupRows<'_> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.scales.len() / self.spec.groups(self.cols)
    }

    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    /// The 32 codes of chunk `c` of row `r` (the original, unbiased codes).
    pub fn unpack_chunk(&self, r: usize, c: usize, out: &mut [u8; CHUNK]) {
        let cb = self.spec.chunk_bytes();
        let off = (r * self.cols / CHUNK + c) * cb;
        unpack_chunk(self.spec.bits, &self.codes[off..off + cb], out);
    }
}

/// Pack 32 codes into one chunk of `bits` (layouts in the module docs).
fn pack_chunk(bits: u32, c: &[u8], out: &mut [u8]) {
    match bits {
        8 => {
            for (o, &q) in out.iter_mut().zip(c) {
                *o = q.wrapping_sub(128);
            }
        }
        4 => {
            for j in 0..16 {
                out[j] = c[j] | c[j + 16] << 4;
            }
        }
        2 | 3 => {
            for j in 0..8 {
                out[j] =
                    (c[j] & 3) | (c[j + 8] & 3) << 2 | (c[j + 16] & 3) << 4 | (c[j + 24] & 3) << 6;
            }
            if bits == 3 {
                let hi = (0..32).fold(0u32, |h, j| h | u32::from(c[j] >> 2 & 1) << j);
                out[8..12].copy_from_slice(&hi.to_le_bytes());
            }
        }
        _ => unreachable!("bits checked by GroupSpec::new"),
    }
}

/// The 32 codes of one chunk.
fn unpack_chunk(bits: u32, p: &[u8], out: &mut [u8; CHUNK]) {
    match bits {
        8 => {
            for (o, &b) in out.iter_mut().zip(p) {
                *o = b.wrapping_add(128);
            }
        }
        4 => {
            for j in 0..16 {
                out[j] = p[j] & 15;
                out[j + 16] = p[j] >> 4;
            }
        }
        2 | 3 => {
            for j in 0..32 {
                out[j] = p[j % 8] >> (2 * (j / 8)) & 3;
            }
            if bits == 3 {
                let hi = u32::from_le_bytes([p[8], p[9], p[10], p[11]]);
                for (j, o) in out.iter_mut().enumerate() {
                    *o |= ((hi >> j & 1) as u8) << 2;
                }
            }
        }
        _ => unreachable!("bits checked by GroupSpec::new"),
    }
}

/// An activation row quantized for group-wise products: Q8_0 blocks (`d_c` f16, 32 × i8, as
/// llama.cpp quantizes activations) and, per chunk, `d_c · Σa` (exact in f32: an f16 times an
/// integer below 2^12).
#[derive(Debug, Clone, Default)]
pub struct GroupAct {
    pub q8: Vec<u8>,
    pub sums: Vec<f32>,
}

impl GroupAct {
    /// Quantize `x` (a multiple of 32 values) into this buffer (reused across tokens).
    pub fn quantize(&mut self, x: &[f32]) {
        assert!(
            x.len().is_multiple_of(CHUNK),
            "group-wise activations: whole chunks"
        );
        let nb = x.len() / CHUNK;
        self.q8.resize(nb * 34, 0);
        crate::dot::act::quantize(GgmlType::Q8_0, x, &mut self.q8);
        self.sums.clear();
        self.sums.extend(self.q8.chunks_exact(34).map(|b| {
            let d = crate::reference::f16_at(b, 0);
            let s: i32 = b[2..].iter().map(|&v| i32::from(v as i8)).sum();
            d * s as f32
        }));
    }

    /// Chunks in the row.
    pub fn chunks(&self) -> usize {
        self.sums.len()
    }
}

/// The spec: row `r` of `w` against `act`, per chunk the exact `Σ (q − z)·a` times `s · d_c`,
/// added in f32 in order.
pub fn reference_dot(w: &GroupRows<'_>, r: usize, act: &GroupAct) -> f32 {
    let mut codes = [0u8; CHUNK];
    let mut sum = 0f32;
    for (c, blk) in act.q8.chunks_exact(34).enumerate().take(w.cols / CHUNK) {
        w.unpack_chunk(r, c, &mut codes);
        let g = r * w.spec.groups(w.cols) + c * CHUNK / w.spec.group;
        let z = i32::from(w.zeros[g]);
        let s = half::f16::from_bits(w.scales[g]).to_f32();
        let d = crate::reference::f16_at(blk, 0);
        let idot: i32 = codes
            .iter()
            .zip(&blk[2..])
            .map(|(&q, &a)| (i32::from(q) - z) * i32::from(a as i8))
            .sum();
        sum += s * d * idot as f32;
    }
    sum
}

/// Whether tier `tier` has a SIMD kernel for group-wise rows (others run the spec).
pub fn has_simd_on(tier: Tier) -> bool {
    if tier == Tier::Neon {
        cfg!(target_arch = "aarch64")
    } else {
        tier >= Tier::Avx2 && cfg!(target_arch = "x86_64")
    }
}

/// `out[r] = dot(row r of w, act)` for every row of `w`, on `tier`.
///
/// # Panics
/// If `out` or `act` do not match `w`'s shape.
pub fn dot_rows(tier: Tier, w: &GroupRows<'_>, act: &GroupAct, out: &mut [f32]) {
    assert_eq!(out.len(), w.len(), "group-wise rows");
    assert_eq!(act.chunks(), w.cols / CHUNK, "group-wise activation row");
    #[cfg(target_arch = "x86_64")]
    if has_simd_on(tier) && Tier::supported(tier) {
        // SAFETY: `Tier::supported` checked the tier's features; sizes were checked above.
        unsafe { x86::dot_rows(tier >= Tier::Avx512, w, act, out) };
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if tier == Tier::Neon && Tier::supported(tier) {
        // SAFETY: `Tier::supported` checked NEON (and `dotprod` is passed as detected); sizes
        // were checked above.
        let dotprod = crate::dispatch::Features::get().dotprod;
        unsafe { neon::dot_rows(dotprod, w, act, out) };
        return;
    }
    let _ = tier;
    for (r, o) in out.iter_mut().enumerate() {
        *o = reference_dot(w, r, act);
    }
}

#[cfg(test)]
mod tests;
