//! autoround-kernels: block layouts, the scalar reference (the spec for every SIMD kernel),
//! and later the per-ISA kernels with runtime dispatch. All `unsafe` in the project lives here.

pub mod amx;
pub mod blocks;
pub mod dispatch;
pub mod dot;
pub mod fakequant;
pub mod gemm;
pub mod groupwise;
pub mod matmul;
pub mod memory;
pub mod ops;
pub mod pool;
pub mod qgemm;
pub mod quantize;
pub mod reference;
pub mod vmath;

pub use blocks::{GgmlType, QK_K};

/// Errors from kernel entry points: always about the caller's buffers or types.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("ggml type {0} has no reference dequantization (yet)")]
    Unsupported(GgmlType),
    #[error("{ty}: {n} elements is not a multiple of the block size {block}")]
    RaggedRow {
        ty: GgmlType,
        n: usize,
        block: usize,
    },
    #[error("{ty}: source holds {got} bytes, {n} elements need {want}")]
    SourceSize {
        ty: GgmlType,
        n: usize,
        got: usize,
        want: usize,
    },
}
