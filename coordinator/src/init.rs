//! `coldfuse-coordinator init`: turn any supported Hugging Face model dir into iteration 0 of a new
//! deployment, and create its first admin token.

use std::{collections::BTreeMap, path::Path};

use coldfuse_shared::{
    api::{
        keys, model_card, now_unix, CardOrigin, DeploymentConfig, IterationRecord, LatestPointer,
        ReceiptSigner, Role, SigningPublicKey, TokenRecord, MODEL_CARD,
    },
    ModelDir,
};

use crate::{auth::new_token, publish::publish_base, Store};

/// What `init` produced.
#[derive(Debug)]
pub struct Initialised {
    /// The admin bearer token (shown once).
    pub admin_token: String,
    /// SHA-256 of iteration 0's weights.
    pub base_sha256: String,
    /// The base's architecture.
    pub architecture: String,
    /// The public key receipts are signed with.
    pub signing_key: SigningPublicKey,
    /// The receipt key itself: the caller keeps it (it is never written to the store).
    pub signer: ReceiptSigner,
}

/// Choices of `init` beyond the deployment settings.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Sign receipts with this key (default: a new one, returned in [`Initialised::signer`]). Only its
    /// public half goes to the store.
    pub signing_key: Option<ReceiptSigner>,
    /// The original model's name for lineage and model cards, e.g. `sentence-transformers/all-MiniLM-L6-v2`
    /// (default: the model dir's name).
    pub name: Option<String>,
}

/// Creates a deployment in `store` from the model dir `base` (its body only: heads are dropped; the
/// weights are rewritten as one `model.safetensors` with the original names and dtypes).
pub async fn init(
    store: &Store,
    base: &Path,
    config: DeploymentConfig,
    options: &InitOptions,
) -> anyhow::Result<Initialised> {
    config.validate().map_err(anyhow::Error::msg)?;
    if store
        .get_json::<serde_json::Value>(keys::DEPLOYMENT)
        .await?
        .is_some()
    {
        anyhow::bail!("{} already holds a deployment", store.url());
    }
    let staging = tempfile::tempdir()?;
    let out = staging.path().join("base");
    let source = base.to_path_buf();
    let target = out.clone();
    let architecture = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let dir = ModelDir::open(&source)?;
        dir.save_with_body(&target, &BTreeMap::new())?;
        Ok(dir.arch.name.to_string())
    })
    .await??;
    let weights = out.join(coldfuse_shared::diff::BASE_WEIGHTS);
    let base_sha256 =
        tokio::task::spawn_blocking(move || coldfuse_shared::hash::sha256_file(&weights)).await??;
    let name = options
        .name
        .clone()
        .or_else(|| base.file_name().map(|n| n.to_string_lossy().into_owned()));
    let record = IterationRecord {
        iteration: 0,
        parent: None,
        parent_sha256: None,
        base_sha256: base_sha256.clone(),
        fusion: None,
        contributions: Vec::new(),
        update_l2_norm: None,
        server_optimizer: None,
        optimizer_state_sha256: None,
        fold_order: None,
        origin: name.clone(),
        created_by: concat!("coldfuse ", env!("CARGO_PKG_VERSION")).into(),
        created_at: now_unix(),
    };
    // The card: base model and licence from the original model's own card, when it has one.
    let original_card = std::fs::read_to_string(base.join(MODEL_CARD)).ok();
    let mut origin = CardOrigin::from_card(
        original_card.as_deref(),
        name.as_deref().unwrap_or("the original model"),
    );
    if let Some(given) = &options.name {
        origin.base_model = given.clone();
    }
    std::fs::write(
        out.join(MODEL_CARD),
        model_card(&record, &architecture, &origin),
    )?;
    let manifest = publish_base(store, 0, &out, &architecture).await?;
    anyhow::ensure!(
        manifest.base_sha256 == base_sha256,
        "the weights changed while publishing"
    );
    if !store
        .create_json(&keys::iteration_record(0), &record)
        .await?
    {
        anyhow::bail!(
            "{} already has an iteration 0 from an earlier, unfinished init; use an empty store",
            store.url()
        );
    }
    store.put_json(keys::LATEST, &LatestPointer::to(0)).await?;
    let (admin_token, hash) = new_token();
    let token = TokenRecord {
        id: hash[..12].to_string(),
        role: Role::Admin,
        contributor: None,
        created_at: now_unix(),
        revoked: false,
    };
    store.put_private_json(&keys::token(&hash), &token).await?;
    let signer = options
        .signing_key
        .clone()
        .unwrap_or_else(ReceiptSigner::generate);
    let signing_key = crate::signing::init_key(store, &signer).await?;
    if !store.create_json(keys::DEPLOYMENT, &config).await? {
        anyhow::bail!("{} was initialised concurrently", store.url());
    }
    Ok(Initialised {
        admin_token,
        base_sha256: manifest.base_sha256,
        architecture,
        signing_key,
        signer,
    })
}
