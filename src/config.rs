//! Typed configuration: TOML, unknown keys rejected with their path, values validated with the
//! key and what is allowed, embedded defaults for a laptop demo.
//!
//! Every key is documented in the shipped `packaging/vaultcall.toml`; a test checks that the file
//! names every key this module knows and that `check-config` accepts it.
//!
//! Relative paths are resolved against the data directory, which is `paths.data_dir` if set, else
//! the first entry of `$STATE_DIRECTORY` (systemd), else `./var`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the embedded defaults put data when neither config nor systemd says otherwise.
pub const DEFAULT_DATA_DIR: &str = "./var";
/// Where the packaged daemon reads its config.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/vaultcall/vaultcall.toml";

/// Why a config could not be used. Each variant names the key path where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key or wrong type.
    #[error("{key}: {message}")]
    Parse {
        /// Dotted key path ("." when the error is not inside a key).
        key: String,
        /// What the parser said.
        message: String,
    },
    /// A value parsed but is not allowed.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted key path.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// The key path the error is about.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Read { .. } => None,
            Self::Parse { key, .. } | Self::Invalid { key, .. } => Some(key),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directories.
    pub paths: PathsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Start, stop, reload.
    pub lifecycle: LifecycleConfig,
    /// SQLite database.
    pub store: StoreConfig,
    /// Admin HTTP API and web page.
    pub admin: AdminConfig,
    /// SIP signalling.
    pub sip: SipConfig,
    /// Keys and encrypted storage.
    pub vault: VaultConfig,
    /// How long personal data is kept.
    pub retention: RetentionConfig,
    /// The audit log.
    pub audit: AuditConfig,
}

/// Directories.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// State directory (database, recordings, keys made by the demo).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Runtime directory (the admin server's private socket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_dir: Option<PathBuf>,
}

/// Log verbosity, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Normal operation (one line per call).
    Info,
    /// State transitions.
    Debug,
    /// Everything, packets included (still no PII).
    Trace,
}

impl LogLevel {
    /// The `log` crate's filter for this level.
    pub fn filter(self) -> log::LevelFilter {
        match self {
            Self::Error => log::LevelFilter::Error,
            Self::Warn => log::LevelFilter::Warn,
            Self::Info => log::LevelFilter::Info,
            Self::Debug => log::LevelFilter::Debug,
            Self::Trace => log::LevelFilter::Trace,
        }
    }

    /// The inverse of [`LogLevel::filter`]; `Off` maps to `Error` (we never turn errors off).
    pub fn from_filter(f: log::LevelFilter) -> Self {
        match f {
            log::LevelFilter::Off | log::LevelFilter::Error => Self::Error,
            log::LevelFilter::Warn => Self::Warn,
            log::LevelFilter::Info => Self::Info,
            log::LevelFilter::Debug => Self::Debug,
            log::LevelFilter::Trace => Self::Trace,
        }
    }

    /// Lower-case name, as in config and API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }

    /// Parses the lower-case name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "error" => Self::Error,
            "warn" => Self::Warn,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => return None,
        })
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// The journal when stderr is connected to it (running under systemd), else stderr.
    Auto,
    /// The journal's native protocol; start fails if its socket is missing.
    Journal,
    /// Plain text lines on stderr.
    Stderr,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Verbosity; changeable at run time through the admin API and on SIGHUP.
    pub level: LogLevel,
    /// Destination.
    pub target: LogTarget,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            target: LogTarget::Auto,
        }
    }
}

/// Start, stop, reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// After SIGTERM, how long in-flight work may take to finish before it is ended.
    pub shutdown_grace_secs: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            shutdown_grace_secs: 30,
        }
    }
}

/// SQLite `synchronous` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: a commit survives power loss.
    Full,
    /// fsync at checkpoints: a commit survives a process crash, not always a power loss.
    Normal,
}

/// SQLite database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Database file; relative to the data directory.
    pub path: PathBuf,
    /// How long a connection waits for a lock before failing.
    pub busy_timeout_ms: u64,
    /// Durability of a commit.
    pub synchronous: Synchronous,
    /// Bound of the writer thread's queue.
    pub write_queue: usize,
    /// Read-only connections kept open for queries.
    pub read_connections: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("vaultcall.db"),
            busy_timeout_ms: 5000,
            synchronous: Synchronous::Full,
            write_queue: 1024,
            read_connections: 4,
        }
    }
}

