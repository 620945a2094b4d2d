//! Site evaluation of a gated candidate: a contributor site scores the candidate against `latest` on
//! its own private data (the held-out protocol) and sends only aggregates: per method both mean
//! scores, the paired gain with its 95% interval, and the example and seed counts. The gate's
//! [`SiteGate`] rule turns the reports into a verdict that no minority of sites can force.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::EvalMethod;
use crate::hash::sha256_bytes;

/// Most results one report may carry (a method per task, a few tasks).
pub const MAX_RESULTS: usize = 16;
/// Widest interval half-width a result may claim (two seeds' t-interval of a gain is up to 12.7 × its
/// spread, so honest intervals can be wider than the score range).
pub const MAX_INTERVAL: f64 = 1000.0;
/// Most seeds or examples a result may claim (more is not a site's evaluation, it is a typo or a lie).
pub const MAX_COUNT: u64 = 10_000_000;

/// How the gate weighs site reports (`GateConfig::sites`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteGate {
    /// Reports needed before deciding (until the deadline).
    #[serde(default = "one")]
    pub min_reports: usize,
    /// Seconds after the fusion after which the gate decides on the reports it has (see
    /// [`SiteRule`]); with none, the candidate is held for the operator.
    #[serde(default = "day")]
    pub deadline_secs: u64,
    /// How the reports combine.
    #[serde(default)]
    pub rule: SiteRule,
}

fn one() -> usize {
    1
}

fn day() -> u64 {
    86_400
}

/// How site reports combine into a verdict; each report counts as its worst lower 95% bound of the
/// gain over its results, and each of the `min_reports` that did not arrive (by the deadline) as −∞.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SiteRule {
    /// Hold when the lower median of the sites' lower bounds is below −tolerance: passing needs more
    /// than half of them, so a minority of sites can neither hold a candidate nor pass one (the
    /// default; see ARCHITECTURE.md, "Promotion gate").
    #[default]
    Median,
    /// Hold when any site's lower bound is below −tolerance: every reporting site has a veto (for
    /// deployments whose sites trust each other).
    Any,
}

impl std::str::FromStr for SiteRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "median" => Ok(Self::Median),
            "any" => Ok(Self::Any),
            _ => Err(format!("unknown site rule {s:?} (median or any)")),
        }
    }
}

impl SiteGate {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_reports == 0 {
            return Err("gate sites.min_reports must be at least 1".into());
        }
        if self.deadline_secs == 0 {
            return Err("gate sites.deadline_secs must be at least 1".into());
        }
        Ok(())
    }

    /// The statistic the rule compares with −tolerance: over the reports' lower bounds, padded with −∞
    /// up to `min_reports` (a missing report passes nothing), the lowest (`any`) or the lower median
    /// (`median`: more than half must pass). None without reports.
    pub fn statistic(&self, reports: &[ReceivedReport]) -> Option<f64> {
        let mut bounds: Vec<f64> = reports.iter().map(|r| r.report.lower_bound()).collect();
        if bounds.is_empty() {
            return None;
        }
        bounds.resize(bounds.len().max(self.min_reports), f64::NEG_INFINITY);
        bounds.sort_by(f64::total_cmp);
        Some(match self.rule {
            SiteRule::Any => bounds[0],
            SiteRule::Median => bounds[(bounds.len() - 1) / 2],
        })
    }
}

/// One method's result at a site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteResult {
    /// Linear probe or few-shot.
    pub method: EvalMethod,
    /// Metric name: `accuracy` (in [0, 1]) or, for a regression task, `pearson` (in [−1, 1]); higher
    /// is better.
    pub metric: String,
    /// The reference's (latest's) mean score over seeds.
    pub reference_score: f64,
    /// The candidate's mean score over the same seeds.
    pub candidate_score: f64,
    /// Candidate minus reference (mean of the paired differences).
    pub gain: f64,
    /// Half-width of the gain's 95% confidence interval (None with a single seed).
    pub interval: Option<f64>,
    /// Seeds, each paired between the two bases.
    pub seeds: u64,
    /// Training examples per seed.
    pub train_examples: u64,
    /// Dev examples scored.
    pub dev_examples: u64,
}

impl SiteResult {
    /// The lower end of the gain's 95% interval (the gain itself without an interval); −∞ for
    /// anything not finite.
    pub fn lower_bound(&self) -> f64 {
        let lower = self.gain - self.interval.unwrap_or(0.0);
        if lower.is_finite() {
            lower
        } else {
            f64::NEG_INFINITY
        }
    }
}

/// What a site sends about a candidate (`POST /v1/gate/{iteration}/reports`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteReport {
    /// The iteration the candidate was compared with (the latest when it was evaluated).
    pub reference_iteration: u64,
    /// One result per method and task.
    pub results: Vec<SiteResult>,
}

