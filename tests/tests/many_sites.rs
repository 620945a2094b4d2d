//! One round with 300 simulated sites on a tiny synthetic base: every site takes a token, announces
//! and uploads while others poll the round status; nothing is refused, every diff is accepted and
//! fused (from the running sum), and the round's state and the lineage record cost a bounded number
//! of bytes per site (`coldfuse-coordinator bench sites` measures 1,000 and the latencies).

use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering},
    Arc,
};

use axum::http::StatusCode;
use coldfuse_e2e::coordinator::{call, latest, Deployment};
use coldfuse_shared::{
    api::{keys, DeploymentConfig, IterationRecord},
    diff::{BaseRef, Encoding, DIFF_FILE},
    synthetic,
};
use futures::StreamExt;

const SITES: usize = 300;

/// Bytes of the files under `dir` not named `skip`.
fn bytes_under(dir: &std::path::Path, skip: &str) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| match e.metadata().unwrap() {
            m if m.is_dir() => bytes_under(&e.path(), skip),
            _ if e.file_name() == skip => 0,
            m => m.len(),
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_sites_share_one_round_without_a_refusal() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = synthetic::roberta_like(20_000);
    let source = tmp.path().join("base");
    synthetic::write_base(&source, &layout).unwrap();
    let config = DeploymentConfig {
        quorum: SITES + 1,
        ..DeploymentConfig::default()
    };
    let d = Arc::new(Deployment::of_model(config, &source).await);
    let base_ref = BaseRef {
        id: "many".into(),
        sha256: latest(&d).await.base_sha256,
    };

    // Pollers read the round status the whole time; every answer must be 200.
    let done = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicUsize::new(0));
    let pollers: Vec<_> = (0..4)
        .map(|_| {
            let (d, done, polls) = (d.clone(), done.clone(), polls.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    let (status, v) = call(&d.router(), "GET", "/v1/round", None, vec![]).await;
                    assert_eq!(status, StatusCode::OK, "{v}");
                    polls.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();

    let sites = futures::stream::iter(0..SITES)
        .map(|i| {
            let (d, layout, base_ref) = (d.clone(), layout.clone(), base_ref.clone());
            let dir = tmp.path().join(format!("site-{i}"));
            async move {
                let name = format!("site-{i:03}");
                let token = d.token(&name).await;
                let mut manifest =
                    synthetic::write_diff(&dir, &base_ref, &layout, Encoding::Bf16, i).unwrap();
                manifest.contributor = name.clone();
                let router = d.router();
                let (status, v) = call(
                    &router,
                    "POST",
                    "/v1/contributions",
                    Some(&token),
                    manifest.to_json(),
                )
                .await;
                assert_eq!(status, StatusCode::CREATED, "{name}: {v}");
                let bytes = std::fs::read(dir.join(DIFF_FILE)).unwrap();
                let uri = format!("/v1/contributions/{name}/diff");
                let (status, v) = call(&router, "PUT", &uri, Some(&token), bytes).await;
                assert_eq!(status, StatusCode::OK, "{name}: {v}");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>();
    sites.await;
    done.store(true, Ordering::Relaxed);
    for p in pollers {
        p.await.unwrap();
    }
    let polls = polls.load(Ordering::Relaxed);
    assert!(polls >= 4, "the pollers ran alongside ({polls} polls)");
    assert_eq!(d.coordinator.state.read().await.status().accepted, SITES);

    let (status, v) = d.fuse_now().await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let record: IterationRecord = serde_json::from_value(v).unwrap();
    assert_eq!(record.contributions.len(), SITES);
    assert_eq!(record.fold_order.as_ref().map(Vec::len), Some(SITES));

    // Linear in N: the round's objects besides the diffs (manifests, verdicts) and the lineage
    // record take a bounded number of bytes per site.
    let store = std::path::PathBuf::from(d.store_url.strip_prefix("file://").unwrap());
    let state = bytes_under(&store.join(keys::round_prefix(1)), DIFF_FILE);
    let lineage = std::fs::metadata(store.join(keys::iteration_record(1)))
        .unwrap()
        .len();
    assert!(
        state / (SITES as u64) < 8 << 10,
        "{state} bytes of round state for {SITES} sites"
    );
    assert!(
        lineage / (SITES as u64) < 1 << 10,
        "{lineage} bytes of lineage for {SITES} sites"
    );
}
