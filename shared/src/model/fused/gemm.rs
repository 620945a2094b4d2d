//! Strided f32 matrix products over plain slices, through the `gemm` crate (the kernel candle's CPU
//! matmul calls): views carry row and column strides, so transposes, heads side by side in a hidden
//! dimension and `dst += a·b` need no copies, no zero-filled output and no graph node. Every view is
//! bounds-checked when it is made; the one `unsafe` call below relies on nothing else.

use gemm::Parallelism;

/// Where a strided matrix lies in its slice: element (i, j) is at `offset + i·rs + j·cs`.
#[derive(Clone, Copy)]
struct View {
    offset: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl View {
    /// The view, checked to lie inside a slice of `len` values.
    fn new(
        len: usize,
        offset: usize,
        (rows, cols): (usize, usize),
        (rs, cs): (usize, usize),
    ) -> Self {
        // Strides within the slice also keep their isize casts in `matmul` exact.
        assert!(rs <= len && cs <= len, "matrix view outside its slice");
        let end = match rows == 0 || cols == 0 {
            true => Some(0),
            false => (rows - 1)
                .checked_mul(rs)
                .zip((cols - 1).checked_mul(cs))
                .and_then(|(r, c)| offset.checked_add(r)?.checked_add(c)?.checked_add(1)),
        };
        assert!(
            end.is_some_and(|e| e <= len),
            "matrix view outside its slice"
        );
        Self {
            offset,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// Whether no two elements share a place (row-major-like or column-major-like strides).
    fn distinct(&self) -> bool {
        let Self {
            rows, cols, rs, cs, ..
        } = *self;
        rows <= 1 && cols <= 1
            || (cs >= 1 && rs >= cols.saturating_mul(cs))
            || (rs >= 1 && cs >= rows.saturating_mul(rs))
            || (rows == 1 && cs >= 1)
            || (cols == 1 && rs >= 1)
    }
}

/// A read-only strided matrix view into a slice.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    view: View,
}

impl<'a> Mat<'a> {
    /// A `rows × cols` view starting at `offset` with row stride `rs` and column stride `cs`.
    pub fn strided(
        data: &'a [f32],
        offset: usize,
        shape: (usize, usize),
        strides: (usize, usize),
    ) -> Self {
        let view = View::new(data.len(), offset, shape, strides);
        Self { data, view }
    }

    /// The whole slice as a row-major `rows × cols` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, 0, (rows, cols), (cols, 1))
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        let v = self.view;
        Self {
            view: View {
                rows: v.cols,
                cols: v.rows,
                rs: v.cs,
                cs: v.rs,
                ..v
            },
            ..self
        }
    }
}

/// A writable strided matrix view; its elements never overlap (checked), so parallel writes are safe.
pub struct MatMut<'a> {
    data: &'a mut [f32],
    view: View,
}

impl<'a> MatMut<'a> {
    /// A `rows × cols` view starting at `offset` with row stride `rs` and column stride `cs`,
    /// row-major-like (`rs ≥ cols·cs`) or column-major-like (`cs ≥ rows·rs`).
    pub fn strided(
        data: &'a mut [f32],
        offset: usize,
        shape: (usize, usize),
        strides: (usize, usize),
    ) -> Self {
        let view = View::new(data.len(), offset, shape, strides);
        assert!(view.distinct(), "matrix view with overlapping elements");
        Self { data, view }
    }

    /// The whole slice as a row-major `rows × cols` matrix.
    pub fn rows(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, 0, (rows, cols), (cols, 1))
    }
}

/// `dst = a·b`, or `dst += a·b` when `accumulate`; on rayon's pool when `parallel` (else on the
/// calling thread, as inside a task that is itself one of many in parallel).
pub fn matmul(dst: MatMut<'_>, a: Mat<'_>, b: Mat<'_>, accumulate: bool, parallel: bool) {
    let (dv, av, bv) = (dst.view, a.view, b.view);
    assert!(
        av.rows == dv.rows && bv.cols == dv.cols && av.cols == bv.rows,
        "matmul of {}×{} by {}×{} into {}×{}",
        av.rows,
        av.cols,
        bv.rows,
        bv.cols,
        dv.rows,
        dv.cols
    );
    let (m, n, k) = (dv.rows, dv.cols, av.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[dv.offset + i * dv.rs + j * dv.cs] = 0.0;
                }
            }
        }
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let stride = |s: usize| s as isize;
    // SAFETY: the three views were bounds-checked against their slices when made (every element
    // they name lies inside), `dst` is borrowed mutably and names each element once, and `a`, `b`
    // are shared borrows, so nothing else reads or writes `dst` meanwhile. With `read_dst` the
    // kernel computes dst = 1·dst + 1·a·b, otherwise dst = 1·a·b without reading dst.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr().add(dv.offset),
            stride(dv.cs),
            stride(dv.rs),
            accumulate,
            a.data.as_ptr().add(av.offset),
            stride(av.cs),
            stride(av.rs),
            b.data.as_ptr().add(bv.offset),
            stride(bv.cs),
            stride(bv.rs),
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: Mat<'_>, b: Mat<'_>) -> Vec<f32> {
        let at = |m: &Mat<'_>, i: usize, j: usize| {
            let v = m.view;
            m.data[v.offset + i * v.rs + j * v.cs]
        };
        let (rows, cols, inner) = (a.view.rows, b.view.cols, a.view.cols);
        let mut out = vec![0f32; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                out[i * cols + j] = (0..inner).map(|p| at(&a, i, p) * at(&b, p, j)).sum();
            }
        }
        out
    }

    #[test]
    fn strided_products_match_a_naive_loop() {
        let data: Vec<f32> = (0..600)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        // a: 7×5 rows of stride 9 from 3; b: a transposed 5×6 view (column stride 11).
        let a = Mat::strided(&data, 3, (7, 5), (9, 1));
        let b = Mat::strided(&data, 100, (6, 5), (11, 1)).t();
        let want = naive(a, b);
        for parallel in [false, true] {
            let mut out = vec![0f32; 7 * 6];
            matmul(MatMut::rows(&mut out, 7, 6), a, b, false, parallel);
            for (x, y) in out.iter().zip(&want) {
                assert!((x - y).abs() < 1e-4, "{x} vs {y}");
            }
            // Accumulating adds the product again; a strided destination leaves its gaps alone.
            let mut wide = vec![1f32; 7 * 8];
            matmul(
                MatMut::strided(&mut wide, 1, (7, 6), (8, 1)),
                a,
                b,
                true,
                parallel,
            );
            for i in 0..7 {
                assert_eq!(wide[i * 8], 1.0);
                for j in 0..6 {
                    let got = wide[i * 8 + 1 + j];
                    assert!((got - 1.0 - want[i * 6 + j]).abs() < 1e-4);
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "outside its slice")]
    fn a_view_past_the_end_is_refused() {
        let data = vec![0f32; 10];
        let _ = Mat::strided(&data, 2, (3, 3), (3, 1));
    }

    #[test]
    #[should_panic(expected = "outside its slice")]
    fn a_view_whose_extent_overflows_is_refused() {
        let data = vec![0f32; 10];
        let _ = Mat::strided(&data, usize::MAX - 2, (1, 2), (1, 1));
    }

    #[test]
    #[should_panic(expected = "overlapping")]
    fn an_overlapping_destination_is_refused() {
        let mut data = vec![0f32; 10];
        let _ = MatMut::strided(&mut data, 0, (3, 3), (1, 1));
    }
}
