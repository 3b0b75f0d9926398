//! SignRound on one block: tune every quantized linear layer's rounding offsets and clipping
//! scales by signed gradient descent so the quantized block reproduces the float block.
//!
//! Per iteration (as the reference's `quantize_block`): draw the next batch of sample indices,
//! quantize-dequantize every layer with the current V/α/β, run the block on the batch's inputs,
//! take the masked MSE against the float block's outputs, backpropagate to V/α/β, remember the
//! parameters if this batch's loss is the best so far (before stepping, so the snapshot is what
//! produced that loss), then step: `p ← p − lr·(1 − i/iters)·sign(∂L/∂p)`.

use super::block::{
    backward, forward, par_copy, scratch, BlockFloat, BlockShape, Grads, Saved, Weights,
};
use super::calib::SplitMix64;
use super::ops::Rope;
use super::qdq::{GroupParams, QuantGrads, QuantLayer};
use rayon::prelude::*;

/// The tuning knobs (reference defaults in brackets).
#[derive(Clone, Debug, PartialEq)]
pub struct SignRoundOptions {
    /// Iterations [200].
    pub iters: usize,
    /// Learning rate of V [1/iters].
    pub lr: f32,
    /// Learning rate of α/β [= lr].
    pub minmax_lr: f32,
    /// Tune α/β [true].
    pub enable_minmax: bool,
    /// Samples per iteration [8].
    pub batch_size: usize,
    /// Keep the last iteration's parameters instead of the best one's [false].
    pub not_use_best_mse: bool,
    /// The lr was not given: each layer's comes from its own bits, as the reference's
    /// `compute_lr` (`lr` is then the global scheme's, for display).
    pub lr_by_bits: bool,
    /// Neither lr was given: the min-max lr follows the layer's auto lr too.
    pub minmax_by_bits: bool,
}

impl SignRoundOptions {
    /// The reference's automatic lr for `bits`-bit layers (`_lr_for_bits`): 2/iters for 3 bits
    /// or fewer at 1000 iterations or more, else 1/iters.
    pub fn auto_lr(iters: usize, bits: u32) -> f32 {
        let n = if iters >= 1000 && bits <= 3 { 2.0 } else { 1.0 };
        n / iters.max(1) as f32
    }

    /// `(lr, min-max lr)` of a layer of `bits` bits (mixed bits differ only when the lr is
    /// automatic).
    pub fn lrs(&self, bits: u32) -> (f32, f32) {
        let auto = Self::auto_lr(self.iters, bits);
        (
            if self.lr_by_bits { auto } else { self.lr },
            if self.minmax_by_bits {
                auto
            } else {
                self.minmax_lr
            },
        )
    }
}

/// The reference's `IndexSampler`: one shuffled order of the sample indices handed out in
/// consecutive batches; when fewer than a batch remain, a fresh shuffle starts over (the tail is
/// dropped). Its state carries over from block to block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexSampler {
    rng: SplitMix64,
    indices: Vec<usize>,
    pos: usize,
    batch: usize,
}

impl IndexSampler {
    pub fn new(nsamples: usize, batch: usize, seed: u64) -> IndexSampler {
        assert!(batch >= 1 && batch <= nsamples);
        let mut s = IndexSampler {
            rng: SplitMix64(seed),
            indices: (0..nsamples).collect(),
            pos: 0,
            batch,
        };
        s.reshuffle();
        s
    }

    fn reshuffle(&mut self) {
        for i in (1..self.indices.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            self.indices.swap(i, j);
        }
        self.pos = 0;
    }

    pub fn next_batch(&mut self) -> Vec<usize> {
        if self.pos + self.batch > self.indices.len() {
            self.reshuffle();
        }
        let b = self.indices[self.pos..self.pos + self.batch].to_vec();
        self.pos += self.batch;
        b
    }

    /// The state, for checkpoints: generator state, current order and position.
    pub fn state(&self) -> (u64, Vec<usize>, usize) {
        (self.rng.0, self.indices.clone(), self.pos)
    }

    pub fn from_state(rng: u64, indices: Vec<usize>, pos: usize, batch: usize) -> IndexSampler {
        IndexSampler {
            rng: SplitMix64(rng),
            indices,
            pos,
            batch,
        }
    }
}

/// The block's calibration data: inputs of the quantized chain, targets from the float chain,
/// and the per-token loss mask (1 = scored), all for `nsamples` sequences of `seq_len` tokens.
pub struct BlockData<'a> {
    pub q_in: &'a [f32],
    pub fp_out: &'a [f32],
    pub mask: &'a [f32],
    pub seq_len: usize,
}

