//! `coldfuse experiment` end to end on a 2-layer MiniLM and tiny samples of the real tasks: a split
//! written to a file, two contributor tasks in two disjoint shards each (four sites), three drawn per
//! iteration, every base scored on two held-out tasks, the summary of mean gains; then the same run
//! directory extended by one iteration (nothing already fused is trained again, no scored base is
//! scored again), then by two more with the few-shot fine-tune on every second base (base 0 and the
//! latest base are scored again when they lack it), and refused with other settings.

use std::{path::Path, process::Command};

use coldfuse_e2e::{models::minilm_layers, process::bin};

fn experiment(model: &Path, split: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let run = Command::new(bin("coldfuse"))
        .args(["experiment", "--shards", "2", "--per-iteration", "3"])
        .args(["--examples", "24", "--epochs", "1", "--max-len", "32"])
        .args([
            "--heldout-examples",
            "16",
            "--heldout-dev",
            "16",
            "--probe-seeds",
            "3",
        ])
        .args(["--probe-epochs", "4", "--device", "cpu"])
        .arg("--model")
        .arg(model)
        .arg("--split")
        .arg(split)
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("RUST_LOG", "warn")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    (run.status.success(), text)
}

/// The lines of `text` that report a site's contribution to `iteration`.
fn trained(text: &str, iteration: u64) -> Vec<String> {
    let prefix = format!("iteration {iteration} ");
    text.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with(&prefix) && l.contains(" steps in "))
        .map(str::to_string)
        .collect()
}

#[test]
fn e2e_experiment_runs_a_split_resumes_and_summarises() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    minilm_layers(2, &model);
    let split = dir.path().join("split.toml");
    std::fs::write(
        &split,
        "contributors = [\"sms-spam\", \"hedge\"]\nheldout = [\"polarity\", \"bbc-news\"]\n",
    )
    .unwrap();
    let out = dir.path().join("run");

    let (ok, text) = experiment(&model, &split, &out, &["--iterations", "1", "--probe-only"]);
    assert!(ok, "{text}");
    let first = trained(&text, 1);
    assert_eq!(
        first.len(),
        3,
        "three of the four sites contribute:\n{text}"
    );
    for line in &first {
        assert!(line.ends_with("accepted"), "{line}");
        let site = line.split_whitespace().nth(2).unwrap();
        assert!(
            ["sms-spam-s1", "sms-spam-s2", "hedge-s1", "hedge-s2"].contains(&site),
            "{line}"
        );
    }
    let scores = out.join("scores");
    let base0 = std::fs::read(scores.join("iteration-0000.json")).unwrap();
    let base1 = std::fs::read(scores.join("iteration-0001.json")).unwrap();
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert!(summary.contains("\n1,linear_probe,2,"), "{summary}");
    assert!(text.contains("mean gain over the held-out tasks"), "{text}");
    assert!(out.join("results.csv").exists() && out.join("gains.png").exists());

    // Extended by one iteration: base 1 is not fused or scored again.
    let (ok, text) = experiment(&model, &split, &out, &["--iterations", "2", "--probe-only"]);
    assert!(ok, "{text}");
    assert!(text.contains("resuming the run"), "{text}");
    assert!(
        trained(&text, 1).is_empty(),
        "iteration 1 trained again:\n{text}"
    );
    assert_eq!(trained(&text, 2).len(), 3, "{text}");
    assert_eq!(
        std::fs::read(scores.join("iteration-0000.json")).unwrap(),
        base0
    );
    assert_eq!(
        std::fs::read(scores.join("iteration-0001.json")).unwrap(),
        base1
    );
    assert!(scores.join("iteration-0002.json").exists());
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert!(summary.contains("\n2,linear_probe,2,"), "{summary}");
    assert!(
        !out.join("sites").exists()
            || std::fs::read_dir(out.join("sites")).unwrap().all(|d| {
                std::fs::read_dir(d.unwrap().path())
                    .unwrap()
                    .next()
                    .is_none()
            }),
        "submitted diffs are not kept beside the store"
    );

    // Extended by two iterations with the few-shot fine-tune on every second base and the last: bases
    // 0 and 2 are scored again (they lack it), base 1 is left as it was, base 3 gets the probe only
    // and base 4 both modes.
    let base1 = std::fs::read(scores.join("iteration-0001.json")).unwrap();
    let few_shot = [
        "--iterations",
        "4",
        "--few-shot-every",
        "2",
        "--seeds",
        "2",
        "--heldout-epochs",
        "1",
    ];
    let (ok, text) = experiment(&model, &split, &out, &few_shot);
    assert!(ok, "{text}");
    assert!(trained(&text, 2).is_empty(), "{text}");
    assert_eq!(trained(&text, 3).len(), 3, "{text}");
    assert_eq!(trained(&text, 4).len(), 3, "{text}");
    assert!(
        text.contains("base 0 was scored with fewer seeds or modes than asked"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(scores.join("iteration-0001.json")).unwrap(),
        base1
    );
    for (i, seeds) in [(0, 2), (2, 2), (3, 0), (4, 2)] {
        let saved: Vec<serde_json::Value> = serde_json::from_slice(
            &std::fs::read(scores.join(format!("iteration-{i:04}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(saved.len(), 2, "{i}");
        for s in saved {
            assert_eq!(
                s["few_shot"].as_array().unwrap().len(),
                seeds,
                "base {i}: {s}"
            );
            assert_eq!(s["probe"].as_array().unwrap().len(), 3, "base {i}: {s}");
        }
    }
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    for row in ["\n2,few_shot,2,", "\n4,few_shot,2,", "\n3,linear_probe,2,"] {
        assert!(summary.contains(row), "{row} in {summary}");
    }
    for row in ["\n1,few_shot", "\n3,few_shot"] {
        assert!(!summary.contains(row), "{row} in {summary}");
    }

    // Other settings in the same directory are refused.
    let (ok, text) = experiment(&model, &split, &out, &["--iterations", "4", "--lr", "1e-4"]);
    assert!(!ok && text.contains("other settings"), "{text}");
}
