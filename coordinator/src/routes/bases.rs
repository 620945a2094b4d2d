//! Reading published bases (manifest, files with HTTP Range) and lineage.

use std::{ops::Range, sync::Arc};

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use coldfuse_shared::api::{keys, BaseManifest, ErrorCode, IterationRecord};

use crate::{auth, ApiError, Coordinator};

/// `GET /v1/bases/latest`: the manifest of the latest base.
#[utoipa::path(get, path = "/v1/bases/latest", responses((status = 200, body = BaseManifest)))]
pub async fn latest(
    State(c): State<Arc<Coordinator>>,
    _reader: auth::Reader,
) -> Result<Json<BaseManifest>, ApiError> {
    Ok(Json(c.state.read().await.latest.clone()))
}

async fn base_manifest(c: &Coordinator, iteration: u64) -> Result<BaseManifest, ApiError> {
    let committed = c.state.read().await.committed;
    if iteration > committed {
        return Err(ApiError::not_found(format!(
            "iteration {iteration} is not published (latest committed: {committed})"
        )));
    }
    c.store
        .get_json(&keys::base_file(iteration, keys::BASE_MANIFEST))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no base for iteration {iteration}")))
}

/// `GET /v1/bases/{iteration}`: a published base's manifest.
#[utoipa::path(get, path = "/v1/bases/{iteration}", params(("iteration" = u64, Path)), responses((status = 200, body = BaseManifest), (status = 404)))]
pub async fn manifest(
    State(c): State<Arc<Coordinator>>,
    Path(iteration): Path<u64>,
    _reader: auth::Reader,
) -> Result<Json<BaseManifest>, ApiError> {
    Ok(Json(base_manifest(&c, iteration).await?))
}

/// `GET /v1/bases/{iteration}/files/{name}`: one file, with `Range: bytes=a-b` for resuming.
#[utoipa::path(get, path = "/v1/bases/{iteration}/files/{name}", params(("iteration" = u64, Path), ("name" = String, Path)), responses((status = 200), (status = 206), (status = 404), (status = 416)))]
pub async fn file(
    State(c): State<Arc<Coordinator>>,
    Path((iteration, name)): Path<(u64, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth::require_read(&c, &headers).await?;
    let manifest = base_manifest(&c, iteration).await?;
    let entry = manifest.file(&name).ok_or_else(|| {
        ApiError::not_found(format!("iteration {iteration} has no file `{name}`"))
    })?;
    let range = match headers.get(header::RANGE) {
        Some(v) => Some(parse_range(v, entry.size)?),
        None => None,
    };
    let (_, stream) = c
        .store
        .get_stream(&keys::base_file(iteration, &name), range.clone())
        .await?;
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", entry.sha256)) {
        h.insert(header::ETAG, v);
    }
    let length = match &range {
        Some(r) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let v = format!("bytes {}-{}/{}", r.start, r.end - 1, entry.size);
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&v).expect("ascii"),
            );
            r.end - r.start
        }
        None => entry.size,
    };
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok(response)
}

/// Parses a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range against a file of `size` bytes.
fn parse_range(value: &HeaderValue, size: u64) -> Result<Range<u64>, ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::BadRange,
            format!("only one `bytes=a-b` range within the {size}-byte file is supported"),
        )
    };
    let spec = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("bytes="))
        .filter(|v| !v.contains(','))
        .ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let range = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| bad())?;
            size.saturating_sub(n)..size
        }
        (a, "") => a.parse().map_err(|_| bad())?..size,
        (a, b) => {
            let end: u64 = b.parse().map_err(|_| bad())?;
            a.parse().map_err(|_| bad())?..end.saturating_add(1).min(size)
        }
    };
    if range.start >= range.end || range.start >= size {
        return Err(bad());
    }
    Ok(range)
}

/// `GET /v1/lineage`: every committed iteration's record, oldest first.
#[utoipa::path(get, path = "/v1/lineage", responses((status = 200, body = [IterationRecord])))]
pub async fn lineage(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
) -> Result<Json<Vec<IterationRecord>>, ApiError> {
    let anonymous = auth::require_read(&c, &headers).await? == auth::Caller::Anonymous;
    let mut records = Vec::new();
    for key in c.store.list(keys::ITERATIONS).await? {
        if let Some(r) = c.store.get_json::<IterationRecord>(&key).await? {
            records.push(if anonymous { r.redacted() } else { r });
        }
    }
    records.sort_by_key(|r| r.iteration);
    Ok(Json(records))
}

/// `GET /v1/lineage/{iteration}`: one iteration's record.
#[utoipa::path(get, path = "/v1/lineage/{iteration}", params(("iteration" = u64, Path)), responses((status = 200, body = IterationRecord), (status = 404)))]
pub async fn lineage_one(
    State(c): State<Arc<Coordinator>>,
    Path(iteration): Path<u64>,
    headers: HeaderMap,
) -> Result<Json<IterationRecord>, ApiError> {
    let anonymous = auth::require_read(&c, &headers).await? == auth::Caller::Anonymous;
    c.store
        .get_json::<IterationRecord>(&keys::iteration_record(iteration))
        .await?
        .map(|r| Json(if anonymous { r.redacted() } else { r }))
        .ok_or_else(|| ApiError::not_found(format!("iteration {iteration} is not committed")))
}

/// `GET /v1/bases/{iteration}/archive`: every file of the base as one streamed tar
/// (`coldfuse-base-{iteration}/…`).
#[utoipa::path(get, path = "/v1/bases/{iteration}/archive", params(("iteration" = u64, Path)), responses((status = 200, content_type = "application/x-tar"), (status = 404)))]
pub async fn archive(
    State(c): State<Arc<Coordinator>>,
    Path(iteration): Path<u64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    use futures::StreamExt;
    auth::require_read(&c, &headers).await?;
    let manifest = base_manifest(&c, iteration).await?;
    let length = crate::tar::archive_len(manifest.files.iter().map(|f| f.size));
    let store = c.store.clone();
    let dir = format!("coldfuse-base-{iteration:06}");
    let files = manifest.files.clone();
    let stream = futures::stream::iter(files)
        .then(move |f| {
            let store = store.clone();
            let dir = dir.clone();
            async move {
                let head =
                    crate::tar::header(&format!("{dir}/{}", f.name), f.size, manifest.created_at);
                let (_, body) = store
                    .get_stream(&keys::base_file(iteration, &f.name), None)
                    .await
                    .map_err(std::io::Error::other)?;
                let pad = bytes::Bytes::from(vec![0u8; crate::tar::padding(f.size)]);
                let parts =
                    futures::stream::once(async move { Ok(bytes::Bytes::copy_from_slice(&head)) })
                        .chain(body.map(|r| r.map_err(std::io::Error::other)))
                        .chain(futures::stream::once(async move { Ok(pad) }));
                Ok::<_, std::io::Error>(parts)
            }
        })
        .map(|r| match r {
            Ok(parts) => parts.boxed(),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
        .flatten()
        .chain(futures::stream::once(async {
            Ok(bytes::Bytes::from(vec![0u8; 1024]))
        }));
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok(response)
}
