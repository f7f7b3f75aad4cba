//! Logging, PII redaction and metrics.
//!
//! Log lines go to the systemd journal (native protocol, structured fields such as `CALL_ID`)
//! when the daemon runs under systemd, else to stderr as plain text. Messages are constant
//! strings; data goes in key-value fields (`log::info!(call_id = id.0; "call ended")`), and
//! anything that could identify a person is wrapped in [`Redacted`].

pub mod metrics;
mod redact;

pub use redact::{Redacted, redaction_tag, set_redaction_key};

use std::io::Write;
use std::path::Path;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::{LogLevel, LogTarget};
use crate::time::{Clock, SystemClock, rfc3339};

/// The journal's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `log.target = "journal"` but the journal is not there.
    #[error(
        "log.target is \"journal\" but the journal socket {JOURNAL_SOCKET} cannot be used: {0}"
    )]
    NoJournal(std::io::Error),
    /// A logger was installed already (a bug in the caller).
    #[error("a logger is already installed")]
    AlreadyInstalled,
}

/// Which sink `init` chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// systemd journal, native protocol.
    Journal,
    /// Plain text on stderr.
    Stderr,
}

enum Inner {
    Journal(systemd_journal_logger::JournalLog),
    Stderr,
}

struct VaultLogger {
    inner: Inner,
}

impl Log for VaultLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level() && !is_noisy_dependency(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        match &self.inner {
            Inner::Journal(j) => {
                if j.journal_send(record).is_err() {
                    // The journal went away (restart); do not lose the line.
                    write_stderr_line(record);
                }
            }
            Inner::Stderr => write_stderr_line(record),
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Dependencies log at debug with their own free-form text (addresses, paths); keep them to
/// warnings so that our own debug level stays readable and within the no-PII rule.
fn is_noisy_dependency(metadata: &Metadata<'_>) -> bool {
    let t = metadata.target();
    metadata.level() > Level::Warn && !(t == "vaultcall" || t.starts_with("vaultcall::"))
}

fn write_stderr_line(record: &Record<'_>) {
    let line = format_line(SystemClock.wall(), record);
    // One write per line so concurrent lines never interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `TIMESTAMP LEVEL target: message key=value …\n`, values quoted when they contain spaces.
pub fn format_line(at: std::time::SystemTime, record: &Record<'_>) -> String {
    struct Kv<'a>(&'a mut String);
    impl<'kvs> log::kv::VisitSource<'kvs> for Kv<'_> {
        fn visit_pair(
            &mut self,
            key: log::kv::Key<'kvs>,
            value: log::kv::Value<'kvs>,
        ) -> Result<(), log::kv::Error> {
            let v = value.to_string();
            let quote = v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == '"');
            self.0.push(' ');
            self.0.push_str(key.as_str());
            self.0.push('=');
            if quote {
                self.0.push_str(&format!("{v:?}"));
            } else {
                self.0.push_str(&v);
            }
            Ok(())
        }
    }
    let mut line = format!(
        "{} {:<5} {}: {}",
        rfc3339(at),
        record.level(),
        record.target(),
        record.args()
    );
    let _ = record.key_values().visit(&mut Kv(&mut line));
    // A message must stay one line, whatever a dependency put in it.
    let mut line = line.replace(['\n', '\r'], " ");
    line.push('\n');
    line
}

/// Installs the process logger. Call once, first thing in `serve` and in CLI commands.
pub fn init(level: LogLevel, target: LogTarget) -> Result<Sink, TelemetryError> {
    let journal_ok = Path::new(JOURNAL_SOCKET).exists();
    let (inner, sink) = match target {
        LogTarget::Stderr => (Inner::Stderr, Sink::Stderr),
        LogTarget::Journal => {
            let j = systemd_journal_logger::JournalLog::new().map_err(TelemetryError::NoJournal)?;
            (
                Inner::Journal(j.with_syslog_identifier("vaultcall".to_owned())),
                Sink::Journal,
            )
        }
        LogTarget::Auto => {
            if journal_ok && systemd_journal_logger::connected_to_journal() {
                match systemd_journal_logger::JournalLog::new() {
                    Ok(j) => (
                        Inner::Journal(j.with_syslog_identifier("vaultcall".to_owned())),
                        Sink::Journal,
                    ),
                    Err(_) => (Inner::Stderr, Sink::Stderr),
                }
            } else {
                (Inner::Stderr, Sink::Stderr)
            }
        }
    };
    log::set_boxed_logger(Box::new(VaultLogger { inner }))
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    set_level(level);
    Ok(sink)
}

/// Changes verbosity at run time (admin API, SIGHUP).
pub fn set_level(level: LogLevel) {
    log::set_max_level(level.filter());
}

/// The current verbosity.
pub fn level() -> LogLevel {
    let f = log::max_level();
    if f == LevelFilter::Off {
        LogLevel::Error
    } else {
        LogLevel::from_filter(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn stderr_line_has_fields_and_stays_on_one_line() {
        let args = format_args!("admin listening");
        let kvs: [(&str, log::kv::Value<'_>); 2] = [
            ("addr", log::kv::Value::from_display(&"127.0.0.1:8080")),
            (
                "note",
                log::kv::Value::from_display(&"two words\nand a break"),
            ),
        ];
        let rec = Record::builder()
            .args(args)
            .level(Level::Info)
            .target("vaultcall::admin")
            .key_values(&kvs)
            .build();
        let line = format_line(UNIX_EPOCH + Duration::from_secs(1), &rec);
        assert_eq!(
            line,
            "1970-01-01T00:00:01.000Z INFO  vaultcall::admin: admin listening addr=127.0.0.1:8080 note=\"two words\\nand a break\"\n"
        );
    }
}
