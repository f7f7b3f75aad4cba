//! Routing and handlers of the admin API. Transport-free: [`handle`] takes an [`ApiRequest`] and
//! returns an [`ApiResponse`], so tests call it directly and the tiny_http server only converts.
//!
//! Order of checks for `/api/…`: lockout (429) → token (401) → route (404/405) → permission
//! (403) → draining (503 for changes) → handler. Errors are JSON:
//! `{"error": {"code": "…", "message": "…"}}`.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminContext;
use super::auth::{self, Permission, Role};
use crate::config::LogLevel;
use crate::runtime::lifecycle::Phase;
use crate::scriptctl::lifecycle::{self, Actor, LifecycleError};
use crate::store::{StoreError, audit, scripts, tokens};
use crate::time::{rfc3339, unix_ms};

/// HTTP methods the API uses (others get 405).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET (and HEAD is answered as GET by tiny_http users; we treat HEAD as GET).
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
    /// Anything else.
    Other,
}

impl Method {
    /// From the request line.
    pub fn parse(s: &str) -> Self {
        match s {
            "GET" | "HEAD" => Self::Get,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            _ => Self::Other,
        }
    }

    /// Upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Other => "OTHER",
        }
    }

    fn changes_state(self) -> bool {
        !matches!(self, Self::Get)
    }
}

/// A request as the handlers see it.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// Method.
    pub method: Method,
    /// Path without the query.
    pub path: String,
    /// Query string without `?`.
    pub query: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// Client address (from the front's peer header).
    pub peer: Option<SocketAddr>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// A response to send.
pub struct ApiResponse {
    /// Status code.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Route label for metrics (bounded set).
    pub route: &'static str,
    /// A streamed body and its exact length, sent instead of `body` (decrypted playback).
    pub stream: Option<(Box<dyn Read + Send>, u64)>,
}

impl std::fmt::Debug for ApiResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiResponse")
            .field("status", &self.status)
            .field("route", &self.route)
            .field("body_len", &self.body.len())
            .field("stream_len", &self.stream.as_ref().map(|(_, n)| *n))
            .finish_non_exhaustive()
    }
}

impl ApiResponse {
    pub(super) fn json(status: u16, v: &Value) -> Self {
        Self {
            status,
            content_type: "application/json; charset=utf-8",
            headers: Vec::new(),
            body: v.to_string().into_bytes(),
            route: "unmatched",
            stream: None,
        }
    }

    fn empty(status: u16) -> Self {
        Self {
            status,
            content_type: "application/json; charset=utf-8",
            headers: Vec::new(),
            body: Vec::new(),
            route: "unmatched",
            stream: None,
        }
    }

    fn with_route(mut self, route: &'static str) -> Self {
        self.route = route;
        self
    }
}

/// An error answered as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Status code.
    pub status: u16,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation (never personal data).
    pub message: String,
    /// Extra headers (WWW-Authenticate, Retry-After, Allow).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub(super) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    pub(super) fn not_found() -> Self {
        Self::new(404, "not_found", "no such resource")
    }

    fn unauthorized() -> Self {
        let mut e = Self::new(401, "unauthorized", "a valid bearer token is required");
        e.headers
            .push(("WWW-Authenticate", "Bearer realm=\"vaultcall\"".into()));
        e
    }

    fn internal(e: &StoreError) -> Self {
        log::error!(error:% = e; "admin API store failure");
        Self::new(500, "internal", "internal error; see the daemon log")
    }

    fn into_response(self) -> ApiResponse {
        let mut r = ApiResponse::json(
            self.status,
            &json!({"error": {"code": self.code, "message": self.message}}),
        );
        r.headers = self.headers;
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::not_found(),
            StoreError::Closed => Self::new(503, "unavailable", "the daemon is shutting down"),
            other => Self::internal(&other),
        }
    }
}

/// The routes. Variants carry what the path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Healthz,
    Readyz,
    Metrics,
    Status,
    WhoAmI,
    TokensList,
    TokensCreate,
    TokenRevoke(String),
    LogLevelGet,
    LogLevelSet,
    Reload,
    AuditList,
    AuditVerify,
    ScriptsList,
    ScriptsImport,
    ScriptsValidate,
    ScriptVersions(String),
    ScriptVersion(String, String),
    ScriptPublish(String),
    Trunks,
    AuditHead,
    ErasureCreate,
    ErasureList,
    ErasureGet(String),
    ErasureReceipt(String),
    ReceiptKey,
    CallRecordings(i64),
    RecordingContent(i64),
    SuppressionAdd,
    SuppressionCheck,
    SuppressionLift,
    SuppressionStats,
}

