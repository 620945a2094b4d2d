//! A linear round closes from the running sum its acceptances fed: lineage records the fold order,
//! `coldfuse verify` replays the published base bit for bit from it, and a sum that does not match the
//! round being fused (after a restart, or a contribution dropped once folded) is completed or rebuilt
//! from the store.

use std::time::{Duration, Instant};

use coldfuse_e2e::{
    coordinator::{call, contribute_accepted, Deployment},
    process::verify_from_store,
};
use coldfuse_shared::api::{DeploymentConfig, IterationRecord};

/// Waits until the background folds of round `iteration` hold `want`, in that order.
async fn folded(d: &Deployment, iteration: u64, want: &[&str]) {
    let started = Instant::now();
    loop {
        let got = d.coordinator.folder.folded(iteration).await;
        if got == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "round {iteration} folded {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn fuse(d: &Deployment) -> IterationRecord {
    let (status, v) = d.fuse_now().await;
    assert!(status.is_success(), "{v}");
    serde_json::from_value(v).unwrap()
}

/// The auditor's replay of `iteration` from the deployment's store.
fn verify(d: &Deployment, iteration: u64) {
    verify_from_store(&d.store_url, iteration);
}

fn strings(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linear_round_closes_from_its_running_sum_and_verifies() {
    let config = DeploymentConfig {
        quorum: 100,
        ..DeploymentConfig::default()
    };
    let mut d = Deployment::new(config).await;
    let mut tokens = std::collections::BTreeMap::new();
    for name in ["site-a", "site-b", "site-c"] {
        tokens.insert(name, d.token(name).await);
    }

    // Round 1: every diff is folded as it is accepted; the close only finishes the sum.
    for (seed, name) in [(1, "site-c"), (2, "site-a"), (3, "site-b")] {
        contribute_accepted(&d, &tokens[name], name, seed).await;
    }
    folded(&d, 1, &["site-c", "site-a", "site-b"]).await;
    let record = fuse(&d).await;
    assert_eq!(record.fold_order, strings(&["site-c", "site-a", "site-b"]));
    assert_eq!(record.contributions.len(), 3);
    assert!(
        std::fs::read_dir(d.work().join("fold"))
            .unwrap()
            .next()
            .is_none(),
        "the sum and the waiting diffs are gone after the close"
    );
    verify(&d, 1);

    // Round 2: a restart loses the sum; later acceptances start a new one, and the close folds the
    // diff accepted before the restart from the store.
    contribute_accepted(&d, &tokens["site-a"], "site-a", 4).await;
    folded(&d, 2, &["site-a"]).await;
    d.reload().await;
    for (seed, name) in [(5, "site-b"), (6, "site-c")] {
        contribute_accepted(&d, &tokens[name], name, seed).await;
    }
    folded(&d, 2, &["site-b", "site-c"]).await;
    let record = fuse(&d).await;
    assert_eq!(record.fold_order, strings(&["site-b", "site-c", "site-a"]));
    verify(&d, 2);

    // Round 3: a contribution dropped after its fold cannot stay in the sum: the close starts over
    // without it (in contributor order) and fuses the rest.
    for (seed, name) in [(7, "site-c"), (8, "site-b"), (9, "site-a")] {
        contribute_accepted(&d, &tokens[name], name, seed).await;
    }
    folded(&d, 3, &["site-c", "site-b", "site-a"]).await;
    let (status, v) = call(
        &d.router(),
        "POST",
        "/v1/admin/contributions/site-b/drop",
        Some(&d.admin),
        vec![],
    )
    .await;
    assert!(status.is_success(), "{v}");
    let record = fuse(&d).await;
    assert_eq!(record.fold_order, strings(&["site-a", "site-c"]));
    verify(&d, 3);
}
