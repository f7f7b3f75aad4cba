//! Test harness: runs the real `vaultcall` binary as a daemon on 127.0.0.1 with ephemeral
//! ports, a temporary data directory and a fake `NOTIFY_SOCKET`, the way systemd would.
#![allow(clippy::disallowed_methods)] // tests drive a real daemon in real time
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_vaultcall");

/// A daemon under test.
pub struct Daemon {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub notify: UnixDatagram,
    pub admin: SocketAddr,
    pub sip: SocketAddr,
    pub log: PathBuf,
    /// Every sd_notify message received so far.
    pub notes: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

/// The config a test daemon runs with, plus `extra` TOML appended to it (sections it adds
/// must not repeat `[admin]`, `[sip]`, `[paths]`, `[log]` — use `admin_extra` for [admin] keys).
pub fn test_config(dir: &Path, admin_extra: &str, extra: &str) -> String {
    format!(
        "[paths]\ndata_dir = \"{d}\"\n\n[log]\nlevel = \"debug\"\ntarget = \"stderr\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n{admin_extra}\n\n[sip]\nlisten = \"127.0.0.1:0\"\n\n{extra}\n",
        d = dir.display()
    )
}

impl Daemon {
    /// Starts a daemon in a fresh temporary directory.
    pub fn start(admin_extra: &str, extra: &str) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let mut d = Self::start_in(&dir, &test_config(&dir, admin_extra, extra));
        d._tmp = Some(tmp);
        d
    }

    /// Starts a daemon with `config_text` in `dir` (reused across restarts).
    pub fn start_in(dir: &Path, config_text: &str) -> Self {
        Self::start_in_env(dir, config_text, &[])
    }

    /// Like [`Daemon::start_in`], with extra environment variables.
    pub fn start_in_env(dir: &Path, config_text: &str, env: &[(&str, String)]) -> Self {
        let config = dir.join("vaultcall.toml");
        std::fs::write(&config, config_text).expect("write config");
        let notify_path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let log = dir.join(format!("daemon-{}.log", std::process::id()));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("STATE_DIRECTORY")
            .env_remove("RUNTIME_DIRECTORY")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("WATCHDOG_USEC")
            .env_remove("VAULTCALL_CONFIG")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn vaultcall");
        let mut d = Self {
            dir: dir.to_owned(),
            config,
            child: Some(child),
            notify,
            admin: "0.0.0.0:0".parse().expect("addr"),
            sip: "0.0.0.0:0".parse().expect("addr"),
            log,
            notes: Vec::new(),
            _tmp: None,
        };
        let ready = d.wait_note("READY=1", Duration::from_secs(30));
        let status = ready
            .lines()
            .find_map(|l| l.strip_prefix("STATUS="))
            .unwrap_or_else(|| panic!("READY without STATUS: {ready:?}"));
        for word in status.split_whitespace() {
            if let Some(a) = word
                .strip_prefix("admin=http://")
                .or_else(|| word.strip_prefix("admin=https://"))
            {
                d.admin = a.parse().expect("admin addr");
            }
            if let Some(a) = word.strip_prefix("sip=udp:") {
                d.sip = a.parse().expect("sip addr");
            }
        }
        d
    }