impl Route {
    fn label(&self) -> &'static str {
        match self {
            Self::Healthz => "/healthz",
            Self::Readyz => "/readyz",
            Self::Metrics => "/metrics",
            Self::Status => "/api/v1/status",
            Self::WhoAmI => "/api/v1/whoami",
            Self::TokensList | Self::TokensCreate => "/api/v1/tokens",
            Self::TokenRevoke(_) => "/api/v1/tokens/{id}",
            Self::LogLevelGet | Self::LogLevelSet => "/api/v1/log-level",
            Self::Reload => "/api/v1/reload",
            Self::AuditList => "/api/v1/audit",
            Self::AuditVerify => "/api/v1/audit/verify",
            Self::ScriptsList | Self::ScriptsImport => "/api/v1/scripts",
            Self::ScriptsValidate => "/api/v1/scripts/validate",
            Self::ScriptVersions(_) => "/api/v1/scripts/{key}",
            Self::ScriptVersion(..) => "/api/v1/scripts/{key}/versions/{n}",
            Self::ScriptPublish(_) => "/api/v1/scripts/{key}/publish",
            Self::Trunks => "/api/v1/trunks",
            Self::AuditHead => "/api/v1/audit/head",
            Self::ErasureCreate | Self::ErasureList => "/api/v1/erasure-requests",
            Self::ErasureGet(_) => "/api/v1/erasure-requests/{id}",
            Self::ErasureReceipt(_) => "/api/v1/erasure-requests/{id}/receipt",
            Self::ReceiptKey => "/api/v1/receipt-key",
            Self::CallRecordings(_) => "/api/v1/calls/{id}/recordings",
            Self::RecordingContent(_) => "/api/v1/recordings/{id}/content",
            Self::SuppressionAdd => "/api/v1/suppression",
            Self::SuppressionCheck => "/api/v1/suppression/check",
            Self::SuppressionLift => "/api/v1/suppression/lift",
            Self::SuppressionStats => "/api/v1/suppression/stats",
        }
    }

    /// What the caller must hold; `None` for public routes.
    fn permission(&self, metrics_require_token: bool) -> Option<Permission> {
        match self {
            Self::Healthz | Self::Readyz => None,
            Self::Metrics => metrics_require_token.then_some(Permission::MetricsRead),
            Self::Status | Self::WhoAmI | Self::LogLevelGet | Self::Trunks => {
                Some(Permission::StatusRead)
            }
            Self::TokensList | Self::TokensCreate | Self::TokenRevoke(_) => {
                Some(Permission::TokensManage)
            }
            Self::LogLevelSet | Self::Reload => Some(Permission::ConfigManage),
            Self::AuditList | Self::AuditVerify | Self::AuditHead => Some(Permission::AuditRead),
            Self::ScriptsList
            | Self::ScriptsValidate
            | Self::ScriptVersions(_)
            | Self::ScriptVersion(..) => Some(Permission::ScriptsRead),
            Self::ScriptsImport => Some(Permission::ScriptsWrite),
            Self::ScriptPublish(_) => Some(Permission::ScriptsPublish),
            Self::ErasureCreate => Some(Permission::ErasureRequest),
            Self::ErasureList | Self::ErasureGet(_) | Self::ErasureReceipt(_) => {
                Some(Permission::ErasureRead)
            }
            Self::ReceiptKey => Some(Permission::StatusRead),
            Self::CallRecordings(_) | Self::RecordingContent(_) => Some(Permission::RecordingsPlay),
            Self::SuppressionCheck | Self::SuppressionStats => Some(Permission::SuppressionRead),
            Self::SuppressionAdd => Some(Permission::SuppressionManage),
            Self::SuppressionLift => Some(Permission::SuppressionLift),
        }
    }
}

