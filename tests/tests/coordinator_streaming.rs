//! The strategies that need every diff at once (median here) read the accepted diffs straight from
//! the store, once, through ranged reads: no local copy of the round's diffs is made, on a `file://`
//! store and on a real S3 server, and `coldfuse verify` (which reads local copies) replays the
//! streamed fusion bit for bit.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use coldfuse_e2e::{
    coordinator::{contribute_accepted, Deployment},
    process::verify_from_store,
    s3::S3Server,
};
use coldfuse_shared::{
    api::DeploymentConfig,
    fusion::{FusionConfig, StrategyConfig},
};

/// Every file under `dir` whose name ends with `.safetensors`, outside `out/` directories.
fn diff_copies(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            if !path.ends_with("out") && !path.ends_with("bases") {
                found.extend(diff_copies(&path));
            }
        } else if path.to_string_lossy().ends_with(".safetensors") {
            found.push(path.display().to_string());
        }
    }
    found
}

/// Three diffs accepted, then a median fusion paused before its commit: what the work directory
/// holds then, and the store bytes the close read.
async fn median_round(d: &Deployment) -> (Vec<String>, u64) {
    let mut diff_bytes = 0;
    for (seed, name) in [(1, "site-a"), (2, "site-b"), (3, "site-c")] {
        let token = d.token(name).await;
        contribute_accepted(d, &token, name, seed).await;
        let s = d.coordinator.state.read().await;
        diff_bytes += s.round[name].manifest.diff_bytes;
    }
    let read_before = d.coordinator.store.bytes_read();
    let fusion = {
        let router = d.router();
        let admin = d.admin.clone();
        tokio::spawn(async move {
            coldfuse_e2e::coordinator::call(
                &router,
                "POST",
                "/v1/admin/fuse?wait=true",
                Some(&admin),
                vec![],
            )
            .await
        })
    };
    // The pause before the commit: the fusion has run and the scratch directory is still there.
    let started = Instant::now();
    let mut copies = Vec::new();
    while !fusion.is_finished() {
        if started.elapsed() > Duration::from_millis(500) {
            copies.extend(diff_copies(d.work()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, v) = fusion.await.unwrap();
    assert!(status.is_success(), "{v}");
    let read = d.coordinator.store.bytes_read() - read_before;
    assert!(
        read >= diff_bytes && read < diff_bytes + (1 << 20),
        "the close read {read} bytes from the store for {diff_bytes} bytes of diffs: each once"
    );
    copies.sort();
    copies.dedup();
    (copies, read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_median_round_streams_its_diffs_from_the_store_without_local_copies() {
    // This binary's only test: the hook pauses every fusion of the process before its commit.
    std::env::set_var("COLDFUSE_FAULT_PAUSE_BEFORE_COMMIT_MS", "1500");
    let config = DeploymentConfig {
        quorum: 100,
        fusion: FusionConfig {
            strategy: StrategyConfig::Median,
            ..FusionConfig::default()
        },
        ..DeploymentConfig::default()
    };
    let d = Deployment::new(config.clone()).await;
    let (copies, _) = median_round(&d).await;
    assert!(copies.is_empty(), "local diff copies: {copies:?}");
    verify_from_store(&d.store_url, 1);

    let s3 = S3Server::start();
    s3.export_env();
    let d = Deployment::in_store(config, s3.url("streaming"), None).await;
    let (copies, _) = median_round(&d).await;
    assert!(copies.is_empty(), "local diff copies: {copies:?}");
    verify_from_store(&d.store_url, 1);
}
