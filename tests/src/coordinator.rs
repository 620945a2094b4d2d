//! An in-process coordinator over a real store, and the client calls and contributions tests use.

use std::{path::Path, sync::Arc};

use axum::{
    body::Body,
    http::{header, Request, StatusCode},
    Router,
};
use candle_core::Device;
use coldfuse_coordinator::{init, routes, Coordinator, Store};
use coldfuse_shared::{
    api::{BaseManifest, DeploymentConfig, ReceiptSigner},
    diff::{BaseRef, ContributionInfo, DiffBuilder, DiffManifest, Encoding, DIFF_FILE},
    HeadInit, ModelDir, SequenceClassifier,
};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// The tiny BERT fixture used as iteration 0.
pub fn fixture() -> std::path::PathBuf {
    crate::repo_root().join("fixtures/golden/bert_tiny/model")
}

/// A deployment in a store, with its loaded coordinator and admin token.
pub struct Deployment {
    _dirs: (Option<tempfile::TempDir>, tempfile::TempDir),
    /// The store URL.
    pub store_url: String,
    work: std::path::PathBuf,
    /// The admin token.
    pub admin: String,
    /// The running coordinator (no fusion task unless the test spawns one).
    pub coordinator: Arc<Coordinator>,
    /// The receipt key (kept by the operator, never in the store).
    pub signer: ReceiptSigner,
}

impl Deployment {
    /// A deployment in a fresh `file://` store.
    pub async fn new(config: DeploymentConfig) -> Self {
        let store_dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", store_dir.path().display());
        Self::in_store(config, url, Some(store_dir)).await
    }

    /// A deployment of model dir `base` (instead of the tiny fixture) in a fresh `file://` store.
    pub async fn of_model(config: DeploymentConfig, base: &Path) -> Self {
        let store_dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", store_dir.path().display());
        Self::create(config, url, Some(store_dir), base).await
    }

    /// A deployment of model dir `base` in the (empty) store at `store_url`.
    pub async fn of_model_in_store(
        config: DeploymentConfig,
        base: &Path,
        store_url: String,
    ) -> Self {
        Self::create(config, store_url, None, base).await
    }

    /// A deployment in the (empty) store at `store_url`.
    pub async fn in_store(
        config: DeploymentConfig,
        store_url: String,
        store_dir: Option<tempfile::TempDir>,
    ) -> Self {
        Self::create(config, store_url, store_dir, &fixture()).await
    }

    async fn create(
        config: DeploymentConfig,
        store_url: String,
        store_dir: Option<tempfile::TempDir>,
        base: &Path,
    ) -> Self {
        let work = tempfile::tempdir().unwrap();
        let store = Store::open(&store_url).unwrap();
        let done = init::init(&store, base, config, &Default::default())
            .await
            .unwrap();
        let coordinator = Coordinator::load(store, work.path(), Some(done.signer.clone()))
            .await
            .unwrap();
        let work_path = work.path().to_path_buf();
        Self {
            _dirs: (store_dir, work),
            store_url,
            work: work_path,
            admin: done.admin_token,
            coordinator,
            signer: done.signer,
        }
    }

    /// The coordinator's local work directory.
    pub fn work(&self) -> &Path {
        &self.work
    }

    /// The router over the current coordinator.
    pub fn router(&self) -> Router {
        routes::router(self.coordinator.clone())
    }

    /// Drops the coordinator and loads a new one from the store (a restart).
    pub async fn reload(&mut self) {
        let store = Store::open(&self.store_url).unwrap();
        self.coordinator = Coordinator::load(store, &self.work, Some(self.signer.clone()))
            .await
            .unwrap();
    }

    /// `POST /v1/admin/fuse?wait=true`: fuses the round now and answers the lineage record.
    pub async fn fuse_now(&self) -> (StatusCode, serde_json::Value) {
        call(
            &self.router(),
            "POST",
            "/v1/admin/fuse?wait=true",
            Some(&self.admin),
            vec![],
        )
        .await
    }

