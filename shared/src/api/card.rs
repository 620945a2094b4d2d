//! The model card (`README.md`, Hugging Face format: YAML front matter, then text) published with every
//! base: where it comes from, what was fused into it and how, and its lineage hashes. It names no data:
//! only contribution counts, example counts and hashes, which the lineage already shows to readers.

use std::fmt::Write;

use super::IterationRecord;

/// File name of the card inside a base directory.
pub const MODEL_CARD: &str = "README.md";

/// What the card says beyond the lineage record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardOrigin {
    /// The original model (iteration 0), e.g. its directory or hub name.
    pub base_model: String,
    /// Its licence identifier (inherited by every fused base), if known.
    pub license: Option<String>,
}

impl CardOrigin {
    /// Reads `base_model` (else `fallback`) and `license` from a card's front matter, such as the
    /// original model's README or a parent base's card.
    pub fn from_card(card: Option<&str>, fallback: &str) -> Self {
        let card = card.unwrap_or("");
        Self {
            base_model: front_matter(card, "base_model").unwrap_or_else(|| fallback.to_string()),
            license: front_matter(card, "license"),
        }
    }
}

/// The scalar value of `key` in the YAML front matter of `card` (`---` lines around `key: value`).
pub fn front_matter(card: &str, key: &str) -> Option<String> {
    let mut lines = card.lines();
    if lines.next()?.trim() != "---" {
        return None;
    }
    lines
        .take_while(|l| l.trim() != "---")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().trim_matches(['"', '\'']).to_string())
        .filter(|v| !v.is_empty())
}

/// The card of the base `record` describes.
pub fn model_card(record: &IterationRecord, architecture: &str, origin: &CardOrigin) -> String {
    let mut s = String::from("---\n");
    // YAML strings are quoted so that no name can break the front matter.
    let quote = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    if let Some(license) = &origin.license {
        let _ = writeln!(s, "license: {}", quote(license));
    }
    let _ = writeln!(s, "base_model: {}", quote(&origin.base_model));
    s.push_str("library_name: transformers\ntags:\n- coldfuse\n- cold-fusion\n");
    let _ = writeln!(s, "- {architecture}");
    s.push_str("---\n\n");
    let _ = writeln!(
        s,
        "# {} — coldfuse base, iteration {}\n",
        origin.base_model, record.iteration
    );
    if record.parent.is_none() {
        let _ = writeln!(
            s,
            "The original model of this coldfuse deployment (ColD Fusion, collaborative descent), body \
             only. Later iterations fuse contributors' fine-tuning diffs into it.\n"
        );
    } else {
        let examples: u64 = record.contributions.iter().map(|c| c.num_examples).sum();
        let _ = writeln!(
            s,
            "A {architecture} encoder improved by ColD Fusion (collaborative descent): iteration {} fuses \
             {} contributions (fine-tuned on {examples} private labelled examples in all, which never left \
             their sites) into iteration {}. Attach a fresh task head and fine-tune it as you would the \
             original model.\n",
            record.iteration,
            record.contributions.len(),
            record.parent.unwrap_or_default()
        );
    }
    s.push_str("## Lineage\n\n| | |\n|---|---|\n");
    let _ = writeln!(s, "| iteration | {} |", record.iteration);
    let _ = writeln!(s, "| weights sha256 | `{}` |", record.base_sha256);
    if let (Some(p), Some(sha)) = (record.parent, &record.parent_sha256) {
        let _ = writeln!(s, "| parent | iteration {p}, `{sha}` |");
    }
    if let Some(f) = &record.fusion {
        let _ = writeln!(
            s,
            "| fusion | `{}` |",
            serde_json::to_string(f).unwrap_or_default()
        );
    }
    if let Some(o) = &record.server_optimizer {
        let _ = writeln!(
            s,
            "| server optimiser | `{}` |",
            serde_json::to_string(o).unwrap_or_default()
        );
    }
    if let Some(n) = record.update_l2_norm {
        let _ = writeln!(s, "| update L2 norm | {n:.4} |");
    }
    let _ = writeln!(s, "| made by | {} |", record.created_by);
    if !record.contributions.is_empty() {
        s.push_str("\n## Contributions\n\n| diff sha256 | examples | weight |\n|---|---|---|\n");
        for c in &record.contributions {
            let _ = writeln!(
                s,
                "| `{}` | {} | {:.4} |",
                c.diff_sha256, c.num_examples, c.weight
            );
        }
    }
    s.push_str(
        "\n## Checking it\n\n`coldfuse verify ITERATION` re-fuses this base from the inputs above and \
         confirms it bit for bit.\n",
    );
    s.push_str("\n## Licence\n\n");
    match &origin.license {
        Some(l) => {
            let _ = writeln!(s, "Inherited from {}: `{l}`.", origin.base_model);
        }
        None => {
            let _ = writeln!(
                s,
                "The original model's card gives no licence; check {} before use.",
                origin.base_model
            );
        }
    }
    s
}