/// How tuning a block went. Losses are the reference's logged value: the batch's masked MSE
/// (masked positions count in the mean as zeros) divided by the number of scored tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct TuneStats {
    pub init_loss: f64,
    pub best_loss: f64,
    pub best_iter: usize,
}

/// Everything the block's layers are, for one forward pass: the quantize-dequantized weight of
/// each tuned layer, the float weight of the others.
fn qdq_all(
    layers: &[Option<QuantLayer>],
    floats: &[Vec<f32>],
    w_hat: &mut [Vec<f32>],
) -> Vec<Option<GroupParams>> {
    layers
        .iter()
        .zip(w_hat.iter_mut())
        .zip(floats)
        .map(|((l, wh), f)| match l {
            Some(l) => {
                wh.resize(l.w.len(), 0.0);
                Some(l.qdq(wh))
            }
            None => {
                if wh.is_empty() {
                    *wh = f.clone();
                }
                None
            }
        })
        .collect()
}

/// Rows `idx` (each `row` long) of `src` into `out`.
fn gather(src: &[f32], idx: &[usize], row: usize, out: &mut Vec<f32>) {
    let out = scratch(out, idx.len() * row);
    for (dst, &i) in out.chunks_mut(row).zip(idx) {
        par_copy(dst, &src[i * row..(i + 1) * row]);
    }
}

/// `(reference-style loss, mean masked squared error)` for one batch, with
/// `∂(mean masked squared error)/∂pred` written into `dy`.
fn loss_and_grad(
    pred: &[f32],
    target: &[f32],
    mask: &[f32],
    d: usize,
    dy: &mut Vec<f32>,
) -> (f64, f64) {
    let n = pred.len() as f64;
    let sumsq: f64 = scratch(dy, pred.len())
        .par_chunks_mut(d)
        .zip(pred.par_chunks(d).zip(target.par_chunks(d)))
        .zip(mask.par_iter())
        .map(|((g, (p, t)), &m)| {
            let mut s = 0f64;
            for i in 0..d {
                let diff = (p[i] - t[i]) * m;
                s += (diff as f64) * (diff as f64);
                g[i] = (2.0 * diff as f64 * m as f64 / n) as f32;
            }
            s
        })
        .sum();
    let scored = mask.iter().filter(|&&m| m != 0.0).count().max(1) as f64;
    let mse = sumsq / n;
    (mse / scored, mse)
}

/// The buffers of a tuning iteration: the batch, the forward and backward passes' activations
/// and gradients. Kept from iteration to iteration and from block to block, so the loop
/// allocates (and the kernel zeroes fresh pages) only once per run.
#[derive(Default)]
pub struct Workspace {
    saved: Saved,
    back: Grads,
    x: Vec<f32>,
    target: Vec<f32>,
    mask: Vec<f32>,
    dy: Vec<f32>,
}

