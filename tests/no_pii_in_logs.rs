//! No personal data in logs: a session at trace level that pushes phone numbers, names and
//! secrets at every input the daemon has today (API paths, queries, bodies, headers, bad tokens,
//! SIP datagrams) must not leave any of them in a log line.
#![allow(clippy::disallowed_methods)] // tests drive a real daemon in real time

mod common;

use common::{Daemon, http};

const PHONE: &str = "13812345678";
const NAME: &str = "张伟";

fn phone_like(line: &str) -> Option<String> {
    // A run of 7+ decimal digits not part of a longer alphanumeric token (hashes are hex).
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let before = start.checked_sub(1).map(|j| b[j]);
            let after = b.get(i).copied();
            let alnum = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphanumeric());
            if i - start >= 7 && !alnum(before) && !alnum(after) {
                return Some(line[start..i].to_owned());
            }
        } else {
            i += 1;
        }
    }
    None
}

#[test]
fn phone_like_detector_works() {
    assert_eq!(phone_like("x tel=13812345678 y"), Some(PHONE.to_owned()));
    assert_eq!(phone_like("h:ab12cd34ef56 2026-11-21T08:11:46.932Z"), None);
    assert_eq!(phone_like("key=kek-1234567abc"), None);
}

#[test]
fn a_session_leaves_no_personal_data_in_logs() {
    let mut d = Daemon::start("", "");
    let admin = d.bootstrap();
    let r = d.req(
        "PUT",
        "/api/v1/log-level",
        Some(&admin),
        Some(r#"{"level":"trace"}"#),
    );
    assert_eq!(r.status, 200);
    let auth = format!("Authorization: Bearer {admin}");
    for path in [
        format!("/api/v1/tokens/{PHONE}"),
        format!("/api/v1/calls?phone={PHONE}&name={NAME}"),
        format!("/{PHONE}"),
    ] {
        http(d.admin, "GET", &path, std::slice::from_ref(&auth), None);
        http(d.admin, "DELETE", &path, std::slice::from_ref(&auth), None);
        http(d.admin, "GET", &path, &[], None);
    }
    let body = format!(r#"{{"name":"{NAME} {PHONE}","role":"operator"}}"#);
    http(
        d.admin,
        "POST",
        "/api/v1/tokens",
        std::slice::from_ref(&auth),
        Some(body.as_bytes()),
    );
    let bad = format!(r#"{{"name":"{NAME}","role":"{PHONE}"}}"#);
    http(
        d.admin,
        "POST",
        "/api/v1/tokens",
        std::slice::from_ref(&auth),
        Some(bad.as_bytes()),
    );
    http(
        d.admin,
        "GET",
        "/api/v1/whoami",
        &[format!("Authorization: Bearer {PHONE}")],
        None,
    );
    http(
        d.admin,
        "GET",
        "/api/v1/whoami",
        &[format!("X-Customer: {PHONE} {NAME}")],
        None,
    );
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let invite =
        format!("INVITE sip:{PHONE}@127.0.0.1 SIP/2.0\r\nFrom: \"{NAME}\" <sip:{PHONE}@x>\r\n\r\n");
    sock.send_to(invite.as_bytes(), d.sip).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    d.stop();

    let log = d.log_text();
    assert!(
        log.lines().count() > 10,
        "expected a trace-level session log:\n{log}"
    );
    let secret = admin.rsplit('_').next().unwrap();
    for line in log.lines() {
        assert!(!line.contains(PHONE), "phone number in log: {line}");
        assert!(!line.contains(NAME), "name in log: {line}");
        assert!(!line.contains(secret), "token secret in log: {line}");
        assert!(
            phone_like(line).is_none(),
            "phone-like digits in log: {line}"
        );
    }
}
