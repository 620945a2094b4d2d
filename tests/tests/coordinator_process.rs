//! The real `coldfuse-coordinator` binary: `init` and `serve`, the public routes, and crash faults —
//! killed mid-upload and between publishing a fused base and committing it — with restarts that
//! lose nothing accepted and never show a half base.

use std::{path::Path, time::Duration};

use coldfuse_e2e::{
    coordinator::make_diff,
    process::{contributor_token, init_fixture, Server},
};
use coldfuse_shared::{
    api::{BaseManifest, RoundStatus},
    diff::DIFF_FILE,
};
use futures::StreamExt;
use reqwest::{Client, StatusCode};

async fn json<T: serde::de::DeserializeOwned>(client: &Client, url: String) -> T {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn upload(
    client: &Client,
    server: &Server,
    token: &str,
    dir: &Path,
    manifest: &coldfuse_shared::diff::DiffManifest,
) -> StatusCode {
    let r = client
        .post(format!("{}/v1/contributions", server.url))
        .bearer_auth(token)
        .body(manifest.to_json())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    client
        .put(format!(
            "{}/v1/contributions/{}/diff",
            server.url, manifest.contributor
        ))
        .bearer_auth(token)
        .body(std::fs::read(dir.join(DIFF_FILE)).unwrap())
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_process_survives_crashes_mid_upload_and_mid_fusion() {
    let store_dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let store = format!("file://{}", store_dir.path().display());
    let admin = init_fixture(&store, work.path(), 2);
    let client = Client::new();

    let server = Server::start(&store, &work.path().join("w"), &[]);
    assert_eq!(
        client
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        client
            .get(format!("{}/v1/openapi.json", server.url))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = client
        .post(format!("{}/v1/admin/fuse", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let base0: BaseManifest = json(&client, format!("{}/v1/bases/latest", server.url)).await;
    let tokens = [
        contributor_token(&server.url, &admin, "site-a").await,
        contributor_token(&server.url, &admin, "site-b").await,
    ];

    // Crash in the middle of an upload: half the bytes sent, then the process dies.
    let (dir_a, m_a) = make_diff(
        &fixture_base(&work, &base0),
        &base0.base_sha256,
        "site-a",
        1,
        false,
    );
    let r = client
        .post(format!("{}/v1/contributions", server.url))
        .bearer_auth(&tokens[0])
        .body(m_a.to_json())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let bytes = std::fs::read(dir_a.path().join(DIFF_FILE)).unwrap();
    let half = bytes[..bytes.len() / 2].to_vec();
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(half) })
        .chain(futures::stream::pending());
    let put = client
        .put(format!("{}/v1/contributions/site-a/diff", server.url))
        .bearer_auth(&tokens[0])
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let pending = tokio::spawn(put);
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    assert!(
        pending.await.unwrap().is_err(),
        "the upload died with the server"
    );
    let diff_key = store_dir
        .path()
        .join("rounds/000001/site-a")
        .join(DIFF_FILE);
    assert!(!diff_key.exists(), "no partial diff in the store");

    // Restart with a pause between publishing the fused base and committing it.
    let paused = Server::start(
        &store,
        &work.path().join("w"),
        &[("COLDFUSE_FAULT_PAUSE_BEFORE_COMMIT_MS", "30000")],
    );
    let round: RoundStatus = json(&client, format!("{}/v1/round", paused.url)).await;
    assert_eq!((round.iteration, round.accepted), (1, 0));
    assert_eq!(
        upload(&client, &paused, &tokens[0], dir_a.path(), &m_a).await,
        StatusCode::OK
    );
    let (dir_b, m_b) = make_diff(
        &fixture_base(&work, &base0),
        &base0.base_sha256,
        "site-b",
        2,
        false,
    );
    assert_eq!(
        upload(&client, &paused, &tokens[1], dir_b.path(), &m_b).await,
        StatusCode::OK
    );
    // Quorum reached: the fusion publishes bases/000001/ and then waits before the commit.
    let published = store_dir.path().join("bases/000001/manifest.json");
    for _ in 0..300 {
        if published.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(published.exists(), "fusion did not publish its files");
    let round: RoundStatus = json(&client, format!("{}/v1/round", paused.url)).await;
    assert!(round.fusing, "{round:?}");
    let latest: BaseManifest = json(&client, format!("{}/v1/bases/latest", paused.url)).await;
    assert_eq!(latest, base0, "an uncommitted base is never latest");
    assert_eq!(
        client
            .get(format!("{}/v1/bases/1", paused.url))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    paused.kill();

    // Restart normally: the accepted contributions are intact and the fusion is redone and committed.
    let server = Server::start(&store, &work.path().join("w"), &[]);
    let mut round: RoundStatus = json(&client, format!("{}/v1/round", server.url)).await;
    for _ in 0..300 {
        if round.iteration == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        round = json(&client, format!("{}/v1/round", server.url)).await;
    }
    assert_eq!(round.iteration, 2, "{round:?}");
    let lineage: Vec<serde_json::Value> = json(&client, format!("{}/v1/lineage", server.url)).await;
    assert_eq!(lineage.len(), 2);
    assert_eq!(lineage[1]["contributions"].as_array().unwrap().len(), 2);
    let latest: BaseManifest = json(&client, format!("{}/v1/bases/latest", server.url)).await;
    assert_eq!(latest.iteration, 1);
}

/// A local copy of base 0 (to build diffs against), fetched from the store dir's published files.
fn fixture_base(work: &tempfile::TempDir, base0: &BaseManifest) -> std::path::PathBuf {
    let dir = work.path().join("w/bases/000000");
    assert!(
        dir.join("model.safetensors").is_file(),
        "the coordinator caches base 0 in its work dir"
    );
    assert_eq!(
        coldfuse_shared::hash::sha256_file(&dir.join("model.safetensors")).unwrap(),
        base0.base_sha256
    );
    dir
}
