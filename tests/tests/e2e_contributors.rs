//! End to end with the real binaries: a `coldfuse-coordinator` process and three `coldfuse run`
//! contributor processes, each fine-tuning a 2-layer MiniLM on its own real task (SMS spam, hedge
//! detection, sentence polarity), for two iterations, on `file://` and on a real S3 server.
//!
//! Checked: each fused base equals the previous base plus the mean of the diffs the contributors wrote
//! (and lineage names exactly those diffs); lineage chains both iterations; a stale diff is rejected;
//! an upload whose connection breaks resumes where it stopped; nothing the contributors sent
//! contains their training text; and `coldfuse verify` reproduces every fused base bit for bit from its
//! lineage (through the API and from the store) and names what a tampered store changed; every
//! contributor holds signed receipts of acceptance and fusion that `coldfuse receipt verify` accepts,
//! and forged ones are refused.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use coldfuse_e2e::{
    datasets::{three_tasks, write_split},
    models::minilm_layers,
    process::{bin, contributor_token, outputs_of, site_cli, token, Server},
    proxy::Proxy,
    s3::S3Server,
};
use coldfuse_shared::{
    api::{IterationRecord, ReceiptKind, RoundStatus, SignedReceipt, SigningPublicKey},
    diff::{DiffManifest, DIFF_FILE, MANIFEST_FILE},
    hash::sha256_file,
    tensorfile::TensorFile,
};
use reqwest::Client;

const CONTRIBUTORS: [&str; 3] = ["site-sms", "site-hedge", "site-polarity"];
const ROUNDS: usize = 2;

/// One deployment: coordinator process, proxy, contributors' data and work dirs.
struct Run {
    dir: tempfile::TempDir,
    server: Server,
    proxy: Proxy,
    tokens: Vec<String>,
    admin: String,
    texts: Vec<String>,
}

impl Run {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `coldfuse` with the connection of contributor `i` (through the proxy) and its own cache.
    fn coldfuse(&self, i: usize) -> Command {
        site_cli(&self.proxy.url, &self.tokens[i], self.dir.path(), i)
    }
}

async fn get<T: serde::de::DeserializeOwned>(url: String) -> T {
    get_as(url, None).await
}

async fn get_as<T: serde::de::DeserializeOwned>(url: String, token: Option<&str>) -> T {
    let mut request = Client::new().get(&url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.unwrap()
}

/// Starts the coordinator on `store` (quorum 3) behind a recording proxy and writes the tasks' data.
async fn start(store: &str, cut_upload_after: Option<usize>) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base0");
    minilm_layers(2, &base);
    let admin_file = dir.path().join("admin-token");
    let status = Command::new(bin("coldfuse-coordinator"))
        .args(["init", "--quorum", "3", "--name", "test/minilm-2"])
        .args(["--store", store, "--base"])
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
    let server = Server::start(store, &dir.path().join("work"), &[]);
    let upstream = server.url.trim_start_matches("http://").to_string();
    let proxy = Proxy::start(&upstream, cut_upload_after).await;
    let mut tokens = Vec::new();
    for c in CONTRIBUTORS {
        tokens.push(contributor_token(&server.url, &admin, c).await);
    }
    let mut texts = Vec::new();
    for (i, task) in three_tasks().iter().enumerate() {
        let (_, _, t) = write_split(task, dir.path(), 48, 32, 7 + i as u64);
        texts.extend(t);
    }
    Run {
        dir,
        server,
        proxy,
        tokens,
        admin,
        texts,
    }
}

