//! The engine's fast matrix products (the default; [`super::matmul`] is llama.cpp's arithmetic).
//!
//! - **Decode** (fewer than [`PREFILL_ROWS`] tokens): each token's activations are quantized once
//!   per vec-dot type (Q8_0/Q8_1/Q8_K; F16/BF16/F32 weights take f32; group-wise weights Q8_0
//!   with chunk sums), then the rows of every product of that input (q/k/v, or gate/up, via
//!   [`matmul_many`]) are split over the spinning decode pool ([`autoround_kernels::pool`],
//!   without allocating) and [`autoround_kernels::dot::dot_rows`] (or
//!   [`autoround_kernels::groupwise::dot_rows`]) reads each row once, in place in the memory map
//!   (group-wise: as repacked at load), with the CPU's best tier (AVX-512 VNNI, AVX2, NEON).
//! - **Prefill** (a batch of tokens), where the CPU has AMX-INT8 and the type a kernel there:
//!   [`autoround_kernels::qgemm`], the activations quantized as llama.cpp quantizes them and the
//!   exact integer block sums against the weights in place (unpacked per task into tile order),
//!   or against the tiles unpacked once at load (`--repack`, [`Weight::unpack_tiles`]), which
//!   also take batches from [`TILE_ROWS`] tokens: many sequences decoded together.
//! - **Prefill**, other types (group-wise ones too) or CPUs: the weights are dequantized a slab of
//!   rows at a time into a
//!   per-thread f32 buffer, and the slab is multiplied with every token at once by
//!   [`autoround_kernels::gemm::gemm`] at its fastest precision (bf16 on AMX tiles where the CPU
//!   has them, f32 otherwise), written straight into the output's columns.
//!
//! Results differ from the llama.cpp path only in rounding: the integer block sums are the same,
//! the float additions come in another order; the slab path multiplies the dequantized weights
//! with the activations rounded through the vec-dot type (in bf16 on AMX). Group-wise weights
//! have no llama.cpp counterpart: that path multiplies them dequantized, in f32, and decode here
//! differs from it by the Q8_0 rounding of the activations.

use super::{Repr, Weight};
use autoround_kernels::dispatch::Tier;
use autoround_kernels::dot::{self, Act};
use autoround_kernels::gemm::{gemm, Mat, Precision, Threads};
use autoround_kernels::groupwise::{self, GroupAct};
use autoround_kernels::pool::Pool;
use autoround_kernels::qgemm;
use autoround_kernels::reference;
use autoround_kernels::GgmlType;
use rayon::prelude::*;
use std::cell::RefCell;

/// Batches of at least this many tokens take the prefill path. Below it, the decode kernels
/// take the tokens together ([`gemv`]): with 16 sequences decoded at once (the server's load
/// test, SmolLM2 Q8_0, 2 threads) that gave 253 tokens/s against 156 through the prefill path.
pub const PREFILL_ROWS: usize = 32;

/// Batches of at least this many tokens take the prefill path when every weight of the product
/// has its AMX tiles ([`Weight::unpack_tiles`]). With no unpacking per call the tiles win over
/// the decode kernels from about here. Measured with 2 threads, decode kernels against tiles
/// in tokens/s: 8 sequences of SmolLM2 Q8_0 403 against 423, of synth-1b Q4_0 68 against 89,
/// of synth-1b Q4_K_M 83 against 77; 12 sequences 407 against 607, 67 against 129 and 82
/// against 113; from 4 to 8 tokens as threshold, 4 sequences lost a quarter to a half.
pub const TILE_ROWS: usize = 8;

/// Elements of weights dequantized per slab in the prefill path (16 MiB of f32).
const SLAB_ELEMENTS: usize = 4 << 20;

/// The quantized activation rows per vec-dot type.
type QuantizedRows = Vec<(GgmlType, Vec<u8>)>;