/// Matches method and path; `Err` is 404 or 405 (with the allowed methods).
fn route(method: Method, path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let by_method = |allowed: &[(Method, Route)]| -> Result<Route, ApiError> {
        if let Some((_, r)) = allowed.iter().find(|(m, _)| *m == method) {
            return Ok(r.clone());
        }
        let allow: Vec<&str> = allowed.iter().map(|(m, _)| m.as_str()).collect();
        let mut e = ApiError::new(
            405,
            "method_not_allowed",
            format!("allowed: {}", allow.join(", ")),
        );
        e.headers.push(("Allow", allow.join(", ")));
        Err(e)
    };
    use Method::*;
    match segs.as_slice() {
        ["healthz"] => by_method(&[(Get, Route::Healthz)]),
        ["readyz"] => by_method(&[(Get, Route::Readyz)]),
        ["metrics"] => by_method(&[(Get, Route::Metrics)]),
        ["api", "v1", "status"] => by_method(&[(Get, Route::Status)]),
        ["api", "v1", "whoami"] => by_method(&[(Get, Route::WhoAmI)]),
        ["api", "v1", "tokens"] => {
            by_method(&[(Get, Route::TokensList), (Post, Route::TokensCreate)])
        }
        ["api", "v1", "tokens", id] => by_method(&[(Delete, Route::TokenRevoke((*id).to_owned()))]),
        ["api", "v1", "log-level"] => {
            by_method(&[(Get, Route::LogLevelGet), (Put, Route::LogLevelSet)])
        }
        ["api", "v1", "reload"] => by_method(&[(Post, Route::Reload)]),
        ["api", "v1", "audit"] => by_method(&[(Get, Route::AuditList)]),
        ["api", "v1", "audit", "verify"] => by_method(&[(Get, Route::AuditVerify)]),
        ["api", "v1", "scripts"] => {
            by_method(&[(Get, Route::ScriptsList), (Post, Route::ScriptsImport)])
        }
        // "validate" is POST only, so a script keyed "validate" stays readable with GET.
        ["api", "v1", "scripts", "validate"] => by_method(&[
            (Post, Route::ScriptsValidate),
            (Get, Route::ScriptVersions("validate".to_owned())),
        ]),
        ["api", "v1", "scripts", key] => {
            by_method(&[(Get, Route::ScriptVersions((*key).to_owned()))])
        }
        ["api", "v1", "scripts", key, "versions", n] => by_method(&[(
            Get,
            Route::ScriptVersion((*key).to_owned(), (*n).to_owned()),
        )]),
        ["api", "v1", "scripts", key, "publish"] => {
            by_method(&[(Post, Route::ScriptPublish((*key).to_owned()))])
        }
        ["api", "v1", "trunks"] => by_method(&[(Get, Route::Trunks)]),
        ["api", "v1", "audit", "head"] => by_method(&[(Get, Route::AuditHead)]),
        ["api", "v1", "erasure-requests"] => {
            by_method(&[(Get, Route::ErasureList), (Post, Route::ErasureCreate)])
        }
        ["api", "v1", "erasure-requests", id] => {
            by_method(&[(Get, Route::ErasureGet((*id).to_owned()))])
        }
        ["api", "v1", "erasure-requests", id, "receipt"] => {
            by_method(&[(Get, Route::ErasureReceipt((*id).to_owned()))])
        }
        ["api", "v1", "receipt-key"] => by_method(&[(Get, Route::ReceiptKey)]),
        // Numbers travel only in POST bodies, never in a path or query (access logs, proxies).
        ["api", "v1", "suppression"] => by_method(&[(Post, Route::SuppressionAdd)]),
        ["api", "v1", "suppression", "check"] => by_method(&[(Post, Route::SuppressionCheck)]),
        ["api", "v1", "suppression", "lift"] => by_method(&[(Post, Route::SuppressionLift)]),
        ["api", "v1", "suppression", "stats"] => by_method(&[(Get, Route::SuppressionStats)]),
        ["api", "v1", "calls", id, "recordings"] => match id.parse() {
            Ok(n) => by_method(&[(Get, Route::CallRecordings(n))]),
            Err(_) => Err(ApiError::not_found()),
        },
        ["api", "v1", "recordings", id, "content"] => match id.parse() {
            Ok(n) => by_method(&[(Get, Route::RecordingContent(n))]),
            Err(_) => Err(ApiError::not_found()),
        },
        _ => Err(ApiError::not_found()),
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Token id.
    pub token_id: String,
    /// Token name.
    pub name: String,
    /// Role.
    pub role: Role,
}

fn peer_ip(req: &ApiRequest) -> IpAddr {
    req.peer
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip())
}

/// Checks the bearer token, with lockout after repeated failures from one address.
fn authenticate(ctx: &AdminContext, req: &ApiRequest) -> Result<Caller, ApiError> {
    let ip = peer_ip(req);
    let now = ctx.clock.mono();
    let fail = |reason: &'static str| {
        ctx.metrics.auth_failures.with(&[reason]).inc();
    };
    if let Some(wait) = ctx
        .limiter
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .locked(ip, now)
    {
        fail("locked_out");
        let mut e = ApiError::new(
            429,
            "too_many_failures",
            "too many failed logins from this address; try later",
        );
        e.headers
            .push(("Retry-After", wait.as_secs().max(1).to_string()));
        return Err(e);
    }
    let Some(bearer) = req
        .authorization
        .as_deref()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
    else {
        fail("missing");
        return Err(ApiError::unauthorized());
    };
    let now_ms = unix_ms(ctx.clock.wall());
    let verified = match auth::parse_bearer(bearer) {
        Some((id, secret)) => {
            let id = id.to_owned();
            let row = ctx.store.read(move |c| tokens::get(c, &id))?;
            row.filter(|r| auth::verify(r, secret, now_ms))
        }
        None => None,
    };
    let Some(row) = verified else {
        fail("invalid");
        let locked = ctx
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failure(ip, now);
        log::info!(peer:% = ip, locked_out = locked; "admin API authentication failed");
        if locked {
            let _ = ctx.store.write(move |c| {
                audit::append(
                    c,
                    &audit::NewEntry {
                        at_ms: now_ms,
                        actor: "system",
                        role: None,
                        action: "auth.lockout",
                        object: None,
                        result: "locked_out",
                        detail: json!({"peer": ip.to_string()}),
                    },
                )
                .map(|_| ())
            });
        }
        return Err(ApiError::unauthorized());
    };
    let Some(role) = Role::parse(&row.role) else {
        return Err(ApiError::unauthorized());
    };
    touch(ctx, &row.id.0, now, now_ms);
    Ok(Caller {
        token_id: row.id.0,
        name: row.name,
        role,
    })
}

/// Records `last_used_at`, at most once a minute per token.
fn touch(ctx: &AdminContext, id: &str, now: std::time::Instant, now_ms: i64) {
    {
        let mut t = ctx.touched.lock().unwrap_or_else(|p| p.into_inner());
        if t.get(id)
            .is_some_and(|last| now.saturating_duration_since(*last) < Duration::from_secs(60))
        {
            return;
        }
        if t.len() >= 10_000 {
            t.clear();
        }
        t.insert(id.to_owned(), now);
    }
    let id = id.to_owned();
    if let Err(e) = ctx.store.write(move |c| tokens::touch(c, &id, now_ms)) {
        log::warn!(error:% = e; "could not record token use");
    }
}

