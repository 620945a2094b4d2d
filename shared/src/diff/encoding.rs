//! How diff values are stored: plain floats, int8 with a per-tensor scale, or top-k sparse.

use std::{fmt, str::FromStr};

/// The encoding of every tensor of one diff file.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Encoding {
    /// IEEE f32: exact, 4 bytes per value.
    F32,
    /// bfloat16: 2 bytes per value, f32's range; the default.
    #[default]
    Bf16,
    /// IEEE f16: 2 bytes per value, more mantissa, less range than bf16.
    F16,
    /// Signed 8-bit integers times a per-tensor scale (max |value| / 127): 1 byte per value.
    Int8,
    /// The `density` fraction of largest-magnitude values per tensor, as u32 indices + bf16 values;
    /// the rest are zero. 6 bytes per kept value.
    TopK {
        /// Fraction of values kept per tensor, in (0, 1].
        density: f32,
    },
}

impl Encoding {
    /// Checks the encoding's parameters.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::TopK { density } if !(*density > 0.0 && *density <= 1.0) => {
                Err(format!("top-k density {density} is not in (0, 1]"))
            }
            _ => Ok(()),
        }
    }

    /// Number of values kept for a tensor of `numel` elements under top-k (at least one).
    pub fn kept(density: f32, numel: usize) -> usize {
        if numel == 0 {
            return 0;
        }
        ((density as f64 * numel as f64).ceil() as usize).clamp(1, numel)
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::F32 => f.write_str("f32"),
            Self::Bf16 => f.write_str("bf16"),
            Self::F16 => f.write_str("f16"),
            Self::Int8 => f.write_str("int8"),
            Self::TopK { density } => write!(f, "topk:{density}"),
        }
    }
}

impl FromStr for Encoding {
    type Err = String;

    /// Parses `f32`, `bf16`, `f16`, `int8` or `topk:DENSITY` (e.g. `topk:0.1`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let encoding = match s {
            "f32" => Self::F32,
            "bf16" => Self::Bf16,
            "f16" => Self::F16,
            "int8" => Self::Int8,
            _ => match s.strip_prefix("topk:") {
                Some(d) => Self::TopK {
                    density: d
                        .parse()
                        .map_err(|_| format!("`{d}` is not a number in `{s}`"))?,
                },
                None => {
                    return Err(format!(
                        "unknown encoding `{s}` (expected f32, bf16, f16, int8 or topk:DENSITY)"
                    ))
                }
            },
        };
        encoding.validate()?;
        Ok(encoding)
    }
}
