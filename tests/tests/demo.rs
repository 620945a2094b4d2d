//! `coldfuse demo` (the README's main command) end to end on a 2-layer MiniLM and tiny samples of the
//! real tasks: an embedded coordinator, three contributors, one fused iteration, and the held-out table,
//! results and plot for both held-out tasks.

use std::process::Command;

use coldfuse_e2e::{models::minilm_layers, process::bin};

#[test]
fn e2e_demo_runs_contributors_fusion_and_heldout_scores() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    minilm_layers(2, &model);
    let out = Command::new(bin("coldfuse"))
        .args([
            "demo",
            "--iterations",
            "1",
            "--examples",
            "32",
            "--epochs",
            "1",
        ])
        .args([
            "--heldout-examples",
            "16",
            "--heldout-dev",
            "16",
            "--seeds",
            "2",
            "--probe-seeds",
            "3",
            "--heldout-epochs",
            "2",
            "--probe-epochs",
            "4",
        ])
        .args(["--max-len", "32", "--device", "cpu", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(dir.path().join("out"))
        .env("RUST_LOG", "warn")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each site's own line says its diff was accepted (a rejected site next to an accepted one fails).
    for site in ["sms-spam", "hedge", "email-spam"] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("iteration 1 {site} ")))
            .unwrap_or_else(|| panic!("no line for {site}:\n{stdout}"));
        assert!(line.trim_end().ends_with("diff accepted"), "{line}");
    }
    assert!(
        stdout.contains("iteration 1 fused and published"),
        "{stdout}"
    );
    assert!(stdout.contains("gain vs base 0"), "{stdout}");
    let run = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("results.json")).unwrap()).unwrap();
    let bases = results.as_array().unwrap();
    assert_eq!(
        bases.len(),
        4,
        "base 0 and base 1 are scored on both held-out tasks"
    );
    for (b, (task, iteration)) in bases.iter().zip([
        ("polarity", 0),
        ("polarity", 1),
        ("bbc-news", 0),
        ("bbc-news", 1),
    ]) {
        assert_eq!(
            (b["task"].as_str(), b["iteration"].as_u64()),
            (Some(task), Some(iteration))
        );
        assert_eq!(b["probe"].as_array().unwrap().len(), 3);
        // The demo few-shot fine-tunes on polarity only (BBC News: linear probe).
        let few_shot = if task == "polarity" { 2 } else { 0 };
        assert_eq!(b["few_shot"].as_array().unwrap().len(), few_shot);
        for v in b["probe"].as_array().unwrap() {
            let acc = v.as_f64().unwrap();
            assert!((0.0..=1.0).contains(&acc), "{acc}");
        }
    }
    // The lineage names the model the demo was given, not the default one.
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("store/iterations/000000.json")).unwrap())
            .unwrap();
    assert_eq!(record["origin"], "model", "{record}");
    let csv = std::fs::read_to_string(run.join("results.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + 2 * (3 + 2) + 2 * 3,
        "bases × (probe seeds + few-shot seeds) for polarity, bases × probe seeds for BBC"
    );
    let png = std::fs::read(run.join("gains.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    let svg = std::fs::read_to_string(run.join("gains.svg")).unwrap();
    assert!(svg.contains("bbc-news") && svg.contains("polarity"));
    // The sites scored the candidate on rows they never trained on; the gate promoted it on their
    // reports, and the panel, its CSV and the plot say so.
    assert!(
        stdout.contains("candidate 1: Promoted by the sites' reports"),
        "{stdout}"
    );
    let panel = stdout
        .split("gain at the contributing sites")
        .nth(1)
        .unwrap_or_else(|| panic!("no site panel:\n{stdout}"));
    let row = panel.lines().find(|l| l.starts_with("1 ")).unwrap();
    assert!(
        row.trim_end().ends_with("Promoted") && row.matches(" ± ").count() == 3,
        "{row}"
    );
    let csv = std::fs::read_to_string(run.join("sites.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3, "{csv}");
    assert!(svg.contains("gain at the contributing sites"));
    for site in ["sms-spam", "hedge", "email-spam"] {
        let report = run.join(format!("sites/{site}/reports/report-000001.json"));
        assert!(report.is_file(), "{site} kept its report");
    }
}

/// `coldfuse eval` on a task from the user's own file (`--task NAME=PATH` and its column flags): the
/// table and results name it; a file with too few rows is refused with its path.
#[test]
fn e2e_eval_scores_bases_on_a_task_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    minilm_layers(2, &model);
    let data = dir.path().join("reviews.csv");
    let mut csv = String::from("review,stars\n");
    for i in 0..40 {
        let (words, stars) = [("a wonderful, moving film", 5), ("a dull, tedious mess", 1)][i % 2];
        csv.push_str(&format!("\"{words}, take {i}\",{stars}\n"));
    }
    std::fs::write(&data, csv).unwrap();
    let eval = |task: &str, extra: &[&str]| {
        Command::new(bin("coldfuse"))
            .args([
                "eval",
                "--probe-only",
                "--probe-seeds",
                "2",
                "--probe-epochs",
                "2",
            ])
            .args(["--heldout-examples", "12", "--heldout-dev", "8"])
            .args(["--heldout-max-len", "16", "--task", task])
            .args([
                "--task-text-column",
                "review",
                "--task-label-column",
                "stars",
            ])
            .args(extra)
            .arg("--base")
            .arg(&model)
            .arg("--base")
            .arg(&model)
            .arg("--out")
            .arg(dir.path().join("out"))
            .env("RUST_LOG", "warn")
            .env("RAYON_NUM_THREADS", "1")
            .output()
            .unwrap()
    };
    let out = eval(&format!("reviews={}", data.display()), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("held-out reviews:"), "{stdout}");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/results.json")).unwrap())
            .unwrap();
    let tasks: Vec<&str> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["task"].as_str().unwrap())
        .collect();
    assert_eq!(
        tasks,
        ["reviews", "reviews"],
        "both bases scored on the file's task"
    );

    // A regression task (float labels): scored by Pearson's r, named as such in the CSV.
    let sts = dir.path().join("sts.csv");
    let mut rows = String::from("review,stars\n");
    for i in 0..40 {
        let (words, stars) = [
            ("a wonderful, moving film", 4.5),
            ("a dull, tedious mess", 1.0),
        ][i % 2];
        rows.push_str(&format!(
            "\"{words}, take {i}\",{}\n",
            stars + (i % 5) as f64 * 0.1
        ));
    }
    std::fs::write(&sts, rows).unwrap();
    let out = eval(&format!("sts={}", sts.display()), &["--task-regression"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(dir.path().join("out/results.csv")).unwrap();
    assert!(
        csv.lines().skip(1).all(|l| l.contains(",pearson,")),
        "{csv}"
    );

    let short = dir.path().join("short.csv");
    std::fs::write(&short, "review,stars\ngood,5\nbad,1\nfine,5\n").unwrap();
    let out = eval(&format!("short={}", short.display()), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("3 usable rows") && stderr.contains(&short.display().to_string()),
        "{stderr}"
    );
}
