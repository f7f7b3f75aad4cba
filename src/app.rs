//! Composition root: config → logging → store → keys → (models) → sockets → READY → run → drain.
//!
//! `sd_notify` READY=1 is sent only after the store is open and every socket is bound;
//! WATCHDOG=1 only while the store writer answers a ping and the admin and SIP loops are alive;
//! STOPPING=1 on SIGTERM/SIGINT, followed by a drain bounded by `lifecycle.shutdown_grace_secs`.
//! SIGHUP (or `POST /api/v1/reload`) re-reads the config file, applies what is safe to change
//! at run time and reports the keys that need a restart.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::admin::front::{Front, FrontLimits};
use crate::admin::server::ApiServer;
use crate::admin::tls::{self, ReloadableCert};
use crate::admin::{AdminContext, ApiMetrics, LiveSettings, auth::LoginLimiter};
use crate::config::{Config, ConfigError, under};
use crate::records::Records;
use crate::runtime::control::{Control, ControlHandle, ReloadReport};
use crate::runtime::lifecycle::{Lifecycle, Phase};
use crate::runtime::sip_endpoint::{EndpointConfig, EndpointHandle, SipEndpoint};
use crate::runtime::systemd::Notifier;
use crate::runtime::trunk;
use crate::store::{Store, StoreError};
use crate::telemetry::{self, metrics};
use crate::time::{Clock, SystemClock, unix_ms};
use crate::vault::MasterKey;

/// Process exit codes (sysexits.h where one fits).
pub mod exit {
    /// Clean exit.
    pub const OK: u8 = 0;
    /// Runtime failure.
    pub const RUNTIME: u8 = 1;
    /// Command-line usage error (EX_USAGE).
    pub const USAGE: u8 = 64;
    /// The service needed is not running (EX_UNAVAILABLE).
    pub const UNAVAILABLE: u8 = 69;
    /// Configuration or model validation error (EX_CONFIG).
    pub const CONFIG: u8 = 78;
}

/// A failure that ends the process: its exit code and one line for stderr.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// One-line explanation.
    pub message: String,
}

impl Failure {
    /// Exit 78.
    pub fn config(message: impl std::fmt::Display) -> Self {
        Self {
            code: exit::CONFIG,
            message: message.to_string(),
        }
    }

    /// Exit 1.
    pub fn runtime(message: impl std::fmt::Display) -> Self {
        Self {
            code: exit::RUNTIME,
            message: message.to_string(),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Self::config(format!("config error: {e}"))
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        if e.is_schema() {
            Self::config(e)
        } else {
            Self::runtime(e)
        }
    }
}

/// Where the config came from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// Built-in defaults (no file).
    Embedded,
    /// A file.
    File(PathBuf),
}

impl ConfigSource {
    /// For status output.
    pub fn describe(&self) -> String {
        match self {
            Self::Embedded => "embedded defaults".to_owned(),
            Self::File(p) => p.display().to_string(),
        }
    }
}

/// Loads the config from `source`.
pub fn load_config(source: &ConfigSource) -> Result<Config, Failure> {
    match source {
        ConfigSource::Embedded => Ok(Config::default()),
        ConfigSource::File(p) => Ok(Config::load(p)?),
    }
}

fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Opens the store for a CLI command (same paths and migrations as the daemon).
pub fn open_store(cfg: &Config) -> Result<Store, Failure> {
    let paths = cfg.resolve_paths(&env_var);
    let path = under(&paths.data_dir, &cfg.store.path);
    Ok(Store::open(&path, &cfg.store, unix_ms(SystemClock.wall()))?)
}

/// Loads the master key for a CLI command or the daemon: the systemd credential when
/// `$CREDENTIALS_DIRECTORY` has one, else `vault.master_key_file`.
pub fn load_master_key(cfg: &Config) -> Result<MasterKey, Failure> {
    let paths = cfg.resolve_paths(&env_var);
    let credentials = env_var("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    MasterKey::load(
        &under(&paths.data_dir, &cfg.vault.master_key_file),
        cfg.vault.create_master_key,
        credentials.as_deref(),
    )
    .map_err(Failure::config)
}

