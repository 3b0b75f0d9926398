//! The block-by-block loop over a whole model (the reference's `_quantize_blocks`).
//!
//! The calibration tokens are embedded once: those rows are block 0's input on both chains. For
//! each block k:
//! 1. the float block's outputs on the float chain, `F_k(x_k)`: the tuning target and `x_{k+1}`;
//! 2. SignRound on the quantized chain's inputs `q_k` (or on `x_k` without
//!    `enable_quanted_input`);
//! 3. the final quantize-dequantize with the kept parameters, and `q_{k+1} = Q_k(q_k)`.
//!
//! With `iters == 0` nothing needs calibration data: every layer is plain round-to-nearest.
//! Only the current block's float weights, the two chains and the targets are resident; the model
//! stays memory-mapped.

use super::block::{forward, BlockFloat, BlockShape, Lin, Saved, Weights};
use super::ops::Rope;
use super::qdq::{GroupParams, IntScheme, QuantLayer, ScaleDtype};
use super::signround::{
    block_outputs_into, tune_block, BlockData, IndexSampler, SignRoundOptions, TuneStats, Workspace,
};
use crate::model::llama::{Layer, Model};
use crate::tensor::Weight;
use autoround_kernels::gemm::Precision;
use std::time::Instant;

/// What to do to the model.
#[derive(Clone, Debug)]
pub struct TuneSpec {
    pub scale_dtype: ScaleDtype,
    pub opts: SignRoundOptions,
    /// Feed each block the quantized previous blocks' outputs [true].
    pub enable_quanted_input: bool,
    /// Seed of the batch sampler [42].
    pub seed: u64,
    /// Arithmetic of the block's matrix products: the reference computes in bf16 (autocast) on
    /// CPUs with bf16 support, f32 otherwise.
    pub prec: Precision,
    /// Follow torch's gradients of the quantize-dequantize (`QuantLayer::torch_grads`): no
    /// gradient for weights on the lowest or highest level, f16-rounded scale gradients.
    pub torch_grads: bool,
}

/// One quantized linear layer: its integer codes (`0 … 2^b-1`, row-major like the weight) and
/// per-group scales (and zero points when asymmetric).
#[derive(Clone, Debug, PartialEq)]
pub struct TunedLinear {
    pub block: usize,
    pub lin: Lin,
    pub rows: usize,
    pub cols: usize,
    pub scheme: IntScheme,
    /// Group width (`cols` for one group per row).
    pub gs: usize,
    /// `rows × n_groups` scales, as used (rounded to the scale dtype).
    pub scale: Vec<f32>,
    /// `rows × n_groups` integer zero points (asymmetric); empty when symmetric (the zero point is
    /// `2^(b-1)`). Double-quantized asymmetric: the group mins `m`, with `ŵ = scale·code − m`.
    pub zp: Vec<f32>,
    pub codes: Vec<u8>,
    /// Double-quantized: one super scale per super-block (`scale = integer · d`), and for
    /// asymmetric schemes one for the mins (`m = integer · dmin`); empty otherwise.
    pub d: Vec<f32>,
    pub dmin: Vec<f32>,
}

impl TunedLinear {
    pub(crate) fn from_layer(
        block: usize,
        lin: Lin,
        l: &QuantLayer,
        p: GroupParams,
    ) -> TunedLinear {
        TunedLinear {
            block,
            lin,
            rows: l.rows,
            cols: l.cols,
            scheme: l.scheme,
            gs: l.gs,
            codes: l.codes(&p),
            // what the file holds (see `GroupParams::stored`)
            scale: if p.stored.is_empty() {
                p.scale
            } else {
                p.stored
            },
            zp: p.zp,
            d: p.d,
            dmin: p.dmin,
        }
    }

    pub fn n_groups(&self) -> usize {
        self.cols.div_ceil(self.gs)
    }

    /// The zero point of group `gi` in code units.
    pub fn zero(&self, gi: usize) -> f32 {
        if self.scheme.sym {
            (1u32 << (self.scheme.bits - 1)) as f32
        } else {
            self.zp[gi]
        }
    }

