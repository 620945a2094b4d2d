//! `coldfuse submit`: announce a contribution by its manifest, upload the diff in chunks that resume
//! where the coordinator's copy stops (after a broken connection, or in a later `submit`), and report
//! the coordinator's verdict.

use std::{io::SeekFrom, path::Path};

use anyhow::{bail, Context};
use coldfuse_shared::{
    api::{routes, ContributionStatus, ErrorCode, Verdict},
    diff::{DiffManifest, DIFF_FILE, MANIFEST_FILE},
    hash::sha256_file,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::{
    client::{Client, ClientError},
    progress::bytes_bar,
};

/// How a submission ended.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// The coordinator accepted it.
    Accepted(Box<ContributionStatus>),
    /// The coordinator refused it, with a reason code and message.
    Rejected {
        /// Stable reason code (`stale_base`, `non_finite`, ...).
        reason: ErrorCode,
        /// The coordinator's explanation.
        message: String,
    },
}

/// Reads a contribution directory's manifest and checks the diff file against it.
pub fn read_contribution(dir: &Path) -> anyhow::Result<DiffManifest> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "reading {}: is {} the --out of `coldfuse train`?",
            path.display(),
            dir.display()
        )
    })?;
    let manifest = DiffManifest::from_json(&bytes)
        .with_context(|| format!("{}: not a coldfuse manifest", path.display()))?;
    let diff = dir.join(DIFF_FILE);
    let size = std::fs::metadata(&diff)
        .with_context(|| format!("reading {}", diff.display()))?
        .len();
    let sha = sha256_file(&diff).with_context(|| format!("hashing {}", diff.display()))?;
    if size != manifest.diff_bytes || sha != manifest.diff_sha256 {
        bail!(
            "{} ({size} bytes, sha256 {sha}) does not match its manifest ({} bytes, sha256 {}): \
             it changed after training; train again",
            diff.display(),
            manifest.diff_bytes,
            manifest.diff_sha256
        );
    }
    Ok(manifest)
}

/// Submits the contribution in `dir`, resuming an upload the coordinator already holds part of.
pub async fn submit(client: &Client, dir: &Path, chunk: u64) -> anyhow::Result<Submitted> {
    let manifest = read_contribution(dir)?;
    let me = &manifest.contributor;
    let received = match held(client, &manifest).await? {
        Held::Decided(s) => return Ok(s),
        Held::Partly(bytes) => bytes,
        Held::Nothing => 0,
    };
    let upload_url = routes::contribution_diff(me);
    if received == 0 {
        match client
            .backoff
            .run("announce", || client.announce(&manifest))
            .await
        {
            Ok(a) => tracing::info!(iteration = a.iteration, "announced"),
            Err(e) if e.code() == Some(ErrorCode::Duplicate) => {
                bail!("{me} already has an accepted contribution to this round: {e}")
            }
            Err(e) => return Err(crate::with_hint(e.into())),
        }
    } else {
        tracing::info!(received, "resuming the upload");
    }
    let total = manifest.diff_bytes;
    let bar = bytes_bar("upload diff", total, received);
    let path = dir.join(DIFF_FILE);
    // Where the next attempt starts: after an interruption, wherever the coordinator's copy stops.
    let from = std::cell::Cell::new(received);
    let attempt = || async {
        match upload_from(client, &upload_url, &path, from.get(), total, chunk, &bar).await {
            Ok(status) => {
                bar.finish_and_clear();
                let verdict = status
                    .verdict
                    .clone()
                    .ok_or_else(|| ClientError::Protocol {
                        url: upload_url.clone(),
                        message: "the last chunk was answered without a verdict".into(),
                    })?;
                Ok(outcome(status, verdict))
            }
            Err(ClientError::Api {
                status: 422,
                code,
                message,
            }) => {
                bar.abandon();
                Ok(Submitted::Rejected {
                    reason: code,
                    message,
                })
            }
            Err(e) => Err(e),
        }
    };
    let resync = || async {
        match held(client, &manifest).await? {
            Held::Decided(s) => Ok(Some(s)),
            Held::Partly(bytes) => {
                from.set(bytes);
                bar.set_position(bytes);
                Ok(None)
            }
            Held::Nothing => {
                bail!("the coordinator no longer has this contribution announced; submit again")
            }
        }
    };
    let resumable = |e: &ClientError| e.code() == Some(ErrorCode::UploadOffset);
    let result: anyhow::Result<Submitted> = client
        .backoff
        .run_resyncing("upload", resumable, attempt, resync)
        .await;
    if result.is_err() {
        bar.abandon();
    }
    result.map_err(crate::with_hint)
}

