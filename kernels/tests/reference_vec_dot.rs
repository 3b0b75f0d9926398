//! Activation quantizers and dot products of the scalar reference.
//!
//! * quantize → dequantize error: ggml's `test-quantize-fns` bound
//!   (`MAX_QUANTIZATION_TOTAL_ERROR` = 0.002 on its RMSE/n measure) plus a per-element bound of
//!   about half a quantization step.
//! * `vec_dot` against an f64 dot of the dequantized weights with the f32 activations, within
//!   `test-quantize-fns`'s `MAX_DOT_PRODUCT_ERROR` (0.02 per element; 0.04 for Q2_K, the
//!   `_LOWBIT` bound — ggml applies it to Q2_K, not Q3_K; we keep Q3_K at the stricter 0.02).
//! * `vec_dot` against an f64 dot of the dequantized weights with the *dequantized quantized*
//!   activations: the integer parts are exact, so only f32 rounding may differ (relative 2e-5
//!   of Σ|xᵢyᵢ|; Q4_1/Q5_1 additionally allow for the f16 rounding of Q8_1's `s = d·Σq`).
//!
//! Test data follows `test-quantize-fns`: `0.1 + 2·cos(i + offset)`.

use autoround_kernels::reference::{self, dequantize_row, quantize_row_to, vec_dot, vec_dot_type};
use autoround_kernels::{GgmlType, KernelError};

const N: usize = 32 * 128; // test-quantize-fns' test_size

fn generate_data(offset: f32, n: usize, amplitude: f32) -> Vec<f32> {
    (0..n)
        .map(|i| 0.1 + amplitude * (i as f32 + offset).cos())
        .collect()
}

/// test-quantize-fns' `array_rmse`: sqrt(Σ diff²) / n (sic).
fn array_rmse(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    (sum.sqrt() / a.len() as f64) as f32
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn sign(&mut self) -> f32 {
        if self.next() & 1 == 0 {
            1.0
        } else {
            -1.0
        }
    }
}

fn put_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
}

/// A weight row of `n` elements of `ty`: random quant bytes with scales chosen so the
/// dequantized weights are of order 1 (like real, normalised weights).
fn weight_row(ty: GgmlType, n: usize, rng: &mut Rng) -> Vec<u8> {
    use GgmlType as T;
    let size = ty.type_size();
    let mut out = vec![0u8; n / ty.block_size() * size];
    if !ty.is_quantized() {
        let x: Vec<f32> = (0..n).map(|_| rng.uniform(-2.0, 2.0)).collect();
        quantize_row_to(ty, &x, &mut out).unwrap();
        return out;
    }
    for b in out.chunks_exact_mut(size) {
        for x in b.iter_mut() {
            *x = rng.next() as u8;
        }
        match ty {
            T::Q4_0 => put_f16(b, 0, rng.sign() * rng.uniform(0.1, 0.3)),
            T::Q5_0 => put_f16(b, 0, rng.sign() * rng.uniform(0.05, 0.12)),
            T::Q8_0 => put_f16(b, 0, rng.uniform(0.005, 0.02)),
            T::IQ4_NL => put_f16(b, 0, rng.sign() * rng.uniform(0.005, 0.02)),
            T::Q4_1 => {
                put_f16(b, 0, rng.uniform(0.1, 0.25));
                put_f16(b, 2, rng.uniform(-2.0, 0.0));
            }
            T::Q5_1 => {
                put_f16(b, 0, rng.uniform(0.05, 0.12));
                put_f16(b, 2, rng.uniform(-2.0, 0.0));
            }
            T::Q2_K => {
                put_f16(b, 80, rng.uniform(0.01, 0.04));
                put_f16(b, 82, rng.uniform(0.005, 0.02));
            }
            T::Q3_K => put_f16(b, 108, rng.sign() * rng.uniform(0.005, 0.015)),
            T::Q4_K => {
                put_f16(b, 0, rng.uniform(0.001, 0.003));
                put_f16(b, 2, rng.uniform(0.001, 0.003));
            }
            T::Q5_K => {
                put_f16(b, 0, rng.uniform(0.0005, 0.0015));
                put_f16(b, 2, rng.uniform(0.001, 0.003));
            }
            T::Q6_K => put_f16(b, 208, rng.sign() * rng.uniform(0.0003, 0.0008)),
            T::IQ4_XS => put_f16(b, 0, rng.sign() * rng.uniform(0.0003, 0.0008)),
            T::MXFP4 => b[0] = 120 + (rng.next() % 8) as u8,
            other => panic!("no weight generator for {other}"),
        }
    }
    out
}

fn dequant(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; n];
    dequantize_row(ty, bytes, &mut y).unwrap();
    y
}

