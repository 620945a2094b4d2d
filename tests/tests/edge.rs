//! The coordinator's network edge, on the real binary: built-in TLS (verified by the CLI, reloaded on
//! SIGHUP and file change without dropping open connections, mutual TLS), half-open connections
//! that would exhaust the process's file descriptors, SIGTERM during a stalled upload, and the
//! request id / JSON access log / Prometheus metrics / handler deadline of every request.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use coldfuse_coordinator::edge::pki::{self, CertArgs};
use coldfuse_e2e::{
    coordinator::{fixture, make_diff},
    process::{bin, contributor_token, init_fixture, Launch, Server},
};
use coldfuse_shared::{api::BaseManifest, diff::DIFF_FILE};
use futures::StreamExt;
use reqwest::{Certificate, Client, Identity, StatusCode};

/// A private CA and a server certificate for localhost/127.0.0.1 (and client certificates for
/// `clients`) in `dir`.
fn certs(dir: &Path, clients: &[&str]) -> PathBuf {
    pki::generate(&CertArgs {
        out: dir.to_path_buf(),
        hosts: vec!["localhost".into(), "127.0.0.1".into()],
        clients: clients.iter().map(|c| c.to_string()).collect(),
    })
    .unwrap();
    dir.to_path_buf()
}

/// A deployment of the tiny fixture in a new file:// store: (store dir, work dir, store URL, admin token).
fn deployment(quorum: usize) -> (tempfile::TempDir, tempfile::TempDir, String, String) {
    let store_dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let store = format!("file://{}", store_dir.path().display());
    let admin = init_fixture(&store, work.path(), quorum);
    (store_dir, work, store, admin)
}

fn trusting(ca: &Path) -> Client {
    Client::builder()
        .add_root_certificate(Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap())
        .build()
        .unwrap()
}

