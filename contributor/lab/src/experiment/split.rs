//! The split of tasks into contributor tasks and held-out tasks (`scripts/experiment/split.toml`),
//! written down before any run, and the contributors an experiment draws from it.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

/// Contributor tasks and held-out tasks, by name; never both.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// Tasks contributors fine-tune on.
    pub contributors: Vec<String>,
    /// Tasks every base is scored on.
    pub heldout: Vec<String>,
}

impl Split {
    /// Reads and checks a split file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the split {}", path.display()))?;
        let split: Self =
            toml::from_str(&text).with_context(|| format!("{}: not a split", path.display()))?;
        split.check().with_context(|| path.display().to_string())?;
        Ok(split)
    }

    /// Errors unless both sides are non-empty, without repeats, and disjoint.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.contributors.is_empty() || self.heldout.is_empty() {
            bail!("a split needs contributor tasks and held-out tasks");
        }
        let mut seen = std::collections::BTreeSet::new();
        for name in self.contributors.iter().chain(&self.heldout) {
            if !seen.insert(name) {
                bail!("task {name} is listed twice: a task is a contributor or held out, once");
            }
        }
        Ok(())
    }
}

/// One simulated site: a contributor task, or one of its disjoint shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The task it trains on.
    pub task: String,
    /// Its shard (0-based) of `shards` of the task's rows.
    pub shard: usize,
    /// Shards the task is split into (1: the whole task).
    pub shards: usize,
}

impl Site {
    /// The contributor id (`task`, or `task-sK` for shard K of a sharded task).
    pub fn id(&self) -> String {
        match self.shards {
            1 => self.task.clone(),
            _ => format!("{}-s{}", self.task, self.shard + 1),
        }
    }
}

/// Every site of `tasks`, each task split into `shards` disjoint shards.
pub fn sites(tasks: &[String], shards: usize) -> Vec<Site> {
    let shards = shards.max(1);
    let mut out = Vec::new();
    for task in tasks {
        out.extend((0..shards).map(|shard| Site {
            task: task.clone(),
            shard,
            shards,
        }));
    }
    out
}

/// The sites contributing to `iteration`: all of them when `per_iteration` is None or at least their
/// number, else that many drawn without replacement, reproducibly (seed and iteration), in site order.
pub fn draw(sites: &[Site], per_iteration: Option<usize>, seed: u64, iteration: u64) -> Vec<Site> {
    use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
    let k = per_iteration.unwrap_or(sites.len()).min(sites.len());
    let mut order: Vec<usize> = (0..sites.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(
        seed ^ iteration.wrapping_mul(0x9e37_79b9),
    ));
    let mut picked = order[..k].to_vec();
    picked.sort();
    picked.into_iter().map(|i| sites[i].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_split_is_disjoint_with_four_heldout_tasks_at_least() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/experiment/split.toml");
        let split = Split::read(&path).unwrap();
        assert!(split.heldout.len() >= 4, "{split:?}");
        assert!(split.contributors.len() >= 4, "{split:?}");
    }

    #[test]
    fn a_task_on_both_sides_is_refused() {
        let split = Split {
            contributors: vec!["a".into(), "b".into()],
            heldout: vec!["b".into()],
        };
        assert!(split
            .check()
            .unwrap_err()
            .to_string()
            .contains("listed twice"));
    }

    #[test]
    fn sites_shard_tasks_and_draws_are_reproducible_subsets() {
        let all = sites(&["x".into(), "y".into()], 3);
        let ids: Vec<String> = all.iter().map(Site::id).collect();
        assert_eq!(ids, ["x-s1", "x-s2", "x-s3", "y-s1", "y-s2", "y-s3"]);
        assert_eq!(sites(&["x".into()], 1)[0].id(), "x");
        let a = draw(&all, Some(4), 7, 2);
        assert_eq!(a.len(), 4);
        assert_eq!(a, draw(&all, Some(4), 7, 2), "reproducible");
        let differs = (1..10).any(|i| draw(&all, Some(4), 7, i) != a);
        assert!(differs, "iterations draw different sites");
        assert_eq!(draw(&all, None, 7, 2), all);
        assert_eq!(draw(&all, Some(99), 7, 2), all);
    }
}
