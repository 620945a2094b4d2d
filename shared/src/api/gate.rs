//! The promotion gate: a fused candidate becomes `latest` only after the operator's evaluator (public
//! held-out tasks) and, where the deployment asks for them, contributor sites (their own data, see
//! `site_report`) have scored it against the current latest and it did not regress beyond a
//! tolerance. A regressing candidate is held for the operator (promote or discard by hand); the
//! record says why and names the reports it used.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ReceivedReport, SiteGate};

/// A deployment's gate settings (`DeploymentConfig::gate`; absent: every fusion is promoted at once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Largest accepted drop of any eval's score below the reference (e.g. 0.02 = 2 points of accuracy).
    pub tolerance: f64,
    /// Operator evals needed before deciding (0 allowed when `sites` is set).
    #[serde(default = "one")]
    pub min_evals: usize,
    /// Site evaluation: how many contributor sites' reports the gate waits for, until when, and how
    /// they combine (None: the operator's evals alone decide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites: Option<SiteGate>,
}

fn one() -> usize {
    1
}

impl GateConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return Err(format!(
                "gate tolerance must be finite and ≥ 0, not {}",
                self.tolerance
            ));
        }
        match &self.sites {
            None if self.min_evals == 0 => {
                Err("gate min_evals must be at least 1 (or set gate.sites)".into())
            }
            None => Ok(()),
            Some(sites) => sites.validate(),
        }
    }
}

/// How an eval scored the bases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvalMethod {
    /// Frozen body, trained head.
    LinearProbe,
    /// Whole model fine-tuned on a few examples.
    FewShot,
}

/// One evaluator's result on one task: the candidate against the current latest (the reference).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GateEval {
    /// Held-out task name (public data the operator chose).
    pub task: String,
    /// Linear probe or few-shot.
    pub method: EvalMethod,
    /// Metric name (e.g. `accuracy`); higher is better.
    pub metric: String,
    /// The iteration the candidate is compared with (the latest when it was evaluated).
    pub reference_iteration: u64,
    /// The reference's mean score over seeds.
    pub reference_score: f64,
    /// The candidate's mean score over the same seeds.
    pub candidate_score: f64,
    /// Seeds averaged.
    pub seeds: usize,
    /// Training examples per seed.
    pub examples: usize,
    /// Who reported it (token id; set by the coordinator).
    #[serde(default)]
    pub reported_by: String,
}

impl GateEval {
    /// Candidate minus reference.
    pub fn gain(&self) -> f64 {
        self.candidate_score - self.reference_score
    }
}

/// Where a gated candidate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromotionState {
    /// Waiting for evals.
    Pending,
    /// Regressed beyond the tolerance: waits for the operator; `latest` keeps the previous base.
    Held,
    /// Became `latest`.
    Promoted,
    /// Will never become `latest`.
    Discarded,
}

impl PromotionState {
    /// Whether the decision is final.
    pub fn decided(self) -> bool {
        matches!(self, Self::Promoted | Self::Discarded)
    }
}

/// The gate's record of one fused iteration (`gate/{iteration:06}.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    /// The candidate iteration.
    pub iteration: u64,
    /// Its state.
    pub state: PromotionState,
    /// Evals reported so far.
    pub evals: Vec<GateEval>,
    /// Site reports received so far (one per contributor).
    #[serde(default)]
    pub site_reports: Vec<ReceivedReport>,
    /// Digests of the site reports the last automatic verdict counted.
    #[serde(default)]
    pub used_reports: Vec<String>,
    /// Unix time of the fusion (the site reports' deadline counts from it).
    #[serde(default)]
    pub fused_at: u64,
    /// The coordinator's signed statement of the current decision (None while pending).
    #[serde(default)]
    pub receipt: Option<super::SignedGateReceipt>,
    /// Why it is in this state (the deciding eval, or the operator's words).
    pub reason: Option<String>,
    /// `gate` for an automatic decision, else the admin token id.
    pub decided_by: Option<String>,
    /// Unix time of the last change.
    pub updated_at: u64,
}

impl Promotion {
    /// A new candidate awaiting evals.
    pub fn pending(iteration: u64, now: u64) -> Self {
        Self {
            iteration,
            state: PromotionState::Pending,
            evals: Vec::new(),
            site_reports: Vec::new(),
            used_reports: Vec::new(),
            fused_at: now,
            receipt: None,
            reason: None,
            decided_by: None,
            updated_at: now,
        }
    }

