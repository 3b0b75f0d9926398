//! The decoder's element-wise and attention operations with llama.cpp's CPU numerics.
//!
//! Each function here is written once, as scalar code whose float operations (including every
//! fused multiply-add, see [`crate::reference::math`]) follow what llama.cpp computes on an
//! AVX2+FMA machine. The `avx2` tier runs the same code compiled with AVX2/FMA/F16C enabled, so
//! that `mul_add` is one instruction instead of a libm call: the results are the same bits.
//!
//! Flash attention has llama.cpp's two CPU paths (`ggml_compute_forward_flash_attn_ext_*` in
//! ggml-cpu's `ops.cpp`):
//!
//! - **tiled**, for batches of at least [`FA_TILE_Q`] queries: Q stays f32; each score is a
//!   fused multiply-add chain over the head dimension; softmax runs online over tiles of
//!   [`FA_TILE_KV`] keys with ggml's vector `expf`, each group of 8 summed like `hsum8` into an
//!   f64 tile sum; the V sum is a fused multiply-add chain over keys onto the running output.
//! - **one query at a time** otherwise: Q is rounded to f16, each score is ggml's f16 dot
//!   product, softmax runs key by key with libm's `expf`, and the weighted V sum is accumulated
//!   in f16 (a fused multiply-add per element, rounded to f16 after every key).

use crate::dispatch::Tier;
use crate::matmul::{dot_f16_ggml, hsum8};
use crate::reference::math::{expf_ggml, swiglu_row};
use half::f16;

/// Queries per batch from which llama.cpp's CPU flash attention takes its tiled path.
pub const FA_TILE_Q: usize = 64;
/// Keys per tile of the tiled path.
pub const FA_TILE_KV: usize = 64;

/// One attention head's rows in a KV cache: row `j` is `data[j * stride + offset..][..len]`.
#[derive(Debug, Clone, Copy)]
pub struct HeadRows<'a> {
    pub data: &'a [f32],
    pub stride: usize,
    pub offset: usize,
    pub len: usize,
}

impl<'a> HeadRows<'a> {
    #[inline(always)]
    fn row(&self, j: usize) -> &'a [f32] {
        let s = j * self.stride + self.offset;
        &self.data[s..s + self.len]
    }
}

fn fast() -> bool {
    cfg!(target_arch = "x86_64") && matches!(Tier::selected(), Ok(t) if t >= Tier::Avx2)
}

