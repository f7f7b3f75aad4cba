//! The trunks' live state as the daemon publishes it for `vaultcall trunk status`: a small
//! JSON file in the runtime directory (0600 in a 0700 directory), rewritten atomically every
//! few seconds and removed when the daemon stops. The command reads the file, so it needs no
//! admin token, only the same user as the daemon (or root).

use std::fmt::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::app::{Failure, exit};
use crate::config::{Config, TrunkConfig};
use crate::runtime::sip_endpoint::TrunkStatus;
use crate::time::{Clock, SystemClock, unix_ms};

/// File name in the runtime directory.
pub const FILE: &str = "trunks.json";

/// How often the daemon rewrites the file.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// A snapshot older than this means the daemon is not publishing (stopped, hung or killed).
pub const STALE_AFTER_MS: i64 = 3 * INTERVAL.as_millis() as i64;

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was written (Unix milliseconds).
    pub written_at_ms: i64,
    /// The daemon's process id.
    pub pid: u32,
    /// One entry per configured trunk, in config order.
    pub trunks: Vec<TrunkStatus>,
}

/// The file's path for a runtime directory.
pub fn path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(FILE)
}

/// Writes the snapshot atomically (a temporary file renamed over the old one). Blocking file
/// I/O: the daemon calls it from a blocking thread.
pub fn publish(runtime_dir: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(snapshot).map_err(std::io::Error::other)?;
    let tmp = runtime_dir.join(format!(".{FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::Write::write_all(&mut f, &body)?;
    drop(f);
    std::fs::rename(&tmp, path(runtime_dir))
}

/// Removes the file (the daemon is stopping).
pub fn withdraw(runtime_dir: &Path) {
    let _ = std::fs::remove_file(path(runtime_dir));
}

/// Why there is no state to show.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No file: the daemon is not running (or runs with another runtime directory).
    #[error("the daemon is not running: no trunk state in {0}")]
    NotRunning(PathBuf),
    /// The file cannot be read or parsed.
    #[error("cannot read {path}: {message}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// Reads the published snapshot.
pub fn read(runtime_dir: &Path) -> Result<Snapshot, ReadError> {
    let p = path(runtime_dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ReadError::NotRunning(runtime_dir.to_path_buf()));
        }
        Err(e) => {
            return Err(ReadError::Unreadable {
                path: p,
                message: e.to_string(),
            });
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| ReadError::Unreadable {
        path: p,
        message: e.to_string(),
    })
}

fn transport(t: &TrunkConfig) -> &'static str {
    match t.transport {
        crate::config::TrunkTransport::Udp => "udp",
        crate::config::TrunkTransport::Tcp => "tcp",
        crate::config::TrunkTransport::Tls => "tls",
    }
}

/// Renders the table `vaultcall trunk status` prints: each configured trunk with what the
/// daemon reports for it. A stale snapshot is said to be stale, not shown as current.
pub fn render(cfg: &Config, snapshot: &Snapshot, now_ms: i64) -> String {
    let mut out = String::new();
    let age_ms = now_ms.saturating_sub(snapshot.written_at_ms);
    if age_ms > STALE_AFTER_MS {
        let _ = writeln!(
            out,
            "WARNING: this state is {} s old; the daemon (pid {}) is not publishing — stopped, hung or killed.",
            age_ms / 1000,
            snapshot.pid
        );
    } else {
        let _ = writeln!(
            out,
            "Daemon pid {}, state {:.1} s old.",
            snapshot.pid,
            age_ms as f64 / 1000.0
        );
    }
    let _ = writeln!(
        out,
        "{:<16} {:<28} {:<28} KEEPALIVE",
        "TRUNK", "PEER", "REGISTRATION"
    );
    for t in &cfg.sip.trunks {
        let peer = format!("{}:{}/{}", t.host, t.port, transport(t));
        let live = snapshot.trunks.iter().find(|s| s.name == t.name);
        let reg = match live {
            None => "not in the daemon (config changed?)".to_owned(),
            Some(s) => match (s.registration.as_str(), s.registration_secs) {
                ("registered", Some(secs)) => format!("registered, {secs} s left"),
                ("failed", secs) => format!(
                    "failed ({}), retry in {} s",
                    s.registration_error
                        .map_or("no answer".into(), |c| c.to_string()),
                    secs.unwrap_or(0)
                ),
                ("off", _) => "off (register = false)".to_owned(),
                (other, _) => other.to_owned(),
            },
        };
        let alive = match (live.and_then(|s| s.alive), t.keepalive_secs) {
            (_, 0) => "off".to_owned(),
            (Some(true), k) => format!("up (OPTIONS every {k} s)"),
            (Some(false), k) => format!("DOWN (no answer to OPTIONS every {k} s)"),
            (None, _) => "not yet probed".to_owned(),
        };
        let _ = writeln!(out, "{:<16} {:<28} {:<28} {}", t.name, peer, reg, alive);
    }
    for s in &snapshot.trunks {
        if !cfg.sip.trunks.iter().any(|t| t.name == s.name) {
            let _ = writeln!(
                out,
                "{:<16} {:<28} {:<28} (running in the daemon, not in this config)",
                s.name, "-", s.registration
            );
        }
    }
    out
}

