//! Choosing the training device at run time: the CPU always; a CUDA GPU when coldfuse was built with
//! the `cuda` feature (candle's CUDA backend) and one is present.

use std::{fmt, str::FromStr};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::TrainError;

/// Which device to train on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// GPU 0 when built with `cuda` and one is present, otherwise the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The CUDA GPU with this ordinal; an error without the `cuda` feature or without that GPU.
    Cuda(usize),
}

impl DeviceChoice {
    /// Opens the device.
    pub fn open(self) -> Result<Device, TrainError> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto if !cuda_built() => Ok(Device::Cpu),
            Self::Auto => match Device::new_cuda(0) {
                Ok(d) => Ok(d),
                Err(e) => {
                    tracing::warn!(error = %e, "no usable CUDA GPU; training on the CPU");
                    Ok(Device::Cpu)
                }
            },
            Self::Cuda(_) if !cuda_built() => Err(TrainError::Config(
                "this build has no CUDA support: rebuild with `--features cuda`".into(),
            )),
            Self::Cuda(i) => {
                Device::new_cuda(i).map_err(|e| TrainError::Config(format!("cuda:{i}: {e}")))
            }
        }
    }
}

/// Whether this build includes candle's CUDA backend.
pub fn cuda_built() -> bool {
    candle_core::utils::cuda_is_available()
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = String;

    /// `auto`, `cpu`, `cuda` (GPU 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device {s:?} (auto, cpu, cuda, cuda:N)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (text, choice) in [
            ("auto", DeviceChoice::Auto),
            ("CPU", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:2", DeviceChoice::Cuda(2)),
        ] {
            assert_eq!(text.parse::<DeviceChoice>().unwrap(), choice);
        }
        assert_eq!(DeviceChoice::Cuda(1).to_string(), "cuda:1");
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn cpu_always_opens_and_auto_falls_back() {
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
        let auto = DeviceChoice::Auto.open().unwrap();
        assert_eq!(auto.is_cuda(), cuda_built());
        if !cuda_built() {
            let err = DeviceChoice::Cuda(0).open().unwrap_err();
            assert!(err.to_string().contains("--features cuda"), "{err}");
        }
    }
}
