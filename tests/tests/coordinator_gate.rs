//! The promotion gate, in-process over a real `file://` store: a gated fusion stays a candidate
//! (`latest` unchanged, no further fusion), a regressing eval holds it, the operator promotes it by
//! hand (card gets the evals), a passing eval promotes automatically, a discarded candidate is never
//! served, restarts keep and complete the gate's state; and the real `coldfuse gate evaluate`
//! process scores a candidate on a held-out task and reports it.

use std::process::Command;

use axum::http::StatusCode;
use coldfuse_e2e::{
    coordinator::{call, contribute, latest, make_diff, Deployment},
    models::minilm_layers,
    process::bin,
};
use coldfuse_shared::{
    api::{
        keys, BaseManifest, DeploymentConfig, GateConfig, LatestPointer, Promotion, PromotionState,
        SiteGate, SiteRule,
    },
    hash::sha256_bytes,
};

fn gated(tolerance: f64) -> DeploymentConfig {
    DeploymentConfig {
        quorum: 3,
        gate: Some(GateConfig {
            tolerance,
            min_evals: 1,
            sites: None,
        }),
        ..DeploymentConfig::default()
    }
}

/// A gate on site reports alone: `min_reports` of them, or the deadline, under `rule`.
fn site_gated(min_reports: usize, deadline_secs: u64, rule: SiteRule) -> DeploymentConfig {
    DeploymentConfig {
        quorum: 3,
        gate: Some(GateConfig {
            tolerance: 0.02,
            min_evals: 0,
            sites: Some(SiteGate {
                min_reports,
                deadline_secs,
                rule,
            }),
        }),
        ..DeploymentConfig::default()
    }
}

/// A site report body: one linear-probe result with this gain and interval.
fn site_report(reference: u64, gain: f64, interval: f64) -> Vec<u8> {
    serde_json::json!({
        "reference_iteration": reference,
        "results": [{
            "method": "linear_probe", "metric": "accuracy",
            "reference_score": 0.5, "candidate_score": 0.5 + gain, "gain": gain,
            "interval": interval, "seeds": 4, "train_examples": 24, "dev_examples": 32
        }]
    })
    .to_string()
    .into_bytes()
}

async fn report_site(
    d: &Deployment,
    i: u64,
    token: &str,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let uri = format!("/v1/gate/{i}/reports");
    call(&d.router(), "POST", &uri, Some(token), body).await
}

/// One contribution against the latest base, then a forced fusion; the answer of the fusion.
async fn fuse_one(d: &Deployment, token: &str, seed: u64) -> (StatusCode, serde_json::Value) {
    let base = latest(d).await;
    let (dir, manifest) = make_diff(
        &d.coordinator.base_dir(base.iteration),
        &base.base_sha256,
        "site-a",
        seed,
        false,
    );
    let (status, v) = contribute(d, token, dir.path(), &manifest).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    d.fuse_now().await
}

fn eval(reference: u64, reference_score: f64, candidate_score: f64) -> Vec<u8> {
    serde_json::json!({
        "task": "polarity", "method": "linear_probe", "metric": "accuracy",
        "reference_iteration": reference, "reference_score": reference_score,
        "candidate_score": candidate_score, "seeds": 3, "examples": 100
    })
    .to_string()
    .into_bytes()
}

async fn report(d: &Deployment, i: u64, body: Vec<u8>) -> (StatusCode, serde_json::Value) {
    let uri = format!("/v1/admin/gate/{i}/evals");
    call(&d.router(), "POST", &uri, Some(&d.admin), body).await
}

