//! Repeated training draws from one task with one fixed dev set: the held-out protocol of `coldfuse
//! eval`, where every seed trains on its own sample and all are scored on the same examples.

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

use super::{DataError, Example, LabelSpace, TrainData};

/// Shuffle seed of the dev set, the same for every seed and base.
const DEV_SEED: u64 = 0xde5e7;

/// A fixed dev set and, per seed, a training sample of the remaining rows.
#[derive(Debug, Clone)]
pub struct Draws {
    /// The label space of the task.
    pub labels: LabelSpace,
    /// The dev examples, scored by every draw.
    pub dev: Vec<Example>,
    /// Every example some draw trains on, each once.
    pub pool: Vec<Example>,
    /// Per seed, its training examples as indices into `pool`.
    pub draws: Vec<(u64, Vec<usize>)>,
}

impl Draws {
    /// The training examples of draw `k`, with the dev set, as training data.
    pub fn data(&self, k: usize) -> TrainData {
        TrainData {
            train: self.draws[k]
                .1
                .iter()
                .map(|&i| self.pool[i].clone())
                .collect(),
            dev: Some(self.dev.clone()),
            labels: self.labels.clone(),
            reports: Vec::new(),
        }
    }
}

impl TrainData {
    /// Holds out `dev` training rows (the same ones whatever the seeds) and draws `train` of the
    /// others for each of `seeds`; a draw differs from seed to seed.
    pub fn draws(self, train: usize, dev: usize, seeds: &[u64]) -> Result<Draws, DataError> {
        self.require_rows(train + dev)?;
        let mut rows = self.train;
        rows.shuffle(&mut StdRng::seed_from_u64(DEV_SEED));
        let rest = rows.split_off(dev);
        // Pool position of each row of `rest` that some draw uses.
        let mut position = vec![usize::MAX; rest.len()];
        let mut pool = Vec::new();
        let mut draws = Vec::new();
        for &seed in seeds {
            let mut order: Vec<usize> = (0..rest.len()).collect();
            order.shuffle(&mut StdRng::seed_from_u64(seed));
            let picked = order[..train]
                .iter()
                .map(|&i| {
                    if position[i] == usize::MAX {
                        position[i] = pool.len();
                        pool.push(rest[i].clone());
                    }
                    position[i]
                })
                .collect();
            draws.push((seed, picked));
        }
        Ok(Draws {
            labels: self.labels,
            dev: rows,
            pool,
            draws,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::data::Target;

    /// `n` rows `row i`, alternating between two classes.
    pub(in crate::data) fn data(n: usize) -> TrainData {
        TrainData {
            train: (0..n)
                .map(|i| Example {
                    text: format!("row {i}"),
                    pair: None,
                    target: Target::Class((i % 2) as u32),
                    line: i as u64 + 1,
                })
                .collect(),
            dev: None,
            labels: LabelSpace::Classes(vec!["a".into(), "b".into()]),
            reports: Vec::new(),
        }
    }

    #[test]
    fn dev_is_fixed_disjoint_and_draws_differ_by_seed() {
        let a = data(50).draws(10, 15, &[1, 2]).unwrap();
        let b = data(50).draws(10, 15, &[7]).unwrap();
        assert_eq!(a.dev, b.dev, "the dev set does not depend on the seeds");
        assert_eq!(a.dev.len(), 15);
        let (one, two) = (a.data(0), a.data(1));
        assert_eq!((one.train.len(), two.train.len()), (10, 10));
        assert_ne!(one.train, two.train, "each seed draws its own sample");
        assert_eq!(one.dev.as_deref(), Some(a.dev.as_slice()));
        for ex in one.train.iter().chain(&two.train) {
            assert!(
                !a.dev.contains(ex),
                "{} is both trained on and scored",
                ex.text
            );
        }
        let distinct: std::collections::BTreeSet<u64> = a.pool.iter().map(|e| e.line).collect();
        assert_eq!(distinct.len(), a.pool.len(), "the pool holds each row once");
        let again = data(50).draws(10, 15, &[2]).unwrap();
        assert_eq!(
            again.data(0).train,
            two.train,
            "a seed's draw is reproducible"
        );
    }

    #[test]
    fn too_few_rows_is_an_error() {
        assert!(matches!(
            data(20).draws(10, 15, &[0]),
            Err(DataError::TooFewToSplit { rows: 20, .. })
        ));
    }
}