thread_local! {
    /// Quantized activations of the decode path (the tokens' rows per vec-dot type in use, and
    /// the group-wise kernels' rows), and the scratch outputs of several tokens.
    static ACT: RefCell<(QuantizedRows, Vec<GroupAct>, Vec<Vec<f32>>)> =
        const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
    /// Dequantized weight slab of the prefill path.
    static SLAB: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The decode steps' spinning worker pool, with as many threads as rayon's pool (which `-t`
/// sets); see [`autoround_kernels::pool`].
pub fn pool() -> &'static Pool {
    Pool::global(rayon::current_num_threads())
}

/// `out[t][r] = Σ_c w[r][c] · x[t][c]` for `n` tokens (`x` is `n × w.cols`, `out` `n × w.rows`).
pub fn matmul(w: &Weight, x: &[f32], n: usize, out: &mut [f32]) {
    matmul_many(&[w], x, n, &mut [out]);
}

/// Several products of one input (`outs[i] = ws[i] · x`, as [`matmul`]): the activations are
/// quantized once per vec-dot type, and in decode all rows of all the products run in one
/// parallel region (q/k/v, gate/up).
pub fn matmul_many(ws: &[&Weight], x: &[f32], n: usize, outs: &mut [&mut [f32]]) {
    assert_eq!(ws.len(), outs.len(), "one output per weight");
    let Some(cols) = ws.first().map(|w| w.cols) else {
        return;
    };
    for (w, o) in ws.iter().zip(outs.iter()) {
        assert_eq!(
            w.cols, cols,
            "matmul_many: {} has another input width",
            w.name
        );
        assert_eq!(x.len(), n * w.cols, "matmul input of {}", w.name);
        assert_eq!(o.len(), n * w.rows, "matmul output of {}", w.name);
    }
    let tiled = ws.iter().all(|w| w.tiles.is_some());
    if n >= PREFILL_ROWS || (tiled && n >= TILE_ROWS) {
        prefill(ws, x, n, outs);
    } else {
        gemv(ws, x, n, outs);
    }
}

/// Where a product's activations come from in [`gemv`].
#[derive(Clone, Copy)]
enum Src<'a> {
    /// `n` rows of the vec-dot type, `row_bytes` apart.
    Quant(&'a [u8], usize),
    /// The f32 input itself (F16/BF16/F32 weights), or the group-wise kernels' rows.
    Other,
}

/// `n` decode tokens (fewer than [`PREFILL_ROWS`], or [`TILE_ROWS`] on tiles): quantize their
/// activations (once per vec-dot type), then the rows of every weight in parallel on the decode
/// pool. Each task takes a run of rows (at least 64 KiB of weights) and does every token with
/// them ([`dot::dot_rows_multi`]: on x86 the 32-value block types and the K-quants read and
/// unpack each weight block once for up to eight tokens on AVX-512, four on AVX2; float weights
/// go token by token over rows still in cache), so sequences decoded together share the
/// weights' memory traffic; each (row, token) result is the same as with that token alone.
fn gemv(ws: &[&Weight], x: &[f32], n: usize, outs: &mut [&mut [f32]]) {
    let tier = Tier::selected().unwrap_or(Tier::Scalar);
    let pool = pool();
    let threads = pool.threads();
    let cols = x.len() / n;
    ACT.with(|bufs| {
        let (bufs, gacts, tmp) = &mut *bufs.borrow_mut();
        let mut used = 0;
        let mut group_used = false;
        for w in ws {
            let vt = match &w.repr {
                Repr::Group(_) => {
                    if !group_used {
                        if gacts.len() < n {
                            gacts.resize_with(n, GroupAct::default);
                        }
                        for (g, xr) in gacts.iter_mut().zip(x.chunks_exact(cols)) {
                            g.quantize(xr);
                        }
                        group_used = true;
                    }
                    continue;
                }
                Repr::Ggml { ty, .. } if dot::takes_f32(*ty) => continue,
                Repr::Ggml { ty, .. } => reference::vec_dot_type(*ty),
            };
            if bufs[..used].iter().any(|(t, _)| *t == vt) {
                continue;
            }
            if bufs.len() == used {
                bufs.push((vt, Vec::new()));
            }
            let (bt, buf) = &mut bufs[used];
            *bt = vt;
            let rb = vt.row_bytes(cols as u64).expect("whole blocks") as usize;
            buf.resize(n * rb, 0);
            for (xr, qr) in x.chunks_exact(cols).zip(buf.chunks_exact_mut(rb)) {
                dot::act::quantize(vt, xr, qr);
            }
            used += 1;
        }
        let bufs = &bufs[..used];
        let gacts = &gacts[..if group_used { n } else { 0 }];
        // One output slice, activation source and task size per weight, on the stack: the
        // token loop allocates nothing here. With several tokens each product writes a scratch
        // laid out chunk by chunk (`[chunk][token][rows of the chunk]`), copied out after.
        assert!(ws.len() <= MANY, "matmul_many: at most {MANY} products");
        let mut srcs = [Src::Other; MANY];
        let mut per = [1usize; MANY];
        let mut slots: [&mut [f32]; MANY] = Default::default();
        if n > 1 && tmp.len() < ws.len() {
            tmp.resize_with(ws.len(), Vec::new);
        }
        let mut tmp_iter = tmp.iter_mut();
        for (i, (w, o)) in ws.iter().zip(outs.iter_mut()).enumerate() {
            srcs[i] = match &w.repr {
                Repr::Ggml { ty, .. } if !dot::takes_f32(*ty) => {
                    let vt = reference::vec_dot_type(*ty);
                    let buf = &bufs
                        .iter()
                        .find(|(t, _)| *t == vt)
                        .expect("quantized above")
                        .1;
                    Src::Quant(buf, buf.len() / n)
                }
                _ => Src::Other,
            };
            // a few tasks per thread, but not so small that scheduling costs more than the rows
            let min_rows = (65536 / w.row_bytes().max(1)).max(8);
            let rows_per = w.rows.div_ceil(threads * 4).max(min_rows);
            per[i] = rows_per * n;
            slots[i] = if n == 1 {
                &mut o[..]
            } else {
                let t = tmp_iter.next().expect("sized above");
                t.resize(n * w.rows, 0.0);
                &mut t[..]
            };
        }
        pool.for_each_chunk(&mut slots[..ws.len()], &per, &|i, j, out| {
            let w = ws[i];
            let len = out.len() / n;
            let r0 = j * (per[i] / n);
            match &w.repr {
                Repr::Ggml { ty, data } => {
                    let rb = w.row_bytes();
                    let rows = &data[r0 * rb..(r0 + len) * rb];
                    let mut acts = [Act::F32(&[]); PREFILL_ROWS];
                    for (t, a) in acts.iter_mut().enumerate().take(n) {
                        *a = match srcs[i] {
                            Src::Quant(b, rb) => Act::Quant(&b[t * rb..(t + 1) * rb]),
                            Src::Other => Act::F32(&x[t * cols..(t + 1) * cols]),
                        };
                    }
                    let mut outs: [&mut [f32]; PREFILL_ROWS] = Default::default();
                    for (o, c) in outs.iter_mut().zip(out.chunks_exact_mut(len)) {
                        *o = c;
                    }
                    dot::dot_rows_multi(tier, *ty, w.cols, rows, &acts[..n], &mut outs[..n]);
                }
                Repr::Group(m) => {
                    for (t, out) in out.chunks_exact_mut(len).enumerate() {
                        groupwise::dot_rows(tier, &m.rows(r0, len), &gacts[t], out);
                    }
                }
            }
        });
        if n > 1 {
            let done = ws.iter().zip(outs.iter_mut()).zip(tmp.iter()).enumerate();
            for (i, ((w, o), t)) in done {
                let rows_per = per[i] / n;
                for (j, chunk) in t[..n * w.rows].chunks(rows_per * n).enumerate() {
                    let len = chunk.len() / n;
                    let r0 = j * rows_per;
                    for (tok, c) in chunk.chunks_exact(len).enumerate() {
                        o[tok * w.rows + r0..tok * w.rows + r0 + len].copy_from_slice(c);
                    }
                }
            }
        }
    });
}

/// The most products [`matmul_many`] takes at once (q/k/v is three).
const MANY: usize = 4;

/// The prefill products' arithmetic: bf16 on AMX tiles where the CPU has them, else f32;
/// `AUTOROUND_PREFILL=f32` keeps f32 everywhere.
pub fn prefill_precision() -> Precision {
    static P: std::sync::OnceLock<Precision> = std::sync::OnceLock::new();
    *P.get_or_init(|| match std::env::var("AUTOROUND_PREFILL").as_deref() {
        Ok("f32") => Precision::F32,
        _ => Precision::fastest(),
    })
}

/// A batch. Where the CPU has AMX-INT8 and the type a kernel there
/// ([`autoround_kernels::qgemm`]): the activations quantized as llama.cpp quantizes them, then
/// exact integer block sums against the weights in place. Otherwise dequantized slabs of rows
/// times all tokens through the f32/bf16 GEMM.
fn prefill(ws: &[&Weight], x: &[f32], n: usize, outs: &mut [&mut [f32]]) {
    // rayon's threads take the cores: the decode pool's idle workers should not spin on them
    pool().rest();
    let cols = x.len() / n;
    // Quantized activations, once per quantizer (Q4_K's differs: llama.cpp's 4-row form).
    let mut quantized: Vec<((GgmlType, bool), super::QuantizedActivations)> = Vec::new();
    // Activations rounded as llama.cpp rounds them: to the vec-dot type and back, once per type.
    // Unrounded activations move perplexity by 0.2-0.3% on SmolLM2 (measured).
    let mut rounded: Vec<(GgmlType, Vec<f32>)> = Vec::new();
    let int8 = qgemm::available();
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        let Repr::Ggml { ty, data } = &w.repr else {
            // group-wise: the dequantized slabs against the activations as they are
            prefill_one(w, x, n, out);
            continue;
        };
        let vt = reference::vec_dot_type(*ty);
        if int8 && qgemm::supports(*ty) {
            let key = (vt, *ty == GgmlType::Q4_K);
            let at = match quantized.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None => {
                    quantized.push((key, super::QuantizedActivations::new(*ty, x, n, cols)));
                    quantized.len() - 1
                }
            };
            let qa = &quantized[at].1.data;
            match &w.tiles {
                Some(t) => t.matmul(qa, n, out, w.rows),
                None => qgemm::matmul(*ty, cols, data, w.rows, qa, n, out, w.rows),
            }
            continue;
        }
        if vt != GgmlType::F32 && !rounded.iter().any(|(t, _)| *t == vt) {
            let d = reference::dequantize_fn(vt).expect("vec-dot types are dequantizable");
            let qa = super::QuantizedActivations::new(*ty, x, n, cols);
            let bytes = qa.data.len() / n;
            let mut xq = vec![0f32; x.len()];
            xq.par_chunks_mut(cols)
                .zip(qa.data.par_chunks(bytes))
                .for_each(|(dst, src)| d(src, dst));
            rounded.push((vt, xq));
        }
        let xw = rounded
            .iter()
            .find(|(t, _)| *t == vt)
            .map_or(x, |(_, v)| &v[..]);
        prefill_one(w, xw, n, out);
    }
}