async fn gate_record(d: &Deployment, i: u64) -> Promotion {
    let (status, v) = call(&d.router(), "GET", &format!("/v1/gate/{i}"), None, vec![]).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn coordinator_gate_holds_a_regression_promotes_by_hand_and_by_evals_and_discards() {
    let mut d = Deployment::new(gated(0.02)).await;
    let token = d.token("site-a").await;
    let base0 = latest(&d).await;

    // A gated fusion commits iteration 1 as a candidate: latest stays 0, the round says so.
    let (status, v) = fuse_one(&d, &token, 1).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["iteration"], 1);
    assert_eq!(latest(&d).await, base0);
    let (_, round) = call(&d.router(), "GET", "/v1/round", None, vec![]).await;
    assert_eq!(
        (
            round["candidate"].as_u64(),
            round["base_iteration"].as_u64()
        ),
        (Some(1), Some(0))
    );
    assert_eq!(gate_record(&d, 1).await.state, PromotionState::Pending);
    // No other fusion while it waits.
    let base = latest(&d).await;
    let (dir, m) = make_diff(
        &d.coordinator.base_dir(0),
        &base.base_sha256,
        "site-a",
        2,
        false,
    );
    assert_eq!(
        contribute(&d, &token, dir.path(), &m).await.0,
        StatusCode::OK
    );
    let (status, v) = d.fuse_now().await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "candidate_pending");

    // Evals: a contributor may not report; a wrong reference or a NaN is refused.
    let (status, _) = call(
        &d.router(),
        "POST",
        "/v1/admin/gate/1/evals",
        Some(&token),
        eval(0, 0.6, 0.6),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, v) = report(&d, 1, eval(5, 0.6, 0.6)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("wrong_reference"))
    );
    let (status, _) = report(&d, 1, br#"{"task": 1}"#.to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A regression beyond the tolerance holds it; latest keeps base 0, also after a restart.
    let (status, v) = report(&d, 1, eval(0, 0.60, 0.55)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let held: Promotion = serde_json::from_value(v).unwrap();
    assert_eq!(held.state, PromotionState::Held);
    assert!(
        held.reason
            .as_deref()
            .unwrap()
            .contains("regressed beyond tolerance 0.02"),
        "{held:?}"
    );
    d.reload().await;
    assert_eq!(latest(&d).await, base0);
    assert_eq!(
        d.coordinator
            .state
            .read()
            .await
            .candidate
            .as_ref()
            .map(|p| p.state),
        Some(PromotionState::Held)
    );
    let (status, v) = d.rollback(1).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("gated")),
        "no way around the gate"
    );

    // The operator promotes it by hand: latest moves, the card lists the eval, the manifest agrees.
    let (status, v) = call(
        &d.router(),
        "POST",
        "/v1/admin/gate/1/promote",
        Some(&d.admin),
        br#"{"reason": "probe noise"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let p: Promotion = serde_json::from_value(v).unwrap();
    assert_eq!(p.state, PromotionState::Promoted);
    assert!(p.decided_by.as_deref().unwrap().starts_with("admin:"));
    let base1 = latest(&d).await;
    assert_eq!(base1.iteration, 1);
    let (status, card) = coldfuse_e2e::coordinator::call_raw(
        &d.router(),
        "GET",
        "/v1/bases/1/files/README.md",
        None,
        vec![],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&card);
    assert!(text.contains("## Promotion gate") && text.contains("| polarity | LinearProbe | accuracy | 0.6000 (iteration 0) | 0.5500 | -0.0500 | 3 × 100 |") && text.contains("probe noise"), "{text}");
    assert_eq!(base1.file("README.md").unwrap().sha256, sha256_bytes(&card));
    // site-a's diff against base 0 no longer counts.
    assert_eq!(d.coordinator.state.read().await.status().accepted, 0);

    // Iteration 2 passes its eval and is promoted by the gate itself.
    let (status, v) = fuse_one(&d, &token, 3).await;
    assert_eq!(
        (status, v["iteration"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{v}"
    );
    let (status, v) = report(&d, 2, eval(1, 0.60, 0.59)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "promoted");
    assert_eq!(v["decided_by"], "gate");
    assert_eq!(latest(&d).await.iteration, 2);

    // Iteration 3 is discarded: never served; the next fusion builds on 2.
    let (_, v) = fuse_one(&d, &token, 4).await;
    assert_eq!(v["iteration"], 3);
    let (status, v) = call(
        &d.router(),
        "POST",
        "/v1/admin/gate/3/discard",
        Some(&d.admin),
        vec![],
    )
    .await;
    assert_eq!(
        (status, v["state"].as_str()),
        (StatusCode::OK, Some("discarded")),
        "{v}"
    );
    assert_eq!(latest(&d).await.iteration, 2);
    let (status, _) = call(
        &d.router(),
        "POST",
        "/v1/admin/gate/3/promote",
        Some(&d.admin),
        vec![],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a decided candidate stays decided"
    );
    let (status, v) = fuse_one(&d, &token, 5).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["iteration"].as_u64(), v["parent"].as_u64()),
        (Some(4), Some(2))
    );

    // A promotion cut short after `latest` moved (a crash) is completed at the next start.
    let store = coldfuse_shared::store::Store::open(&d.store_url).unwrap();
    store
        .put_json(keys::LATEST, &LatestPointer::to(4))
        .await
        .unwrap();
    d.reload().await;
    assert!(d.coordinator.state.read().await.candidate.is_none());
    let p = gate_record(&d, 4).await;
    assert_eq!(p.state, PromotionState::Promoted);
    assert!(p.reason.unwrap().contains("after a restart"));
    let served: BaseManifest = latest(&d).await;
    assert_eq!(served.iteration, 4);
}

