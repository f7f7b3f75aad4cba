//! Typed configuration: TOML, unknown keys rejected with their path, values validated with the
//! key and what is allowed, embedded defaults for a laptop demo.
//!
//! Every key is documented in the shipped `packaging/vaultcall.toml`; a test checks that the file
//! names every key this module knows and that `check-config` accepts it.
//!
//! Relative paths are resolved against the data directory, which is `paths.data_dir` if set, else
//! the first entry of `$STATE_DIRECTORY` (systemd), else `./var`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
    /// RTP media.
    pub media: MediaConfig,
    /// Keys and encrypted storage.
    pub vault: VaultConfig,
    /// How long personal data is kept.
    pub retention: RetentionConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// Local speech engine: ONNX Runtime, models, ASR, VAD, TTS, announcements.
    pub speech: SpeechConfig,
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
    /// Local address for SIP over UDP.
    pub listen: SocketAddr,
    /// Address shown in Via, Contact and SDP when `listen` is a wildcard (0.0.0.0 / ::).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_addr: Option<std::net::IpAddr>,
    /// RFC 3261 T1 (round-trip estimate), milliseconds.
    pub t1_ms: u64,
    /// RFC 3261 T2 (longest retransmit interval), milliseconds.
    pub t2_ms: u64,
    /// RFC 3261 T4 (longest time a message lives in the network), milliseconds.
    pub t4_ms: u64,
    /// Most concurrent SIP transactions (server side answers 503 beyond).
    pub max_transactions: usize,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Trunks, in failover order.
    pub trunks: Vec<TrunkConfig>,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            public_addr: None,
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            max_transactions: 10_000,
            user_agent: format!("vaultcall/{}", env!("CARGO_PKG_VERSION")),
            trunks: Vec::new(),
        }
    }
}

/// SIP transport of a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransport {
    /// UDP (RFC 3261 §18).
    Udp,
    /// TCP with Content-Length framing.
    Tcp,
    /// TLS (sips, certificate verification on).
    Tls,
}

/// One SIP trunk (carrier or PBX).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Name used in logs, metrics and `vaultcall dial --trunk`.
    pub name: String,
    /// Host (IP address or DNS name) of the trunk.
    pub host: String,
    /// Port.
    #[serde(default = "default_sip_port")]
    pub port: u16,
    /// Transport.
    #[serde(default = "default_transport")]
    pub transport: TrunkTransport,
    /// Send everything to this `host:port` instead (outbound proxy, loose routing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_proxy: Option<String>,
    /// Digest user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the digest password (mode 0600); never the password itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) for TLS trunks; the system roots when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Register with the trunk.
    #[serde(default)]
    pub register: bool,
    /// Requested registration lifetime, seconds.
    #[serde(default = "default_register_expires")]
    pub register_expires_secs: u32,
    /// Caller ID: the user part of From.
    pub caller_id: String,
    /// Display name in From.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_name: Option<String>,
    /// Codecs in preference order: `pcma`, `pcmu`.
    #[serde(default = "default_codecs")]
    pub codecs: Vec<String>,
    /// Most simultaneous calls on this trunk.
    #[serde(default = "default_max_calls")]
    pub max_calls: u32,
    /// Most new calls per second.
    #[serde(default = "default_cps")]
    pub calls_per_second: u32,
    /// Cancel a ringing call after this many seconds.
    #[serde(default = "default_ring_timeout")]
    pub ring_timeout_secs: u64,
    /// Follow at most this many 3xx redirects (0: a 3xx ends the call).
    #[serde(default)]
    pub max_redirects: u8,
    /// Session interval to request (RFC 4028); 0 turns session timers off.
    #[serde(default = "default_session_expires")]
    pub session_expires_secs: u32,
    /// OPTIONS keepalive interval; 0 turns it off.
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
    /// Overrides of the SIP-status → call-status-code table (`"480" = 4`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub status_map: std::collections::BTreeMap<String, u8>,
    /// Overrides of the Q.850-cause → call-status-code table (`"17" = 8`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub q850_map: std::collections::BTreeMap<String, u8>,
}