/// `vaultcall serve`.
pub fn serve(source: ConfigSource) -> Result<(), Failure> {
    let cfg = load_config(&source)?;
    telemetry::init(cfg.log.level, cfg.log.target).map_err(Failure::config)?;
    // Files the daemon creates (database, keys, sockets) are private by default.
    // SAFETY: umask only changes this process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vc-rt")
        .build()
        .map_err(Failure::runtime)?;
    let result = rt.block_on(run(cfg, source));
    // Blocking threads (store close) are joined already; do not wait for stuck ones.
    rt.shutdown_timeout(Duration::from_secs(1));
    match &result {
        Ok(()) => log::info!("vaultcall stopped"),
        Err(f) => log::error!(exit_code = f.code, reason = f.message.as_str(); "vaultcall failed"),
    }
    log::logger().flush();
    result
}

/// Handles that a reload may change.
struct Live {
    ctx: Arc<AdminContext>,
    front_limits: Arc<RwLock<FrontLimits>>,
    cert: Option<Arc<ReloadableCert>>,
    data_dir: PathBuf,
}

fn front_limits(cfg: &Config) -> FrontLimits {
    FrontLimits {
        max_header_bytes: cfg.admin.max_header_bytes,
        max_body_bytes: cfg.admin.max_body_bytes,
        idle_timeout: Duration::from_secs(cfg.admin.idle_timeout_secs),
    }
}

fn live_settings(cfg: &Config) -> LiveSettings {
    LiveSettings {
        metrics_require_token: cfg.admin.metrics_require_token,
        max_body_bytes: cfg.admin.max_body_bytes,
    }
}

fn register_process_metrics(store: &Store, lifecycle: &Arc<Lifecycle>, clock: &Arc<dyn Clock>) {
    let r = metrics::global();
    r.info(
        "vaultcall_build_info",
        "Build information (constant 1).",
        vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            (
                "git_commit",
                option_env!("VAULTCALL_GIT_COMMIT")
                    .unwrap_or("unknown")
                    .to_owned(),
            ),
        ],
    );
    let (l, c) = (lifecycle.clone(), clock.clone());
    r.gauge_fn(
        "vaultcall_uptime_seconds",
        "Seconds since the daemon started.",
        move || c.mono().saturating_duration_since(l.started).as_secs_f64(),
    );
    let s = store.clone();
    r.gauge_fn(
        "vaultcall_db_size_bytes",
        "Database plus WAL size on disk.",
        move || s.disk_bytes() as f64,
    );
    let l = lifecycle.clone();
    r.gauge_fn(
        "vaultcall_ready",
        "1 while serving, 0 while starting or draining.",
        move || f64::from(u8::from(l.phase() == Phase::Ready)),
    );
    let l = lifecycle.clone();
    r.gauge_fn(
        "vaultcall_in_flight",
        "Units of work in progress (API requests, calls).",
        move || l.in_flight() as f64,
    );
}

/// Binds the SIP endpoint and prepares each trunk (resolved address, credentials from their
/// file, registration). A trunk that cannot be used is a configuration error (exit 78).
async fn bind_sip(
    cfg: &Config,
    data_dir: &std::path::Path,
    clock: &Arc<dyn Clock>,
) -> Result<(SipEndpoint, EndpointHandle), Failure> {
    let mut seed = [0u8; 8];
    aws_lc_rs::rand::fill(&mut seed)
        .map_err(|_| Failure::runtime("the system random number generator failed"))?;
    let ep = EndpointConfig {
        listen: cfg.sip.listen,
        public: cfg.sip.public_addr,
        timers: trunk::timers(cfg),
        max_transactions: cfg.sip.max_transactions,
        seed: u64::from_le_bytes(seed),
        user_agent: cfg.sip.user_agent.clone(),
    };
    let (mut endpoint, handle) = SipEndpoint::bind(ep, Vec::new(), clock.clone())
        .await
        .map_err(|e| Failure::runtime(format!("cannot bind sip.listen {}: {e}", cfg.sip.listen)))?;
    let trunks = trunk::runtimes(
        cfg,
        data_dir,
        endpoint.local(),
        u64::from_le_bytes(seed).rotate_left(17),
    )
    .await
    .map_err(Failure::config)?;
    endpoint.add_trunks(trunks);
    Ok((endpoint, handle))
}

