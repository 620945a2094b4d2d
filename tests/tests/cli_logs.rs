//! The CLI's log lines on stderr: plain text without colour codes when stderr is not a terminal, and
//! one JSON object per line with `--log-format json` (for log collectors).

use std::process::{Command, Output};

use coldfuse_e2e::process::bin;

#[test]
fn cli_logs_plain_text_off_a_terminal_and_json_lines_on_request() {
    let dir = tempfile::tempdir().unwrap();
    // The second row has no text: `train` skips it with a warning, then fails on the missing base.
    let data = dir.path().join("train.csv");
    std::fs::write(&data, "text,label\nfirst,a\n,b\nthird,b\n").unwrap();
    let run = |format: &[&str]| -> Output {
        Command::new(bin("coldfuse"))
            .args(format)
            .arg("train")
            .arg("--data")
            .arg(&data)
            .arg("--base")
            .arg(dir.path().join("no-such-model"))
            .env("RUST_LOG", "info")
            .env("COLDFUSE_CONFIG", dir.path().join("config.toml"))
            .env_remove("COLDFUSE_LOG_FORMAT")
            .output()
            .unwrap()
    };

    let text = run(&[]);
    assert!(!text.status.success());
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(stderr.contains("skipped"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in a redirected log: {stderr:?}"
    );

    let json = run(&["--log-format", "json"]);
    assert!(!json.status.success());
    let stderr = String::from_utf8_lossy(&json.stderr);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        events.iter().any(|e| e["level"] == "WARN"
            && e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("skipped"))),
        "{stderr}"
    );
    assert!(
        events.iter().any(|e| e["level"] == "INFO"),
        "the data report is an event too: {stderr}"
    );
    // The error itself is for the person at the terminal, after the log lines.
    assert!(stderr.contains("no-such-model"), "{stderr}");
}
