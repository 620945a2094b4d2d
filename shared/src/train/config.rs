//! Hyper-parameters of a fine-tuning run, with the ColD Fusion paper's values as defaults
//! (roberta-base: lr 5e-5, effective batch 256, AdamW with weight decay 0.01, 10 epochs).

use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::model::Precision;

/// A dev-set metric, used to pick the best evaluation and for early stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Classification accuracy.
    Accuracy,
    /// Macro-averaged F1.
    MacroF1,
    /// Matthews correlation.
    Mcc,
    /// Pearson correlation (regression).
    Pearson,
    /// Spearman correlation (regression).
    Spearman,
    /// Dev loss (lower is better).
    Loss,
}

impl Metric {
    /// The key of the metric in evaluation maps.
    pub fn key(self) -> &'static str {
        match self {
            Self::Accuracy => "accuracy",
            Self::MacroF1 => "macro_f1",
            Self::Mcc => "mcc",
            Self::Pearson => "pearson",
            Self::Spearman => "spearman",
            Self::Loss => "loss",
        }
    }

    /// Whether larger values are better.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Self::Loss)
    }

    /// The default for a task: accuracy for classification, Pearson for regression.
    pub fn default_for(regression: bool) -> Self {
        if regression {
            Self::Pearson
        } else {
            Self::Accuracy
        }
    }

    /// Whether the metric exists for the task.
    pub fn fits(self, regression: bool) -> bool {
        match self {
            Self::Loss => true,
            Self::Pearson | Self::Spearman => regression,
            Self::Accuracy | Self::MacroF1 | Self::Mcc => !regression,
        }
    }
}

/// Stop when the dev metric has not improved for `patience` evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EarlyStopping {
    /// Evaluations without improvement before stopping.
    pub patience: usize,
    /// Smallest change that counts as an improvement.
    pub min_delta: f64,
    /// Put the best evaluated weights back at the end.
    pub restore_best: bool,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        Self {
            patience: 3,
            min_delta: 0.0,
            restore_best: true,
        }
    }
}

/// Hyper-parameters of one fine-tuning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Peak learning rate (paper: 5e-5).
    pub learning_rate: f64,
    /// Decoupled weight decay, not applied to biases and LayerNorm weights (paper: 0.01).
    pub weight_decay: f64,
    /// AdamW β1.
    pub adam_beta1: f64,
    /// AdamW β2.
    pub adam_beta2: f64,
    /// AdamW ε.
    pub adam_epsilon: f64,
    /// Share of the total steps spent warming up (ignored when `warmup_steps` is set).
    pub warmup_ratio: f64,
    /// Warmup steps.
    pub warmup_steps: Option<usize>,
    /// Clip gradients to this global L2 norm (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    /// Examples per forward/backward pass.
    pub batch_size: usize,
    /// Micro-batches per optimizer step (effective batch = `batch_size` × this; paper: 256).
    pub grad_accumulation: usize,
    /// Passes over the training data.
    pub epochs: usize,
    /// Optimizer steps to run instead of `epochs` (as many epochs as it takes).
    pub max_steps: Option<usize>,
    /// Tokens per sequence (special tokens included); longer inputs are truncated.
    pub max_len: usize,
    /// Seed of the head init, the data order, the dev split and dropout.
    pub seed: u64,
    /// Dropout during training (off only for reference checks).
    pub dropout: bool,
    /// Length-bucketed shuffled batches; `false` keeps file order (reference checks).
    pub shuffle: bool,
    /// Train only the head on a frozen body (linear probe, the paper's "ColD-Frozen").
    pub linear_probe: bool,
    /// Examples per evaluation batch.
    pub eval_batch_size: usize,
    /// Evaluate on the dev set every this many steps (`None`: at the end of each epoch).
    pub eval_every: Option<usize>,
    /// Dev metric for picking the best evaluation (default: accuracy, or Pearson for regression).
    pub metric: Option<Metric>,
    /// Early stopping on the dev metric.
    pub early_stopping: Option<EarlyStopping>,
    /// Log a loss line every this many steps when no progress bar is drawn.
    pub log_every: usize,
    /// Precision of the matmuls: `bf16` is autocast with f32 master weights and optimiser state
    /// (PyTorch's AMP); `f32` (the default) is left out of the serialised form.
    #[serde(skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            learning_rate: 5e-5,
            weight_decay: 0.01,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            warmup_ratio: 0.06,
            warmup_steps: None,
            max_grad_norm: Some(1.0),
            batch_size: 32,
            grad_accumulation: 8,
            epochs: 10,
            max_steps: None,
            max_len: 128,
            seed: 42,
            dropout: true,
            shuffle: true,
            linear_probe: false,
            eval_batch_size: 64,
            eval_every: None,
            metric: None,
            early_stopping: None,
            log_every: 10,
            precision: Precision::F32,
        }
    }
}

