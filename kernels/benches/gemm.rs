//! The dense products of one AutoRound tuning iteration of a SmolLM2-135M block (8 × 512
//! tokens, hidden 576, MLP 1536), one by one, as `kernels::gemm::gemm` runs them: forward
//! `x·Wᵀ`, input gradients `dy·W` and weight gradients `dyᵀ·x`. Throughput in FLOPs
//! (criterion's "elem/s"), for the f32 path (the `gemm` crate) and bf16 (AMX tiles where the CPU
//! has them). `cargo bench -p autoround-kernels --bench gemm`; compare with the machine's peak
//! (cores × GHz × 64 FLOP per cycle for AVX-512 FMA, × 1024 for AMX bf16).

use autoround_kernels::gemm::{gemm, Mat, Precision, Threads};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn fill(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let t = 8 * 512;
    // (name, m, k, n, A transposed, B transposed): C[m×n] = A·B
    let shapes = [
        ("fwd_q_576x576", t, 576, 576, false, true),
        ("fwd_gate_576x1536", t, 576, 1536, false, true),
        ("fwd_down_1536x576", t, 1536, 576, false, true),
        ("dx_gate_1536x576", t, 1536, 576, false, false),
        ("dw_gate_1536x576", 1536, t, 576, true, false),
        ("dw_down_576x1536", 576, t, 1536, true, false),
    ];
    let mut g = c.benchmark_group("gemm");
    g.sample_size(10);
    let mut precs = vec![("f32", Precision::F32)];
    if Precision::fastest() == Precision::Bf16 {
        precs.push(("bf16", Precision::Bf16));
    }
    for (name, m, k, n, ta, tb) in shapes {
        let a = fill(m * k, 1);
        let b = fill(k * n, 2);
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements(2 * (m * k * n) as u64));
        for &(pn, prec) in &precs {
            g.bench_function(format!("{name}/{pn}"), |bch| {
                bch.iter(|| {
                    // the transposed operands are the same buffers read as their transposes
                    let am = if ta {
                        Mat::new(&a, k, m).t()
                    } else {
                        Mat::new(&a, m, k)
                    };
                    let bm = if tb {
                        Mat::new(&b, n, k).t()
                    } else {
                        Mat::new(&b, k, n)
                    };
                    gemm(am, bm, &mut out, n, false, Threads::Pool, prec)
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