/// Runs `coldfuse run --rounds 2` for the three contributors at once and waits for iteration 2.
async fn contribute_two_rounds(run: &Run) {
    let tasks = three_tasks();
    let commands: Vec<Command> = (0..3)
        .map(|i| {
            let name = tasks[i].name;
            let mut cmd = run.coldfuse(i);
            cmd.args(["run", "--rounds", &ROUNDS.to_string(), "--poll-secs", "0.2"])
                .arg("--data")
                .arg(run.path(&format!("{name}-train.jsonl")))
                .arg("--dev")
                .arg(run.path(&format!("{name}-dev.jsonl")))
                .args([
                    "--max-steps",
                    "3",
                    "--batch-size",
                    "16",
                    "--grad-accum",
                    "1",
                ])
                .args(["--max-len", "48", "--lr", "1e-4", "--seed", &i.to_string()])
                .args(["--chunk-mib", "4", "--work"])
                .arg(run.path(&format!("c{i}/work")));
            cmd
        })
        .collect();
    let outputs = outputs_of(commands).await;
    for (i, out) in outputs.iter().enumerate() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "contributor {i} failed:\n{stdout}\n{stderr}"
        );
        assert!(stdout.contains("accepted:"), "contributor {i}:\n{stdout}");
    }
    // The last round is fused once the third diff lands.
    let started = Instant::now();
    loop {
        let round: RoundStatus = get(format!("{}/v1/round", run.server.url)).await;
        if round.base_iteration == ROUNDS as u64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "iteration {ROUNDS} never published: {round:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// All f32 values of every tensor of a safetensors file, by name.
fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let file = TensorFile::open(path).unwrap();
    let names: Vec<String> = file.header.names().map(str::to_string).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let info = file.info(&name).unwrap().clone();
            if !matches!(
                info.dtype,
                coldfuse_shared::tensorfile::Dtype::F32
                    | coldfuse_shared::tensorfile::Dtype::Bf16
                    | coldfuse_shared::tensorfile::Dtype::F16
            ) {
                return None;
            }
            let mut v = vec![0f32; info.numel()];
            file.read_f32(&info, 0, &mut v, &mut Vec::new()).unwrap();
            Some((name, v))
        })
        .collect()
}