async fn bind_admin(addr: SocketAddr) -> Result<TcpListener, Failure> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::runtime(format!("cannot bind admin.listen {addr}: {e}")))
}

// The composition root spawns the shell's loops; that is what the disallowed-method rule allows.
#[allow(clippy::disallowed_methods)]
async fn run(cfg: Config, source: ConfigSource) -> Result<(), Failure> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let lifecycle = Arc::new(Lifecycle::new(clock.mono(), clock.wall()));
    let notifier = Notifier::from_env(&env_var);
    notifier.send("STATUS=starting");
    let paths = cfg.resolve_paths(&env_var);
    crate::fs::ensure_private_dir(&paths.data_dir).map_err(|e| {
        Failure::runtime(format!(
            "cannot create data directory {}: {e}",
            paths.data_dir.display()
        ))
    })?;
    log::info!(config = source.describe().as_str(), data_dir:% = paths.data_dir.display(); "vaultcall starting");
    // One daemon per data directory; `keys rotate` takes the same lock.
    let _lock = crate::fs::try_lock(&paths.data_dir.join(crate::fs::DAEMON_LOCK))
        .map_err(|e| Failure::runtime(format!("cannot lock the data directory: {e}")))?
        .ok_or_else(|| {
            Failure::runtime(
                "another vaultcall (daemon or `keys rotate`) is using this data directory",
            )
        })?;

    // Store.
    let store = Store::open(
        &under(&paths.data_dir, &cfg.store.path),
        &cfg.store,
        unix_ms(clock.wall()),
    )?;

    // Keys.
    let master = load_master_key(&cfg)?;
    // Opening may write (the appliance keys on first start): a blocking store call.
    let (s, dir, vault_cfg, c) = (
        store.clone(),
        paths.data_dir.clone(),
        cfg.vault.clone(),
        clock.clone(),
    );
    let opened =
        tokio::task::spawn_blocking(move || Records::open(s, &dir, &master, &vault_cfg, c))
            .await
            .map_err(Failure::runtime)?;
    let records = match opened {
        Ok(r) => Arc::new(r),
        Err(e) => {
            let f = Failure::from(e);
            let s = store.clone();
            let _ = tokio::task::spawn_blocking(move || s.close()).await;
            return Err(f);
        }
    };
    telemetry::set_redaction_key(records.redaction_key());
    let (receipt_key_id, _) = records.receipt_public_key();
    log::info!(receipt_key_id = receipt_key_id.as_str(); "master key loaded; vault open");

    // Models: verified against the digests built into this binary, then loaded (exit 78 when
    // the library or a model is missing or altered). The call wiring uses them later.
    let _speech = load_speech(&cfg, &paths.data_dir)?;

    // Sockets.
    let cert = match &cfg.admin.tls {
        Some(t) => {
            let ck = tls::load_certified_key(
                &under(&paths.data_dir, &t.cert_file),
                &under(&paths.data_dir, &t.key_file),
            )
            .map_err(Failure::config)?;
            Some(Arc::new(ReloadableCert::new(ck)))
        }
        None => None,
    };
    let server_tls = cert
        .clone()
        .map(tls::server_config)
        .transpose()
        .map_err(Failure::config)?;
    let admin_listener = bind_admin(cfg.admin.listen).await?;
    let (sip, sip_handle) = bind_sip(&cfg, &paths.data_dir, &clock).await?;
    let sip_addr = sip.local();
    let (control_tx, mut control_rx) = mpsc::channel(8);
    let ctx = Arc::new(AdminContext {
        store: store.clone(),
        clock: clock.clone(),
        lifecycle: lifecycle.clone(),
        settings: RwLock::new(live_settings(&cfg)),
        limiter: Mutex::new(LoginLimiter::new(cfg.admin.login_limit.clone())),
        control: Some(ControlHandle(control_tx)),
        metrics: ApiMetrics::register(),
        tls: cert.is_some(),
        config_source: source.describe(),
        touched: Mutex::new(HashMap::new()),
        sip: Some(sip_handle),
        records: Some(records.clone()),
    });
    let socket = paths.runtime_dir.join("admin.sock");
    let api =
        ApiServer::start(ctx.clone(), &socket, cfg.admin.threads).map_err(Failure::runtime)?;
    let limits = Arc::new(RwLock::new(front_limits(&cfg)));
    let front = Front::new(
        admin_listener,
        server_tls,
        socket,
        limits.clone(),
        cfg.admin.max_connections,
    );
    let admin_addr = front.local_addr().map_err(Failure::runtime)?;
    register_process_metrics(&store, &lifecycle, &clock);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut front_task = tokio::spawn(front.run(stop_rx.clone()));
    let mut sip_task = tokio::spawn(sip.run(stop_rx.clone()));

    // Signal handlers before READY: a supervisor may send SIGTERM as soon as it sees READY.
    let mut sigterm = signal(SignalKind::terminate()).map_err(Failure::runtime)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(Failure::runtime)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(Failure::runtime)?;

    // Ready.
    lifecycle.advance(Phase::Ready);
    let scheme = if cert.is_some() { "https" } else { "http" };
    notifier.send(&format!(
        "READY=1\nSTATUS=serving admin={scheme}://{admin_addr} sip=udp:{sip_addr}\nMAINPID={}",
        std::process::id()
    ));
    log::info!(admin:% = admin_addr, tls = cert.is_some(), sip:% = sip_addr; "vaultcall ready");

    let live = Live {
        ctx: ctx.clone(),
        front_limits: limits,
        cert,
        data_dir: paths.data_dir.clone(),
    };
    let mut effective = cfg;
    let watchdog = notifier.watchdog();
    let mut tick = tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |w| w / 2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Audit-chain head to the journal now and periodically (the anchor `audit verify
    // --checkpoint` checks against); retention sweep now and daily, after finishing any
    // erasure a crash interrupted.
    let mut checkpoint_tick = tokio::time::interval(Duration::from_secs(
        effective.audit.checkpoint_interval_secs,
    ));
    checkpoint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep_tick = tokio::time::interval(Duration::from_secs(86_400));
    sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut maintenance: Option<tokio::task::JoinHandle<()>> = None;
    let mut first_sweep = true;
    // Trunk state for `vaultcall trunk status`.
    let mut trunk_tick = tokio::time::interval(crate::runtime::trunk_state::INTERVAL);
    trunk_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let failure = loop {
        tokio::select! {
            _ = sigterm.recv() => break None,
            _ = sigint.recv() => break None,
            _ = sighup.recv() => {
                notifier.send("RELOADING=1");
                let report = reload(&mut effective, &source, &live);
                log_report(&report);
                notifier.send("READY=1");
            }
            Some(ctl) = control_rx.recv() => match ctl {
                Control::Reload(reply) => {
                    let report = reload(&mut effective, &source, &live);
                    log_report(&report);
                    let _ = reply.send(report);
                }
            },
            _ = tick.tick(), if watchdog.is_some() => {
                let store_ok = matches!(tokio::time::timeout(Duration::from_secs(2), store.ping()).await, Ok(Ok(())));
                let api_ok = api.since_heartbeat() < Duration::from_secs(10);
                if store_ok && api_ok && !front_task.is_finished() && !sip_task.is_finished() {
                    notifier.send("WATCHDOG=1");
                } else {
                    log::error!(store_ok = store_ok, api_ok = api_ok; "health check failed; withholding watchdog ping");
                }
            }
                        _ = trunk_tick.tick() => {
                if let Some(sip) = &ctx.sip {
                    let snapshot = crate::runtime::trunk_state::Snapshot {
                        written_at_ms: unix_ms(clock.wall()),
                        pid: std::process::id(),
                        trunks: sip.status().await,
                    };
                                        let dir = paths.runtime_dir.clone();
                    let written = tokio::task::spawn_blocking(move || crate::runtime::trunk_state::publish(&dir, &snapshot)).await;
                    if let Ok(Err(e)) = written {
                        log::warn!(error:% = e; "cannot publish the trunk state for `vaultcall trunk status`");
                    }
                }
            }
            _ = checkpoint_tick.tick() => {
                let s = store.clone();
                let _ = tokio::task::spawn_blocking(move || log_audit_head(&s)).await;
            }
            _ = sweep_tick.tick() => {
                if maintenance.as_ref().is_some_and(|h| !h.is_finished()) {
                    log::warn!("previous retention sweep still running; skipping this one");
                } else {
                    let (r, retention, resume) = (records.clone(), effective.retention.clone(), first_sweep);
                    first_sweep = false;
                    maintenance = Some(tokio::task::spawn_blocking(move || maintain(&r, &retention, resume)));
                }
            }
            r = &mut front_task => break Some(Failure::runtime(format!("admin front stopped unexpectedly: {r:?}"))),
            r = &mut sip_task => break Some(Failure::runtime(format!("SIP socket loop stopped unexpectedly: {r:?}"))),
        }
    };

    // Drain.
    let grace = Duration::from_secs(effective.lifecycle.shutdown_grace_secs);
    notifier.send("STOPPING=1\nSTATUS=draining");
    lifecycle.advance(Phase::Draining);
    log::info!(grace_secs = grace.as_secs(), in_flight = lifecycle.in_flight(); "draining");
    let _ = stop_tx.send(true);
    crate::runtime::trunk_state::withdraw(&paths.runtime_dir);
    let deadline = tokio::time::Instant::from_std(clock.mono()) + grace;
    if !front_task.is_finished()
        && tokio::time::timeout_at(deadline, &mut front_task)
            .await
            .is_err()
    {
        log::warn!(in_flight = lifecycle.in_flight(); "grace period over with admin connections open; closing them");
        front_task.abort();
    }
    let _ = tokio::time::timeout_at(deadline, &mut sip_task).await;
    sip_task.abort();
    let left = lifecycle.in_flight();
    if let Some(h) = maintenance.take()
        && tokio::time::timeout_at(deadline, h).await.is_err()
    {
        log::warn!("retention sweep still running at shutdown; it resumes at the next start");
    }
    drop(records);
    let stopped = tokio::task::spawn_blocking(move || {
        api.stop();
        log_audit_head(&store);
        store.close();
    });
    if stopped.await.is_err() {
        log::error!("stopping the API server or the store panicked");
    }
    log::info!(unfinished = left; "drained; database checkpointed and closed");
    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// Writes the audit chain's head to the log (journal): the external anchor for
