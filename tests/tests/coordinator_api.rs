//! The coordinator's router in-process over a real `file://` store: init, tokens, announce and
//! upload, validation verdicts, quorum-triggered fusion, downloads with Range, lineage, auth, restart.

use std::time::Duration;

use axum::http::StatusCode;
use coldfuse_coordinator::fusion_task;
use coldfuse_e2e::coordinator::{
    announce, call, call_raw, contribute, latest, make_diff, Deployment,
};
use coldfuse_shared::{
    api::{DeploymentConfig, IterationRecord, RoundStatus},
    diff::DIFF_FILE,
    ModelDir,
};

#[tokio::test]
async fn coordinator_runs_an_iteration_from_uploads_to_a_downloadable_fused_base() {
    let config = DeploymentConfig {
        quorum: 2,
        ..DeploymentConfig::default()
    };
    let d = Deployment::new(config).await;
    tokio::spawn(fusion_task::run(d.coordinator.clone()));
    let base0 = latest(&d).await;
    assert_eq!(base0.iteration, 0);
    let base_dir = d.coordinator.base_dir(0);
    let mut diffs = Vec::new();
    for (i, name) in ["site-a", "site-b"].iter().enumerate() {
        let token = d.token(name).await;
        let (dir, manifest) = make_diff(&base_dir, &base0.base_sha256, name, i as u64, false);
        let (status, v) = contribute(&d, &token, dir.path(), &manifest).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["verdict"]["status"], "accepted");
        diffs.push((dir, manifest));
    }
    // The quorum of 2 triggers the fusion off the request path; the API answers meanwhile.
    let mut round: RoundStatus =
        serde_json::from_value(call(&d.router(), "GET", "/v1/round", None, vec![]).await.1)
            .unwrap();
    for _ in 0..200 {
        if round.iteration == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        round = serde_json::from_value(call(&d.router(), "GET", "/v1/round", None, vec![]).await.1)
            .unwrap();
    }
    assert_eq!(round.iteration, 2, "{round:?}");
    assert_eq!(round.accepted, 0);
    let base1 = latest(&d).await;
    assert_eq!(base1.iteration, 1);
    assert_ne!(base1.base_sha256, base0.base_sha256);
    // Lineage records both iterations and the fused contributions.
    let (_, v) = call(&d.router(), "GET", "/v1/lineage", None, vec![]).await;
    let lineage: Vec<IterationRecord> = serde_json::from_value(v).unwrap();
    assert_eq!(lineage.len(), 2);
    assert_eq!(lineage[1].parent, Some(0));
    assert_eq!(lineage[1].contributions.len(), 2);
    // Download the fused weights (full and by Range) and check hashes and values.
    let uri = "/v1/bases/1/files/model.safetensors";
    let (status, full) = call_raw(&d.router(), "GET", uri, None, vec![], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        coldfuse_shared::hash::sha256_bytes(&full),
        base1.base_sha256
    );
    let (status, part) =
        call_raw(&d.router(), "GET", uri, None, vec![], Some("bytes=100-199")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part, full[100..200]);
    let (status, tail) = call_raw(&d.router(), "GET", uri, None, vec![], Some("bytes=-10")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail, full[full.len() - 10..]);
    let (status, _) = call_raw(
        &d.router(),
        "GET",
        uri,
        None,
        vec![],
        Some("bytes=999999999-"),
    )
    .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    // The single-archive download unpacks with tar into files matching the manifest.
    let (status, tarball) = call_raw(
        &d.router(),
        "GET",
        "/v1/bases/1/archive",
        None,
        vec![],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let unpack = tempfile::tempdir().unwrap();
    std::fs::write(unpack.path().join("base.tar"), &tarball).unwrap();
    let ok = std::process::Command::new("tar")
        .arg("-xf")
        .arg("base.tar")
        .current_dir(unpack.path())
        .status()
        .unwrap();
    assert!(ok.success());
    for f in &base1.files {
        let path = unpack.path().join("coldfuse-base-000001").join(&f.name);
        assert_eq!(
            coldfuse_shared::hash::sha256_file(&path).unwrap(),
            f.sha256,
            "{}",
            f.name
        );
    }
    // base 1 = base 0 + mean(diffs), tensor by tensor.
    let b0 = ModelDir::open(d.coordinator.base_dir(0)).unwrap();
    let b1 = ModelDir::open(d.coordinator.base_dir(1)).unwrap();
    let readers: Vec<_> = diffs
        .iter()
        .map(|(dir, _)| {
            coldfuse_shared::tensorfile::TensorFile::open(dir.path().join(DIFF_FILE)).unwrap()
        })
        .collect();
    let mut worst = 0f32;
    for info in &readers[0].header.tensors {
        let canon = coldfuse_shared::checkpoint::canonical(&info.name, "bert").0;
        let base: Vec<f32> = b0.tensors[&canon].flatten_all().unwrap().to_vec1().unwrap();
        let fused: Vec<f32> = b1.tensors[&canon].flatten_all().unwrap().to_vec1().unwrap();
        let mut sum = vec![0f32; base.len()];
        for r in &readers {
            let mut v = vec![0f32; base.len()];
            r.read_f32(r.info(&info.name).unwrap(), 0, &mut v, &mut Vec::new())
                .unwrap();
            sum.iter_mut().zip(&v).for_each(|(s, x)| *s += x / 2.0);
        }
        for ((b, f), s) in base.iter().zip(&fused).zip(&sum) {
            worst = worst.max((b + s - f).abs());
        }
    }
    assert!(worst < 1e-6, "{worst}");
    // A diff against base 0 is now stale (synchronous mode).
    let token = d.token("site-c").await;
    let (dir, manifest) = make_diff(&base_dir, &base0.base_sha256, "site-c", 9, false);
    let (status, v) = contribute(&d, &token, dir.path(), &manifest).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "stale_base");
}