fn prefill_one(w: &Weight, x: &[f32], n: usize, out: &mut [f32]) {
    let slab_rows = (SLAB_ELEMENTS / w.cols).clamp(32, w.rows.max(32)) / 32 * 32;
    let prec = prefill_precision();
    SLAB.with(|slab| {
        let mut slab = slab.borrow_mut();
        let mut r0 = 0;
        while r0 < w.rows {
            let rows = slab_rows.min(w.rows - r0);
            slab.resize(rows * w.cols, 0.0);
            slab.par_chunks_mut(w.cols)
                .enumerate()
                .for_each(|(i, dst)| w.dequantize_row(r0 + i, dst));
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
                // decode (2^-11 relative), bf16 inputs where AMX bf16 runs the prefill (2^-9 each; the
                // AMX int8 prefill forms the llama.cpp path's exact block sums).
                // Bounds relative to Σ|w·x| of each output.
                let int8 = qgemm::available() && qgemm::supports(ty);
                let bf16 = n >= PREFILL_ROWS && prefill_precision() == Precision::Bf16 && !int8;
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

    /// Group-wise weights: decode (the group-wise kernels, Q8_0 activations) and prefill (the
    /// dequantized slabs) against the llama.cpp path (the same weights dequantized to f32, f32
    /// activations). Decode's bound is the activation rounding: each activation is off by at
    /// most half its Q8_0 step (`amax/127` of its 32), so the product by `Σ|w|·amax/254`.
    #[test]
    fn group_wise_paths_agree_with_the_f32_path() {
        use autoround_kernels::groupwise::{GroupMatrix, GroupSpec};
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for (bits, group, rows, cols) in [
            (4, 128, 70, 576),
            (2, 32, 40, 256),
            (3, 64, 33, 320),
            (8, 0, 50, 192),
        ] {
            let spec = GroupSpec::new(bits, group, cols).unwrap();
            let g = spec.groups(cols);
            let codes: Vec<u8> = (0..rows * cols)
                .map(|_| (next() % (1 << bits)) as u8)
                .collect();
            let scales: Vec<f32> = (0..rows * g)
                .map(|_| half::f16::from_f32((next() % 1000) as f32 * 1e-4).to_f32())
                .collect();
            let zeros: Vec<u32> = (0..rows * g)
                .map(|_| (next() % (1 << bits)) as u32)
                .collect();
            let m = GroupMatrix::from_codes(spec, rows, cols, &codes, &scales, &zeros).unwrap();
            let w = Weight::group("w", m);
            let wd = w.to_f32();
            for n in [1, 2, PREFILL_ROWS + 3] {
                let x: Vec<f32> = (0..n * cols)
                    .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                    .collect();
                let mut want = vec![0f32; n * rows];
                let mut got = vec![0f32; n * rows];
                super::super::matmul(&w, &x, n, &mut want);
                matmul(&w, &x, n, &mut got);
                for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                    let (t, row) = (i / rows, i % rows);
                    let xs = &x[t * cols..(t + 1) * cols];
                    let wr = &wd[row * cols..(row + 1) * cols];
                    let mag: f32 = wr.iter().zip(xs).map(|(a, b)| (a * b).abs()).sum();
                    let tol = if n >= PREFILL_ROWS {
                        // bf16 inputs on AMX: 2^-9 each
                        mag / 128.0 + 1e-6
                    } else {
                        let q8: f32 = wr
                            .chunks(32)
                            .zip(xs.chunks(32))
                            .map(|(wc, xc)| {
                                let amax = xc.iter().fold(0f32, |a, v| a.max(v.abs()));
                                wc.iter().map(|v| v.abs()).sum::<f32>() * amax / 254.0
                            })
                            .sum();
                        1.01 * q8 + 1e-4 * mag + 1e-6
                    };
                    assert!(
                        (g - r).abs() <= tol,
                        "INT{bits} g{group} n {n} element {i}: {g} vs {r} (tolerance {tol})"
                    );
                }
            }
        }
    }
}