/// What the coordinator holds of this very diff (same contributor and hash) in the current round.
enum Held {
    /// It has a verdict.
    Decided(Submitted),
    /// It is announced and this many bytes arrived.
    Partly(u64),
    /// Nothing (or another diff of this contributor).
    Nothing,
}

async fn held(client: &Client, manifest: &DiffManifest) -> Result<Held, ClientError> {
    Ok(match client.contribution(&manifest.contributor).await? {
        Some(s) if s.diff_sha256 == manifest.diff_sha256 => match s.verdict.clone() {
            Some(v) => Held::Decided(outcome(s, v)),
            None => Held::Partly(s.received_bytes),
        },
        _ => Held::Nothing,
    })
}

/// Uploads `path` from `start` in chunks; answers the status after the last chunk.
async fn upload_from(
    client: &Client,
    url: &str,
    path: &Path,
    mut start: u64,
    total: u64,
    chunk: u64,
    bar: &indicatif::ProgressBar,
) -> Result<ContributionStatus, ClientError> {
    let io = ClientError::local(path);
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    loop {
        let len = chunk.min(total - start);
        let mut buf = vec![0u8; len as usize];
        file.seek(SeekFrom::Start(start)).await.map_err(io)?;
        file.read_exact(&mut buf).await.map_err(io)?;
        let status = client
            .upload_chunk(url, buf.into(), start, len, total)
            .await?;
        start += len;
        bar.set_position(start);
        if start >= total {
            return Ok(status);
        }
        if status.received_bytes != start {
            return Err(ClientError::api(
                409,
                ErrorCode::UploadOffset,
                &format!(
                    "the coordinator holds {} bytes after a chunk ending at {start}",
                    status.received_bytes
                ),
            ));
        }
    }
}

fn outcome(status: ContributionStatus, verdict: Verdict) -> Submitted {
    match verdict {
        Verdict::Accepted { .. } => Submitted::Accepted(Box::new(status)),
        Verdict::Rejected {
            reason, message, ..
        } => Submitted::Rejected { reason, message },
    }
}

/// Prints a submission's outcome; rejected submissions are an error (non-zero exit).
pub fn print_outcome(s: &Submitted) -> anyhow::Result<()> {
    match s {
        Submitted::Accepted(status) => {
            let norm = match &status.verdict {
                Some(Verdict::Accepted { l2_norm, .. }) => format!(" (diff L2 norm {l2_norm:.4})"),
                _ => String::new(),
            };
            println!(
                "accepted: {} contributes {} to iteration {}{norm}",
                status.contributor,
                &status.diff_sha256[..12],
                status.iteration
            );
            Ok(())
        }
        Submitted::Rejected { reason, message } => {
            bail!("rejected ({reason}): {message}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_changed_after_training_is_refused_before_upload() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_contribution(dir.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("--out of `coldfuse train`"),
            "{err:#}"
        );
        let diff = b"not really a diff";
        std::fs::write(dir.path().join(DIFF_FILE), diff).unwrap();
        let manifest = serde_json::json!({
            "format_version": 1,
            "base": {"id": "b", "sha256": "a".repeat(64)},
            "architecture": "bert",
            "encoding": {"kind": "f32"},
            "tensors": [],
            "num_examples": 1,
            "contributor": "site",
            "diff_sha256": coldfuse_shared::hash::sha256_bytes(diff),
            "diff_bytes": diff.len(),
            "created_by": "test",
        });
        std::fs::write(dir.path().join(MANIFEST_FILE), manifest.to_string()).unwrap();
        read_contribution(dir.path()).unwrap();
        std::fs::write(dir.path().join(DIFF_FILE), b"not really a diff!").unwrap();
        let err = read_contribution(dir.path()).unwrap_err();
        assert!(err.to_string().contains("changed after training"), "{err}");
    }
}