/// Handles one request.
pub fn handle(ctx: &AdminContext, req: &ApiRequest) -> ApiResponse {
    let tls = ctx.tls;
    let mut resp = match dispatch(ctx, req) {
        Ok(r) => r,
        Err((label, e)) => e.into_response().with_route(label),
    };
    resp.headers.push(("Cache-Control", "no-store".into()));
    resp.headers
        .push(("X-Content-Type-Options", "nosniff".into()));
    if tls {
        resp.headers
            .push(("Strict-Transport-Security", "max-age=31536000".into()));
    }
    resp
}

fn dispatch(ctx: &AdminContext, req: &ApiRequest) -> Result<ApiResponse, (&'static str, ApiError)> {
    let is_api = req.path == "/api" || req.path.starts_with("/api/");
    let metrics_require_token = ctx
        .settings
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .metrics_require_token;
    // Under /api/ the caller proves who they are before learning whether a path exists.
    let caller = if is_api {
        Some(authenticate(ctx, req).map_err(|e| ("unmatched", e))?)
    } else {
        None
    };
    let route = route(req.method, &req.path).map_err(|e| ("unmatched", e))?;
    let label = route.label();
    let caller = match (route.permission(metrics_require_token), caller) {
        (None, c) => c,
        (Some(p), c) => {
            let c = match c {
                Some(c) => c,
                None => authenticate(ctx, req).map_err(|e| (label, e))?,
            };
            if !c.role.allows(p) {
                deny(ctx, &c, req, label);
                return Err((
                    label,
                    ApiError::new(
                        403,
                        "forbidden",
                        format!("role {} lacks permission {}", c.role.as_str(), p.as_str()),
                    ),
                ));
            }
            Some(c)
        }
    };
    if req.method.changes_state() && ctx.lifecycle.phase() == Phase::Draining {
        return Err((
            label,
            ApiError::new(
                503,
                "draining",
                "the daemon is shutting down; no new work is accepted",
            ),
        ));
    }
    let r = match (&route, caller) {
        (Route::Healthz, _) => Ok(ApiResponse::json(200, &json!({"status": "ok"}))),
        (Route::Readyz, _) => Ok(readyz(ctx)),
        (Route::Metrics, _) => Ok(ApiResponse {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            headers: Vec::new(),
            body: crate::telemetry::metrics::global().render().into_bytes(),
            route: label,
            stream: None,
        }),
        (_, None) => Err(ApiError::unauthorized()),
        (Route::Status, Some(_)) => status(ctx),
        (Route::WhoAmI, Some(c)) => Ok(whoami(&c)),
        (Route::TokensList, Some(_)) => tokens_list(ctx),
        (Route::TokensCreate, Some(c)) => tokens_create(ctx, &c, &req.body),
        (Route::TokenRevoke(id), Some(c)) => token_revoke(ctx, &c, id),
        (Route::LogLevelGet, Some(_)) => Ok(ApiResponse::json(
            200,
            &json!({"level": crate::telemetry::level().as_str()}),
        )),
        (Route::LogLevelSet, Some(c)) => log_level_set(ctx, &c, &req.body),
        (Route::Reload, Some(c)) => reload(ctx, &c),
        (Route::AuditList, Some(_)) => audit_list(ctx, &req.query),
        (Route::AuditVerify, Some(c)) => audit_verify(ctx, &c),
        (Route::AuditHead, Some(_)) => audit_head(ctx),
        (Route::ErasureCreate, Some(c)) => super::vault_api::erasure_create(ctx, &c, &req.body),
        (Route::ErasureList, Some(_)) => super::vault_api::erasure_list(ctx, &req.query),
        (Route::ErasureGet(id), Some(_)) => super::vault_api::erasure_get(ctx, id),
        (Route::ErasureReceipt(id), Some(c)) => super::vault_api::erasure_receipt(ctx, &c, id),
        (Route::ReceiptKey, Some(_)) => super::vault_api::receipt_key(ctx),
        (Route::CallRecordings(id), Some(_)) => super::vault_api::call_recordings(ctx, *id),
        (Route::RecordingContent(id), Some(c)) => {
            super::vault_api::recording_content(ctx, &c, *id, &req.query)
        }
        (Route::SuppressionAdd, Some(c)) => super::suppression_api::add(ctx, &c, &req.body),
        (Route::SuppressionCheck, Some(c)) => super::suppression_api::check(ctx, &c, &req.body),
        (Route::SuppressionLift, Some(c)) => super::suppression_api::lift(ctx, &c, &req.body),
        (Route::SuppressionStats, Some(_)) => super::suppression_api::stats(ctx),
        (Route::ScriptsList, Some(_)) => scripts_list(ctx),
        (Route::ScriptsImport, Some(c)) => script_import(ctx, &c, &req.body),
        (Route::ScriptsValidate, Some(_)) => script_validate(&req.body),
        (Route::ScriptVersions(key), Some(_)) => script_versions(ctx, key),
        (Route::ScriptVersion(key, n), Some(_)) => script_version(ctx, key, n),
        (Route::ScriptPublish(key), Some(c)) => script_publish(ctx, &c, key),
        (Route::Trunks, Some(_)) => {
            let trunks = ctx
                .sip
                .as_ref()
                .map(|s| s.status_blocking())
                .unwrap_or_default();
            Ok(ApiResponse::json(200, &json!({"trunks": trunks})))
        }
    };
    r.map(|r| r.with_route(label)).map_err(|e| (label, e))
}

