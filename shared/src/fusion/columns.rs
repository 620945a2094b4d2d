//! Order statistics of a chunk's columns (element `j`'s N values), for the strategies that rank
//! values per coordinate (`median`, `trimmed-mean`).
//!
//! Up to [`NETWORK_MAX`] contributions, a block of columns is ranked at once by a sorting network
//! (Batcher's odd–even merge sort, cut down to the ranks asked for): every compare-exchange is a
//! branch-free min/max over a whole row of the block, which the compiler vectorises. Values are
//! compared as the integer keys `f32::total_cmp` uses, so rank `r` holds exactly the value a sort
//! under `total_cmp` puts at `r` (same bits, `-0.0` below `+0.0`). Above that, or for a single
//! column, each column is sorted on its own.

use super::Chunk;

/// The most contributions ranked by the network; above it each column is sorted.
pub const NETWORK_MAX: usize = 128;

/// Columns ranked at once: N × this many keys (128 KiB at [`NETWORK_MAX`]) stay in cache.
const BLOCK: usize = 256;

/// Reusable buffers and the network for one N and one set of ranks.
#[derive(Debug, Default)]
pub struct ColumnRanks {
    /// (N, ranks) the network was built for.
    built: Option<(usize, Vec<usize>)>,
    /// Compare-exchanges `(a, b)`, a < b: min to row a, max to row b.
    network: Vec<(usize, usize)>,
    /// `keys[i * BLOCK + t]`: the i-th smallest value of column `t` of the block, once ranked.
    keys: Vec<i32>,
    /// One column, for the per-column sort.
    column: Vec<f32>,
}

/// One column's values in ascending `total_cmp` order.
#[derive(Debug, Clone, Copy)]
pub struct Ranked<'a> {
    keys: &'a [i32],
    column: usize,
}

impl Ranked<'_> {
    /// The value of rank `r` (0 = smallest).
    #[inline]
    pub fn get(&self, r: usize) -> f32 {
        f32::from_bits(key(self.keys[r * BLOCK + self.column]) as u32)
    }
}

