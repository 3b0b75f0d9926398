//! The LM head (`--quant_lm_head`): tuned alone after the blocks, as the reference's
//! `quantize_layer_outside_block`.
//!
//! Its inputs are the final RMSNorm of the two chains after the last block: the float chain's
//! gives the target `x_f·Wᵀ` with the float weight, the quantized chain's is what the quantized
//! head sees (`x_q·Ŵᵀ`). The loss is the squared error of the scored tokens summed over the batch
//! (the reference's micro-batches of one sample with `reduction="sum"`), logged divided by the
//! number of scored tokens. The rest is the block loop's: SignSGD on V and α/β with a linear
//! decay, the best iteration's parameters kept.
//!
//! The logits of a batch are `tokens × vocab`, far larger than the inputs, so they are formed a
//! chunk of tokens at a time and never kept; the target is recomputed every iteration, as the
//! reference does.

use super::block::{par_copy, scratch, Lin};
use super::ops::rmsnorm_forward;
use super::qdq::{QuantGrads, QuantLayer};
use super::run::TunedLinear;
use super::signround::{IndexSampler, SignRoundOptions, TuneStats};
use autoround_kernels::gemm::{gemm, Mat, Precision, Threads};
use rayon::prelude::*;

/// Tokens per chunk of logits (`chunk × vocab` floats, three buffers).
const CHUNK_TOKENS: usize = 256;

/// `out = x·wᵀ`: the logits of the rows of `x` for a head `w` of `rows × cols`.
fn logits(x: &[f32], w: &[f32], (rows, cols): (usize, usize), prec: Precision, out: &mut [f32]) {
    let w = Mat::new(w, rows, cols).t();
    let t = x.len() / cols;
    gemm(
        Mat::new(x, t, cols),
        w,
        out,
        rows,
        false,
        Threads::Pool,
        prec,
    );
}

/// The final RMSNorm of every row of `chain` (`tokens × d`): the head's input.
pub fn final_norm(chain: &[f32], norm: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; chain.len()];
    let mut rstd = vec![0f32; chain.len() / norm.len()];
    rmsnorm_forward(chain, norm, eps, &mut out, &mut rstd);
    out
}

/// The head's calibration data: `nsamples` sequences of `seq_len` rows of width `cols`.
pub struct HeadData<'a> {
    /// The quantized chain's normed rows (the float chain's without `enable_quanted_input`).
    pub q_in: &'a [f32],
    /// The float chain's normed rows.
    pub fp_in: &'a [f32],
    /// Per token: 1 = scored.
    pub mask: &'a [f32],
    pub seq_len: usize,
}

/// Tune `layer` (the head, its float weight in `layer.w`) on `data`; on return it holds the
/// chosen V/α/β. `on_iter(i, loss)` sees every iteration.
pub fn tune_head(
    layer: &mut QuantLayer,
    data: &HeadData<'_>,
    opts: &SignRoundOptions,
    prec: Precision,
    seed: u64,
    on_iter: &mut dyn FnMut(usize, f64),
) -> TuneStats {
    let (rows, cols) = (layer.rows, layer.cols);
    let nsamples = data.mask.len() / data.seq_len;
    let mut sampler = IndexSampler::new(nsamples, opts.batch_size.clamp(1, nsamples), seed);
    let mut w_hat = vec![0f32; layer.w.len()];
    let mut dw = Vec::new();
    let (mut target, mut pred) = (Vec::new(), Vec::new());
    let mut grads = QuantGrads::default();
    let mut best: Option<(Vec<f32>, Vec<f32>, Vec<f32>)> = None;
    let mut stats = TuneStats {
        init_loss: f64::NAN,
        best_loss: f64::MAX,
        best_iter: 0,
    };
    for i in 0..opts.iters {
        let idx = sampler.next_batch();
        let params = layer.qdq(&mut w_hat);
        let dw = scratch(&mut dw, rows * cols);
        dw.fill(0.0);
        let (mut sumsq, mut scored) = (0f64, 0usize);
        for &s in &idx {
            for t0 in (0..data.seq_len).step_by(CHUNK_TOKENS) {
                let t = CHUNK_TOKENS.min(data.seq_len - t0);
                let tok = s * data.seq_len + t0;
                let xq = &data.q_in[tok * cols..(tok + t) * cols];
                let xf = &data.fp_in[tok * cols..(tok + t) * cols];
                let mask = &data.mask[tok..tok + t];
                scored += mask.iter().filter(|&&m| m != 0.0).count();
                let target = scratch(&mut target, t * rows);
                let pred = scratch(&mut pred, t * rows);
                logits(xf, &layer.w, (rows, cols), prec, target);
                logits(xq, &w_hat, (rows, cols), prec, pred);
                // pred becomes ∂(Σ squared error)/∂pred, row by row with the token's mask
                sumsq += pred
                    .par_chunks_mut(rows)
                    .zip(target.par_chunks(rows))
                    .zip(mask.par_iter())
                    .map(|((p, y), &m)| {
                        let mut e = 0f64;
                        for (p, &y) in p.iter_mut().zip(y) {
                            let diff = (*p - y) * m;
                            e += diff as f64 * diff as f64;
                            *p = 2.0 * diff * m;
                        }
                        e
                    })
                    .sum::<f64>();
                // ∂L/∂Ŵ += dyᵀ·x_q
                gemm(
                    Mat::new(pred, t, rows).t(),
                    Mat::new(xq, t, cols),
                    dw,
                    cols,
                    true,
                    Threads::Pool,
                    prec,
                );
            }
        }
        let loss = sumsq / scored.max(1) as f64;
        if i == 0 {
            stats.init_loss = loss;
        }
        on_iter(i, loss);
        let keep = if opts.not_use_best_mse {
            i + 1 == opts.iters
        } else {
            loss < stats.best_loss
        };
        stats.best_loss = stats.best_loss.min(loss);
        if keep {
            let (v, a, b) = best.get_or_insert_with(Default::default);
            for (dst, src) in [(v, &layer.v), (a, &layer.alpha), (b, &layer.beta)] {
                par_copy(scratch(dst, src.len()), src);
            }
            stats.best_iter = i;
        }
        layer.backward(&params, dw, &mut grads);
        let decay = 1.0 - i as f32 / opts.iters as f32;
        let (lr, minmax_lr) = opts.lrs(layer.scheme.bits);
        layer.sign_step(
            &grads,
            lr * decay,
            opts.enable_minmax.then_some(minmax_lr * decay),
        );
    }
    if let Some((v, a, b)) = best {
        layer.v = v;
        layer.alpha = a;
        layer.beta = b;
    }
    stats
}

