//! Weights and the reference matrix multiply.
//!
//! A [`Weight`] is a 2-D matrix of `rows` output rows, each `cols` elements of one ggml type, laid
//! out row after row exactly as in GGUF (and as in safetensors for F32/F16/BF16): the bytes are
//! borrowed from the memory map, never copied at load. The exception is said at load: the
//! group-wise integers of auto_round/GPTQ/AWQ checkpoints, whose packing runs down the input
//! dimension, are repacked into rows ([`Repr::Group`]).
//!
//! [`matmul`] computes what llama.cpp computes on an x86 AVX2+FMA machine, bit for bit: each
//! activation row is first converted to the weight type's "vec-dot type" (Q8_0, Q8_1, Q8_K, F16,
//! ...) as llama.cpp does, and [`autoround_kernels::matmul`] forms every dot product in the float
//! order of the kernel llama.cpp picks for that type and batch size (its AVX2 dot products,
//! llamafile's tinyBLAS, the repacked Q4_K GEMM/GEMV, the tiled K-quant matmul). The engine's
//! default products are [`fast`]'s, which agree with this path up to rounding.

pub mod fast;

use autoround_kernels::groupwise::{self, GroupMatrix};
use autoround_kernels::qgemm;
use autoround_kernels::reference;
use autoround_kernels::GgmlType;
use rayon::prelude::*;
use std::borrow::Cow;

/// Errors building weights from file tensors.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("tensor '{name}': expected shape {expected}, found {found}")]
    Shape {
        name: String,
        expected: String,
        found: String,
    },
    #[error("tensor '{name}': type {ty} is not supported for computation yet")]
    Type { name: String, ty: GgmlType },
    #[error("tensor '{name}': row length {cols} is not a multiple of the {ty} block size {block}")]
    Ragged {
        name: String,
        ty: GgmlType,
        cols: usize,
        block: usize,
    },
    #[error("tensor '{name}': holds {got} bytes, shape needs {want}")]
    Bytes {
        name: String,
        got: usize,
        want: usize,
    },
}

/// A row-major matrix of `rows` × `cols` weights.
#[derive(Debug, Clone)]
pub struct Weight<'a> {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub repr: Repr<'a>,
    /// The weights also unpacked into AMX int8 tiles ([`Weight::unpack_tiles`], on request:
    /// `--repack`), which the fast path's batch products then read instead of unpacking the
    /// rows on every call.
    pub tiles: Option<std::sync::Arc<qgemm::WeightTiles>>,
}

/// How a [`Weight`]'s values are stored.
#[derive(Debug, Clone)]
pub enum Repr<'a> {
    /// Rows of ggml blocks (or F32/F16/BF16), as in GGUF and safetensors: borrowed from the map.
    Ggml { ty: GgmlType, data: Cow<'a, [u8]> },
    /// Group-wise integers from an auto_round/GPTQ/AWQ checkpoint, repacked at load into the
    /// row layout of [`autoround_kernels::groupwise`].
    Group(GroupMatrix),
}