/// Tune `layers` (one entry per linear in `Lin::ALL` order; `None` = kept in float) of one block.
/// On return each layer holds the chosen V/α/β. `on_iter(i, loss)` sees every iteration.
#[allow(clippy::too_many_arguments)]
pub fn tune_block(
    sh: &BlockShape,
    fl: &BlockFloat,
    rope: &Rope,
    layers: &mut [Option<QuantLayer>],
    floats: &[Vec<f32>],
    data: &BlockData<'_>,
    opts: &SignRoundOptions,
    sampler: &mut IndexSampler,
    ws: &mut Workspace,
    on_iter: &mut dyn FnMut(usize, f64),
) -> TuneStats {
    let d = sh.d;
    let row = data.seq_len * d;
    let mut w_hat: Vec<Vec<f32>> = vec![Vec::new(); layers.len()];
    // V, α, β of the best iteration so far (copied into, not reallocated, on each improvement).
    type Params = (Vec<f32>, Vec<f32>, Vec<f32>);
    let mut best: Vec<Option<Params>> = vec![None; layers.len()];
    let mut have_best = false;
    let mut stats = TuneStats {
        init_loss: f64::NAN,
        best_loss: f64::MAX,
        best_iter: 0,
    };
    let mut grads: Vec<QuantGrads> = vec![QuantGrads::default(); layers.len()];
    let snapshot = |layers: &[Option<QuantLayer>], best: &mut [Option<Params>]| {
        for (l, b) in layers.iter().zip(best.iter_mut()) {
            if let Some(l) = l {
                let (v, a, be) = b.get_or_insert_with(Default::default);
                for (dst, src) in [(v, &l.v), (a, &l.alpha), (be, &l.beta)] {
                    par_copy(scratch(dst, src.len()), src);
                }
            }
        }
    };
    let Workspace {
        saved,
        back,
        x,
        target,
        mask,
        dy,
    } = ws;
    for i in 0..opts.iters {
        let idx = sampler.next_batch();
        gather(data.q_in, &idx, row, x);
        gather(data.fp_out, &idx, row, target);
        gather(data.mask, &idx, data.seq_len, mask);
        let params = qdq_all(layers, floats, &mut w_hat);
        let w: Weights = std::array::from_fn(|k| w_hat[k].as_slice());
        forward(sh, fl, rope, &w, x, idx.len(), saved);
        let (loss, _mse) = loss_and_grad(&saved.y, target, mask, d, dy);
        if i == 0 {
            stats.init_loss = loss;
        }
        on_iter(i, loss);
        if loss < stats.best_loss {
            stats.best_loss = loss;
            if !opts.not_use_best_mse {
                snapshot(layers, &mut best);
                have_best = true;
                stats.best_iter = i;
            }
        }
        if opts.not_use_best_mse && i + 1 == opts.iters {
            snapshot(layers, &mut best);
            have_best = true;
            stats.best_iter = i;
        }
        backward(sh, fl, rope, &w, saved, dy, back);
        let decay = 1.0 - i as f32 / opts.iters as f32;
        for (k, l) in layers.iter_mut().enumerate() {
            if let (Some(l), Some(p)) = (l.as_mut(), params[k].as_ref()) {
                l.backward(p, &back.dw[k], &mut grads[k]);
                let (lr, minmax_lr) = opts.lrs(l.scheme.bits);
                l.sign_step(
                    &grads[k],
                    lr * decay,
                    opts.enable_minmax.then_some(minmax_lr * decay),
                );
            }
        }
    }
    if have_best {
        for (l, s) in layers.iter_mut().zip(best) {
            if let (Some(l), Some((v, a, be))) = (l.as_mut(), s) {
                l.v = v;
                l.alpha = a;
                l.beta = be;
            }
        }
    }
    stats
}

/// Run a block over all samples, a batch at a time (no gradients): `x` is `nsamples` sequences of
/// `seq_len` tokens.
pub fn block_outputs(
    sh: &BlockShape,
    fl: &BlockFloat,
    rope: &Rope,
    w: &Weights<'_>,
    x: &[f32],
    seq_len: usize,
    batch: usize,
) -> Vec<f32> {
    let mut out = Vec::new();
    block_outputs_into(
        sh,
        fl,
        rope,
        w,
        x,
        seq_len,
        batch,
        &mut Saved::default(),
        &mut out,
    );
    out
}