/// Admin HTTP API and web page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listen address. Anything but a loopback address requires `admin.tls`.
    pub listen: SocketAddr,
    /// Threads that execute API requests.
    pub threads: usize,
    /// Simultaneous client connections; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Largest request line plus headers accepted (431 above).
    pub max_header_bytes: usize,
    /// A connection idle this long (or this slow to send a request) is closed.
    pub idle_timeout_secs: u64,
    /// Whether `/metrics` needs a token (role `auditor` or `admin`).
    pub metrics_require_token: bool,
    /// TLS with rustls; required for a non-loopback `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Failed-login rate limiting.
    pub login_limit: LoginLimitConfig,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            threads: 4,
            max_connections: 64,
            max_body_bytes: 1 << 20,
            max_header_bytes: 16 << 10,
            idle_timeout_secs: 30,
            metrics_require_token: false,
            tls: None,
            login_limit: LoginLimitConfig::default(),
        }
    }
}

/// TLS certificate and key (PEM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first; relative to the data directory.
    pub cert_file: PathBuf,
    /// Private key (PKCS#8, SEC1 or PKCS#1); must not be readable by group or others.
    pub key_file: PathBuf,
}

/// Failed-login rate limiting, per client address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginLimitConfig {
    /// Failures allowed within `window_secs` before the address is locked out.
    pub max_failures: u32,
    /// Window over which failures are counted.
    pub window_secs: u64,
    /// How long a locked-out address gets 429.
    pub lockout_secs: u64,
}

impl Default for LoginLimitConfig {
    fn default() -> Self {
        Self {
            max_failures: 10,
            window_secs: 60,
            lockout_secs: 300,
        }
    }
}

/// SIP signalling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Local UDP address for SIP.
    pub listen: SocketAddr,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
        }
    }
}

/// Keys and encrypted storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultConfig {
    /// Master key-encryption key (32 random bytes, mode 0600); relative to the data directory.
    /// A systemd credential named `master.key` takes precedence.
    pub master_key_file: PathBuf,
    /// Create the master key if it is missing (demo); production packages create it at install
    /// and set this to false so a lost key is an error, not a silent new key.
    pub create_master_key: bool,
    /// Country calling code for numbers written without one (`138…`, `010…`), 1–3 digits.
    pub default_country_code: String,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            master_key_file: PathBuf::from("master.key"),
            create_master_key: true,
            default_country_code: "86".to_owned(),
        }
    }
}

/// Retention periods per class of personal data, in days; 0 keeps the class until erasure.
/// A daily sweep deletes what is older.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Call recordings (audio files), by creation time.
    pub recordings_days: u32,
    /// Transcripts: transcript files and the text of turns, by call start.
    pub transcripts_days: u32,
    /// Call metadata: call rows with their turns; subjects left with no data lose their key.
    pub call_metadata_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            recordings_days: 180,
            transcripts_days: 180,
            call_metadata_days: 365,
        }
    }
}

/// The audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// How often the chain's head (id and hash) is written to the journal, as an anchor that
    /// `vaultcall audit verify --checkpoint` checks the database against.
    pub checkpoint_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval_secs: 3600,
        }
    }
}

/// Directories resolved from config and environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPaths {
    /// State directory.
    pub data_dir: PathBuf,
    /// Runtime directory.
    pub runtime_dir: PathBuf,
}