impl TrunkConfig {
    /// A UDP trunk with every optional setting at its default (as if only `name`, `host`,
    /// `port` and `caller_id` were written in the config file).
    pub fn new(name: &str, host: &str, port: u16, caller_id: &str) -> Self {
        Self {
            name: name.into(),
            host: host.into(),
            port,
            transport: default_transport(),
            outbound_proxy: None,
            username: None,
            password_file: None,
            ca_file: None,
            register: false,
            register_expires_secs: default_register_expires(),
            caller_id: caller_id.into(),
            caller_name: None,
            codecs: default_codecs(),
            max_calls: default_max_calls(),
            calls_per_second: default_cps(),
            ring_timeout_secs: default_ring_timeout(),
            max_redirects: 0,
            session_expires_secs: default_session_expires(),
            keepalive_secs: default_keepalive(),
            status_map: Default::default(),
            q850_map: Default::default(),
        }
    }
}

fn default_sip_port() -> u16 {
    5060
}
fn default_transport() -> TrunkTransport {
    TrunkTransport::Udp
}
fn default_register_expires() -> u32 {
    3600
}
fn default_codecs() -> Vec<String> {
    vec!["pcma".into(), "pcmu".into()]
}
fn default_max_calls() -> u32 {
    30
}
fn default_cps() -> u32 {
    5
}
fn default_ring_timeout() -> u64 {
    45
}
fn default_session_expires() -> u32 {
    1800
}
fn default_keepalive() -> u64 {
    30
}

/// RTP media: sockets, jitter buffer, NAT handling, taps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Local address the per-call RTP/RTCP sockets bind to.
    pub bind_ip: IpAddr,
    /// First port of the RTP range; even (RTP on even ports, RTCP on the next odd one).
    pub port_min: u16,
    /// Last port of the range (inclusive); each call takes two ports.
    pub port_max: u16,
    /// Symmetric RTP: send to where the peer's packets come from (NAT), and drop packets from
    /// anyone else once latched.
    pub symmetric_rtp: bool,
    /// Smallest jitter buffer depth in ms.
    pub jitter_min_ms: u32,
    /// Jitter buffer cap in ms (the most delay it adds).
    pub jitter_max_ms: u32,
    /// Seconds without inbound RTP before the call is told (0: never).
    pub rtp_timeout_secs: u64,
    /// Mean interval between RTCP reports.
    pub rtcp_interval_secs: u64,
    /// Frames (of one ptime each) a tap consumer may fall behind before its oldest are dropped.
    pub tap_queue_frames: usize,
    /// Most robot audio queued for sending per call, in seconds.
    pub playback_queue_secs: u32,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_min: 20_000,
            port_max: 29_999,
            symmetric_rtp: true,
            jitter_min_ms: 40,
            jitter_max_ms: 200,
            rtp_timeout_secs: 30,
            rtcp_interval_secs: 5,
            tap_queue_frames: 50,
            playback_queue_secs: 300,
        }
    }
}

impl MediaConfig {
    fn validate(&self, sip_listen: SocketAddr) -> Result<(), ConfigError> {
        if self.port_min % 2 != 0 {
            return Err(ConfigError::invalid(
                "media.port_min",
                format!(
                    "{} is odd; allowed: an even port (RTP uses even ports, RTCP the next odd one)",
                    self.port_min
                ),
            ));
        }
        range("media.port_min", u64::from(self.port_min), 1024, 65_534)?;
        if self.port_max <= self.port_min {
            return Err(ConfigError::invalid(
                "media.port_max",
                format!(
                    "{} is out of range; allowed: {} to 65535 (above media.port_min)",
                    self.port_max,
                    u32::from(self.port_min) + 1
                ),
            ));
        }
        let sip = sip_listen.port();
        let same_ip = sip_listen.ip() == self.bind_ip
            || sip_listen.ip().is_unspecified()
            || self.bind_ip.is_unspecified();
        if same_ip && (self.port_min..=self.port_max).contains(&sip) {
            return Err(ConfigError::invalid(
                "media.port_min",
                format!(
                    "the range {}..={} contains sip.listen port {sip}; allowed: a range that \
                     leaves out the SIP port",
                    self.port_min, self.port_max
                ),
            ));
        }
        range(
            "media.jitter_min_ms",
            u64::from(self.jitter_min_ms),
            20,
            1000,
        )?;
        range(
            "media.jitter_max_ms",
            u64::from(self.jitter_max_ms),
            u64::from(self.jitter_min_ms),
            1000,
        )?;
        range("media.rtp_timeout_secs", self.rtp_timeout_secs, 0, 3600)?;
        range("media.rtcp_interval_secs", self.rtcp_interval_secs, 1, 60)?;
        range(
            "media.tap_queue_frames",
            self.tap_queue_frames as u64,
            1,
            3000,
        )?;
        range(
            "media.playback_queue_secs",
            u64::from(self.playback_queue_secs),
            1,
            3600,
        )?;
        Ok(())
    }