#[tokio::test]
async fn coordinator_refuses_bad_input_and_keeps_the_store_intact() {
    let d = Deployment::new(DeploymentConfig {
        quorum: 5,
        ..DeploymentConfig::default()
    })
    .await;
    let base0 = latest(&d).await;
    let base_dir = d.coordinator.base_dir(0);
    let token = d.token("site-a").await;
    let router = d.router();
    // Malformed JSON.
    let (status, v) = call(
        &router,
        "POST",
        "/v1/contributions",
        Some(&token),
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_manifest"))
    );
    // Foreign base.
    let (dir, mut manifest) = make_diff(&base_dir, &base0.base_sha256, "site-a", 1, false);
    let good = manifest.clone();
    manifest.base.sha256 = "0".repeat(64);
    let (status, v) = contribute(&d, &token, dir.path(), &manifest).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("stale_base"))
    );
    // NaN inside an otherwise well-formed diff: rejected with its reason, recorded, nothing fused.
    let (bad_dir, bad) = make_diff(&base_dir, &base0.base_sha256, "site-a", 1, true);
    let (status, v) = contribute(&d, &token, bad_dir.path(), &bad).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("non_finite")),
        "{v}"
    );
    let v = d.contribution("site-a", &token).await;
    assert_eq!(v["verdict"]["reason"], "non_finite");
    // A site's contribution status is its own (norm, progress, verdict): not for anonymous readers.
    let (status, _) = call(&router, "GET", "/v1/contributions/site-a", None, vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Truncated upload: integrity.
    let (status, v) = announce(&d, &token, &good).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let bytes = std::fs::read(dir.path().join(DIFF_FILE)).unwrap();
    let (status, v) = call(
        &router,
        "PUT",
        "/v1/contributions/site-a/diff",
        Some(&token),
        bytes[..bytes.len() - 8].to_vec(),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("integrity"))
    );
    // Oversize upload.
    let (status, _) = announce(&d, &token, &good).await;
    assert_eq!(status, StatusCode::CREATED);
    let mut big = bytes.clone();
    big.extend_from_slice(&[0; 64]);
    let (status, v) = call(
        &router,
        "PUT",
        "/v1/contributions/site-a/diff",
        Some(&token),
        big,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large"))
    );
    // The good one is accepted, then a duplicate is refused.
    let (status, v) = contribute(&d, &token, dir.path(), &good).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = announce(&d, &token, &good).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("duplicate"))
    );
    // Nothing changed the published base; the metrics count what happened.
    assert_eq!(latest(&d).await, base0);
    let (_, text) = call_raw(&router, "GET", "/metrics", None, vec![], None).await;
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("coldfuse_contributions_rejected_total{reason=\"non_finite\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("coldfuse_contributions_accepted_total 1"),
        "{text}"
    );
}