    /// The record as a reader who is neither admin nor auditor sees it: site reports without the
    /// reporting contributor and the digest's nonce (except the reader's own report, `viewer`), and
    /// no admin token ids.
    pub fn redacted_for(mut self, viewer: Option<&str>) -> Self {
        for r in &mut self.site_reports {
            if viewer.is_none() || r.contributor.as_deref() != viewer {
                r.contributor = None;
                r.nonce = None;
            }
        }
        for e in &mut self.evals {
            e.reported_by = String::new();
        }
        if let Some(by) = &mut self.decided_by {
            if by.starts_with("admin:") {
                *by = "admin".into();
            }
        }
        self
    }

    /// [`Promotion::redacted_for`] an anonymous reader.
    pub fn redacted(self) -> Self {
        self.redacted_for(None)
    }

    /// When the gate stops waiting for site reports (None: it does not wait for any).
    pub fn site_deadline(&self, gate: &GateConfig) -> Option<u64> {
        gate.sites
            .as_ref()
            .map(|s| self.fused_at.saturating_add(s.deadline_secs))
    }

    /// What the evals and site reports say under `gate` at time `now`: None while fewer than
    /// `min_evals` evals arrived, or fewer than `sites.min_reports` reports before the deadline;
    /// else Held when the worst eval or the site rule's statistic fell more than `tolerance` below
    /// the reference (or the deadline passed without any site report), Promoted otherwise.
    pub fn judge(&self, gate: &GateConfig, now: u64) -> Option<(PromotionState, String)> {
        if self.evals.len() < gate.min_evals {
            return None;
        }
        let sites = match &gate.sites {
            Some(sites) => {
                let due = self.site_reports.len() >= sites.min_reports
                    || self.site_deadline(gate).is_some_and(|d| now >= d);
                if !due {
                    return None;
                }
                Some(sites)
            }
            None => None,
        };
        let mut held = Vec::new();
        let mut passed = Vec::new();
        if let Some((gain, what)) = self.worst_eval() {
            if gain >= -gate.tolerance {
                passed.push(format!("worst eval {what}"));
            } else {
                held.push(format!("eval {what}"));
            }
        }
        if let Some(sites) = sites {
            let (n, min) = (self.site_reports.len(), sites.min_reports);
            let short = if n < min {
                format!(", {n} of {min} by the deadline")
            } else {
                String::new()
            };
            match sites.statistic(&self.site_reports) {
                None => held.push("no site reported by the deadline".into()),
                Some(stat) => {
                    let what = format!(
                        "{} lower 95% bound of the gain over {n} site reports{short}: {stat:+.4}",
                        match sites.rule {
                            super::SiteRule::Median => "median",
                            super::SiteRule::Any => "lowest",
                        }
                    );
                    if stat >= -gate.tolerance {
                        passed.push(what);
                    } else {
                        held.push(what);
                    }
                }
            }
        }
        Some(if held.is_empty() {
            (
                PromotionState::Promoted,
                format!(
                    "nothing regressed beyond tolerance {}; {}",
                    gate.tolerance,
                    passed.join("; ")
                ),
            )
        } else {
            (
                PromotionState::Held,
                format!(
                    "regressed beyond tolerance {}: {}",
                    gate.tolerance,
                    held.join("; ")
                ),
            )
        })
    }

    /// The lowest gain among the evals (a non-finite score counts as −∞: nothing unmeasured gets
    /// promoted) and a description of that eval.
    fn worst_eval(&self) -> Option<(f64, String)> {
        let key = |e: &GateEval| {
            let g = e.gain();
            if g.is_finite() {
                g
            } else {
                f64::NEG_INFINITY
            }
        };
        let worst = self.evals.iter().min_by(|a, b| key(a).total_cmp(&key(b)))?;
        let what = format!(
            "{} {} {}: {:.4} vs {:.4} for iteration {} ({:+.4}; {} seeds × {} examples)",
            worst.task,
            match worst.method {
                EvalMethod::LinearProbe => "linear probe",
                EvalMethod::FewShot => "few-shot",
            },
            worst.metric,
            worst.candidate_score,
            worst.reference_score,
            worst.reference_iteration,
            worst.gain(),
            worst.seeds,
            worst.examples
        );
        Some((key(worst), what))
    }
}

