//! `coldfuse login` and who this site is: check a coordinator URL and token, pin the coordinator's
//! receipt key, remember them in the settings file; and the contributor id later commands write as.

use anyhow::Context;

use crate::{
    client::Client,
    receipt,
    settings::{Settings, SettingsFile},
};

/// Checks the token with the coordinator, pins its receipt key and saves the settings.
pub async fn login(settings: &Settings, contributor: Option<String>) -> anyhow::Result<()> {
    let client = settings.client()?;
    let me = client
        .whoami()
        .await
        .context("checking the token with the coordinator")?;
    let Some(role) = me.role else {
        anyhow::bail!(
            "no token given: pass --token TOKEN (ask the coordinator's operator for one)"
        );
    };
    let round = client.round().await?;
    let key = client.signing_key().await?;
    if let Some(old) = receipt::pinned(settings)? {
        if old != key && settings.coordinator == SettingsFile::load(&settings.path)?.coordinator {
            anyhow::bail!(
                "the coordinator's receipt key changed from {} to {}: receipts it signs now would \
                 not verify against the pinned key. If the operator confirms the new key, \
                 remove `receipt_key` from {} and log in again",
                old.key_id,
                key.key_id,
                settings.path.display()
            );
        }
    }
    let file = SettingsFile {
        coordinator: settings.coordinator.clone(),
        token: settings.token.clone(),
        contributor: contributor.or(me.contributor),
        cache_dir: None,
        receipt_key: Some(key.public_key.clone()),
        tls: settings.tls.clone(),
    };
    file.save(&settings.path)?;
    println!(
        "logged in to {} as {role:?}{}; round {} is open (base {}); receipt key {} pinned. \
         Settings saved to {}",
        client.url(),
        file.contributor
            .as_deref()
            .map_or(String::new(), |c| format!(" `{c}`")),
        round.iteration,
        round.base_iteration,
        key.key_id,
        settings.path.display()
    );
    Ok(())
}

/// The contributor id: the flag, the login's, or the token's.
pub async fn contributor_id(
    flag: Option<String>,
    settings: &Settings,
    client: Option<&Client>,
) -> anyhow::Result<String> {
    if let Some(c) = flag.or_else(|| settings.contributor.clone()) {
        return Ok(c);
    }
    if let Some(client) = client {
        if let Some(c) = client.whoami().await?.contributor {
            return Ok(c);
        }
    }
    anyhow::bail!(
        "no contributor id: pass --contributor ID or `coldfuse login` with a contributor token"
    )
}
