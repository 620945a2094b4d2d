//! The promotion gate: a fused candidate becomes `latest` only after an evaluator has scored it against
//! the current latest on held-out tasks and it did not regress beyond a tolerance. A regressing
//! candidate is held for the operator (promote or discard by hand); the record says why.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A deployment's gate settings (`DeploymentConfig::gate`; absent: every fusion is promoted at once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Largest accepted drop of any eval's score below the reference (e.g. 0.02 = 2 points of accuracy).
    pub tolerance: f64,
    /// Evals needed before deciding.
    #[serde(default = "one")]
    pub min_evals: usize,
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
        if self.min_evals == 0 {
            return Err("gate min_evals must be at least 1".into());
        }
        Ok(())
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
            reason: None,
            decided_by: None,
            updated_at: now,
        }
    }

    /// What the evals say under `gate`: None while fewer than `min_evals` arrived, else Promoted
    /// when no eval fell more than `tolerance` below its reference, Held otherwise, with the reason.
    pub fn judge(&self, gate: &GateConfig) -> Option<(PromotionState, String)> {
        if self.evals.len() < gate.min_evals {
            return None;
        }
        // A non-finite score counts as the worst regression: nothing unmeasured gets promoted.
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
        if key(worst) >= -gate.tolerance {
            Some((
                PromotionState::Promoted,
                format!(
                    "no eval regressed beyond tolerance {}; worst {what}",
                    gate.tolerance
                ),
            ))
        } else {
            Some((
                PromotionState::Held,
                format!("regressed beyond tolerance {}: {what}", gate.tolerance),
            ))
        }
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
        };
        let mut p = Promotion::pending(3, 0);
        p.evals.push(eval("polarity", 0.60, 0.62));
        assert_eq!(p.judge(&gate), None, "waits for min_evals");
        p.evals.push(eval("bbc-news", 0.80, 0.785));
        let (state, why) = p.judge(&gate).unwrap();
        assert_eq!(state, PromotionState::Promoted, "{why}");
        assert!(why.contains("bbc-news") && why.contains("-0.0150"), "{why}");
        p.evals.push(eval("hedge", 0.70, 0.65));
        let (state, why) = p.judge(&gate).unwrap();
        assert_eq!(state, PromotionState::Held);
        assert!(why.contains("hedge") && why.contains("-0.0500"), "{why}");
        p.evals = vec![eval("polarity", 0.6, f64::NAN), eval("x", 0.5, 0.5)];
        assert_eq!(p.judge(&gate).unwrap().0, PromotionState::Held);
        assert!(GateConfig {
            tolerance: -1.0,
            min_evals: 1
        }
        .validate()
        .is_err());
    }
}
