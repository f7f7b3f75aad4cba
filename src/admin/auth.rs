//! Bearer tokens, roles and permissions, and failed-login rate limiting.
//!
//! A token is `vct_<id>_<secret>`: `id` is 10 hex digits, public (it appears in lists and the
//! audit log); `secret` is 32 random bytes in hex. The store keeps only a random 16-byte salt and
//! HMAC-SHA-256(salt, secret), compared in constant time. Unknown id, wrong secret, revoked and
//! expired tokens all get the same 401, so a caller learns nothing about which ids exist.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use aws_lc_rs::{constant_time, hmac, rand};
use zeroize::Zeroizing;

use crate::config::LoginLimitConfig;
use crate::ids::TokenId;
use crate::store::tokens::TokenRow;

/// What a token may do, as a bundle of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs the appliance: tokens, configuration, scripts publishing.
    Admin,
    /// Runs campaigns: scripts, tasks, numbers, call results, playback for quality checks.
    Operator,
    /// Reads: call results, audit log, playback for quality inspection; changes nothing.
    Auditor,
    /// Data-protection officer: erasure requests, receipts, audit log.
    Compliance,
}

impl Role {
    /// Every role, in table order.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Auditor, Role::Compliance];

    /// Lower-case name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Auditor => "auditor",
            Self::Compliance => "compliance",
        }
    }

    /// Parses the lower-case name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether this role holds `p`. The one source of truth for the permission table.
    pub fn allows(self, p: Permission) -> bool {
        use Permission as P;
        use Role as R;
        match p {
            P::StatusRead => true,
            P::MetricsRead => matches!(self, R::Admin | R::Operator | R::Auditor),
            P::TokensManage | P::ConfigManage | P::ScriptsPublish => self == R::Admin,
            P::AuditRead | P::ErasureRead => matches!(self, R::Admin | R::Auditor | R::Compliance),
            P::ScriptsRead | P::TasksRead | P::CallsRead => {
                matches!(self, R::Admin | R::Operator | R::Auditor)
            }
            P::ScriptsWrite | P::TasksWrite => matches!(self, R::Admin | R::Operator),
            P::RecordingsPlay => matches!(self, R::Operator | R::Auditor | R::Compliance),
            P::ErasureRequest => self == R::Compliance,
            // Least privilege: the people who take do-not-call requests (operators) and
            // data protection (compliance) add and check; auditors read; only compliance
            // lifts, on re-recorded consent. Admins run the box, not customers' data.
            P::SuppressionRead => matches!(self, R::Operator | R::Auditor | R::Compliance),
            P::SuppressionManage => matches!(self, R::Operator | R::Compliance),
            P::SuppressionLift => self == R::Compliance,
        }
    }
}

/// One thing an API caller may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Daemon status, own identity.
    StatusRead,
    /// `/metrics` when `admin.metrics_require_token` is set.
    MetricsRead,
    /// Create, list and revoke tokens.
    TokensManage,
    /// Log level, reload.
    ConfigManage,
    /// Read the audit log.
    AuditRead,
    /// Read scripts.
    ScriptsRead,
    /// Create and edit script drafts.
    ScriptsWrite,
    /// Publish a script version (immutable once published).
    ScriptsPublish,
    /// Read tasks and their numbers' status.
    TasksRead,
    /// Create, import, start, pause tasks.
    TasksWrite,
    /// Read call results, levels, tags (no personal data).
    CallsRead,
    /// Decrypt and play or download recordings and transcripts (audited).
    RecordingsPlay,
    /// File an erasure request.
    ErasureRequest,
    /// Read erasure requests and receipts.
    ErasureRead,
    /// Check a number against the suppression (do-not-call) list; counts by source.
    SuppressionRead,
    /// Add a number to the suppression list.
    SuppressionManage,
    /// Take a number off the suppression list (consent re-recorded).
    SuppressionLift,
}

impl Permission {
    /// Every permission, in table order.
    pub const ALL: [Permission; 17] = [
        Permission::StatusRead,
        Permission::MetricsRead,
        Permission::TokensManage,
        Permission::ConfigManage,
        Permission::AuditRead,
        Permission::ScriptsRead,
        Permission::ScriptsWrite,
        Permission::ScriptsPublish,
        Permission::TasksRead,
        Permission::TasksWrite,
        Permission::CallsRead,
        Permission::RecordingsPlay,
        Permission::ErasureRequest,
        Permission::ErasureRead,
        Permission::SuppressionRead,
        Permission::SuppressionManage,
        Permission::SuppressionLift,
    ];

