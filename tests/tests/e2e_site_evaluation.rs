//! Site evaluation end to end with the real binaries: a `coldfuse-coordinator` process whose gate
//! waits for three contributor sites' reports (median rule), and three sites, each with its own
//! private topic task, behind a recording proxy.
//!
//! 1. A hostile contributor's diff that zeroes one LayerNorm scale (a tiny norm, within the default
//!    norm bound) is fused into candidate 1. The sites run `coldfuse run --evaluate-candidates`: each
//!    scores the candidate on its own dev data first, and the gate holds it on their reports.
//! 2. The operator discards it; the sites' own honest round is fused into candidate 2, which they
//!    score with `coldfuse evaluate --once`; the gate promotes it.
//! 3. Each site finds its report, by the digest it computes itself, among those the decisions used;
//!    `coldfuse gate status` shows them; nothing the sites sent contains their text, and each report
//!    body carries only the aggregate fields.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use coldfuse_e2e::{
    coordinator::edited_diff,
    models::minilm_layers,
    process::{bin, contributor_token, outputs_of, site_cli, Server},
    proxy::Proxy,
};
use coldfuse_shared::{
    api::{BaseManifest, GateStatus, Promotion, PromotionState, ReportAnswer},
    diff::DIFF_FILE,
};
use reqwest::Client;

const SITES: [&str; 3] = ["site-weather", "site-sport", "site-music"];

/// Each site's two topics and their words.
const TOPICS: [[(&str, [&str; 8]); 2]; 3] = [
    [
        (
            "weather",
            [
                "sunny", "rain", "cloudy", "storm", "warm", "wind", "snow", "forecast",
            ],
        ),
        (
            "finance",
            [
                "stock", "market", "bank", "profit", "shares", "loan", "investor", "price",
            ],
        ),
    ],
    [
        (
            "sport",
            [
                "goal", "match", "team", "score", "player", "coach", "league", "stadium",
            ],
        ),
        (
            "cooking",
            [
                "recipe", "oven", "flour", "sauce", "bake", "garlic", "kitchen", "pasta",
            ],
        ),
    ],
    [
        (
            "music",
            [
                "guitar", "song", "melody", "concert", "drum", "singer", "album", "chord",
            ],
        ),
        (
            "medicine",
            [
                "doctor", "patient", "fever", "clinic", "vaccine", "nurse", "dose", "surgery",
            ],
        ),
    ],
];

/// Site `site`'s rows `range` as JSONL in `path`; answers the texts.
fn write_rows(path: &Path, site: usize, range: std::ops::Range<usize>) -> Vec<String> {
    let mut lines = String::new();
    let mut texts = Vec::new();
    for i in range {
        let (label, words) = TOPICS[site][i % 2];
        let w = |j: usize| words[(i * 7 + j * 3 + site) % 8];
        let text = format!(
            "the {} and {} with {} near {} rowq{site}z{i}q",
            w(0),
            w(1),
            w(2),
            w(3)
        );
        lines.push_str(&serde_json::json!({"text": text, "label": label}).to_string());
        lines.push('\n');
        texts.push(text);
    }
    std::fs::write(path, lines).unwrap();
    texts
}

struct Deployment {
    dir: tempfile::TempDir,
    server: Server,
    proxy: Proxy,
    admin: String,
    tokens: Vec<String>,
    texts: Vec<String>,
}

