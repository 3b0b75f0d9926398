//! Element-wise math as llama.cpp's CPU backend computes it on an AVX2+FMA machine.
//!
//! ggml evaluates SiLU (and so SwiGLU) with `ggml_v_expf`, a vectorized polynomial exp (from
//! ARM's optimized routines) rather than libm's `expf`; the two differ in the last bits. These
//! scalar versions reproduce the AVX2 lane arithmetic exactly: every `_mm256_fmadd_ps` is a
//! [`f32::mul_add`], every `fnmadd(a, b, c)` is `(-a).mul_add(b, c)`, bit tricks are done on the
//! integer bits. (`mul_add` is a true fused multiply-add on every target: in hardware where the
//! caller is compiled with FMA, in software otherwise.)

/// ggml's AVX2 `ggml_v_expf` for one lane.
#[inline(always)]
pub fn expf_ggml(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23: adding it rounds to an integer
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r); // x / ln 2 + r
    let n = z - r;
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e), // ln 2, low part (0x1.7f7d1cp-20)
        (-n).mul_add(f32::from_bits(0x3f31_7200), x), // ln 2, high part (0x1.62e4p-1)
    );
    let e = z.to_bits().wrapping_shl(23);
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let c = n.abs() > 126.0;
    let u = b * b;
    let j = f32::from_bits(0x3c07_2010) // 0x1.0e4020p-7
        .mul_add(b, f32::from_bits(0x3d2b_9f17)) // 0x1.573e2ep-5
        .mul_add(
            u,
            f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb)), // 0x1.555e66p-3, 0x1.fffdb6p-2
        )
        .mul_add(u, f32::from_bits(0x3f7f_fff6) * b); // 0x1.ffffecp-1
    if !c {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// ggml's AVX2 `ggml_v_silu` for one lane: `x / (1 + expf_ggml(0 - x))`.
#[inline(always)]
pub fn silu_ggml(x: f32) -> f32 {
    x / (1.0 + expf_ggml(0.0 - x))
}

/// SiLU as ggml's scalar code computes it (`x / (1 + expf(-x))` with libm's `expf`).
#[inline(always)]
pub fn silu_libm(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// ggml's `ggml_vec_swiglu_f32` on an AVX2+FMA machine: `out[i] = silu(gate[i]) * up[i]`,
/// with the vector SiLU for every whole group of 8 and the libm one for the rest.
#[inline(always)]
pub fn swiglu_row(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let n = gate.len();
    let whole = n - n % 8;
    for i in 0..whole {
        out[i] = silu_ggml(gate[i]) * up[i];
    }
    for i in whole..n {
        out[i] = silu_libm(gate[i]) * up[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expf_is_close_to_libm() {
        let mut x = -100.0f32;
        while x < 88.0 {
            let (a, b) = (expf_ggml(x), x.exp());
            assert!(((a - b) / b).abs() < 4e-7, "{x}: {a} vs {b}");
            x += 0.173;
        }
        assert_eq!(expf_ggml(-200.0), 0.0);
        assert_eq!(expf_ggml(200.0), f32::INFINITY);
        assert!(expf_ggml(f32::NAN).is_nan());
    }
}