    /// Dotted name as documented and returned by `whoami`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StatusRead => "status.read",
            Self::MetricsRead => "metrics.read",
            Self::TokensManage => "tokens.manage",
            Self::ConfigManage => "config.manage",
            Self::AuditRead => "audit.read",
            Self::ScriptsRead => "scripts.read",
            Self::ScriptsWrite => "scripts.write",
            Self::ScriptsPublish => "scripts.publish",
            Self::TasksRead => "tasks.read",
            Self::TasksWrite => "tasks.write",
            Self::CallsRead => "calls.read",
            Self::RecordingsPlay => "recordings.play",
            Self::ErasureRequest => "erasure.request",
            Self::ErasureRead => "erasure.read",
            Self::SuppressionRead => "suppression.read",
            Self::SuppressionManage => "suppression.manage",
            Self::SuppressionLift => "suppression.lift",
        }
    }
}

/// The permission table as Markdown, exactly as docs/admin-api.md shows it (a test compares).
pub fn permission_table_markdown() -> String {
    let mut s = String::from("| permission |");
    for r in Role::ALL {
        s.push_str(&format!(" {} |", r.as_str()));
    }
    s.push_str("\n|---|");
    for _ in Role::ALL {
        s.push_str(":-:|");
    }
    s.push('\n');
    for p in Permission::ALL {
        s.push_str(&format!("| `{}` |", p.as_str()));
        for r in Role::ALL {
            s.push_str(if r.allows(p) { " ✓ |" } else { "   |" });
        }
        s.push('\n');
    }
    s
}

/// A freshly minted token: the row to store and the text to show once.
pub struct MintedToken {
    /// Row for the store (salt and hash only).
    pub row: TokenRow,
    /// `vct_<id>_<secret>`, shown to the operator once and never again.
    pub bearer: Zeroizing<String>,
}

/// Why minting failed.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RngError;

fn secret_hash(salt: &[u8; 16], secret: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
    let tag = hmac::sign(&key, secret);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Makes a new token for `role`.
pub fn mint(
    name: &str,
    role: Role,
    now_ms: i64,
    created_by: &str,
    expires_at_ms: Option<i64>,
) -> Result<MintedToken, RngError> {
    let mut id = [0u8; 5];
    let mut salt = [0u8; 16];
    let mut secret = Zeroizing::new([0u8; 32]);
    rand::fill(&mut id).map_err(|_| RngError)?;
    rand::fill(&mut salt).map_err(|_| RngError)?;
    rand::fill(&mut secret[..]).map_err(|_| RngError)?;
    let secret_hex = Zeroizing::new(hex::encode(&secret[..]));
    let id = hex::encode(id);
    let bearer = Zeroizing::new(format!("vct_{id}_{}", secret_hex.as_str()));
    Ok(MintedToken {
        row: TokenRow {
            id: TokenId(id),
            name: name.to_owned(),
            role: role.as_str().to_owned(),
            salt,
            secret_hash: secret_hash(&salt, secret_hex.as_bytes()),
            created_at_ms: now_ms,
            created_by: Some(created_by.to_owned()),
            expires_at_ms,
            last_used_at_ms: None,
            revoked_at_ms: None,
        },
        bearer,
    })
}

/// Splits `vct_<id>_<secret>` into id and secret, checking the shape only.
pub fn parse_bearer(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("vct_")?;
    let (id, secret) = rest.split_once('_')?;
    let hexlen = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexlen(id, 10) && hexlen(secret, 64)).then_some((id, secret))
}

/// Whether `secret` matches the stored row and the row is usable at `now_ms`.
pub fn verify(row: &TokenRow, secret: &str, now_ms: i64) -> bool {
    let h = secret_hash(&row.salt, secret.as_bytes());
    let matches = constant_time::verify_slices_are_equal(&h, &row.secret_hash).is_ok();
    matches && row.is_active(now_ms)
}

/// The most client addresses the limiter tracks; the oldest entry is evicted past this.
pub const LIMITER_CAPACITY: usize = 4096;

#[derive(Debug, Default)]
struct Client {
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
    last_seen: Option<Instant>,
}

/// Counts failed logins per client address; locks an address out after too many.
///
/// Sans-IO: time comes in as `now`. Bounded: at most [`LIMITER_CAPACITY`] addresses, the least
/// recently seen evicted first.
#[derive(Debug)]
pub struct LoginLimiter {
    cfg: LoginLimitConfig,
    clients: HashMap<IpAddr, Client>,
}

impl LoginLimiter {
    /// A limiter with these settings.
    pub fn new(cfg: LoginLimitConfig) -> Self {
        Self {
            cfg,
            clients: HashMap::new(),
        }
    }

    /// Applies new settings (SIGHUP); existing lockouts stay.
    pub fn reconfigure(&mut self, cfg: LoginLimitConfig) {
        self.cfg = cfg;
    }

