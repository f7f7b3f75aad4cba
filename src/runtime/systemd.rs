//! The `sd_notify` protocol (READY=1, WATCHDOG=1, STOPPING=1, STATUS=…) and the watchdog
//! interval, without libsystemd: one datagram to `$NOTIFY_SOCKET` per message.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go, read once from the environment at start.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<String>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` through `env`.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Self {
        let socket = env("NOTIFY_SOCKET").filter(|s| !s.is_empty());
        let pid_ok = env("WATCHDOG_PID")
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = env("WATCHDOG_USEC")
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && pid_ok)
            .map(Duration::from_micros);
        Self { socket, watchdog }
    }

    /// The watchdog timeout systemd enforces, if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one notification; `Ok(false)` when not running under a notify-aware manager.
    pub fn notify(&self, state: &str) -> std::io::Result<bool> {
        let Some(path) = &self.socket else {
            return Ok(false);
        };
        let addr = if let Some(abstract_name) = path.strip_prefix('@') {
            SocketAddr::from_abstract_name(abstract_name.as_bytes())?
        } else {
            SocketAddr::from_pathname(path)?
        };
        let sock = UnixDatagram::unbound()?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
        Ok(true)
    }

    /// Sends a notification, logging (not failing) if the socket refuses it.
    pub fn send(&self, state: &str) {
        if let Err(e) = self.notify(state) {
            log::warn!(error:% = e; "sd_notify failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("notify");
        let rx = UnixDatagram::bind(&p).unwrap();
        let path = p.to_str().unwrap().to_owned();
        let n = Notifier::from_env(&|k| (k == "NOTIFY_SOCKET").then(|| path.clone()));
        assert!(n.notify("READY=1\nSTATUS=up").unwrap());
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=up");
    }

    #[test]
    fn no_socket_is_not_an_error_and_watchdog_respects_pid() {
        let n = Notifier::from_env(&|_| None);
        assert!(!n.notify("READY=1").unwrap());
        assert_eq!(n.watchdog(), None);
        let me = std::process::id().to_string();
        let n = Notifier::from_env(&|k| match k {
            "WATCHDOG_USEC" => Some("30000000".into()),
            "WATCHDOG_PID" => Some(me.clone()),
            _ => None,
        });
        assert_eq!(n.watchdog(), Some(Duration::from_secs(30)));
        let other = Notifier::from_env(&|k| match k {
            "WATCHDOG_USEC" => Some("30000000".into()),
            "WATCHDOG_PID" => Some("1".into()),
            _ => None,
        });
        assert_eq!(other.watchdog(), None);
    }
}
