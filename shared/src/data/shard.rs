//! Disjoint shards of one task's rows, for several contributors sharing a task (the paper's "multitask
//! as collaboration": one data set split among sites that never see each other's rows).

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

use super::TrainData;

/// Shuffle seed of the rows before sharding, the same for every shard, so shards are disjoint.
const SHARD_SEED: u64 = 0x5ba4d;

impl TrainData {
    /// Shard `index` of `of` (0-based): after one fixed shuffle, the rows at positions congruent to
    /// `index` modulo `of`. The shards of one task are disjoint, hold every row between them and
    /// differ in size by one row at most; one shard of one is every row. Dev rows are kept as they are.
    pub fn shard(self, index: usize, of: usize) -> Self {
        assert!(index < of, "shard {index} of {of}");
        let mut rows = self.train;
        rows.shuffle(&mut StdRng::seed_from_u64(SHARD_SEED));
        let train = rows
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % of == index)
            .map(|(_, r)| r)
            .collect();
        Self { train, ..self }
    }
}

#[cfg(test)]
mod tests {
    use crate::data::{draws::tests::data, TrainData};

    #[test]
    fn shards_are_disjoint_cover_every_row_and_are_reproducible() {
        let shards: Vec<TrainData> = (0..3).map(|k| data(100).shard(k, 3)).collect();
        let sizes: Vec<usize> = shards.iter().map(|s| s.train.len()).collect();
        assert_eq!(sizes, [34, 33, 33]);
        let mut lines: Vec<u64> = shards
            .iter()
            .flat_map(|s| &s.train)
            .map(|e| e.line)
            .collect();
        lines.sort();
        assert_eq!(lines, (1..=100).collect::<Vec<u64>>(), "every row once");
        assert_eq!(data(100).shard(1, 3).train, shards[1].train, "reproducible");
        assert_eq!(data(10).shard(0, 1).train.len(), 10);
    }
}