/// The gate's settings and the candidate awaiting it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GateStatus {
    /// The deployment's gate (None: fused bases are promoted at once).
    pub gate: Option<GateConfig>,
    /// The undecided candidate, if any.
    pub candidate: Option<Promotion>,
    /// The iteration served as latest (what evals compare the candidate with).
    pub latest: u64,
}

/// The body of a manual decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Why (recorded in the gate record and the card).
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(task: &str, reference: f64, candidate: f64) -> GateEval {
        GateEval {
            task: task.into(),
            method: EvalMethod::LinearProbe,
            metric: "accuracy".into(),
            reference_iteration: 2,
            reference_score: reference,
            candidate_score: candidate,
            seeds: 3,
            examples: 100,
            reported_by: "t".into(),
        }
    }

    #[test]
    fn gate_judges_by_the_worst_eval_against_the_tolerance() {
        let gate = GateConfig {
            tolerance: 0.02,
            min_evals: 2,
            sites: None,
        };
        let mut p = Promotion::pending(3, 0);
        p.evals.push(eval("polarity", 0.60, 0.62));
        assert_eq!(p.judge(&gate, 0), None, "waits for min_evals");
        p.evals.push(eval("bbc-news", 0.80, 0.785));
        let (state, why) = p.judge(&gate, 0).unwrap();
        assert_eq!(state, PromotionState::Promoted, "{why}");
        assert!(why.contains("bbc-news") && why.contains("-0.0150"), "{why}");
        p.evals.push(eval("hedge", 0.70, 0.65));
        let (state, why) = p.judge(&gate, 0).unwrap();
        assert_eq!(state, PromotionState::Held);
        assert!(why.contains("hedge") && why.contains("-0.0500"), "{why}");
        p.evals = vec![eval("polarity", 0.6, f64::NAN), eval("x", 0.5, 0.5)];
        assert_eq!(p.judge(&gate, 0).unwrap().0, PromotionState::Held);
        assert!(GateConfig {
            tolerance: -1.0,
            min_evals: 1,
            sites: None,
        }
        .validate()
        .is_err());
    }

    fn site(contributor: &str, gain: f64) -> ReceivedReport {
        super::super::site_report::fixtures::received(3, contributor, gain)
    }

    #[test]
    fn site_reports_decide_by_the_rule_after_min_reports_or_the_deadline() {
        let gate = GateConfig {
            tolerance: 0.02,
            min_evals: 0,
            sites: Some(SiteGate {
                min_reports: 3,
                deadline_secs: 100,
                rule: super::super::SiteRule::Median,
            }),
        };
        assert_eq!(gate.validate(), Ok(()));
        let mut p = Promotion::pending(3, 1000);
        assert_eq!(p.judge(&gate, 1099), None, "waits for reports");
        let (state, why) = p.judge(&gate, 1100).unwrap();
        assert_eq!(state, PromotionState::Held, "nothing measured: {why}");
        assert!(why.contains("no site reported by the deadline"), "{why}");
        p.site_reports.push(site("a", -0.5));
        assert_eq!(p.judge(&gate, 1099), None);
        let (state, why) = p.judge(&gate, 1100).unwrap();
        assert_eq!(state, PromotionState::Held, "{why}");
        assert!(why.contains("1 of 3 by the deadline"), "{why}");
        p.site_reports.push(site("b", 0.03));
        p.site_reports.push(site("c", 0.02));
        let (state, why) = p.judge(&gate, 1050).unwrap();
        assert_eq!(
            state,
            PromotionState::Promoted,
            "one hostile site of three: {why}"
        );
        assert!(why.contains("median") && why.contains("+0.0100"), "{why}");
        let any = GateConfig {
            sites: gate.sites.clone().map(|s| SiteGate {
                rule: super::super::SiteRule::Any,
                ..s
            }),
            ..gate
        };
        assert_eq!(p.judge(&any, 1050).unwrap().0, PromotionState::Held);
        // With operator evals required too, both must pass.
        let both = GateConfig {
            min_evals: 1,
            ..gate
        };
        assert_eq!(p.judge(&both, 1050), None);
        p.evals.push(eval("polarity", 0.6, 0.5));
        let (state, why) = p.judge(&both, 1050).unwrap();
        assert_eq!(state, PromotionState::Held);
        assert!(why.contains("eval polarity"), "{why}");
        assert!(p
            .clone()
            .redacted()
            .site_reports
            .iter()
            .all(|r| r.contributor.is_none()));
    }
}
