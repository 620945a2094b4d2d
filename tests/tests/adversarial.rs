//! The trust boundary, attacked: one test per way a contributor token (buggy or hostile) could break a
//! deployment, against the real router over a real `file://` store. Each must leave the published base,
//! the accepted contributions and the lineage intact; at worst the attacker loses its own contribution.
//! (Races with a running fusion and revocation are in `adversarial_race.rs`.)

use std::path::Path;

use axum::http::StatusCode;
use coldfuse_e2e::coordinator::{
    announce, call, call_raw, contribute, contribute_accepted, latest, make_diff, put_range,
    shaped_diff, stalled_request, wait_uploading, Deployment,
};
use coldfuse_shared::store::Store;
use coldfuse_shared::{
    api::{
        keys, ContributionStatus, DeploymentConfig, IterationRecord, LatestPointer, RoundStatus,
    },
    diff::{DiffManifest, DIFF_FILE, MANIFEST_FILE},
    tensorfile::TensorFile,
};

fn config(quorum: usize) -> DeploymentConfig {
    DeploymentConfig {
        quorum,
        ..DeploymentConfig::default()
    }
}

async fn round(d: &Deployment) -> RoundStatus {
    serde_json::from_value(call(&d.router(), "GET", "/v1/round", None, vec![]).await.1).unwrap()
}

/// site-a's token and the bytes of the diff it announced (not uploaded yet).
async fn announced(d: &Deployment) -> (String, Vec<u8>) {
    let token = d.token("site-a").await;
    let base = latest(d).await;
    let (dir, m) = make_diff(
        &d.coordinator.base_dir(0),
        &base.base_sha256,
        "site-a",
        0,
        false,
    );
    assert_eq!(announce(d, &token, &m).await.0, StatusCode::CREATED);
    (token, diff_bytes(dir.path()))
}

fn diff_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(DIFF_FILE)).unwrap()
}

/// Attack 1: a manifest hash that walks out of the upload spool. It is refused at the announce, and
/// nothing is written outside the work directory.
#[tokio::test]
async fn a_manifest_hash_cannot_name_a_path() {
    let d = Deployment::new(config(3)).await;
    let token = d.token("site-a").await;
    let base = latest(&d).await;
    let (_dir, mut m) = make_diff(
        &d.coordinator.base_dir(0),
        &base.base_sha256,
        "site-a",
        0,
        false,
    );
    let escaped = Path::new("/escaped/owned.part");
    let _ = std::fs::remove_file(escaped);
    m.diff_sha256 = "aaaaaaaaaaaaaaa\u{e9}/../../../../../escaped/owned".into();
    let (status, v) = announce(&d, &token, &m).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "bad_manifest");
    let (status, _) = put_range(&d, &token, "site-a", &[0u8; 55], 0, 55, 1000).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!escaped.exists(), "a spool escaped the work directory");
    // Every other field a contributor controls is bounded too.
    let (_dir, good) = make_diff(
        &d.coordinator.base_dir(0),
        &base.base_sha256,
        "site-a",
        0,
        false,
    );
    let mut bad = Vec::new();
    let mut m = good.clone();
    m.metrics = (0..1000).map(|i| (format!("m{i}"), 0.5)).collect();
    bad.push(m);
    let mut m = good.clone();
    m.num_examples = u64::MAX;
    bad.push(m);
    let mut m = good.clone();
    m.created_by = "x".repeat(100_000);
    bad.push(m);
    let mut m = good.clone();
    m.base.sha256 = m.base.sha256.to_uppercase();
    bad.push(m);
    let mut m = good.clone();
    m.tensors[0].name = "bert.not.in.the.base".into();
    bad.push(m);
    let mut m = good.clone();
    m.tensors[0].shape = vec![1 << 20, 1 << 10];
    bad.push(m);
    for m in bad {
        let (status, v) = announce(&d, &token, &m).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    }
    // A spool may hold no more than a diff of the listed tensors can take (not the 8 GiB limit).
    let mut m = good.clone();
    m.diff_bytes = 4 << 30;
    let (status, v) = announce(&d, &token, &m).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let (status, v) = announce(&d, &token, &good).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
}

