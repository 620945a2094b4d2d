//! The one list of error codes both ends of the wire use: the coordinator answers them in
//! `{"error": {"code", "message"}}` and records rejection reasons with them; the CLI matches on them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Declares [`ErrorCode`] from one list of `Variant = "wire_name"` (so the names cannot drift).
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// A stable, machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[doc = $doc])* #[serde(rename = $name)] $variant,)*
            /// A code this build does not know (a newer coordinator, or an answer that was not JSON).
            #[serde(other, rename = "unknown")]
            Unknown,
        }

        impl ErrorCode {
            /// Every known code.
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant,)*];

            /// The code as it travels (`stale_base`, ...).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                    Self::Unknown => "unknown",
                }
            }
        }
    };
}

error_codes! {
    /// 401: no, unknown or revoked token.
    Unauthorized = "unauthorized",
    /// 403: the token may not do this.
    Forbidden = "forbidden",
    /// 404.
    NotFound = "not_found",
    /// 400: a malformed request.
    BadRequest = "bad_request",
    /// 400: a manifest field is invalid (or, as a rejection, the manifest disagrees with the base).
    BadManifest = "bad_manifest",
    /// 400: a contributor id outside `[A-Za-z0-9._-]{1,64}`.
    BadContributor = "bad_contributor",
    /// 400: a manifest format this coordinator does not read.
    UnsupportedVersion = "unsupported_version",
    /// 400/416: a `Content-Range` or `Range` header that cannot be served.
    BadRange = "bad_range",
    /// 400: an invalid deployment config.
    BadConfig = "bad_config",
    /// 400: an invalid gate eval.
    BadEval = "bad_eval",
    /// 409: the diff is not against a base contributions are taken for.
    StaleBase = "stale_base",
    /// 409: the contributor already has an accepted contribution this round.
    Duplicate = "duplicate",
    /// 409: a fusion is running; train again on the base it publishes.
    RoundFusing = "round_fusing",
    /// 409: an upload or announce of this contributor is running; retry shortly.
    UploadInProgress = "upload_in_progress",
    /// 409: a chunk that does not continue the bytes held; resume at the offset given.
    UploadOffset = "upload_offset",
    /// 409: the contribution already has a verdict.
    AlreadyUploaded = "already_uploaded",
    /// 409: the contribution changed during the upload.
    Superseded = "superseded",
    /// 409: the contribution was quarantined this round.
    Quarantined = "quarantined",
    /// 409: a fused candidate awaits the promotion gate.
    CandidatePending = "candidate_pending",
    /// 409: the round has nothing to fuse.
    NothingToFuse = "nothing_to_fuse",
    /// 409: the iteration is undecided or discarded at the gate.
    Gated = "gated",
    /// 409: the iteration is not the gate's candidate.
    NotCandidate = "not_candidate",
    /// 409: a gate eval names another reference than `latest`.
    WrongReference = "wrong_reference",
    /// 400: an invalid site report.
    BadReport = "bad_report",
    /// 409: this contributor already reported on the candidate.
    AlreadyReported = "already_reported",
    /// 409: the deployment's gate takes no site reports.
    NoSiteEvaluation = "no_site_evaluation",
    /// 413: larger than this deployment accepts.
    TooLarge = "too_large",
    /// 400: the upload's connection broke (resume it).
    UploadInterrupted = "upload_interrupted",
    /// 422: the diff file's size or hash is not the manifest's.
    Integrity = "integrity",
    /// 422: the diff file is not well-formed safetensors (or its header is too large).
    MalformedFile = "malformed_file",
    /// 422: the diff is for another base.
    WrongBase = "wrong_base",
    /// 422: the diff is for another architecture.
    WrongArchitecture = "wrong_architecture",
    /// 422: a diff tensor that is not in the base.
    UnknownTensor = "unknown_tensor",
    /// 422: a task-head tensor in the diff.
    HeadTensor = "head_tensor",
    /// 422: a diff of a tensor that is not a float weight.
    NotFloat = "not_float",
    /// 422: a diff tensor's shape differs from the base's.
    ShapeMismatch = "shape_mismatch",
    /// 422: the file and the manifest list different parts.
    Layout = "layout",
    /// 422: a NaN or infinite value.
    NonFinite = "non_finite",
    /// 422: top-k indices out of order or out of range.
    BadIndex = "bad_index",
    /// 422: a diff without tensors.
    Empty = "empty",
    /// 422: the diff's L2 norm exceeds the deployment's bound.
    NormBound = "norm_bound",
    /// A local read failed (never a contributor's fault; answered as 500).
    Io = "io",
    /// 500: the coordinator failed; retry later.
    Internal = "internal",
    /// 503: the coordinator did not answer in time; retry later.
    Timeout = "timeout",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_travel_as_their_names_and_unknown_ones_do_not_fail() {
        for &code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        let later: ErrorCode = serde_json::from_str("\"a_code_from_the_future\"").unwrap();
        assert_eq!(later, ErrorCode::Unknown);
    }
}