fn quant(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; x.len() / ty.block_size() * ty.type_size()];
    quantize_row_to(ty, x, &mut q).unwrap();
    q
}

/// The weight types with a reference dot product.
const DOT_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::MXFP4,
];

#[test]
fn vec_dot_types_follow_ggml() {
    use GgmlType as T;
    let expected = [
        (T::Q4_0, T::Q8_0),
        (T::Q5_0, T::Q8_0),
        (T::Q8_0, T::Q8_0),
        (T::Q4_1, T::Q8_1),
        (T::Q5_1, T::Q8_1),
        (T::Q2_K, T::Q8_K),
        (T::Q3_K, T::Q8_K),
        (T::Q4_K, T::Q8_K),
        (T::Q5_K, T::Q8_K),
        (T::Q6_K, T::Q8_K),
        (T::IQ4_NL, T::Q8_0),
        (T::IQ4_XS, T::Q8_K),
        (T::MXFP4, T::Q8_0),
        (T::F16, T::F16),
        (T::BF16, T::BF16),
        (T::F32, T::F32),
    ];
    for (w, a) in expected {
        assert_eq!(vec_dot_type(w), a, "{w}");
    }
    for &t in GgmlType::ALL {
        assert_eq!(
            reference::vec_dot_fn(t).is_some(),
            DOT_TYPES.contains(&t),
            "{t}"
        );
    }
}

#[test]
fn activation_quantizers_round_trip() {
    let x = generate_data(0.0, N, 2.0);
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q8_K,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::F32,
    ] {
        let q = quant(ty, &x);
        let y = dequant(ty, &q, N);
        let rmse = array_rmse(&x, &y);
        assert!(rmse < 0.002, "{ty}: total quantization error {rmse}");
        if ty == GgmlType::F32 {
            assert_eq!(x, y);
            continue;
        }
        // Per element: within about half a step of the block's scale.
        let block = ty.block_size();
        for (i, (xb, yb)) in x
            .chunks(block.max(1))
            .zip(y.chunks(block.max(1)))
            .enumerate()
        {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let bound = match ty {
                // d = amax/127 rounded to f16: 0.5 step plus 127 steps' worth of f16 rounding.
                GgmlType::Q8_0 | GgmlType::Q8_1 => amax / 127.0 * (0.5 + 127.0 / 2048.0) * 1.0001,
                // d stored as f32.
                GgmlType::Q8_K => amax / 127.0 * 0.5001,
                // Relative 2^-11 / 2^-8 (round to nearest), plus f16's subnormal spacing.
                GgmlType::F16 => xb[0].abs() / 2048.0 + 1e-7,
                GgmlType::BF16 => xb[0].abs() / 256.0,
                _ => unreachable!(),
            };
            for (a, b) in xb.iter().zip(yb) {
                assert!(
                    (a - b).abs() <= bound,
                    "{ty}: block {i}: {a} -> {b}, bound {bound}"
                );
            }
        }
    }
}

#[test]
fn q8_quantizers_edge_blocks() {
    // All zero: d = 0 and zero quants (and Q8_1's s = 0, Q8_K's bsums = 0).
    for ty in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        let q = quant(ty, &vec![0.0f32; 256]);
        assert!(q.iter().all(|&b| b == 0), "{ty}");
    }
    // One large negative value: it maps to -127 and the rest to 0.
    let mut x = vec![0.0f32; 256];
    x[7] = -1000.0;
    x[20] = 1.0; // same 32-block: 0.127 steps, rounds to 0
    for ty in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        let y = dequant(ty, &quant(ty, &x), 256);
        assert!(
            (y[7] + 1000.0).abs() < 1000.0 / 2048.0 + 1e-3,
            "{ty}: {}",
            y[7]
        );
        assert_eq!(y[20], 0.0, "{ty}");
    }
    // Q8_0 rounds ties away from zero (roundf), Q8_K ties to even (nearest_int). Q8_K's
    // scale has the sign that maps the largest-magnitude element to -127, so d = -1 here.
    let mut x = vec![0.0f32; 256];
    x[0] = 127.0; // d = 1
    x[1] = 2.5;
    x[2] = -2.5;
    let q0 = quant(GgmlType::Q8_0, &x);
    assert_eq!((q0[3] as i8, q0[4] as i8), (3, -3));
    let qk = quant(GgmlType::Q8_K, &x);
    assert_eq!(f32::from_le_bytes([qk[0], qk[1], qk[2], qk[3]]), -1.0);
    assert_eq!((qk[4] as i8, qk[5] as i8, qk[6] as i8), (-127, -2, 2));
}