    /// Port pairs the range holds: the most concurrent calls with media.
    pub fn port_pairs(&self) -> usize {
        // Even ports p with p + 1 still in the range.
        ((u32::from(self.port_max) + 1).saturating_sub(u32::from(self.port_min)) / 2) as usize
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

/// Where the package installs ONNX Runtime.
pub const PACKAGED_ONNXRUNTIME: &str = "/usr/lib/vaultcall/libonnxruntime.so.1.31.1";
/// Where the package expects the speech models (`make models` output, copied there).
pub const PACKAGED_MODEL_DIR: &str = "/usr/share/vaultcall/models";

/// How model files are checked against the digests in `models/models.toml` at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyModels {
    /// Hash a file only when its size or modification time differs from the last verified
    /// state (kept in the data directory).
    Cached,
    /// Hash every file at every start.
    Full,
}

/// Numeric precision of the Whisper graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AsrPrecision {
    /// float32 weights.
    Fp32,
    /// int8 dynamically quantized MatMul weights (about twice as fast on CPU).
    Int8,
}

/// Local speech engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeechConfig {
    /// Load and verify the speech models at start (exit 78 when one is missing or altered).
    pub enabled: bool,
    /// ONNX Runtime library; default: the packaged one, else `target/onnxruntime` of a
    /// development tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onnxruntime_library: Option<PathBuf>,
    /// Directory written by `make models`; default: the packaged one, else `models/out` of a
    /// development tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_dir: Option<PathBuf>,
    /// `cpu`, or `cuda:N` for GPU N (falls back to the CPU with a warning when CUDA cannot be
    /// used).
    pub execution_provider: String,
    /// Model digest checks at start.
    pub verify_models: VerifyModels,
    /// Speech recognition.
    pub asr: AsrConfig,
    /// Voice activity detection and endpointing.
    pub vad: VadConfig,
    /// Speech synthesis.
    pub tts: TtsConfig,
    /// Early-media announcement classifier.
    pub announcements: AnnouncementConfig,
}

impl Default for SpeechConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            onnxruntime_library: None,
            model_dir: None,
            execution_provider: "cpu".to_owned(),
            verify_models: VerifyModels::Cached,
            asr: AsrConfig::default(),
            vad: VadConfig::default(),
            tts: TtsConfig::default(),
            announcements: AnnouncementConfig::default(),
        }
    }
}

/// Speech recognition (Whisper base).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AsrConfig {
    /// Graph precision.
    pub precision: AsrPrecision,
    /// Worker threads, each owning one encoder and one decoder session.
    pub workers: usize,
    /// ONNX Runtime intra-op threads per session.
    pub threads_per_session: usize,
    /// Most utterances decoded together in one batch.
    pub max_batch: usize,
    /// Bound of the decode queue (requests beyond it are refused, not queued).
    pub queue: usize,
    /// Inverse text normalisation (三千五百元 → 3500元).
    pub itn: bool,
    /// Token cap per second of audio (Whisper loops on unclear audio); plus 10.
    pub max_tokens_per_second: usize,
    /// Shortest encoder window (ms): a short utterance is padded with silence to this length.
    pub min_window_ms: u32,
    /// Beam search width (1 = greedy decoding).
    pub beam_size: usize,
    /// Lowest pinyin similarity (0..1) at which a hotword replaces what was heard.
    pub hotword_threshold: f64,
}

impl Default for AsrConfig {
    fn default() -> Self {
        Self {
            precision: AsrPrecision::Int8,
            workers: 1,
            threads_per_session: 2,
            max_batch: 8,
            queue: 64,
            itn: true,
            max_tokens_per_second: 12,
            min_window_ms: 5_000,
            beam_size: 1,
            hotword_threshold: 0.75,
        }
    }
}

/// Voice activity detection (webrtc-vad) and endpointing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VadConfig {
    /// webrtc-vad aggressiveness 0 (least) to 3 (most eager to call audio non-speech).
    pub aggressiveness: u8,
    /// Voice for this long (ms) starts an utterance (SpeechStarted, barge-in).
    pub speech_start_ms: u32,
    /// Silence for this long (ms) ends an utterance.
    pub hangover_ms: u32,
    /// An utterance is cut at this length (ms).
    pub max_utterance_ms: u32,
    /// Frames quieter than this (dBFS) are silence whatever the VAD says.
    pub energy_floor_dbfs: f64,
    /// Audio kept before the detected start (ms), so the first syllable is not clipped.
    pub pre_roll_ms: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            aggressiveness: 2,
            speech_start_ms: 60,
            hangover_ms: 300,
            max_utterance_ms: 15_000,
            energy_floor_dbfs: -55.0,
            pre_roll_ms: 200,
        }
    }
}