impl Deployment {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `coldfuse` as site `i`, through the proxy.
    fn coldfuse(&self, i: usize) -> Command {
        site_cli(&self.proxy.url, &self.tokens[i], self.dir.path(), i)
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let r = Client::new()
            .get(format!("{}{path}", self.server.url))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn post(&self, token: &str, path: &str, body: Vec<u8>) -> serde_json::Value {
        let r = Client::new()
            .post(format!("{}{path}", self.server.url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    /// Waits until the gate's candidate is `iteration`.
    async fn wait_candidate(&self, iteration: u64) {
        let started = Instant::now();
        loop {
            let s: GateStatus = self.get("/v1/gate").await;
            if s.candidate
                .as_ref()
                .is_some_and(|p| p.iteration == iteration)
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no candidate {iteration}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The flags that score a candidate quickly (linear probe only).
const EVAL_FLAGS: [&str; 11] = [
    "--probe-only",
    "--probe-seeds",
    "4",
    "--probe-epochs",
    "30",
    "--heldout-examples",
    "24",
    "--heldout-dev",
    "32",
    "--heldout-max-len",
    "16",
];

async fn start() -> Deployment {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base0");
    minilm_layers(6, &base);
    let store = format!("file://{}", dir.path().join("store").display());
    let admin_file = dir.path().join("admin-token");
    let status = Command::new(bin("coldfuse-coordinator"))
        .args([
            "init",
            "--quorum",
            "3",
            "--name",
            "test/minilm",
            "--store",
            &store,
        ])
        .args([
            "--gate-tolerance",
            "0.05",
            "--gate-min-evals",
            "0",
            "--gate-site-reports",
            "3",
        ])
        .arg("--base")
        .arg(&base)
        .arg("--admin-token-file")
        .arg(&admin_file)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "coordinator init failed");
    let admin = std::fs::read_to_string(&admin_file)
        .unwrap()
        .trim()
        .to_string();
    let server = Server::start(&store, &dir.path().join("work"), &[]);
    let proxy = Proxy::start(server.url.trim_start_matches("http://"), None).await;
    let mut tokens = Vec::new();
    let mut texts = Vec::new();
    for (i, site) in SITES.iter().enumerate() {
        tokens.push(contributor_token(&server.url, &admin, site).await);
        texts.extend(write_rows(
            &dir.path().join(format!("{site}-train.jsonl")),
            i,
            0..48,
        ));
        texts.extend(write_rows(
            &dir.path().join(format!("{site}-dev.jsonl")),
            i,
            1000..1128,
        ));
    }
    Deployment {
        dir,
        server,
        proxy,
        admin,
        tokens,
        texts,
    }
}

/// Runs one `coldfuse` per site at once (`args(i)` builds site `i`'s command); asserts success.
async fn each_site(d: &Deployment, args: impl Fn(usize, &mut Command)) -> Vec<String> {
    let commands = (0..3)
        .map(|i| {
            let mut cmd = d.coldfuse(i);
            args(i, &mut cmd);
            cmd
        })
        .collect();
    let outputs = outputs_of(commands).await;
    outputs
        .iter()
        .enumerate()
        .map(|(i, out)| {
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "site {i} failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        })
        .collect()
}

/// Every report body the sites sent: their JSON objects' key sets.
fn report_bodies(sent: &[u8]) -> Vec<serde_json::Value> {
    let text = String::from_utf8_lossy(sent);
    let mut bodies = Vec::new();
    for (at, _) in text.match_indices("/reports HTTP/1.1\r\n") {
        let rest = &text[at..];
        let head_end = rest.find("\r\n\r\n").unwrap();
        let length: usize = rest[..head_end]
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap();
        let body = &rest.as_bytes()[head_end + 4..head_end + 4 + length];
        bodies.push(serde_json::from_slice(body).unwrap());
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_three_sites_hold_a_wrecked_candidate_and_promote_an_honest_one() {
    let d = start().await;

    // A hostile contributor zeroes the last layer's output LayerNorm scale: every token's features
    // become the same vector. Its norm is a small share of the body's, so the default bound passes it.
    let mallory = contributor_token(&d.server.url, &d.admin, "mallory").await;
    let base: BaseManifest = d.get("/v1/bases/latest").await;
    let (diff, manifest) =
        edited_diff(&d.path("base0"), &base.base_sha256, "mallory", 1, |k, t| {
            (k.contains("layer.5.output.LayerNorm.weight")).then(|| t.zeros_like().unwrap())
        });
    let announced = d
        .post(&mallory, "/v1/contributions", manifest.to_json())
        .await;
    let upload = announced["upload_url"].as_str().unwrap();
    let r = Client::new()
        .put(format!("{}{upload}", d.server.url))
        .bearer_auth(&mallory)
        .body(std::fs::read(diff.path().join(DIFF_FILE)).unwrap())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    d.post(&d.admin, "/v1/admin/fuse", vec![]).await;
    d.wait_candidate(1).await;

    // 1. The sites' contributor loop scores the candidate before training on the latest base.
    let outs = each_site(&d, |i, cmd| {
        let site = SITES[i];
        cmd.args([
            "run",
            "--rounds",
            "1",
            "--poll-secs",
            "0.2",
            "--evaluate-candidates",
        ])
        .arg("--data")
        .arg(d.path(&format!("{site}-train.jsonl")))
        .arg("--dev")
        .arg(d.path(&format!("{site}-dev.jsonl")))
        .args([
            "--max-steps",
            "3",
            "--batch-size",
            "16",
            "--grad-accum",
            "1",
        ])
        .args(["--max-len", "32", "--lr", "1e-4", "--seed", &i.to_string()])
        .args(EVAL_FLAGS)
        .arg("--work")
        .arg(d.path(&format!("c{i}/work")));
    })
    .await;
    for out in &outs {
        assert!(out.contains("candidate 1: report"), "{out}");
        assert!(out.contains("accepted:"), "{out}");
    }
    let held: Promotion = d.get("/v1/gate/1").await;
    println!(
        "candidate 1: {:?} ({})",
        held.state,
        held.reason.as_deref().unwrap_or("")
    );
    for r in &held.site_reports {
        println!("  {:?}: {:?}", r.contributor, r.report.results);
    }
    assert_eq!(held.state, PromotionState::Held, "{held:?}");
    assert_eq!(held.site_reports.len(), 3);
    assert!(
        held.reason
            .as_deref()
            .unwrap()
            .contains("median lower 95% bound"),
        "{held:?}"
    );
    for r in &held.site_reports {
        assert!(
            r.report.lower_bound() < -0.1,
            "every site saw the wreck: {r:?}"
        );
    }

    // 2. The operator discards it; the sites' honest round becomes candidate 2, which they score.
    d.post(
        &d.admin,
        "/v1/admin/gate/1/discard",
        br#"{"reason": "sites saw a regression"}"#.to_vec(),
    )
    .await;
    d.wait_candidate(2).await;
    let outs = each_site(&d, |i, cmd| {
        let site = SITES[i];
        cmd.args(["evaluate", "--once", "--task"])
            .arg(format!(
                "mine={}",
                d.path(&format!("{site}-dev.jsonl")).display()
            ))
            .args(EVAL_FLAGS)
            .arg("--reports")
            .arg(d.path(&format!("c{i}/work/reports")));
    })
    .await;
    for out in &outs {
        assert!(out.contains("candidate 2: report"), "{out}");
    }
    let promoted: Promotion = d.get("/v1/gate/2").await;
    println!(
        "candidate 2: {:?} ({})",
        promoted.state,
        promoted.reason.as_deref().unwrap_or("")
    );
    assert_eq!(promoted.state, PromotionState::Promoted, "{promoted:?}");
    let latest: BaseManifest = d.get("/v1/bases/latest").await;
    assert_eq!(latest.iteration, 2);

    // 3. Each site's kept report is one the decisions counted, under the digest it recomputes.
    for (i, site) in SITES.iter().enumerate() {
        for (iteration, record) in [(1, &held), (2, &promoted)] {
            let kept = d.path(&format!("c{i}/work/reports/report-{iteration:06}.json"));
            let answer: ReportAnswer =
                serde_json::from_slice(&std::fs::read(&kept).unwrap()).unwrap();
            assert_eq!(answer.report.contributor.as_deref(), Some(*site));
            let nonce = answer.report.nonce.as_deref().unwrap();
            let digest = answer.report.report.digest(iteration, site, nonce);
            assert_eq!(answer.report.digest, digest);
            assert!(
                record.used_reports.contains(&digest),
                "{site} {iteration}: {record:?}"
            );
        }
    }
    // ... and the coordinator's signed decision says so, checked by the site's own command; a kept
    // report edited afterwards is not the one counted.
    for i in 0..3 {
        for iteration in [1u64, 2] {
            let kept = d.path(&format!("c{i}/work/reports/report-{iteration:06}.json"));
            let out = d
                .coldfuse(i)
                .args([
                    "receipt",
                    "gate",
                    "--iteration",
                    &iteration.to_string(),
                    "--report",
                ])
                .arg(&kept)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("was counted"), "{stdout}");
        }
    }
    let kept = d.path("c0/work/reports/report-000002.json");
    let mut answer: ReportAnswer = serde_json::from_slice(&std::fs::read(&kept).unwrap()).unwrap();
    answer.report.report.results[0].seeds += 1;
    std::fs::write(&kept, serde_json::to_vec(&answer).unwrap()).unwrap();
    let out = d
        .coldfuse(0)
        .args(["receipt", "gate", "--iteration", "2", "--report"])
        .arg(&kept)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("does not count"),
        "{stderr}"
    );

    let status = d.coldfuse(0).args(["gate", "status"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{stdout}");
    assert!(
        stdout.contains("site evaluation: 3 report(s) needed"),
        "{stdout}"
    );

    // Nothing the sites sent holds their text; a report body holds only aggregates.
    let sent = d.proxy.sent();
    let lossy = String::from_utf8_lossy(&sent);
    for text in &d.texts {
        assert!(
            !lossy.contains(text.as_str()),
            "a site sent its text: {text}"
        );
        let marker = text.rsplit(' ').next().unwrap();
        assert!(
            !lossy.contains(marker),
            "a site sent a row's marker: {marker}"
        );
    }
    let bodies = report_bodies(&sent);
    assert_eq!(bodies.len(), 6, "three sites, two candidates");
    for body in &bodies {
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["reference_iteration", "results"], "{body}");
        for r in body["results"].as_array().unwrap() {
            let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(
                keys,
                [
                    "candidate_score",
                    "dev_examples",
                    "gain",
                    "interval",
                    "method",
                    "metric",
                    "reference_score",
                    "seeds",
                    "train_examples"
                ],
                "{body}"
            );
        }
    }
}