/// `vaultcall audit verify --checkpoint ID:HASH`.
fn log_audit_head(store: &Store) {
    match store.read(crate::store::audit::head) {
        Ok(Some((id, hash))) => {
            let h = hex::encode(hash);
            log::info!(audit_head_id = id, audit_head_hash = h.as_str(), checkpoint = format!("{id}:{h}").as_str(); "audit log checkpoint")
        }
        Ok(None) => log::info!(audit_head_id = 0; "audit log checkpoint (empty log)"),
        Err(e) => log::error!(error:% = e; "cannot read the audit log head"),
    }
}

/// Background maintenance: finish interrupted erasures (first run only), then sweep.
fn maintain(records: &Records, retention: &crate::config::RetentionConfig, resume: bool) {
    if resume {
        match records.resume_erasures() {
            Ok(0) => {}
            Ok(n) => log::warn!(count = n; "finished erasures interrupted by a previous stop"),
            Err(e) => {
                log::error!(error:% = e; "resuming interrupted erasures failed; retried at the next start")
            }
        }
    }
    if let Err(e) = records.retention_sweep(retention, unix_ms(SystemClock.wall())) {
        log::error!(error:% = e; "retention sweep failed; retried tomorrow or at the next start");
    }
}

fn log_report(r: &ReloadReport) {
    match &r.error {
        Some(e) => {
            log::error!(reason = e.as_str(); "reload refused; the previous configuration stays in force")
        }
        None => log::info!(
            applied = r.applied.join(",").as_str(),
            restart_required = r.restart_required.join(",").as_str();
            "configuration reloaded"
        ),
    }
}

