//! A real S3-compatible server (SeaweedFS `weed mini`) on 127.0.0.1 for the duration of a test.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Access key the test server accepts.
pub const ACCESS_KEY: &str = "coldfuse-test";
/// Secret key the test server accepts.
pub const SECRET_KEY: &str = "coldfuse-test-secret";

/// A running SeaweedFS with one bucket; stopped (SIGKILL) and deleted on drop.
pub struct S3Server {
    child: Child,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket created at start.
    pub bucket: String,
}

/// The `weed` binary: `$COLDFUSE_WEED`, set by `eval "$(scripts/assets.sh)"`.
pub fn weed() -> PathBuf {
    PathBuf::from(std::env::var("COLDFUSE_WEED").expect(
        "COLDFUSE_WEED is not set: run `eval \"$(scripts/assets.sh)\"` (scripts/test.sh does) to install SeaweedFS",
    ))
}

/// A free TCP port base with `count` consecutive free ports below 50000 (gRPC ports are +10000).
fn free_ports(count: u16) -> u16 {
    loop {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = probe.local_addr().expect("addr").port() % 20000 + 20000;
        drop(probe);
        let all_free = (0..count).all(|i| {
            TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && TcpListener::bind(("127.0.0.1", base + i + 10000)).is_ok()
        });
        if all_free {
            return base;
        }
    }
}

impl S3Server {
    /// Starts a server and waits until its S3 port answers.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = free_ports(6);
        let bucket = "coldfuse".to_string();
        let child = Command::new(weed())
            .arg("mini")
            .arg(format!("-dir={}", dir.path().display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-webdav=false",
                "-admin.ui=false",
            ])
            .args([
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
            ])
            .arg(format!("-s3.port={base}"))
            .arg(format!("-master.port={}", base + 1))
            .arg(format!("-volume.port={}", base + 2))
            .arg(format!("-filer.port={}", base + 3))
            .arg(format!("-admin.port={}", base + 4))
            .arg(format!("-debug.port={}", base + 5))
            .arg(format!("-bucket={bucket}"))
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting weed mini");
        let server = Self {
            child,
            _dir: dir,
            endpoint: format!("http://127.0.0.1:{base}"),
            bucket,
        };
        server.wait_ready(base);
        server
    }

    fn wait_ready(&self, port: u16) {
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "SeaweedFS did not start in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The S3 gateway answers before the filer and bucket are ready.
        std::thread::sleep(Duration::from_secs(2));
    }

    /// Sets the `AWS_*` variables object_store reads for `s3://` URLs (process-wide).
    pub fn export_env(&self) {
        std::env::set_var("AWS_ENDPOINT", &self.endpoint);
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ALLOW_HTTP", "true");
    }

    /// A store URL under a fresh prefix of the bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