    /// Fuses the round now (asserting it committed) and answers who was fused, sorted.
    pub async fn fuse_now_contributors(&self) -> Vec<String> {
        let (status, v) = self.fuse_now().await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let record: coldfuse_shared::api::IterationRecord = serde_json::from_value(v).unwrap();
        let mut fused: Vec<String> = record
            .contributions
            .into_iter()
            .map(|c| c.contributor)
            .collect();
        fused.sort();
        fused
    }

    /// `POST /v1/admin/rollback` to `iteration`.
    pub async fn rollback(&self, iteration: u64) -> (StatusCode, serde_json::Value) {
        let body = format!(r#"{{"iteration": {iteration}}}"#).into_bytes();
        call(
            &self.router(),
            "POST",
            "/v1/admin/rollback",
            Some(&self.admin),
            body,
        )
        .await
    }

    /// `GET /v1/contributions/{contributor}` with `token`.
    pub async fn contribution(&self, contributor: &str, token: &str) -> serde_json::Value {
        let uri = format!("/v1/contributions/{contributor}");
        call(&self.router(), "GET", &uri, Some(token), vec![])
            .await
            .1
    }

    /// A new contributor token for `contributor`.
    pub async fn token(&self, contributor: &str) -> String {
        let body = format!(r#"{{"role": "contributor", "contributor": "{contributor}"}}"#);
        let (status, v) = call(
            &self.router(),
            "POST",
            "/v1/admin/tokens",
            Some(&self.admin),
            body.into_bytes(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }
}

/// One request; the answer as JSON (or a JSON string of the raw text).
pub async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let (status, bytes) = call_raw(router, method, uri, token, body, None).await;
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v)
}

/// One request, optionally with a Range header; the raw answer.
pub async fn call_raw(
    router: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Vec<u8>,
    range: Option<&str>,
) -> (StatusCode, Vec<u8>) {
    let headers: Vec<(&str, &str)> = range.map(|r| ("range", r)).into_iter().collect();
    call_with(router, method, uri, token, body, &headers).await
}

/// One request with extra headers; the raw answer.
pub async fn call_with(
    router: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = router
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, bytes)
}

/// A request whose body the test feeds piece by piece (an upload that stalls until told to go on),
/// answered on its own task.
pub struct StalledRequest {
    /// Sends the next piece of the body; dropping it ends the body.
    pub body: tokio::sync::mpsc::Sender<Vec<u8>>,
    /// The answer, once the body has ended.
    pub answer: tokio::task::JoinHandle<(StatusCode, serde_json::Value)>,
}

/// Starts `method uri` with `token` and extra `headers` against `router`, its body fed through
/// [`StalledRequest::body`].
pub fn stalled_request(
    router: &Router,
    method: &str,
    uri: &str,
    token: &str,
    headers: &[(&str, String)],
) -> StalledRequest {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(axum::body::Bytes::from(b)), rx))
    });
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    let request = request.body(Body::from_stream(stream)).unwrap();
    let router = router.clone();
    let answer = tokio::spawn(async move {
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    });
    StalledRequest { body: tx, answer }
}