/// The speech engines the daemon holds while it runs.
pub struct SpeechEngines {
    /// Speech recognition workers.
    pub asr: crate::speech::worker::AsrEngine,
    /// Speech synthesis workers.
    pub tts: crate::speech::worker::TtsEngine,
}

impl From<crate::speech::onnx::SpeechError> for Failure {
    fn from(e: crate::speech::onnx::SpeechError) -> Self {
        use crate::speech::onnx::SpeechError as E;
        match e {
            E::Library { .. } | E::Model { .. } => Self::config(e),
            other => Self::runtime(other),
        }
    }
}

/// Verifies and loads the speech models when `speech.enabled`.
pub fn load_speech(
    cfg: &Config,
    data_dir: &std::path::Path,
) -> Result<Option<SpeechEngines>, Failure> {
    if !cfg.speech.enabled {
        log::info!("speech engine disabled (speech.enabled = false)");
        return Ok(None);
    }
    let clock = SystemClock;
    let t0 = clock.mono();
    let asr = crate::speech::worker::AsrEngine::load(&cfg.speech, data_dir)?;
    let tts = crate::speech::worker::TtsEngine::load(
        &cfg.speech,
        data_dir,
        Some(under(data_dir, &cfg.speech.tts.cache_dir)),
    )?;
    log::info!(
        load_ms = clock.mono().saturating_duration_since(t0).as_millis() as u64,
        asr:? = asr.placed,
        tts:? = tts.placed;
        "speech models verified and loaded"
    );
    type Field = fn(&crate::speech::worker::Counters) -> &std::sync::atomic::AtomicU64;
    let gauges: [(&str, &str, Field); 4] = [
        (
            "vaultcall_asr_utterances_decoded",
            "Utterances the speech recogniser has decoded since start.",
            |c| &c.done,
        ),
        (
            "vaultcall_asr_refused",
            "Utterances refused because the decode queue (speech.asr.queue) was full.",
            |c| &c.refused,
        ),
        (
            "vaultcall_asr_batches",
            "Decode batches run (utterances / batches = mean batch size).",
            |c| &c.batches,
        ),
        (
            "vaultcall_asr_queue_depth",
            "Utterances waiting for or in decoding.",
            |c| &c.queued,
        ),
    ];
    for (name, help, field) in gauges {
        let c = asr.counters.clone();
        metrics::global().gauge_fn(name, help, move || {
            field(&c).load(std::sync::atomic::Ordering::Relaxed) as f64
        });
    }
    Ok(Some(SpeechEngines { asr, tts }))
}

