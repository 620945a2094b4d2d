//! Per-request observability and deadlines: a request id (echoed as `x-request-id` and in error
//! bodies), a `request` span (method, matched route, peer, token id — never the token), one access
//! log event per request, Prometheus counters per route, and a deadline on handlers that do not
//! stream a request body.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use coldfuse_shared::api::ErrorCode;
use futures::FutureExt;
use http_body_util::BodyExt;
use tracing::{field::Empty, Instrument};

use crate::{metrics::Metrics, ApiError};

/// The response header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// Request-level settings of the edge.
#[derive(Debug, Clone, Copy)]
pub struct HttpOptions {
    /// Longest a handler may take before the response starts (request-body streaming routes —
    /// uploads — are bounded by their idle timeout instead).
    pub request_timeout: Duration,
    /// Take the client address from `X-Forwarded-For` and the request id from `X-Request-Id`
    /// (only behind a reverse proxy that sets them).
    pub trust_forwarded: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(DEFAULT_REQUEST_TIMEOUT_SECS),
            trust_forwarded: false,
        }
    }
}

/// Default handler deadline in seconds.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 60;

/// What the handlers of one request may add to its log line.
#[derive(Debug)]
struct RequestContext {
    id: String,
    route: OnceLock<String>,
    token: OnceLock<String>,
}

tokio::task_local! {
    static REQUEST: Arc<RequestContext>;
}

/// The id of the request being handled on this task, if any.
pub fn request_id() -> Option<String> {
    REQUEST.try_with(|r| r.id.clone()).ok()
}

/// Records the id of the token that authenticated this request (for the span and the access log).
pub fn record_token(token_id: &str) {
    let _ = REQUEST.try_with(|r| {
        if r.token.set(token_id.to_string()).is_ok() {
            tracing::Span::current().record("token", token_id);
        }
    });
}

/// State of [`observe`].
#[derive(Debug, Clone)]
pub struct Observer {
    /// Where the counters go.
    pub metrics: Arc<Metrics>,
    /// See [`HttpOptions::trust_forwarded`].
    pub trust_forwarded: bool,
}

/// Outermost layer: id, span, access log, metrics, byte counts, and a 500 for a handler that
/// panicked (the connection stays usable).
pub async fn observe(State(o): State<Observer>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = forwarded_id(&o, &request).unwrap_or_else(new_id);
    let peer = peer(&o, &request);
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %method,
        route = Empty,
        peer = %peer,
        token = Empty,
    );
    let context = Arc::new(RequestContext {
        id,
        route: OnceLock::new(),
        token: OnceLock::new(),
    });
    let request = request.map(|body| counted(body, o.metrics.bytes_in()));
    let handled = std::panic::AssertUnwindSafe(next.run(request)).catch_unwind();
    let mut response = REQUEST
        .scope(context.clone(), async {
            handled
                .await
                .unwrap_or_else(|_| ApiError::internal("the handler panicked").into_response())
        })
        .instrument(span.clone())
        .await;
    if let Ok(value) = HeaderValue::from_str(&context.id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let status = response.status();
    let elapsed = start.elapsed();
    let route = context.route.get().map_or("unmatched", String::as_str);
    o.metrics.request(&method, route, status, elapsed);
    span.in_scope(|| {
        tracing::info!(
            target: "coldfuse::access",
            status = status.as_u16(),
            ms = elapsed.as_secs_f64() * 1e3,
            "request"
        );
    });
    response.map(|body| counted(body, o.metrics.bytes_out()))
}

/// `body`, adding the size of every data frame to `counter` as it passes.
fn counted(body: Body, counter: prometheus::IntCounter) -> Body {
    Body::new(body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            counter.inc_by(data.len() as u64);
        }
        frame
    }))
}

/// Route layer: records the matched route (the template, never the raw path) for the span, the
/// log and the metrics' `route` label.
pub async fn matched(route: MatchedPath, request: Request, next: Next) -> Response {
    let _ = REQUEST.try_with(|r| {
        if r.route.set(route.as_str().to_string()).is_ok() {
            tracing::Span::current().record("route", route.as_str());
        }
    });
    next.run(request).await
}

/// Route layer for handlers that must answer within `limit`: 503 `timeout` otherwise.
pub async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit_secs = limit.as_secs_f64(), "request deadline passed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Timeout,
                format!(
                    "the coordinator did not answer within {} s; retry later",
                    limit.as_secs_f64()
                ),
            )
            .into_response()
        }
    }
}

fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// `X-Request-Id` from a trusted proxy: at most 64 of `[A-Za-z0-9._-]`.
fn forwarded_id(o: &Observer, request: &Request) -> Option<String> {
    if !o.trust_forwarded {
        return None;
    }
    let value = request.headers().get(REQUEST_ID)?.to_str().ok()?;
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then(|| value.to_string())
}

/// The client's address: the connection's peer, or (behind a trusted proxy) the last address the
/// proxy appended to `X-Forwarded-For`.
fn peer(o: &Observer, request: &Request) -> String {
    if o.trust_forwarded {
        let forwarded = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
            .next_back();
        if let Some(ip) = forwarded {
            return ip.to_string();
        }
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "-".to_string(), |c| c.0.to_string())
}