/// Appends an audit entry for an action by `c` in its own transaction.
pub(super) fn append_audit(
    ctx: &AdminContext,
    c: &Caller,
    action: String,
    object: Option<String>,
    result: &'static str,
    detail: Value,
) -> Result<(), StoreError> {
    let (actor, role, at_ms) = (
        c.token_id.clone(),
        c.role.as_str(),
        unix_ms(ctx.clock.wall()),
    );
    ctx.store.write(move |conn| {
        audit::append(
            conn,
            &audit::NewEntry {
                at_ms,
                actor: &actor,
                role: Some(role),
                action: &action,
                object: object.as_deref(),
                result,
                detail,
            },
        )
        .map(|_| ())
    })
}

/// [`append_audit`] for a read or an outcome that has happened already: a failure to audit
/// is logged, not returned.
pub(super) fn record(
    ctx: &AdminContext,
    c: &Caller,
    action: &'static str,
    object: Option<String>,
    result: &'static str,
    detail: Value,
) {
    if let Err(e) = append_audit(ctx, c, action.to_owned(), object, result, detail) {
        log::error!(error:% = e, action = action; "could not append to the audit log");
    }
}

/// Records a 403 in the audit log (who tried what).
fn deny(ctx: &AdminContext, c: &Caller, req: &ApiRequest, label: &'static str) {
    let action = format!("{} {label}", req.method.as_str());
    if let Err(e) = append_audit(ctx, c, action, None, "denied", json!({})) {
        log::warn!(error:% = e; "could not audit a denied request");
    }
}

fn readyz(ctx: &AdminContext) -> ApiResponse {
    let phase = ctx.lifecycle.phase();
    let status = if phase == Phase::Ready { 200 } else { 503 };
    ApiResponse::json(status, &json!({"status": phase.as_str()}))
}

fn status(ctx: &AdminContext) -> Result<ApiResponse, ApiError> {
    let schema: i64 = ctx.store.read(|c| {
        Ok(c.query_row(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?)
    })?;
    let uptime = ctx
        .clock
        .mono()
        .saturating_duration_since(ctx.lifecycle.started);
    Ok(ApiResponse::json(
        200,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "git_commit": option_env!("VAULTCALL_GIT_COMMIT").unwrap_or("unknown"),
            "phase": ctx.lifecycle.phase().as_str(),
            "started_at": rfc3339(ctx.lifecycle.started_wall),
            "uptime_seconds": uptime.as_secs(),
            "config_source": ctx.config_source,
            "schema_version": schema,
            "db_bytes": ctx.store.disk_bytes(),
            "log_level": crate::telemetry::level().as_str(),
            "in_flight": ctx.lifecycle.in_flight(),
            "admin": {"tls": ctx.tls},
        }),
    ))
}

fn whoami(c: &Caller) -> ApiResponse {
    let perms: Vec<&str> = Permission::ALL
        .into_iter()
        .filter(|p| c.role.allows(*p))
        .map(Permission::as_str)
        .collect();
    ApiResponse::json(
        200,
        &json!({"id": c.token_id, "name": c.name, "role": c.role.as_str(), "permissions": perms}),
    )
}

pub(super) fn opt_time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |m| Value::String(rfc3339(ms_to_system(m))))
}

fn ms_to_system(ms: i64) -> std::time::SystemTime {
    let base = std::time::UNIX_EPOCH;
    if ms >= 0 {
        base + Duration::from_millis(ms as u64)
    } else {
        base - Duration::from_millis(ms.unsigned_abs())
    }
}

fn token_json(t: &tokens::TokenRow, now_ms: i64) -> Value {
    json!({
        "id": t.id.0,
        "name": t.name,
        "role": t.role,
        "created_at": opt_time(Some(t.created_at_ms)),
        "created_by": t.created_by,
        "expires_at": opt_time(t.expires_at_ms),
        "last_used_at": opt_time(t.last_used_at_ms),
        "revoked_at": opt_time(t.revoked_at_ms),
        "active": t.is_active(now_ms),
    })
}

fn tokens_list(ctx: &AdminContext) -> Result<ApiResponse, ApiError> {
    let rows = ctx.store.read(tokens::list)?;
    let now_ms = unix_ms(ctx.clock.wall());
    let list: Vec<Value> = rows.iter().map(|t| token_json(t, now_ms)).collect();
    Ok(ApiResponse::json(200, &json!({"tokens": list})))
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
    role: String,
    #[serde(default)]
    expires_in_days: Option<u32>,
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// A phone number in a request body. Deserialises only from a JSON string, and a value of
/// another type is refused with a message that does not repeat it (serde's own message would
/// quote it: `invalid type: integer `13812345678``). Wiped when dropped.
pub(super) struct PhoneField(pub zeroize::Zeroizing<String>);

impl<'de> Deserialize<'de> for PhoneField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const WRONG: &str = "phone must be a JSON string";
        impl serde::de::Visitor<'_> for V {
            type Value = PhoneField;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a phone number as a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PhoneField, E> {
                Ok(PhoneField(zeroize::Zeroizing::new(v.to_owned())))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<PhoneField, E> {
                Err(E::custom(WRONG))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<PhoneField, E> {
                Err(E::custom(WRONG))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<PhoneField, E> {
                Err(E::custom(WRONG))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<PhoneField, E> {
                Err(E::custom(WRONG))
            }
        }
        // `deserialize_any`, not `deserialize_str`: serde_json answers a non-string given to
        // `deserialize_str` with its own message, which quotes the value.
        d.deserialize_any(V)
    }
}

/// Checks an operator-chosen label: 1–64 characters, no control characters.
pub fn valid_token_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=64).contains(&n) && !name.chars().any(char::is_control)
}

