//! The matrix layouts of the matmul API, as the headers' comments on `rknn_matmul_set_io_mem`
//! describe them for the RK3588.
//!
//! Each layout is implemented as a walk of the NPU buffer in the order the header lists its
//! elements, moving every element to or from the plain row-major matrix. This is a second
//! implementation, written independently of `aihal-rknn`'s address formula (which computes
//! where one element goes); the tests below check it against positions worked out by hand
//! from the header's element lists.

/// The shape of a native (B) or perf (A, C) buffer, walked in the header's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeB {
    /// Rows of B.
    pub k: usize,
    /// Columns of B.
    pub n: usize,
    /// Columns of one block (`B.dims[2]`): 32 for int8, 16 for fp16 on the RK3588 (every
    /// header from 1.5.0).
    pub sub_n: usize,
    /// Rows of one block (`B.dims[3]`): 32 on the RK3588.
    pub sub_k: usize,
    /// Rows per segment: `Some(8192)` from 2.0.0 ("when K > 8192, the B data will be split
    /// into T segments", RK3588 section of the 2.0.0 and later headers), `None` for the one
    /// block of 1.5.x and 1.6.0.
    pub segment: Option<usize>,
}

impl NativeB {
    /// The row ranges of the segments, in storage order.
    fn segments(&self) -> Vec<(usize, usize)> {
        let step = self.segment.unwrap_or(self.k).max(1);
        let mut out = Vec::new();
        let mut start = 0;
        while start < self.k {
            let rows = step.min(self.k - start);
            out.push((start, rows));
            start += rows;
        }
        out
    }

    /// Visits every element in storage order as `(storage index, row, column)`. Within a
    /// segment the header lists K1..K32 of N1, then of N2, up to the block's last column,
    /// then the next 32 rows of the same columns, and after the segment's last rows the next
    /// block of columns.
    pub fn walk(&self, mut visit: impl FnMut(usize, usize, usize)) {
        let mut pos = 0;
        for (row0, rows) in self.segments() {
            for col_block in 0..self.n / self.sub_n {
                for row_block in 0..rows / self.sub_k {
                    for c in 0..self.sub_n {
                        for r in 0..self.sub_k {
                            visit(pos, row0 + row_block * self.sub_k + r, col_block * self.sub_n + c);
                            pos += 1;
                        }
                    }
                }
            }
        }
    }

    /// Whether the blocks tile the shape (every segment's rows and the columns).
    pub fn tiles(&self) -> bool {
        self.sub_n > 0
            && self.sub_k > 0
            && self.n.is_multiple_of(self.sub_n)
            && self.segments().iter().all(|&(_, rows)| rows.is_multiple_of(self.sub_k))
    }
}

/// The "perf" (2.x: "native") layout of A or C: `[cols / sub, rows, sub]`: the header lists
/// the first `sub` columns of row 1, of row 2, …, then the next `sub` columns of each row.
/// A is `[K/16, M, 16]` for int8 and `[K/8, M, 8]` for fp16, C is `[N/4, M, 4]` on the RK3588
/// (rknpu2 v1.5.0 header; the 2.x headers call it native).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perf {
    /// Rows (M).
    pub rows: usize,
    /// Columns (K for A, N for C).
    pub cols: usize,
    /// Columns per group.
    pub sub: usize,
}