    /// `Some(remaining)` while `ip` is locked out.
    pub fn locked(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let c = self.clients.get_mut(&ip)?;
        match c.locked_until {
            Some(t) if t > now => Some(t - now),
            Some(_) => {
                c.locked_until = None;
                c.failures.clear();
                None
            }
            None => None,
        }
    }

    /// Records a failed login; returns true if this failure locked the address out.
    pub fn failure(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.clients.contains_key(&ip) && self.clients.len() >= LIMITER_CAPACITY {
            self.evict_oldest();
        }
        let window = Duration::from_secs(self.cfg.window_secs);
        let c = self.clients.entry(ip).or_default();
        c.last_seen = Some(now);
        while c
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            c.failures.pop_front();
        }
        c.failures.push_back(now);
        if c.failures.len() >= self.cfg.max_failures as usize {
            c.locked_until = Some(now + Duration::from_secs(self.cfg.lockout_secs));
            c.failures.clear();
            true
        } else {
            false
        }
    }

    /// Addresses tracked (for the metric).
    pub fn tracked(&self) -> usize {
        self.clients.len()
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .clients
            .iter()
            .min_by_key(|(_, c)| c.last_seen)
            .map(|(ip, _)| *ip);
        if let Some(ip) = oldest {
            self.clients.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Clock;

    #[test]
    fn minted_token_verifies_and_wrong_ones_do_not() {
        let t = mint("ops", Role::Operator, 1000, "cli", None).unwrap();
        let (id, secret) = parse_bearer(&t.bearer).unwrap();
        assert_eq!(id, t.row.id.0);
        assert!(verify(&t.row, secret, 2000));
        let mut wrong = secret.to_owned();
        wrong.replace_range(0..1, if &secret[..1] == "0" { "1" } else { "0" });
        assert!(!verify(&t.row, &wrong, 2000));
        let mut revoked = t.row.clone();
        revoked.revoked_at_ms = Some(1500);
        assert!(!verify(&revoked, secret, 2000));
        let mut expired = t.row.clone();
        expired.expires_at_ms = Some(1500);
        assert!(!verify(&expired, secret, 2000));
        assert!(!t.bearer.contains(&hex::encode(t.row.secret_hash)));
    }

    #[test]
    fn bearer_shape_is_checked() {
        assert!(parse_bearer("vct_0123456789_").is_none());
        assert!(parse_bearer(&format!("vct_012345678_{}", "a".repeat(64))).is_none());
        assert!(parse_bearer(&format!("vct_0123456789_{}", "g".repeat(64))).is_none());
        assert!(parse_bearer(&format!("vct_0123456789_{}", "a".repeat(64))).is_some());
    }

    #[test]
    fn limiter_locks_out_after_max_failures_and_releases() {
        let cfg = LoginLimitConfig {
            max_failures: 3,
            window_secs: 60,
            lockout_secs: 300,
        };
        let mut l = LoginLimiter::new(cfg);
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let t0 = crate::time::SystemClock.mono();
        assert!(!l.failure(ip, t0));
        assert!(!l.failure(ip, t0 + Duration::from_secs(1)));
        assert!(l.locked(ip, t0).is_none());
        assert!(l.failure(ip, t0 + Duration::from_secs(2)));
        assert_eq!(
            l.locked(ip, t0 + Duration::from_secs(2)),
            Some(Duration::from_secs(300))
        );
        assert!(l.locked("10.0.0.8".parse().unwrap(), t0).is_none());
        assert!(l.locked(ip, t0 + Duration::from_secs(303)).is_none());
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let cfg = LoginLimitConfig {
            max_failures: 2,
            window_secs: 10,
            lockout_secs: 60,
        };
        let mut l = LoginLimiter::new(cfg);
        let ip: IpAddr = "::1".parse().unwrap();
        let t0 = crate::time::SystemClock.mono();
        assert!(!l.failure(ip, t0));
        assert!(!l.failure(ip, t0 + Duration::from_secs(11)));
        assert!(l.failure(ip, t0 + Duration::from_secs(12)));
    }

    #[test]
    fn limiter_is_bounded() {
        let mut l = LoginLimiter::new(LoginLimitConfig::default());
        let t0 = crate::time::SystemClock.mono();
        for i in 0..(LIMITER_CAPACITY as u32 + 100) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.failure(ip, t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(l.tracked(), LIMITER_CAPACITY);
    }

    #[test]
    fn permission_table_has_expected_shape() {
        assert!(Role::Admin.allows(Permission::TokensManage));
        assert!(!Role::Operator.allows(Permission::TokensManage));
        assert!(Role::Compliance.allows(Permission::ErasureRequest));
        assert!(!Role::Admin.allows(Permission::ErasureRequest));
        assert!(!Role::Auditor.allows(Permission::TasksWrite));
        for r in Role::ALL {
            assert!(r.allows(Permission::StatusRead));
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }
}
