//! Signed receipts on the contributor side: keep the coordinator's receipts next to the contribution
//! they are about (`receipt-accepted.json`, `receipt-fused.json`), fetch a fused one later, and check
//! one offline (`coldfuse receipt verify FILE`) against the key pinned at `coldfuse login`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use coldfuse_shared::{
    api::{ContributionStatus, ReceiptKind, SignedReceipt, SigningPublicKey},
    diff::DIFF_FILE,
    hash::sha256_file,
};

use crate::{
    client::Client,
    settings::{ConnectArgs, Settings},
};

/// The receipt of acceptance, in the contribution's directory.
pub const ACCEPTED_FILE: &str = "receipt-accepted.json";
/// The receipt of fusion, in the contribution's directory.
pub const FUSED_FILE: &str = "receipt-fused.json";

/// `coldfuse receipt ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ReceiptCommand {
    /// Check a receipt offline against the coordinator's public key (the one pinned at login, or
    /// --public-key), and optionally that it is about a given diff.
    Verify {
        /// Where the settings (and the pinned key) are.
        #[command(flatten)]
        connect: ConnectArgs,
        /// The receipt file (`receipt-accepted.json` or `receipt-fused.json`).
        file: PathBuf,
        /// The coordinator's public key as hex (default: the key pinned by `coldfuse login`).
        #[arg(long)]
        public_key: Option<String>,
        /// Also check that the receipt names this diff (a `train --out` dir or a diff file).
        #[arg(long)]
        diff: Option<PathBuf>,
    },
    /// Fetch the receipt that a contribution was fused into an iteration, checked, into a file.
    Fetch {
        /// Where the settings (and the pinned key) are.
        #[command(flatten)]
        connect: ConnectArgs,
        /// The iteration it was fused into.
        #[arg(long)]
        iteration: u64,
        /// Whose contribution (default: yours, from login).
        #[arg(long)]
        contributor: Option<String>,
        /// Where to write it (default: receipt-fused-{iteration}.json).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check the gate's signed decision on candidate N against the coordinator's key and, with the
    /// report this site kept (`evaluate`, `run --evaluate-candidates`), that the decision counted it.
    Gate {
        /// Where the settings (and the pinned key) are.
        #[command(flatten)]
        connect: ConnectArgs,
        /// The candidate iteration.
        #[arg(long)]
        iteration: u64,
        /// The kept report (`report-{iteration:06}.json`).
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

impl ReceiptCommand {
    /// Its connection options.
    pub fn connect(&self) -> &ConnectArgs {
        match self {
            Self::Verify { connect, .. }
            | Self::Fetch { connect, .. }
            | Self::Gate { connect, .. } => connect,
        }
    }
}

/// Runs a receipt command.
pub async fn run(command: ReceiptCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        ReceiptCommand::Verify {
            file,
            public_key,
            diff,
            ..
        } => {
            let key = match public_key {
                Some(hex) => SigningPublicKey::from_hex(&hex).context("--public-key")?,
                None => pinned(settings)?.context(
                    "no coordinator key to check against: pass --public-key HEX (from \
                     GET /v1/signing-key), or `coldfuse login` to pin it",
                )?,
            };
            let receipt = verify_file(&file, &key, diff.as_deref())?;
            print_receipt(&receipt, &key);
            Ok(())
        }
        ReceiptCommand::Fetch {
            iteration,
            contributor,
            out,
            ..
        } => {
            let client = settings.client()?;
            let who = crate::login::contributor_id(contributor, settings, Some(&client)).await?;
            let key = trusted_key(&client, settings).await?;
            let Some(receipt) = client.fused_receipt(iteration, &who).await? else {
                bail!("iteration {iteration} did not fuse a contribution of `{who}`");
            };
            let out =
                out.unwrap_or_else(|| PathBuf::from(format!("receipt-fused-{iteration}.json")));
            write_checked(&out, &receipt, &key)?;
            print_receipt(&receipt, &key);
            println!("written to {}", out.display());
            Ok(())
        }
        ReceiptCommand::Gate {
            iteration, report, ..
        } => {
            let client = settings.client()?;
            let key = trusted_key(&client, settings).await?;
            let who = crate::login::contributor_id(None, settings, Some(&client)).await?;
            let kept = report.as_deref().map(|p| (p, who.as_str()));
            crate::evaluate::check_counted(&client, &key, iteration, kept).await
        }
    }
}

/// The key pinned at login, if any.
pub fn pinned(settings: &Settings) -> anyhow::Result<Option<SigningPublicKey>> {
    settings
        .receipt_key
        .as_deref()
        .map(|hex| SigningPublicKey::from_hex(hex).context("the receipt key in the settings file"))
        .transpose()
}

/// The key receipts are checked against: the pinned one, else the coordinator's own (trust on first
/// use; `coldfuse login` pins it).
pub async fn trusted_key(client: &Client, settings: &Settings) -> anyhow::Result<SigningPublicKey> {
    match pinned(settings)? {
        Some(key) => Ok(key),
        None => Ok(client.signing_key().await?),
    }
}

/// Checks `receipt` and writes it to `path` (replacing an older copy atomically).
pub fn write_checked(
    path: &Path,
    receipt: &SignedReceipt,
    key: &SigningPublicKey,
) -> anyhow::Result<()> {
    receipt.verify(key).with_context(|| {
        format!(
            "the coordinator sent a receipt that does not verify against key {}",
            key.key_id
        )
    })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(receipt)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Keeps the acceptance receipt of a submission in the contribution's directory.
pub fn keep_accepted(
    dir: &Path,
    status: &ContributionStatus,
    key: &SigningPublicKey,
) -> anyhow::Result<()> {
    let Some(receipt) = &status.receipt else {
        tracing::warn!("the coordinator sent no receipt (an older coordinator?)");
        return Ok(());
    };
    if receipt.receipt.kind != ReceiptKind::Accepted
        || receipt.receipt.diff_sha256 != status.diff_sha256
    {
        bail!("the coordinator's receipt is not about this diff's acceptance");
    }
    write_checked(&dir.join(ACCEPTED_FILE), receipt, key)
}

/// Reads a receipt file and checks its signature (and, with `diff`, that it names that diff).
pub fn verify_file(
    file: &Path,
    key: &SigningPublicKey,
    diff: Option<&Path>,
) -> anyhow::Result<SignedReceipt> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let receipt: SignedReceipt = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a coldfuse receipt", file.display()))?;
    receipt
        .verify(key)
        .with_context(|| format!("{}: forged or altered receipt", file.display()))?;
    if let Some(diff) = diff {
        let path = if diff.is_dir() {
            diff.join(DIFF_FILE)
        } else {
            diff.to_path_buf()
        };
        let sha = sha256_file(&path).with_context(|| format!("hashing {}", path.display()))?;
        if sha != receipt.receipt.diff_sha256 {
            bail!(
                "{} is about diff {}, but {} has sha256 {sha}",
                file.display(),
                receipt.receipt.diff_sha256,
                path.display()
            );
        }
    }
    Ok(receipt)
}

fn print_receipt(signed: &SignedReceipt, key: &SigningPublicKey) {
    let r = &signed.receipt;
    let what = match r.kind {
        ReceiptKind::Accepted => format!("accepted for iteration {}", r.iteration),
        ReceiptKind::Fused => format!(
            "fused into iteration {} (base {}) with weight {:.6}",
            r.iteration,
            r.fused_base_sha256.as_deref().unwrap_or("?"),
            r.weight.unwrap_or(f64::NAN)
        ),
    };
    println!(
        "valid receipt signed by key {}: `{}`'s diff {} ({} examples, trained on base {}) {what}",
        key.key_id, r.contributor, r.diff_sha256, r.num_examples, r.base_sha256
    );
}