impl<'a> Weight<'a> {
    /// Check the type and byte size and wrap the bytes.
    pub fn new(
        name: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: Cow<'a, [u8]>,
    ) -> Result<Weight<'a>, TensorError> {
        if !reference::can_dequantize(ty) {
            return Err(TensorError::Type {
                name: name.into(),
                ty,
            });
        }
        if cols % ty.block_size() != 0 {
            return Err(TensorError::Ragged {
                name: name.into(),
                ty,
                cols,
                block: ty.block_size(),
            });
        }
        let want = ty
            .row_bytes(cols as u64)
            .and_then(|r| r.checked_mul(rows as u64))
            .unwrap_or(u64::MAX);
        if data.len() as u64 != want {
            return Err(TensorError::Bytes {
                name: name.into(),
                got: data.len(),
                want: want as usize,
            });
        }
        Ok(Weight {
            name: name.into(),
            rows,
            cols,
            repr: Repr::Ggml { ty, data },
            tiles: None,
        })
    }

    /// [`Weight::new`] for a matrix the engine multiplies by: its type must also have a dot
    /// product (a file could hold, say, a Q8_K matrix, which only activations use).
    pub fn matrix(
        name: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: Cow<'a, [u8]>,
    ) -> Result<Weight<'a>, TensorError> {
        if reference::vec_dot_fn(ty).is_none() {
            return Err(TensorError::Type {
                name: name.into(),
                ty,
            });
        }
        Weight::new(name, ty, rows, cols, data)
    }

    /// A group-wise integer matrix (already repacked).
    pub fn group(name: &str, m: GroupMatrix) -> Weight<'a> {
        Weight {
            name: name.into(),
            rows: m.rows,
            cols: m.cols,
            repr: Repr::Group(m),
            tiles: None,
        }
    }

    /// Unpacks the weights once into AMX int8 tiles for the fast path's batch products (see
    /// [`qgemm::WeightTiles`]) and returns the bytes they take: 0, changing nothing, where the
    /// CPU has no AMX-INT8, the type no tile product, or the tiles are already there.
    pub fn unpack_tiles(&mut self) -> usize {
        match &self.repr {
            Repr::Ggml { ty, data }
                if self.tiles.is_none() && qgemm::available() && qgemm::supports(*ty) =>
            {
                let t = qgemm::WeightTiles::new(*ty, self.cols, data, self.rows);
                let bytes = t.bytes();
                self.tiles = Some(std::sync::Arc::new(t));
                bytes
            }
            _ => 0,
        }
    }

    /// The ggml type and bytes, unless the weights are group-wise.
    pub fn ggml(&self) -> Option<(GgmlType, &[u8])> {
        match &self.repr {
            Repr::Ggml { ty, data } => Some((*ty, data)),
            Repr::Group(_) => None,
        }
    }

    /// What the llama.cpp path converts activations to for this matrix: the ggml type's vec-dot
    /// type; F32 for group-wise weights (which that path dequantizes).
    pub fn act_type(&self) -> GgmlType {
        match &self.repr {
            Repr::Ggml { ty, .. } => reference::vec_dot_type(*ty),
            Repr::Group(_) => GgmlType::F32,
        }
    }

    /// Whether [`QuantizedActivations::for_weight`] converts activations alike for both.
    pub fn same_activations(&self, other: &Weight) -> bool {
        match (&self.repr, &other.repr) {
            (Repr::Ggml { ty: a, .. }, Repr::Ggml { ty: b, .. }) => a == b,
            (Repr::Group(_), Repr::Group(_)) => true,
            _ => false,
        }
    }

    /// A short description of the storage: the ggml type, or `INT4 g128` for group-wise.
    pub fn type_name(&self) -> String {
        match &self.repr {
            Repr::Ggml { ty, .. } => ty.name().to_string(),
            Repr::Group(m) => format!("INT{} g{}", m.spec.bits, m.spec.group),
        }
    }

    /// Bytes of one row as stored (codes only for group-wise weights).
    pub fn row_bytes(&self) -> usize {
        match &self.repr {
            Repr::Ggml { data, .. } => data.len() / self.rows.max(1),
            Repr::Group(m) => m.cols / groupwise::CHUNK * m.spec.chunk_bytes(),
        }
    }

    /// Dequantize row `r` into `out` (`cols` values).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        match &self.repr {
            Repr::Ggml { ty, data } => {
                let rb = self.row_bytes();
                reference::dequantize_row(*ty, &data[r * rb..(r + 1) * rb], out)
                    .expect("weight type and size were checked at construction")
            }
            Repr::Group(m) => m.dequantize_row(r, out),
        }
    }

    /// The whole matrix as f32 (for small tensors: norms, biases).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, o) in out.chunks_mut(self.cols).enumerate() {
            self.dequantize_row(r, o);
        }
        out
    }
}

/// Activations converted once to a weight type's vec-dot type, one packed row per token.
pub struct QuantizedActivations {
    ty: GgmlType,
    data: Vec<u8>,
}

impl QuantizedActivations {
    /// Convert `n` rows of `cols` floats for the llama.cpp path's products with `w`.
    pub fn for_weight(w: &Weight, x: &[f32], n: usize) -> QuantizedActivations {
        match &w.repr {
            Repr::Ggml { ty, .. } => QuantizedActivations::new(*ty, x, n, w.cols),
            Repr::Group(_) => QuantizedActivations::new(GgmlType::F32, x, n, w.cols),
        }
    }