/// Pulls base `iteration` with the CLI as a plain HF dir.
fn pull(run: &Run, iteration: u64) -> PathBuf {
    let out = run.path(&format!("pulled-{iteration}"));
    if out.exists() {
        return out;
    }
    let o = run
        .coldfuse(0)
        .args(["pull", "--iteration", &iteration.to_string(), "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// Every fused base is its parent plus the mean of the three diffs the contributors wrote.
async fn check_fusion_and_lineage(run: &Run) {
    // Anonymous readers see hashes and weights, not who contributed (a token does).
    let public: Vec<IterationRecord> = get(format!("{}/v1/lineage", run.server.url)).await;
    assert!(public
        .iter()
        .flat_map(|r| &r.contributions)
        .all(|c| c.contributor.is_empty() && c.metrics.is_empty() && c.num_examples == 0));
    let lineage: Vec<IterationRecord> = get_as(
        format!("{}/v1/lineage", run.server.url),
        Some(&run.tokens[0]),
    )
    .await;
    assert_eq!(lineage.len(), ROUNDS + 1, "{lineage:?}");
    for i in 1..=ROUNDS as u64 {
        let record = &lineage[i as usize];
        assert_eq!(record.parent, Some(i - 1));
        assert_eq!(
            record.parent_sha256.as_deref(),
            Some(lineage[i as usize - 1].base_sha256.as_str())
        );
        assert_eq!(record.contributions.len(), 3);
        let parent = tensors(&pull(run, i - 1).join("model.safetensors"));
        let fused_dir = pull(run, i);
        assert_eq!(
            sha256_file(&fused_dir.join("model.safetensors")).unwrap(),
            record.base_sha256
        );
        let fused = tensors(&fused_dir.join("model.safetensors"));
        let card = std::fs::read_to_string(fused_dir.join("README.md")).unwrap();
        assert!(
            card.starts_with("---\n")
                && card.contains("base_model: \"test/minilm-2\"")
                && card.contains(&format!("coldfuse base, iteration {i}")),
            "{card}"
        );
        for c in &record.contributions {
            assert!(card.contains(&c.diff_sha256) && !card.contains(&c.contributor));
        }
        let mut diffs = Vec::new();
        for (c, contributor) in CONTRIBUTORS.iter().enumerate() {
            let dir = run.path(&format!("c{c}/work/round-{i:06}"));
            let manifest =
                DiffManifest::from_json(&std::fs::read(dir.join(MANIFEST_FILE)).unwrap()).unwrap();
            let entry = record
                .contributions
                .iter()
                .find(|l| l.contributor == *contributor)
                .unwrap_or_else(|| panic!("{contributor} missing from lineage {i}"));
            assert_eq!(
                entry.diff_sha256, manifest.diff_sha256,
                "lineage names the diff {contributor} wrote"
            );
            assert_eq!(manifest.num_examples, 48);
            assert!(
                manifest.metrics.contains_key("accuracy"),
                "{:?}",
                manifest.metrics
            );
            diffs.push(tensors(&dir.join(DIFF_FILE)));
        }
        let mut worst = 0f32;
        let mut moved = 0usize;
        for (name, p) in &parent {
            let f = &fused.iter().find(|(n, _)| n == name).unwrap().1;
            let ds: Vec<&Vec<f32>> = diffs
                .iter()
                .filter_map(|d| d.iter().find(|(n, _)| n == name).map(|(_, v)| v))
                .collect();
            for k in 0..p.len() {
                let mean = if ds.is_empty() {
                    0.0
                } else {
                    ds.iter().map(|d| d[k]).sum::<f32>() / ds.len() as f32
                };
                worst = worst.max((f[k] - (p[k] + mean)).abs());
            }
            if !ds.is_empty() {
                moved += 1;
            }
        }
        assert!(moved > 30, "only {moved} tensors were diffed");
        assert!(
            worst < 1e-6,
            "iteration {i}: fused differs from base + mean(diffs) by {worst}"
        );
        println!("iteration {i}: fused = parent + mean of 3 diffs, max error {worst:e}");
    }
}

/// A diff against an older base is refused with `stale_base`, and the CLI says so.
fn check_stale_rejected(run: &Run) {
    let old = run.path("c0/work/round-000001");
    let o = run.coldfuse(0).arg("submit").arg(&old).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a stale diff was accepted");
    assert!(stderr.contains("stale_base"), "{stderr}");
    assert!(
        stderr.contains("pull"),
        "the error says what to do: {stderr}"
    );
}

/// The contributors sent requests to API routes only, and none of their training text.
fn check_nothing_private_left(run: &Run) {
    let sent = run.proxy.sent();
    assert!(sent.len() > 1_000_000, "the diffs went through the proxy");
    let mut checked = 0;
    for text in run.texts.iter().filter(|t| t.len() >= 24) {
        assert!(
            memchr::memmem::find(&sent, text.as_bytes()).is_none(),
            "training text left the site: {text:?}"
        );
        checked += 1;
    }
    assert!(checked > 100, "{checked} texts checked");
    // Every request line (`METHOD PATH HTTP/1.1`) goes to an API route.
    let mut requests = 0;
    for at in memchr::memmem::find_iter(&sent, b" HTTP/1.1\r\n") {
        let head = &sent[at.saturating_sub(200)..at];
        let start = ["GET /", "POST /", "PUT /", "DELETE /"]
            .iter()
            .filter_map(|m| {
                head.windows(m.len())
                    .rposition(|w| w == m.as_bytes())
                    .map(|p| p + m.len() - 1)
            })
            .max()
            .expect("a request line");
        let path = String::from_utf8_lossy(&head[start..]);
        assert!(
            path.starts_with("/v1/"),
            "unexpected request path {:?}",
            &path[..path.len().min(80)]
        );
        requests += 1;
    }
    assert!(requests > 20, "{requests} requests seen");
}

/// `coldfuse verify` replays the fusion of every iteration from its recorded inputs, through the API (an auditor
/// token: it reads every site's diff) and straight from the store. A site reads only its own diffs.
async fn check_verify(run: &Run, store: &str) {
    let role = serde_json::json!({"role": "auditor"});
    let auditor = token(&run.server.url, &run.admin, &role).await;
    for i in 1..=ROUNDS as u64 {
        for via_store in [false, true] {
            let mut cmd = run.coldfuse(0);
            cmd.env("COLDFUSE_TOKEN", &auditor);
            cmd.args(["verify", &i.to_string()]);
            if via_store {
                cmd.args(["--store", store]);
            }
            let o = cmd.output().unwrap();
            let stdout = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success(),
                "verify {i} (store: {via_store}) failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(
                stdout.contains(&format!("iteration {i} verified"))
                    && stdout.contains("bit for bit"),
                "{stdout}"
            );
        }
    }
    let url = format!(
        "{}/v1/lineage/1/contributions/{}/diff",
        run.server.url, CONTRIBUTORS[0]
    );
    let anonymous = Client::new().get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "diffs are not public");
    let other = Client::new()
        .get(&url)
        .bearer_auth(&run.tokens[1])
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403, "another site's diff is not readable");
    let own = Client::new()
        .get(&url)
        .bearer_auth(&run.tokens[0])
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200, "a site reads its own diff");
}

