//! The engine's fast matrix products (the default; [`super::matmul`] is llama.cpp's arithmetic).
//!
//! - **Decode** (fewer than [`PREFILL_ROWS`] tokens): each token's activations are quantized once
//!   to the weight type's vec-dot type (Q8_0/Q8_1/Q8_K; F16 weights take f32), then the weight
//!   rows are split over the threads and [`autoround_kernels::dot::dot_rows`] reads each row once,
//!   in place in the memory map, with the CPU's best tier (AVX-512 VNNI, AVX2).
//! - **Prefill** (a batch of tokens): the weights are dequantized a slab of rows at a time into a
//!   per-thread f32 buffer, and the slab is multiplied with every token at once by
//!   [`autoround_kernels::gemm::gemm`] at its fastest precision (bf16 on AMX tiles where the CPU
//!   has them, f32 otherwise), written straight into the output's columns.
//!
//! Results differ from the llama.cpp path only in rounding: the decode path's integer block sums
//! are the same, its float additions come in another order; the prefill path multiplies the
//! dequantized weights with unquantized (f32, or bf16 on AMX) activations.

use super::Weight;
use autoround_kernels::dispatch::Tier;
use autoround_kernels::dot::{self, Act};
use autoround_kernels::gemm::{gemm, Mat, Precision, Threads};
use autoround_kernels::reference;
use rayon::prelude::*;
use std::cell::RefCell;

/// Batches of at least this many tokens take the prefill path.
pub const PREFILL_ROWS: usize = 16;

/// Elements of weights dequantized per slab in the prefill path (16 MiB of f32).
const SLAB_ELEMENTS: usize = 4 << 20;