impl SiteReport {
    /// Checks every field a hostile site controls: finite scores in [0, 1], a gain that is the
    /// difference of the scores, a finite non-negative interval, counts in range.
    pub fn validate(&self) -> Result<(), String> {
        if self.results.is_empty() || self.results.len() > MAX_RESULTS {
            return Err(format!(
                "a report carries 1 to {MAX_RESULTS} results, not {}",
                self.results.len()
            ));
        }
        for (k, r) in self.results.iter().enumerate() {
            let at = |what: &str| format!("result {k}: {what}");
            let low = match r.metric.as_str() {
                "accuracy" => 0.0,
                "pearson" => -1.0,
                other => return Err(at(&format!("metric {other:?} (accuracy or pearson)"))),
            };
            for (name, v) in [
                ("reference_score", r.reference_score),
                ("candidate_score", r.candidate_score),
            ] {
                if !(v.is_finite() && (low..=1.0).contains(&v)) {
                    return Err(at(&format!(
                        "{name} must be in [{low}, 1] for {}",
                        r.metric
                    )));
                }
            }
            if !r.gain.is_finite()
                || (r.gain - (r.candidate_score - r.reference_score)).abs() > 1e-6
            {
                return Err(at("gain must be candidate_score − reference_score"));
            }
            if r.seeds >= 2 && r.interval.is_none() {
                return Err(at("interval is required with 2 or more seeds"));
            }
            if r.interval
                .is_some_and(|h| !(h.is_finite() && (0.0..=MAX_INTERVAL).contains(&h)))
            {
                return Err(at(&format!(
                    "interval must be a half-width in [0, {MAX_INTERVAL}]"
                )));
            }
            for (name, v) in [
                ("seeds", r.seeds),
                ("train_examples", r.train_examples),
                ("dev_examples", r.dev_examples),
            ] {
                if v == 0 || v > MAX_COUNT {
                    return Err(at(&format!("{name} must be in 1..={MAX_COUNT}")));
                }
            }
        }
        Ok(())
    }

    /// The report's worst lower bound of the gain over its results.
    pub fn lower_bound(&self) -> f64 {
        self.results
            .iter()
            .map(SiteResult::lower_bound)
            .fold(f64::INFINITY, f64::min)
    }

    /// The digest that names this report from `contributor` about candidate `iteration`: SHA-256 of
    /// `coldfuse site report v2`, the iteration, the contributor, the coordinator's random `nonce`
    /// for it and the report's JSON. The site recomputes it from what it sent and the nonce it was
    /// answered, and finds it in the gate's record and receipt; without the nonce (which only the
    /// reporter, admins and auditors see) nobody can tell which site a published digest is from.
    pub fn digest(&self, iteration: u64, contributor: &str, nonce: &str) -> String {
        let mut bytes =
            format!("coldfuse site report v2\n{iteration}\n{contributor}\n{nonce}\n").into_bytes();
        bytes.extend(serde_json::to_vec(self).unwrap_or_default());
        sha256_bytes(&bytes)
    }
}

/// A report as the gate keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceivedReport {
    /// [`SiteReport::digest`] of the report.
    pub digest: String,
    /// The reporting contributor (from its token; shown only to itself, admins and auditors).
    pub contributor: Option<String>,
    /// The coordinator's random nonce in the digest (shown only to the reporter, admins and auditors).
    pub nonce: Option<String>,
    /// Unix time of receipt.
    pub received_at: u64,
    /// What the site sent.
    pub report: SiteReport,
}

/// The answer to a site report (`POST /v1/gate/{iteration}/reports`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportAnswer {
    /// The report as the gate keeps it (its digest names it in the gate's record and the card).
    pub report: ReceivedReport,
    /// The candidate's gate record after it.
    pub promotion: super::Promotion,
}