/// Speech synthesis (Kokoro-82M).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TtsConfig {
    /// Voice used when a prompt names none.
    pub voice: String,
    /// Speaking rate (1.0 = the voice's own).
    pub speed: f64,
    /// Worker threads, each owning one session.
    pub workers: usize,
    /// ONNX Runtime intra-op threads per session.
    pub threads_per_session: usize,
    /// Bound of the synthesis queue.
    pub queue: usize,
    /// Prompt cache directory (8 kHz PCM by content hash); relative to the data directory.
    pub cache_dir: PathBuf,
    /// Prompt cache size cap in MiB (least recently used entries go first).
    pub cache_max_mib: u64,
}

impl Default for TtsConfig {
    fn default() -> Self {
        Self {
            voice: "zf_xiaobei".to_owned(),
            speed: 1.0,
            workers: 1,
            threads_per_session: 2,
            queue: 32,
            cache_dir: PathBuf::from("prompt-cache"),
            cache_max_mib: 512,
        }
    }
}

/// Early-media announcement classifier.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnouncementConfig {
    /// Extra keyword rules, checked before the built-in ones.
    pub rules: Vec<AnnouncementRule>,
}

/// One operator keyword rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnouncementRule {
    /// `empty_number`, `powered_off`, `suspended`, `arrears`, `unreachable`, `busy`,
    /// `call_in_restricted` or `other`.
    pub class: String,
    /// Any of these (after normalisation) in the transcript selects the class.
    pub keywords: Vec<String>,
}

