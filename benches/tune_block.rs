//! One AutoRound tuning iteration of a SmolLM2-135M-shaped decoder block (hidden 576, MLP 1536,
//! 9 query / 3 key-value heads of 64) on a batch of 8 sequences of 512 tokens: quantize-dequantize
//! of the seven W4 g128 layers, the forward pass that keeps what the backward needs, the backward
//! pass to the weight gradients, the gradients of V/α/β and the SignSGD step.
//!
//! The throughput is reported in FLOPs of the useful work (criterion's "elem/s" = FLOP/s):
//! forward GEMMs 2·T·P, weight gradients 2·T·P, input gradients 2·T·(P − P_qkv) (q/k/v need none),
//! and causal attention 7·S²·H·d per sequence (forward 2, backward 5 half-triangle products).
//! `cargo bench --bench tune_block`; compare with the FMA peak of the machine (cores × GHz × 2 ×
//! FMA lanes per cycle). Two variants: `f32` products, and `bf16` (bf16 inputs, f32 sums, as the
//! tuner runs by default) when the CPU has AMX tiles for them (peak: cores × GHz × 1024 FLOP per
//! cycle on Sapphire Rapids and later).
//!
//! `forward/<prec>` times the forward pass alone (throughput: its 2·T·P + 2·S²·H·d per sequence):
//! each block runs it twice per batch outside the iterations (the float targets and the next
//! quantized inputs).

use autoround_cpu::model::config::RopeLayout;
use autoround_cpu::tuner::block::{forward, BlockFloat, BlockShape, Lin, Saved, Weights};
use autoround_cpu::tuner::calib::SplitMix64;
use autoround_cpu::tuner::ops::Rope;
use autoround_cpu::tuner::qdq::{IntScheme, QuantLayer, ScaleDtype};
use autoround_cpu::tuner::signround::{
    block_outputs, tune_block, BlockData, IndexSampler, SignRoundOptions, Workspace,
};
use autoround_kernels::gemm::Precision;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn normal(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut r = SplitMix64(seed);
    (0..n)
        .map(|_| {
            // sum of uniforms: close enough to a normal for a benchmark
            let s: f32 = (0..4)
                .map(|_| r.below(1 << 20) as f32 / (1 << 20) as f32)
                .sum();
            (s - 2.0) * 1.7 * scale
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    // as `tuner::run::tune_model` does
    autoround_kernels::memory::reuse_freed_buffers();
    let sh = BlockShape {
        d: 576,
        ff: 1536,
        n_head: 9,
        n_kv: 3,
        head_dim: 64,
        eps: 1e-5,
        prec: Precision::F32,
    };
    let (seq, n_seq) = (512, 8);
    let fl = BlockFloat {
        attn_norm: vec![1.0; sh.d],
        ffn_norm: vec![1.0; sh.d],
        bq: None,
        bk: None,
        bv: None,
        q_norm: None,
        k_norm: None,
    };
    let floats: Vec<Vec<f32>> = Lin::ALL
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let (r, cols) = sh.dims(l);
            normal(r * cols, 10 + i as u64, 1.0 / (cols as f32).sqrt())
        })
        .collect();
    let rope = Rope::new(RopeLayout::Neox, sh.head_dim, 10000.0, 1.0, None, seq);
    let x = normal(n_seq * seq * sh.d, 3, 1.0);
    let wf: Weights = std::array::from_fn(|k| floats[k].as_slice());
    let fp_out = block_outputs(&sh, &fl, &rope, &wf, &x, seq, n_seq);
    let mask = vec![1.0f32; n_seq * seq];
    let data = BlockData {
        q_in: &x,
        fp_out: &fp_out,
        mask: &mask,
        seq_len: seq,
    };
    let opts = SignRoundOptions {
        iters: 1,
        lr: 5e-3,
        minmax_lr: 5e-3,
        lr_by_bits: false,
        minmax_by_bits: false,
        enable_minmax: true,
        batch_size: n_seq,
        not_use_best_mse: false,
    };
    let scheme = IntScheme {
        bits: 4,
        group_size: 128,
        sym: true,
        dq: None,
    };
    let t = (n_seq * seq) as u64;
    let p: u64 = Lin::ALL
        .iter()
        .map(|&l| {
            let (r, c) = sh.dims(l);
            (r * c) as u64
        })
        .sum();
    let p_qkv: u64 = [Lin::Q, Lin::K, Lin::V]
        .iter()
        .map(|&l| {
            let (r, c) = sh.dims(l);
            (r * c) as u64
        })
        .sum();
    let attn = 7 * (seq * seq * sh.n_head * sh.head_dim * n_seq) as u64;
    let flops = 2 * t * p + 2 * t * p + 2 * t * (p - p_qkv) + attn;
    let mut g = c.benchmark_group("tune_block");
    g.sample_size(10);
    g.throughput(Throughput::Elements(flops));
    let mut precs = vec![("f32", Precision::F32)];
    if Precision::fastest() == Precision::Bf16 {
        precs.push(("bf16", Precision::Bf16));
    } else {
        eprintln!("no AMX bf16 on this CPU: benchmarking the f32 products only");
    }
    let ws = std::cell::RefCell::new(Workspace::default());
    for (name, prec) in precs {
        let sh = BlockShape { prec, ..sh };
        g.bench_function(format!("smollm2_w4g128_8x512/{name}"), |b| {
            b.iter_batched(
                || {
                    let layers: Vec<Option<QuantLayer>> = Lin::ALL
                        .iter()
                        .enumerate()
                        .map(|(k, &l)| {
                            let (r, cols) = sh.dims(l);
                            Some(QuantLayer::new(
                                floats[k].clone(),
                                r,
                                cols,
                                scheme,
                                ScaleDtype::F16,
                            ))
                        })
                        .collect();
                    (layers, IndexSampler::new(n_seq, n_seq, 42))
                },
                |(mut layers, mut sampler)| {
                    // One workspace for every call, as for every block of a run: the numbers
                    // are those of an iteration in the middle of a block, not of its first.
                    tune_block(
                        &sh,
                        &fl,
                        &rope,
                        &mut layers,
                        &floats,
                        &data,
                        &opts,
                        &mut sampler,
                        &mut ws.borrow_mut(),
                        &mut |_, _| {},
                    )
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("tune_block_forward");
    g.sample_size(10);
    g.throughput(Throughput::Elements(
        2 * t * p + 2 * (seq * seq * sh.n_head * sh.head_dim * n_seq) as u64,
    ));
    let mut saved = Saved::default();
    for (name, prec) in [("f32", Precision::F32), ("bf16", Precision::fastest())] {
        if name == "bf16" && prec != Precision::Bf16 {
            continue;
        }
        let sh = BlockShape { prec, ..sh };
        g.bench_function(format!("smollm2_8x512/{name}"), |b| {
            b.iter(|| forward(&sh, &fl, &rope, &wf, &x, n_seq, &mut saved))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