    /// `scale · (code − zero)` for every weight (double-quantized asymmetric: `scale · code −
    /// m`, as llama.cpp's K-quants compute it): what the quantized model computes with.
    pub fn dequantize(&self) -> Vec<f32> {
        let ng = self.n_groups();
        let asym_dq = self.scheme.dq.is_some() && !self.scheme.sym;
        let mut out = vec![0f32; self.rows * self.cols];
        for r in 0..self.rows {
            for c in 0..self.cols {
                let gi = r * ng + c / self.gs;
                let q = self.codes[r * self.cols + c] as f32;
                out[r * self.cols + c] = if asym_dq {
                    self.scale[gi] * q - self.zp[gi]
                } else {
                    self.scale[gi] * (q - self.zero(gi))
                };
            }
        }
        out
    }
}

/// Progress of the loop, for bars, logs and checkpoints.
pub struct BlockReport<'a> {
    pub block: usize,
    pub n_blocks: usize,
    /// `None` with `iters == 0`.
    pub stats: Option<TuneStats>,
    pub seconds: f64,
    pub layers: &'a [TunedLinear],
}

/// The loss mask of the reference: pad tokens (when the vocabulary names one) and the last
/// position of every sample are not scored.
pub fn loss_mask(samples: &[Vec<u32>], pad: Option<u32>) -> Vec<f32> {
    let mut m = Vec::new();
    for s in samples {
        let start = m.len();
        m.extend(s.iter().map(|&t| if Some(t) == pad { 0.0 } else { 1.0 }));
        if pad.is_none() {
            // no pad id: trailing repeats of the last token count as padding
            let last = s[s.len() - 1];
            let mut j = s.len() as isize - 2;
            while j >= 0 && s[j as usize] == last {
                m[start + j as usize] = 0.0;
                j -= 1;
            }
        }
        m[start + s.len() - 1] = 0.0;
    }
    m
}

pub fn block_shape(model: &Model<'_>) -> BlockShape {
    let c = &model.cfg;
    BlockShape {
        d: c.n_embd,
        ff: c.n_ff,
        n_head: c.n_head,
        n_kv: c.n_head_kv,
        head_dim: c.head_dim,
        eps: c.rms_eps,
        prec: Default::default(),
    }
}

fn weight_of<'l, 'a>(layer: &'l Layer<'a>, lin: Lin) -> &'l Weight<'a> {
    match lin {
        Lin::Q => &layer.wq,
        Lin::K => &layer.wk,
        Lin::V => &layer.wv,
        Lin::O => &layer.wo,
        Lin::Gate => &layer.w_gate,
        Lin::Up => &layer.w_up,
        Lin::Down => &layer.w_down,
        Lin::Head => panic!("the LM head is not a block layer"),
    }
}

fn block_float(layer: &Layer<'_>) -> BlockFloat {
    BlockFloat {
        attn_norm: layer.attn_norm.clone(),
        ffn_norm: layer.ffn_norm.clone(),
        bq: layer.bq.clone(),
        bk: layer.bk.clone(),
        bv: layer.bv.clone(),
        q_norm: layer.q_norm.clone(),
        k_norm: layer.k_norm.clone(),
    }
}

