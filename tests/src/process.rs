//! Running the workspace's binaries as real processes.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// The path of workspace binary `name`, (re)built first so a test never runs a stale binary
/// (`cargo build` is a no-op when it is fresh).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps/..");
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // The same command as scripts/test.sh, so it is a no-op there (same features, same artifacts).
        // Only the environment a shell would have: the variables cargo and nextest set for tests
        // (CARGO_PKG_*, CARGO_MANIFEST_DIR, NEXTEST_*, ...) make build scripts such as ring's rerun.
        const KEEP: &[&str] = &[
            "PATH",
            "HOME",
            "USER",
            "TMPDIR",
            "LANG",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "RUSTUP_HOME",
            "RUSTUP_TOOLCHAIN",
            "RUSTFLAGS",
            "CARGO_TERM_COLOR",
        ];
        let output = Command::new(cargo)
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| KEEP.contains(&k.as_str())))
            .args(["build", "--workspace", "--bins"])
            .current_dir(crate::repo_root())
            .output()
            .expect("cargo build");
        assert!(
            output.status.success(),
            "building {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        built.push(name.to_string());
    }
    dir.join(name)
}

/// A coordinator serving on a free port; killed (SIGKILL, like a crash) on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The port it listens on.
    pub port: u16,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// How to start a coordinator beyond its store and work dir.
#[derive(Debug, Clone, Default)]
pub struct Launch<'a> {
    /// Extra environment.
    pub env: &'a [(&'a str, &'a str)],
    /// Extra `serve` flags.
    pub args: &'a [&'a str],
    /// The process's open-file limit (`ulimit -n`), when set.
    pub open_files: Option<u32>,
}

impl Server {
    /// Starts `coldfuse-coordinator serve` on `store` with extra environment `env`, and waits until
    /// it listens.
    pub fn start(store: &str, work: &std::path::Path, env: &[(&str, &str)]) -> Self {
        Self::launch(
            store,
            work,
            &Launch {
                env,
                ..Launch::default()
            },
        )
    }

    /// Starts `coldfuse-coordinator serve` on `store` as `launch` says, and waits until it listens.
    pub fn launch(store: &str, work: &std::path::Path, launch: &Launch<'_>) -> Self {
        let bin = bin("coldfuse-coordinator");
        let mut command = match launch.open_files {
            // `exec` keeps the pid: signals reach the coordinator itself.
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let mut child = command
            .args([
                "serve",
                "--store",
                store,
                "--listen",
                "127.0.0.1:0",
                "--work",
            ])
            .arg(work)
            .args(launch.args)
            .envs(launch.env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting coldfuse-coordinator");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
                kept.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => panic!(
                "coordinator did not start listening within 60 s: {:?}",
                logs.lock().unwrap_or_else(|e| e.into_inner())
            ),
        };
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port");
        Self {
            child,
            url: format!("http://{addr}"),
            port,
            logs,
        }
    }

    /// Every stderr line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends `signal` (e.g. `HUP`, `TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits up to `limit` for the process to exit; answers how long it took, or `None`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<Duration> {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if self.child.try_wait().expect("try_wait").is_some() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills the process at once (no graceful shutdown), like a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `coldfuse-coordinator init` of the tiny BERT fixture into `store` with `quorum`; answers the admin
/// token (written through a file in `work`).
pub fn init_fixture(store: &str, work: &std::path::Path, quorum: usize) -> String {
    let admin_file = work.join("admin-token");
    let status = Command::new(bin("coldfuse-coordinator"))
        .args(["init", "--quorum", &quorum.to_string(), "--store", store])
        .arg("--admin-token-file")
        .arg(&admin_file)
        .arg("--base")
        .arg(crate::coordinator::fixture())
        .status()
        .expect("coldfuse-coordinator init");
    assert!(status.success(), "coldfuse-coordinator init failed");
    std::fs::read_to_string(&admin_file)
        .expect("the admin token file")
        .trim()
        .to_string()
}

/// A new contributor token for `contributor` from the coordinator at `url` (admin token `admin`).
pub async fn contributor_token(url: &str, admin: &str, contributor: &str) -> String {
    let request = serde_json::json!({"role": "contributor", "contributor": contributor});
    token(url, admin, &request).await
}

/// A new token from the coordinator at `url` for `request` (`{"role": ..., "contributor": ...}`).
pub async fn token(url: &str, admin: &str, request: &serde_json::Value) -> String {
    let v: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/v1/admin/tokens"))
        .bearer_auth(admin)
        .json(request)
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token answer");
    v["token"].as_str().expect("a token").to_string()
}

/// `coldfuse` as contributor site `i` of a test deployment: coordinator `url`, `token`, and its own
/// settings file and cache under `dir/c{i}/`; one thread, warnings only.
pub fn site_cli(url: &str, token: &str, dir: &std::path::Path, i: usize) -> Command {
    let mut cmd = Command::new(bin("coldfuse"));
    cmd.env("COLDFUSE_COORDINATOR", url)
        .env("COLDFUSE_TOKEN", token)
        .env("COLDFUSE_CONFIG", dir.join(format!("c{i}/config.toml")))
        .env("COLDFUSE_CACHE_DIR", dir.join(format!("c{i}/cache")))
        .env("RAYON_NUM_THREADS", "1")
        .env("RUST_LOG", "warn");
    cmd
}

/// Runs `commands` at once (stdout and stderr captured) and waits for all of them.
pub async fn outputs_of(commands: Vec<Command>) -> Vec<std::process::Output> {
    let children: Vec<_> = commands
        .into_iter()
        .map(|mut c| {
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect()
    })
    .await
    .unwrap()
}

/// `coldfuse verify ITERATION --store STORE_URL` (an auditor's replay straight from the store, with a
/// fresh config and cache): asserts it reproduced the published base bit for bit.
pub fn verify_from_store(store_url: &str, iteration: u64) {
    let work = tempfile::tempdir().unwrap();
    let o = Command::new(bin("coldfuse"))
        .args(["verify", &iteration.to_string(), "--store", store_url])
        .env("COLDFUSE_CONFIG", work.path().join("config.toml"))
        .env("COLDFUSE_CACHE_DIR", work.path().join("cache"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && stdout.contains("bit for bit"),
        "verify {iteration}: {stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
