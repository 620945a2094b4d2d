//! Which strategy a deployment fuses with, and its parameters, as stored in config and lineage.

use std::{fmt, str::FromStr};

use super::{
    Dare, FusionError, Mean, Median, Strategy, TaskArithmetic, Ties, TrimmedMean, Weighted,
};

fn one() -> f32 {
    1.0
}

/// A fusion strategy with its parameters (serialised as `{"name": "ties", "density": 0.2, ...}`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StrategyConfig {
    /// Unweighted mean (the paper).
    #[default]
    Mean,
    /// Mean weighted by example counts.
    Weighted,
    /// Coordinate-wise trimmed mean.
    TrimmedMean {
        /// Fraction dropped at each end, in [0, 0.5).
        trim: f32,
    },
    /// Coordinate-wise median.
    Median,
    /// λ × sum of diffs.
    TaskArithmetic {
        /// λ.
        lambda: f32,
    },
    /// TIES-merging.
    Ties {
        /// Fraction kept per tensor, in (0, 1].
        density: f32,
        /// Scaling of the merged update (default 1).
        #[serde(default = "one")]
        lambda: f32,
    },
    /// DARE drop-and-rescale, then mean.
    Dare {
        /// Drop probability, in [0, 1).
        drop: f32,
        /// Mask seed (default 0).
        #[serde(default)]
        seed: u64,
        /// Scaling of the merged update (default 1).
        #[serde(default = "one")]
        lambda: f32,
    },
}

impl StrategyConfig {
    /// Checks the parameters and builds the strategy.
    pub fn build(&self) -> Result<Box<dyn Strategy>, FusionError> {
        let bad = |m: String| Err(FusionError::Config(m));
        let finite = |name: &str, v: f32| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(FusionError::Config(format!(
                    "{name} must be finite, got {v}"
                )))
            }
        };
        Ok(match *self {
            Self::Mean => Box::new(Mean),
            Self::Weighted => Box::new(Weighted),
            Self::Median => Box::new(Median),
            Self::TrimmedMean { trim } => {
                if !(0.0..0.5).contains(&trim) {
                    return bad(format!("trimmed-mean trim must be in [0, 0.5), got {trim}"));
                }
                Box::new(TrimmedMean { trim })
            }
            Self::TaskArithmetic { lambda } => {
                finite("lambda", lambda)?;
                Box::new(TaskArithmetic { lambda })
            }
            Self::Ties { density, lambda } => {
                finite("lambda", lambda)?;
                if !(density > 0.0 && density <= 1.0) {
                    return bad(format!("ties density must be in (0, 1], got {density}"));
                }
                Box::new(Ties { density, lambda })
            }
            Self::Dare { drop, seed, lambda } => {
                finite("lambda", lambda)?;
                if !(0.0..1.0).contains(&drop) {
                    return bad(format!("dare drop must be in [0, 1), got {drop}"));
                }
                Box::new(Dare { drop, seed, lambda })
            }
        })
    }
}

impl FromStr for StrategyConfig {
    type Err = FusionError;

    /// Parses `NAME` or `NAME:KEY=VALUE,...`, e.g. `mean`, `trimmed-mean:trim=0.2`,
    /// `ties:density=0.2,lambda=1`, `dare:drop=0.9,seed=7`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, object) = named_params(s, "name")?;
        let config: Self = serde_json::from_value(object.clone().into())
            .map_err(|e| FusionError::Config(format!("strategy `{s}`: {e}")))?;
        // serde ignores extra fields of unit variants (`mean:x=1`): refuse them here.
        let known = serde_json::to_value(&config).expect("a strategy serialises");
        if let Some(key) = object.keys().find(|k| known.get(k.as_str()).is_none()) {
            return Err(FusionError::Config(format!(
                "strategy `{name}` has no parameter `{key}`"
            )));
        }
        config.build()?;
        Ok(config)
    }
}

impl fmt::Display for StrategyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mean => f.write_str("mean"),
            Self::Weighted => f.write_str("weighted"),
            Self::Median => f.write_str("median"),
            Self::TrimmedMean { trim } => write!(f, "trimmed-mean:trim={trim}"),
            Self::TaskArithmetic { lambda } => write!(f, "task-arithmetic:lambda={lambda}"),
            Self::Ties { density, lambda } => write!(f, "ties:density={density},lambda={lambda}"),
            Self::Dare { drop, seed, lambda } => {
                write!(f, "dare:drop={drop},seed={seed},lambda={lambda}")
            }
        }
    }
}

/// A deployment's fusion settings.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionConfig {
    /// The strategy.
    #[serde(default)]
    pub strategy: StrategyConfig,
    /// Scale every diff whose global L2 norm exceeds this down to it before fusing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_norm: Option<f64>,
    /// Scale every diff whose L2 norm exceeds K × the median of the round's diff norms (the upper one
    /// for an even count) down to that (robust to a minority of oversized diffs; absent in records of
    /// fusions made without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_to_median: Option<f64>,
    /// For strategies weighted by example counts: cap every self-reported count at K × the median
    /// count (the upper one for an even number) before weighting (absent in records made without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_examples_to_median: Option<f64>,
}

impl FusionConfig {
    /// Whether fusing needs every diff's norm first (some clipping is on).
    pub fn clips(&self) -> bool {
        self.clip_norm.is_some() || self.clip_to_median.is_some()
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), FusionError> {
        self.strategy.build()?;
        for (name, value) in [
            ("clip_norm", self.clip_norm),
            ("clip_to_median", self.clip_to_median),
            ("cap_examples_to_median", self.cap_examples_to_median),
        ] {
            if let Some(c) = value.filter(|c| !(c.is_finite() && *c > 0.0)) {
                return Err(FusionError::Config(format!(
                    "{name} must be a positive number, got {c}"
                )));
            }
        }
        Ok(())
    }
}

/// Parses `NAME` or `NAME:KEY=NUMBER,...` into a JSON object with `tag: NAME` and the numbers.
pub(crate) fn named_params(
    s: &str,
    tag: &str,
) -> Result<(String, serde_json::Map<String, serde_json::Value>), FusionError> {
    let (name, params) = s.split_once(':').unwrap_or((s, ""));
    let mut object = serde_json::Map::new();
    object.insert(tag.into(), name.trim().into());
    for pair in params.split(',').filter(|p| !p.trim().is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| FusionError::Config(format!("`{pair}` in `{s}` is not KEY=VALUE")))?;
        let number: serde_json::Value = serde_json::from_str(value.trim())
            .map_err(|_| FusionError::Config(format!("`{value}` in `{s}` is not a number")))?;
        object.insert(key.trim().into(), number);
    }
    Ok((name.trim().to_string(), object))
}