/// Round-to-nearest of every chosen layer (`--iters 0`).
///
/// Without calibration data this is plain RTN (the reference's `--iters 0 --disable_opt_rtn`).
/// With `calib = (samples, batch)` it is the reference's optimized RTN (`opt_rtn_int_sym`): the
/// float chain runs through each block to collect every linear layer's importance (Σx² of its
/// inputs per input channel), then each symmetric layer below 8 bits takes the scales of
/// [`QuantLayer::search_scales`]; other layers stay plain round-to-nearest.
pub fn rtn_model(
    model: &Model<'_>,
    calib: Option<(&[Vec<u32>], usize)>,
    scale_dtype: ScaleDtype,
    scheme_of: &dyn Fn(usize, Lin) -> Option<IntScheme>,
    on_block: &mut dyn FnMut(&BlockReport<'_>),
) -> Vec<TunedLinear> {
    let seq_len = calib.and_then(|(s, _)| s.first()).map_or(0, Vec::len);
    let sh = block_shape(model);
    let rope = model_rope(model, seq_len);
    let mut x = calib.map(|(s, _)| embed(model, s)).unwrap_or_default();
    let row = seq_len * sh.d;
    let batch = calib.map_or(1, |(_, b)| b.max(1));
    let mut all = Vec::new();
    let n = model.layers.len();
    for (b, layer) in model.layers.iter().enumerate() {
        let t0 = Instant::now();
        let floats: Vec<Vec<f32>> = Lin::ALL
            .iter()
            .map(|&l| weight_of(layer, l).to_f32())
            .collect();
        let importance = calib.map(|_| {
            let fl = block_float(layer);
            let wf: Weights = std::array::from_fn(|k| floats[k].as_slice());
            let mut importance: Vec<Vec<f32>> =
                Lin::ALL.iter().map(|&l| vec![0f32; sh.dims(l).1]).collect();
            let mut next = Vec::with_capacity(x.len());
            let mut saved = Saved::default();
            for chunk in x.chunks(row * batch) {
                forward(&sh, &fl, &rope, &wf, chunk, chunk.len() / row, &mut saved);
                next.extend_from_slice(&saved.y);
                for (imp, inp) in importance.iter_mut().zip(saved.linear_inputs()) {
                    for tok in inp.chunks_exact(imp.len()) {
                        for (s, &v) in imp.iter_mut().zip(tok) {
                            *s += v * v;
                        }
                    }
                }
            }
            x = next;
            importance
        });
        let mut done = Vec::new();
        for (k, (&lin, w)) in Lin::ALL.iter().zip(floats).enumerate() {
            let Some(scheme) = scheme_of(b, lin) else {
                continue;
            };
            let (r, c) = sh.dims(lin);
            let mut l = QuantLayer::new(w, r, c, scheme, scale_dtype);
            if let Some(im) = importance
                .as_ref()
                .filter(|_| scheme.sym && scheme.dq.is_none() && scheme.bits < 8)
            {
                l.search_scales(Some(&im[k]));
            }
            let mut w_hat = vec![0f32; l.w.len()];
            let p = l.qdq(&mut w_hat);
            done.push(TunedLinear::from_layer(b, lin, &l, p));
        }
        on_block(&BlockReport {
            block: b,
            n_blocks: n,
            stats: None,
            seconds: t0.elapsed().as_secs_f64(),
            layers: &done,
        });
        all.extend(done);
    }
    all
}

/// The state of the loop between blocks: enough to go on from block `next_block`.
pub struct Chains {
    pub next_block: usize,
    /// Float chain `x_k`.
    pub x: Vec<f32>,
    /// Quantized chain `q_k` (empty without `enable_quanted_input`).
    pub q: Vec<f32>,
    pub sampler: IndexSampler,
    /// The forward pass's buffers and a chain-sized spare, kept from block to block.
    scratch: Saved,
    spare: Vec<f32>,
}

/// The embedded calibration tokens: block 0's input.
pub fn embed(model: &Model<'_>, samples: &[Vec<u32>]) -> Vec<f32> {
    let d = model.cfg.n_embd;
    let mut x = vec![0f32; samples.iter().map(Vec::len).sum::<usize>() * d];
    for (i, &t) in samples.iter().flatten().enumerate() {
        model
            .tok_embd
            .dequantize_row(t as usize, &mut x[i * d..(i + 1) * d]);
    }
    x
}

impl Chains {
    pub fn start(model: &Model<'_>, samples: &[Vec<u32>], spec: &TuneSpec) -> Chains {
        let x = embed(model, samples);
        Chains {
            next_block: 0,
            q: if spec.enable_quanted_input {
                x.clone()
            } else {
                Vec::new()
            },
            x,
            sampler: IndexSampler::new(
                samples.len(),
                spec.opts.batch_size.min(samples.len()),
                spec.seed,
            ),
            scratch: Saved::default(),
            spare: Vec::new(),
        }
    }

    /// The float outputs of a block (weights `wf`) over the float chain, into a buffer that
    /// [`Chains::advance`] hands back.
    fn float_outputs(
        &mut self,
        sh: &BlockShape,
        fl: &BlockFloat,
        rope: &Rope,
        wf: &Weights<'_>,
        seq_len: usize,
        batch: usize,
    ) -> Vec<f32> {
        let mut out = std::mem::take(&mut self.spare);
        block_outputs_into(
            sh,
            fl,
            rope,
            wf,
            &self.x,
            seq_len,
            batch,
            &mut self.scratch,
            &mut out,
        );
        out
    }
}

impl Chains {
    /// Move past block `chains.next_block`, whose float outputs are `fp_out`: the quantized chain
    /// goes through the block with the `tuned` layers dequantized (and the others in float). Both
    /// the tuning loop and [`Chains::replay`] come through here, so a resumed run computes the
    /// same chains bit for bit.
    #[allow(clippy::too_many_arguments)]
    fn advance(
        &mut self,
        sh: &BlockShape,
        fl: &BlockFloat,
        rope: &Rope,
        floats: Vec<Vec<f32>>,
        tuned: &[TunedLinear],
        fp_out: Vec<f32>,
        seq_len: usize,
        batch: usize,
        spec: &TuneSpec,
    ) {
        if spec.enable_quanted_input {
            let mut w_hat = floats;
            for t in tuned {
                w_hat[Lin::ALL
                    .iter()
                    .position(|&l| l == t.lin)
                    .expect("a block layer")] = t.dequantize();
            }
            let wq: Weights = std::array::from_fn(|k| w_hat[k].as_slice());
            let mut out = std::mem::take(&mut self.x);
            block_outputs_into(
                sh,
                fl,
                rope,
                &wq,
                &self.q,
                seq_len,
                batch,
                &mut self.scratch,
                &mut out,
            );
            self.x = std::mem::replace(&mut self.q, out);
        }
        // The old float chain's buffer becomes the next block's float outputs.
        self.spare = std::mem::replace(&mut self.x, fp_out);
        self.next_block += 1;
    }

    /// The chains after blocks `0 .. next_block`, rebuilt from the calibration samples and those
    /// blocks' saved layers (`done`), with the batch sampler restored to `sampler`: what
    /// [`tune_model`] had when it finished block `next_block − 1`.
    #[allow(clippy::too_many_arguments)]
    pub fn replay(
        model: &Model<'_>,
        samples: &[Vec<u32>],
        spec: &TuneSpec,
        done: &[TunedLinear],
        next_block: usize,
        sampler: (u64, Vec<usize>, usize),
        on_block: &mut dyn FnMut(usize),
    ) -> Chains {
        let mut ch = Chains::start(model, samples, spec);
        let seq_len = samples.first().map_or(0, Vec::len);
        let sh = BlockShape {
            prec: spec.prec,
            ..block_shape(model)
        };
        let rope = model_rope(model, seq_len);
        let batch = spec.opts.batch_size.max(1);
        for b in 0..next_block.min(model.layers.len()) {
            let layer = &model.layers[b];
            let fl = block_float(layer);
            let floats: Vec<Vec<f32>> = Lin::ALL
                .iter()
                .map(|&l| weight_of(layer, l).to_f32())
                .collect();
            let wf: Weights = std::array::from_fn(|k| floats[k].as_slice());
            let fp_out = ch.float_outputs(&sh, &fl, &rope, &wf, seq_len, batch);
            let tuned: Vec<TunedLinear> = done.iter().filter(|t| t.block == b).cloned().collect();
            ch.advance(
                &sh, &fl, &rope, floats, &tuned, fp_out, seq_len, batch, spec,
            );
            on_block(b);
        }
        let (rng, indices, pos) = sampler;
        ch.sampler =
            IndexSampler::from_state(rng, indices, pos, spec.opts.batch_size.min(samples.len()));
        ch
    }
}

fn model_rope(model: &Model<'_>, seq_len: usize) -> Rope {
    let c = &model.cfg;
    Rope::new(
        c.rope_layout,
        c.rope_dims,
        c.rope_base,
        c.rope_freq_scale,
        model.rope_freq_factors.as_deref(),
        seq_len,
    )
}

/// Tune blocks `chains.next_block ..` of `model` on the calibration `samples` (all `seq_len`
/// tokens long), calling `on_block` after each with that block's layers and the chains ready for
/// the next. Layers for which `scheme_of` says `None` stay in float.
pub fn tune_model(
    model: &Model<'_>,
    seq_len: usize,
    mask: &[f32],
    spec: &TuneSpec,
    scheme_of: &dyn Fn(usize, Lin) -> Option<IntScheme>,
    chains: &mut Chains,
    on_iter: &mut dyn FnMut(usize, usize, f64),
    on_block: &mut dyn FnMut(&BlockReport<'_>, &Chains) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    // Each iteration frees and allocates the same large buffers: keep them in the heap.
    autoround_kernels::memory::reuse_freed_buffers();
    let sh = BlockShape {
        prec: spec.prec,
        ..block_shape(model)
    };
    let rope = model_rope(model, seq_len);
    let n = model.layers.len();
    let batch = spec.opts.batch_size.max(1);
    let mut ws = Workspace::default();
    while chains.next_block < n {
        let b = chains.next_block;
        let t0 = Instant::now();
        let layer = &model.layers[b];
        let fl = block_float(layer);
        let floats: Vec<Vec<f32>> = Lin::ALL
            .iter()
            .map(|&l| weight_of(layer, l).to_f32())
            .collect();
        let wf: Weights = std::array::from_fn(|k| floats[k].as_slice());
        let fp_out = chains.float_outputs(&sh, &fl, &rope, &wf, seq_len, batch);
        let mut layers: Vec<Option<QuantLayer>> = Lin::ALL
            .iter()
            .enumerate()
            .map(|(k, &lin)| {
                scheme_of(b, lin).map(|s| {
                    let (r, cols) = sh.dims(lin);
                    let mut l = QuantLayer::new(floats[k].clone(), r, cols, s, spec.scale_dtype);
                    l.torch_grads = spec.torch_grads;
                    l
                })
            })
            .collect();
        let q_in: &[f32] = if spec.enable_quanted_input {
            &chains.q
        } else {
            &chains.x
        };
        let data = BlockData {
            q_in,
            fp_out: &fp_out,
            mask,
            seq_len,
        };
        let stats = tune_block(
            &sh,
            &fl,
            &rope,
            &mut layers,
            &floats,
            &data,
            &spec.opts,
            &mut chains.sampler,
            &mut ws,
            &mut |i, loss| on_iter(b, i, loss),
        );
        // Final weights and the next quantized-chain input.
        let mut tuned = Vec::new();
        for (k, l) in layers.iter().enumerate() {
            if let Some(l) = l {
                let mut wh = vec![0f32; l.w.len()];
                let p = l.qdq(&mut wh);
                tuned.push(TunedLinear::from_layer(b, Lin::ALL[k], l, p));
            }
        }
        drop(layers);
        chains.advance(
            &sh, &fl, &rope, floats, &tuned, fp_out, seq_len, batch, spec,
        );
        on_block(
            &BlockReport {
                block: b,
                n_blocks: n,
                stats: Some(stats),
                seconds: t0.elapsed().as_secs_f64(),
                layers: &tuned,
            },
            chains,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_drops_last_position_and_pads() {
        let s = vec![vec![5, 6, 7, 8], vec![1, 2, 2, 2]];
        assert_eq!(loss_mask(&s, Some(6)), vec![1., 0., 1., 0., 1., 1., 1., 0.]);
        assert_eq!(loss_mask(&s, None), vec![1., 1., 1., 0., 1., 0., 0., 0.]);
    }
}
