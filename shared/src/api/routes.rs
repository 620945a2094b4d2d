//! The coordinator's HTTP routes, for the clients that call them: one template per route (as the
//! coordinator's OpenAPI document spells it, which its tests check against [`ALL`]) and one function
//! per parameterised route that fills it in.

use std::fmt::Display;

/// `GET`: the open round.
pub const ROUND: &str = "/v1/round";
/// `GET`: who the token is.
pub const WHOAMI: &str = "/v1/whoami";
/// `GET`: the coordinator's receipt key.
pub const SIGNING_KEY: &str = "/v1/signing-key";
/// `GET`: the latest base's manifest.
pub const BASE_LATEST: &str = "/v1/bases/latest";
/// `GET`: a base's manifest.
pub const BASE: &str = "/v1/bases/{iteration}";
/// `GET`: one file of a base (ranges allowed).
pub const BASE_FILE: &str = "/v1/bases/{iteration}/files/{name}";
/// `GET`: every committed iteration.
pub const LINEAGE: &str = "/v1/lineage";
/// `GET`: one committed iteration.
pub const LINEAGE_ENTRY: &str = "/v1/lineage/{iteration}";
/// `GET`: the manifest of a diff fused into an iteration.
pub const FUSED_MANIFEST: &str = "/v1/lineage/{iteration}/contributions/{contributor}/manifest";
/// `GET`: a diff fused into an iteration.
pub const FUSED_DIFF: &str = "/v1/lineage/{iteration}/contributions/{contributor}/diff";
/// `GET`: the signed receipt that a diff was fused.
pub const FUSED_RECEIPT: &str = "/v1/lineage/{iteration}/contributions/{contributor}/receipt";
/// `GET`: the server optimiser's state after an iteration.
pub const OPTIMIZER_STATE: &str = "/v1/lineage/{iteration}/optimizer-state";
/// `POST`: announce a contribution by its manifest.
pub const CONTRIBUTIONS: &str = "/v1/contributions";
/// `GET`: a contributor's contribution to the open round.
pub const CONTRIBUTION: &str = "/v1/contributions/{contributor}";
/// `PUT`: a chunk of a contributor's diff.
pub const CONTRIBUTION_DIFF: &str = "/v1/contributions/{contributor}/diff";
/// `GET`: the promotion gate's settings and candidate.
pub const GATE: &str = "/v1/gate";
/// `GET`: the gate's record of a fused iteration.
pub const GATE_RECORD: &str = "/v1/gate/{iteration}";
/// `POST` (contributor): a site's report on a candidate.
pub const GATE_REPORTS: &str = "/v1/gate/{iteration}/reports";
/// `POST` (admin): report an eval of a candidate.
pub const GATE_EVALS: &str = "/v1/admin/gate/{iteration}/evals";
/// `POST` (admin): make a candidate latest.
pub const GATE_PROMOTE: &str = "/v1/admin/gate/{iteration}/promote";
/// `POST` (admin): never make a candidate latest.
pub const GATE_DISCARD: &str = "/v1/admin/gate/{iteration}/discard";
/// `POST` (admin): create a token.
pub const ADMIN_TOKENS: &str = "/v1/admin/tokens";
/// `POST` (admin): fuse the open round now.
pub const ADMIN_FUSE: &str = "/v1/admin/fuse";

/// Every template above.
pub const ALL: &[&str] = &[
    ROUND,
    WHOAMI,
    SIGNING_KEY,
    BASE_LATEST,
    BASE,
    BASE_FILE,
    LINEAGE,
    LINEAGE_ENTRY,
    FUSED_MANIFEST,
    FUSED_DIFF,
    FUSED_RECEIPT,
    OPTIMIZER_STATE,
    CONTRIBUTIONS,
    CONTRIBUTION,
    CONTRIBUTION_DIFF,
    GATE,
    GATE_RECORD,
    GATE_REPORTS,
    GATE_EVALS,
    GATE_PROMOTE,
    GATE_DISCARD,
    ADMIN_TOKENS,
    ADMIN_FUSE,
];

/// `template` with its `{...}` parameters replaced by `values`, in order.
pub fn fill(template: &str, values: &[&dyn Display]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut values = values.iter();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = open
            + rest[open..]
                .find('}')
                .expect("templates close their braces");
        let value = values.next().expect("a value for every parameter");
        out.push_str(&rest[..open]);
        out.push_str(&value.to_string());
        rest = &rest[close + 1..];
    }
    debug_assert!(values.next().is_none(), "more values than parameters");
    out.push_str(rest);
    out
}

/// [`BASE`] of `iteration`.
pub fn base(iteration: u64) -> String {
    fill(BASE, &[&iteration])
}

/// [`BASE_FILE`]: file `name` of base `iteration`.
pub fn base_file(iteration: u64, name: &str) -> String {
    fill(BASE_FILE, &[&iteration, &name])
}

/// [`LINEAGE_ENTRY`] of `iteration`.
pub fn lineage_entry(iteration: u64) -> String {
    fill(LINEAGE_ENTRY, &[&iteration])
}

/// [`FUSED_MANIFEST`] of `contributor`'s diff in `iteration`.
pub fn fused_manifest(iteration: u64, contributor: &str) -> String {
    fill(FUSED_MANIFEST, &[&iteration, &contributor])
}

/// [`FUSED_DIFF`] of `contributor` in `iteration`.
pub fn fused_diff(iteration: u64, contributor: &str) -> String {
    fill(FUSED_DIFF, &[&iteration, &contributor])
}

/// [`FUSED_RECEIPT`] of `contributor` in `iteration`.
pub fn fused_receipt(iteration: u64, contributor: &str) -> String {
    fill(FUSED_RECEIPT, &[&iteration, &contributor])
}

/// [`OPTIMIZER_STATE`] after `iteration`.
pub fn optimizer_state(iteration: u64) -> String {
    fill(OPTIMIZER_STATE, &[&iteration])
}

/// [`CONTRIBUTION`] of `contributor`.
pub fn contribution(contributor: &str) -> String {
    fill(CONTRIBUTION, &[&contributor])
}

/// [`CONTRIBUTION_DIFF`] of `contributor`.
pub fn contribution_diff(contributor: &str) -> String {
    fill(CONTRIBUTION_DIFF, &[&contributor])
}

/// [`GATE_RECORD`] of `iteration`.
pub fn gate_record(iteration: u64) -> String {
    fill(GATE_RECORD, &[&iteration])
}

/// [`GATE_REPORTS`] of candidate `iteration`.
pub fn gate_reports(iteration: u64) -> String {
    fill(GATE_REPORTS, &[&iteration])
}

/// [`GATE_EVALS`] of candidate `iteration`.
pub fn gate_evals(iteration: u64) -> String {
    fill(GATE_EVALS, &[&iteration])
}

/// [`GATE_PROMOTE`] or, unless `promote`, [`GATE_DISCARD`] of candidate `iteration`.
pub fn gate_decision(iteration: u64, promote: bool) -> String {
    fill(
        if promote { GATE_PROMOTE } else { GATE_DISCARD },
        &[&iteration],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_parameters_in_order() {
        assert_eq!(base_file(3, "config.json"), "/v1/bases/3/files/config.json");
        assert_eq!(
            fused_receipt(12, "site-a"),
            "/v1/lineage/12/contributions/site-a/receipt"
        );
        assert_eq!(gate_decision(4, false), "/v1/admin/gate/4/discard");
        assert_eq!(fill(ROUND, &[]), ROUND);
    }
}