fn tokens_create(ctx: &AdminContext, c: &Caller, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let req: CreateToken = parse_json(body)?;
    let role = Role::parse(&req.role).ok_or_else(|| {
        ApiError::bad_request("role: allowed values are admin, operator, auditor, compliance")
    })?;
    if !valid_token_name(&req.name) {
        return Err(ApiError::bad_request(
            "name: 1 to 64 characters, no control characters",
        ));
    }
    let now_ms = unix_ms(ctx.clock.wall());
    let expires_at_ms = match req.expires_in_days {
        None => None,
        Some(d) if (1..=3650).contains(&d) => Some(now_ms + i64::from(d) * 86_400_000),
        Some(_) => return Err(ApiError::bad_request("expires_in_days: allowed 1 to 3650")),
    };
    let minted = auth::mint(&req.name, role, now_ms, &c.token_id, expires_at_ms)
        .map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    let row = minted.row.clone();
    let actor = c.token_id.clone();
    let actor_role = c.role.as_str();
    ctx.store.write(move |conn| {
        tokens::insert(conn, &row)?;
        audit::append(
            conn,
            &audit::NewEntry {
                at_ms: now_ms,
                actor: &actor,
                role: Some(actor_role),
                action: "token.create",
                object: Some(&format!("token:{}", row.id)),
                result: "ok",
                detail: json!({"role": row.role}),
            },
        )?;
        Ok(())
    })?;
    log::info!(token_id:% = minted.row.id, role = role.as_str(); "admin token created");
    let mut v = token_json(&minted.row, now_ms);
    v["token"] = Value::String(minted.bearer.as_str().to_owned());
    Ok(ApiResponse::json(201, &v))
}

fn token_revoke(ctx: &AdminContext, c: &Caller, id: &str) -> Result<ApiResponse, ApiError> {
    let now_ms = unix_ms(ctx.clock.wall());
    let id = id.to_owned();
    let actor = c.token_id.clone();
    let actor_role = c.role.as_str();
    let revoked = ctx.store.write(move |conn| {
        let revoked = tokens::revoke(conn, &id, now_ms)?;
        if revoked {
            audit::append(
                conn,
                &audit::NewEntry {
                    at_ms: now_ms,
                    actor: &actor,
                    role: Some(actor_role),
                    action: "token.revoke",
                    object: Some(&format!("token:{id}")),
                    result: "ok",
                    detail: json!({}),
                },
            )?;
        }
        Ok(revoked)
    })?;
    if revoked {
        Ok(ApiResponse::empty(204))
    } else {
        Err(ApiError::not_found())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetLevel {
    level: String,
}

fn log_level_set(ctx: &AdminContext, c: &Caller, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let req: SetLevel = parse_json(body)?;
    let level = LogLevel::parse(&req.level).ok_or_else(|| {
        ApiError::bad_request("level: allowed values are error, warn, info, debug, trace")
    })?;
    let previous = crate::telemetry::level();
    crate::telemetry::set_level(level);
    log::warn!(from = previous.as_str(), to = level.as_str(), token_id = c.token_id.as_str(); "log level changed through the admin API");
    append_audit(
        ctx,
        c,
        "log_level.set".into(),
        None,
        "ok",
        json!({"from": previous.as_str(), "to": level.as_str()}),
    )?;
    Ok(ApiResponse::json(
        200,
        &json!({"level": level.as_str(), "previous": previous.as_str()}),
    ))
}

fn reload(ctx: &AdminContext, c: &Caller) -> Result<ApiResponse, ApiError> {
    let report = ctx
        .control
        .as_ref()
        .and_then(|h| h.reload_blocking())
        .ok_or_else(|| ApiError::new(503, "unavailable", "reload is not available"))?;
    let ok = report.error.is_none();
    let detail = serde_json::to_value(&report).unwrap_or(Value::Null);
    let result = if ok { "ok" } else { "failed" };
    append_audit(ctx, c, "config.reload".into(), None, result, detail)?;
    let body = serde_json::to_value(&report).unwrap_or(Value::Null);
    Ok(ApiResponse::json(if ok { 200 } else { 422 }, &body))
}

pub(super) fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// `after` (a row id, default 0) and `limit` (1–1000, default 100) of a list request.
pub(super) fn paging(query: &str) -> Result<(i64, usize), ApiError> {
    let after = match query_param(query, "after") {
        None => 0,
        Some(v) => v
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request("after: an id"))?,
    };
    let limit = match query_param(query, "limit") {
        None => 100,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| ApiError::bad_request("limit: allowed 1 to 1000"))?,
    };
    Ok((after, limit))
}

