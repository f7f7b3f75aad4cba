//! The architecture rules of DESIGN.md, checked on the source text:
//! - core modules are sans-IO: no tokio, sockets, files, threads, locks, clocks, sleeping;
//! - only src/time.rs reads the system clock;
//! - dependency direction: store and vault never reach into the shell or the cores;
//!   cores never reach into the shell.

use std::path::{Path, PathBuf};

/// Core modules (sans-IO). Within `speech/`, the files that own ONNX sessions and threads are
/// shell and listed in `SPEECH_SHELL`.
const CORES: &[&str] = &["sip", "media", "conversation", "call", "dialer", "speech"];
const SPEECH_SHELL: &[&str] = &["worker.rs", "onnx.rs"];
const SHELL: &[&str] = &[
    "runtime",
    "app",
    "admin",
    "store",
    "vault",
    "main",
    "scriptctl",
    "records",
    "speechctl",
];

/// What a core must not use. Address *values* (`std::net::SocketAddr`, `IpAddr`) are plain
/// data and allowed; sockets and name resolution are not.
const CORE_FORBIDDEN: &[&str] = &[
    "tokio",
    "UdpSocket",
    "TcpStream",
    "TcpListener",
    "UnixStream",
    "UnixDatagram",
    "ToSocketAddrs",
    "lookup_host",
    "std::fs",
    "std::thread",
    "std::process",
    "Mutex",
    "RwLock",
    "Instant::now",
    "SystemTime::now",
    "sleep(",
    "crate::fs",
    "crate::time::SystemClock",
];

fn rs_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(rs_files(&p));
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The code of a file without comments (doc comments may mention forbidden words) and
/// without its `#[cfg(test)]` module (tests may read the clock to get an epoch).
fn code(p: &Path) -> String {
    let text = std::fs::read_to_string(p).unwrap();
    let production = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or_default()
        .to_owned();
    production
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn module_files(name: &str) -> Vec<PathBuf> {
    let mut v = rs_files(&src().join(name));
    let single = src().join(format!("{name}.rs"));
    if single.exists() {
        v.push(single);
    }
    v
}

#[test]
fn cores_are_sans_io() {
    let mut violations = Vec::new();
    for core in CORES {
        for f in module_files(core) {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with("_tests.rs") {
                continue;
            }
            if *core == "speech" && SPEECH_SHELL.contains(&name.as_str()) {
                continue;
            }
            let text = code(&f);
            for bad in CORE_FORBIDDEN {
                if text.contains(bad) {
                    violations.push(format!("{}: uses {bad}", f.display()));
                }
            }
            for shell in SHELL {
                if text.contains(&format!("crate::{shell}")) {
                    violations.push(format!("{}: depends on shell module {shell}", f.display()));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "sans-IO violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn only_time_rs_reads_the_clock() {
    let mut violations = Vec::new();
    for f in rs_files(&src()) {
        if f.ends_with("time.rs") && f.parent() == Some(src().as_path()) {
            continue;
        }
        let text = code(&f);
        for bad in ["Instant::now()", "SystemTime::now()"] {
            if text.contains(bad) {
                violations.push(format!("{}: {bad}", f.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "clock reads outside time.rs:\n{}",
        violations.join("\n")
    );
}

#[test]
fn store_and_vault_depend_only_on_plain_modules() {
    let mut violations = Vec::new();
    for m in ["store", "vault"] {
        for f in module_files(m) {
            let text = code(&f);
            for other in SHELL.iter().chain(CORES).filter(|o| **o != m) {
                if text.contains(&format!("crate::{other}::"))
                    || text.contains(&format!("crate::{other};"))
                {
                    violations.push(format!("{}: depends on {other}", f.display()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_rules_see_the_tree() {
    // Guard against the checks above silently scanning nothing.
    assert!(rs_files(&src()).len() > 10);
    assert!(module_files("store").len() >= 3);
}