/// Reports for the tests of this module, `gate` and `card`.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A linear-probe result (5 seeds, 64 training and 200 dev examples).
    pub(crate) fn result(reference: f64, candidate: f64, interval: Option<f64>) -> SiteResult {
        SiteResult {
            method: EvalMethod::LinearProbe,
            metric: "accuracy".into(),
            reference_score: reference,
            candidate_score: candidate,
            gain: candidate - reference,
            interval,
            seeds: 5,
            train_examples: 64,
            dev_examples: 200,
        }
    }

    /// `contributor`'s report on candidate `iteration` against the iteration before it: one result of
    /// this gain (from 0.5) ± 0.01.
    pub(crate) fn received(iteration: u64, contributor: &str, gain: f64) -> ReceivedReport {
        let report = SiteReport {
            reference_iteration: iteration - 1,
            results: vec![result(0.5, 0.5 + gain, Some(0.01))],
        };
        ReceivedReport {
            digest: report.digest(iteration, contributor, "n"),
            contributor: Some(contributor.into()),
            nonce: Some("n".into()),
            received_at: 0,
            report,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fixtures::result, *};

    fn received(contributor: &str, gain: f64) -> ReceivedReport {
        super::fixtures::received(1, contributor, gain)
    }

    #[test]
    fn hostile_fields_are_refused() {
        let ok = SiteReport {
            reference_iteration: 0,
            results: vec![result(0.7, 0.72, Some(0.03))],
        };
        assert_eq!(ok.validate(), Ok(()));
        assert!((ok.lower_bound() - (0.02 - 0.03)).abs() < 1e-12);
        let bad = |edit: fn(&mut SiteResult)| {
            let mut r = ok.clone();
            edit(&mut r.results[0]);
            r.validate().unwrap_err()
        };
        assert!(bad(|r| r.candidate_score = f64::NAN).contains("candidate_score"));
        assert!(bad(|r| r.reference_score = 1.5).contains("reference_score"));
        assert!(bad(|r| r.gain = 0.5).contains("gain"));
        assert!(bad(|r| r.interval = Some(-0.1)).contains("interval"));
        assert!(bad(|r| r.interval = Some(f64::INFINITY)).contains("interval"));
        assert!(bad(|r| r.seeds = 0).contains("seeds"));
        assert!(bad(|r| r.interval = None).contains("interval is required"));
        assert!(bad(|r| r.dev_examples = MAX_COUNT + 1).contains("dev_examples"));
        assert!(bad(|r| r.metric = "f1".into()).contains("metric"));
        assert!(bad(|r| r.reference_score = -0.5).contains("reference_score"));
        let mut pearson = ok.clone();
        pearson.results[0].metric = "pearson".into();
        pearson.results[0].reference_score = -0.5;
        pearson.results[0].gain = 0.72 + 0.5;
        assert_eq!(pearson.validate(), Ok(()));
        let mut many = ok.clone();
        many.results = vec![ok.results[0].clone(); MAX_RESULTS + 1];
        assert!(many.validate().is_err());
        many.results.clear();
        assert!(many.validate().is_err());
    }

    #[test]
    fn the_median_rule_is_not_moved_by_one_site_and_any_is() {
        let median = SiteGate {
            min_reports: 3,
            deadline_secs: 60,
            rule: SiteRule::Median,
        };
        let reports = vec![
            received("a", 0.02),
            received("b", -0.9),
            received("c", 0.01),
        ];
        let m = median.statistic(&reports).unwrap();
        assert!(
            (m - 0.0).abs() < 1e-9,
            "the middle site (c: 0.01 − 0.01): {m}"
        );
        let any = SiteGate {
            rule: SiteRule::Any,
            ..median
        };
        assert!((any.statistic(&reports).unwrap() + 0.91).abs() < 1e-9);
        // Two of three: the missing one counts as −∞, so both present must pass (lower median).
        let m2 = median
            .statistic(&[reports[0].clone(), reports[2].clone()])
            .unwrap();
        assert!((m2 - 0.0).abs() < 1e-9, "{m2}");
        let m1 = median.statistic(&reports[..1]).unwrap();
        assert_eq!(m1, f64::NEG_INFINITY, "one report of three passes nothing");
        // Four reports: the lower median, so two of four cannot pass a candidate.
        let four = SiteGate {
            min_reports: 4,
            ..median
        };
        let mut r4 = reports;
        r4.push(received("d", -0.5));
        let m4 = four.statistic(&r4).unwrap();
        assert!((m4 + 0.51).abs() < 1e-9, "{m4}");
        assert_eq!(median.statistic(&[]), None);
        assert!(SiteGate {
            min_reports: 0,
            ..median
        }
        .validate()
        .is_err());
    }

    /// A site computes the digest from the floats it sent, the coordinator from those it parsed: they
    /// must be the same numbers (serde_json's `float_roundtrip`; without it this value comes back one
    /// unit in the last place off, and an honest report looked tampered with).
    #[test]
    fn scores_survive_the_wire_bit_for_bit() {
        let mut r = received("a", 0.0).report;
        r.results[0].candidate_score = 0.09090909090909091;
        r.results[0].reference_score = 0.1;
        r.results[0].gain = 0.09090909090909091 - 0.1;
        let back: SiteReport = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.digest(1, "a", "n"), r.digest(1, "a", "n"));
    }

    #[test]
    fn the_digest_names_iteration_contributor_and_content() {
        let r = received("a", 0.0).report;
        let d = r.digest(1, "a", "n");
        assert_eq!(d.len(), 64);
        assert_ne!(d, r.digest(2, "a", "n"));
        assert_ne!(d, r.digest(1, "b", "n"));
        assert_ne!(d, r.digest(1, "a", "m"), "the nonce hides who reported");
        let mut other = r;
        other.results[0].seeds = 6;
        assert_ne!(d, other.digest(1, "a", "n"));
    }
}
