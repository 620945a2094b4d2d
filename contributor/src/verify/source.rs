//! Where `coldfuse verify` reads its evidence: the coordinator's API (a token that may read the fused
//! diffs) or the deployment's object store itself.

use std::path::Path;

use anyhow::Context;
use coldfuse_shared::{
    api::{keys, routes, BaseManifest, IterationRecord},
    diff::{DiffManifest, DIFF_FILE, MANIFEST_FILE},
    store::Store,
};

use crate::client::Client;

/// The evidence's origin.
pub enum Source {
    /// Through the coordinator.
    Api(Client),
    /// Straight from the store.
    Store(Store),
}

impl Source {
    /// The lineage record of `iteration`.
    pub async fn record(&self, iteration: u64) -> anyhow::Result<IterationRecord> {
        Ok(match self {
            Self::Api(c) => c.lineage_one(iteration).await?,
            Self::Store(s) => s
                .get_json(&keys::iteration_record(iteration))
                .await?
                .with_context(|| format!("iteration {iteration} is not committed"))?,
        })
    }

    /// The manifest of base `iteration`.
    pub async fn base_manifest(&self, iteration: u64) -> anyhow::Result<BaseManifest> {
        Ok(match self {
            Self::Api(c) => c.base(Some(iteration)).await?,
            Self::Store(s) => s
                .get_json(&keys::base_file(iteration, keys::BASE_MANIFEST))
                .await?
                .with_context(|| format!("no base manifest for iteration {iteration}"))?,
        })
    }

    /// Downloads file `name` of base `iteration` to `dest`.
    pub async fn base_file(&self, iteration: u64, name: &str, dest: &Path) -> anyhow::Result<()> {
        match self {
            Self::Api(c) => {
                c.download(&routes::base_file(iteration, name), dest)
                    .await?
            }
            Self::Store(s) => s.get_file(&keys::base_file(iteration, name), dest).await?,
        }
        Ok(())
    }

    /// The manifest of `contributor`'s diff fused into `iteration`.
    pub async fn diff_manifest(
        &self,
        iteration: u64,
        contributor: &str,
    ) -> anyhow::Result<DiffManifest> {
        Ok(match self {
            Self::Api(c) => c.fused_diff_manifest(iteration, contributor).await?,
            Self::Store(s) => s
                .get_json(&keys::contribution_file(
                    iteration,
                    contributor,
                    MANIFEST_FILE,
                ))
                .await?
                .with_context(|| format!("no manifest of {contributor} in round {iteration}"))?,
        })
    }

    /// Downloads `contributor`'s diff fused into `iteration` to `dest`.
    pub async fn diff(&self, iteration: u64, contributor: &str, dest: &Path) -> anyhow::Result<()> {
        match self {
            Self::Api(c) => {
                c.download(&routes::fused_diff(iteration, contributor), dest)
                    .await?
            }
            Self::Store(s) => {
                let key = keys::contribution_file(iteration, contributor, DIFF_FILE);
                s.get_file(&key, dest).await?
            }
        }
        Ok(())
    }

    /// Downloads the server optimiser's state after `iteration` to `dest`.
    pub async fn optimizer_state(&self, iteration: u64, dest: &Path) -> anyhow::Result<()> {
        match self {
            Self::Api(c) => {
                c.download(&routes::optimizer_state(iteration), dest)
                    .await?
            }
            Self::Store(s) => s.get_file(&keys::optimizer_state(iteration), dest).await?,
        }
        Ok(())
    }
}
