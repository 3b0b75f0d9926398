//! Dense f32 matrix products for the tuner, through the `gemm` crate (BLIS-style packed
//! micro-kernels with runtime ISA detection), behind a safe, bounds-checked interface.
//!
//! Matrices are row-major slices. [`Mat`] names a matrix together with whether the product
//! should use it transposed, so `C = A·Bᵀ` (a linear layer's forward pass), `C = Aᵀ·B` (its weight
//! gradient) and `C = A·B` (its input gradient) need no copies. Sub-matrices with a row stride
//! larger than their width (one attention head's columns of a `[tokens, heads·head_dim]`
//! activation) are described with [`Mat::strided`].

use gemm::Parallelism;

/// A row-major matrix view: `rows × cols` elements, row `r` starting at `r * stride`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub(crate) data: &'a [f32],
    rows: usize,
    cols: usize,
    stride: usize,
    trans: bool,
}

impl<'a> Mat<'a> {
    /// A dense `rows × cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Mat<'a> {
        Mat::strided(data, rows, cols, cols)
    }

    /// A `rows × cols` matrix whose rows are `stride` elements apart.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Mat<'a> {
        assert!(
            stride >= cols,
            "gemm: row stride {stride} below width {cols}"
        );
        if rows > 0 && cols > 0 {
            let need = (rows - 1) * stride + cols;
            assert!(
                data.len() >= need,
                "gemm: {rows}x{cols} matrix (stride {stride}) needs {need} elements, slice has {}",
                data.len()
            );
        }
        Mat {
            data,
            rows,
            cols,
            stride,
            trans: false,
        }
    }

    /// The same matrix, used transposed in the product.
    pub fn t(self) -> Mat<'a> {
        Mat {
            trans: !self.trans,
            ..self
        }
    }

    /// The first `rows × cols` (as the product sees it) of this matrix.
    pub(crate) fn leading(self, rows: usize, cols: usize) -> Mat<'a> {
        let (r, c) = if self.trans {
            (cols, rows)
        } else {
            (rows, cols)
        };
        assert!(r <= self.rows && c <= self.cols);
        Mat {
            rows: r,
            cols: c,
            ..self
        }
    }

    /// (rows, cols) as the product sees it.
    pub(crate) fn shape(&self) -> (usize, usize) {
        if self.trans {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    /// (row stride, column stride) as the product sees it, in elements.
    pub(crate) fn strides(&self) -> (isize, isize) {
        if self.trans {
            (1, self.stride as isize)
        } else {
            (self.stride as isize, 1)
        }
    }
}

/// How many threads one product may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// The calling thread only (for products already run inside a parallel loop).
    One,
    /// The current rayon pool.
    Pool,
}

/// The arithmetic of a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 inputs, f32 accumulation.
    #[default]
    F32,
    /// Inputs rounded to bf16 (nearest even), f32 accumulation: what PyTorch's bf16 autocast
    /// does on CPU. Runs on AMX tiles where [`crate::amx::available`]; elsewhere the rounded
    /// inputs go through the f32 product (same arithmetic up to summation order, not faster).
    Bf16,
}

impl Precision {
    /// bf16 where this CPU multiplies bf16 faster than f32 (AMX), else f32.
    pub fn fastest() -> Precision {
        if crate::amx::available() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }
}

/// `C = A·B` (`accumulate == false`) or `C += A·B` in f32, with `C` an `m × n` matrix whose
/// rows are `c_stride` elements apart.
///
/// Panics when the shapes disagree or a slice is too short: these are programming errors of
/// the caller, never input-dependent.
pub fn sgemm(
    a: Mat<'_>,
    b: Mat<'_>,
    c: &mut [f32],
    c_stride: usize,
    accumulate: bool,
    threads: Threads,
) {
    gemm(a, b, c, c_stride, accumulate, threads, Precision::F32)
}

/// Checks that an `m × n` output with rows `c_stride` apart fits `c`, and finishes the products
/// that need no arithmetic: an empty output, or `k == 0` (C = 0, or C unchanged when
/// accumulating). Returns whether the product is done.
fn trivial_product(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    c_stride: usize,
    accumulate: bool,
) -> bool {
    assert!(
        c_stride >= n,
        "gemm: output stride {c_stride} below width {n}"
    );
    if m == 0 || n == 0 {
        return true;
    }
    let need = (m - 1) * c_stride + n;
    assert!(
        c.len() >= need,
        "gemm: {m}x{n} output needs {need} elements, slice has {}",
        c.len()
    );
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                c[r * c_stride..r * c_stride + n].fill(0.0);
            }
        }
        return true;
    }
    false
}