/// Every contributor kept a verified receipt of acceptance for both rounds and of fusion for round 1
/// (the loop fetches it when the next round opens); `coldfuse receipt fetch` gets round 2's;
/// `coldfuse receipt verify` checks them offline against the key pinned by `login`, and refuses a
/// receipt that was altered, one that claims another key, and one checked against another diff.
async fn check_receipts(run: &Run) {
    let key: SigningPublicKey = get(format!("{}/v1/signing-key", run.server.url)).await;
    let lineage: Vec<IterationRecord> = get_as(
        format!("{}/v1/lineage", run.server.url),
        Some(&run.tokens[0]),
    )
    .await;
    let verify = |i: usize, file: &Path, extra: &[&str]| {
        let o = run
            .coldfuse(i)
            .args(["receipt", "verify"])
            .arg(file)
            .args(extra)
            .output()
            .unwrap();
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    for (i, contributor) in CONTRIBUTORS.iter().enumerate() {
        let fetched = run.path(&format!("c{i}/receipt-fused-2.json"));
        let o = run
            .coldfuse(i)
            .args(["receipt", "fetch", "--iteration", "2", "--out"])
            .arg(&fetched)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for round in 1..=ROUNDS as u64 {
            let dir = run.path(&format!("c{i}/work/round-{round:06}"));
            let fused = if round == 1 {
                dir.join("receipt-fused.json")
            } else {
                fetched.clone()
            };
            for file in [dir.join("receipt-accepted.json"), fused.clone()] {
                let (ok, out) = verify(
                    i,
                    &file,
                    &[
                        "--public-key",
                        &key.public_key,
                        "--diff",
                        dir.to_str().unwrap(),
                    ],
                );
                assert!(
                    ok && out.contains("valid receipt"),
                    "{}: {out}",
                    file.display()
                );
            }
            let signed: SignedReceipt =
                serde_json::from_slice(&std::fs::read(&fused).unwrap()).unwrap();
            let record = &lineage[round as usize];
            let entry = record
                .contributions
                .iter()
                .find(|c| c.contributor == *contributor)
                .unwrap();
            let r = &signed.receipt;
            assert_eq!(
                (r.kind, r.iteration, r.contributor.as_str()),
                (ReceiptKind::Fused, round, *contributor)
            );
            assert_eq!(r.weight, Some(entry.weight));
            assert_eq!(r.diff_sha256, entry.diff_sha256);
            assert_eq!(
                r.fused_base_sha256.as_deref(),
                Some(record.base_sha256.as_str())
            );
            assert_eq!(Some(&r.base_sha256), record.parent_sha256.as_ref());
        }
    }
    // `login` pins the key; then no --public-key is needed.
    let o = run.coldfuse(0).arg("login").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&key.key_id));
    let dir = run.path("c0/work/round-000001");
    let good = dir.join("receipt-fused.json");
    let (ok, out) = verify(0, &good, &[]);
    assert!(ok, "{out}");
    // Forged: a higher weight written in.
    let mut forged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&good).unwrap()).unwrap();
    forged["receipt"]["weight"] = serde_json::json!(0.9);
    let file = run.path("forged-weight.json");
    std::fs::write(&file, forged.to_string()).unwrap();
    let (ok, out) = verify(0, &file, &[]);
    assert!(
        !ok && out.contains("forged or altered") && out.contains("signature"),
        "{out}"
    );
    // Claims another key.
    forged["receipt"]["weight"] = serde_json::json!(null);
    forged["receipt"]["key_id"] = serde_json::json!("0123456789abcdef");
    std::fs::write(&file, forged.to_string()).unwrap();
    let (ok, out) = verify(0, &file, &[]);
    assert!(
        !ok && out.contains("not with the coordinator's key"),
        "{out}"
    );
    // Not a receipt at all.
    std::fs::write(&file, b"{\"receipt\": 1}").unwrap();
    let (ok, out) = verify(0, &file, &[]);
    assert!(!ok && out.contains("not a coldfuse receipt"), "{out}");
    // A genuine receipt, checked against another site's diff.
    let other = run.path("c1/work/round-000001");
    let (ok, out) = verify(0, &good, &["--diff", other.to_str().unwrap()]);
    assert!(!ok && out.contains("is about diff"), "{out}");
    println!("receipts: accepted + fused kept and verified; forged ones refused");
}

