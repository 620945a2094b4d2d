//! Uploads go straight to the store: each 8 MiB part is hashed and checked, stored as the next part
//! of a multipart upload and checkpointed, so the coordinator's disk holds less than one part per
//! upload, a restart resumes where the parts end, and a bad value is refused by the request that
//! carries it, before the rest is sent. On a `file://` store and on a real S3 server (SeaweedFS).

use std::path::Path;

use axum::http::StatusCode;
use coldfuse_e2e::{
    coordinator::{announce, latest, put_range, Deployment},
    process::verify_from_store,
    s3::S3Server,
};
use coldfuse_shared::{
    api::{keys, ContributionStatus, DeploymentConfig},
    diff::{BaseRef, DiffManifest, Encoding, DIFF_FILE},
    hash::sha256_file,
    store::Store,
    synthetic,
};

const PART: u64 = 8 << 20;
const CHUNK: usize = 3 << 20;

/// Bytes under `dir` (files of every depth).
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata().unwrap() {
            m if m.is_dir() => bytes_under(&e.path()),
            m => m.len(),
        })
        .sum()
}

/// A deployment of a synthetic base of 5 M parameters (a 10 MB bf16 diff: a part and a tail) in
/// `store_url` (a fresh `file://` store when `None`).
async fn deployment(tmp: &Path, store_url: Option<String>) -> (Deployment, BaseRef, Layout) {
    let layout = synthetic::roberta_like(5_000_000);
    let source = tmp.join("base");
    synthetic::write_base(&source, &layout).unwrap();
    let config = DeploymentConfig {
        quorum: 10,
        ..DeploymentConfig::default()
    };
    let d = match store_url {
        Some(url) => Deployment::of_model_in_store(config, &source, url).await,
        None => Deployment::of_model(config, &source).await,
    };
    let base = BaseRef {
        id: "parts".into(),
        sha256: latest(&d).await.base_sha256,
    };
    (d, base, layout)
}

type Layout = Vec<(String, Vec<usize>)>;

/// Announces diff `index` of `name`; answers its token, manifest and bytes.
async fn announced(
    d: &Deployment,
    tmp: &Path,
    (base, layout): (&BaseRef, &Layout),
    name: &str,
    index: usize,
) -> (String, DiffManifest, Vec<u8>) {
    let dir = tmp.join(name);
    let mut manifest = synthetic::write_diff(&dir, base, layout, Encoding::Bf16, index).unwrap();
    manifest.contributor = name.into();
    let token = d.token(name).await;
    let (status, v) = announce(d, &token, &manifest).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let bytes = std::fs::read(dir.join(DIFF_FILE)).unwrap();
    assert!(bytes.len() as u64 > PART, "{} bytes", bytes.len());
    (token, manifest, bytes)
}

fn checkpoint_key(name: &str) -> String {
    keys::contribution_file(1, name, keys::UPLOAD)
}

/// Uploads `site-a`'s diff in 3 MiB chunks with a restart after the first part is stored, then
/// checks what is stored and what is left.
async fn parted_upload_resumes_after_a_restart(
    d: &mut Deployment,
    tmp: &Path,
    base: (&BaseRef, &Layout),
) {
    let (token, manifest, bytes) = announced(d, tmp, base, "site-a", 1).await;
    let store = Store::open(&d.store_url).unwrap();
    let diff_key = keys::contribution_file(1, "site-a", DIFF_FILE);
    let mut start = 0;
    let mut restarted = false;
    while start < bytes.len() {
        let end = (start + CHUNK).min(bytes.len());
        let (status, v) = put_range(d, &token, "site-a", &bytes, start, end, bytes.len()).await;
        start = end;
        if end == bytes.len() {
            assert_eq!(status, StatusCode::OK, "{v}");
            let s: ContributionStatus = serde_json::from_value(v).unwrap();
            assert!(s.verdict.unwrap().accepted());
            break;
        }
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["received_bytes"], end as u64);
        // The coordinator's disk holds what is short of a part, never the diff.
        let local = bytes_under(&d.work().join("uploads"));
        assert!(
            local < PART + 4096,
            "{local} bytes on local disk after {end}"
        );
        let saved: Option<serde_json::Value> =
            store.get_json(&checkpoint_key("site-a")).await.unwrap();
        match end as u64 >= PART {
            true => assert_eq!(saved.unwrap()["stored"], PART * (end as u64 / PART)),
            false => assert!(saved.is_none()),
        }
        assert!(
            store.get_stream(&diff_key, None).await.is_err(),
            "the diff appears only once complete and checked"
        );
        if end as u64 > PART && !restarted {
            d.reload().await;
            restarted = true;
            let v = d.contribution("site-a", &token).await;
            assert_eq!(v["received_bytes"], end as u64, "{v}");
        }
    }
    assert!(restarted);
    // The stored object is the diff; nothing of the upload is left behind.
    let copy = tmp.join("stored.safetensors");
    store.get_file(&diff_key, &copy).await.unwrap();
    assert_eq!(sha256_file(&copy).unwrap(), manifest.diff_sha256);
    let saved: Option<serde_json::Value> = store.get_json(&checkpoint_key("site-a")).await.unwrap();
    assert!(saved.is_none(), "the checkpoint went with the upload");
    assert_eq!(bytes_under(&d.work().join("uploads")), 0);
    if let Some(dir) = d.store_url.strip_prefix("file://") {
        assert_eq!(bytes_under(&Path::new(dir).join(".uploads")), 0);
    }
    let (status, v) = d.fuse_now().await;
    assert_eq!(status, StatusCode::OK, "{v}");
    verify_from_store(&d.store_url, 1);
}

/// A NaN in `site-b`'s first part: the request that completes that part is rejected, its parts
/// dropped.
async fn a_bad_value_is_refused_by_the_part_that_carries_it(
    d: &Deployment,
    tmp: &Path,
    base: (&BaseRef, &Layout),
) {
    let (token, _manifest, mut bytes) = announced(d, tmp, base, "site-b", 2).await;
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let at = 8 + header + 4000;
    bytes[at..at + 2].copy_from_slice(&[0xc0, 0x7f]); // a bf16 NaN
    let (status, v) = put_range(d, &token, "site-b", &bytes, 0, CHUNK, bytes.len()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let (status, v) = put_range(d, &token, "site-b", &bytes, CHUNK, 2 * CHUNK, bytes.len()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    // This chunk completes the first part: it is checked before it is stored.
    let (status, v) = put_range(
        d,
        &token,
        "site-b",
        &bytes,
        2 * CHUNK,
        3 * CHUNK,
        bytes.len(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "non_finite");
    let store = Store::open(&d.store_url).unwrap();
    let saved: Option<serde_json::Value> = store.get_json(&checkpoint_key("site-a")).await.unwrap();
    assert!(saved.is_none());
    assert_eq!(bytes_under(&d.work().join("uploads")), 0);
    if let Some(dir) = d.store_url.strip_prefix("file://") {
        assert_eq!(bytes_under(&Path::new(dir).join(".uploads")), 0);
    }
    let v = d.contribution("site-b", &token).await;
    assert_eq!(v["verdict"]["status"], "rejected", "{v}");
}

async fn run(store_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let (mut d, base, layout) = deployment(tmp.path(), store_url).await;
    a_bad_value_is_refused_by_the_part_that_carries_it(&d, tmp.path(), (&base, &layout)).await;
    parted_upload_resumes_after_a_restart(&mut d, tmp.path(), (&base, &layout)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_stream_to_the_store_in_checked_parts() {
    run(None).await;
    let s3 = S3Server::start();
    s3.export_env();
    run(Some(s3.url("parts"))).await;
}