/// [`sgemm`] with the arithmetic chosen by `prec`.
pub fn gemm(
    a: Mat<'_>,
    b: Mat<'_>,
    c: &mut [f32],
    c_stride: usize,
    accumulate: bool,
    threads: Threads,
    prec: Precision,
) {
    let (m, k) = a.shape();
    let (k2, n) = b.shape();
    assert_eq!(k, k2, "gemm: inner dimensions {k} and {k2} differ");
    if trivial_product(m, n, k, c, c_stride, accumulate) {
        return;
    }
    let parallel =
        threads == Threads::Pool && rayon::current_num_threads() > 1 && m * n * k >= 64 * 64 * 64;
    if prec == Precision::Bf16 {
        if crate::amx::available() {
            crate::amx::gemm(a, b, c, c_stride, accumulate, parallel);
            return;
        }
        // No bf16 hardware: the same arithmetic through rounded dense copies.
        let ra = rounded_copy(&a);
        let rb = rounded_copy(&b);
        return gemm(
            Mat::new(&ra, m, k),
            Mat::new(&rb, k, n),
            c,
            c_stride,
            accumulate,
            threads,
            Precision::F32,
        );
    }
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    let par = if parallel {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    // SAFETY: every element the product touches lies inside the slices: `Mat::strided` checked
    // `(rows-1)*stride + cols <= len` for A and B, the check above does the same for C, and the
    // strides passed describe exactly those layouts. `c` is borrowed mutably, so it cannot alias
    // `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}

/// A B operand prepared once for several products with the same precision that each use its
/// leading rows and columns ([`gemm_prepacked`]): packed into AMX tiles where bf16 runs there,
/// rounded to bf16 where bf16 has no hardware, and simply borrowed for f32.
pub struct PackedB<'a> {
    inner: Packed<'a>,
}

enum Packed<'a> {
    View(Mat<'a>),
    Rounded(Vec<f32>, usize, usize),
    Amx(crate::amx::PackedB),
}

impl<'a> PackedB<'a> {
    /// Prepare `b` for products in `prec`, on the calling thread.
    pub fn new(b: Mat<'a>, prec: Precision) -> PackedB<'a> {
        let inner = match prec {
            Precision::F32 => Packed::View(b),
            Precision::Bf16 if crate::amx::available() => Packed::Amx(crate::amx::PackedB::new(b)),
            Precision::Bf16 => {
                let (k, n) = b.shape();
                Packed::Rounded(rounded_copy(&b), k, n)
            }
        };
        PackedB { inner }
    }

    /// (rows, columns) of the prepared matrix.
    pub fn shape(&self) -> (usize, usize) {
        match &self.inner {
            Packed::View(m) => m.shape(),
            Packed::Rounded(_, k, n) => (*k, *n),
            Packed::Amx(p) => p.shape(),
        }
    }
}

/// `C (+)= A·B[..k, ..n]` on the calling thread: `A` is `m × k`, and only the first `k` rows and
/// `n` columns of the prepared `B` take part (a causal attention block: the keys up to its last
/// query). Same contract as [`gemm`] otherwise.
pub fn gemm_prepacked(
    a: Mat<'_>,
    b: &PackedB<'_>,
    n: usize,
    c: &mut [f32],
    c_stride: usize,
    accumulate: bool,
) {
    let (m, k) = a.shape();
    let (bk, bn) = b.shape();
    assert!(
        k <= bk && n <= bn,
        "gemm: {m}x{k} times the leading {k}x{n} of a {bk}x{bn} operand"
    );
    match &b.inner {
        Packed::View(bm) => sgemm(a, bm.leading(k, n), c, c_stride, accumulate, Threads::One),
        Packed::Rounded(r, _, _) => {
            let ra = rounded_copy(&a);
            let bm = Mat::new(r, bk, bn).leading(k, n);
            sgemm(
                Mat::new(&ra, m, k),
                bm,
                c,
                c_stride,
                accumulate,
                Threads::One,
            )
        }
        Packed::Amx(p) => {
            if !trivial_product(m, n, k, c, c_stride, accumulate) {
                crate::amx::gemm_prepacked(a, p, n, c, c_stride, accumulate)
            }
        }
    }
}

/// One product of a [`gemm_shared`] call: the operand that differs from product to product and
/// where its result goes, with [`gemm`]'s contract for `c`, `c_stride` and `accumulate`.
pub struct Product<'a, 'c> {
    pub other: Mat<'a>,
    pub c: &'c mut [f32],
    pub c_stride: usize,
    pub accumulate: bool,
}

/// Which operand the products of a [`gemm_shared`] call have in common.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shared {
    /// `C_i (+)= shared · other_i` (one layer input times the q, k and v weights).
    A,
    /// `C_i (+)= other_i · shared` (the weight gradients `dY_iᵀ · x` of layers with input x).
    B,
}

/// Several products with one operand in common. The results are those of separate [`gemm`]
/// calls, bit for bit; where bf16 runs on AMX tiles the shared operand is packed once.
pub fn gemm_shared(
    shared: Mat<'_>,
    side: Shared,
    products: &mut [Product<'_, '_>],
    threads: Threads,
    prec: Precision,
) {
    let pool = threads == Threads::Pool && rayon::current_num_threads() > 1;
    if prec == Precision::Bf16 && crate::amx::available() {
        let mut work = Vec::with_capacity(products.len());
        for p in products.iter_mut() {
            let (a, b) = match side {
                Shared::A => (shared, p.other),
                Shared::B => (p.other, shared),
            };
            let ((m, k), (k2, n)) = (a.shape(), b.shape());
            assert_eq!(k, k2, "gemm: inner dimensions {k} and {k2} differ");
            if !trivial_product(m, n, k, p.c, p.c_stride, p.accumulate) {
                let parallel = pool && m * n * k >= 64 * 64 * 64;
                work.push((p.other, &mut *p.c, p.c_stride, p.accumulate, parallel));
            }
        }
        crate::amx::gemm_shared(shared, side == Shared::A, &mut work);
        return;
    }
    for p in products.iter_mut() {
        let (a, b) = match side {
            Shared::A => (shared, p.other),
            Shared::B => (p.other, shared),
        };
        gemm(a, b, p.c, p.c_stride, p.accumulate, threads, prec);
    }
}

/// The matrix as the product sees it, dense row-major, each element rounded to bf16.
fn rounded_copy(x: &Mat<'_>) -> Vec<f32> {
    let (r, c) = x.shape();
    let (rs, cs) = x.strides();
    let (rs, cs) = (rs as usize, cs as usize);
    let mut out = Vec::with_capacity(r * c);
    for i in 0..r {
        out.extend((0..c).map(|j| crate::amx::round_bf16(x.data[i * rs + j * cs])));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn naive(a: &[f32], m: usize, k: usize, b: &[f32], n: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    s += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    pub(crate) fn transpose(x: &[f32], r: usize, c: usize) -> Vec<f32> {
        let mut t = vec![0f32; r * c];
        for i in 0..r {
            for j in 0..c {
                t[j * r + i] = x[i * c + j];
            }
        }
        t
    }

    /// The `rows × cols` matrix `x` as a product operand: `x` itself, or (with `trans`) the
    /// transposed view of its transpose `xt`.
    pub(crate) fn view<'a>(
        x: &'a [f32],
        xt: &'a [f32],
        rows: usize,
        cols: usize,
        trans: bool,
    ) -> Mat<'a> {
        if trans {
            Mat::new(xt, cols, rows).t()
        } else {
            Mat::new(x, rows, cols)
        }
    }

    pub(crate) fn fill(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn every_transpose_combination_matches_naive() {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (70, 33, 65), (129, 64, 200)] {
            let a = fill(m * k, 1);
            let b = fill(k * n, 2);
            let want = naive(&a, m, k, &b, n);
            let at = transpose(&a, m, k);
            let bt = transpose(&b, k, n);
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let (am, bm) = (view(&a, &at, m, k, ta), view(&b, &bt, k, n, tb));
                let mut c = vec![1f32; m * n];
                sgemm(am, bm, &mut c, n, false, Threads::Pool);
                for (x, y) in c.iter().zip(&want) {
                    assert!(
                        (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                        "{ta} {tb}: {x} vs {y}"
                    );
                }
                sgemm(am, bm, &mut c, n, true, Threads::One);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - 2.0 * y).abs() <= 2e-4 * (1.0 + y.abs()));
                }
            }
        }
    }

    /// Products with the leading part of a prepared operand equal the same products with the
    /// leading view, bit for bit (the tile order is the same; B's rows past k meet zeros).
    #[test]
    fn prepacked_leading_products_equal_plain_ones() {
        let (m, bk, bn) = (45, 130, 97);
        let a_full = fill(m * bk, 3);
        let b = fill(bk * bn, 4);
        let bt = transpose(&b, bk, bn);
        for prec in [Precision::F32, Precision::Bf16] {
            for tb in [false, true] {
                let bm = view(&b, &bt, bk, bn, tb);
                let packed = PackedB::new(bm, prec);
                assert_eq!(packed.shape(), (bk, bn));
                for &(k, n) in &[(bk, bn), (64, 32), (65, 33), (1, 1), (100, 97), (31, 60)] {
                    let a = Mat::strided(&a_full, m, k, bk);
                    let stride = n + 2;
                    for acc in [false, true] {
                        let mut want = vec![1.5f32; m * stride];
                        let mut got = want.clone();
                        gemm(
                            a,
                            bm.leading(k, n),
                            &mut want,
                            stride,
                            acc,
                            Threads::One,
                            prec,
                        );
                        gemm_prepacked(a, &packed, n, &mut got, stride, acc);
                        assert!(
                            want == got,
                            "{prec:?} tb={tb} k={k} n={n} acc={acc}: prepacked differs"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn strided_views_and_output() {
        // A 4x3 block inside a 4x8 buffer, times a 3x2 matrix, into columns 1..3 of a 4x5 output.
        let big = fill(32, 3);
        let a: Vec<f32> = (0..4)
            .flat_map(|r| big[r * 8 + 2..r * 8 + 5].to_vec())
            .collect();
        let b = fill(6, 4);
        let want = naive(&a, 4, 3, &b, 2);
        let mut c = vec![9f32; 20];
        sgemm(
            Mat::strided(&big[2..], 4, 3, 8),
            Mat::new(&b, 3, 2),
            &mut c[1..],
            5,
            false,
            Threads::One,
        );
        for r in 0..4 {
            assert_eq!(c[r * 5], 9.0);
            for j in 0..2 {
                assert!((c[r * 5 + 1 + j] - want[r * 2 + j]).abs() < 1e-5);
            }
            assert_eq!(c[r * 5 + 3], 9.0);
        }
    }

    /// Products sharing an operand give separate products' results bit for bit, on either side,
    /// transposed or not, with ragged sizes, strided outputs, accumulation and an empty product.
    #[test]
    fn shared_operand_products_equal_separate_ones() {
        let (m, k) = (70, 65);
        let x = fill(m * k, 11);
        let xt = transpose(&x, m, k);
        for prec in [Precision::F32, Precision::Bf16] {
            for side in [Shared::A, Shared::B] {
                for (ts, to) in [(false, false), (true, false), (false, true), (true, true)] {
                    // Shared A is m × k (the others k × n); shared B is k × m (the others
                    // n × k).
                    let sh = match side {
                        Shared::A => view(&x, &xt, m, k, ts),
                        Shared::B => view(&xt, &x, k, m, ts),
                    };
                    let ns = [33usize, 129, 0, 16];
                    let others: Vec<(Vec<f32>, Vec<f32>, usize, usize)> = ns
                        .iter()
                        .enumerate()
                        .map(|(i, &n)| {
                            let (r, c) = match side {
                                Shared::A => (k, n),
                                Shared::B => (n, k),
                            };
                            let o = fill(r * c, 20 + i as u32);
                            let ot = transpose(&o, r, c);
                            (o, ot, r, c)
                        })
                        .collect();
                    let run = |shared: bool| -> Vec<Vec<f32>> {
                        let mut outs: Vec<Vec<f32>> = ns
                            .iter()
                            .map(|&n| vec![0.25f32; m.max(n) * (m.max(n) + 3)])
                            .collect();
                        let mut products: Vec<Product> = outs
                            .iter_mut()
                            .zip(&others)
                            .enumerate()
                            .map(|(i, (c, (o, ot, r, cc)))| {
                                let width = match side {
                                    Shared::A => *cc,
                                    Shared::B => m,
                                };
                                Product {
                                    other: view(o, ot, *r, *cc, to),
                                    c: &mut c[..],
                                    c_stride: width + 3,
                                    accumulate: i % 2 == 1,
                                }
                            })
                            .collect();
                        if shared {
                            gemm_shared(sh, side, &mut products, Threads::Pool, prec);
                        } else {
                            for p in products.iter_mut() {
                                let (a, b) = match side {
                                    Shared::A => (sh, p.other),
                                    Shared::B => (p.other, sh),
                                };
                                gemm(a, b, p.c, p.c_stride, p.accumulate, Threads::Pool, prec);
                            }
                        }
                        outs
                    };
                    let (want, got) = (run(false), run(true));
                    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                        let same = w.iter().zip(g).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "{prec:?} {side:?} ts={ts} to={to}: product {i} differs"
                        );
                    }
                    // Not a product that left C untouched.
                    assert!(got[1].iter().any(|&v| v != 0.25));
                }
            }
        }
    }
}