impl TrainConfig {
    /// Checks ranges; every problem is a [`TrainError::Config`].
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!(
                "learning_rate {} must be positive",
                self.learning_rate
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("weight_decay {} must be >= 0", self.weight_decay));
        }
        for (name, b) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("{name} {b} must be in [0, 1)"));
            }
        }
        if !(self.adam_epsilon.is_finite() && self.adam_epsilon > 0.0) {
            return bad(format!(
                "adam_epsilon {} must be positive",
                self.adam_epsilon
            ));
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return bad(format!(
                "warmup_ratio {} must be in [0, 1]",
                self.warmup_ratio
            ));
        }
        if let Some(n) = self.max_grad_norm {
            if !(n.is_finite() && n > 0.0) {
                return bad(format!("max_grad_norm {n} must be positive"));
            }
        }
        let counts = [
            ("batch_size", self.batch_size),
            ("grad_accumulation", self.grad_accumulation),
            ("max_len", self.max_len),
            ("eval_batch_size", self.eval_batch_size),
            ("log_every", self.log_every),
        ];
        for (name, n) in counts {
            if n == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if self.max_len < 3 {
            return bad(format!("max_len {} leaves no room for text", self.max_len));
        }
        match self.max_steps {
            Some(0) => return bad("max_steps must be at least 1".into()),
            None if self.epochs == 0 => return bad("epochs must be at least 1".into()),
            _ => {}
        }
        if self.eval_every == Some(0) {
            return bad("eval_every must be at least 1".into());
        }
        if let Some(es) = self.early_stopping {
            if es.patience == 0 || !(es.min_delta.is_finite() && es.min_delta >= 0.0) {
                return bad(format!(
                    "early stopping needs patience >= 1 and min_delta >= 0, got {es:?}"
                ));
            }
        }
        Ok(())
    }

    /// The dev metric for a task.
    pub fn metric_for(&self, regression: bool) -> Result<Metric, TrainError> {
        let metric = self.metric.unwrap_or(Metric::default_for(regression));
        if !metric.fits(regression) {
            let task = if regression {
                "regression"
            } else {
                "classification"
            };
            return Err(TrainError::Config(format!(
                "metric {} does not apply to {task}",
                metric.key()
            )));
        }
        Ok(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers_and_valid() {
        let c = TrainConfig::default();
        c.validate().unwrap();
        assert_eq!(c.learning_rate, 5e-5);
        assert_eq!(c.weight_decay, 0.01);
        assert_eq!(c.batch_size * c.grad_accumulation, 256);
        assert_eq!(c.epochs, 10);
    }

    #[test]
    fn serde_fills_defaults_and_rejects_unknown_fields() {
        let c: TrainConfig =
            serde_json::from_str(r#"{"learning_rate": 1e-4, "metric": "macro_f1"}"#).unwrap();
        assert_eq!(c.learning_rate, 1e-4);
        assert_eq!(c.metric, Some(Metric::MacroF1));
        assert_eq!(c.epochs, 10);
        assert!(serde_json::from_str::<TrainConfig>(r#"{"lr": 1}"#).is_err());
    }

    #[test]
    fn invalid_values_are_errors() {
        let cases = [
            TrainConfig {
                learning_rate: 0.0,
                ..TrainConfig::default()
            },
            TrainConfig {
                batch_size: 0,
                ..TrainConfig::default()
            },
            TrainConfig {
                adam_beta2: 1.0,
                ..TrainConfig::default()
            },
            TrainConfig {
                max_steps: Some(0),
                ..TrainConfig::default()
            },
            TrainConfig {
                epochs: 0,
                ..TrainConfig::default()
            },
        ];
        for c in cases {
            assert!(c.validate().is_err(), "{c:?}");
        }
        let c = TrainConfig {
            metric: Some(Metric::Pearson),
            ..TrainConfig::default()
        };
        assert!(c.metric_for(false).is_err());
        assert_eq!(c.metric_for(true).unwrap(), Metric::Pearson);
    }
}