fn audit_list(ctx: &AdminContext, query: &str) -> Result<ApiResponse, ApiError> {
    let (after, limit) = paging(query)?;
    let entries = ctx.store.read(move |c| audit::page(c, after, limit))?;
    let next = entries.last().map(|e| e.id.0);
    Ok(ApiResponse::json(
        200,
        &json!({"entries": entries, "next_after": next}),
    ))
}

fn audit_head(ctx: &AdminContext) -> Result<ApiResponse, ApiError> {
    let head = ctx.store.read(audit::head)?;
    Ok(ApiResponse::json(
        200,
        &match head {
            Some((id, hash)) => {
                let h = hex::encode(hash);
                json!({"id": id, "hash": h, "checkpoint": format!("{id}:{h}")})
            }
            None => json!({"id": null, "hash": null, "checkpoint": null}),
        },
    ))
}

fn audit_verify(ctx: &AdminContext, c: &Caller) -> Result<ApiResponse, ApiError> {
    let v = ctx.store.read(audit::verify)?;
    let intact = v.is_ok();
    record(
        ctx,
        c,
        "audit.verify",
        None,
        if intact { "ok" } else { "broken" },
        json!({}),
    );
    Ok(ApiResponse::json(
        200,
        &match v {
            Ok(n) => json!({"intact": true, "entries": n}),
            Err(audit::Break::Content { id }) => {
                json!({"intact": false, "break": {"kind": "content", "id": id}})
            }
            Err(audit::Break::Link { id, expected_id }) => {
                json!({"intact": false, "break": {"kind": "link", "id": id, "expected_id": expected_id}})
            }
        },
    ))
}

/// Body of `POST /api/v1/scripts` and `POST /api/v1/scripts/validate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptBody {
    /// The script text (TOML).
    content: String,
}

fn script_json(v: &scripts::ScriptVersion) -> Value {
    json!({
        "key": v.key,
        "version": v.version,
        "status": v.status,
        "format": v.format,
        "sha256": v.content_sha256,
        "created_at": opt_time(Some(v.created_at_ms)),
        "published_at": opt_time(v.published_at_ms),
    })
}

/// 422 with every problem, as `script validate --json` lists them.
fn invalid_script(problems: &[crate::conversation::Problem]) -> ApiResponse {
    ApiResponse::json(
        422,
        &json!({"error": {
            "code": "invalid_script",
            "message": format!("the script has {} problem(s)", problems.len()),
            "problems": problems,
        }}),
    )
}

fn lifecycle_error(e: LifecycleError) -> Result<ApiResponse, ApiError> {
    match e {
        LifecycleError::Invalid(p) => Ok(invalid_script(&p)),
        LifecycleError::NotFound(_) => Err(ApiError::not_found()),
        e @ (LifecycleError::NoDraft(_) | LifecycleError::Changed(_)) => {
            Err(ApiError::new(409, "conflict", e.to_string()))
        }
        LifecycleError::Store(s) => Err(s.into()),
    }
}

fn scripts_list(ctx: &AdminContext) -> Result<ApiResponse, ApiError> {
    let rows = ctx.store.read(scripts::list)?;
    let list: Vec<Value> = rows.iter().map(script_json).collect();
    Ok(ApiResponse::json(200, &json!({"scripts": list})))
}

fn script_validate(body: &[u8]) -> Result<ApiResponse, ApiError> {
    let b: ScriptBody = parse_json(body)?;
    match crate::conversation::compile_text(&b.content, &crate::conversation::CheckEnv::default()) {
        Ok(c) => Ok(ApiResponse::json(
            200,
            &json!({"valid": true, "key": c.source.script.key, "nodes": c.nodes.len(), "intents": c.intents.len()}),
        )),
        Err(p) => Ok(invalid_script(&p)),
    }
}

fn script_import(ctx: &AdminContext, c: &Caller, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let b: ScriptBody = parse_json(body)?;
    let actor = Actor {
        id: &c.token_id,
        role: Some(c.role.as_str()),
    };
    let now_ms = unix_ms(ctx.clock.wall());
    // Audio files live next to the script on the author's machine; the CLI checks them.
    let env = crate::conversation::CheckEnv::default();
    match lifecycle::import(&ctx.store, &b.content, &env, actor, now_ms) {
        Ok((r, v)) => {
            let mut j = script_json(&v);
            j["result"] = json!(r);
            Ok(ApiResponse::json(
                if r == scripts::SaveResult::Created {
                    201
                } else {
                    200
                },
                &j,
            ))
        }
        Err(e) => lifecycle_error(e),
    }
}

fn script_versions(ctx: &AdminContext, key: &str) -> Result<ApiResponse, ApiError> {
    let k = key.to_owned();
    let rows = ctx.store.read(move |c| scripts::versions(c, &k))?;
    if rows.is_empty() {
        return Err(ApiError::not_found());
    }
    let list: Vec<Value> = rows.iter().map(script_json).collect();
    Ok(ApiResponse::json(
        200,
        &json!({"key": key, "versions": list}),
    ))
}

fn script_version(ctx: &AdminContext, key: &str, n: &str) -> Result<ApiResponse, ApiError> {
    let n: i64 = n
        .parse()
        .map_err(|_| ApiError::bad_request("version: a number"))?;
    let k = key.to_owned();
    let v = ctx
        .store
        .read(move |c| scripts::get(c, &k, n))?
        .ok_or_else(ApiError::not_found)?;
    let mut j = script_json(&v);
    j["content"] = json!(String::from_utf8_lossy(&v.content));
    Ok(ApiResponse::json(200, &j))
}

