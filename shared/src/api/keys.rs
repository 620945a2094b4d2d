//! The object-store key layout of a deployment, in one place (paths are relative to the store URL).
//!
//! ```text
//! deployment.json                                  DeploymentConfig (strategy, quorum, auth policy)
//! tokens/{sha256 of token}.json                    TokenRecord (tokens are never stored in clear)
//! bases/{iteration:06}/{file}                      a base's files (config.json, model.safetensors, tokenizer…)
//! bases/{iteration:06}/manifest.json               BaseManifest: sha256 + size of every file
//! iterations/{iteration:06}.json                   IterationRecord: lineage; created create-only = the commit
//! optimizer/{iteration:06}.safetensors           server-optimiser state after that iteration (if any)
//! latest.json                                      LatestPointer (switched after a commit, or by rollback)
//! rounds/{iteration:06}/{contributor}/manifest.json   DiffManifest of the contribution to that iteration
//! rounds/{iteration:06}/{contributor}/diff.safetensors the accepted diff
//! rounds/{iteration:06}/{contributor}/verdict.json    Verdict (accepted / rejected with reason)
//! rounds/{iteration:06}/{contributor}/quarantine.json Quarantine: an accepted diff taken out before fusion
//! gate/{iteration:06}.json                         Promotion: a gated candidate's evals and decision
//! signing/public.json                              SigningPublicKey: the receipt key's public half
//! signing/secret.json                              SigningSecretKey (absent when the operator keeps it in a file)
//! ```
//! A round collects diffs for iteration N (against the `latest` base); fusing it commits iteration N.

/// Deployment settings.
pub const DEPLOYMENT: &str = "deployment.json";
/// The `latest` pointer.
pub const LATEST: &str = "latest.json";
/// Prefix of lineage records.
pub const ITERATIONS: &str = "iterations";
/// Prefix of token records.
pub const TOKENS: &str = "tokens";
/// The receipt key's public half.
pub const SIGNING_PUBLIC: &str = "signing/public.json";
/// The receipt key's secret half, when the deployment keeps it in its store.
pub const SIGNING_SECRET: &str = "signing/secret.json";
/// File name of a base's manifest inside its prefix.
pub const BASE_MANIFEST: &str = "manifest.json";

/// `bases/{iteration:06}`.
pub fn base_prefix(iteration: u64) -> String {
    format!("bases/{iteration:06}")
}

/// `bases/{iteration:06}/{file}`.
pub fn base_file(iteration: u64, file: &str) -> String {
    format!("{}/{file}", base_prefix(iteration))
}

/// `iterations/{iteration:06}.json`.
pub fn iteration_record(iteration: u64) -> String {
    format!("{ITERATIONS}/{iteration:06}.json")
}

/// Parses the iteration number out of an `iterations/` key.
pub fn parse_iteration_record(key: &str) -> Option<u64> {
    key.strip_prefix(ITERATIONS)?
        .strip_prefix('/')?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// `rounds/{iteration:06}`.
pub fn round_prefix(iteration: u64) -> String {
    format!("rounds/{iteration:06}")
}

/// `rounds/{iteration:06}/{contributor}/{file}`.
pub fn contribution_file(iteration: u64, contributor: &str, file: &str) -> String {
    format!("{}/{contributor}/{file}", round_prefix(iteration))
}

/// File name of a contribution's verdict inside its round prefix.
pub const VERDICT: &str = "verdict.json";
/// File name of an unfinished upload's checkpoint inside its round prefix (the coordinator's own).
pub const UPLOAD: &str = "upload.json";
/// File name of a contribution's quarantine record inside its round prefix.
pub const QUARANTINE: &str = "quarantine.json";

/// `optimizer/{iteration:06}.safetensors`: server-optimiser state after `iteration`.
pub fn optimizer_state(iteration: u64) -> String {
    format!("optimizer/{iteration:06}.safetensors")
}

/// `gate/{iteration:06}.json`: the promotion gate's record of a fused iteration.
pub fn gate_record(iteration: u64) -> String {
    format!("gate/{iteration:06}.json")
}

/// `tokens/{hash}.json`.
pub fn token(hash: &str) -> String {
    format!("{TOKENS}/{hash}.json")
}

/// Whether `id` is a safe contributor id (it becomes part of store keys and URLs).
pub fn valid_contributor_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !id.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_ids_are_checked() {
        assert_eq!(iteration_record(7), "iterations/000007.json");
        assert_eq!(parse_iteration_record("iterations/000007.json"), Some(7));
        assert_eq!(parse_iteration_record("iterations/x.json"), None);
        assert_eq!(base_file(3, "config.json"), "bases/000003/config.json");
        assert_eq!(
            contribution_file(2, "site-a", "verdict.json"),
            "rounds/000002/site-a/verdict.json"
        );
        assert!(valid_contributor_id("site-a_1.b"));
        for bad in ["", "../x", "a/b", ".hidden", "sp ace", &"x".repeat(65)] {
            assert!(!valid_contributor_id(bad), "{bad}");
        }
    }
}
