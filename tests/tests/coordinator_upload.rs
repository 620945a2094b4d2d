//! Resumable uploads in-process: a diff sent in `Content-Range` chunks, with a gap refused, a chunk
//! re-sent after a break, the received size reported, and the verdict on the last byte; plus
//! `/v1/whoami` for each kind of caller.

use axum::http::StatusCode;
use coldfuse_e2e::coordinator::{announce, call, latest, make_diff, put_range, Deployment};
use coldfuse_shared::{
    api::{ContributionStatus, DeploymentConfig, WhoAmI},
    diff::DIFF_FILE,
};

#[tokio::test]
async fn coordinator_upload_resumes_chunks_and_refuses_gaps() {
    let d = Deployment::new(DeploymentConfig::default()).await;
    let base = latest(&d).await;
    let token = d.token("site-a").await;
    let (dir, manifest) = make_diff(
        &d.coordinator.base_dir(0),
        &base.base_sha256,
        "site-a",
        1,
        false,
    );
    let bytes = std::fs::read(dir.path().join(DIFF_FILE)).unwrap();
    let total = bytes.len();
    let (status, v) = announce(&d, &token, &manifest).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["upload_url"], "/v1/contributions/site-a/diff");
    let third = total / 3;

    // First third: 202 with the received size.
    let (status, v) = put_range(&d, &token, "site-a", &bytes, 0, third, total).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let s: ContributionStatus = serde_json::from_value(v).unwrap();
    assert_eq!((s.received_bytes, s.verdict), (third as u64, None));

    // A chunk that leaves a gap is refused and changes nothing.
    let (status, v) = put_range(&d, &token, "site-a", &bytes, 2 * third, total, total).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(v["error"]["code"], "upload_offset");
    // A total that differs from the manifest is refused.
    let (status, v) = put_range(&d, &token, "site-a", &bytes, third, 2 * third, total + 1).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "bad_range");

    // The status route says where to resume.
    let v = d.contribution("site-a", &token).await;
    assert_eq!(v["received_bytes"], third as u64);

    // Re-sending an overlapping chunk (as after a break mid-chunk) overwrites from its start.
    let (status, _) = put_range(&d, &token, "site-a", &bytes, third - 10, 2 * third, total).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, v) = put_range(&d, &token, "site-a", &bytes, 2 * third, total, total).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let s: ContributionStatus = serde_json::from_value(v).unwrap();
    assert!(s.verdict.unwrap().accepted());
    assert_eq!(s.received_bytes, total as u64);
    assert_eq!(d.coordinator.state.read().await.accepted(), vec!["site-a"]);

    // A chunked upload whose bytes do not hash to the manifest is rejected for integrity.
    let token_b = d.token("site-b").await;
    let (dir_b, manifest_b) = make_diff(
        &d.coordinator.base_dir(0),
        &base.base_sha256,
        "site-b",
        2,
        false,
    );
    let mut bytes_b = std::fs::read(dir_b.path().join(DIFF_FILE)).unwrap();
    announce(&d, &token_b, &manifest_b).await;
    let n = bytes_b.len();
    bytes_b[n - 1] ^= 0xff;
    let (status, v) = put_range(&d, &token_b, "site-b", &bytes_b, 0, n, n).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["code"], "integrity");
}

#[tokio::test]
async fn coordinator_whoami_names_the_token() {
    let d = Deployment::new(DeploymentConfig::default()).await;
    let token = d.token("site-a").await;
    let who = |t: Option<String>| {
        let router = d.router();
        async move {
            let (status, v) = call(&router, "GET", "/v1/whoami", t.as_deref(), vec![]).await;
            (status, v)
        }
    };
    let (_, v) = who(Some(token)).await;
    let me: WhoAmI = serde_json::from_value(v).unwrap();
    assert_eq!(me.contributor.as_deref(), Some("site-a"));
    assert_eq!(me.role, Some(coldfuse_shared::api::Role::Contributor));
    let (_, v) = who(Some(d.admin.clone())).await;
    assert_eq!(v["role"], "admin");
    let (_, v) = who(None).await;
    assert!(v["role"].is_null());
    let (status, _) = who(Some("cf_nope".into())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