/// `coldfuse verify` on a tampered file store: a replaced diff, a forged lineage record, and a
/// published base replaced consistently (weights, manifest and record) are each named.
fn check_verify_detects_tampering(run: &Run, store: &Path) {
    let url = format!("file://{}", store.display());
    let verify = |i: u64| {
        let o = run
            .coldfuse(0)
            .args(["verify", &i.to_string(), "--store", &url])
            .output()
            .unwrap();
        assert!(!o.status.success(), "verify {i} passed a tampered store");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let restore = |path: &Path, bytes: &[u8]| std::fs::write(path, bytes).unwrap();

    // A diff replaced after it was fused.
    let diff = store.join(format!(
        "rounds/000001/{}/diff.safetensors",
        CONTRIBUTORS[1]
    ));
    let original = std::fs::read(&diff).unwrap();
    let mut forged = original.clone();
    let n = forged.len();
    forged[n - 1] ^= 0x40;
    std::fs::write(&diff, &forged).unwrap();
    let err = verify(1);
    assert!(
        err.contains(&format!("the diff of {}", CONTRIBUTORS[1])) && err.contains("lineage record"),
        "{err}"
    );
    restore(&diff, &original);

    // A lineage record that claims another parent.
    let record_path = store.join("iterations/000002.json");
    let record_bytes = std::fs::read(&record_path).unwrap();
    let mut record: IterationRecord = serde_json::from_slice(&record_bytes).unwrap();
    record.parent_sha256 = Some("0".repeat(64));
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    let err = verify(2);
    assert!(
        err.contains("tampered lineage") && err.contains("parent"),
        "{err}"
    );
    restore(&record_path, &record_bytes);

    // A record stored under iteration 2 that says it is another iteration.
    let mut other: IterationRecord = serde_json::from_slice(&record_bytes).unwrap();
    other.iteration = 1;
    std::fs::write(&record_path, serde_json::to_vec(&other).unwrap()).unwrap();
    let err = verify(2);
    assert!(
        err.contains("tampered lineage") && err.contains("says it is iteration 1"),
        "{err}"
    );
    restore(&record_path, &record_bytes);

    // The published base replaced, with its manifest and record made to agree: replaying its fusion
    // shows it, and names the tensor that was changed.
    let weights_path = store.join("bases/000002/model.safetensors");
    let manifest_path = store.join("bases/000002/manifest.json");
    let file = TensorFile::open(&weights_path).unwrap();
    let target = file
        .header
        .tensors
        .iter()
        .find(|t| t.name.contains("attention.self.query.weight"))
        .unwrap()
        .clone();
    drop(file);
    let mut weights = std::fs::read(&weights_path).unwrap();
    let at = target.offset as usize;
    weights[at + 1] ^= 0x01;
    std::fs::write(&weights_path, &weights).unwrap();
    let sha = sha256_file(&weights_path).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["base_sha256"] = sha.clone().into();
    for f in manifest["files"].as_array_mut().unwrap() {
        if f["name"] == "model.safetensors" {
            f["sha256"] = sha.clone().into();
        }
    }
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    record.parent_sha256 = serde_json::from_slice::<IterationRecord>(&record_bytes)
        .unwrap()
        .parent_sha256;
    record.base_sha256 = sha;
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    let err = verify(2);
    assert!(
        err.contains("does not reproduce") && err.contains(&format!("tensor `{}`", target.name)),
        "{err}"
    );
    println!("tampered store: each change named by verify");
}

async fn e2e(store: &str) -> Run {
    // The first diff upload's connection breaks after 5 MB: the CLI must resume it.
    let run = start(store, Some(5 << 20)).await;
    let t = Instant::now();
    contribute_two_rounds(&run).await;
    println!(
        "two rounds of three contributors: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        run.proxy.did_cut(),
        "the planned upload break did not happen"
    );
    check_fusion_and_lineage(&run).await;
    check_stale_rejected(&run);
    check_nothing_private_left(&run);
    check_verify(&run, store).await;
    check_receipts(&run).await;
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_three_contributors_two_iterations_on_file_store_verify_and_receipt() {
    let store = tempfile::tempdir().unwrap();
    let run = e2e(&format!("file://{}", store.path().display())).await;
    check_verify_detects_tampering(&run, store.path());
}

/// The latest fused base, pulled as a plain HF dir, loads in transformers (scripts/golden's Python,
/// `COLDFUSE_PYREF_PYTHON`; run by scripts/golden/check.sh) with coldfuse's token ids and outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PyTorch + transformers: scripts/golden/check.sh"]
async fn e2e_fused_base_loads_in_transformers() {
    let python = std::env::var("COLDFUSE_PYREF_PYTHON").expect("COLDFUSE_PYREF_PYTHON");
    let store = tempfile::tempdir().unwrap();
    let run = e2e(&format!("file://{}", store.path().display())).await;
    let fused = pull(&run, ROUNDS as u64);
    let texts: Vec<String> = run.texts.iter().step_by(20).take(8).cloned().collect();
    let texts_file = run.path("texts.json");
    std::fs::write(&texts_file, serde_json::to_vec(&texts).unwrap()).unwrap();
    let out = run.path("hidden.safetensors");
    let script = coldfuse_e2e::repo_root().join("scripts/golden/make_fixtures.py");
    let status = Command::new(python)
        .arg(script)
        .args(["hidden", "--model"])
        .arg(&fused)
        .arg("--texts")
        .arg(&texts_file)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "transformers could not load the fused base"
    );
    let reference = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    let dir = coldfuse_shared::ModelDir::open(&fused).unwrap();
    let encoder =
        coldfuse_shared::classifier::Encoder::load(&dir, &candle_core::Device::Cpu).unwrap();
    let tokenizer = coldfuse_shared::TextTokenizer::from_dir(&fused, 128).unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = tokenizer
        .encode(&refs, None, &candle_core::Device::Cpu)
        .unwrap();
    let ref_ids: Vec<u32> = reference["input_ids"]
        .flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::U32)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(batch.ids, ref_ids, "token ids differ from transformers'");
    let ours = encoder
        .forward(&batch, &coldfuse_shared::ForwardCtx::eval())
        .unwrap()
        .hidden;
    let mask = batch.mask_t.unsqueeze(2).unwrap();
    let diff = ((ours - &reference["last_hidden_state"])
        .unwrap()
        .abs()
        .unwrap())
    .broadcast_mul(&mask)
    .unwrap()
    .max_all()
    .unwrap()
    .to_scalar::<f32>()
    .unwrap();
    println!("fused base {ROUNDS}: coldfuse vs transformers hidden states, max abs error {diff:e}");
    assert!(diff < 1e-4, "hidden states differ by {diff}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_three_contributors_two_iterations_on_s3() {
    let s3 = S3Server::start();
    s3.export_env();
    e2e(&s3.url("e2e")).await;
}

/// `coldfuse pull` continues a half-downloaded file with a Range request, and replaces a corrupt
/// partial file after the hash check fails, ending with a verified base either way; a base whose
/// stored weights do not match their manifest is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_pull_resumes_partial_downloads_and_replaces_corrupt_ones() {
    let store = tempfile::tempdir().unwrap();
    let run = start(&format!("file://{}", store.path().display()), None).await;
    let manifest: coldfuse_shared::api::BaseManifest =
        get(format!("{}/v1/bases/0", run.server.url)).await;
    let weights = manifest.file("model.safetensors").unwrap();
    let original = std::fs::read(run.path("base0/model.safetensors")).unwrap();
    let staging = run.path(&format!("c0/cache/bases/{}.partial", manifest.base_sha256));
    std::fs::create_dir_all(&staging).unwrap();
    let part = staging.join("model.safetensors.part");
    let half = original.len() / 2;

    // Half the file is there: only the rest is asked for.
    std::fs::write(&part, &original[..half]).unwrap();
    let o = run.coldfuse(0).arg("pull").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sent = String::from_utf8_lossy(&run.proxy.sent()).to_lowercase();
    assert!(
        sent.contains(&format!("range: bytes={half}-")),
        "no resuming Range request"
    );
    let dir = run.path(&format!("c0/cache/bases/{}", manifest.base_sha256));
    assert_eq!(
        sha256_file(&dir.join("model.safetensors")).unwrap(),
        weights.sha256
    );
    assert!(!staging.exists());

    // A corrupt partial file fails the hash check and is downloaded again from the start.
    let staging1 = run.path(&format!("c1/cache/bases/{}.partial", manifest.base_sha256));
    std::fs::create_dir_all(&staging1).unwrap();
    let mut bad = original[..half].to_vec();
    bad[100] ^= 0xff;
    std::fs::write(staging1.join("model.safetensors.part"), &bad).unwrap();
    let out = run.path("exported");
    let o = run
        .coldfuse(1)
        .args(["pull", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("does not match the manifest"), "{stderr}");
    assert_eq!(
        sha256_file(&out.join("model.safetensors")).unwrap(),
        weights.sha256
    );
    for f in &manifest.files {
        assert!(out.join(&f.name).is_file(), "{} missing from --out", f.name);
    }

    // A base whose stored weights no longer match its manifest is refused with a clear error, and
    // nothing half-verified is left in the cache.
    let stored = store.path().join("bases/000000/model.safetensors");
    let mut bytes = std::fs::read(&stored).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x01;
    std::fs::write(&stored, &bytes).unwrap();
    let o = run.coldfuse(2).arg("pull").output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a corrupt base was accepted");
    assert!(
        stderr.contains("the manifest says") && stderr.contains("may be corrupt"),
        "{stderr}"
    );
    assert!(!run
        .path(&format!("c2/cache/bases/{}", manifest.base_sha256))
        .exists());
}
