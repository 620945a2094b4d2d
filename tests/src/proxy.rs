//! A TCP proxy between contributors and the coordinator that records every byte the clients send, and
//! can break one diff upload's connection part-way (to show that uploads resume).

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// A running proxy (stops with the runtime that started it).
pub struct Proxy {
    /// `http://127.0.0.1:PORT` to give clients.
    pub url: String,
    sent: Arc<Mutex<Vec<u8>>>,
    cut: Arc<AtomicBool>,
}

const UPLOAD: &[u8] = b"PUT /v1/contributions/";

impl Proxy {
    /// Forwards to `upstream` (`127.0.0.1:PORT`); when `cut_upload_after` is set, the first connection
    /// that carries a diff upload is dropped after that many upload bytes.
    pub async fn start(upstream: &str, cut_upload_after: Option<usize>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let sent = Arc::new(Mutex::new(Vec::new()));
        let cut = Arc::new(AtomicBool::new(cut_upload_after.is_none()));
        let upstream = upstream.to_string();
        let (s, c) = (sent.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(&upstream).await.unwrap();
                tokio::spawn(relay(
                    client,
                    server,
                    s.clone(),
                    c.clone(),
                    cut_upload_after,
                ));
            }
        });
        Self { url, sent, cut }
    }

    /// Everything clients sent so far.
    pub fn sent(&self) -> Vec<u8> {
        self.sent.lock().unwrap().clone()
    }

    /// Whether the planned upload break happened.
    pub fn did_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    sent: Arc<Mutex<Vec<u8>>>,
    cut: Arc<AtomicBool>,
    cut_after: Option<usize>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    });
    let mut buf = vec![0u8; 64 << 10];
    let mut upload_bytes: Option<usize> = None;
    loop {
        let n = match cr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        sent.lock().unwrap().extend_from_slice(chunk);
        if upload_bytes.is_none() && chunk.windows(UPLOAD.len()).any(|w| w == UPLOAD) {
            upload_bytes = Some(0);
        }
        if let (Some(seen), Some(limit)) = (upload_bytes.as_mut(), cut_after) {
            *seen += n;
            if *seen > limit && !cut.swap(true, Ordering::SeqCst) {
                // Forward half of what arrived, then drop both sides mid-request.
                let _ = sw.write_all(&chunk[..n / 2]).await;
                down.abort();
                return;
            }
        }
        if sw.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = sw.shutdown().await;
    let _ = down.await;
}
