//! Bearer tokens: generated once, stored only as SHA-256 hashes, checked per request.

use std::sync::Arc;

use axum::{extract::FromRequestParts, http::request::Parts, http::HeaderMap};
use coldfuse_shared::{
    api::{Role, TokenRecord},
    hash::sha256_bytes,
};
use rand::RngCore;

use crate::{error::ApiError, state::Coordinator};

/// A new random token (`cf_` + 64 hex digits) and its hash.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("cf_{}", hex::encode(bytes));
    let hash = sha256_bytes(token.as_bytes());
    (token, hash)
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No token, allowed where reads are public.
    Anonymous,
    /// A valid, unrevoked token.
    Token(TokenRecord),
}

impl Caller {
    /// The caller's role, if authenticated.
    pub fn role(&self) -> Option<Role> {
        match self {
            Self::Anonymous => None,
            Self::Token(t) => Some(t.role),
        }
    }
}

/// Identifies the caller from the `Authorization` header: 401 for a present but unknown or revoked token.
pub async fn caller(c: &Coordinator, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(Caller::Anonymous);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(ApiError::unauthorized)?;
    let hash = sha256_bytes(token.trim().as_bytes());
    match c.token(&hash).await {
        Some(record) if !record.revoked => {
            crate::edge::observe::record_token(&record.id);
            Ok(Caller::Token(record))
        }
        _ => Err(ApiError::unauthorized()),
    }
}

/// Requires the admin role.
pub async fn require_admin(c: &Coordinator, headers: &HeaderMap) -> Result<TokenRecord, ApiError> {
    match caller(c, headers).await? {
        Caller::Token(t) if t.role == Role::Admin => Ok(t),
        Caller::Token(_) => Err(ApiError::forbidden("this route needs an admin token")),
        Caller::Anonymous => Err(ApiError::unauthorized()),
    }
}

/// Requires a token allowed to write as `contributor` (its own contributor token, or admin).
pub async fn require_contributor(
    c: &Coordinator,
    headers: &HeaderMap,
    contributor: &str,
) -> Result<TokenRecord, ApiError> {
    match caller(c, headers).await? {
        Caller::Token(t) if t.role == Role::Admin => Ok(t),
        Caller::Token(t)
            if t.role == Role::Contributor && t.contributor.as_deref() == Some(contributor) =>
        {
            Ok(t)
        }
        Caller::Token(t) => Err(ApiError::forbidden(format!(
            "token `{}` may not write contributions of `{contributor}`",
            t.id
        ))),
        Caller::Anonymous => Err(ApiError::unauthorized()),
    }
}

/// Requires a token allowed to read what belongs to site `contributor` (its fused diffs, its
/// contribution's status): an admin, an auditor, or that contributor's own token (a diff carries
/// information about a site's data).
pub async fn require_site_reader(
    c: &Coordinator,
    headers: &HeaderMap,
    contributor: &str,
) -> Result<TokenRecord, ApiError> {
    match caller(c, headers).await? {
        Caller::Token(t) if matches!(t.role, Role::Admin | Role::Auditor) => Ok(t),
        Caller::Token(t)
            if t.role == Role::Contributor && t.contributor.as_deref() == Some(contributor) =>
        {
            Ok(t)
        }
        Caller::Token(t) => Err(ApiError::forbidden(format!(
            "token `{}` may not read diffs of `{contributor}` (admins, auditors and the site itself may)",
            t.id
        ))),
        Caller::Anonymous => Err(ApiError::unauthorized()),
    }
}

/// Requires a valid token of any role.
pub async fn require_token(c: &Coordinator, headers: &HeaderMap) -> Result<TokenRecord, ApiError> {
    match caller(c, headers).await? {
        Caller::Token(t) => Ok(t),
        Caller::Anonymous => Err(ApiError::unauthorized()),
    }
}

/// Requires read access: any token, or none when the deployment's reads are public.
pub async fn require_read(c: &Coordinator, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let caller = caller(c, headers).await?;
    if caller == Caller::Anonymous && !c.config().await.public_read {
        return Err(ApiError::unauthorized());
    }
    Ok(caller)
}

impl FromRequestParts<Arc<Coordinator>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        c: &Arc<Coordinator>,
    ) -> Result<Self, Self::Rejection> {
        caller(c, &parts.headers).await
    }
}

/// Extractor: a caller allowed to read (any token, or none where reads are public).
#[derive(Debug, Clone)]
pub struct Reader(pub Caller);

impl FromRequestParts<Arc<Coordinator>> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        c: &Arc<Coordinator>,
    ) -> Result<Self, Self::Rejection> {
        require_read(c, &parts.headers).await.map(Self)
    }
}

/// Extractor: the caller's admin token (401/403 otherwise).
#[derive(Debug, Clone)]
pub struct Admin(pub TokenRecord);

impl FromRequestParts<Arc<Coordinator>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        c: &Arc<Coordinator>,
    ) -> Result<Self, Self::Rejection> {
        require_admin(c, &parts.headers).await.map(Self)
    }
}