#[tokio::test]
async fn coordinator_auth_answers_401_and_403() {
    let d = Deployment::new(DeploymentConfig {
        public_read: false,
        ..DeploymentConfig::default()
    })
    .await;
    let router = d.router();
    let (status, _) = call(&router, "POST", "/v1/admin/fuse", None, vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&router, "POST", "/v1/admin/fuse", Some("cf_forged"), vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let token = d.token("site-a").await;
    let (status, v) = call(&router, "POST", "/v1/admin/fuse", Some(&token), vec![]).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    // Writing as another contributor.
    let base0 = d.coordinator.state.read().await.latest.clone();
    let (_, manifest) = make_diff(
        &d.coordinator.base_dir(0),
        &base0.base_sha256,
        "site-b",
        1,
        false,
    );
    let (status, _) = announce(&d, &token, &manifest).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Private deployment: reads need a token.
    let (status, _) = call(&router, "GET", "/v1/bases/latest", None, vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&router, "GET", "/v1/bases/latest", Some(&token), vec![]).await;
    assert_eq!(status, StatusCode::OK);
    // Revoked tokens stop working.
    let (_, v) = call(
        &router,
        "POST",
        "/v1/admin/tokens",
        Some(&d.admin),
        br#"{"role": "reader"}"#.to_vec(),
    )
    .await;
    let (reader, id) = (
        v["token"].as_str().unwrap().to_string(),
        v["record"]["id"].as_str().unwrap().to_string(),
    );
    let (status, _) = call(
        &router,
        "DELETE",
        &format!("/v1/admin/tokens/{id}"),
        Some(&d.admin),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&router, "GET", "/v1/round", Some(&reader), vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Health and the OpenAPI document need nothing.
    let (status, _) = call(&router, "GET", "/healthz", None, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = call(&router, "GET", "/v1/openapi.json", None, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        v["paths"]["/v1/contributions/{contributor}/diff"]["put"].is_object(),
        "{v}"
    );
}

#[tokio::test]
async fn coordinator_restart_keeps_accepted_contributions_and_rollback_backtracks() {
    let mut d = Deployment::new(DeploymentConfig {
        quorum: 3,
        ..DeploymentConfig::default()
    })
    .await;
    let base0 = latest(&d).await;
    let base_dir = d.coordinator.base_dir(0);
    let token = d.token("site-a").await;
    let (dir, manifest) = make_diff(&base_dir, &base0.base_sha256, "site-a", 1, false);
    assert_eq!(
        contribute(&d, &token, dir.path(), &manifest).await.0,
        StatusCode::OK
    );
    // Restart: the accepted contribution is still counted; tokens still work.
    d.reload().await;
    assert_eq!(d.coordinator.state.read().await.status().accepted, 1);
    let token_b = d.token("site-b").await;
    let (dir_b, manifest_b) = make_diff(&base_dir, &base0.base_sha256, "site-b", 2, false);
    assert_eq!(
        contribute(&d, &token_b, dir_b.path(), &manifest_b).await.0,
        StatusCode::OK
    );
    // Forced fusion below quorum, synchronously.
    let (status, v) = d.fuse_now().await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["iteration"], 1);
    d.reload().await;
    assert_eq!(latest(&d).await.iteration, 1);
    assert_eq!(d.coordinator.state.read().await.round_iteration(), 2);
    // Roll back to iteration 0: latest serves it again, and the next round builds on it.
    let (status, v) = d.rollback(0).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(latest(&d).await, base0);
    d.reload().await;
    assert_eq!(latest(&d).await, base0);
    let (status, v) = call(&d.router(), "GET", "/v1/round", None, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["iteration"], 2);
    assert_eq!(v["base_iteration"], 0);
}

#[tokio::test]
async fn coordinator_server_momentum_carries_its_state_across_iterations_and_restarts() {
    let config = DeploymentConfig {
        quorum: 1,
        server_optimizer: "momentum:lr=1,beta=0.5".parse().unwrap(),
        ..DeploymentConfig::default()
    };
    let mut d = Deployment::new(config).await;
    let token = d.token("site-a").await;
    let mut diffs = Vec::new();
    for i in 0..2u64 {
        let base = latest(&d).await;
        let (dir, manifest) = make_diff(
            &d.coordinator.base_dir(base.iteration),
            &base.base_sha256,
            "site-a",
            i,
            false,
        );
        assert_eq!(
            contribute(&d, &token, dir.path(), &manifest).await.0,
            StatusCode::OK
        );
        let (status, v) = d.fuse_now().await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let record: IterationRecord = serde_json::from_value(v).unwrap();
        assert!(record.optimizer_state_sha256.is_some());
        diffs.push((dir, manifest));
        d.reload().await; // the state must come from the store, not from memory
    }
    // base2 − base1 = Δ2 + 0.5·m1, with m1 = Δ1 = base1 − base0.
    let load = |i: u64| ModelDir::open(d.coordinator.base_dir(i)).unwrap();
    let (b0, b1, b2) = (load(0), load(1), load(2));
    let diff2 =
        coldfuse_shared::tensorfile::TensorFile::open(diffs[1].0.path().join(DIFF_FILE)).unwrap();
    let mut worst = 0f32;
    for info in &diff2.header.tensors {
        let canon = coldfuse_shared::checkpoint::canonical(&info.name, "bert").0;
        let get = |m: &ModelDir| -> Vec<f32> {
            m.tensors[&canon].flatten_all().unwrap().to_vec1().unwrap()
        };
        let (x0, x1, x2) = (get(&b0), get(&b1), get(&b2));
        let mut d2 = vec![0f32; x0.len()];
        diff2.read_f32(info, 0, &mut d2, &mut Vec::new()).unwrap();
        for j in 0..x0.len() {
            worst = worst.max((x2[j] - x1[j] - (d2[j] + 0.5 * (x1[j] - x0[j]))).abs());
        }
    }
    assert!(worst < 1e-5, "{worst}");
}

#[tokio::test]
async fn coordinator_asynchronous_mode_accepts_stale_diffs_scaled_by_staleness() {
    let config = DeploymentConfig {
        quorum: 1,
        mode: coldfuse_shared::api::SyncMode::Asynchronous { max_staleness: 1 },
        ..DeploymentConfig::default()
    };
    let d = Deployment::new(config).await;
    let base0 = latest(&d).await;
    let dir0 = d.coordinator.base_dir(0);
    let (ta, tb, tc) = (
        d.token("site-a").await,
        d.token("site-b").await,
        d.token("site-c").await,
    );
    let (da, ma) = make_diff(&dir0, &base0.base_sha256, "site-a", 1, false);
    assert_eq!(contribute(&d, &ta, da.path(), &ma).await.0, StatusCode::OK);
    assert_eq!(d.fuse_now().await.0, StatusCode::OK);
    // site-b trained on base 0 while base 1 was published: staleness 1, accepted.
    let (db, mb) = make_diff(&dir0, &base0.base_sha256, "site-b", 2, false);
    let (status, v) = contribute(&d, &tb, db.path(), &mb).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = d.fuse_now().await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let record: IterationRecord = serde_json::from_value(v).unwrap();
    assert_eq!(record.contributions[0].staleness, 1);
    // base2 = base1 + Δ_b / √2.
    let load = |i: u64| ModelDir::open(d.coordinator.base_dir(i)).unwrap();
    let (b1, b2) = (load(1), load(2));
    let diff = coldfuse_shared::tensorfile::TensorFile::open(db.path().join(DIFF_FILE)).unwrap();
    let mut worst = 0f32;
    for info in &diff.header.tensors {
        let canon = coldfuse_shared::checkpoint::canonical(&info.name, "bert").0;
        let x1: Vec<f32> = b1.tensors[&canon].flatten_all().unwrap().to_vec1().unwrap();
        let x2: Vec<f32> = b2.tensors[&canon].flatten_all().unwrap().to_vec1().unwrap();
        let mut delta = vec![0f32; x1.len()];
        diff.read_f32(info, 0, &mut delta, &mut Vec::new()).unwrap();
        for j in 0..x1.len() {
            worst = worst.max((x2[j] - x1[j] - delta[j] / 2f32.sqrt()).abs());
        }
    }
    assert!(worst < 1e-6, "{worst}");
    // Staleness 2 is beyond the limit.
    let (dc, mc) = make_diff(&dir0, &base0.base_sha256, "site-c", 3, false);
    let (status, v) = contribute(&d, &tc, dc.path(), &mc).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("stale_base"))
    );
}