impl Perf {
    /// Visits every element in storage order as `(storage index, row, column)`.
    pub fn walk(&self, mut visit: impl FnMut(usize, usize, usize)) {
        let mut pos = 0;
        for group in 0..self.cols / self.sub {
            for row in 0..self.rows {
                for c in 0..self.sub {
                    visit(pos, row, group * self.sub + c);
                    pos += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions_b(b: &NativeB) -> Vec<usize> {
        // position[row * n + col] = storage index
        let mut at = vec![usize::MAX; b.k * b.n];
        b.walk(|pos, r, c| at[r * b.n + c] = pos);
        assert!(at.iter().all(|&p| p != usize::MAX), "every element visited");
        at
    }

    #[test]
    fn int8_native_b_in_the_headers_order() {
        // (N/32, K/32, 32, 32) for K = N = 64: K1N1..K32N1 are 0..32, K1N2 is 32, K1N32 is
        // 31*32, then K33N1 opens the second K block at 1024, and K1N33 the second column
        // block at 2048.
        let b = NativeB {
            k: 64,
            n: 64,
            sub_n: 32,
            sub_k: 32,
            segment: None,
        };
        let at = positions_b(&b);
        let pos = |k: usize, n: usize| at[(k - 1) * 64 + (n - 1)]; // 1-based as in the header
        assert_eq!(pos(1, 1), 0);
        assert_eq!(pos(32, 1), 31);
        assert_eq!(pos(1, 2), 32);
        assert_eq!(pos(6, 2), 37);
        assert_eq!(pos(32, 32), 1023);
        assert_eq!(pos(33, 1), 1024);
        assert_eq!(pos(1, 33), 2048);
        assert_eq!(pos(64, 64), 4095);
    }

    #[test]
    fn fp16_native_b_uses_16_column_blocks() {
        // (N/16, K/32, 16, 32) for K = 64, N = 32: K33N1 is at 16*32 = 512, K1N17 at 1024.
        let b = NativeB {
            k: 64,
            n: 32,
            sub_n: 16,
            sub_k: 32,
            segment: None,
        };
        let at = positions_b(&b);
        assert_eq!(at[0], 0);
        assert_eq!(at[32 * 32], 512, "K33 N1");
        assert_eq!(at[16], 1024, "K1 N17");
        assert_eq!(at[32 + 1], 33, "K2 N2: one after K1 N2");
    }

    #[test]
    #[cfg_attr(miri, ignore = "walks a million elements of safe code; it runs natively")]
    fn from_2_0_a_k_above_8192_is_split_into_segments() {
        // K = 8192 + 32, N = 64: segment 1 (rows 1..8192) holds 8192 * 64 elements in the
        // native order of an (8192, 64) matrix; segment 2 (rows 8193..8224) follows as an
        // (32, 64) matrix in the native order.
        let seg = NativeB {
            k: 8224,
            n: 64,
            sub_n: 32,
            sub_k: 32,
            segment: Some(8192),
        };
        let at = positions_b(&seg);
        let pos = |k: usize, n: usize| at[(k - 1) * 64 + (n - 1)];
        assert_eq!(pos(1, 33), 8192 * 32, "K1 N33 after all 8192 rows of N1..N32");
        assert_eq!(pos(8192, 64), 8192 * 64 - 1, "end of segment 1");
        assert_eq!(pos(8193, 1), 8192 * 64, "segment 2 starts");
        assert_eq!(pos(8193, 2), 8192 * 64 + 32);
        assert_eq!(pos(8193, 33), 8192 * 64 + 32 * 32, "segment 2's second column block");
        // The same K as one block (1.6.0): K8193 N1 follows K8192's block in the column stream.
        let one = NativeB { segment: None, ..seg };
        let at = positions_b(&one);
        assert_eq!(at[8192 * 64], 8192 * 32);
        assert_eq!(at[32], 8224 * 32, "K1 N33 after all 8224 rows");
        assert!(seg.tiles() && one.tiles());
        assert!(!NativeB { k: 8192 + 16, ..seg }.tiles());
    }

    #[test]
    fn perf_a_and_c_group_columns_across_rows() {
        // A int8 (K/16, M, 16) for M = 3, K = 32: row 1's K1..K16, row 2's, row 3's, then
        // K17..K32 of row 1 at 48.
        let a = Perf {
            rows: 3,
            cols: 32,
            sub: 16,
        };
        let mut at = vec![0; 3 * 32];
        a.walk(|pos, r, c| at[r * 32 + c] = pos);
        assert_eq!(at[0], 0);
        assert_eq!(at[32], 16, "M2 K1");
        assert_eq!(at[2 * 32 + 15], 47, "M3 K16");
        assert_eq!(at[16], 48, "M1 K17");
        // C (N/4, M, 4) for M = 2, N = 8: N5 of row 1 is at 8.
        let c = Perf {
            rows: 2,
            cols: 8,
            sub: 4,
        };
        let mut at = [0; 16];
        c.walk(|pos, r, col| at[r * 8 + col] = pos);
        assert_eq!(at[4], 8);
        assert_eq!(at[8 + 3], 7, "M2 N4");
    }
}
