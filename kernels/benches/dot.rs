//! The decode path's row kernels ([`autoround_kernels::dot::dot_rows`]) per type, tier and size:
//! one activation row against a matrix, one thread, in bytes of weights per second (criterion's
//! "B/s"). Sizes: L2-resident (576 × 576, SmolLM2's attention), 16M weights (8192 × 2048: this
//! machine's large L3 may still hold it), and 600M weights (131072 × 4608: only memory holds it;
//! the scalar tier skips the large ones).
//! `cargo bench -p autoround-kernels --bench dot [-- FILTER]`.

use autoround_kernels::dispatch::Tier;
use autoround_kernels::dot::{dot_rows, takes_f32, Act};
use autoround_kernels::reference;
use autoround_kernels::GgmlType;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    use GgmlType as T;
    let mut g = c.benchmark_group("dot");
    g.sample_size(10);
    let tiers: Vec<Tier> = [Tier::Scalar, Tier::Avx2, Tier::Avx512]
        .into_iter()
        .filter(|&t| Tier::supported(t))
        .collect();
    let mut s = 0x1234_5678u32;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    };
    for ty in [T::Q4_0, T::Q5_0, T::Q8_0, T::Q4_K, T::Q6_K, T::F16] {
        for (rows, cols) in [(576usize, 576usize), (8192, 2048), (131072, 4608)] {
            let cols = if ty.block_size() == 256 {
                cols.div_ceil(256) * 256
            } else {
                cols
            };
            let rb = ty.row_bytes(cols as u64).unwrap() as usize;
            // finite weights: a real quantization of random floats, row by row
            let xs: Vec<f32> = (0..cols)
                .map(|_| (rnd() >> 8) as f32 / (1 << 24) as f32 - 0.5)
                .collect();
            let mut row = vec![0u8; rb];
            autoround_kernels::quantize::quantize_rows(ty, &xs, cols, None, &mut row).unwrap();
            let w: Vec<u8> = (0..rows).flat_map(|_| row.iter().copied()).collect();
            let vt = reference::vec_dot_type(ty);
            let mut q = vec![0u8; vt.row_bytes(cols as u64).map_or(0, |b| b as usize)];
            if !takes_f32(ty) {
                reference::engine_quantize_fn(vt).unwrap()(&xs, &mut q);
            }
            let mut out = vec![0f32; rows];
            g.throughput(Throughput::Bytes((rb * rows) as u64));
            for &tier in &tiers {
                if tier == Tier::Scalar && rows > 1000 {
                    continue;
                }
                g.bench_function(
                    format!("{}/{rows}x{cols}/{}", ty.name(), tier.name()),
                    |b| {
                        b.iter(|| {
                            let act = if takes_f32(ty) {
                                Act::F32(&xs)
                            } else {
                                Act::Quant(&q)
                            };
                            dot_rows(tier, ty, cols, &w, act, &mut out)
                        })
                    },
                );
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
