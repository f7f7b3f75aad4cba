//! Command-line behaviour: exit codes (0, 64, 78, 1) and one clear line on stderr.
#![allow(clippy::disallowed_methods)] // tests drive a real daemon in real time

mod common;

use common::{Daemon, test_config, vaultcall};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn one_line(s: &str) -> &str {
    let t = s.trim_end();
    assert!(!t.contains('\n'), "expected one line on stderr, got:\n{s}");
    t
}

#[test]
fn version_prints_and_exits_zero() {
    let o = vaultcall(&["version"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with(&format!("vaultcall {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(out.contains("database schema 3"), "{out}");
}

#[test]
fn usage_errors_exit_64_with_one_line() {
    let o = vaultcall(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(64));
    let line = one_line(&stderr(&o)).to_owned();
    assert!(line.contains("frobnicate"), "{line}");
    let o = vaultcall(&["serve", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(64));
    one_line(&stderr(&o));
    assert_eq!(vaultcall(&[]).status.code(), Some(64));
    assert_eq!(vaultcall(&["--help"]).status.code(), Some(0));
}

#[test]
fn shipped_config_is_accepted() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/vaultcall.toml");
    let o = vaultcall(&["check-config", path]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

fn check(text: &str) -> (Option<i32>, String) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.toml");
    std::fs::write(&p, text).unwrap();
    let o = vaultcall(&["check-config", p.to_str().unwrap()]);
    (o.status.code(), one_line(&stderr(&o)).to_owned())
}

#[test]
fn unknown_key_exits_78_naming_it() {
    let (code, line) = check("[store]\nbusy_timeout = 5\n");
    assert_eq!(code, Some(78));
    assert!(line.contains("store.busy_timeout"), "{line}");
    let (code, line) = check("log_level = \"info\"\n");
    assert_eq!(code, Some(78));
    assert!(line.contains("log_level"), "{line}");
}

#[test]
fn bad_values_exit_78_naming_key_and_allowed_values() {
    let (code, line) = check("[store]\nsynchronous = \"sometimes\"\n");
    assert_eq!(code, Some(78));
    assert!(
        line.contains("store.synchronous") && line.contains("full") && line.contains("normal"),
        "{line}"
    );
    let (code, line) = check("[admin]\nmax_connections = 0\n");
    assert_eq!(code, Some(78));
    assert!(
        line.contains("admin.max_connections") && line.contains("1 to 4096"),
        "{line}"
    );
    let (code, line) = check("[admin]\nlisten = \"not an address\"\n");
    assert_eq!(code, Some(78));
    assert!(line.contains("admin.listen"), "{line}");
}

#[test]
fn missing_config_file_exits_78() {
    let o = vaultcall(&["check-config", "/nonexistent/vaultcall.toml"]);
    assert_eq!(o.status.code(), Some(78));
    assert!(one_line(&stderr(&o)).contains("/nonexistent/vaultcall.toml"));
}

#[test]
fn non_loopback_admin_without_tls_is_refused() {
    let d = tempfile::tempdir().unwrap();
    // The first listen address in the test config is admin's.
    let cfg = test_config(d.path(), "", "").replacen("127.0.0.1:0", "0.0.0.0:0", 1);
    assert!(cfg.contains("0.0.0.0:0"), "{cfg}");
    let p = d.path().join("c.toml");
    std::fs::write(&p, cfg).unwrap();
    let o = vaultcall(&["serve", "--config", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(78));
    let line = one_line(&stderr(&o)).to_owned();
    assert!(
        line.contains("admin.listen") && line.contains("admin.tls"),
        "{line}"
    );
    assert!(
        !d.path().join("vaultcall.db").exists(),
        "nothing may start before the config is valid"
    );
}

#[test]
fn master_key_readable_by_others_is_refused_with_78() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("master.key");
    std::fs::write(&key, [1u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = d.path().join("c.toml");
    std::fs::write(
        &p,
        test_config(d.path(), "", "[vault]\ncreate_master_key = false\n"),
    )
    .unwrap();
    let o = vaultcall(&["serve", "--config", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(78));
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("vaultcall: ") && last.contains("master key"),
        "{err}"
    );
}

#[test]
fn port_in_use_is_a_runtime_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let d = tempfile::tempdir().unwrap();
    let cfg =
        test_config(d.path(), "", "").replacen("127.0.0.1:0", &format!("127.0.0.1:{port}"), 1);
    let p = d.path().join("c.toml");
    std::fs::write(&p, cfg).unwrap();
    let o = vaultcall(&["serve", "--config", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.lines()
            .last()
            .unwrap_or_default()
            .contains("admin.listen"),
        "{err}"
    );
}

#[test]
fn bootstrap_refuses_a_second_admin_unless_forced() {
    let d = Daemon::start("", "");
    let t1 = d.bootstrap();
    assert!(t1.starts_with("vct_"), "{t1}");
    let again = d.cli(&["admin", "bootstrap"]);
    assert_eq!(again.status.code(), Some(1));
    one_line(&stderr(&again));
    let forced = d.cli(&["admin", "bootstrap", "--force", "--name", "second"]);
    assert!(forced.status.success());
    let text = String::from_utf8_lossy(&forced.stdout);
    assert!(text.contains("shown only this once"), "{text}");
    let list = d.cli(&["admin", "tokens"]);
    let listing = String::from_utf8_lossy(&list.stdout);
    assert_eq!(listing.lines().count(), 3, "{listing}");
    let secret = t1.rsplit('_').next().unwrap();
    assert!(
        !listing.contains(secret),
        "token list must not show secrets"
    );
    let id = t1.split('_').nth(1).unwrap();
    assert!(d.cli(&["admin", "revoke", id]).status.success());
    assert_eq!(d.cli(&["admin", "revoke", id]).status.code(), Some(1));
    assert_eq!(d.get("/api/v1/whoami", Some(&t1)).status, 401);
}
