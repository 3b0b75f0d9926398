//! The reference's dispatching entry points reject bad buffers with errors instead of
//! panicking; the typed entry points panic (documented) instead of reading out of bounds.

use autoround_kernels::reference::{
    self, can_dequantize, dequantize_row, quantize_row_to, vec_dot, vec_dot_type,
};
use autoround_kernels::{GgmlType, KernelError};

fn supported() -> Vec<GgmlType> {
    GgmlType::ALL
        .iter()
        .copied()
        .filter(|t| can_dequantize(*t))
        .collect()
}

#[test]
fn supported_set_is_the_documented_one() {
    use GgmlType as T;
    let want = [
        T::F32,
        T::F16,
        T::BF16,
        T::Q4_0,
        T::Q4_1,
        T::Q5_0,
        T::Q5_1,
        T::Q8_0,
        T::Q8_1,
        T::Q2_K,
        T::Q3_K,
        T::Q4_K,
        T::Q5_K,
        T::Q6_K,
        T::Q8_K,
        T::IQ4_NL,
        T::IQ4_XS,
        T::MXFP4,
    ];
    let mut got = supported();
    got.sort_by_key(|t| t.id());
    let mut want = want.to_vec();
    want.sort_by_key(|t| t.id());
    assert_eq!(got, want);
}

#[test]
fn dequantize_row_rejects_ragged_rows() {
    for ty in supported() {
        let b = ty.block_size();
        if b == 1 {
            continue; // every length is whole for scalar types
        }
        for n in [1, b - 1, b + 1, 3 * b + 7] {
            let src = vec![0u8; (n / b + 1) * ty.type_size()];
            let mut dst = vec![0.0f32; n];
            match dequantize_row(ty, &src, &mut dst) {
                Err(KernelError::RaggedRow { ty: t, n: m, block }) => {
                    assert_eq!((t, m, block), (ty, n, b));
                }
                other => panic!("{ty} n={n}: {other:?}"),
            }
        }
    }
}

#[test]
fn dequantize_row_rejects_wrong_source_sizes() {
    for ty in supported() {
        let n = 2 * ty.block_size().max(32);
        let want = n / ty.block_size() * ty.type_size();
        for got in [0, want - 1, want + 1, 2 * want] {
            let src = vec![0u8; got];
            let mut dst = vec![0.0f32; n];
            match dequantize_row(ty, &src, &mut dst) {
                Err(KernelError::SourceSize {
                    ty: t,
                    n: m,
                    got: g,
                    want: w,
                }) => {
                    assert_eq!((t, m, g, w), (ty, n, got, want));
                }
                other => panic!("{ty} got={got}: {other:?}"),
            }
        }
        // The exact size works, and an empty row is fine.
        let mut dst = vec![1.0f32; n];
        dequantize_row(ty, &vec![0u8; want], &mut dst).unwrap();
        dequantize_row(ty, &[], &mut []).unwrap();
    }
}

#[test]
fn unsupported_types_are_reported() {
    for &ty in GgmlType::ALL {
        if can_dequantize(ty) {
            continue;
        }
        let n = ty.block_size();
        let mut dst = vec![0.0f32; n];
        let src = vec![0u8; ty.type_size()];
        assert!(
            matches!(dequantize_row(ty, &src, &mut dst), Err(KernelError::Unsupported(t)) if t == ty)
        );
        assert!(matches!(vec_dot(ty, n, &src, &src), Err(KernelError::Unsupported(t)) if t == ty));
    }
    // Weight types are not activation types.
    let mut out = vec![0u8; 18];
    assert!(matches!(
        quantize_row_to(GgmlType::Q4_0, &[0.0; 32], &mut out),
        Err(KernelError::Unsupported(GgmlType::Q4_0))
    ));
}

#[test]
fn quantize_row_to_checks_sizes() {
    for ty in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        let b = ty.block_size();
        let x = vec![1.0f32; b + 1];
        let mut out = vec![0u8; 2 * ty.type_size()];
        assert!(
            matches!(
                quantize_row_to(ty, &x, &mut out),
                Err(KernelError::RaggedRow { .. })
            ),
            "{ty}"
        );
        let x = vec![1.0f32; 2 * b];
        let mut out = vec![0u8; 2 * ty.type_size() + 1];
        assert!(
            matches!(
                quantize_row_to(ty, &x, &mut out),
                Err(KernelError::SourceSize { .. })
            ),
            "{ty}"
        );
        out.pop();
        quantize_row_to(ty, &x, &mut out).unwrap();
    }
    let mut out = vec![0u8; 3];
    assert!(matches!(
        quantize_row_to(GgmlType::F16, &[1.0, 2.0], &mut out),
        Err(KernelError::SourceSize {
            want: 4,
            got: 3,
            ..
        })
    ));
}

#[test]
fn vec_dot_checks_both_rows() {
    for &ty in GgmlType::ALL {
        let Some(_) = reference::vec_dot_fn(ty) else {
            continue;
        };
        let vt = vec_dot_type(ty);
        let b = ty.block_size().max(32);
        let n = 2 * b;
        let x = vec![0u8; n / ty.block_size() * ty.type_size()];
        let y = vec![0u8; n / vt.block_size() * vt.type_size()];
        assert_eq!(vec_dot(ty, n, &x, &y).unwrap(), 0.0, "{ty}");
        match vec_dot(ty, n, &x[1..], &y) {
            Err(KernelError::SourceSize { ty: t, .. }) => assert_eq!(t, ty),
            other => panic!("{ty}: {other:?}"),
        }
        match vec_dot(ty, n, &x, &y[1..]) {
            Err(KernelError::SourceSize { ty: t, .. }) => assert_eq!(t, vt),
            other => panic!("{ty}: {other:?}"),
        }
        if ty.block_size() > 1 {
            assert!(
                matches!(
                    vec_dot(ty, n + 1, &x, &y),
                    Err(KernelError::RaggedRow { .. })
                ),
                "{ty}"
            );
        }
    }
}

#[test]
#[should_panic(expected = "Q4_K")]
fn typed_dequantize_panics_on_wrong_size() {
    let mut dst = vec![0.0f32; 256];
    reference::dequantize_row_q4_k(&[0u8; 143], &mut dst);
}

#[test]
#[should_panic(expected = "Q8_0")]
fn typed_vec_dot_panics_on_short_activations() {
    reference::vec_dot_q4_0_q8_0(32, &[0u8; 18], &[0u8; 33]);
}

#[test]
#[should_panic(expected = "Q8_K")]
fn typed_quantizer_panics_on_ragged_input() {
    let mut out = vec![0u8; 292];
    reference::quantize_row_q8_k(&[0.0; 255], &mut out);
}
