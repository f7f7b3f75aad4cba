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

/// The whole vault at trace level: calls with names, amounts and transcripts recorded, played,
/// downloaded, erased through the API and the shell (number in a JSON body, on stdin and in
/// argv), a bad number refused, receipts verified, retention swept, the audit log verified and
/// exported, the master key rotated and the daemon restarted. No log line — the daemon's or any
/// command's — and no audit export may contain a number, the name or what was said.
#[test]
fn a_vault_session_leaves_no_personal_data_in_logs() {
    use common::{close_records, records, vaultcall, vaultcall_stdin};
    use serde_json::json;
    use vaultcall::vault::stream::TranscriptLine;

    const OTHER: &str = "13900001111";
    const THIRD: &str = "13700002222";
    const PHRASES: [&str; 2] = ["我下周三一定还款", "逾期会影响征信"];
    const AMOUNT: &str = "3280.55";

    let mut d = Daemon::start("", "");
    let admin = d.bootstrap();
    let trace = d.req(
        "PUT",
        "/api/v1/log-level",
        Some(&admin),
        Some(r#"{"level":"trace"}"#),
    );
    assert_eq!(trace.status, 200);
    let (dpo, op) = (d.token(&admin, "compliance"), d.token(&admin, "operator"));
    let cfg = d.config.to_str().unwrap().to_owned();
    let mut stderr = String::new();
    let mut run = |args: &[&str], stdin: Option<&str>| {
        let o = match stdin {
            Some(s) => vaultcall_stdin(args, s),
            None => vaultcall(args),
        };
        stderr.push_str(&String::from_utf8_lossy(&o.stderr));
        o
    };

    let r = records(&d.config);
    common::insert_task(&r, 1);
    let s = r.ensure_subject(&r.normalize(PHONE).unwrap()).unwrap();
    r.add_task_number(1, &s, &json!({"name": NAME, "amount": AMOUNT}))
        .unwrap();
    r.put_prompt(&s, &format!("{NAME}您好，{AMOUNT}"), &[1; 160])
        .unwrap();
    let call = r.start_call(&s, None).unwrap();
    let mut t = r.start_transcript(&s, call).unwrap();
    for (seq, text) in [
        (1, format!("{NAME}您好")),
        (2, PHRASES[0].into()),
        (3, PHRASES[1].into()),
    ] {
        t.append_turn(
            &TranscriptLine {
                seq,
                speaker: "customer".into(),
                start_ms: 0,
                end_ms: 1,
                text,
            },
            None,
        )
        .unwrap();
    }
    let tid = t.id();
    t.finish().unwrap();
    drop(s);
    close_records(r);
    let o = run(
        &["dev", "record", "--config", &cfg, "--seconds", "1"],
        Some(&format!("{OTHER}\n")),
    );
    assert!(o.status.success());

    assert_eq!(
        d.get(&format!("/api/v1/recordings/{}/content", tid.0), Some(&op))
            .status,
        200
    );
    assert_eq!(
        d.get(
            &format!("/api/v1/recordings/{}/content?download=1", tid.0),
            Some(&op)
        )
        .status,
        200
    );
    assert_eq!(d.get("/api/v1/calls/2/recordings", Some(&op)).status, 200);
    let bad = json!({"phone": format!("{PHONE}x{NAME}"), "reason": "r", "ticket": "t"}).to_string();
    assert_eq!(
        d.req("POST", "/api/v1/erasure-requests", Some(&dpo), Some(&bad))
            .status,
        400
    );
    let body = json!({"phone": PHONE, "reason": "customer request", "ticket": "DPO-1"}).to_string();
    let e = d.req("POST", "/api/v1/erasure-requests", Some(&dpo), Some(&body));
    assert_eq!(e.status, 201);
    let uid = e.json()["request_id"].as_str().unwrap().to_owned();
    let receipt = d.get(
        &format!("/api/v1/erasure-requests/{uid}/receipt"),
        Some(&dpo),
    );
    let rfile = d.dir.join("r.json");
    std::fs::write(&rfile, &receipt.body).unwrap();
    assert!(
        run(
            &["verify-receipt", rfile.to_str().unwrap(), "--config", &cfg],
            None
        )
        .status
        .success()
    );
    let o = run(
        &[
            "erase",
            "--config",
            &cfg,
            "--phone",
            OTHER,
            "--ticket",
            "DPO-2",
            "--reason",
            "customer request",
        ],
        None,
    );
    assert!(o.status.success());
    let o = run(
        &[
            "erase", "--config", &cfg, "--phone", "-", "--ticket", "DPO-3", "--reason", "r",
        ],
        Some(&format!("{THIRD}\n")),
    );
    assert!(o.status.success());
    let o = run(
        &[
            "erase",
            "--config",
            &cfg,
            "--phone",
            &format!("{NAME}{PHONE}"),
            "--ticket",
            "DPO-4",
            "--reason",
            "r",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(64));
    assert!(
        run(&["retention", "sweep", "--config", &cfg], None)
            .status
            .success()
    );
    assert!(
        run(&["audit", "verify", "--config", &cfg], None)
            .status
            .success()
    );
    let export = run(
        &["audit", "export", "--config", &cfg, "--since", "2000-01-01"],
        None,
    );
    assert!(export.status.success());
    assert!(
        run(&["keys", "show-public", "--config", &cfg], None)
            .status
            .success()
    );
    d.stop();
    let new_key = d.dir.join("next.key");
    let o = run(
        &[
            "keys",
            "rotate",
            "--config",
            &cfg,
            "--new-key",
            new_key.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&d.config).unwrap();
    let mut d = Daemon::start_in(&d.dir.clone(), &text);
    d.stop();

    let log = d.log_text();
    assert!(
        log.contains("erasure finished") && log.contains("retention sweep finished"),
        "{log}"
    );
    let export = String::from_utf8(export.stdout).unwrap();
    for (what, text) in [
        ("daemon log", &log),
        ("command stderr", &stderr),
        ("audit export", &export),
    ] {
        for line in text.lines() {
            for needle in [
                PHONE, OTHER, THIRD, NAME, PHRASES[0], PHRASES[1], AMOUNT, "138-1234", "1381234",
            ] {
                assert!(!line.contains(needle), "{what} contains {needle}: {line}");
            }
            if what != "audit export" {
                assert!(
                    phone_like(line).is_none(),
                    "phone-like digits in {what}: {line}"
                );
            }
        }
    }
}