#[test]
fn vec_dot_matches_dequantized_dot() {
    let mut rng = Rng(0xd07_5eed);
    for &ty in DOT_TYPES {
        let vt = vec_dot_type(ty);
        for (round, n) in [N, ty.block_size().max(256), N].into_iter().enumerate() {
            let xq = weight_row(ty, n, &mut rng);
            let xd = dequant(ty, &xq, n);
            let y = generate_data(1.0 + round as f32, n, 2.0);
            let yq = quant(vt, &y);
            let yd = dequant(vt, &yq, n);

            let got = vec_dot(ty, n, &xq, &yq).unwrap();
            let typed = reference::vec_dot_fn(ty).unwrap()(n, &xq, &yq);
            assert_eq!(got.to_bits(), typed.to_bits(), "{ty}: dispatch vs typed");
            assert!(got.is_finite(), "{ty}: {got}");

            // 1) ggml's test-quantize-fns bound, against the f32 activations.
            let dot_ref: f64 = xd.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
            let err = ((got as f64 - dot_ref).abs() / n as f64) as f32;
            let max_err = if ty == GgmlType::Q2_K { 0.04 } else { 0.02 };
            assert!(
                err < max_err,
                "{ty} n={n}: dot error {err} (got {got}, ref {dot_ref})"
            );

            // 2) Tight: against the dequantized quantized activations.
            let exact: f64 = xd.iter().zip(&yd).map(|(a, b)| *a as f64 * *b as f64).sum();
            let abs_sum: f64 = xd
                .iter()
                .zip(&yd)
                .map(|(a, b)| (*a as f64 * *b as f64).abs())
                .sum();
            let mut tol = 2e-5 * abs_sum + 1e-6;
            if vt == GgmlType::Q8_1 {
                // Q8_1's s = f16(d·Σq): relative error up to 2^-11 on each block's m·s term.
                let offs = ty.type_size();
                tol += xq
                    .chunks_exact(offs)
                    .zip(yq.chunks_exact(36))
                    .map(|(bx, by)| {
                        let m = half::f16::from_le_bytes([bx[2], bx[3]]).to_f32() as f64;
                        let s = half::f16::from_le_bytes([by[2], by[3]]).to_f32() as f64;
                        (m * s).abs() / 2048.0
                    })
                    .sum::<f64>();
            }
            assert!(
                (got as f64 - exact).abs() <= tol,
                "{ty} n={n}: vec_dot {got} vs exact {exact} (diff {}, tol {tol})",
                (got as f64 - exact).abs()
            );
            // Non-vacuous: a real, non-trivial dot.
            assert!(
                abs_sum > n as f64 * 0.1,
                "{ty}: weights/activations too small ({abs_sum})"
            );
        }
    }
}

#[test]
fn vec_dot_of_empty_rows_is_zero() {
    for &ty in DOT_TYPES {
        assert_eq!(vec_dot(ty, 0, &[], &[]).unwrap(), 0.0, "{ty}");
    }
}

#[test]
fn vec_dot_float_types_accumulate_in_f64() {
    // Σ = 2^24 + 1 + 1 - 2^24 = 2: an f32 accumulator would return 0 (or 1).
    let x = [16_777_216.0f32, 1.0, 1.0, -16_777_216.0];
    let ones = [1.0f32; 4];
    let r = vec_dot(
        GgmlType::F32,
        4,
        &quant(GgmlType::F32, &x),
        &quant(GgmlType::F32, &ones),
    )
    .unwrap();
    assert_eq!(r, 2.0);
    let r = vec_dot(
        GgmlType::BF16,
        4,
        &quant(GgmlType::BF16, &x),
        &quant(GgmlType::BF16, &ones),
    )
    .unwrap();
    assert_eq!(r, 2.0); // 2^24 is exact in bf16
                        // f16: 65504² ≈ 2^32, where f32's spacing is 512.
    let xh = [65_504.0f32, 1.0, 1.0, -65_504.0];
    let yh = [65_504.0f32, 1.0, 1.0, 65_504.0];
    let r = vec_dot(
        GgmlType::F16,
        4,
        &quant(GgmlType::F16, &xh),
        &quant(GgmlType::F16, &yh),
    )
    .unwrap();
    assert_eq!(r, 2.0);
}

#[test]
fn vec_dot_rejects_bad_activation_rows() {
    let xq = vec![0u8; GgmlType::Q4_K.type_size()];
    // Activations in the weight type instead of Q8_K: wrong size for Q8_K.
    match vec_dot(GgmlType::Q4_K, 256, &xq, &xq) {
        Err(KernelError::SourceSize {
            ty: GgmlType::Q8_K,
            got: 144,
            want: 292,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}