/// Attention of one query row `q` over keys/values `0..n_kv` (all visible), written to `out`.
/// `tiled` picks llama.cpp's path (callers pass `n_queries_in_batch >= FA_TILE_Q`).
pub fn flash_attn_row(
    tiled: bool,
    q: &[f32],
    k: HeadRows,
    v: HeadRows,
    n_kv: usize,
    scale: f32,
    out: &mut [f32],
) {
    assert!(q.len() == k.len && out.len() == v.len, "head sizes");
    #[cfg(target_arch = "x86_64")]
    if fast() {
        // SAFETY: the selected tier is Avx2, which requires AVX2, FMA and F16C on this CPU.
        unsafe { flash_attn_row_avx2(tiled, q, k, v, n_kv, scale, out) };
        return;
    }
    flash_attn_row_impl(tiled, q, k, v, n_kv, scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn flash_attn_row_avx2(
    tiled: bool,
    q: &[f32],
    k: HeadRows,
    v: HeadRows,
    n_kv: usize,
    scale: f32,
    out: &mut [f32],
) {
    flash_attn_row_impl(tiled, q, k, v, n_kv, scale, out)
}

#[inline(always)]
fn flash_attn_row_impl(
    tiled: bool,
    q: &[f32],
    k: HeadRows,
    v: HeadRows,
    n_kv: usize,
    scale: f32,
    out: &mut [f32],
) {
    if tiled {
        attn_tiled(q, k, v, n_kv, scale, out)
    } else {
        attn_one(q, k, v, n_kv, scale, out)
    }
}

#[inline(always)]
fn attn_tiled(q: &[f32], k: HeadRows, v: HeadRows, n_kv: usize, scale: f32, o: &mut [f32]) {
    let hd = q.len();
    let (mut m, mut s_sum) = (f32::NEG_INFINITY, 0f32);
    o.fill(0.0);
    let mut kq = [0f32; FA_TILE_KV];
    for ic in (0..n_kv).step_by(FA_TILE_KV) {
        let tile = FA_TILE_KV.min(n_kv - ic);
        for (tk, sk) in kq.iter_mut().enumerate() {
            *sk = if tk < tile {
                let kr = k.row(ic + tk);
                let mut acc = 0f32;
                for d in 0..hd {
                    acc = q[d].mul_add(kr[d], acc);
                }
                acc * scale
            } else {
                f32::NEG_INFINITY
            };
        }
        let tile_max = kq.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if tile_max == f32::NEG_INFINITY {
            continue;
        }
        let m_new = m.max(tile_max);
        if m_new > m {
            let ms = (m - m_new).exp();
            o.iter_mut().for_each(|x| *x *= ms);
            s_sum *= ms;
        }
        m = m_new;
        let mut tile_sum = 0f64;
        for lanes in kq.chunks_exact_mut(8) {
            for sk in lanes.iter_mut() {
                *sk = expf_ggml(*sk - m);
            }
            let lanes: &[f32; 8] = (&*lanes).try_into().expect("8 lanes");
            tile_sum += hsum8(lanes) as f64;
        }
        // `S += ggml_vec_soft_max_f32(...)`: a float plus a double, rounded back to float.
        s_sum = (s_sum as f64 + tile_sum) as f32;
        for (tk, &p) in kq.iter().enumerate().take(tile) {
            let vr = v.row(ic + tk);
            for d in 0..hd {
                o[d] = p.mul_add(vr[d], o[d]);
            }
        }
    }
    let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
    o.iter_mut().for_each(|x| *x *= inv);
}

#[inline(always)]
fn attn_one(q: &[f32], k: HeadRows, v: HeadRows, n_kv: usize, scale: f32, o: &mut [f32]) {
    const MAX_HD: usize = 512;
    let hd = q.len();
    assert!(hd <= MAX_HD, "head dimension {hd} above {MAX_HD}");
    let mut q16 = [0f32; MAX_HD];
    for (a, &b) in q16.iter_mut().zip(q) {
        *a = f16::from_f32(b).to_f32();
    }
    let q16 = &q16[..hd];
    let mut vkq = [0f32; MAX_HD]; // f16 values held in f32
    let vkq = &mut vkq[..v.len];
    let (mut m, mut s_sum) = (f32::NEG_INFINITY, 0f32);
    for j in 0..n_kv {
        let s = dot_f16_ggml(k.row(j), q16) * scale;
        let (mut ms, mut vs) = (1f32, 1f32);
        if s > m {
            let m_old = m;
            m = s;
            ms = (m_old - m).exp();
            vkq.iter_mut()
                .for_each(|x| *x = f16::from_f32(*x * ms).to_f32());
        } else {
            vs = (s - m).exp();
        }
        // ggml_vec_mad_f16: a fused multiply-add per element, rounded to f16.
        for (a, &b) in vkq.iter_mut().zip(v.row(j)) {
            *a = f16::from_f32(b.mul_add(vs, *a)).to_f32();
        }
        // `S = S*ms + vs`, which GCC contracts to a fused multiply-add.
        s_sum = s_sum.mul_add(ms, vs);
    }
    let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
    for (a, &b) in o.iter_mut().zip(vkq.iter()) {
        *a = b * inv;
    }
}

/// The fast path's attention of one query row over keys/values `0..n_kv` (decode): scores
/// `q·k_j` in f32, the softmax through [`softmax_exp_ggml`] (ggml's vector exp, as the fast
/// prefill's blocked attention), then `Σ p_j·v_j` in f32. [`flash_attn_row`] is llama.cpp's
/// arithmetic (its query and running sum rounded to f16 per key); this agrees with it up to
/// those roundings and costs a fraction of it (a quarter of SmolLM2's decode time at 256
/// positions was that path's per-element f16 conversions).
pub fn attn_row_f32(q: &[f32], k: HeadRows, v: HeadRows, n_kv: usize, scale: f32, out: &mut [f32]) {
    assert!(q.len() == k.len && out.len() == v.len, "head sizes");
    thread_local! {
        static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCORES.with(|s| {
        let mut s = s.borrow_mut();
        s.resize(n_kv, 0.0);
        #[cfg(target_arch = "x86_64")]
        if fast() {
            // SAFETY: the selected tier is Avx2 or above, which requires AVX2, FMA and F16C.
            unsafe { attn_row_f32_avx2(q, k, v, scale, &mut s, out) };
            return;
        }
        attn_row_f32_impl(q, k, v, scale, &mut s, out)
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attn_row_f32_avx2(
    q: &[f32],
    k: HeadRows,
    v: HeadRows,
    scale: f32,
    s: &mut [f32],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let hd = q.len();
    if !hd.is_multiple_of(8) || !v.len.is_multiple_of(8) {
        return attn_row_f32_impl(q, k, v, scale, s, out);
    }
    // SAFETY (all blocks): rows hold `hd` (or `v.len`) floats, read in whole vectors of eight.
    unsafe {
        for (j, sj) in s.iter_mut().enumerate() {
            let kr = k.row(j).as_ptr();
            let mut acc = _mm256_setzero_ps();
            for d in (0..hd).step_by(8) {
                acc = _mm256_fmadd_ps(
                    _mm256_loadu_ps(q.as_ptr().add(d)),
                    _mm256_loadu_ps(kr.add(d)),
                    acc,
                );
            }
            let h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
            let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            *sj = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
        }
        let sum = softmax_exp_ggml(s, scale);
        out.fill(0.0);
        let o = out.as_mut_ptr();
        for (j, &p) in s.iter().enumerate() {
            let vr = v.row(j).as_ptr();
            let pv = _mm256_set1_ps(p);
            for d in (0..v.len).step_by(8) {
                let od = _mm256_loadu_ps(o.add(d));
                _mm256_storeu_ps(
                    o.add(d),
                    _mm256_fmadd_ps(pv, _mm256_loadu_ps(vr.add(d)), od),
                );
            }
        }
        let inv = if sum == 0.0 { 0.0 } else { (1.0 / sum) as f32 };
        out.iter_mut().for_each(|x| *x *= inv);
    }
}

#[inline(always)]
fn attn_row_f32_impl(
    q: &[f32],
    k: HeadRows,
    v: HeadRows,
    scale: f32,
    s: &mut [f32],
    out: &mut [f32],
) {
    for (j, sj) in s.iter_mut().enumerate() {
        // eight lanes, then their sum (the AVX2 loop's order)
        let mut lanes = [0f32; 8];
        let kr = k.row(j);
        let (qc, kc) = (q.chunks_exact(8), kr.chunks_exact(8));
        let (qt, kt) = (qc.remainder(), kc.remainder());
        for (a, b) in qc.zip(kc) {
            for l in 0..8 {
                lanes[l] = a[l].mul_add(b[l], lanes[l]);
            }
        }
        let mut acc = hsum8(&lanes);
        for (a, b) in qt.iter().zip(kt) {
            acc = a.mul_add(*b, acc);
        }
        *sj = acc;
    }
    let sum = softmax_exp_ggml(s, scale);
    out.fill(0.0);
    for (j, &p) in s.iter().enumerate() {
        for (o, &x) in out.iter_mut().zip(v.row(j)) {
            *o = p.mul_add(x, *o);
        }
    }
    let inv = if sum == 0.0 { 0.0 } else { (1.0 / sum) as f32 };
    out.iter_mut().for_each(|x| *x *= inv);
}

/// `out[i] = silu(gate[i]) * up[i]` as ggml's `ggml_vec_swiglu_f32` computes it (one row).
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(
        gate.len() == up.len() && up.len() == out.len(),
        "swiglu sizes"
    );
    #[cfg(target_arch = "x86_64")]
    if fast() {
        // SAFETY: the selected tier is Avx2, which requires AVX2, FMA and F16C on this CPU.
        unsafe { swiglu_avx2(gate, up, out) };
        return;
    }
    swiglu_row(gate, up, out)
}

/// [`expf_ggml`] on eight lanes, the scalar spec's operations one for one (both of its
/// branches, blended). The far branch is computed only when some lane needs it: on ordinary
/// lanes its scale factors are subnormal garbage, whose arithmetic costs a microcode assist per
/// operation (computing it always made SwiGLU ten times slower).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn exp8_ggml(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let c = |bits: u32| _mm256_set1_ps(f32::from_bits(bits));
    let abs = |v: __m256| _mm256_andnot_ps(_mm256_set1_ps(-0.0), v);
    let r = c(0x4b40_0000);
    let z = _mm256_fmadd_ps(x, c(0x3fb8_aa3b), r);
    let nn = _mm256_sub_ps(z, r);
    let b = _mm256_fnmadd_ps(nn, c(0x35bf_be8e), _mm256_fnmadd_ps(nn, c(0x3f31_7200), x));
    let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
    let k = _mm256_castsi256_ps(_mm256_add_epi32(
        e,
        _mm256_castps_si256(_mm256_set1_ps(1.0)),
    ));
    let big = _mm256_cmp_ps::<_CMP_GT_OQ>(abs(nn), _mm256_set1_ps(126.0));
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)),
            u,
            _mm256_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb)),
        ),
        u,
        _mm256_mul_ps(c(0x3f7f_fff6), b),
    );
    let normal = _mm256_fmadd_ps(j, k, k);
    if _mm256_movemask_ps(big) == 0 {
        return normal;
    }
    let neg = _mm256_cmp_ps::<_CMP_LE_OQ>(nn, _mm256_setzero_ps());
    let g = _mm256_and_si256(
        _mm256_castps_si256(neg),
        _mm256_set1_epi32(0x8200_0000u32 as i32),
    );
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let huge = _mm256_cmp_ps::<_CMP_GT_OQ>(abs(nn), _mm256_set1_ps(192.0));
    let far = _mm256_blendv_ps(
        _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1),
        _mm256_mul_ps(s1, s1),
        huge,
    );
    _mm256_blendv_ps(normal, far, big)
}