/// The integer key with the order of `f32::total_cmp` (an involution: it also maps keys back).
#[inline]
fn key(bits: i32) -> i32 {
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

impl ColumnRanks {
    /// Calls `visit(j, column)` for every column `j` of the chunk, in order, with its values ranked;
    /// only the `ranks` listed may be read from `column`.
    pub fn for_each(
        &mut self,
        chunk: &Chunk<'_>,
        ranks: &[usize],
        mut visit: impl FnMut(usize, Ranked<'_>),
    ) {
        let n = chunk.n();
        if n == 0 {
            return;
        }
        self.keys.resize(n * BLOCK, 0);
        if n > NETWORK_MAX || chunk.len == 1 {
            for j in 0..chunk.len {
                self.column.clear();
                self.column.extend((0..n).map(|i| chunk.rows[i][j]));
                self.column.sort_unstable_by(f32::total_cmp);
                for (r, v) in self.column.iter().enumerate() {
                    self.keys[r * BLOCK] = key(v.to_bits() as i32);
                }
                visit(
                    j,
                    Ranked {
                        keys: &self.keys,
                        column: 0,
                    },
                );
            }
            return;
        }
        self.build(n, ranks);
        let mut start = 0;
        while start < chunk.len {
            let len = BLOCK.min(chunk.len - start);
            for i in 0..n {
                let row = &chunk.rows[i][start..start + len];
                self.keys[i * BLOCK..i * BLOCK + len]
                    .iter_mut()
                    .zip(row)
                    .for_each(|(k, v)| *k = key(v.to_bits() as i32));
            }
            for &(a, b) in &self.network {
                let (low, high) = self.keys.split_at_mut(b * BLOCK);
                let rows = low[a * BLOCK..a * BLOCK + len]
                    .iter_mut()
                    .zip(&mut high[..len]);
                rows.for_each(|(x, y)| {
                    let (p, q) = (*x, *y);
                    *x = p.min(q);
                    *y = p.max(q);
                });
            }
            for t in 0..len {
                visit(
                    start + t,
                    Ranked {
                        keys: &self.keys,
                        column: t,
                    },
                );
            }
            start += len;
        }
    }

    /// Builds (or keeps) the network for `n` values, cut down to what `ranks` depend on.
    fn build(&mut self, n: usize, ranks: &[usize]) {
        if matches!(&self.built, Some((m, r)) if *m == n && r == ranks) {
            return;
        }
        let mut needed = vec![false; n];
        ranks.iter().for_each(|&r| needed[r] = true);
        let mut kept: Vec<(usize, usize)> = merge_sort_network(n)
            .into_iter()
            .rev()
            .filter(|&(a, b)| {
                let keep = needed[a] || needed[b];
                if keep {
                    needed[a] = true;
                    needed[b] = true;
                }
                keep
            })
            .collect();
        kept.reverse();
        self.network = kept;
        self.built = Some((n, ranks.to_vec()));
    }
}

/// Batcher's odd–even merge sort for `n` values: built for the next power of two and cut to the
/// compare-exchanges within `0..n` (the missing inputs act as +∞, which never leave their places, so
/// the dropped ones never exchange anything).
pub fn merge_sort_network(n: usize) -> Vec<(usize, usize)> {
    let size = n.next_power_of_two();
    let mut out = Vec::new();
    let mut p = 1;
    while p < size {
        let mut k = p;
        while k >= 1 {
            let mut j = k % p;
            while j + k < size {
                for i in 0..k.min(size - j - k) {
                    let (a, b) = (i + j, i + j + k);
                    if a / (2 * p) == b / (2 * p) && b < n {
                        out.push((a, b));
                    }
                }
                j += 2 * k;
            }
            k /= 2;
        }
        p *= 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By the 0-1 principle, a network sorts every input if it sorts every input of zeros and ones.
    #[test]
    fn the_network_sorts_every_zero_one_input() {
        for n in 1..=16 {
            let network = merge_sort_network(n);
            for bits in 0u32..1 << n {
                let mut v: Vec<u8> = (0..n).map(|i| (bits >> i & 1) as u8).collect();
                for &(a, b) in &network {
                    if v[a] > v[b] {
                        v.swap(a, b);
                    }
                }
                assert!(v.windows(2).all(|w| w[0] <= w[1]), "n={n} input={bits:b}");
            }
        }
    }

    /// Every rank, for every N up to past the network's limit and block lengths around a block,
    /// carries the bits a `total_cmp` sort puts there: signed zeros, duplicates, subnormals, extremes.
    #[test]
    fn ranks_equal_a_total_order_sort_bit_for_bit() {
        let pool = [
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            1e-40,
            -1e-40,
            f32::MAX,
            f32::MIN,
            3.5e-3,
            -3.5e-3,
            2.0,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut ranks = ColumnRanks::default();
        for n in (1..=40).chain([63, 64, 65, 127, 128, 129]) {
            for len in [1, 7, BLOCK - 1, BLOCK + 3] {
                let rows: Vec<Vec<f32>> = (0..n)
                    .map(|_| {
                        (0..len)
                            .map(|_| match next() % 3 {
                                0 => pool[(next() % pool.len() as u64) as usize],
                                _ => (next() as i32 as f32) * 1e-9,
                            })
                            .collect()
                    })
                    .collect();
                let weights = vec![1.0 / n as f64; n];
                let chunk = Chunk {
                    rows: &rows,
                    len,
                    weights: &weights,
                    thresholds: &[],
                    keys: &[],
                    tensor_key: 0,
                    start: 0,
                };
                let asked: Vec<usize> = (0..n).collect();
                ranks.for_each(&chunk, &asked, |j, ranked| {
                    let mut column: Vec<f32> = rows.iter().map(|r| r[j]).collect();
                    column.sort_unstable_by(f32::total_cmp);
                    for (r, v) in column.iter().enumerate() {
                        assert_eq!(
                            ranked.get(r).to_bits(),
                            v.to_bits(),
                            "n={n} len={len} j={j} r={r}"
                        );
                    }
                });
                // Cut down to the middle: the same middle values.
                let middle = [(n - 1) / 2, n / 2];
                ranks.for_each(&chunk, &middle, |j, ranked| {
                    let mut column: Vec<f32> = rows.iter().map(|r| r[j]).collect();
                    column.sort_unstable_by(f32::total_cmp);
                    for r in middle {
                        assert_eq!(
                            ranked.get(r).to_bits(),
                            column[r].to_bits(),
                            "n={n} j={j} r={r}"
                        );
                    }
                });
            }
        }
    }

    #[test]
    fn cutting_to_the_median_drops_compare_exchanges() {
        let mut ranks = ColumnRanks::default();
        ranks.build(32, &[15, 16]);
        assert!(ranks.network.len() < merge_sort_network(32).len());
        assert_eq!(merge_sort_network(32).len(), 191);
    }
}