impl SpeechConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if crate::speech::onnx::ExecutionProvider::parse(&self.execution_provider).is_none() {
            return Err(ConfigError::invalid(
                "speech.execution_provider",
                format!(
                    "{:?} is not known; allowed: cpu, cuda:N",
                    self.execution_provider
                ),
            ));
        }
        for (key, p) in [
            ("speech.onnxruntime_library", &self.onnxruntime_library),
            ("speech.model_dir", &self.model_dir),
        ] {
            if let Some(p) = p {
                nonempty_path(key, p)?;
            }
        }
        let a = &self.asr;
        range("speech.asr.workers", a.workers as u64, 1, 64)?;
        range(
            "speech.asr.threads_per_session",
            a.threads_per_session as u64,
            1,
            256,
        )?;
        range("speech.asr.max_batch", a.max_batch as u64, 1, 64)?;
        range("speech.asr.queue", a.queue as u64, 1, 100_000)?;
        range(
            "speech.asr.max_tokens_per_second",
            a.max_tokens_per_second as u64,
            2,
            50,
        )?;
        range("speech.asr.beam_size", a.beam_size as u64, 1, 8)?;
        range(
            "speech.asr.min_window_ms",
            u64::from(a.min_window_ms),
            1_000,
            30_000,
        )?;
        if !(0.0..=1.0).contains(&a.hotword_threshold) {
            return Err(ConfigError::invalid(
                "speech.asr.hotword_threshold",
                format!(
                    "{} is out of range; allowed: 0.0 to 1.0",
                    a.hotword_threshold
                ),
            ));
        }
        let v = &self.vad;
        range(
            "speech.vad.aggressiveness",
            u64::from(v.aggressiveness),
            0,
            3,
        )?;
        range(
            "speech.vad.speech_start_ms",
            u64::from(v.speech_start_ms),
            20,
            2000,
        )?;
        range(
            "speech.vad.hangover_ms",
            u64::from(v.hangover_ms),
            100,
            5000,
        )?;
        range(
            "speech.vad.max_utterance_ms",
            u64::from(v.max_utterance_ms),
            1000,
            30_000,
        )?;
        range("speech.vad.pre_roll_ms", u64::from(v.pre_roll_ms), 0, 1000)?;
        if !(-100.0..=0.0).contains(&v.energy_floor_dbfs) {
            return Err(ConfigError::invalid(
                "speech.vad.energy_floor_dbfs",
                format!(
                    "{} is out of range; allowed: -100 to 0",
                    v.energy_floor_dbfs
                ),
            ));
        }
        let t = &self.tts;
        if !crate::speech::tts::VOICES.contains(&t.voice.as_str()) {
            return Err(ConfigError::invalid(
                "speech.tts.voice",
                format!(
                    "{:?} is not a Mandarin voice; allowed: {}",
                    t.voice,
                    crate::speech::tts::VOICES.join(", ")
                ),
            ));
        }
        if !(0.5..=2.0).contains(&t.speed) {
            return Err(ConfigError::invalid(
                "speech.tts.speed",
                format!("{} is out of range; allowed: 0.5 to 2.0", t.speed),
            ));
        }
        range("speech.tts.workers", t.workers as u64, 1, 64)?;
        range(
            "speech.tts.threads_per_session",
            t.threads_per_session as u64,
            1,
            256,
        )?;
        range("speech.tts.queue", t.queue as u64, 1, 100_000)?;
        nonempty_path("speech.tts.cache_dir", &t.cache_dir)?;
        range("speech.tts.cache_max_mib", t.cache_max_mib, 1, 1 << 20)?;
        for (i, r) in self.announcements.rules.iter().enumerate() {
            if crate::speech::announce::Class::parse(&r.class).is_none() {
                return Err(ConfigError::invalid(
                    &format!("speech.announcements.rules[{i}].class"),
                    format!(
                        "{:?} is not known; allowed: {}",
                        r.class,
                        crate::speech::announce::Class::NAMES.join(", ")
                    ),
                ));
            }
            if r.keywords.is_empty() || r.keywords.iter().any(|k| k.trim().is_empty()) {
                return Err(ConfigError::invalid(
                    &format!("speech.announcements.rules[{i}].keywords"),
                    "allowed: a list of non-empty keywords",
                ));
            }
        }
        Ok(())
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
        self.validate_sip()?;
        self.media.validate(self.sip.listen)?;
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
        self.speech.validate()?;
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

    fn validate_sip(&self) -> Result<(), ConfigError> {
        let s = &self.sip;
        range("sip.t1_ms", s.t1_ms, 50, 5000)?;
        range("sip.t2_ms", s.t2_ms, s.t1_ms, 60_000)?;
        range("sip.t4_ms", s.t4_ms, 1000, 60_000)?;
        range(
            "sip.max_transactions",
            s.max_transactions as u64,
            16,
            1_000_000,
        )?;
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in s.trunks.iter().enumerate() {
            let key = |k: &str| format!("sip.trunks[{i}].{k}");
            let bad = |k: &str, m: String| Err(ConfigError::invalid(&key(k), m));
            if t.name.is_empty()
                || !t
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return bad("name", "allowed: letters, digits, '-' and '_'".into());
            }
            if !names.insert(t.name.clone()) {
                return bad("name", format!("duplicate trunk name {:?}", t.name));
            }
            if t.host.is_empty() || t.host.contains(char::is_whitespace) {
                return bad("host", "allowed: an IP address or a DNS name".into());
            }
            if t.caller_id.is_empty()
                || !t
                    .caller_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.*#".contains(c))
            {
                return bad("caller_id", "allowed: digits, letters and + - . * #".into());
            }
            if t.codecs.is_empty() {
                return bad("codecs", "allowed: a list of pcma, pcmu".into());
            }
            for c in &t.codecs {
                if !matches!(c.as_str(), "pcma" | "pcmu") {
                    return bad(
                        "codecs",
                        format!("unknown codec {c:?}; allowed: pcma, pcmu"),
                    );
                }
            }
            if t.password_file.is_some() != t.username.is_some() {
                return bad(
                    "password_file",
                    "username and password_file go together".into(),
                );
            }
            if t.register && t.username.is_none() {
                return bad(
                    "register",
                    "registration needs username and password_file".into(),
                );
            }
            range(&key("max_calls"), u64::from(t.max_calls), 1, 10_000)?;
            range(
                &key("calls_per_second"),
                u64::from(t.calls_per_second),
                1,
                1000,
            )?;
            range(&key("ring_timeout_secs"), t.ring_timeout_secs, 5, 600)?;
            range(
                &key("register_expires_secs"),
                u64::from(t.register_expires_secs),
                60,
                86_400,
            )?;
            if t.session_expires_secs != 0 {
                range(
                    &key("session_expires_secs"),
                    u64::from(t.session_expires_secs),
                    90,
                    86_400,
                )?;
            }
            range(&key("keepalive_secs"), t.keepalive_secs, 0, 3600)?;
            for (k, v) in &t.status_map {
                if !k.parse::<u16>().is_ok_and(|c| (300..=699).contains(&c)) || *v > 12 {
                    return bad(
                        "status_map",
                        format!(
                            "{k:?} = {v}: keys are SIP statuses 300-699, values status codes 0-12"
                        ),
                    );
                }
            }
            for (k, v) in &t.q850_map {
                if !k.parse::<u16>().is_ok_and(|c| (1..=127).contains(&c)) || *v > 12 {
                    return bad(
                        "q850_map",
                        format!(
                            "{k:?} = {v}: keys are Q.850 causes 1-127, values status codes 0-12"
                        ),
                    );
                }
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
        c.sip.public_addr = Some(std::net::IpAddr::from([192, 0, 2, 10]));
        c.speech.onnxruntime_library = Some(PathBuf::from(PACKAGED_ONNXRUNTIME));
        c.speech.model_dir = Some(PathBuf::from(PACKAGED_MODEL_DIR));
        c.speech.announcements.rules.push(AnnouncementRule {
            class: "empty_number".into(),
            keywords: vec!["号码不存在".into()],
        });
        c.sip.trunks.push(TrunkConfig {
            name: "carrier".into(),
            host: "sip.carrier.example".into(),
            port: 5060,
            transport: TrunkTransport::Udp,
            outbound_proxy: Some("192.0.2.1:5060".into()),
            username: Some("vaultcall".into()),
            password_file: Some(PathBuf::from("/etc/vaultcall/trunk-carrier.password")),
            ca_file: Some(PathBuf::from("/etc/vaultcall/carrier-ca.pem")),
            register: true,
            register_expires_secs: 3600,
            caller_id: "4008001234".into(),
            caller_name: Some("bank".into()),
            codecs: default_codecs(),
            max_calls: 30,
            calls_per_second: 5,
            ring_timeout_secs: 45,
            max_redirects: 0,
            session_expires_secs: 1800,
            keepalive_secs: 30,
            status_map: [("480".to_owned(), 4)].into_iter().collect(),
            q850_map: [("17".to_owned(), 8)].into_iter().collect(),
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
        // A map keyed by numbers (status_map) is one setting, not one key per entry.
        toml::Value::Table(t)
            if !t.is_empty() && t.keys().all(|k| k.bytes().all(|b| b.is_ascii_digit())) =>
        {
            out.push(prefix.to_owned());
        }
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
        // An array of tables documents its fields once, as `section.field`.
        toml::Value::Array(items)
            if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
        {
            let mut seen = Vec::new();
            for item in items {
                let mut sub = Vec::new();
                collect_keys(prefix, item, &mut sub);
                for k in sub {
                    if !seen.contains(&k) {
                        seen.push(k);
                    }
                }
            }
            out.extend(seen);
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
    fn trunk_new_has_the_defaults_of_a_minimal_config_entry() {
        let parsed: TrunkConfig = toml::from_str(
            "name = \"carrier\"\nhost = \"sip.carrier.example\"\nport = 5080\ncaller_id = \"4008001234\"\n",
        )
        .unwrap();
        assert_eq!(
            parsed,
            TrunkConfig::new("carrier", "sip.carrier.example", 5080, "4008001234")
        );
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
    fn media_ports_are_validated_with_key_and_allowed_values() {
        let e = Config::from_toml("[media]\nport_min = 20001\n").unwrap_err();
        assert_eq!(e.key(), Some("media.port_min"));
        assert!(e.to_string().contains("even"), "{e}");
        let e = Config::from_toml("[media]\nport_min = 30000\nport_max = 30000\n").unwrap_err();
        assert_eq!(e.key(), Some("media.port_max"));
        assert!(e.to_string().contains("30001 to 65535"), "{e}");
        let e = Config::from_toml("[media]\nport_min = 5000\nport_max = 5100\n").unwrap_err();
        assert_eq!(e.key(), Some("media.port_min"));
        assert!(e.to_string().contains("sip.listen"), "{e}");
        let e =
            Config::from_toml("[media]\njitter_min_ms = 100\njitter_max_ms = 60\n").unwrap_err();
        assert_eq!(e.key(), Some("media.jitter_max_ms"));
        assert!(e.to_string().contains("100 to 1000"), "{e}");
        let e = Config::from_toml("[media]\nsymmetric_rtp = \"yes\"\n").unwrap_err();
        assert_eq!(e.key(), Some("media.symmetric_rtp"));
        let c = Config::from_toml("[media]\nport_min = 40000\nport_max = 40003\n").unwrap();
        assert_eq!(c.media.port_pairs(), 2);
        assert_eq!(Config::default().media.port_pairs(), 5000);
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