/// The evaluator process: `coldfuse gate evaluate --once` pulls latest and the candidate, scores both
/// on a real held-out task and reports; with a generous tolerance the candidate is promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_gate_evaluator_process_reports_and_promotes() {
    let model = tempfile::tempdir().unwrap();
    minilm_layers(2, model.path());
    let d = Deployment::of_model(gated(1.0), model.path()).await;
    let token = d.token("site-a").await;
    let (status, v) = fuse_one(&d, &token, 1).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = d.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let cache = tempfile::tempdir().unwrap();
    let config = cache.path().join("config.toml");
    let (admin, url_c) = (d.admin.clone(), url.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin("coldfuse"))
            .env("COLDFUSE_COORDINATOR", &url_c)
            .env("COLDFUSE_TOKEN", &admin)
            .env("COLDFUSE_CONFIG", &config)
            .env("COLDFUSE_CACHE_DIR", cache.path())
            .env("RUST_LOG", "warn")
            .args(["gate", "evaluate", "--once", "--heldout-task", "polarity"])
            .args([
                "--heldout-examples",
                "16",
                "--heldout-dev",
                "32",
                "--seeds",
                "1",
                "--probe-seeds",
                "1",
                "--probe-epochs",
                "2",
            ])
            .args([
                "--heldout-epochs",
                "1",
                "--heldout-max-len",
                "24",
                "--probe-only",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("candidate 1: Promoted"), "{stdout}");
    let p = gate_record(&d, 1).await;
    assert_eq!(p.evals.len(), 1, "{p:?}");
    let e = &p.evals[0];
    assert_eq!(
        (e.task.as_str(), e.reference_iteration, e.seeds, e.examples),
        ("polarity", 0, 1, 16)
    );
    assert!((0.0..=1.0).contains(&e.candidate_score) && (0.0..=1.0).contains(&e.reference_score));
    assert_eq!(latest(&d).await.iteration, 1);
}