    /// Waits for an sd_notify message containing `needle`; panics with the log on timeout.
    pub fn wait_note(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(n) = self.notes.iter().find(|n| n.contains(needle)) {
            return n.clone();
        }
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.notes.push(msg.clone());
                if msg.contains(needle) {
                    return msg;
                }
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "daemon exited ({status}) before {needle}; log:\n{}",
                    self.log_text()
                );
            }
        }
        panic!("no {needle} within {timeout:?}; log:\n{}", self.log_text());
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "kill failed");
    }

    /// Waits for the process to exit; returns its exit code (None if killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "daemon did not exit within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then expects STOPPING=1 and exit code 0.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        self.wait_note("STOPPING=1", Duration::from_secs(10));
        let code = self.wait_exit(Duration::from_secs(30));
        assert_eq!(code, Some(0), "unclean exit; log:\n{}", self.log_text());
    }

    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.wait_exit(Duration::from_secs(10));
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("vaultcall.db")
    }

    /// Runs a CLI command against this daemon's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("VAULTCALL_CONFIG")
            .output()
            .expect("run vaultcall")
    }

    /// Creates a token of `role` with the admin token; returns the bearer.
    pub fn token(&self, admin: &str, role: &str) -> String {
        let body = format!(r#"{{"name":"{role} token","role":"{role}"}}"#);
        let r = self.req("POST", "/api/v1/tokens", Some(admin), Some(&body));
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["token"].as_str().expect("token").to_owned()
    }

    /// Creates the first admin token with the CLI.
    pub fn bootstrap(&self) -> String {
        let out = self.cli(&["admin", "bootstrap", "--token-only"]);
        assert!(
            out.status.success(),
            "bootstrap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_owned()
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.req("GET", path, token, None)
    }

    pub fn req(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Resp {
        let mut headers = Vec::new();
        if let Some(t) = token {
            headers.push(format!("Authorization: Bearer {t}"));
        }
        if body.is_some() {
            headers.push("Content-Type: application/json".to_owned());
        }
        http(self.admin, method, path, &headers, body.map(str::as_bytes))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close`; headers are full "Name: value" lines.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[String],
    body: Option<&[u8]>,
) -> Resp {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    if let Some(b) = body {
        raw.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    raw.push_str("\r\n");
    let mut bytes = raw.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    raw_http(addr, &bytes)
}

/// Sends raw bytes and parses the response.
pub fn raw_http(addr: SocketAddr, bytes: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_response(&out)
}

pub fn parse_response(out: &[u8]) -> Resp {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(out)));
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Resp {
        status,
        headers,
        body: out[split + 4..].to_vec(),
    }
}

/// Runs the binary with arguments and no config in the environment.
pub fn vaultcall(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("VAULTCALL_CONFIG")
        .output()
        .expect("run vaultcall")
}

/// The records service on a test daemon's data directory, opened in this process the way the
/// CLI opens it (same config, same master key).
pub fn records(config: &Path) -> vaultcall::records::Records {
    let cfg = vaultcall::config::Config::load(config).expect("config");
    vaultcall::records::cli::open_records(&cfg).unwrap_or_else(|f| panic!("{}", f.message))
}

/// Creates task `id` (running) so task numbers can be added to it.
pub fn insert_task(r: &vaultcall::records::Records, id: i64) {
    r.store()
        .write(move |c| {
            c.execute(
                "INSERT INTO tasks (id, name, status, created_at_ms, updated_at_ms) VALUES (?1, 'test task', 'running', 1, 1)",
                [id],
            )?;
            Ok(())
        })
        .expect("insert task");
}

/// Closes a records service opened with [`records`].
pub fn close_records(r: vaultcall::records::Records) {
    r.store().clone().close();
}

/// Runs the binary with `args` and `stdin` as its standard input.
pub fn vaultcall_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("VAULTCALL_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vaultcall");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// Every file under `dir` whose bytes contain one of `needles`: (path, needle label).
pub fn find_bytes(dir: &Path, needles: &[(String, Vec<u8>)]) -> Vec<(PathBuf, String)> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                for (label, n) in needles {
                    if !n.is_empty() && bytes.windows(n.len()).any(|w| w == &n[..]) {
                        hits.push((p.clone(), label.clone()));
                    }
                }
            }
        }
    }
    hits
}

/// Ways a text can be stored: UTF-8, UTF-16 LE and BE.
pub fn encodings(label: &str, text: &str) -> Vec<(String, Vec<u8>)> {
    let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    vec![
        (format!("{label} utf-8"), text.as_bytes().to_vec()),
        (format!("{label} utf-16le"), le),
        (format!("{label} utf-16be"), be),
    ]
}
