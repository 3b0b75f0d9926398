//! The repacking against the codes it was given, the spec against plain f64 arithmetic on the
//! dequantized weights and activations, and every tier against the spec.

use super::*;
use crate::dot::tests::{tiers, Rng};

/// A random matrix: codes over the whole range, zero points up to `2^bits` (GPTQ v1's wrapped
/// zero), f16 scales that are sometimes zero, subnormal or huge.
fn random_matrix(
    bits: u32,
    group: usize,
    rows: usize,
    cols: usize,
    rng: &mut Rng,
) -> (GroupMatrix, Vec<u8>, Vec<f32>, Vec<u32>) {
    let spec = GroupSpec::new(bits, group, cols).unwrap();
    let groups = spec.groups(cols);
    let codes: Vec<u8> = (0..rows * cols)
        .map(|_| (rng.next() % (1 << bits)) as u8)
        .collect();
    let special = [0.0f32, 6.0e-8, 65504.0, -3.0e4, 1.0e-3];
    let scales: Vec<f32> = (0..rows * groups)
        .map(|_| {
            let v = if rng.next() % 8 == 0 {
                special[(rng.next() % special.len() as u64) as usize]
            } else {
                rng.unit() * 0.05
            };
            half::f16::from_f32(v).to_f32()
        })
        .collect();
    let zeros: Vec<u32> = (0..rows * groups)
        .map(|_| (rng.next() % ((1 << bits) + 1)) as u32)
        .collect();
    let m = GroupMatrix::from_codes(spec, rows, cols, &codes, &scales, &zeros).unwrap();
    (m, codes, scales, zeros)
}

fn activations(cols: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    let mut outlier: Vec<f32> = (0..cols).map(|_| rng.unit() * 0.01).collect();
    outlier[cols / 3] = -300.0;
    vec![
        (0..cols).map(|_| rng.unit()).collect(),
        outlier,
        vec![0.0; cols],
    ]
}

fn dequantized_act(act: &GroupAct) -> Vec<f32> {
    let mut a = vec![0f32; act.chunks() * CHUNK];
    crate::reference::dequantize_row(GgmlType::Q8_0, &act.q8, &mut a).unwrap();
    a
}

const SHAPES: [(u32, usize, usize); 13] = [
    (4, 128, 512),
    (4, 128, 576),
    (2, 64, 96),
    (8, 256, 160),
    (4, 32, 256),
    (4, 0, 384),
    (2, 32, 256),
    (2, 64, 512),
    (3, 128, 384),
    (3, 32, 256),
    (8, 128, 512),
    (8, 0, 256),
    (4, 64, 1536),
];

#[test]
fn repacking_keeps_every_code_scale_and_zero() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for (bits, group, cols) in SHAPES {
        let rows = 3;
        let (m, codes, scales, zeros) = random_matrix(bits, group, rows, cols, &mut rng);
        let gs = m.spec.group;
        let mut out = vec![0f32; cols];
        for r in 0..rows {
            m.dequantize_row(r, &mut out);
            for c in 0..cols {
                let k = r * m.groups() + c / gs;
                let want = scales[k] * (codes[r * cols + c] as i32 - zeros[k] as i32) as f32;
                assert_eq!(
                    out[c].to_bits(),
                    want.to_bits(),
                    "{bits}-bit group {group}: row {r} column {c}"
                );
            }
        }
    }
}

#[test]
fn the_spec_is_the_dot_product_of_the_dequantized_rows() {
    let mut rng = Rng(0x0dd5_eed0_f00d_0003);
    for (bits, group, cols) in SHAPES {
        let rows = 4;
        let (m, ..) = random_matrix(bits, group, rows, cols, &mut rng);
        let w = m.rows(0, rows);
        for x in activations(cols, &mut rng) {
            let mut act = GroupAct::default();
            act.quantize(&x);
            let a = dequantized_act(&act);
            let mut wf = vec![0f32; cols];
            for r in 0..rows {
                m.dequantize_row(r, &mut wf);
                let exact: f64 = wf.iter().zip(&a).map(|(w, a)| *w as f64 * *a as f64).sum();
                let mag: f64 = wf
                    .iter()
                    .zip(&a)
                    .map(|(w, a)| (*w as f64 * *a as f64).abs())
                    .sum();
                let got = reference_dot(&w, r, &act) as f64;
                assert!(
                    (got - exact).abs() <= 1e-5 * mag + 1e-30,
                    "{bits}-bit group {group} row {r}: {got} vs {exact}"
                );
            }
        }
    }
}