#[tokio::test]
async fn coordinator_fuses_at_the_deadline_below_quorum() {
    let config = DeploymentConfig {
        quorum: 5,
        min_contributions: 1,
        deadline_secs: Some(1),
        ..DeploymentConfig::default()
    };
    let d = Deployment::new(config).await;
    tokio::spawn(fusion_task::run(d.coordinator.clone()));
    let base0 = latest(&d).await;
    let token = d.token("site-a").await;
    let (dir, manifest) = make_diff(
        &d.coordinator.base_dir(0),
        &base0.base_sha256,
        "site-a",
        1,
        false,
    );
    assert_eq!(
        contribute(&d, &token, dir.path(), &manifest).await.0,
        StatusCode::OK
    );
    let (_, v) = call(&d.router(), "GET", "/v1/round", None, vec![]).await;
    assert!(v["deadline"].as_u64().is_some(), "{v}");
    assert_eq!(
        v["iteration"], 1,
        "one contribution is below the quorum of 5"
    );
    let mut iteration = 1;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        iteration = call(&d.router(), "GET", "/v1/round", None, vec![]).await.1["iteration"]
            .as_u64()
            .unwrap();
        if iteration == 2 {
            break;
        }
    }
    assert_eq!(iteration, 2, "the deadline fused the round");
}

/// The served OpenAPI document passes a real validator (`openapi-spec-validator` from PyPI, installed by
/// scripts/assets.sh): client generators can use it. Its paths come from the router's own table.
#[tokio::test]
async fn coordinator_openapi_document_passes_a_real_validator() {
    let validator = std::env::var("COLDFUSE_OPENAPI_VALIDATOR").expect(
        "COLDFUSE_OPENAPI_VALIDATOR is not set: run `eval \"$(scripts/assets.sh)\"` (scripts/test.sh does)",
    );
    let d = Deployment::new(DeploymentConfig::default()).await;
    let (status, doc) = call_raw(&d.router(), "GET", "/v1/openapi.json", None, vec![], None).await;
    assert_eq!(status, StatusCode::OK);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, &doc).unwrap();
    let out = std::process::Command::new(validator)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
