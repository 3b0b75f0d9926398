//! Every tier against the scalar reference ([`crate::reference::vec_dot`]) on random blocks,
//! with zero, tiny (subnormal) and extreme (f16 max) scales, an activation outlier, rows of
//! zeros, and float (F16/BF16/F32) rows with ragged tails.

use super::*;
use crate::reference::dequantize_row;

pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn unit(&mut self) -> f32 {
        (self.next() % 2_000_001) as f32 / 1_000_000.0 - 1.0
    }
}

/// Byte offsets of the f16 scales in one block of `ty`.
fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    use GgmlType as T;
    match ty {
        T::Q4_0 | T::Q5_0 | T::Q8_0 => &[0],
        T::Q4_1 | T::Q5_1 | T::Q4_K | T::Q5_K => &[0, 2],
        T::Q6_K => &[208],
        T::Q2_K => &[80, 82],
        T::Q3_K => &[108],
        _ => &[],
    }
}

/// Weight rows of random bytes whose scales are drawn from ordinary, zero, subnormal and
/// extreme f16 values.
fn weight_rows(ty: GgmlType, cols: usize, rows: usize, rng: &mut Rng) -> Vec<u8> {
    let rb = ty.row_bytes(cols as u64).unwrap() as usize;
    let mut w: Vec<u8> = (0..rb * rows).map(|_| rng.next() as u8).collect();
    if ty == GgmlType::F16 {
        for c in w.chunks_exact_mut(2) {
            let v = half::f16::from_f32(rng.unit() * 4.0);
            c.copy_from_slice(&v.to_bits().to_le_bytes());
        }
        return w;
    }
    if ty == GgmlType::BF16 {
        for c in w.chunks_exact_mut(2) {
            let v = half::bf16::from_f32(rng.unit() * 4.0);
            c.copy_from_slice(&v.to_bits().to_le_bytes());
        }
        return w;
    }
    if ty == GgmlType::F32 {
        for c in w.chunks_exact_mut(4) {
            c.copy_from_slice(&(rng.unit() * 4.0).to_le_bytes());
        }
        return w;
    }
    let special = [0.0f32, 6.0e-8, 65504.0, -65504.0, 1.0e-3];
    for blk in w.chunks_exact_mut(ty.type_size()) {
        for &off in scale_offsets(ty) {
            let v = if rng.next() & 7 == 0 {
                special[(rng.next() % special.len() as u64) as usize]
            } else {
                rng.unit() * 0.05
            };
            blk[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
        }
    }
    w
}

/// Σ |w·a| over the dequantized values: the size the float summation error scales with.
fn magnitude(ty: GgmlType, cols: usize, row: &[u8], act: Act<'_>) -> f64 {
    let mut wf = vec![0f32; cols];
    dequantize_row(ty, row, &mut wf).unwrap();
    let af = match act {
        Act::F32(a) => a.to_vec(),
        Act::Quant(a) => {
            let mut af = vec![0f32; cols];
            dequantize_row(reference::vec_dot_type(ty), a, &mut af).unwrap();
            af
        }
    };
    wf.iter()
        .zip(&af)
        .map(|(w, a)| (*w as f64 * *a as f64).abs())
        .sum()
}

/// The tiers this CPU runs (the others are reported as skipped).
pub(crate) fn tiers() -> Vec<Tier> {
    let all = [Tier::Scalar, Tier::Neon, Tier::Avx2, Tier::Avx512];
    let (run, skip): (Vec<Tier>, Vec<Tier>) = all.into_iter().partition(|&t| Tier::supported(t));
    for t in skip {
        eprintln!("skipped: tier {} (this CPU lacks it)", t.name());
    }
    run
}

/// The quantized types with SIMD kernels (every tier has them).
pub(crate) const QUANTIZED: [GgmlType; 10] = {
    use GgmlType as T;
    [
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
    ]
};

#[test]
fn every_tier_matches_the_reference() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    use GgmlType as T;
    for ty in QUANTIZED.into_iter().chain([T::F16, T::BF16, T::F32]) {
        for cols in [256usize, 512, 1536] {
            let cols = if takes_f32(ty) { cols + 11 } else { cols };
            let rows = 5;
            let w = weight_rows(ty, cols, rows, &mut rng);
            let rb = w.len() / rows;
            // activation rows: ordinary, one huge outlier, and all zeros
            let mut xs: Vec<Vec<f32>> = vec![(0..cols).map(|_| rng.unit()).collect()];
            let mut outlier: Vec<f32> = (0..cols).map(|_| rng.unit() * 0.01).collect();
            outlier[cols / 3] = -300.0;
            xs.push(outlier);
            xs.push(vec![0.0; cols]);
            for (xi, x) in xs.iter().enumerate() {
                let vt = reference::vec_dot_type(ty);
                let mut q = vec![0u8; vt.row_bytes(cols as u64).map_or(0, |b| b as usize)];
                let act = if takes_f32(ty) {
                    Act::F32(x)
                } else {
                    reference::engine_quantize_fn(vt).unwrap()(x, &mut q);
                    Act::Quant(&q)
                };
                for tier in tiers() {
                    let mut out = vec![0f32; rows];
                    dot_rows(tier, ty, cols, &w, act, &mut out);
                    for (r, &got) in out.iter().enumerate() {
                        let row = &w[r * rb..(r + 1) * rb];
                        let want = match act {
                            Act::Quant(a) => reference::vec_dot(ty, cols, row, a).unwrap() as f64,
                            Act::F32(a) => {
                                let mut wf = vec![0f32; cols];
                                dequantize_row(ty, row, &mut wf).unwrap();
                                wf.iter().zip(a).map(|(w, a)| *w as f64 * *a as f64).sum()
                            }
                        };
                        let tol = 2e-6 * magnitude(ty, cols, row, act) + 1e-30;
                        assert!(
                            (got as f64 - want).abs() <= tol,
                            "{ty} cols {cols} row {r} activation row {xi} tier {}: {got} vs reference {want} (tolerance {tol})",
                            tier.name()
                        );
                    }
                }
            }
        }
    }
}