/// [`block_outputs`] into `out` (overwritten), with the forward pass's buffers in `s`: a run
/// that keeps both from block to block touches no fresh pages (their faults and zeroing cost
/// as much as a forward pass for a 150 MB chain).
#[allow(clippy::too_many_arguments)]
pub fn block_outputs_into(
    sh: &BlockShape,
    fl: &BlockFloat,
    rope: &Rope,
    w: &Weights<'_>,
    x: &[f32],
    seq_len: usize,
    batch: usize,
    s: &mut Saved,
    out: &mut Vec<f32>,
) {
    let row = seq_len * sh.d;
    out.clear();
    out.reserve(x.len());
    for chunk in x.chunks(row * batch) {
        forward(sh, fl, rope, w, chunk, chunk.len() / row, s);
        out.extend_from_slice(&s.y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::RopeLayout;
    use crate::tuner::block::tests::tiny;
    use crate::tuner::block::Lin;
    use crate::tuner::ops::tests::rand_vec;
    use crate::tuner::qdq::{IntScheme, ScaleDtype};

    #[test]
    fn sampler_hands_out_permutations_and_reshuffles() {
        let mut s = IndexSampler::new(10, 4, 42);
        let a = s.next_batch();
        let b = s.next_batch();
        let mut ab: Vec<usize> = a.iter().chain(&b).copied().collect();
        ab.sort();
        ab.dedup();
        assert_eq!(ab.len(), 8);
        let (rng, idx, pos) = s.state();
        let mut t = IndexSampler::from_state(rng, idx, pos, 4);
        assert_eq!(s.next_batch(), t.next_batch()); // third batch: reshuffled, same both ways
        assert_eq!(s, t);
    }

    /// The reference's `_lr_for_bits` / `compute_lr` / `compute_minmax_lr`: per layer only when
    /// the lr is automatic, and the min-max lr follows it only when it is automatic too.
    #[test]
    fn automatic_lr_follows_each_layers_bits() {
        assert_eq!(SignRoundOptions::auto_lr(1000, 2), 2.0 / 1000.0);
        assert_eq!(SignRoundOptions::auto_lr(1000, 3), 2.0 / 1000.0);
        assert_eq!(SignRoundOptions::auto_lr(1000, 4), 1.0 / 1000.0);
        assert_eq!(SignRoundOptions::auto_lr(999, 2), 1.0 / 999.0);
        let mut o = SignRoundOptions {
            iters: 1000,
            lr: 0.002,
            minmax_lr: 0.007,
            enable_minmax: true,
            batch_size: 8,
            not_use_best_mse: false,
            lr_by_bits: true,
            minmax_by_bits: false,
        };
        assert_eq!(o.lrs(2), (0.002, 0.007));
        assert_eq!(o.lrs(4), (0.001, 0.007));
        o.minmax_by_bits = true;
        assert_eq!(o.lrs(4), (0.001, 0.001));
        o.lr_by_bits = false;
        o.minmax_by_bits = false;
        assert_eq!(o.lrs(8), (0.002, 0.007));
    }

    #[test]
    fn loss_matches_reference_definition() {
        // 2 tokens of width 2, the second masked: mean over all 4 elements, / 1 scored token.
        let mut dy = vec![7.0; 3]; // stale contents of another size
        let (loss, mse) = loss_and_grad(
            &[1.0, 2.0, 5.0, 5.0],
            &[0.0, 0.0, 0.0, 0.0],
            &[1.0, 0.0],
            2,
            &mut dy,
        );
        assert_eq!(mse, 5.0 / 4.0);
        assert_eq!(loss, 5.0 / 4.0);
        assert_eq!(dy, vec![0.5, 1.0, 0.0, 0.0]);
    }

    /// Tuning a tiny random block at 2 bits must lower the loss below the RTN start, and the
    /// kept parameters must reproduce the best loss.
    #[test]
    fn tuning_beats_rtn_on_a_tiny_block() {
        let (sh, fl, ws) = tiny(false, false);
        let seq_len = 6;
        let nsamples = 8;
        let rope = Rope::new(RopeLayout::Normal, sh.head_dim, 10000.0, 1.0, None, seq_len);
        let x = rand_vec(nsamples * seq_len * sh.d, 77, 1.0);
        let wf: Weights = std::array::from_fn(|k| ws[k].as_slice());
        let fp_out = block_outputs(&sh, &fl, &rope, &wf, &x, seq_len, 4);
        let mut mask = vec![1f32; nsamples * seq_len];
        for s in 0..nsamples {
            mask[s * seq_len + seq_len - 1] = 0.0;
        }
        let scheme = IntScheme {
            bits: 2,
            group_size: 8,
            sym: true,
            dq: None,
        };
        let mut layers: Vec<Option<QuantLayer>> = Lin::ALL
            .iter()
            .enumerate()
            .map(|(k, &l)| {
                let (r, c) = sh.dims(l);
                Some(QuantLayer::new(
                    ws[k].clone(),
                    r,
                    c,
                    scheme,
                    ScaleDtype::F16,
                ))
            })
            .collect();
        let data = BlockData {
            q_in: &x,
            fp_out: &fp_out,
            mask: &mask,
            seq_len,
        };
        let opts = SignRoundOptions {
            iters: 60,
            lr: 1.0 / 60.0,
            minmax_lr: 1.0 / 60.0,
            lr_by_bits: false,
            minmax_by_bits: false,
            enable_minmax: true,
            batch_size: nsamples,
            not_use_best_mse: false,
        };
        let mut sampler = IndexSampler::new(nsamples, nsamples, 1);
        let mut losses = Vec::new();
        let stats = tune_block(
            &sh,
            &fl,
            &rope,
            &mut layers,
            &ws,
            &data,
            &opts,
            &mut sampler,
            &mut Workspace::default(),
            &mut |_, l| losses.push(l),
        );
        assert_eq!(losses.len(), 60);
        assert!(
            stats.best_loss < 0.7 * stats.init_loss,
            "best {} vs RTN {}",
            stats.best_loss,
            stats.init_loss
        );
        // With the whole set as the batch, re-evaluating the kept parameters gives the best loss.
        let mut w_hat = vec![Vec::new(); 7];
        qdq_all(&layers, &ws, &mut w_hat);
        let w: Weights = std::array::from_fn(|k| w_hat[k].as_slice());
        let pred = block_outputs(&sh, &fl, &rope, &w, &x, seq_len, nsamples);
        let (loss, _) = loss_and_grad(&pred, &fp_out, &mask, sh.d, &mut Vec::new());
        assert!(
            (loss - stats.best_loss).abs() <= 1e-9 * loss.max(1e-30) + 1e-12,
            "{loss} vs {}",
            stats.best_loss
        );
    }
}
