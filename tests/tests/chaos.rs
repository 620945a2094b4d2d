//! Chaos: several rounds of a real coordinator process killed (SIGKILL) at random points — during
//! uploads, during the fusion, between publishing and committing, between the commit and the `latest`
//! switch — and restarted. At the end every iteration replays bit for bit (`coldfuse verify --store`),
//! the lineage is one chain without forks, `latest` is the newest commit, and every contribution the
//! coordinator acknowledged as accepted is in the lineage (or quarantined, with its record).

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use coldfuse_e2e::{
    coordinator::make_diff,
    process::{bin, contributor_token, init_fixture, Server},
};
use coldfuse_shared::{
    api::{keys, BaseManifest, IterationRecord, LatestPointer, Quarantine, RoundStatus},
    diff::DIFF_FILE,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use reqwest::{Client, StatusCode};

const ROUNDS: usize = 10;
const SITES: [&str; 2] = ["site-a", "site-b"];

fn read<T: serde::de::DeserializeOwned>(store: &Path, key: &str) -> Option<T> {
    let bytes = std::fs::read(store.join(key)).ok()?;
    Some(serde_json::from_slice(&bytes).unwrap())
}

/// Announces and uploads one diff against the latest base; Some(diff hash) when acknowledged accepted.
async fn contribute(
    client: &Client,
    url: &str,
    token: &str,
    store: &Path,
    site: &str,
    seed: u64,
) -> Option<(u64, String)> {
    let base: BaseManifest = client
        .get(format!("{url}/v1/bases/latest"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let base_dir = store.join(keys::base_prefix(base.iteration));
    let (dir, m) = make_diff(&base_dir, &base.base_sha256, site, seed, false);
    let r = client
        .post(format!("{url}/v1/contributions"))
        .bearer_auth(token)
        .body(m.to_json())
        .send()
        .await
        .ok()?;
    if r.status() != StatusCode::CREATED {
        return None;
    }
    let iteration = r.json::<serde_json::Value>().await.ok()?["iteration"].as_u64()?;
    let r = client
        .put(format!("{url}/v1/contributions/{site}/diff"))
        .bearer_auth(token)
        .body(std::fs::read(dir.path().join(DIFF_FILE)).unwrap())
        .send()
        .await
        .ok()?;
    (r.status() == StatusCode::OK).then_some((iteration, m.diff_sha256))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_loses_nothing_and_forks_nothing() {
    let store_dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let store = format!("file://{}", store_dir.path().display());
    let admin = init_fixture(&store, work.path(), 2);
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(19);
    let mut acknowledged: Vec<(u64, String, String)> = Vec::new();
    let mut tokens = BTreeMap::new();
    let mut kills = 0;
    let mut during_fusion = 0;
    let mut seed = 0;
    for round in 0..ROUNDS {
        // Pauses before and after the commit widen the windows a kill can land in.
        let pause = if round % 2 == 0 { "0" } else { "80" };
        let server = Server::start(
            &store,
            &work.path().join("w"),
            &[
                ("COLDFUSE_FAULT_PAUSE_BEFORE_COMMIT_MS", pause),
                ("COLDFUSE_FAULT_PAUSE_AFTER_COMMIT_MS", pause),
            ],
        );
        if tokens.is_empty() {
            for site in SITES {
                tokens.insert(site, contributor_token(&server.url, &admin, site).await);
            }
        }
        let upload = |site: &'static str, seed: u64| {
            let (client, url) = (client.clone(), server.url.clone());
            let (token, store) = (tokens[site].clone(), store_dir.path().to_path_buf());
            tokio::spawn(async move { contribute(&client, &url, &token, &store, site, seed).await })
        };
        seed += 1;
        if let Some((iteration, sha)) = upload(SITES[0], seed).await.unwrap() {
            acknowledged.push((iteration, SITES[0].to_string(), sha));
        }
        // The second upload completes the quorum, which starts a fusion off the request path. Every
        // third round the process dies during that upload; otherwise somewhere in the fusion (or just
        // after it).
        seed += 1;
        let second = upload(SITES[1], seed);
        if round % 3 == 2 {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..30u64))).await;
        } else {
            let ack = second.await.unwrap();
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..200u64))).await;
            if let Ok(r) = client.get(format!("{}/v1/round", server.url)).send().await {
                if r.json::<RoundStatus>().await.is_ok_and(|r| r.fusing) {
                    during_fusion += 1;
                }
            }
            server.kill();
            kills += 1;
            if let Some((iteration, sha)) = ack {
                acknowledged.push((iteration, SITES[1].to_string(), sha));
            }
            continue;
        }
        server.kill();
        kills += 1;
        if let Some((iteration, sha)) = second.await.unwrap() {
            acknowledged.push((iteration, SITES[1].to_string(), sha));
        }
    }
    // A last, undisturbed start finishes whatever a crash left due.
    let server = Server::start(&store, &work.path().join("w"), &[]);
    for _ in 0..200 {
        let r: RoundStatus = client
            .get(format!("{}/v1/round", server.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !r.fusing && r.accepted < 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client
        .post(format!("{}/v1/admin/fuse?wait=true", server.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(
        r.status() == StatusCode::OK || r.status() == StatusCode::CONFLICT,
        "{}",
        r.status()
    );
    drop(server);
    assert_eq!(kills, ROUNDS);
    eprintln!(
        "{kills} kills, {during_fusion} seen during a fusion; {} acceptances acknowledged",
        acknowledged.len()
    );

    // One chain, no forks, `latest` at its head.
    let root = store_dir.path();
    let mut records = Vec::new();
    for i in 0.. {
        match read::<IterationRecord>(root, &keys::iteration_record(i)) {
            Some(r) => records.push(r),
            None => break,
        }
    }
    let committed = records.len() as u64 - 1;
    assert!(committed >= 3, "only {committed} iterations committed");
    for pair in records.windows(2) {
        assert_eq!(pair[1].parent, Some(pair[0].iteration));
        assert_eq!(pair[1].parent_sha256.as_ref(), Some(&pair[0].base_sha256));
    }
    let latest: LatestPointer = read(root, keys::LATEST).unwrap();
    assert_eq!(latest.iteration, committed);
    // Every acknowledged acceptance is fused into its iteration, or quarantined with a record.
    for (iteration, site, sha) in &acknowledged {
        let fused = records.get(*iteration as usize).is_some_and(|r| {
            r.contributions
                .iter()
                .any(|c| &c.contributor == site && &c.diff_sha256 == sha)
        });
        let quarantined = read::<Quarantine>(
            root,
            &keys::contribution_file(*iteration, site, keys::QUARANTINE),
        )
        .is_some();
        assert!(
            fused || quarantined,
            "{site}'s accepted diff {sha} for iteration {iteration} was lost"
        );
    }
    // Every iteration replays bit for bit from the store alone.
    for i in 1..=committed {
        let o = Command::new(bin("coldfuse"))
            .args(["verify", &i.to_string(), "--store", &store])
            .env("COLDFUSE_CONFIG", work.path().join("cli.toml"))
            .env("COLDFUSE_CACHE_DIR", work.path().join("cache"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "verify {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