/// Keys whose new values take effect on reload.
const RELOADABLE: &[&str] = &[
    "log.level",
    "lifecycle.shutdown_grace_secs",
    "admin.metrics_require_token",
    "admin.max_body_bytes",
    "admin.max_header_bytes",
    "admin.idle_timeout_secs",
    "admin.login_limit.max_failures",
    "admin.login_limit.window_secs",
    "admin.login_limit.lockout_secs",
    "admin.tls.cert_file",
    "admin.tls.key_file",
];

fn leaves(cfg: &Config) -> BTreeMap<String, toml::Value> {
    fn walk(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, v, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(v) = toml::Value::try_from(cfg) {
        walk("", &v, &mut out);
    }
    out
}

/// Which keys differ between two configs, split into (reloadable, restart-required).
pub fn classify_changes(old: &Config, new: &Config) -> (Vec<String>, Vec<String>) {
    let (a, b) = (leaves(old), leaves(new));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let tls_toggled = old.admin.tls.is_some() != new.admin.tls.is_some();
    let (mut applied, mut restart) = (Vec::new(), Vec::new());
    for k in keys {
        if a.get(k) == b.get(k) {
            continue;
        }
        if k.starts_with("admin.tls.") && tls_toggled {
            if !restart.iter().any(|r| r == "admin.tls") {
                restart.push("admin.tls".to_owned());
            }
        } else if RELOADABLE.contains(&k.as_str()) {
            applied.push(k.clone());
        } else {
            restart.push(k.clone());
        }
    }
    (applied, restart)
}

fn reload(effective: &mut Config, source: &ConfigSource, live: &Live) -> ReloadReport {
    let ConfigSource::File(path) = source else {
        return ReloadReport {
            error: Some("running on embedded defaults; there is no config file to reload".into()),
            ..ReloadReport::default()
        };
    };
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            return ReloadReport {
                error: Some(format!("config error: {e}")),
                ..ReloadReport::default()
            };
        }
    };
    let (mut applied, restart_required) = classify_changes(effective, &new);
    // Everything that can fail is prepared before anything is applied. A certificate is
    // re-read even when its path is unchanged: renewals usually keep the file name.
    let new_cert = match (&live.cert, &new.admin.tls) {
        (Some(_), Some(t)) if effective.admin.tls.is_some() => {
            match tls::load_certified_key(
                &under(&live.data_dir, &t.cert_file),
                &under(&live.data_dir, &t.key_file),
            ) {
                Ok(ck) => Some(ck),
                Err(e) => {
                    return ReloadReport {
                        error: Some(e.to_string()),
                        ..ReloadReport::default()
                    };
                }
            }
        }
        _ => None,
    };
    if let (Some(resolver), Some(ck)) = (&live.cert, new_cert) {
        resolver.replace(ck);
        if !applied.iter().any(|k| k.starts_with("admin.tls.")) {
            applied.push("admin.tls (certificate re-read)".to_owned());
        }
    }
    telemetry::set_level(new.log.level);
    *live.ctx.settings.write().unwrap_or_else(|p| p.into_inner()) = live_settings(&new);
    *live.front_limits.write().unwrap_or_else(|p| p.into_inner()) = front_limits(&new);
    live.ctx
        .limiter
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .reconfigure(new.admin.login_limit.clone());
    // Adopt reloadable values; keep the running values of everything else.
    effective.log.level = new.log.level;
    effective.lifecycle = new.lifecycle.clone();
    effective.admin.metrics_require_token = new.admin.metrics_require_token;
    effective.admin.max_body_bytes = new.admin.max_body_bytes;
    effective.admin.max_header_bytes = new.admin.max_header_bytes;
    effective.admin.idle_timeout_secs = new.admin.idle_timeout_secs;
    effective.admin.login_limit = new.admin.login_limit.clone();
    if effective.admin.tls.is_some() && new.admin.tls.is_some() {
        effective.admin.tls = new.admin.tls.clone();
    }
    ReloadReport {
        applied,
        restart_required,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_classified() {
        let old = Config::default();
        let mut new = Config::default();
        new.log.level = crate::config::LogLevel::Debug;
        new.admin.login_limit.max_failures = 3;
        new.admin.listen = "127.0.0.1:9090".parse().unwrap();
        new.store.busy_timeout_ms = 1;
        let (applied, restart) = classify_changes(&old, &new);
        assert_eq!(applied, vec!["admin.login_limit.max_failures", "log.level"]);
        assert_eq!(restart, vec!["admin.listen", "store.busy_timeout_ms"]);
    }

    #[test]
    fn enabling_tls_needs_a_restart() {
        let old = Config::default();
        let new = Config::fully_specified_example();
        let (_, restart) = classify_changes(&old, &new);
        assert!(restart.contains(&"admin.tls".to_owned()), "{restart:?}");
        assert!(
            restart.contains(&"paths.data_dir".to_owned()),
            "{restart:?}"
        );
    }

    #[test]
    fn every_reloadable_key_exists() {
        let keys = Config::key_paths();
        for k in RELOADABLE {
            assert!(keys.iter().any(|x| x == k), "{k} is not a config key");
        }
    }
}