fn script_publish(ctx: &AdminContext, c: &Caller, key: &str) -> Result<ApiResponse, ApiError> {
    let actor = Actor {
        id: &c.token_id,
        role: Some(c.role.as_str()),
    };
    match lifecycle::publish(&ctx.store, key, actor, unix_ms(ctx.clock.wall())) {
        Ok(v) => Ok(ApiResponse::json(200, &script_json(&v))),
        Err(e) => lifecycle_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_routes() {
        assert_eq!(
            route(Method::Get, "/api/v1/scripts").unwrap(),
            Route::ScriptsList
        );
        assert_eq!(
            route(Method::Post, "/api/v1/scripts").unwrap(),
            Route::ScriptsImport
        );
        assert_eq!(
            route(Method::Post, "/api/v1/scripts/validate").unwrap(),
            Route::ScriptsValidate
        );
        assert_eq!(
            route(Method::Get, "/api/v1/scripts/validate").unwrap(),
            Route::ScriptVersions("validate".into())
        );
        assert_eq!(
            route(Method::Get, "/api/v1/scripts/k/versions/2").unwrap(),
            Route::ScriptVersion("k".into(), "2".into())
        );
        assert_eq!(
            route(Method::Post, "/api/v1/scripts/k/publish").unwrap(),
            Route::ScriptPublish("k".into())
        );
        assert_eq!(
            route(Method::Get, "/api/v1/scripts/k/publish")
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            Route::ScriptPublish("k".into()).permission(false),
            Some(Permission::ScriptsPublish)
        );
        assert_eq!(
            Route::ScriptsImport.permission(false),
            Some(Permission::ScriptsWrite)
        );
    }

    #[test]
    fn routes_match_and_wrong_methods_say_what_is_allowed() {
        assert_eq!(
            route(Method::Get, "/api/v1/tokens").unwrap(),
            Route::TokensList
        );
        assert_eq!(
            route(Method::Post, "/api/v1/tokens/").unwrap(),
            Route::TokensCreate
        );
        assert_eq!(
            route(Method::Delete, "/api/v1/tokens/abc").unwrap(),
            Route::TokenRevoke("abc".into())
        );
        let e = route(Method::Put, "/api/v1/tokens").unwrap_err();
        assert_eq!(e.status, 405);
        assert_eq!(e.headers, vec![("Allow", "GET, POST".to_owned())]);
        assert_eq!(route(Method::Get, "/api/v1/nope").unwrap_err().status, 404);
        assert_eq!(
            route(Method::Get, "/api/v1/tokens/a/b").unwrap_err().status,
            404
        );
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("after=5&limit=10", "limit"), Some("10"));
        assert_eq!(query_param("", "limit"), None);
    }

    #[test]
    fn a_phone_of_the_wrong_type_is_refused_without_repeating_it() {
        #[derive(Deserialize)]
        struct B {
            #[allow(dead_code)]
            phone: PhoneField,
        }
        for body in [
            r#"{"phone": 13812345678}"#,
            r#"{"phone": -13812345678}"#,
            r#"{"phone": 138123456789012345678901}"#,
            r#"{"phone": 1.3812345678}"#,
            r#"{"phone": [13812345678]}"#,
            r#"{"phone": {"n": "13812345678"}}"#,
        ] {
            let e = parse_json::<B>(body.as_bytes()).err().expect(body);
            assert_eq!(e.status, 400);
            assert!(!e.message.contains("1381234"), "{body}: {}", e.message);
        }
        let ok: B = parse_json(br#"{"phone": "138 1234 5678"}"#).unwrap();
        assert_eq!(ok.phone.0.as_str(), "138 1234 5678");
    }

    #[test]
    fn suppression_routes_and_permissions() {
        for (m, p, r, perm) in [
            (
                Method::Post,
                "/api/v1/suppression",
                Route::SuppressionAdd,
                Permission::SuppressionManage,
            ),
            (
                Method::Post,
                "/api/v1/suppression/check",
                Route::SuppressionCheck,
                Permission::SuppressionRead,
            ),
            (
                Method::Post,
                "/api/v1/suppression/lift",
                Route::SuppressionLift,
                Permission::SuppressionLift,
            ),
            (
                Method::Get,
                "/api/v1/suppression/stats",
                Route::SuppressionStats,
                Permission::SuppressionRead,
            ),
        ] {
            assert_eq!(route(m, p).unwrap(), r);
            assert_eq!(r.permission(false), Some(perm));
        }
        // Never a number in a URL: no GET of a single entry.
        assert_eq!(
            route(Method::Get, "/api/v1/suppression")
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            route(Method::Get, "/api/v1/suppression/check")
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            route(Method::Get, "/api/v1/suppression/13812345678")
                .unwrap_err()
                .status,
            404
        );
        let lifters: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|r| r.allows(Permission::SuppressionLift))
            .collect();
        assert_eq!(lifters, [Role::Compliance]);
    }

    #[test]
    fn token_names() {
        assert!(valid_token_name("运维-张三"));
        assert!(!valid_token_name(""));
        assert!(!valid_token_name("a\nb"));
        assert!(!valid_token_name(&"x".repeat(65)));
    }
}