/// Attack 2: a diff of a single body tensor, accepted beside complete ones, used to make every fusion
/// fail. A diff may cover any subset of the body (the rest counts as zeros), so the round fuses.
#[tokio::test]
async fn a_partial_diff_cannot_block_the_round() {
    let d = Deployment::new(config(10)).await;
    let base = latest(&d).await;
    let dir0 = d.coordinator.base_dir(0);
    let a = d.token("site-a").await;
    let b = d.token("site-b").await;
    let (pa, ma) = shaped_diff(&dir0, &base.base_sha256, "site-a", 1, 1.0, |n| {
        n == "embeddings.LayerNorm.weight"
    });
    assert_eq!(ma.tensors.len(), 1);
    let (pb, mb) = make_diff(&dir0, &base.base_sha256, "site-b", 2, false);
    for (t, dir, m) in [(&a, &pa, &ma), (&b, &pb, &mb)] {
        let (status, v) = contribute(&d, t, dir.path(), m).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    let (status, v) = d.fuse_now().await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let record: IterationRecord = serde_json::from_value(v).unwrap();
    assert_eq!(record.contributions.len(), 2);
    assert_eq!(latest(&d).await.iteration, 1);
}

/// Attack 3: poisoning under the default settings. A 1e20 diff is rejected at its upload (norm bound);
/// a ×100 diff among three honest ones is left out of the fusion (above 4 × the lower median norm,
/// quarantined with its reason), so the published base is the honest fusion: finite, its update within
/// the honest scale, and the lineage records a finite norm.
#[tokio::test]
async fn oversized_diffs_are_rejected_or_left_out_by_default() {
    let d = Deployment::new(config(4)).await;
    let base = latest(&d).await;
    let dir0 = d.coordinator.base_dir(0);
    let (huge_dir, huge) = shaped_diff(&dir0, &base.base_sha256, "site-x", 9, 1e22, |_| true);
    let x = d.token("site-x").await;
    let (status, v) = contribute(&d, &x, huge_dir.path(), &huge).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "norm_bound");
    let mut honest_norms = Vec::new();
    for (i, name) in ["site-a", "site-b", "site-c"].iter().enumerate() {
        let t = d.token(name).await;
        // Honest fine-tuning moves this tiny model (weights of std 0.02) by ~2e-4 per weight.
        let (dir, m) = shaped_diff(&dir0, &base.base_sha256, name, i as u64, 0.02, |_| true);
        let (status, v) = contribute(&d, &t, dir.path(), &m).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        honest_norms.push(v["verdict"]["l2_norm"].as_f64().unwrap());
    }
    let (loud_dir, loud) = shaped_diff(&dir0, &base.base_sha256, "site-y", 3, 2.0, |_| true);
    let y = d.token("site-y").await;
    let (status, v) = contribute(&d, &y, loud_dir.path(), &loud).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a ×100 diff is within the absolute bound: {v}"
    );
    let loud_norm = v["verdict"]["l2_norm"].as_f64().unwrap();
    let (status, v) = d.fuse_now().await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let record: IterationRecord = serde_json::from_value(v).unwrap();
    let update = record.update_l2_norm.expect("a finite update norm");
    let max_honest = honest_norms.iter().cloned().fold(0.0, f64::max);
    assert!(
        update <= 4.0 * max_honest,
        "update {update} vs honest {honest_norms:?}"
    );
    assert!(loud_norm > 50.0 * max_honest);
    let mut fused: Vec<_> = record
        .contributions
        .iter()
        .map(|c| &c.contributor)
        .collect();
    fused.sort();
    assert_eq!(fused, ["site-a", "site-b", "site-c"]);
    let store = Store::open(&d.store_url).unwrap();
    let q: coldfuse_shared::api::Quarantine = store
        .get_json(&keys::contribution_file(1, "site-y", keys::QUARANTINE))
        .await
        .unwrap()
        .expect("the ×100 diff's quarantine record");
    assert_eq!(q.reason, "norm_outlier");
    let weights = TensorFile::open(d.coordinator.base_dir(1).join("model.safetensors")).unwrap();
    let mut buf = Vec::new();
    let mut halves = Vec::new();
    for t in &weights.header.tensors {
        if t.dtype.is_weight_float() {
            buf.resize(t.numel(), 0.0);
            weights.read_f32(t, 0, &mut buf, &mut halves).unwrap();
            assert!(
                buf.iter().all(|v| v.is_finite() && v.abs() < 1e3),
                "{}",
                t.name
            );
        }
    }
}

