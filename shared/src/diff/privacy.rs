//! Optional differential privacy for one contribution: clip the whole body diff to a global L2 norm
//! `C`, then add Gaussian noise with standard deviation `σ·C` to every value (the Gaussian mechanism).
//!
//! What this protects: the released diff is the Gaussian mechanism with L2 sensitivity `C` with respect
//! to the site's *entire* contribution (a diff versus no diff), so one release is (ε, δ)-differentially
//! private at the level of the whole site, hence also of any single example, with
//! ε ≈ √(2 ln(1.25/δ)) / σ for ε < 1. What it does not protect: every iteration is a new release and the
//! budgets add up (a site that contributes to T rounds spends about √T times more); the manifest still
//! carries the example count, local metrics and the contributor id in clear; the coordinator still
//! knows which site sent what. The noise has norm ≈ σ·C·√d for d parameters, which for a 100 M-parameter
//! body dwarfs the signal unless many sites are averaged: expect a real accuracy cost.

use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use super::DiffError;

/// Clipping norm and noise multiplier of the Gaussian mechanism applied to a diff.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DpConfig {
    /// Global L2 norm the whole diff is clipped to (`C`).
    pub clip: f64,
    /// Noise standard deviation as a multiple of `clip` (`σ`; 0 clips without noise).
    pub noise_multiplier: f64,
}

impl DpConfig {
    /// Checks `clip > 0` and `noise_multiplier >= 0`, both finite.
    pub fn validate(&self) -> Result<(), DiffError> {
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return Err(DiffError::Manifest(format!(
                "dp clip {} must be a positive norm",
                self.clip
            )));
        }
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier >= 0.0) {
            return Err(DiffError::Manifest(format!(
                "dp noise multiplier {} must be >= 0",
                self.noise_multiplier
            )));
        }
        Ok(())
    }
}

/// What privatising a diff did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpReport {
    /// Global L2 norm before clipping (stays local: it is not part of the manifest).
    pub norm_before: f64,
    /// Factor the diff was scaled by (1 when it was within the clip norm).
    pub scale: f64,
    /// Standard deviation of the added noise.
    pub noise_std: f64,
}

/// Clips the concatenation of `tensors` to `cfg.clip` and adds N(0, (σC)²) noise to each value.
/// `seed` makes the noise reproducible (tests only): `None` draws it from the operating system.
pub fn privatize(
    tensors: &mut [&mut [f32]],
    cfg: &DpConfig,
    seed: Option<u64>,
) -> Result<DpReport, DiffError> {
    cfg.validate()?;
    let norm_before = tensors
        .iter()
        .flat_map(|t| t.iter())
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    let scale = if norm_before > cfg.clip {
        cfg.clip / norm_before
    } else {
        1.0
    };
    let noise_std = cfg.noise_multiplier * cfg.clip;
    let mut rng = match seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_os_rng(),
    };
    let normal =
        Normal::new(0.0, noise_std).map_err(|e| DiffError::Manifest(format!("dp noise: {e}")))?;
    for t in tensors.iter_mut() {
        for v in t.iter_mut() {
            let noise = if noise_std > 0.0 {
                normal.sample(&mut rng)
            } else {
                0.0
            };
            *v = (f64::from(*v) * scale + noise) as f32;
        }
    }
    Ok(DpReport {
        norm_before,
        scale,
        noise_std,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(ts: &[Vec<f32>]) -> f64 {
        ts.iter()
            .flatten()
            .map(|&v| f64::from(v).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    #[test]
    fn clips_to_the_global_norm_without_noise() {
        let mut ts = vec![vec![3.0f32, 0.0], vec![4.0f32]];
        let cfg = DpConfig {
            clip: 1.0,
            noise_multiplier: 0.0,
        };
        let mut views: Vec<&mut [f32]> = ts.iter_mut().map(|t| t.as_mut_slice()).collect();
        let r = privatize(&mut views, &cfg, Some(1)).unwrap();
        assert!((r.norm_before - 5.0).abs() < 1e-9);
        assert!((norm(&ts) - 1.0).abs() < 1e-6);
        assert_eq!(ts, vec![vec![0.6, 0.0], vec![0.8]]);
        // Within the norm: unchanged.
        let mut small = vec![vec![0.1f32, 0.2]];
        let mut views: Vec<&mut [f32]> = small.iter_mut().map(|t| t.as_mut_slice()).collect();
        assert_eq!(privatize(&mut views, &cfg, None).unwrap().scale, 1.0);
        assert_eq!(small, vec![vec![0.1, 0.2]]);
    }

    #[test]
    fn noise_has_the_configured_spread_and_seed_reproduces_it() {
        let cfg = DpConfig {
            clip: 0.5,
            noise_multiplier: 2.0,
        };
        let run = |seed| {
            let mut ts = vec![vec![0.0f32; 100_000]];
            let mut views: Vec<&mut [f32]> = ts.iter_mut().map(|t| t.as_mut_slice()).collect();
            privatize(&mut views, &cfg, seed).unwrap();
            ts.remove(0)
        };
        let a = run(Some(7));
        assert_eq!(a, run(Some(7)));
        assert_ne!(a, run(None));
        let n = a.len() as f64;
        let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let std = (a
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        assert!(mean.abs() < 0.02, "{mean}");
        assert!((std - 1.0).abs() < 0.02, "{std}");
    }

    #[test]
    fn bad_settings_are_errors() {
        for (clip, noise) in [(0.0, 1.0), (-1.0, 0.0), (1.0, -0.5), (f64::NAN, 1.0)] {
            let cfg = DpConfig {
                clip,
                noise_multiplier: noise,
            };
            assert!(privatize(&mut [], &cfg, Some(0)).is_err(), "{cfg:?}");
        }
    }
}
