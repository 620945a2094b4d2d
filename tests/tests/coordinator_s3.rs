//! The coordinator over a real S3-compatible server (SeaweedFS on 127.0.0.1): create-only commits
//! have exactly one winner, 32 concurrent uploads all land, a fusion publishes, and a restart
//! rebuilds everything from the bucket.

use axum::http::StatusCode;
use coldfuse_e2e::{
    coordinator::{call_raw, contribute, latest, make_diff, Deployment},
    s3::S3Server,
};
use coldfuse_shared::api::{DeploymentConfig, IterationRecord};
use coldfuse_shared::store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinator_s3_store_commits_uploads_fuses_and_restarts() {
    let server = S3Server::start();
    server.export_env();

    // Create-only: of 16 concurrent writers of one key, exactly one wins.
    let store = Store::open(&server.url("race")).unwrap();
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.create_json("commit.json", &i).await.unwrap() })
        })
        .collect();
    let winners = futures::future::join_all(writers)
        .await
        .into_iter()
        .filter(|w| *w.as_ref().unwrap())
        .count();
    assert_eq!(winners, 1, "create-only must have exactly one winner");

    // A deployment in the bucket; 32 contributors upload at once.
    let config = DeploymentConfig {
        quorum: 100,
        ..DeploymentConfig::default()
    };
    let mut d = Deployment::in_store(config, server.url("deployment"), None).await;
    let base0 = latest(&d).await;
    let base_dir = d.coordinator.base_dir(0);
    let mut uploads = Vec::new();
    for i in 0..32u64 {
        let name = format!("site-{i:02}");
        let token = d.token(&name).await;
        let (dir, manifest) = make_diff(&base_dir, &base0.base_sha256, &name, i, false);
        uploads.push((token, dir, manifest));
    }
    let d_ref = &d;
    let results = futures::future::join_all(
        uploads
            .iter()
            .map(|(token, dir, manifest)| contribute(d_ref, token, dir.path(), manifest)),
    )
    .await;
    for (status, v) in &results {
        assert_eq!(*status, StatusCode::OK, "{v}");
    }
    assert_eq!(d.coordinator.state.read().await.status().accepted, 32);

    // Restart before fusing: every accepted contribution is still there.
    d.reload().await;
    assert_eq!(d.coordinator.state.read().await.status().accepted, 32);
    let (status, v) = d.fuse_now().await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let record: IterationRecord = serde_json::from_value(v).unwrap();
    assert_eq!(record.contributions.len(), 32);

    // Restart after: the new base is latest, downloadable by range, hash-verified.
    d.reload().await;
    let base1 = latest(&d).await;
    assert_eq!(base1.iteration, 1);
    let uri = "/v1/bases/1/files/model.safetensors";
    let (status, full) = call_raw(&d.router(), "GET", uri, None, vec![], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        coldfuse_shared::hash::sha256_bytes(&full),
        base1.base_sha256
    );
    let (status, part) =
        call_raw(&d.router(), "GET", uri, None, vec![], Some("bytes=8-1023")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part, full[8..1024]);
}
