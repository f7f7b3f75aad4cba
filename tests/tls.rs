//! The admin API over TLS (rustls 0.23) with a self-signed pair, checked with a real client:
//! curl. Also checks certificate reload on SIGHUP.
#![allow(clippy::disallowed_methods)] // tests drive a real daemon in real time

mod common;

use std::process::Command;

use common::{BIN, Daemon};

fn curl(args: &[&str]) -> (i32, String) {
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

fn make_pair(dir: &std::path::Path) -> (String, String) {
    let o = Command::new(BIN)
        .args(["admin", "self-signed", "--out-dir"])
        .arg(dir)
        .args(["--name", "127.0.0.1", "--name", "localhost", "--days", "30"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("SHA-256 fingerprint"), "{out}");
    (
        dir.join("admin-cert.pem").display().to_string(),
        dir.join("admin-key.pem").display().to_string(),
    )
}

#[test]
fn curl_talks_tls_to_the_admin_api() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = make_pair(certs.path());
    let tls = format!("[admin.tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n");
    let mut d = Daemon::start("", &tls);
    assert!(
        d.notes.iter().any(|n| n.contains("admin=https://")),
        "{:?}",
        d.notes
    );
    let url = format!("https://127.0.0.1:{}/healthz", d.admin.port());

    let (code, out) = curl(&["--cacert", &cert, &url]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), r#"{"status":"ok"}"#);
    let (code, out) = curl(&["--cacert", &cert, "-D", "-", "-o", "/dev/null", &url]);
    assert_eq!(code, 0);
    assert!(
        out.to_lowercase().contains("strict-transport-security"),
        "{out}"
    );

    // Without the CA the certificate is rejected; plain HTTP gets nowhere.
    let (code, _) = curl(&[&url]);
    assert_eq!(code, 60, "expected curl's certificate error");
    let (code, _) = curl(&[&format!("http://127.0.0.1:{}/healthz", d.admin.port())]);
    assert_ne!(code, 0);

    // Tokens work over TLS, TLS 1.2 as well as 1.3.
    let admin = d.bootstrap();
    let who = format!("https://127.0.0.1:{}/api/v1/whoami", d.admin.port());
    for v in ["--tlsv1.2", "--tlsv1.3"] {
        let (code, out) = curl(&[
            v,
            "--cacert",
            &cert,
            "-H",
            &format!("Authorization: Bearer {admin}"),
            &who,
        ]);
        assert_eq!(code, 0, "{v}: {out}");
        assert!(out.contains("\"role\":\"admin\""), "{out}");
    }

    // A renewed certificate is picked up on SIGHUP without a restart.
    std::fs::remove_file(&cert).unwrap();
    std::fs::remove_file(&key).unwrap();
    let (cert2, _) = make_pair(certs.path());
    let (code, _) = curl(&["--cacert", &cert2, &url]);
    assert_eq!(
        code, 60,
        "old certificate still served before reload (expected)"
    );
    d.signal(libc::SIGHUP);
    // A generous wait for a loaded machine; not a timing assertion.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (code, out) = curl(&["--cacert", &cert2, &url]);
        if code == 0 {
            assert_eq!(out.trim(), r#"{"status":"ok"}"#);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "new certificate not served: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    d.stop();
}