/// Site reports: only contributor tokens, one each, validated; under the median rule one hostile
/// site (a fake regression of −0.5) neither holds the candidate nor decides it, and the record names
/// the reports it counted (anonymous readers do not learn which sites reported); the card lists them
/// by digest only.
#[tokio::test]
async fn coordinator_gate_site_reports_decide_by_the_median_of_three() {
    let (d, tokens) = site_candidate(site_gated(3, 3600, SiteRule::Median), 3).await;

    // Who may report, and what is refused.
    let (status, v) = report_site(&d, 1, &d.admin, site_report(0, 0.0, 0.01)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, _) = call(
        &d.router(),
        "POST",
        "/v1/gate/1/reports",
        None,
        site_report(0, 0.0, 0.01),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for (body, code) in [
        (site_report(0, f64::NAN, 0.01), "bad_report"),
        (site_report(0, 0.0, -1.0), "bad_report"),
        (
            br#"{"reference_iteration": 0, "results": []}"#.to_vec(),
            "bad_report",
        ),
        (
            br#"{"reference_iteration": 0, "results": [], "texts": ["x"]}"#.to_vec(),
            "bad_report",
        ),
        (site_report(7, 0.0, 0.01), "wrong_reference"),
    ] {
        let (status, v) = report_site(&d, 1, &tokens[1], body).await;
        assert_eq!(v["error"]["code"], code, "{status} {v}");
    }
    let (status, v) = report_site(&d, 2, &tokens[1], site_report(0, 0.0, 0.01)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_candidate"))
    );

    // One hostile report waits for the others; a second report of the same site is refused.
    let (status, v) = report_site(&d, 1, &tokens[0], site_report(0, -0.5, 0.01)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["promotion"]["state"], "pending");
    let hostile = v["report"]["digest"].as_str().unwrap().to_string();
    let (status, v) = report_site(&d, 1, &tokens[0], site_report(0, 0.3, 0.01)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_reported"))
    );
    let (_, v) = report_site(&d, 1, &tokens[1], site_report(0, 0.03, 0.01)).await;
    assert_eq!(v["promotion"]["state"], "pending", "{v}");
    let (_, v) = report_site(&d, 1, &tokens[2], site_report(0, 0.02, 0.01)).await;
    let p: Promotion = serde_json::from_value(v["promotion"].clone()).unwrap();
    assert_eq!(p.state, PromotionState::Promoted, "{p:?}");
    assert!(
        p.reason
            .as_deref()
            .unwrap()
            .contains("median lower 95% bound of the gain over 3 site reports: +0.0100"),
        "{p:?}"
    );
    assert_eq!(p.used_reports.len(), 3);
    assert!(p.used_reports.contains(&hostile));
    let signed = p.receipt.clone().expect("a decision is signed");
    signed.verify(&d.coordinator.signer.public()).unwrap();
    assert_eq!(signed.receipt.state, PromotionState::Promoted);
    assert!(signed.counts(&hostile), "{signed:?}");
    assert_eq!(latest(&d).await.iteration, 1);

    // Read rules: admins see who reported; a site sees its own report only (with the nonce that lets
    // it recompute the digest); anonymous readers see no site and no admin token id.
    let (_, v) = call(&d.router(), "GET", "/v1/gate/1", Some(&d.admin), vec![]).await;
    assert_eq!(v["site_reports"][0]["contributor"], "site-a");
    let (_, v) = call(&d.router(), "GET", "/v1/gate/1", Some(&tokens[1]), vec![]).await;
    let seen: Vec<(Option<&str>, bool)> = v["site_reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["contributor"].as_str(), r["nonce"].is_string()))
        .collect();
    assert_eq!(
        seen,
        [(None, false), (Some("site-b"), true), (None, false)],
        "{v}"
    );
    let (_, v) = call(&d.router(), "GET", "/v1/gate/1", None, vec![]).await;
    assert!(
        v["site_reports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["contributor"].is_null()),
        "{v}"
    );
    let card_path = d.work().join("card.md");
    d.coordinator
        .store
        .get_file(
            &keys::base_file(1, coldfuse_shared::api::MODEL_CARD),
            &card_path,
        )
        .await
        .unwrap();
    let card = std::fs::read_to_string(&card_path).unwrap();
    assert!(card.contains(&hostile[..12]), "{card}");
    assert!(!card.contains("site-a"), "{card}");
}

/// The `any` rule gives each site a veto; a deadline with too few reports decides on those that
/// arrived, and one with none holds the candidate for the operator.
#[tokio::test]
async fn coordinator_gate_site_reports_any_rule_and_deadline() {
    let (d, tokens) = site_candidate(site_gated(3, 3600, SiteRule::Any), 3).await;
    report_site(&d, 1, &tokens[0], site_report(0, 0.02, 0.01)).await;
    report_site(&d, 1, &tokens[1], site_report(0, 0.02, 0.01)).await;
    let (_, v) = report_site(&d, 1, &tokens[2], site_report(0, -0.03, 0.01)).await;
    let p: Promotion = serde_json::from_value(v["promotion"].clone()).unwrap();
    assert_decided(&p, PromotionState::Held, "lowest lower 95% bound");

    // Deadline: 1 s after the fusion. Two reports of three: the missing one counts as −∞, so the
    // lower median is the worse of the two present (both must pass), and they do.
    let (d, tokens) = site_candidate(site_gated(3, 1, SiteRule::Median), 2).await;
    report_site(&d, 1, &tokens[0], site_report(0, 0.01, 0.005)).await;
    let (_, v) = report_site(&d, 1, &tokens[1], site_report(0, 0.03, 0.005)).await;
    assert_eq!(v["promotion"]["state"], "pending");
    let not_yet = coldfuse_coordinator::gate::check_deadline(&d.coordinator).await;
    assert!(not_yet.unwrap().is_some(), "not due yet");
    let p = after_the_deadline(&d).await;
    assert_decided(
        &p,
        PromotionState::Promoted,
        "2 of 3 by the deadline: +0.0050",
    );

    // One report of three by the deadline passes nothing: held for the operator. A report arriving
    // after that decides nothing either (it was how one site alone promoted a held candidate).
    let (d, tokens) = site_candidate(site_gated(3, 1, SiteRule::Median), 2).await;
    report_site(&d, 1, &tokens[0], site_report(0, 0.5, 0.005)).await;
    let p = after_the_deadline(&d).await;
    assert_decided(&p, PromotionState::Held, "1 of 3 by the deadline");
    let (status, v) = report_site(&d, 1, &tokens[1], site_report(0, 0.5, 0.005)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_candidate")),
        "{v}"
    );
    assert_eq!(gate_record(&d, 1).await.state, PromotionState::Held);
    assert_eq!(latest(&d).await.iteration, 0);
    // The operator's discard is signed, by the admin, and still names the report the gate's verdict
    // (the hold) counted.
    let uri = "/v1/admin/gate/1/discard";
    let (_, v) = call(&d.router(), "POST", uri, Some(&d.admin), vec![]).await;
    let p: Promotion = serde_json::from_value(v).unwrap();
    let signed = p.receipt.expect("signed");
    signed.verify(&d.coordinator.signer.public()).unwrap();
    let r = &signed.receipt;
    assert_eq!((r.state, r.reports.len()), (PromotionState::Discarded, 1));
    assert!(r.decided_by.starts_with("admin:"), "{signed:?}");

    // None by the deadline: held.
    let (d, _) = site_candidate(site_gated(2, 1, SiteRule::Median), 1).await;
    let p = after_the_deadline(&d).await;
    assert_decided(&p, PromotionState::Held, "no site reported by the deadline");
    assert_eq!(latest(&d).await.iteration, 0);
}

/// A deployment under `config` with `sites` contributor tokens (site-a, site-b, ...) and candidate 1
/// fused from site-a's diff.
async fn site_candidate(config: DeploymentConfig, sites: usize) -> (Deployment, Vec<String>) {
    let d = Deployment::new(config).await;
    let mut tokens = Vec::new();
    for name in ["site-a", "site-b", "site-c"].into_iter().take(sites) {
        tokens.push(d.token(name).await);
    }
    let (status, v) = fuse_one(&d, &tokens[0], 1).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    (d, tokens)
}

/// Candidate 1's record once its 1 s site deadline passed and the fusion task's check ran.
async fn after_the_deadline(d: &Deployment) -> Promotion {
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let next = coldfuse_coordinator::gate::check_deadline(&d.coordinator).await;
    assert_eq!(next.unwrap(), None, "nothing left to wait for");
    gate_record(d, 1).await
}

fn assert_decided(p: &Promotion, state: PromotionState, why: &str) {
    assert_eq!(p.state, state, "{p:?}");
    assert!(
        p.reason.as_deref().unwrap_or_default().contains(why),
        "{p:?}"
    );
}

/// A candidate fused from zero diffs has latest's own weights; discarding it must not make latest's
/// weights stale (they shared one entry of the base index, and every later diff was refused as
/// `stale_base`, also after a restart).
#[tokio::test]
async fn coordinator_gate_discarding_a_candidate_identical_to_latest_keeps_latest_fresh() {
    let mut d = Deployment::new(gated(0.02)).await;
    let token = d.token("site-a").await;
    // Iteration 1, promoted by hand: a base the coordinator serialised itself.
    let (status, v) = fuse_one(&d, &token, 1).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = call(
        &d.router(),
        "POST",
        "/v1/admin/gate/1/promote",
        Some(&d.admin),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let base = latest(&d).await;
    assert_eq!(base.iteration, 1);
    let (dir, m) = coldfuse_e2e::coordinator::shaped_diff(
        &d.coordinator.base_dir(1),
        &base.base_sha256,
        "site-a",
        2,
        0.0,
        |_| true,
    );
    let (status, v) = contribute(&d, &token, dir.path(), &m).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = d.fuse_now().await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v["base_sha256"].as_str(),
        Some(base.base_sha256.as_str()),
        "same weights"
    );
    let (status, v) = call(
        &d.router(),
        "POST",
        "/v1/admin/gate/2/discard",
        Some(&d.admin),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    for (restart, site) in [(false, "site-b"), (true, "site-c")] {
        if restart {
            d.reload().await;
        }
        let token = d.token(site).await;
        let (dir, m) = make_diff(
            &d.coordinator.base_dir(1),
            &base.base_sha256,
            site,
            7,
            false,
        );
        let (status, v) = contribute(&d, &token, dir.path(), &m).await;
        assert_eq!(status, StatusCode::OK, "restart {restart}: {v}");
    }
}