impl Config {
    /// Parses TOML text; `source` names the file in errors.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Parse {
            key: ".".to_owned(),
            message: one_line(&e.to_string()),
        })?;
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Parse {
                key,
                message: one_line(e.into_inner().message()),
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Checks values that the types alone do not constrain.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let a = &self.admin;
        if !a.listen.ip().is_loopback() && a.tls.is_none() {
            return Err(ConfigError::invalid(
                "admin.listen",
                format!(
                    "{} is not a loopback address, so admin.tls (cert_file, key_file) is required; \
                     bind to 127.0.0.1 or ::1 to run without TLS",
                    a.listen
                ),
            ));
        }
        range("admin.threads", a.threads as u64, 1, 64)?;
        range("admin.max_connections", a.max_connections as u64, 1, 4096)?;
        range(
            "admin.max_body_bytes",
            a.max_body_bytes as u64,
            1024,
            64 << 20,
        )?;
        range(
            "admin.max_header_bytes",
            a.max_header_bytes as u64,
            1024,
            1 << 20,
        )?;
        range("admin.idle_timeout_secs", a.idle_timeout_secs, 1, 3600)?;
        let l = &a.login_limit;
        range(
            "admin.login_limit.max_failures",
            u64::from(l.max_failures),
            1,
            10_000,
        )?;
        range("admin.login_limit.window_secs", l.window_secs, 1, 86_400)?;
        range("admin.login_limit.lockout_secs", l.lockout_secs, 1, 86_400)?;
        if let Some(tls) = &a.tls {
            nonempty_path("admin.tls.cert_file", &tls.cert_file)?;
            nonempty_path("admin.tls.key_file", &tls.key_file)?;
        }
        range(
            "lifecycle.shutdown_grace_secs",
            self.lifecycle.shutdown_grace_secs,
            1,
            3600,
        )?;
        let s = &self.store;
        nonempty_path("store.path", &s.path)?;
        range("store.busy_timeout_ms", s.busy_timeout_ms, 1, 600_000)?;
        range("store.write_queue", s.write_queue as u64, 1, 1 << 20)?;
        range("store.read_connections", s.read_connections as u64, 1, 64)?;
        nonempty_path("vault.master_key_file", &self.vault.master_key_file)?;
        let cc = &self.vault.default_country_code;
        if cc.is_empty()
            || cc.len() > 3
            || !cc.bytes().all(|b| b.is_ascii_digit())
            || cc.starts_with('0')
        {
            return Err(ConfigError::invalid(
                "vault.default_country_code",
                "allowed: 1 to 3 digits without a leading 0 or +, e.g. \"86\"",
            ));
        }
        let r = &self.retention;
        for (key, v) in [
            ("retention.recordings_days", r.recordings_days),
            ("retention.transcripts_days", r.transcripts_days),
            ("retention.call_metadata_days", r.call_metadata_days),
        ] {
            range(key, u64::from(v), 0, 36_500)?;
        }
        if r.call_metadata_days != 0 {
            for (key, v) in [
                ("retention.recordings_days", r.recordings_days),
                ("retention.transcripts_days", r.transcripts_days),
            ] {
                if v == 0 || v > r.call_metadata_days {
                    return Err(ConfigError::invalid(
                        key,
                        format!(
                            "{v} keeps data longer than retention.call_metadata_days ({}), whose expiry deletes it with the call; allowed: 1 to {}",
                            r.call_metadata_days, r.call_metadata_days
                        ),
                    ));
                }
            }
        }
        range(
            "audit.checkpoint_interval_secs",
            self.audit.checkpoint_interval_secs,
            10,
            86_400,
        )?;
        if self.sip.listen.port() == self.admin.listen.port()
            && self.sip.listen.port() != 0
            && self.sip.listen.ip() == self.admin.listen.ip()
        {
            // Different protocols (UDP/TCP) could share it, but it is almost always a typo.
            return Err(ConfigError::invalid(
                "sip.listen",
                "must not use the same address and port as admin.listen",
            ));
        }
        for (key, p) in [
            ("paths.data_dir", &self.paths.data_dir),
            ("paths.runtime_dir", &self.paths.runtime_dir),
        ] {
            if let Some(p) = p {
                nonempty_path(key, p)?;
            }
        }
        Ok(())
    }

    /// Resolves the data and runtime directories from config, then systemd's environment
    /// (`STATE_DIRECTORY`, `RUNTIME_DIRECTORY`), then the demo default.
    pub fn resolve_paths(&self, env: &dyn Fn(&str) -> Option<String>) -> ResolvedPaths {
        let first = |var: &str| {
            env(var)
                .and_then(|v| v.split(':').next().map(str::to_owned))
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let data_dir = self
            .paths
            .data_dir
            .clone()
            .or_else(|| first("STATE_DIRECTORY"))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let runtime_dir = self
            .paths
            .runtime_dir
            .clone()
            .map(|p| data_dir.join(p))
            .or_else(|| first("RUNTIME_DIRECTORY"))
            .unwrap_or_else(|| data_dir.join("run"));
        ResolvedPaths {
            data_dir,
            runtime_dir,
        }
    }

    /// A config with every optional section filled in, for documentation checks.
    pub fn fully_specified_example() -> Self {
        let mut c = Self::default();
        c.paths.data_dir = Some(PathBuf::from("/var/lib/vaultcall"));
        c.paths.runtime_dir = Some(PathBuf::from("/run/vaultcall"));
        c.admin.tls = Some(TlsConfig {
            cert_file: PathBuf::from("/etc/vaultcall/admin-cert.pem"),
            key_file: PathBuf::from("/etc/vaultcall/admin-key.pem"),
        });
        c
    }

    /// Every leaf key path ("admin.tls.cert_file", …) of a fully specified config.
    pub fn key_paths() -> Vec<String> {
        let value = toml::Value::try_from(Self::fully_specified_example())
            .expect("a config always serialises to a TOML table");
        let mut out = Vec::new();
        collect_keys("", &value, &mut out);
        out
    }
}