thread_local! {
    /// Quantized activations of the decode path (one row).
    static ACT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Dequantized weight slab of the prefill path.
    static SLAB: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out[t][r] = Σ_c w[r][c] · x[t][c]` for `n` tokens (`x` is `n × w.cols`, `out` `n × w.rows`).
pub fn matmul(w: &Weight, x: &[f32], n: usize, out: &mut [f32]) {
    assert_eq!(x.len(), n * w.cols, "matmul input of {}", w.name);
    assert_eq!(out.len(), n * w.rows, "matmul output of {}", w.name);
    if n >= PREFILL_ROWS {
        prefill(w, x, n, out);
    } else {
        for (xt, ot) in x.chunks_exact(w.cols).zip(out.chunks_exact_mut(w.rows)) {
            gemv(w, xt, ot);
        }
    }
}

/// One token: quantize the activations, then the rows in parallel.
fn gemv(w: &Weight, x: &[f32], out: &mut [f32]) {
    let tier = Tier::selected().unwrap_or(Tier::Scalar);
    let rb = w.row_bytes();
    let threads = rayon::current_num_threads();
    // a few tasks per thread, but not so small that scheduling costs more than the rows
    let min_rows = (65536 / rb.max(1)).max(8);
    let per_task = w.rows.div_ceil(threads * 4).max(min_rows);
    let mut run = |act: Act<'_>| {
        if w.rows <= per_task || threads == 1 {
            dot::dot_rows(tier, w.ty, w.cols, &w.data, act, out);
            return;
        }
        out.par_chunks_mut(per_task).enumerate().for_each(|(i, o)| {
            let r0 = i * per_task;
            let rows = &w.data[r0 * rb..(r0 + o.len()) * rb];
            dot::dot_rows(tier, w.ty, w.cols, rows, act, o);
        });
    };
    if dot::takes_f32(w.ty) {
        return run(Act::F32(x));
    }
    let vt = reference::vec_dot_type(w.ty);
    let quantize = reference::engine_quantize_fn(vt).expect("vec-dot types are quantizable");
    let bytes = vt.row_bytes(w.cols as u64).expect("whole blocks") as usize;
    ACT.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.resize(bytes, 0);
        quantize(x, &mut buf);
        run(Act::Quant(&buf));
    });
}

/// The prefill products' arithmetic: bf16 on AMX tiles where the CPU has them, else f32;
/// `AUTOROUND_PREFILL=f32` keeps f32 everywhere.
pub fn prefill_precision() -> Precision {
    static P: std::sync::OnceLock<Precision> = std::sync::OnceLock::new();
    *P.get_or_init(|| match std::env::var("AUTOROUND_PREFILL").as_deref() {
        Ok("f32") => Precision::F32,
        _ => Precision::fastest(),
    })
}

/// A batch: dequantized slabs of rows times all tokens.
fn prefill(w: &Weight, x: &[f32], n: usize, out: &mut [f32]) {
    let dq = reference::dequantize_fn(w.ty).expect("weights are dequantizable (checked at load)");
    // The activations rounded as llama.cpp (and the llama-cpp path) rounds them: to the vec-dot
    // type and back. Unrounded activations move perplexity by 0.2-0.3% on SmolLM2 (measured).
    let vt = reference::vec_dot_type(w.ty);
    let xq: Vec<f32> = match reference::dequantize_fn(vt) {
        Some(d) if vt != autoround_kernels::GgmlType::F32 => {
            let qa = super::QuantizedActivations::new(w.ty, x, n, w.cols);
            let bytes = qa.data.len() / n;
            let mut xq = vec![0f32; x.len()];
            xq.par_chunks_mut(w.cols)
                .zip(qa.data.par_chunks(bytes))
                .for_each(|(dst, src)| d(src, dst));
            xq
        }
        _ => x.to_vec(),
    };
    let x = &xq[..];
    let rb = w.row_bytes();
    let slab_rows = (SLAB_ELEMENTS / w.cols).clamp(32, w.rows.max(32)) / 32 * 32;
    let prec = prefill_precision();
    SLAB.with(|slab| {
        let mut slab = slab.borrow_mut();
        let mut r0 = 0;
        while r0 < w.rows {
            let rows = slab_rows.min(w.rows - r0);
            slab.resize(rows * w.cols, 0.0);
            slab.par_chunks_mut(w.cols)
                .zip(w.data[r0 * rb..(r0 + rows) * rb].par_chunks(rb))
                .for_each(|(dst, src)| dq(src, dst));
            gemm(
                Mat::new(x, n, w.cols),
                Mat::new(&slab, rows, w.cols).t(),
                &mut out[r0..],
                w.rows,
                false,
                Threads::Pool,
                prec,
            );
            r0 += rows;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoround_kernels::GgmlType;
    use std::borrow::Cow;

    /// Both fast paths (decode and prefill) against the llama.cpp path on the same weights and
    /// activations: the same quantized activations, so only float rounding differs.
    #[test]
    fn fast_paths_agree_with_the_llama_cpp_path() {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut unit = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2_000_001) as f32 / 1_000_000.0 - 1.0
        };
        // 96 rows: one slab in the prefill path; 8200 × 1024: three slabs, the last one short
        for (ty, rows, cols) in [
            (GgmlType::Q8_0, 96, 512),
            (GgmlType::Q4_0, 96, 512),
            (GgmlType::Q4_K, 96, 512),
            (GgmlType::Q6_K, 96, 512),
            (GgmlType::F16, 96, 512),
            (GgmlType::Q8_0, 8200, 1024),
        ] {
            let wf: Vec<f32> = (0..rows * cols).map(|_| unit()).collect();
            let mut wb = vec![0u8; ty.row_bytes(cols as u64).unwrap() as usize * rows];
            if ty == GgmlType::F16 {
                for (b, v) in wb.chunks_exact_mut(2).zip(&wf) {
                    b.copy_from_slice(&half::f16::from_f32(*v).to_bits().to_le_bytes());
                }
            } else {
                autoround_kernels::quantize::quantize_rows(ty, &wf, cols, None, &mut wb).unwrap();
            }
            let w = Weight::matrix("w", ty, rows, cols, Cow::Owned(wb)).unwrap();
            for n in [1, 3, PREFILL_ROWS, 40] {
                let x: Vec<f32> = (0..n * cols).map(|_| unit()).collect();
                let mut want = vec![0f32; n * rows];
                let mut got = vec![0f32; n * rows];
                super::super::matmul(&w, &x, n, &mut want);
                matmul(&w, &x, n, &mut got);
                // The same quantized activations on both sides, so only rounding differs: float
                // summation order, the f16 rounding of the llama.cpp path's F16 activations in
                // decode (2^-11 relative), bf16 inputs where AMX runs the prefill (2^-9 each).
                // Bounds relative to Σ|w·x| of each output.
                let bf16 = n >= PREFILL_ROWS && prefill_precision() == Precision::Bf16;
                let rel = if bf16 { 1.0 / 128.0 } else { 1e-3 };
                let wd = w.to_f32();
                for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                    let (t, row) = (i / rows, i % rows);
                    let mag: f32 = wd[row * cols..(row + 1) * cols]
                        .iter()
                        .zip(&x[t * cols..(t + 1) * cols])
                        .map(|(a, b)| (a * b).abs())
                        .sum();
                    let tol = rel * mag + 1e-6;
                    assert!(
                        (g - r).abs() <= tol,
                        "{ty} n {n} element {i}: {g} vs {r} (tolerance {tol})"
                    );
                }
            }
        }
    }
}
