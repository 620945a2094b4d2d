//! Many linear probes of one base on one task (seeds, training draws from one pool): the frozen body
//! runs once over every example a draw may train on and once over the dev set, then each probe trains
//! only a fresh head on those features. This is what makes many seeds of a probe cheap.

use std::collections::BTreeMap;

use candle_core::Device;

use super::{FrozenFeatures, ProgressMode, RunOptions, TrainConfig, TrainError, Trainer};
use crate::{
    checkpoint::ModelDir,
    classifier::{Encoder, HeadInit, SequenceClassifier},
    data::{EncodedSet, Example, LabelSpace},
    tokenize::TextTokenizer,
};

/// A base's body with its features of a task's training pool and dev set.
pub struct LinearProbe {
    dir: ModelDir,
    /// The body; `None` only after a probe failed midway.
    encoder: Option<Encoder>,
    labels: LabelSpace,
    device: Device,
    pool: EncodedSet,
    pool_features: FrozenFeatures,
    dev: EncodedSet,
    dev_features: FrozenFeatures,
}

impl std::fmt::Debug for LinearProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LinearProbe({}, pool={}, dev={})",
            self.dir.path.display(),
            self.pool.len(),
            self.dev.len()
        )
    }
}

impl LinearProbe {
    /// Loads `base`'s body onto `device` and runs it over `pool` (every example a probe may train
    /// on) and `dev`, tokenized to `max_len` tokens, in batches of `batch_size`.
    pub fn new(
        base: &ModelDir,
        pool: &[Example],
        dev: &[Example],
        labels: LabelSpace,
        max_len: usize,
        batch_size: usize,
        device: &Device,
    ) -> Result<Self, TrainError> {
        if pool.is_empty() || dev.is_empty() {
            return Err(TrainError::Config(format!(
                "a linear probe needs training and dev examples (got {} and {})",
                pool.len(),
                dev.len()
            )));
        }
        let tokenizer = TextTokenizer::from_dir(&base.path, max_len)?;
        let pool = EncodedSet::encode(pool, &tokenizer)?;
        let dev = EncodedSet::encode(dev, &tokenizer)?;
        let encoder = Encoder::load(base, device)?;
        let pool_features = FrozenFeatures::compute(&encoder, &pool, batch_size, device)?;
        let dev_features = FrozenFeatures::compute(&encoder, &dev, batch_size, device)?;
        Ok(Self {
            dir: base.clone(),
            encoder: Some(encoder),
            labels,
            device: device.clone(),
            pool,
            pool_features,
            dev,
            dev_features,
        })
    }

    /// Trains a fresh head (seeded with `cfg.seed`) on the pool examples `rows` as `cfg` says (a
    /// linear probe; `max_len` was fixed by [`LinearProbe::new`]) and returns its dev metrics.
    pub fn fit(
        &mut self,
        rows: &[usize],
        cfg: &TrainConfig,
    ) -> Result<BTreeMap<String, f64>, TrainError> {
        if !cfg.linear_probe {
            return Err(TrainError::Config(
                "LinearProbe::fit needs a linear-probe config".into(),
            ));
        }
        let train = self.pool.subset(rows)?;
        let features = self.pool_features.subset(rows)?;
        let encoder = self.encoder.take().ok_or_else(|| {
            TrainError::Config("an earlier probe failed midway and lost the body".into())
        })?;
        let head = HeadInit::Fresh {
            num_labels: self.labels.num_outputs(),
            seed: cfg.seed,
        };
        let model = SequenceClassifier::with_head(encoder, &self.dir, head, &self.device)?;
        let opts = RunOptions {
            device: self.device.clone(),
            progress: ProgressMode::Off,
            ..RunOptions::default()
        };
        let outcome = Trainer::new(model, self.labels.clone(), cfg.clone(), opts)?
            .with_features(features, Some(self.dev_features.clone()))?
            .run(&train, Some(&self.dev))?;
        self.encoder = Some(outcome.model.encoder);
        Ok(outcome.metrics)
    }
}