/// `vaultcall trunk status`.
pub fn status_cmd(cfg: &Config, json: bool) -> Result<String, Failure> {
    let dir = cfg.resolve_paths(&|k| std::env::var(k).ok()).runtime_dir;
    let snapshot = read(&dir).map_err(|e| Failure {
        code: match e {
            ReadError::NotRunning(_) => exit::UNAVAILABLE,
            ReadError::Unreadable { .. } => exit::RUNTIME,
        },
        message: e.to_string(),
    })?;
    if json {
        return serde_json::to_string_pretty(&snapshot)
            .map(|s| s + "\n")
            .map_err(Failure::runtime);
    }
    Ok(render(cfg, &snapshot, unix_ms(SystemClock.wall())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(name: &str, keepalive: u64) -> TrunkConfig {
        TrunkConfig {
            register: true,
            keepalive_secs: keepalive,
            ..TrunkConfig::new(name, "pbx.bank.local", 5060, "4008001234")
        }
    }

    fn status(name: &str, reg: &str, secs: Option<u64>, alive: Option<bool>) -> TrunkStatus {
        TrunkStatus {
            name: name.into(),
            registration: reg.into(),
            registration_secs: secs,
            registration_error: (reg == "failed").then_some(403),
            alive,
        }
    }

    #[test]
    fn publish_then_read_round_trips_and_withdraw_removes() {
        let dir = tempfile::tempdir().unwrap();
        let snap = Snapshot {
            written_at_ms: 1_700_000_000_000,
            pid: 42,
            trunks: vec![status("carrier", "registered", Some(3500), Some(true))],
        };
        publish(dir.path(), &snap).unwrap();
        assert_eq!(read(dir.path()).unwrap(), snap);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second publish replaces the first.
        let snap2 = Snapshot {
            written_at_ms: snap.written_at_ms + 5000,
            ..snap.clone()
        };
        publish(dir.path(), &snap2).unwrap();
        assert_eq!(read(dir.path()).unwrap(), snap2);
        withdraw(dir.path());
        assert!(matches!(read(dir.path()), Err(ReadError::NotRunning(_))));
    }

    #[test]
    fn a_torn_file_is_unreadable_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), b"{\"written_at_ms\": 1, \"pid\"").unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(ReadError::Unreadable { .. })
        ));
    }

    #[test]
    fn render_shows_every_configured_trunk_and_says_when_stale() {
        let mut cfg = Config::default();
        cfg.sip.trunks = vec![trunk("carrier", 30), trunk("backup", 30), trunk("lab", 0)];
        let snap = Snapshot {
            written_at_ms: 1_000_000,
            pid: 7,
            trunks: vec![
                status("carrier", "registered", Some(3500), Some(true)),
                status("backup", "failed", Some(20), Some(false)),
                status("lab", "off", None, None),
            ],
        };
        let fresh = render(&cfg, &snap, 1_002_000);
        assert!(
            fresh.starts_with("Daemon pid 7, state 2.0 s old."),
            "{fresh}"
        );
        let line = |name: &str| {
            fresh
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            line("carrier").contains("registered, 3500 s left"),
            "{fresh}"
        );
        assert!(
            line("carrier").contains("up (OPTIONS every 30 s)"),
            "{fresh}"
        );
        assert!(
            line("backup").contains("failed (403), retry in 20 s"),
            "{fresh}"
        );
        assert!(line("backup").contains("DOWN"), "{fresh}");
        assert!(line("lab").contains("off (register = false)"), "{fresh}");
        assert!(line("lab").ends_with("off"), "{fresh}");
        let stale = render(&cfg, &snap, 1_000_000 + STALE_AFTER_MS + 1000);
        assert!(
            stale.starts_with("WARNING: this state is 16 s old"),
            "{stale}"
        );
        // A trunk the daemon runs that this config lacks is listed, not hidden.
        cfg.sip.trunks.remove(1);
        assert!(
            render(&cfg, &snap, 1_002_000)
                .lines()
                .any(|l| l.starts_with("backup") && l.contains("not in this config"))
        );
    }
}
