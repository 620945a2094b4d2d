//! The trust boundary under races: an upload that completes while a fusion runs, and a token revoked
//! during its upload or after its contribution was accepted. The fusion is paused before its commit
//! with the coordinator's fault hook (this binary's tests each set it for their own process).

use std::time::Duration;

use axum::http::StatusCode;
use coldfuse_e2e::coordinator::{
    call, contribute_accepted, latest, make_diff, put_range, stalled_request, wait_uploading,
    Deployment, StalledRequest,
};
use coldfuse_shared::store::Store;
use coldfuse_shared::{
    api::{keys, DeploymentConfig, IterationRecord, Quarantine, RoundStatus, Verdict},
    diff::{DiffManifest, DIFF_FILE},
};

fn config() -> DeploymentConfig {
    DeploymentConfig {
        quorum: 10,
        ..DeploymentConfig::default()
    }
}

async fn half_upload(
    d: &Deployment,
    token: &str,
    name: &str,
    seed: u64,
) -> (Vec<u8>, DiffManifest) {
    let base = latest(d).await;
    let (dir, m) = make_diff(
        &d.coordinator.base_dir(base.iteration),
        &base.base_sha256,
        name,
        seed,
        false,
    );
    let (status, v) = call(
        &d.router(),
        "POST",
        "/v1/contributions",
        Some(token),
        m.to_json(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let bytes = std::fs::read(dir.path().join(DIFF_FILE)).unwrap();
    let (status, _) = put_range(d, token, name, &bytes, 0, bytes.len() / 2, bytes.len()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    (bytes, m)
}

/// The second half of `bytes` as one `Content-Range` chunk whose body the test feeds.
fn last_chunk(d: &Deployment, token: &str, name: &str, bytes: &[u8]) -> StalledRequest {
    let (start, end) = (bytes.len() / 2, bytes.len());
    stalled_request(
        &d.router(),
        "PUT",
        &format!("/v1/contributions/{name}/diff"),
        token,
        &[("content-range", format!("bytes {start}-{}/{end}", end - 1))],
    )
}

/// Attack 5: an upload that completes while a fusion runs used to get 200 and a signed *accepted*
/// receipt, be left out of the fused snapshot and be wiped with the round. It now gets 409
/// `round_fusing` (train again on the new base) and nothing says it was accepted.
#[tokio::test]
async fn an_upload_finishing_during_a_fusion_is_not_acknowledged() {
    std::env::set_var("COLDFUSE_FAULT_PAUSE_BEFORE_COMMIT_MS", "2000");
    let d = Deployment::new(config()).await;
    let a = d.token("site-a").await;
    let c = d.token("site-c").await;
    contribute_accepted(&d, &a, "site-a", 0).await;
    let (bytes, _) = half_upload(&d, &c, "site-c", 2).await;
    // The last chunk starts before the fusion (so it passes the checks at the start of an upload)
    // and its body stalls until the fusion runs.
    let last = last_chunk(&d, &c, "site-c", &bytes);
    let (head, rest) = bytes[bytes.len() / 2..].split_at(10);
    last.body.send(head.to_vec()).await.unwrap();
    wait_uploading(&d).await;
    let fusion = {
        let router = d.router();
        let admin = d.admin.clone();
        tokio::spawn(async move {
            call(
                &router,
                "POST",
                "/v1/admin/fuse?wait=true",
                Some(&admin),
                vec![],
            )
            .await
        })
    };
    for _ in 0..100 {
        let r: RoundStatus =
            serde_json::from_value(call(&d.router(), "GET", "/v1/round", None, vec![]).await.1)
                .unwrap();
        if r.fusing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    last.body.send(rest.to_vec()).await.unwrap();
    drop(last.body);
    let (status, v) = last.answer.await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "round_fusing");
    let (status, v) = fusion.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    let record: IterationRecord = serde_json::from_value(v).unwrap();
    assert_eq!(record.contributions.len(), 1);
    let store = Store::open(&d.store_url).unwrap();
    let verdict: Option<Verdict> = store
        .get_json(&keys::contribution_file(1, "site-c", keys::VERDICT))
        .await
        .unwrap();
    assert!(verdict.is_none(), "{verdict:?}");
}

/// Attack 6: revocation bites. A token revoked during its upload cannot finish it, and a revoked
/// contributor's accepted diff is quarantined (recorded) and not fused.
#[tokio::test]
async fn a_revoked_token_loses_its_pending_and_accepted_contributions() {
    let d = Deployment::new(config()).await;
    let (a, b, c) = (
        d.token("site-a").await,
        d.token("site-b").await,
        d.token("site-c").await,
    );
    contribute_accepted(&d, &a, "site-a", 0).await;
    contribute_accepted(&d, &b, "site-b", 1).await;
    let (bytes, _) = half_upload(&d, &c, "site-c", 2).await;
    // site-c's last chunk is in flight (it passed the token check at its start) when its token goes.
    let last = last_chunk(&d, &c, "site-c", &bytes);
    let (head, rest) = bytes[bytes.len() / 2..].split_at(10);
    last.body.send(head.to_vec()).await.unwrap();
    wait_uploading(&d).await;
    for (token, name) in [(&b, "site-b"), (&c, "site-c")] {
        let (_, who) = call(&d.router(), "GET", "/v1/whoami", Some(token), vec![]).await;
        let id = who["token_id"].as_str().unwrap().to_string();
        let uri = format!("/v1/admin/tokens/{id}");
        let (status, v) = call(&d.router(), "DELETE", &uri, Some(&d.admin), vec![]).await;
        assert_eq!(status, StatusCode::OK, "{name}: {v}");
    }
    last.body.send(rest.to_vec()).await.unwrap();
    drop(last.body);
    let (status, v) = last.answer.await.unwrap();
    assert!(
        status == StatusCode::UNAUTHORIZED || status == StatusCode::CONFLICT,
        "a revoked token finished its upload: {status} {v}"
    );
    let store = Store::open(&d.store_url).unwrap();
    let q: Quarantine = store
        .get_json(&keys::contribution_file(1, "site-b", keys::QUARANTINE))
        .await
        .unwrap()
        .expect("a quarantine record");
    assert_eq!(q.reason, "revoked");
    let fused = d.fuse_now_contributors().await;
    assert_eq!(fused, ["site-a"]);
}