/// `PUT`s bytes `start..end` of `contributor`'s diff (of `total` bytes) as one `Content-Range` chunk.
pub async fn put_range(
    d: &Deployment,
    token: &str,
    contributor: &str,
    bytes: &[u8],
    start: usize,
    end: usize,
    total: usize,
) -> (StatusCode, serde_json::Value) {
    let range = format!("bytes {start}-{}/{total}", end - 1);
    let (status, body) = call_with(
        &d.router(),
        "PUT",
        &format!("/v1/contributions/{contributor}/diff"),
        Some(token),
        bytes[start..end].to_vec(),
        &[("content-range", &range)],
    )
    .await;
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

/// Waits (up to 30 s) until an upload request is past its checks and receiving (bytes of a running
/// request are not in `received_bytes` until it ends); panics otherwise.
pub async fn wait_uploading(d: &Deployment) {
    for _ in 0..3000 {
        if d.coordinator.metrics.uploads_in_flight() > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no upload started");
}

/// A contribution from `seed`: every body weight of the current base moved by a small amount.
pub fn make_diff(
    base_dir: &Path,
    base_sha: &str,
    contributor: &str,
    seed: u64,
    poison: bool,
) -> (tempfile::TempDir, DiffManifest) {
    let (dir, manifest) = shaped_diff(base_dir, base_sha, contributor, seed, 1.0, |_| true);
    if poison {
        // Same size, one value turned into NaN, manifest hash updated: only the value scan can catch it.
        let path = dir.path().join(DIFF_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let mut m = manifest;
        m.diff_sha256 = coldfuse_shared::hash::sha256_file(&path).unwrap();
        return (dir, m);
    }
    (dir, manifest)
}

/// As [`make_diff`] (without poison), with every delta multiplied by `scale` and only the body
/// tensors whose canonical name passes `keep`.
pub fn shaped_diff(
    base_dir: &Path,
    base_sha: &str,
    contributor: &str,
    seed: u64,
    scale: f64,
    keep: impl Fn(&str) -> bool,
) -> (tempfile::TempDir, DiffManifest) {
    edited_diff(base_dir, base_sha, contributor, seed, |k, t| {
        if !keep(k) {
            return None;
        }
        let delta = ((k.len() as f32 + seed as f32) * 0.37).sin() as f64 * 1e-2 * scale;
        Some((t + delta).unwrap())
    })
}

/// The diff of a body whose tensors `edit` replaces (by canonical name; None: left out of the diff).
pub fn edited_diff(
    base_dir: &Path,
    base_sha: &str,
    contributor: &str,
    seed: u64,
    edit: impl Fn(&str, &candle_core::Tensor) -> Option<candle_core::Tensor>,
) -> (tempfile::TempDir, DiffManifest) {
    let base = ModelDir::open(base_dir).unwrap();
    let model = SequenceClassifier::load(
        &base,
        HeadInit::Fresh {
            num_labels: 2,
            seed,
        },
        &Device::Cpu,
    )
    .unwrap();
    let mut body = model.encoder.vars();
    body.retain(|k, var| match edit(k, var.as_tensor()) {
        Some(t) => {
            var.set(&t).unwrap();
            true
        }
        None => false,
    });
    let dir = tempfile::tempdir().unwrap();
    let mut builder = DiffBuilder::new(Encoding::F32).unwrap();
    builder.add_body(&base, &body).unwrap();
    let info = ContributionInfo {
        contributor: contributor.into(),
        num_examples: 10,
        metrics: Default::default(),
    };
    let base_ref = BaseRef {
        id: "test".into(),
        sha256: base_sha.into(),
    };
    let manifest = builder.finish(dir.path(), base_ref, "bert", info).unwrap();
    (dir, manifest)
}

/// Announces a contribution (`POST /v1/contributions`); the answer.
pub async fn announce(
    d: &Deployment,
    token: &str,
    manifest: &DiffManifest,
) -> (StatusCode, serde_json::Value) {
    call(
        &d.router(),
        "POST",
        "/v1/contributions",
        Some(token),
        manifest.to_json(),
    )
    .await
}

/// Announces and uploads a contribution; the upload's answer (or the announce's error).
pub async fn contribute(
    d: &Deployment,
    token: &str,
    dir: &Path,
    manifest: &DiffManifest,
) -> (StatusCode, serde_json::Value) {
    let (status, v) = announce(d, token, manifest).await;
    if status != StatusCode::CREATED {
        return (status, v);
    }
    let url = v["upload_url"].as_str().unwrap().to_string();
    let bytes = std::fs::read(dir.join(DIFF_FILE)).unwrap();
    call(&d.router(), "PUT", &url, Some(token), bytes).await
}

/// A fresh diff of `name` (from `seed`) against the latest base, announced and uploaded; asserts it
/// was accepted.
pub async fn contribute_accepted(d: &Deployment, token: &str, name: &str, seed: u64) {
    let base = latest(d).await;
    let base_dir = d.coordinator.base_dir(base.iteration);
    let (dir, m) = make_diff(&base_dir, &base.base_sha256, name, seed, false);
    let (status, v) = contribute(d, token, dir.path(), &m).await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

/// The latest base's manifest.
pub async fn latest(d: &Deployment) -> BaseManifest {
    let (_, v) = call(&d.router(), "GET", "/v1/bases/latest", None, vec![]).await;
    serde_json::from_value(v).unwrap()
}
