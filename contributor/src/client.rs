//! The coordinator's HTTP API as typed async calls, with the coordinator's JSON errors kept as
//! [`ClientError::Api`] (status, stable code, message) so callers can tell what to do next.

use std::time::Duration;

use anyhow::Context;
use coldfuse_shared::{
    api::{
        routes, Announced, ApiErrorBody, BaseManifest, ContributionStatus, Decision, ErrorCode,
        GateEval, GateStatus, IterationRecord, Promotion, ReportAnswer, Role, RoundStatus,
        SignedReceipt, SigningPublicKey, SiteReport, TokenRequest, TokenResponse, WhoAmI,
    },
    diff::DiffManifest,
};
use reqwest::{header, Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::{retry::Backoff, settings::TlsOptions};

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The coordinator answered with an error.
    #[error("coordinator answered {status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code (e.g. `stale_base`, `unauthorized`).
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// The coordinator could not be reached or the connection broke.
    #[error("cannot reach the coordinator at {url}: {source}")]
    Transport {
        /// The URL called.
        url: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Local {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An answer that is not what the API promises.
    #[error("unexpected answer from {url}: {message}")]
    Protocol {
        /// The URL called.
        url: String,
        /// What was wrong.
        message: String,
    },
}

impl ClientError {
    /// An API error (for tests and callers that synthesise one).
    pub fn api(status: u16, code: ErrorCode, message: &str) -> Self {
        Self::Api {
            status,
            code,
            message: message.into(),
        }
    }

    /// A [`ClientError::Local`] about `path`, for `map_err`.
    pub fn local(path: &std::path::Path) -> impl Fn(std::io::Error) -> Self + Copy + '_ {
        move |source| Self::Local {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether trying again later can help.
    pub fn retryable(&self) -> bool {
        match self {
            // A certificate that does not verify will not verify on the next try either.
            Self::Transport { .. } => self.tls_failure().is_none(),
            Self::Api { status, code, .. } => {
                *status >= 500 || *status == 429 || *code == ErrorCode::UploadInProgress
            }
            Self::Local { .. } | Self::Protocol { .. } => false,
        }
    }

    /// What to do next, for the errors a contributor can act on.
    pub fn hint(&self) -> Option<&'static str> {
        if self.tls_failure().is_some() {
            return Some(
                "the TLS handshake failed: for a coordinator with a private CA pass --ca-cert \
                 CA.pem (check the URL's host name is in its certificate); where it requires \
                 mutual TLS, pass --client-cert and --client-key",
            );
        }
        if let Self::Transport { .. } = self {
            return Some("is the coordinator URL right and the service up? (`coldfuse status`)");
        }
        Some(match self.code()? {
            ErrorCode::Unauthorized => {
                "check the token: `coldfuse login --coordinator URL --token TOKEN`"
            }
            ErrorCode::Forbidden => "the token belongs to another contributor id than the manifest's",
            ErrorCode::StaleBase => "a newer base exists: `coldfuse pull` and train again",
            ErrorCode::RoundFusing => {
                "the round is being fused: wait for the new base and train again"
            }
            ErrorCode::TooLarge => "use a smaller --encoding (int8 or topk:0.1)",
            ErrorCode::NormBound => {
                "the diff moved the model far more than fine-tuning does: check the learning rate and epochs"
            }
            ErrorCode::Quarantined => "an admin or a failed fusion took this round's contribution out",
            _ => return None,
        })
    }

    /// The TLS error under a transport failure (an unverifiable certificate, a handshake alert).
    pub fn tls_failure(&self) -> Option<&rustls::Error> {
        let Self::Transport { source, .. } = self else {
            return None;
        };
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(e) = next {
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            // An I/O error carries the TLS error (or another I/O error) as its payload, which
            // its `source()` skips.
            next = match e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                Some(payload) => Some(payload as &(dyn std::error::Error + 'static)),
                None => e.source(),
            };
        }
        None
    }

    /// The API error code, if the coordinator answered one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A client of one coordinator.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// Retry policy for idempotent calls.
    pub backoff: Backoff,
}

impl Client {
    /// A client of the coordinator at `url` (e.g. `http://host:8080`), trusting the system's CAs.
    pub fn new(url: &str, token: Option<String>) -> anyhow::Result<Self> {
        Self::with_tls(url, token, &TlsOptions::default())
    }

    /// A client of the coordinator at `url` that also trusts `tls.ca_cert` and presents
    /// `tls.client_cert` when set. Certificates are always verified.
    pub fn with_tls(url: &str, token: Option<String>, tls: &TlsOptions) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_string();
        let parsed = url::Url::parse(&base)
            .with_context(|| format!("coordinator URL {url:?} is not a URL"))?;
        match parsed.scheme() {
            "https" => {}
            "http" => {
                let loopback = match parsed.host() {
                    Some(url::Host::Domain(d)) => d == "localhost",
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    None => false,
                };
                if !loopback && token.is_some() {
                    tracing::warn!(
                        "{base} is plain HTTP: the token and the diff cross the network in clear \
                         (use https:// where the coordinator is not on this machine)"
                    );
                }
            }
            _ => anyhow::bail!("coordinator URL {url:?} must start with http:// or https://"),
        }
        // A stalled coordinator must not hang `pull`/`submit`: every read waits at most this long
        // for the next bytes (a transfer that keeps moving may take as long as it needs).
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("coldfuse/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &tls.ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the CA certificate {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{}: not PEM certificates", path.display()))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "{}: no certificate in it",
                path.display()
            );
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
            let mut pem = std::fs::read(cert)
                .with_context(|| format!("reading the client certificate {}", cert.display()))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(key)
                    .with_context(|| format!("reading the client key {}", key.display()))?,
            );
            let identity = reqwest::Identity::from_pem(&pem).with_context(|| {
                format!(
                    "{} and {}: not a PEM certificate and key",
                    cert.display(),
                    key.display()
                )
            })?;
            builder = builder.identity(identity);
        }
        let http = builder.build()?;
        Ok(Self {
            http,
            base,
            token,
            backoff: Backoff::default(),
        })
    }

    /// The coordinator URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> (String, RequestBuilder) {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        (url, req)
    }

    /// Sends `req`; non-2xx answers become [`ClientError::Api`].
    async fn send(url: &str, req: RequestBuilder) -> Result<Response, ClientError> {
        let response = req.send().await.map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ApiErrorBody>(&text) {
            Ok(body) => ClientError::Api {
                status,
                code: body.error.code,
                // The operator finds the details of a server failure under its request id.
                message: match body.request_id {
                    Some(id) if status >= 500 => format!("{} [request {id}]", body.error.message),
                    _ => body.error.message,
                },
            },
            Err(_) => ClientError::Api {
                status,
                code: ErrorCode::Unknown,
                message: text.chars().take(300).collect(),
            },
        })
    }

    async fn json<T: DeserializeOwned>(url: &str, response: Response) -> Result<T, ClientError> {
        response.json().await.map_err(|e| ClientError::Protocol {
            url: url.to_string(),
            message: e.to_string(),
        })
    }

    /// GET `path` as JSON, retried on transient failures.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.backoff
            .run(&format!("GET {path}"), || async {
                let (url, req) = self.request(Method::GET, path);
                let response = Self::send(&url, req).await?;
                Self::json(&url, response).await
            })
            .await
    }

    /// `GET /v1/round`.
    pub async fn round(&self) -> Result<RoundStatus, ClientError> {
        self.get_json(routes::ROUND).await
    }

    /// `GET /v1/whoami`.
    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        self.get_json(routes::WHOAMI).await
    }

    /// The manifest of base `iteration`, or of the latest base.
    pub async fn base(&self, iteration: Option<u64>) -> Result<BaseManifest, ClientError> {
        match iteration {
            Some(i) => self.get_json(&routes::base(i)).await,
            None => self.get_json(routes::BASE_LATEST).await,
        }
    }

    /// `GET /v1/lineage`.
    pub async fn lineage(&self) -> Result<Vec<IterationRecord>, ClientError> {
        self.get_json(routes::LINEAGE).await
    }

    /// `GET /v1/lineage/{iteration}`.
    pub async fn lineage_one(&self, iteration: u64) -> Result<IterationRecord, ClientError> {
        self.get_json(&routes::lineage_entry(iteration)).await
    }

    /// The manifest of `contributor`'s diff fused into `iteration` (needs a token).
    pub async fn fused_diff_manifest(
        &self,
        iteration: u64,
        contributor: &str,
    ) -> Result<DiffManifest, ClientError> {
        self.get_json(&routes::fused_manifest(iteration, contributor))
            .await
    }

    /// `GET /v1/signing-key`: the coordinator's receipt key.
    pub async fn signing_key(&self) -> Result<SigningPublicKey, ClientError> {
        self.get_json(routes::SIGNING_KEY).await
    }

    /// The signed receipt that `contributor`'s diff was fused into `iteration` (`None`: not fused).
    pub async fn fused_receipt(
        &self,
        iteration: u64,
        contributor: &str,
    ) -> Result<Option<SignedReceipt>, ClientError> {
        match self
            .get_json(&routes::fused_receipt(iteration, contributor))
            .await
        {
            Ok(r) => Ok(Some(r)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Downloads `path` (a file route) to `dest`, retried on transient failures.
    pub async fn download(&self, path: &str, dest: &std::path::Path) -> Result<(), ClientError> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        self.backoff
            .run(&format!("GET {path}"), || async {
                let (url, req) = self.request(Method::GET, path);
                let response = Self::send(&url, req).await?;
                let io = ClientError::local(dest);
                let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
                let mut body = response.bytes_stream();
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|source| ClientError::Transport {
                        url: url.clone(),
                        source,
                    })?;
                    file.write_all(&chunk).await.map_err(io)?;
                }
                file.flush().await.map_err(io)
            })
            .await
    }

    /// Starts downloading file `name` of base `iteration` from byte `from` (one attempt).
    pub async fn base_file(
        &self,
        iteration: u64,
        name: &str,
        from: u64,
    ) -> Result<Response, ClientError> {
        let (url, mut req) = self.request(Method::GET, &routes::base_file(iteration, name));
        if from > 0 {
            req = req.header(header::RANGE, format!("bytes={from}-"));
        }
        let response = Self::send(&url, req).await?;
        let expected = if from > 0 {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        if response.status() != expected {
            return Err(ClientError::Protocol {
                url,
                message: format!("status {} where {expected} was due", response.status()),
            });
        }
        Ok(response)
    }

    /// POSTs `body` as JSON to `path` and reads the JSON answer (one attempt).
    pub async fn post_json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let (url, req) = self.request(Method::POST, path);
        let response = Self::send(&url, req.json(body)).await?;
        Self::json(&url, response).await
    }

    /// `POST /v1/contributions`: announces a diff by its manifest (one attempt).
    pub async fn announce(&self, manifest: &DiffManifest) -> Result<Announced, ClientError> {
        let (url, req) = self.request(Method::POST, routes::CONTRIBUTIONS);
        let req = req
            .header(header::CONTENT_TYPE, "application/json")
            .body(manifest.to_json());
        let response = Self::send(&url, req).await?;
        Self::json(&url, response).await
    }

    /// `PUT` one chunk (`start..start+len` of `total`) of the diff to `upload_url` (one attempt).
    pub async fn upload_chunk(
        &self,
        upload_url: &str,
        body: reqwest::Body,
        start: u64,
        len: u64,
        total: u64,
    ) -> Result<ContributionStatus, ClientError> {
        let (url, req) = self.request(Method::PUT, upload_url);
        let req = req
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, len)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{total}", start + len - 1),
            )
            .body(body);
        let response = Self::send(&url, req).await?;
        Self::json(&url, response).await
    }

    /// `GET /v1/contributions/{contributor}`: `None` when it has none in the current round.
    pub async fn contribution(
        &self,
        contributor: &str,
    ) -> Result<Option<ContributionStatus>, ClientError> {
        match self.get_json(&routes::contribution(contributor)).await {
            Ok(s) => Ok(Some(s)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/gate`: the gate's settings and the candidate awaiting it.
    pub async fn gate(&self) -> Result<GateStatus, ClientError> {
        self.get_json(routes::GATE).await
    }

    /// Promotes (`promote`) or discards candidate `iteration` by hand (admin, one attempt).
    pub async fn gate_decision(
        &self,
        iteration: u64,
        promote: bool,
        reason: Option<String>,
    ) -> Result<Promotion, ClientError> {
        let path = routes::gate_decision(iteration, promote);
        self.post_json(&path, &Decision { reason }).await
    }

    /// Reports an evaluator's eval of candidate `iteration` (admin, one attempt).
    pub async fn report_eval(
        &self,
        iteration: u64,
        eval: &GateEval,
    ) -> Result<Promotion, ClientError> {
        self.post_json(&routes::gate_evals(iteration), eval).await
    }

    /// Sends this site's report on candidate `iteration` (contributor, one attempt: a second one
    /// would be refused as already reported).
    pub async fn report_site(
        &self,
        iteration: u64,
        report: &SiteReport,
    ) -> Result<ReportAnswer, ClientError> {
        self.post_json(&routes::gate_reports(iteration), report)
            .await
    }

    /// The gate's record of iteration `iteration`.
    pub async fn gate_record(&self, iteration: u64) -> Result<Promotion, ClientError> {
        self.get_json(&routes::gate_record(iteration)).await
    }

    /// Creates a contributor token for `contributor` (admin, one attempt).
    pub async fn create_contributor_token(
        &self,
        contributor: &str,
    ) -> Result<TokenResponse, ClientError> {
        let request = TokenRequest {
            role: Role::Contributor,
            contributor: Some(contributor.to_string()),
        };
        self.post_json(routes::ADMIN_TOKENS, &request).await
    }

    /// Fuses the open round now and waits for the fusion (admin, one attempt).
    pub async fn fuse_now(&self) -> Result<IterationRecord, ClientError> {
        let path = format!("{}?wait=true", routes::ADMIN_FUSE);
        self.post_json(&path, &serde_json::json!({})).await
    }
}