/// `card` with a "Promotion gate" section (the evals and the decision) before "Checking it"; an
/// earlier gate section is replaced.
pub fn with_gate(card: &str, promotion: &super::Promotion) -> String {
    const HEADING: &str = "\n## Promotion gate\n";
    const NEXT: &str = "\n## Checking it\n";
    let mut section = String::from(HEADING);
    let _ = writeln!(
        section,
        "\nBefore this base became `latest`, the promotion gate compared it with the previous base \
         ({:?}; {}).\n",
        promotion.state,
        promotion.reason.as_deref().unwrap_or("no reason recorded")
    );
    if !promotion.evals.is_empty() {
        section.push_str(
            "Held-out tasks the operator chose:\n\n\
             | task | method | metric | previous base | this base | gain | seeds × examples |\n\
             |---|---|---|---|---|---|---|\n",
        );
    }
    for e in &promotion.evals {
        let _ = writeln!(
            section,
            "| {} | {:?} | {} | {:.4} (iteration {}) | {:.4} | {:+.4} | {} × {} |",
            e.task,
            e.method,
            e.metric,
            e.reference_score,
            e.reference_iteration,
            e.candidate_score,
            e.gain(),
            e.seeds,
            e.examples
        );
    }
    if !promotion.site_reports.is_empty() {
        let _ = write!(
            section,
            "\nContributor sites, each on its own data (aggregates only; a report is named by its \
             digest, which the reporting site can recompute):\n\n\
             | report | method | previous base | this base | gain ± 95% | seeds | train / dev examples |\n\
             |---|---|---|---|---|---|---|\n"
        );
    }
    for r in &promotion.site_reports {
        for x in &r.report.results {
            let _ = writeln!(
                section,
                "| {} | {:?} | {:.4} (iteration {}) | {:.4} | {:+.4} ± {} | {} | {} / {} |",
                &r.digest[..r.digest.len().min(12)],
                x.method,
                x.reference_score,
                r.report.reference_iteration,
                x.candidate_score,
                x.gain,
                x.interval.map_or("-".into(), |h| format!("{h:.4}")),
                x.seeds,
                x.train_examples,
                x.dev_examples
            );
        }
    }
    let body = match (card.find(HEADING), card.find(NEXT)) {
        (Some(start), Some(end)) if start < end => format!("{}{}", &card[..start], &card[end..]),
        _ => card.to_string(),
    };
    match body.find(NEXT) {
        Some(at) => format!("{}{section}{}", &body[..at], &body[at..]),
        None => format!("{body}{section}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LineageContribution;

    fn record() -> IterationRecord {
        IterationRecord {
            iteration: 2,
            parent: Some(1),
            parent_sha256: Some("a".repeat(64)),
            base_sha256: "b".repeat(64),
            fusion: None,
            contributions: vec![LineageContribution {
                contributor: "hospital-7".into(),
                diff_sha256: "c".repeat(64),
                num_examples: 48,
                weight: 1.0,
                clip_factor: 1.0,
                staleness: 0,
                metrics: Default::default(),
            }],
            update_l2_norm: Some(0.5),
            server_optimizer: None,
            optimizer_state_sha256: None,
            fold_order: None,
            origin: None,
            created_by: "coldfuse test".into(),
            created_at: 0,
        }
    }

    #[test]
    fn card_inherits_licence_and_base_model_and_names_no_contributor() {
        let original = "---\nlanguage: en\nlicense: apache-2.0\ntags:\n- x\n---\n# MiniLM\n";
        let origin = CardOrigin::from_card(Some(original), "all-MiniLM-L6-v2");
        assert_eq!(origin.license.as_deref(), Some("apache-2.0"));
        assert_eq!(origin.base_model, "all-MiniLM-L6-v2");
        let card = model_card(&record(), "bert", &origin);
        assert!(
            card.starts_with("---\nlicense: \"apache-2.0\"\nbase_model: \"all-MiniLM-L6-v2\"\n")
        );
        assert!(card.contains(&"c".repeat(64)) && card.contains(&"a".repeat(64)));
        assert!(
            !card.contains("hospital-7"),
            "contributor ids stay out of the card"
        );
        // A fused base's card passes the same origin on to the next iteration.
        assert_eq!(CardOrigin::from_card(Some(&card), "other"), origin);
    }

    #[test]
    fn front_matter_needs_the_block_at_the_top() {
        assert_eq!(front_matter("license: mit\n", "license"), None);
        assert_eq!(
            front_matter("---\nlicense: 'mit'\n---\n", "license").as_deref(),
            Some("mit")
        );
        assert_eq!(front_matter("---\n---\nlicense: mit\n", "license"), None);
        assert_eq!(CardOrigin::from_card(None, "m").license, None);
    }

    #[test]
    fn card_gate_section_lists_the_evals_and_is_replaced_not_repeated() {
        use crate::api::{EvalMethod, GateEval, Promotion, PromotionState};
        let origin = CardOrigin::from_card(None, "m");
        let card = model_card(&record(), "bert", &origin);
        let mut p = Promotion::pending(2, 0);
        p.evals.push(GateEval {
            task: "polarity".into(),
            method: EvalMethod::LinearProbe,
            metric: "accuracy".into(),
            reference_iteration: 1,
            reference_score: 0.6,
            candidate_score: 0.625,
            seeds: 3,
            examples: 100,
            reported_by: "t".into(),
        });
        p.state = PromotionState::Promoted;
        p.reason = Some("no eval regressed".into());
        let gated = with_gate(&card, &p);
        let gate_at = gated.find("## Promotion gate").unwrap();
        assert!(gate_at < gated.find("## Checking it").unwrap());
        assert!(gated.contains("| polarity | LinearProbe | accuracy | 0.6000 (iteration 1) | 0.6250 | +0.0250 | 3 × 100 |"), "{gated}");
        assert!(gated.contains("Promoted; no eval regressed"));
        p.site_reports
            .push(crate::api::site_report::fixtures::received(
                2,
                "hospital-7",
                0.05,
            ));
        let gated = with_gate(&card, &p);
        let row = format!(
            "| {} | LinearProbe | 0.5000 (iteration 1) | 0.5500 | +0.0500 ± 0.0100 | 5 | 64 / 200 |",
            &p.site_reports[0].digest[..12]
        );
        assert!(gated.contains(&row), "{gated}");
        assert!(
            !gated[gate_at..].contains("hospital-7"),
            "the card names no reporting site: {gated}"
        );
        let again = with_gate(&gated, &p);
        assert_eq!(again, gated, "a second gate section replaces the first");
    }
}
