//! The local admin HTTP API (and, later, its web page).
//!
//! ```text
//!  client ──TCP/TLS──▶ front (tokio, rustls 0.23, limits) ──Unix socket──▶ tiny_http ──▶ api::handle
//! ```
//! Everything under `/api/` needs a bearer token; the token is checked before the route is
//! even looked up, so an unauthenticated caller gets 401 for every path and learns nothing
//! about what exists. Roles and permissions: [`auth`]; the table is in docs/admin-api.md.

pub mod api;
pub mod auth;
pub mod cli;
pub mod front;
pub mod server;
mod suppression_api;
pub mod tls;
mod vault_api;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::runtime::control::ControlHandle;
use crate::runtime::lifecycle::Lifecycle;
use crate::store::Store;
use crate::telemetry::metrics::{self, Counter, Family, Histogram};
use crate::time::Clock;

/// API settings that SIGHUP may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSettings {
    /// `/metrics` needs a token.
    pub metrics_require_token: bool,
    /// Largest body the handlers read (the front enforces it first).
    pub max_body_bytes: usize,
}

/// Metrics of the API handlers.
pub struct ApiMetrics {
    /// Requests by route, method and status.
    pub requests: Arc<Family<Counter>>,
    /// Handling time by route.
    pub latency: Arc<Family<Histogram>>,
    /// Failed authentications by reason.
    pub auth_failures: Arc<Family<Counter>>,
}

impl ApiMetrics {
    /// Registers the families in the global registry.
    pub fn register() -> Self {
        let r = metrics::global();
        Self {
            requests: r.counter(
                "vaultcall_admin_requests_total",
                "Admin API requests by route, method and status.",
                &["route", "method", "status"],
            ),
            latency: r.histogram(
                "vaultcall_admin_request_seconds",
                "Admin API request handling time by route.",
                &["route"],
                metrics::LATENCY_BUCKETS,
            ),
            auth_failures: r.counter(
                "vaultcall_admin_auth_failures_total",
                "Rejected API authentications by reason (missing, invalid, locked_out).",
                &["reason"],
            ),
        }
    }
}

/// Everything the API handlers need, shared by the worker threads.
pub struct AdminContext {
    /// Database.
    pub store: Store,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Lifecycle phase and in-flight work.
    pub lifecycle: Arc<Lifecycle>,
    /// Reloadable settings.
    pub settings: RwLock<LiveSettings>,
    /// Failed-login limiter.
    pub limiter: Mutex<auth::LoginLimiter>,
    /// Channel to the main loop (reload); `None` in tests without an app.
    pub control: Option<ControlHandle>,
    /// Metrics.
    pub metrics: ApiMetrics,
    /// Whether clients reach the API over TLS (adds HSTS).
    pub tls: bool,
    /// Where the config came from, for `/api/v1/status`.
    pub config_source: String,
    /// When each token's `last_used_at` was last written, to write it at most once a minute.
    pub touched: Mutex<HashMap<String, Instant>>,
    /// The SIP endpoint, for trunk status; `None` in tests without one.
    pub sip: Option<crate::runtime::sip_endpoint::EndpointHandle>,
    /// The records service (erasure, playback); `None` only in tests without a vault.
    pub records: Option<Arc<crate::records::Records>>,
}