/// Softmax numerators as llama.cpp's tiled flash attention forms them: with `m` the largest
/// `x[i]·scale`, `x[i] = expf_ggml(x[i]·scale − m)` ([`expf_ggml`], ggml's vector exp); returns
/// their sum. The fast path's blocked attention uses this: a few-ulp different exp (the tuner's
/// vector one) moved SmolLM2's perplexity by ~0.1%.
pub fn softmax_exp_ggml(x: &mut [f32], scale: f32) -> f64 {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) * scale;
    #[cfg(target_arch = "x86_64")]
    if fast() {
        // SAFETY: the selected tier is Avx2 or above, which requires AVX2, FMA and F16C.
        return unsafe { softmax_exp_avx2(x, scale, m) };
    }
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = expf_ggml(*v * scale - m);
        sum += *v as f64;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn softmax_exp_avx2(x: &mut [f32], scale: f32, m: f32) -> f64 {
    use std::arch::x86_64::*;
    let whole = x.len() - x.len() % 8;
    let mut acc = _mm256_setzero_pd();
    for i in (0..whole).step_by(8) {
        // SAFETY: i + 8 <= whole <= x.len().
        unsafe {
            let p = x.as_mut_ptr().add(i);
            let d = _mm256_sub_ps(
                _mm256_mul_ps(_mm256_loadu_ps(p), _mm256_set1_ps(scale)),
                _mm256_set1_ps(m),
            );
            let e = exp8_ggml(d);
            _mm256_storeu_ps(p, e);
            acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
            acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
        }
    }
    let mut lanes = [0f64; 4];
    // SAFETY: four doubles.
    unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), acc) };
    let mut sum: f64 = lanes.iter().sum();
    for v in &mut x[whole..] {
        *v = expf_ggml(*v * scale - m);
        sum += *v as f64;
    }
    sum
}