/// NEON has a kernel for every type the x86 tiers have (so `doctor` reports the same tier for
/// all of them on either architecture).
#[test]
fn neon_covers_the_x86_types() {
    for &ty in GgmlType::ALL {
        assert_eq!(neon_handles(ty), has_simd(ty), "{ty}");
    }
}

/// Several tokens at once ([`dot_rows_multi`], the batched decode of several sequences) give
/// every (row, token) exactly what [`dot_rows`] gives that token alone, on every tier: 1 to 10,
/// 17 and 19 tokens (groups of eight or four and the rest), odd row counts, every type (those
/// without a several-token kernel go token by token).
#[test]
fn several_tokens_equal_each_alone() {
    let mut rng = Rng(0x5eed_4321_0bad_cafe);
    for ty in QUANTIZED {
        let cols = 512;
        for rows in [1usize, 2, 5, 8] {
            let w = weight_rows(ty, cols, rows, &mut rng);
            let vt = reference::vec_dot_type(ty);
            let q = reference::engine_quantize_fn(vt).unwrap();
            let ab = vt.row_bytes(cols as u64).unwrap() as usize;
            for n in (1..=10usize).chain([17, 19]) {
                let acts: Vec<Vec<u8>> = (0..n)
                    .map(|t| {
                        let mut x: Vec<f32> = (0..cols).map(|_| rng.unit()).collect();
                        if t == 1 {
                            x[7] = 90.0;
                        }
                        let mut a = vec![0u8; ab];
                        q(&x, &mut a);
                        a
                    })
                    .collect();
                let act: Vec<Act> = acts.iter().map(|a| Act::Quant(a)).collect();
                for &tier in &tiers() {
                    let mut got = vec![vec![f32::NAN; rows]; n];
                    let mut outs: Vec<&mut [f32]> = got.iter_mut().map(|o| &mut o[..]).collect();
                    dot_rows_multi(tier, ty, cols, &w, &act, &mut outs);
                    for t in 0..n {
                        let mut want = vec![0f32; rows];
                        dot_rows(tier, ty, cols, &w, act[t], &mut want);
                        let same = got[t]
                            .iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "{ty} {} rows {rows} n {n} token {t}: {:?} vs {want:?}",
                            tier.name(),
                            got[t]
                        );
                    }
                }
            }
        }
    }
}