/// The head's final quantization with the parameters it holds.
pub fn head_result(layer: &QuantLayer) -> TunedLinear {
    let mut w_hat = vec![0f32; layer.w.len()];
    let p = layer.qdq(&mut w_hat);
    TunedLinear::from_layer(0, Lin::Head, layer, p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuner::ops::tests::rand_vec;
    use crate::tuner::qdq::{IntScheme, ScaleDtype};

    /// The loss of the quantized head `w_hat` on all of `data` (the tuner's definition).
    fn loss_of(w_hat: &[f32], w: &[f32], rows: usize, cols: usize, data: &HeadData<'_>) -> f64 {
        let t = data.mask.len();
        let (mut y, mut p) = (vec![0f32; t * rows], vec![0f32; t * rows]);
        for (x, w, out) in [(data.fp_in, w, &mut y), (data.q_in, w_hat, &mut p)] {
            logits(x, w, (rows, cols), Precision::F32, out);
        }
        let mut e = 0f64;
        for (tok, &m) in data.mask.iter().enumerate() {
            for j in 0..rows {
                let d = (p[tok * rows + j] - y[tok * rows + j]) * m;
                e += d as f64 * d as f64;
            }
        }
        e / data.mask.iter().filter(|&&m| m != 0.0).count() as f64
    }

    /// Tuning a random head at 2 bits lowers the loss well below round-to-nearest, iteration 0
    /// is RTN on the quantized chain's inputs against the float chain's targets, and the kept
    /// parameters reproduce the best loss (logits formed in chunks of tokens: 300 > 256).
    #[test]
    fn tuning_the_head_beats_rtn() {
        let (rows, cols, seq_len, nsamples) = (96, 64, 300, 4);
        let w = rand_vec(rows * cols, 5, 0.5);
        // correlated inputs, as a model's hidden states are: a few directions plus a little
        // noise (with independent inputs each weight's own rounding error dominates its
        // gradient, and there is nothing for the rounding offsets to trade)
        let n = nsamples * seq_len;
        let (z, basis) = (rand_vec(n * 6, 6, 1.0), rand_vec(6 * cols, 8, 1.0));
        let fp_in: Vec<f32> = (0..n * cols)
            .map(|i| {
                let (t, c) = (i / cols, i % cols);
                (0..6)
                    .map(|k| z[t * 6 + k] * basis[k * cols + c])
                    .sum::<f32>()
            })
            .zip(rand_vec(n * cols, 9, 0.1))
            .map(|(a, b)| a + b)
            .collect();
        let noise = rand_vec(fp_in.len(), 7, 0.05);
        let q_in: Vec<f32> = fp_in.iter().zip(&noise).map(|(a, b)| a + b).collect();
        let mut mask = vec![1f32; nsamples * seq_len];
        for s in 0..nsamples {
            mask[s * seq_len + seq_len - 1] = 0.0;
        }
        let data = HeadData {
            q_in: &q_in,
            fp_in: &fp_in,
            mask: &mask,
            seq_len,
        };
        let scheme = IntScheme::new(2, 32, true);
        let mut layer = QuantLayer::new(w.clone(), rows, cols, scheme, ScaleDtype::F16);
        layer.torch_grads = true;
        let mut rtn_hat = vec![0f32; w.len()];
        layer.qdq(&mut rtn_hat);
        let rtn = loss_of(&rtn_hat, &w, rows, cols, &data);
        let opts = SignRoundOptions {
            iters: 80,
            lr: 1.0 / 80.0,
            minmax_lr: 1.0 / 80.0,
            lr_by_bits: false,
            minmax_by_bits: false,
            enable_minmax: true,
            batch_size: nsamples,
            not_use_best_mse: false,
        };
        let mut losses = Vec::new();
        let stats = tune_head(&mut layer, &data, &opts, Precision::F32, 42, &mut |_, l| {
            losses.push(l)
        });
        assert_eq!(losses.len(), 80);
        // the whole set is the batch: iteration 0 is RTN, the kept parameters give the best
        assert!(
            (stats.init_loss - rtn).abs() <= 1e-9 * rtn,
            "{} vs {rtn}",
            stats.init_loss
        );
        assert!(
            stats.best_loss < 0.8 * rtn,
            "best {} vs RTN {rtn}",
            stats.best_loss
        );
        let t = head_result(&layer);
        assert_eq!((t.lin, t.rows, t.cols), (Lin::Head, rows, cols));
        let kept = loss_of(&t.dequantize(), &w, rows, cols, &data);
        assert!(
            (kept - stats.best_loss).abs() <= 1e-6 * kept,
            "{kept} vs {}",
            stats.best_loss
        );
    }
}