/// Attack 4: re-announcing while one's own upload is in flight. The announce waits for no one: it is
/// refused while the upload holds the contributor's slot, so the store never pairs manifest M2 with
/// diff D1 and the iteration stays verifiable.
#[tokio::test]
async fn a_reannounce_cannot_replace_the_manifest_under_a_running_upload() {
    let d = Deployment::new(config(10)).await;
    let token = d.token("site-a").await;
    let base = latest(&d).await;
    let dir0 = d.coordinator.base_dir(0);
    let (d1, m1) = make_diff(&dir0, &base.base_sha256, "site-a", 1, false);
    let (_d2, m2) = make_diff(&dir0, &base.base_sha256, "site-a", 2, false);
    let (status, _) = announce(&d, &token, &m1).await;
    assert_eq!(status, StatusCode::CREATED);
    // D1's upload: a body that stalls after its first half until the test releases it.
    let bytes = diff_bytes(d1.path());
    let half = bytes.len() / 2;
    let upload = stalled_request(
        &d.router(),
        "PUT",
        "/v1/contributions/site-a/diff",
        &token,
        &[],
    );
    upload.body.send(bytes[..half].to_vec()).await.unwrap();
    wait_uploading(&d).await;
    let (status, v) = announce(&d, &token, &m2).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "upload_in_progress");
    upload.body.send(bytes[half..].to_vec()).await.unwrap();
    drop(upload.body);
    assert_eq!(upload.answer.await.unwrap().0, StatusCode::OK);
    let store = Store::open(&d.store_url).unwrap();
    let stored: DiffManifest = store
        .get_json(&keys::contribution_file(1, "site-a", MANIFEST_FILE))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored, m1,
        "the store pairs the accepted diff with its own manifest"
    );
    let (status, _) = d.fuse_now().await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = call(
        &d.router(),
        "GET",
        "/v1/lineage/1/contributions/site-a/receipt",
        Some(&token),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

/// Attack 7: disk. Every announce with a new hash used to open a new spool of up to `max_diff_bytes`;
/// now a contributor holds one spool, and it survives a restart so the upload really resumes.
#[tokio::test]
async fn a_contributor_holds_one_spool_which_survives_a_restart() {
    let mut d = Deployment::new(config(10)).await;
    let token = d.token("site-a").await;
    let base = latest(&d).await;
    let dir0 = d.coordinator.base_dir(0);
    let mut last = None;
    for seed in 0..4 {
        let (dir, m) = make_diff(&dir0, &base.base_sha256, "site-a", seed, false);
        let (status, _) = announce(&d, &token, &m).await;
        assert_eq!(status, StatusCode::CREATED);
        let bytes = diff_bytes(dir.path());
        let quarter = bytes.len() / 4;
        let (status, v) = put_range(&d, &token, "site-a", &bytes, 0, quarter, bytes.len()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        last = Some((dir, m, bytes));
    }
    let spools = std::fs::read_dir(d.work().join("uploads")).unwrap().count();
    assert_eq!(spools, 1, "one spool per contributor");
    d.reload().await;
    let (_dir, _m, bytes) = last.unwrap();
    let (n, quarter) = (bytes.len(), bytes.len() / 4);
    let v = d.contribution("site-a", &token).await;
    assert_eq!(v["received_bytes"], quarter, "{v}");
    let (status, v) = put_range(&d, &token, "site-a", &bytes, quarter, n, n).await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

/// Attack 7: a header bomb and a malformed file. A diff whose safetensors header claims megabytes for
/// a handful of tensors is refused at the announce (larger than any diff of those tensors) and, by the
/// validator, before its header is read (the limit follows the tensor count). A malformed header is a
/// rejection whose message names no coordinator path.
#[tokio::test]
async fn header_bombs_and_malformed_files_are_refused() {
    let d = Deployment::new(config(10)).await;
    let token = d.token("site-a").await;
    let base = latest(&d).await;
    let base_dir = d.coordinator.base_dir(0);
    let (dir, good) = make_diff(&base_dir, &base.base_sha256, "site-a", 0, false);
    // A valid header padded with 8 MB of spaces (JSON allows them) in front of the real data.
    let real = diff_bytes(dir.path());
    let header_len = u64::from_le_bytes(real[..8].try_into().unwrap()) as usize;
    let mut header = real[8..8 + header_len].to_vec();
    header.extend(std::iter::repeat_n(b' ', 8 << 20));
    let mut bomb = (header.len() as u64).to_le_bytes().to_vec();
    bomb.extend(&header);
    bomb.extend(&real[8 + header_len..]);
    let bomb_path = dir.path().join("bomb.safetensors");
    std::fs::write(&bomb_path, &bomb).unwrap();
    let mut m = good.clone();
    m.diff_bytes = bomb.len() as u64;
    m.diff_sha256 = coldfuse_shared::hash::sha256_bytes(&bomb);
    let (status, v) = announce(&d, &token, &m).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let info = coldfuse_shared::diff::BaseInfo::open(&base_dir).unwrap();
    let err = coldfuse_shared::diff::validate(&bomb_path, m, &info).unwrap_err();
    assert!(
        matches!(
            err,
            coldfuse_shared::diff::DiffError::File(
                coldfuse_shared::tensorfile::TensorFileError::HeaderTooLarge { .. }
            )
        ),
        "{err}"
    );
    // Same size, header no longer JSON.
    let mut broken = real.clone();
    broken[8] = b'x';
    std::fs::write(dir.path().join(DIFF_FILE), &broken).unwrap();
    let mut m = good.clone();
    m.diff_sha256 = coldfuse_shared::hash::sha256_bytes(&broken);
    let (status, v) = contribute(&d, &token, dir.path(), &m).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "malformed_file");
    let message = v["error"]["message"].as_str().unwrap();
    let work = d.work().to_str().unwrap();
    assert!(
        !message.contains(work),
        "the rejection names a coordinator path: {message}"
    );
}

/// Attack 8: a forced fusion whose client hangs up. The fusion runs on to its commit and the round
/// reopens; before, the cancelled request left `fusing` set and every announce got 409 until a restart.
#[tokio::test]
async fn a_fusion_whose_client_hangs_up_does_not_wedge_the_round() {
    let d = Deployment::new(config(10)).await;
    let base = latest(&d).await;
    let dir0 = d.coordinator.base_dir(0);
    let t = d.token("site-a").await;
    let (dir, m) = make_diff(&dir0, &base.base_sha256, "site-a", 0, false);
    assert_eq!(contribute(&d, &t, dir.path(), &m).await.0, StatusCode::OK);
    let hung_up = tokio::time::timeout(std::time::Duration::from_millis(5), d.fuse_now()).await;
    assert!(hung_up.is_err(), "the fusion should outlast the client");
    for _ in 0..400 {
        let r = round(&d).await;
        if r.iteration == 2 && !r.fusing {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = round(&d).await;
    assert_eq!((r.iteration, r.fusing), (2, false), "{r:?}");
    contribute_accepted(&d, &t, "site-a", 1).await;
}

/// Attack 9: a crash between the commit (`iterations/{i}.json`) and the switch of `latest.json`. The
/// restart rolls `latest` forward instead of fusing the next round onto i−1 (a fork); an admin
/// rollback, which marks the pointer, is kept.
#[tokio::test]
async fn a_restart_rolls_latest_forward_unless_an_admin_rolled_back() {
    let mut d = Deployment::new(config(10)).await;
    let t = d.token("site-a").await;
    contribute_accepted(&d, &t, "site-a", 0).await;
    assert_eq!(d.fuse_now().await.0, StatusCode::OK);
    let store = Store::open(&d.store_url).unwrap();
    // The crash: the pointer still names the parent.
    store
        .put_json(keys::LATEST, &LatestPointer::to(0))
        .await
        .unwrap();
    d.reload().await;
    assert_eq!(latest(&d).await.iteration, 1, "rolled forward");
    let pointer: LatestPointer = store.get_json(keys::LATEST).await.unwrap().unwrap();
    assert_eq!(pointer.iteration, 1);
    // A deliberate rollback survives the restart.
    let (status, v) = d.rollback(0).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    d.reload().await;
    assert_eq!(latest(&d).await.iteration, 0, "the rollback is kept");
    // A fusion after the rollback commits iteration 2 on top of 0; a crash before its switch must
    // not leave the rollback holding `latest` at 0 (iteration 3 would fork from 0 again).
    contribute_accepted(&d, &t, "site-a", 1).await;
    assert_eq!(d.fuse_now().await.0, StatusCode::OK);
    let rolled_back: LatestPointer = serde_json::from_value(serde_json::json!(
        {"iteration": 0, "rolled_back_at": 1}
    ))
    .unwrap();
    store.put_json(keys::LATEST, &rolled_back).await.unwrap();
    d.reload().await;
    assert_eq!(
        latest(&d).await.iteration,
        2,
        "rolled forward past the rollback"
    );
}

/// Attack 12: a Range end of u64::MAX overflowed (a debug build panicked the handler).
#[tokio::test]
async fn a_huge_range_end_is_clamped() {
    let d = Deployment::new(config(10)).await;
    let base = latest(&d).await;
    let size = base.file("config.json").unwrap().size as usize;
    let (status, body) = call_raw(
        &d.router(),
        "GET",
        "/v1/bases/0/files/config.json",
        None,
        vec![],
        Some("bytes=0-18446744073709551615"),
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body.len(), size);
}

/// Admins can drop a contribution before fusion; it is recorded and not fused, and the contributor
/// cannot slip it back in this round.
#[tokio::test]
async fn an_admin_can_drop_a_contribution() {
    let d = Deployment::new(config(10)).await;
    let base = latest(&d).await;
    let dir0 = d.coordinator.base_dir(0);
    let (a, b) = (d.token("site-a").await, d.token("site-b").await);
    for (t, name, seed) in [(&a, "site-a", 0), (&b, "site-b", 1)] {
        let (dir, m) = make_diff(&dir0, &base.base_sha256, name, seed, false);
        assert_eq!(contribute(&d, t, dir.path(), &m).await.0, StatusCode::OK);
    }
    let (status, v) = call(
        &d.router(),
        "POST",
        "/v1/admin/contributions/site-b/drop",
        Some(&d.admin),
        br#"{"reason": "suspicious"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["reason"], "dropped");
    let (status, _) = call(
        &d.router(),
        "POST",
        "/v1/admin/contributions/site-b/drop",
        Some(&b),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (dir, m) = make_diff(&dir0, &base.base_sha256, "site-b", 5, false);
    let (status, v) = contribute(&d, &b, dir.path(), &m).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "quarantined");
    let v = d.contribution("site-b", &b).await;
    assert_eq!(v["quarantined"]["reason"], "dropped", "{v}");
    let fused = d.fuse_now_contributors().await;
    assert_eq!(fused, ["site-a"]);
    // Anonymous readers see the lineage without who contributed (attack 10); a token sees it.
    let (_, public) = call(&d.router(), "GET", "/v1/lineage/1", None, vec![]).await;
    let entry = &public["contributions"][0];
    assert!(
        entry.get("contributor").is_none() && entry.get("metrics").is_none(),
        "{entry}"
    );
    assert!(entry["diff_sha256"].is_string());
    // Nor through the fold order of the running sum, which names them.
    assert!(public.get("fold_order").is_none(), "{public}");
    let (_, known) = call(&d.router(), "GET", "/v1/lineage/1", Some(&a), vec![]).await;
    assert_eq!(known["contributions"][0]["contributor"], "site-a");
    assert_eq!(known["fold_order"], serde_json::json!(["site-a"]));
}

/// Attack 10: who may read what. A fused diff is read by its own site, admins and auditors, never by
/// another site; the receipt key's secret is not in the store (an auditor with store access can verify
/// receipts, not forge them); token records on a `file://` store are mode 600; `/metrics` follows
/// `--private`.
#[tokio::test]
async fn reads_follow_the_data_owner() {
    use std::os::unix::fs::PermissionsExt;
    let d = Deployment::new(DeploymentConfig {
        public_read: false,
        ..config(10)
    })
    .await;
    let base = {
        let (_, v) = call(
            &d.router(),
            "GET",
            "/v1/bases/latest",
            Some(&d.admin),
            vec![],
        )
        .await;
        serde_json::from_value::<coldfuse_shared::api::BaseManifest>(v).unwrap()
    };
    let (a, b) = (d.token("site-a").await, d.token("site-b").await);
    let base_dir = d.coordinator.base_dir(0);
    let (dir, m) = make_diff(&base_dir, &base.base_sha256, "site-a", 0, false);
    assert_eq!(contribute(&d, &a, dir.path(), &m).await.0, StatusCode::OK);
    assert_eq!(d.fuse_now().await.0, StatusCode::OK);
    let (_, v) = call(
        &d.router(),
        "POST",
        "/v1/admin/tokens",
        Some(&d.admin),
        br#"{"role": "auditor"}"#.to_vec(),
    )
    .await;
    let auditor = v["token"].as_str().unwrap().to_string();
    let url = "/v1/lineage/1/contributions/site-a/diff";
    for (token, want) in [
        (&b, StatusCode::FORBIDDEN),
        (&a, StatusCode::OK),
        (&auditor, StatusCode::OK),
        (&d.admin, StatusCode::OK),
    ] {
        let (status, _) = call_raw(&d.router(), "GET", url, Some(token), vec![], None).await;
        assert_eq!(status, want);
    }
    let (status, _) = call_raw(&d.router(), "GET", "/metrics", None, vec![], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call_raw(&d.router(), "GET", "/metrics", Some(&b), vec![], None).await;
    assert_eq!(status, StatusCode::OK);
    let store = Store::open(&d.store_url).unwrap();
    let secret: Option<serde_json::Value> = store.get_json(keys::SIGNING_SECRET).await.unwrap();
    assert!(secret.is_none(), "the receipt key's secret is in the store");
    let dir = d.store_url.trim_start_matches("file://");
    let tokens = std::fs::read_dir(Path::new(dir).join(keys::TOKENS)).unwrap();
    for entry in tokens {
        let mode = entry.unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// A stalled upload body (issue 20's slow client) cannot hold the contributor's upload slot: after the
/// body idle time the request ends with 408, the bytes so far stay, and the upload resumes from them.
#[tokio::test]
async fn a_stalled_upload_body_releases_its_slot() {
    let d = Deployment::new(config(10)).await;
    d.coordinator
        .set_upload_body_idle(std::time::Duration::from_millis(300));
    let (token, bytes) = announced(&d).await;
    let n = bytes.len();
    let stalled = stalled_request(
        &d.router(),
        "PUT",
        "/v1/contributions/site-a/diff",
        &token,
        &[("content-range", format!("bytes 0-{}/{n}", n - 1))],
    );
    let quarter = n / 4;
    stalled.body.send(bytes[..quarter].to_vec()).await.unwrap();
    // The client never sends the rest, nor hangs up.
    let (status, v) = tokio::time::timeout(std::time::Duration::from_secs(10), stalled.answer)
        .await
        .expect("the stalled upload was never ended")
        .unwrap();
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{v}");
    assert_eq!(v["error"]["code"], "upload_interrupted");
    let (status, v) = put_range(&d, &token, "site-a", &bytes, quarter, n, n).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the slot was released and the upload resumed: {v}"
    );
    drop(stalled.body);
}

/// Tiny chunks cannot make the coordinator rewrite what it holds over and over: each kept chunk
/// rewrites the upload's tail on local disk (up to a part), so a chunk that is neither the last nor
/// at least an eighth of the diff (1 MiB for large ones) is dropped and the answer says where to
/// resume. Before, every 10-byte chunk rewrote and fsynced the whole tail.
#[tokio::test]
async fn tiny_chunks_do_not_rewrite_the_tail() {
    let d = Deployment::new(config(10)).await;
    let (token, bytes) = announced(&d).await;
    let (n, quarter) = (bytes.len(), bytes.len() / 4);
    let (status, v) = put_range(&d, &token, "site-a", &bytes, 0, quarter, n).await;
    assert_eq!(
        (status, v["received_bytes"].as_u64()),
        (StatusCode::ACCEPTED, Some(quarter as u64))
    );
    let uploads = d.work().join("uploads");
    let tail = std::fs::read_dir(&uploads)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let held = std::fs::read(&tail).unwrap();
    for _ in 0..20 {
        let (status, v) = put_range(&d, &token, "site-a", &bytes, quarter, quarter + 10, n).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        assert_eq!(
            v["received_bytes"], quarter,
            "a 10-byte chunk is not kept: {v}"
        );
    }
    assert_eq!(
        std::fs::read(&tail).unwrap(),
        held,
        "the tail was not rewritten"
    );
    let (status, v) = put_range(&d, &token, "site-a", &bytes, quarter, n, n).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let s: ContributionStatus = serde_json::from_value(v).unwrap();
    assert!(s.verdict.unwrap().accepted());
}