/// [`swiglu_row`] eight lanes at a time: ggml's AVX2 `ggml_v_silu`/`ggml_v_expf` with the
/// scalar spec's operations one for one ([`crate::reference::math::expf_ggml`]; both branches
/// computed and blended), the libm SiLU for the tail. The same bits (tested).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn swiglu_avx2(gate: &[f32], up: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = gate.len();
    let whole = n - n % 8;
    for i in (0..whole).step_by(8) {
        // SAFETY: i + 8 <= whole <= n, the length of all three slices (checked by `swiglu`).
        unsafe {
            let x = _mm256_loadu_ps(gate.as_ptr().add(i));
            let xn = _mm256_sub_ps(_mm256_setzero_ps(), x); // expf(0 - x)
            let ex = exp8_ggml(xn);
            let silu = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), ex));
            let y = _mm256_mul_ps(silu, _mm256_loadu_ps(up.as_ptr().add(i)));
            _mm256_storeu_ps(out.as_mut_ptr().add(i), y);
        }
    }
    for i in whole..n {
        out[i] = crate::reference::math::silu_libm(gate[i]) * up[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed % 20001) as f32 / 10000.0 - 1.0
    }

    /// The vector softmax numerators equal the scalar `expf_ggml` form bit for bit.
    #[test]
    fn softmax_exp_matches_the_spec_bitwise() {
        let mut seed = 0x0bad_cafe_1234_5678u64;
        for n in [1usize, 7, 8, 64, 203] {
            let x: Vec<f32> = (0..n).map(|_| rng(&mut seed) * 40.0).collect();
            let scale = 0.125f32;
            let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) * scale;
            let want: Vec<f32> = x.iter().map(|v| expf_ggml(v * scale - m)).collect();
            let mut got = x.clone();
            let sum = softmax_exp_ggml(&mut got, scale);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "n {n}"
            );
            let s: f64 = want.iter().map(|&v| v as f64).sum();
            assert!((sum - s).abs() <= 1e-12 * s, "n {n}: {sum} vs {s}");
        }
    }

    /// The vector SwiGLU equals the scalar spec bit for bit, extremes and a ragged tail included.
    #[test]
    fn swiglu_avx2_matches_the_spec_bitwise() {
        if !fast() {
            eprintln!("skipped: the avx2 tier is not selected here");
            return;
        }
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut g: Vec<f32> = (0..4099).map(|_| rng(&mut seed) * 30.0).collect();
        for (i, v) in [
            0.0,
            -0.0,
            87.0,
            88.9,
            -87.5,
            -104.0,
            120.0,
            -130.0,
            200.0,
            -200.0,
            1e-40,
            f32::MAX,
            -f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]
        .into_iter()
        .enumerate()
        {
            g[i * 3] = v;
        }
        let u: Vec<f32> = (0..g.len()).map(|_| rng(&mut seed)).collect();
        let (mut want, mut got) = (vec![0f32; g.len()], vec![0f32; g.len()]);
        swiglu_row(&g, &u, &mut want);
        swiglu(&g, &u, &mut got);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{i}: gate {} got {a} want {b}",
                g[i]
            );
        }
    }

    /// The avx2 tier computes the same bits as the scalar code (the numerics themselves are
    /// checked against llama.cpp by the parity tests).
    #[test]
    fn tiers_agree_bitwise() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let (hd, n_kv, kv_dim) = (64, 200, 192);
        let f16r = |x: f32| f16::from_f32(x).to_f32();
        let k: Vec<f32> = (0..n_kv * kv_dim)
            .map(|_| f16r(rng(&mut seed) * 3.0))
            .collect();
        let v: Vec<f32> = (0..n_kv * kv_dim).map(|_| f16r(rng(&mut seed))).collect();
        let q: Vec<f32> = (0..hd).map(|_| rng(&mut seed) * 2.0).collect();
        let rows = |data| HeadRows {
            data,
            stride: kv_dim,
            offset: 64,
            len: hd,
        };
        for tiled in [false, true] {
            for n in [1, 7, 64, 65, 200] {
                let (mut a, mut b) = (vec![0f32; hd], vec![0f32; hd]);
                flash_attn_row(tiled, &q, rows(&k), rows(&v), n, 0.125, &mut a);
                flash_attn_row_impl(tiled, &q, rows(&k), rows(&v), n, 0.125, &mut b);
                assert_eq!(a, b, "tiled {tiled}, {n} keys");
                // One key: the output is that key's value row.
                if n == 1 {
                    let want = &v[64..64 + hd];
                    assert!(a
                        .iter()
                        .zip(want)
                        .all(|(x, y)| (x - y).abs() <= 1e-3 * y.abs()));
                }
            }
        }
        let gate: Vec<f32> = (0..1541).map(|_| rng(&mut seed) * 12.0).collect();
        let up: Vec<f32> = (0..1541).map(|_| rng(&mut seed)).collect();
        let (mut a, mut b) = (vec![0f32; 1541], vec![0f32; 1541]);
        swiglu(&gate, &up, &mut a);
        swiglu_row(&gate, &up, &mut b);
        assert_eq!(a, b);
        for i in 0..1541 {
            let want = gate[i] / (1.0 + (-gate[i]).exp()) * up[i];
            assert!((a[i] - want).abs() <= 1e-6 * (1.0 + want.abs()), "{i}");
        }
    }

    /// The fast path's f32 decode attention against softmax attention in f64, for head sizes
    /// that take the AVX2 loops (64, 128) and one that does not (20), with a large score range.
    #[test]
    fn attn_row_f32_is_softmax_attention() {
        let mut seed = 0x00c0_ffee_1234_5678u64;
        for (hd, n_kv) in [(64usize, 1usize), (64, 37), (128, 300), (20, 9)] {
            let kv_heads = 2;
            let stride = kv_heads * hd;
            let k: Vec<f32> = (0..n_kv * stride).map(|_| rng(&mut seed) * 3.0).collect();
            let v: Vec<f32> = (0..n_kv * stride).map(|_| rng(&mut seed)).collect();
            let q: Vec<f32> = (0..hd).map(|_| rng(&mut seed) * 2.0).collect();
            let scale = 1.0 / (hd as f32).sqrt();
            let rows = |data| HeadRows {
                data,
                stride,
                offset: hd,
                len: hd,
            };
            let mut out = vec![0f32; hd];
            attn_row_f32(&q, rows(&k), rows(&v), n_kv, scale, &mut out);
            let s: Vec<f64> = (0..n_kv)
                .map(|j| {
                    (0..hd)
                        .map(|d| q[d] as f64 * k[j * stride + hd + d] as f64)
                        .sum::<f64>()
                        * scale as f64
                })
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for d in 0..hd {
                let want: f64 = (0..n_kv)
                    .map(|j| e[j] * v[j * stride + hd + d] as f64)
                    .sum::<f64>()
                    / z;
                assert!(
                    (out[d] as f64 - want).abs() <= 1e-5,
                    "hd {hd} n_kv {n_kv} d {d}: {} vs {want}",
                    out[d]
                );
            }
        }
    }
}