fn collect_keys(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                collect_keys(&p, v, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

/// Resolves a configured path against the data directory.
pub fn under(data_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        data_dir.join(p)
    }
}

fn range(key: &str, v: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("{v} is out of range; allowed: {min} to {max}"),
        ))
    }
}

fn nonempty_path(key: &str, p: &Path) -> Result<(), ConfigError> {
    if p.as_os_str().is_empty() {
        Err(ConfigError::invalid(
            key,
            "must not be empty; allowed: a file path",
        ))
    } else {
        Ok(())
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn empty_file_is_the_embedded_defaults() {
        let c = Config::from_toml("").expect("empty config");
        assert_eq!(c, Config::default());
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.sip.listen.to_string(), "127.0.0.1:5060");
        let p = c.resolve_paths(&no_env);
        assert_eq!(p.data_dir, PathBuf::from("./var"));
        assert_eq!(p.runtime_dir, PathBuf::from("./var/run"));
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let e = Config::from_toml("[admin.login_limit]\nmax_failurez = 3\n").unwrap_err();
        assert_eq!(e.key(), Some("admin.login_limit.max_failurez"), "{e}");
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = Config::from_toml("[nonsense]\n").unwrap_err();
        assert_eq!(e.key(), Some("nonsense"), "{e}");
    }

    #[test]
    fn bad_enum_value_names_key_and_allowed_values() {
        let e = Config::from_toml("[log]\nlevel = \"loud\"\n").unwrap_err();
        assert_eq!(e.key(), Some("log.level"));
        let msg = e.to_string();
        assert!(msg.contains("trace") && msg.contains("error"), "{msg}");
    }

    #[test]
    fn out_of_range_names_key_and_range() {
        let e = Config::from_toml("[admin]\nthreads = 0\n").unwrap_err();
        assert_eq!(e.key(), Some("admin.threads"));
        assert!(e.to_string().contains("1 to 64"), "{e}");
    }

    #[test]
    fn wrong_type_names_key() {
        let e = Config::from_toml("[lifecycle]\nshutdown_grace_secs = \"soon\"\n").unwrap_err();
        assert_eq!(e.key(), Some("lifecycle.shutdown_grace_secs"), "{e}");
    }

    #[test]
    fn non_loopback_admin_requires_tls() {
        let e = Config::from_toml("[admin]\nlisten = \"0.0.0.0:8443\"\n").unwrap_err();
        assert_eq!(e.key(), Some("admin.listen"));
        let ok = Config::from_toml(
            "[admin]\nlisten = \"0.0.0.0:8443\"\n[admin.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
        assert!(Config::from_toml("[admin]\nlisten = \"[::1]:8080\"\n").is_ok());
    }

    #[test]
    fn syntax_error_is_one_line() {
        let e = Config::from_toml("[admin\n").unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn systemd_directories_are_used_when_config_is_silent() {
        let env = |k: &str| match k {
            "STATE_DIRECTORY" => Some("/var/lib/vaultcall".to_owned()),
            "RUNTIME_DIRECTORY" => Some("/run/vaultcall:/run/other".to_owned()),
            _ => None,
        };
        let p = Config::default().resolve_paths(&env);
        assert_eq!(p.data_dir, PathBuf::from("/var/lib/vaultcall"));
        assert_eq!(p.runtime_dir, PathBuf::from("/run/vaultcall"));
        let mut c = Config::default();
        c.paths.data_dir = Some(PathBuf::from("/srv/vc"));
        assert_eq!(c.resolve_paths(&env).data_dir, PathBuf::from("/srv/vc"));
    }

    #[test]
    fn retention_periods_must_nest() {
        let e = Config::from_toml("[retention]\nrecordings_days = 400\n").unwrap_err();
        assert_eq!(e.key(), Some("retention.recordings_days"), "{e}");
        assert!(
            Config::from_toml(
                "[retention]\nrecordings_days = 0\ntranscripts_days = 0\ncall_metadata_days = 0\n"
            )
            .is_ok()
        );
        let e = Config::from_toml("[vault]\ndefault_country_code = \"+86\"\n").unwrap_err();
        assert_eq!(e.key(), Some("vault.default_country_code"), "{e}");
    }

    #[test]
    fn key_paths_cover_nested_sections() {
        let keys = Config::key_paths();
        for k in [
            "admin.tls.cert_file",
            "admin.login_limit.lockout_secs",
            "store.synchronous",
        ] {
            assert!(keys.iter().any(|x| x == k), "missing {k} in {keys:?}");
        }
    }
}