    /// Convert `n` rows of `cols` floats for multiplication with weights of type `wty`.
    pub fn new(wty: GgmlType, x: &[f32], n: usize, cols: usize) -> QuantizedActivations {
        let ty = reference::vec_dot_type(wty);
        let row_bytes = ty
            .row_bytes(cols as u64)
            .expect("cols checked against the weight") as usize;
        let mut data = vec![0u8; row_bytes * n];
        // llama.cpp quantizes the activations of its repacked Q4_K matrices four rows at a time
        // with a slightly different sign rule (see `quantize_row_q8_k_x86_mat`).
        let mat_rows = if wty == GgmlType::Q4_K {
            autoround_kernels::matmul::q4_k_gemm_rows(n)
        } else {
            0
        };
        data.par_chunks_mut(row_bytes.max(1))
            .zip(x.par_chunks(cols))
            .enumerate()
            .for_each(|(i, (dst, src))| {
                if i < mat_rows {
                    autoround_kernels::dot::act::quantize_q8_k_mat(src, dst)
                } else {
                    autoround_kernels::dot::act::quantize(ty, src, dst)
                }
            });
        QuantizedActivations { ty, data }
    }
}

/// `out[t][r] = sum_c w[r][c] * x[t][c]` for `n` tokens: `x` is `n × w.cols`, `out` is `n × w.rows`.
pub fn matmul(w: &Weight, x: &[f32], n: usize, out: &mut [f32]) {
    assert_eq!(x.len(), n * w.cols, "matmul input of {}", w.name);
    assert_eq!(out.len(), n * w.rows, "matmul output of {}", w.name);
    let qa = QuantizedActivations::for_weight(w, x, n);
    matmul_quantized(w, &qa, n, out);
}

/// [`matmul`] with activations already converted (shared by the q, k and v projections).
///
/// Group-wise weights are dequantized to f32 a task's rows at a time and multiplied as F32
/// weights are (what loading them as f32 did).
pub fn matmul_quantized(w: &Weight, qa: &QuantizedActivations, n: usize, out: &mut [f32]) {
    assert_eq!(qa.ty, w.act_type());

    // Rows in parallel, about four tasks per thread: each task decodes the activations once and
    // keeps its weight rows hot in cache across all tokens.
    let rows_per_task = w.rows.div_ceil(4 * rayon::current_num_threads()).max(1);
    let mut tmp = vec![0f32; w.rows * n];
    tmp.par_chunks_mut(rows_per_task * n)
        .enumerate()
        .for_each(|(chunk, block)| {
            let r0 = chunk * rows_per_task;
            let rows = block.len() / n;
            match &w.repr {
                Repr::Ggml { ty, data } => {
                    let rb = w.row_bytes();
                    autoround_kernels::matmul::vec_dot_rows(
                        *ty,
                        w.cols,
                        &data[r0 * rb..(r0 + rows) * rb],
                        &qa.data,
                        n,
                        block,
                    );
                }
                Repr::Group(_) => {
                    let mut f = vec![0f32; w.cols];
                    let mut bytes = Vec::with_capacity(rows * w.cols * 4);
                    for r in r0..r0 + rows {
                        w.dequantize_row(r, &mut f);
                        bytes.extend(f.iter().flat_map(|v| v.to_le_bytes()));
                    }
                    autoround_kernels::matmul::vec_dot_rows(
                        GgmlType::F32,
                        w.cols,
                        &bytes,
                        &qa.data,
                        n,
                        block,
                    );
                }
            }
        });
    for t in 0..n {
        for r in 0..w.rows {
            out[t * w.rows + r] = tmp[r * n + t];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_need_a_dot_product_and_whole_blocks() {
        let q8k = vec![0u8; GgmlType::Q8_K.type_size()];
        let e = Weight::matrix("m", GgmlType::Q8_K, 1, 256, Cow::Owned(q8k)).unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
        let e = Weight::matrix("m", GgmlType::Q4_0, 1, 48, Cow::Owned(vec![0u8; 27])).unwrap_err();
        assert!(e.to_string().contains("not a multiple"), "{e}");
        let e = Weight::matrix("m", GgmlType::Q4_0, 2, 32, Cow::Owned(vec![0u8; 18])).unwrap_err();
        assert!(e.to_string().contains("holds 18 bytes"), "{e}");
        assert!(Weight::matrix("m", GgmlType::Q4_0, 2, 32, Cow::Owned(vec![0u8; 36])).is_ok());
    }
}
