//! Taking an accepted (or still pending) contribution out of its round before fusion: by an admin, when
//! its token is revoked, or when fusing it failed. The record is written to the store next to the
//! verdict before the state changes, and the contribution is never fused; the rest of the round goes on.

use coldfuse_shared::api::{keys, now_unix, Quarantine};

use crate::{state::State, Coordinator, StoreError};

/// Why a contribution was quarantined (the record's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// An admin dropped it.
    Dropped,
    /// Its contributor's token was revoked.
    Revoked,
    /// Fusing it failed (the rest of the round was fused without it).
    FusionFailed,
    /// Its norm is far above the round's others (`exclude_above_median`).
    NormOutlier,
}

impl Why {
    /// The stored machine-readable reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Dropped => "dropped",
            Self::Revoked => "revoked",
            Self::FusionFailed => "fusion_failed",
            Self::NormOutlier => "norm_outlier",
        }
    }
}

/// Quarantines `contributor`'s contribution to the open round (the caller holds the state's write
/// lock and has checked no fusion is using it). Answers the record, or None when the contributor has
/// no contribution in the round.
pub async fn quarantine(
    c: &Coordinator,
    s: &mut State,
    contributor: &str,
    why: Why,
    message: String,
) -> Result<Option<Quarantine>, StoreError> {
    let iteration = s.round_iteration();
    let Some(entry) = s.round.get_mut(contributor) else {
        return Ok(None);
    };
    if let Some(q) = &entry.quarantined {
        return Ok(Some(q.clone()));
    }
    let record = Quarantine {
        reason: why.reason().into(),
        message,
        at: now_unix(),
    };
    let key = keys::contribution_file(iteration, contributor, keys::QUARANTINE);
    c.store.put_json(&key, &record).await?;
    entry.quarantined = Some(record.clone());
    tracing::warn!(%contributor, iteration, reason = why.reason(), "contribution quarantined");
    Ok(Some(record))
}