#[test]
fn every_tier_matches_the_spec() {
    let mut rng = Rng(0x5eed_1234_abcd_0002);
    for (bits, group, cols) in SHAPES {
        // 7 rows: one pass of four, then three alone; a view that starts at row 2
        let rows = 9;
        let (m, ..) = random_matrix(bits, group, rows, cols, &mut rng);
        let w = m.rows(2, 7);
        let bias = m.spec.code_bias() as f64;
        for x in activations(cols, &mut rng) {
            let mut act = GroupAct::default();
            act.quantize(&x);
            let a = dequantized_act(&act);
            for tier in tiers() {
                let mut out = vec![0f32; 7];
                dot_rows(tier, &w, &act, &mut out);
                for (r, &got) in out.iter().enumerate() {
                    let want = reference_dot(&w, r, &act) as f64;
                    // the size of both terms of the split form, which the float error scales with
                    let mut codes = [0u8; CHUNK];
                    let mut mag = 0f64;
                    for c in 0..cols / CHUNK {
                        w.unpack_chunk(r, c, &mut codes);
                        let k = r * m.groups() + c * CHUNK / m.spec.group;
                        let s = half::f16::from_bits(w.scales[k]).to_f64();
                        let z = w.zeros[k] as f64 - bias;
                        for j in 0..CHUNK {
                            let av = a[c * CHUNK + j] as f64;
                            mag += (s * (codes[j] as f64 - bias) * av).abs() + (s * z * av).abs();
                        }
                    }
                    let tol = 2e-6 * mag + 1e-30;
                    assert!(
                        (got as f64 - want).abs() <= tol,
                        "{bits}-bit group {group} cols {cols} row {r} tier {}: {got} vs spec {want} (tolerance {tol})",
                        tier.name()
                    );
                }
            }
        }
    }
}

#[test]
fn bad_shapes_and_values_are_refused() {
    assert_eq!(GroupSpec::new(5, 128, 256), Err(GroupError::Bits(5)));
    assert!(matches!(
        GroupSpec::new(4, 48, 96),
        Err(GroupError::Group { .. })
    ));
    assert!(matches!(
        GroupSpec::new(4, 128, 200),
        Err(GroupError::Group { .. })
    ));
    let spec = GroupSpec::new(4, 32, 32).unwrap();
    let ok = |codes: &[u8], s: f32, z: u32| GroupMatrix::from_codes(spec, 1, 32, codes, &[s], &[z]);
    assert!(ok(&[15; 32], 0.5, 16).is_ok());
    assert_eq!(
        ok(&[16; 32], 0.5, 8).unwrap_err(),
        GroupError::Code { code: 16, bits: 4 }
    );
    assert_eq!(
        ok(&[1; 32], 0.5, 17).unwrap_err(),
        GroupError::Zero { zero: 17, bits: 4 }
    );
    assert_eq!(ok(&[1; 32], 0.1, 8).unwrap_err(), GroupError::Scale(0.1));
    assert!(matches!(
        ok(&[1; 31], 0.5, 8).unwrap_err(),
        GroupError::Size { what: "codes", .. }
    ));
}

/// Base NEON (`smull`/`sadalp`) and `sdot` (where the CPU has it) both against the spec.
#[cfg(target_arch = "aarch64")]
#[test]
fn both_neon_paths_match_the_spec() {
    if !Tier::supported(Tier::Neon) {
        eprintln!("skipped: NEON (this CPU lacks it)");
        return;
    }
    let dotprod = crate::dispatch::Features::get().dotprod;
    if !dotprod {
        eprintln!("skipped: sdot (this CPU lacks the dot-product extension); base NEON only");
    }
    let mut rng = Rng(0x0a11_ce5e_ed00_0004);
    for (bits, group, cols) in SHAPES {
        let (m, ..) = random_matrix(bits, group, 5, cols, &mut rng);
        let w = m.rows(0, 5);
        let mut act = GroupAct::default();
        act.quantize(&activations(cols, &mut rng)[0]);
        for with_sdot in [false, dotprod] {
            let mut out = vec![0f32; 5];
            // SAFETY: NEON was checked above, `sdot` only where detected; sizes match.
            unsafe { neon::dot_rows(with_sdot, &w, &act, &mut out) };
            for (r, &got) in out.iter().enumerate() {
                let want = reference_dot(&w, r, &act);
                let tol = 1e-4 * want.abs().max(1.0);
                assert!(
                    (got - want).abs() <= tol,
                    "{bits}-bit row {r} sdot {with_sdot}: {got} vs {want}"
                );
            }
        }
    }
}