fn with_identity(ca: &Path, dir: &Path, site: &str) -> Client {
    let mut pem = std::fs::read(dir.join(format!("client-{site}.pem"))).unwrap();
    pem.extend(std::fs::read(dir.join(format!("client-{site}-key.pem"))).unwrap());
    Client::builder()
        .add_root_certificate(Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap())
        .identity(Identity::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

async fn healthz(client: &Client, url: &str) -> Result<StatusCode, reqwest::Error> {
    let response = client.get(format!("{url}/healthz")).send().await?;
    let status = response.status();
    // Read to the end, so the connection goes back to the pool for reuse.
    response.bytes().await?;
    Ok(status)
}

/// The whole error chain as text (reqwest hides the TLS cause in its sources).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn copy_pair(from: &Path, to: &Path) {
    for f in ["server.pem", "server-key.pem"] {
        // Written to a temporary name and renamed, as certificate tools do.
        let tmp = to.join(format!("{f}.new"));
        std::fs::copy(from.join(f), &tmp).unwrap();
        std::fs::rename(&tmp, to.join(f)).unwrap();
    }
}

async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {limit:?}");
}

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin("coldfuse"))
        .args(args)
        .env("COLDFUSE_CONFIG", "/nonexistent/coldfuse-edge-test.toml")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_by_clients_and_reloads_without_dropping_open_connections() {
    let (_store_dir, work, store, admin) = deployment(2);
    let (first, second, served) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (first, second) = (certs(first.path(), &[]), certs(second.path(), &[]));
    copy_pair(&first, served.path());
    let cert = served.path().join("server.pem");
    let key = served.path().join("server-key.pem");
    let server = Server::launch(
        &store,
        &work.path().join("w"),
        &Launch {
            env: &[
                ("COLDFUSE_TLS_CERT", cert.to_str().unwrap()),
                ("COLDFUSE_TLS_KEY", key.to_str().unwrap()),
            ],
            // Idle keep-alive connections stay open long enough to outlive the reload.
            args: &["--tls-poll-secs", "1", "--header-timeout-secs", "120"],
            ..Launch::default()
        },
    );
    let url = format!("https://localhost:{}", server.port);

    // Verified against the private CA; refused without it; no plain HTTP on the TLS port.
    let old = trusting(&first.join("ca.pem"));
    assert_eq!(healthz(&old, &url).await.unwrap(), StatusCode::OK);
    let untrusting = healthz(&Client::new(), &url).await.unwrap_err();
    assert!(
        chain(&untrusting).to_lowercase().contains("certificate"),
        "{}",
        chain(&untrusting)
    );
    assert!(healthz(&Client::new(), &server.url).await.is_err());

    // The CLI: --ca-cert makes it trust the private CA; without it the error says why.
    let token: serde_json::Value = old
        .post(format!("{url}/v1/admin/tokens"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"role": "contributor", "contributor": "site-a"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let ok = cli(&[
        "status",
        "--coordinator",
        &url,
        "--token",
        &token,
        "--ca-cert",
        first.join("ca.pem").to_str().unwrap(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let started = Instant::now();
    let refused = cli(&["status", "--coordinator", &url, "--token", &token]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(stderr.contains("--ca-cert"), "{stderr}");
    assert!(
        !stderr.contains("retrying"),
        "a certificate that does not verify is not retried: {stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    // SIGHUP after the files changed: new connections get the new certificate, the open one stays.
    assert_eq!(healthz(&old, &url).await.unwrap(), StatusCode::OK);
    copy_pair(&second, served.path());
    server.signal("HUP");
    let new = trusting(&second.join("ca.pem"));
    until(
        "the new certificate is served",
        Duration::from_secs(10),
        async || healthz(&new, &url).await.is_ok(),
    )
    .await;
    assert!(
        healthz(&trusting(&first.join("ca.pem")), &url)
            .await
            .is_err(),
        "a fresh connection gets the new certificate"
    );
    assert_eq!(
        healthz(&old, &url).await.unwrap(),
        StatusCode::OK,
        "the connection opened before the reload is still served"
    );

    // A broken file does not take the server down: the previous certificate stays.
    std::fs::write(&key, "not a key").unwrap();
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        healthz(&trusting(&second.join("ca.pem")), &url)
            .await
            .unwrap(),
        StatusCode::OK
    );

    // A file change alone (no signal) is picked up too.
    copy_pair(&first, served.path());
    until(
        "the changed files are served",
        Duration::from_secs(10),
        async || {
            healthz(&trusting(&first.join("ca.pem")), &url)
                .await
                .is_ok()
        },
    )
    .await;
    assert!(server
        .logs()
        .iter()
        .any(|l| l.contains("TLS reload failed")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_turns_away_sites_without_a_certificate_from_the_ca() {
    let (_store_dir, work, store, _admin) = deployment(2);
    let (pki_dir, stranger_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dir = certs(pki_dir.path(), &["site-a"]);
    let stranger = certs(stranger_dir.path(), &["site-a"]);
    let server = Server::launch(
        &store,
        &work.path().join("w"),
        &Launch {
            args: &[
                "--tls-cert",
                dir.join("server.pem").to_str().unwrap(),
                "--tls-key",
                dir.join("server-key.pem").to_str().unwrap(),
                "--client-ca",
                dir.join("ca.pem").to_str().unwrap(),
            ],
            ..Launch::default()
        },
    );
    let url = format!("https://127.0.0.1:{}", server.port);
    let ca = dir.join("ca.pem");
    assert_eq!(
        healthz(&with_identity(&ca, &dir, "site-a"), &url)
            .await
            .unwrap(),
        StatusCode::OK
    );
    assert!(
        healthz(&trusting(&ca), &url).await.is_err(),
        "no client certificate"
    );
    assert!(
        healthz(&with_identity(&ca, &stranger, "site-a"), &url)
            .await
            .is_err(),
        "a client certificate from another CA"
    );
    // The CLI presents its certificate.
    let ok = cli(&[
        "status",
        "--coordinator",
        &url,
        "--ca-cert",
        ca.to_str().unwrap(),
        "--client-cert",
        dir.join("client-site-a.pem").to_str().unwrap(),
        "--client-key",
        dir.join("client-site-a-key.pem").to_str().unwrap(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// Before the limit, 1,100 half-sent headers under `ulimit -n 1024` made `accept` fail with EMFILE
/// and `/healthz` unreachable for as long as they were held. Now the oldest connection without a
/// request makes room for each new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_twice_the_connection_limit_of_half_open_requests_is_held() {
    let (_store_dir, work, store, _admin) = deployment(2);
    let limit = 100;
    let server = Server::launch(
        &store,
        &work.path().join("w"),
        &Launch {
            args: &[
                "--max-connections",
                &limit.to_string(),
                "--header-timeout-secs",
                "300",
            ],
            // Fewer descriptors than the attack's connections: without a limit, accept fails.
            open_files: Some(160),
            ..Launch::default()
        },
    );
    let addr = format!("127.0.0.1:{}", server.port);
    let mut held = Vec::new();
    for _ in 0..2 * limit {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        held.push(s);
    }
    let client = Client::builder()
        .timeout(Duration::from_secs(3))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for _ in 0..10 {
        assert_eq!(
            healthz(&client, &server.url).await.unwrap(),
            StatusCode::OK,
            "/healthz while {} half-open requests are held",
            held.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = metrics_text(&client, &server.url).await.unwrap();
    let evicted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("coldfuse_connections_refused_total{reason=\"evicted\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(evicted >= limit as f64, "{metrics}");
    drop(held);
}

/// Before the deadline, SIGTERM during a stalled upload left the process alive and not serving
/// until the client went away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cuts_a_stalled_upload_at_the_shutdown_deadline() {
    let (_store_dir, work, store, admin) = deployment(2);
    let mut server = Server::start(
        &store,
        &work.path().join("w"),
        &[
            ("COLDFUSE_SHUTDOWN_GRACE_SECS", "2"),
            ("COLDFUSE_UPLOAD_BODY_IDLE_SECS", "600"),
        ],
    );
    let client = Client::new();
    let token = contributor_token(&server.url, &admin, "site-a").await;
    let stalled = stall_upload(&client, &server.url, &token, "site-a").await;
    until(
        "the upload is receiving",
        Duration::from_secs(10),
        async || metric(&client, &server.url, "coldfuse_uploads_in_flight").await == Some(1.0),
    )
    .await;
    server.signal("TERM");
    let took = server
        .wait_exit(Duration::from_secs(15))
        .expect("the coordinator exits within its shutdown deadline");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "exited after {took:?}: the stalled upload gets the 2 s grace, then is cut"
    );
    assert!(
        stalled.await.unwrap().is_err(),
        "the stalled upload was cut"
    );
}

/// Announces a diff of `contributor` against the latest base; answers the diff file's bytes.
async fn announce(client: &Client, url: &str, token: &str, contributor: &str) -> Vec<u8> {
    let base: BaseManifest = client
        .get(format!("{url}/v1/bases/latest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (dir, manifest) = make_diff(&fixture(), &base.base_sha256, contributor, 1, false);
    let r = client
        .post(format!("{url}/v1/contributions"))
        .bearer_auth(token)
        .body(manifest.to_json())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    std::fs::read(dir.path().join(DIFF_FILE)).unwrap()
}

/// Announces `contributor`'s diff and starts a PUT that sends half of it, then nothing.
async fn stall_upload(
    client: &Client,
    url: &str,
    token: &str,
    contributor: &str,
) -> tokio::task::JoinHandle<Result<reqwest::Response, reqwest::Error>> {
    let bytes = announce(client, url, token, contributor).await;
    let half = bytes[..bytes.len() / 2].to_vec();
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(half) })
        .chain(futures::stream::pending());
    let put = client
        .put(format!("{url}/v1/contributions/{contributor}/diff"))
        .bearer_auth(token)
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    tokio::spawn(put)
}

/// The `/metrics` text.
async fn metrics_text(client: &Client, url: &str) -> Option<String> {
    client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The value of an unlabelled metric, read from `/metrics`.
async fn metric(client: &Client, url: &str, name: &str) -> Option<f64> {
    let text = metrics_text(client, url).await?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Parses a Prometheus text exposition with the reference parser (`prometheus_client`, PyPI,
/// installed by scripts/assets.sh) into its samples.
fn parse_prometheus(text: &str) -> Vec<serde_json::Value> {
    let python = std::env::var("COLDFUSE_ASSETS_PYTHON").expect(
        "COLDFUSE_ASSETS_PYTHON is not set: run `eval \"$(scripts/assets.sh)\"` (scripts/test.sh does)",
    );
    const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append({"type": family.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(samples))
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample<'a>(
    samples: &'a [serde_json::Value],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a serde_json::Value> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_carry_ids_into_answers_json_logs_and_metrics_and_slow_handlers_hit_the_deadline()
{
    let (_store_dir, work, store, admin) = deployment(3);
    let server = Server::start(
        &store,
        &work.path().join("w"),
        &[
            ("COLDFUSE_LOG_FORMAT", "json"),
            ("COLDFUSE_REQUEST_TIMEOUT_SECS", "1"),
            ("COLDFUSE_FAULT_PAUSE_BEFORE_COMMIT_MS", "3000"),
        ],
    );
    let client = Client::new();
    let url = &server.url;
    let token = contributor_token(url, &admin, "site-a").await;
    let me: serde_json::Value = client
        .get(format!("{url}/v1/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token_id = me["token_id"].as_str().unwrap().to_string();

    // An accepted contribution, so that a fusion can be forced.
    let diff = announce(&client, url, &token, "site-a").await;
    let r = client
        .put(format!("{url}/v1/contributions/site-a/diff"))
        .bearer_auth(&token)
        .body(diff.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Every answer has an id; an error body repeats it.
    let round = client
        .get(format!("{url}/v1/round"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(round.status(), StatusCode::OK);
    let round_id = round.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(round_id.len(), 16, "{round_id}");
    let denied = client
        .get(format!("{url}/v1/whoami"))
        .bearer_auth("cf_not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    let denied_id = denied.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: serde_json::Value = denied.json().await.unwrap();
    assert_eq!(body["request_id"], denied_id);
    assert_ne!(denied_id, round_id);

    // A handler past the request deadline: 503 `timeout` with the id; the fusion itself goes on.
    let slow = client
        .post(format!("{url}/v1/admin/fuse?wait=true"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
    let slow_id = slow.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: serde_json::Value = slow.json().await.unwrap();
    assert_eq!(body["error"]["code"], "timeout");
    assert_eq!(body["request_id"], slow_id);
    until("the fusion commits", Duration::from_secs(30), async || {
        let r: serde_json::Value = client
            .get(format!("{url}/v1/round"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["base_iteration"] == 1
    })
    .await;

    // /metrics passes the reference parser and counts per route, status and byte.
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse_prometheus(&text);
    let ok_rounds = sample(
        &samples,
        "coldfuse_http_requests_total",
        &[("method", "GET"), ("route", "/v1/round"), ("status", "200")],
    )
    .unwrap_or_else(|| panic!("no /v1/round count:\n{text}"));
    assert!(ok_rounds["value"].as_f64().unwrap() >= 2.0);
    assert!(sample(
        &samples,
        "coldfuse_http_requests_total",
        &[("route", "/v1/admin/fuse"), ("status", "503")]
    )
    .is_some());
    assert!(sample(
        &samples,
        "coldfuse_http_request_duration_seconds_bucket",
        &[
            ("route", "/v1/contributions/{contributor}/diff"),
            ("le", "+Inf")
        ]
    )
    .is_some());
    let bytes_in = sample(&samples, "coldfuse_http_request_bytes_total", &[]).unwrap();
    assert!(bytes_in["value"].as_f64().unwrap() >= diff.len() as f64);
    let open = sample(&samples, "coldfuse_connections_open", &[]).unwrap();
    assert!(open["value"].as_f64().unwrap() >= 1.0);
    assert!(sample(&samples, "coldfuse_fusions_total", &[]).unwrap()["value"] == 1.0);

    // JSON access log: one object per line, with the request's id, route and token id — never
    // the token itself.
    let logs = server.logs();
    assert!(
        logs.iter()
            .all(|l| !l.contains(&token) && !l.contains(&admin)),
        "a bearer token reached the log"
    );
    let events: Vec<serde_json::Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let access = events
        .iter()
        .find(|e| e["target"] == "coldfuse::access" && e["span"]["id"] == round_id)
        .unwrap_or_else(|| panic!("no access line for {round_id}: {logs:#?}"));
    assert_eq!(access["span"]["route"], "/v1/round");
    assert_eq!(access["span"]["method"], "GET");
    assert_eq!(access["span"]["token"], token_id);
    assert_eq!(access["fields"]["status"], 200);
    assert!(access["fields"]["ms"].as_f64().is_some());
    assert!(
        events
            .iter()
            .any(|e| e["span"]["id"] == slow_id
                && e["fields"]["message"] == "request deadline passed")
    );
}

/// A client that requests a large download and stops reading is serving a request, so it is never
/// evicted: without a send deadline a few of them held every slot for as long as they liked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_a_download_give_their_slots_back_at_the_send_deadline() {
    // A base large enough (20 MB) that its download cannot sit in the socket buffers.
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("base");
    let layout = coldfuse_shared::synthetic::roberta_like(5_000_000);
    coldfuse_shared::synthetic::write_base(&source, &layout).unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", store_dir.path().display());
    let status = std::process::Command::new(bin("coldfuse-coordinator"))
        .args(["init", "--store", &store, "--admin-token-file"])
        .arg(scratch.path().join("admin"))
        .arg("--base")
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success());
    let server = Server::launch(
        &store,
        &scratch.path().join("w"),
        &Launch {
            args: &["--max-connections", "2", "--send-idle-secs", "2"],
            ..Launch::default()
        },
    );
    let addr = format!("127.0.0.1:{}", server.port);
    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /v1/bases/0/files/model.safetensors HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        readers.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = Client::builder()
        .timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    assert!(
        healthz(&client, &server.url).await.is_err(),
        "both slots are held by downloads nobody reads"
    );
    until(
        "the stalled downloads give their slots back",
        Duration::from_secs(15),
        async || healthz(&client, &server.url).await.is_ok(),
    )
    .await;
    // The first answer may come while the other download still holds its slot and the server has
    // not yet seen the probe's close, so the metrics are read once a slot is free again too.
    until(
        "the refusals while full are counted",
        Duration::from_secs(15),
        async || {
            metrics_text(&client, &server.url)
                .await
                .is_some_and(|m| m.contains("coldfuse_connections_refused_total{reason=\"full\"}"))
        },
    )
    .await;
    drop(readers);
}
