//! The admin API against a real daemon: health, metrics, tokens and roles, what a caller can
//! learn without the right token, rate limiting, limits, run-time log level, reload, audit.
#![allow(clippy::disallowed_methods)] // tests drive a real daemon in real time

mod common;

use std::time::Duration;

use common::{Daemon, http, raw_http};
use serde_json::json;

fn create_token(d: &Daemon, admin: &str, role: &str) -> (String, String) {
    let r = d.req(
        "POST",
        "/api/v1/tokens",
        Some(admin),
        Some(&json!({"name": format!("{role} token"), "role": role}).to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn health_ready_and_metrics_answer_without_a_token() {
    let mut d = Daemon::start("", "");
    let h = d.get("/healthz", None);
    assert_eq!(h.status, 200);
    assert_eq!(h.json(), json!({"status": "ok"}));
    assert_eq!(d.get("/readyz", None).json(), json!({"status": "ready"}));
    let _ = d.get("/api/v1/status", None);
    let m = d.get("/metrics", None);
    assert_eq!(m.status, 200);
    assert!(
        m.header("Content-Type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = m.text();
    for needle in [
        "vaultcall_build_info{version=\"",
        "vaultcall_uptime_seconds ",
        "vaultcall_db_size_bytes ",
        "vaultcall_admin_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1",
        "vaultcall_admin_requests_total{route=\"unmatched\",method=\"GET\",status=\"401\"} 1",
        "vaultcall_admin_request_seconds_bucket{route=\"/readyz\",le=\"+Inf\"} 1",
        // Its value depends on what the writer is doing at that moment.
        "vaultcall_store_write_queue_depth ",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let db: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("vaultcall_db_size_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(db > 10_000.0, "{db}");
    d.stop();
}

#[test]
fn without_a_valid_token_every_api_path_is_401_alike() {
    // Many bad tokens from one address: keep the lockout out of this test's way.
    let d = Daemon::start("", "[admin.login_limit]\nmax_failures = 1000\n");
    let admin = d.bootstrap();
    let (op_id, _) = create_token(&d, &admin, "operator");
    let garbage = format!("vct_0123456789_{}", "ab".repeat(32));
    let mut bodies = Vec::new();
    for path in [
        "/api/v1/tokens",
        "/api/v1/no-such-thing",
        &format!("/api/v1/tokens/{op_id}"),
        "/api/v1/tokens/ffffffffff",
        "/api",
    ] {
        for tok in [None, Some("nonsense"), Some(garbage.as_str())] {
            let r = d.get(path, tok);
            assert_eq!(r.status, 401, "{path} {tok:?}: {}", r.text());
            assert_eq!(
                r.header("WWW-Authenticate"),
                Some("Bearer realm=\"vaultcall\"")
            );
            bodies.push(r.text());
        }
        let r = d.req("DELETE", path, None, None);
        assert_eq!(r.status, 401, "{path}");
    }
    bodies.dedup();
    assert_eq!(bodies.len(), 1, "401 bodies differ: {bodies:?}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&bodies[0]).unwrap()["error"]["code"],
        "unauthorized"
    );
}

#[test]
fn wrong_role_is_403_whether_or_not_the_resource_exists() {
    let d = Daemon::start("", "");
    let admin = d.bootstrap();
    let (op_id, op) = create_token(&d, &admin, "operator");
    let (_, auditor) = create_token(&d, &admin, "auditor");
    let existing = d.req(
        "DELETE",
        &format!("/api/v1/tokens/{op_id}"),
        Some(&auditor),
        None,
    );
    let missing = d.req("DELETE", "/api/v1/tokens/ffffffffff", Some(&auditor), None);
    assert_eq!(existing.status, 403);
    assert_eq!(missing.status, 403);
    assert_eq!(existing.text(), missing.text());
    assert_eq!(existing.json()["error"]["code"], "forbidden");
    assert_eq!(d.get("/api/v1/tokens", Some(&op)).status, 403);
    assert_eq!(
        d.req(
            "PUT",
            "/api/v1/log-level",
            Some(&op),
            Some(r#"{"level":"trace"}"#)
        )
        .status,
        403
    );
    // An auditor reads the audit log and sees the denials recorded.
    let audit = d.get("/api/v1/audit?limit=1000", Some(&auditor));
    assert_eq!(audit.status, 200);
    let entries = audit.json()["entries"].as_array().unwrap().clone();
    let denied = entries.iter().filter(|e| e["result"] == "denied").count();
    assert_eq!(denied, 4, "{entries:?}");
    // The token still works: the denial revoked nothing.
    assert_eq!(
        d.get(&format!("/api/v1/tokens/{op_id}"), Some(&admin))
            .status,
        405
    );
}

#[test]
fn token_lifecycle_create_list_revoke() {
    let d = Daemon::start("", "");
    let admin = d.bootstrap();
    let (id, op) = create_token(&d, &admin, "operator");
    let who = d.get("/api/v1/whoami", Some(&op)).json();
    assert_eq!(who["role"], "operator");
    assert_eq!(who["id"], id.as_str());
    assert!(
        who["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("tasks.write"))
    );
    assert!(
        !who["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("tokens.manage"))
    );

    let list = d.get("/api/v1/tokens", Some(&admin));
    assert_eq!(list.status, 200);
    let text = list.text();
    let secret = op.rsplit('_').next().unwrap();
    assert!(!text.contains(secret), "list leaks a secret");
    assert!(
        !text.contains("hash") && !text.contains("salt") && !text.contains("\"token\""),
        "{text}"
    );
    let tokens = list.json()["tokens"].as_array().unwrap().clone();
    assert_eq!(tokens.len(), 2);
    assert!(tokens.iter().all(|t| t["active"] == true));

    let r = d.req(
        "DELETE",
        &format!("/api/v1/tokens/{id}"),
        Some(&admin),
        None,
    );
    assert_eq!(r.status, 204);
    assert_eq!(d.get("/api/v1/whoami", Some(&op)).status, 401);
    assert_eq!(
        d.req(
            "DELETE",
            &format!("/api/v1/tokens/{id}"),
            Some(&admin),
            None
        )
        .status,
        404
    );
    assert_eq!(
        d.req("DELETE", "/api/v1/tokens/ffffffffff", Some(&admin), None)
            .status,
        404
    );
    let listed = d.get("/api/v1/tokens", Some(&admin)).json();
    let revoked = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(revoked["active"], false);
    assert!(revoked["revoked_at"].is_string());

    // Validation errors are JSON 400s that say what is allowed.
    let bad = d.req(
        "POST",
        "/api/v1/tokens",
        Some(&admin),
        Some(r#"{"name":"x","role":"root"}"#),
    );
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("compliance")
    );
    let bad = d.req(
        "POST",
        "/api/v1/tokens",
        Some(&admin),
        Some(r#"{"name":"x","role":"admin","extra":1}"#),
    );
    assert_eq!(bad.status, 400);
    let bad = d.req("POST", "/api/v1/tokens", Some(&admin), Some("not json"));
    assert_eq!(bad.status, 400);

    // Known path, wrong method: 405 with Allow; unknown path with a token: 404.
    let r = d.req("PUT", "/api/v1/tokens", Some(&admin), Some("{}"));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, POST"));
    assert_eq!(d.get("/api/v1/nothing-here", Some(&admin)).status, 404);
    assert_eq!(d.get("/nothing-here", None).status, 404);

    let v = d.get("/api/v1/audit/verify", Some(&admin)).json();
    assert_eq!(v["intact"], true);
    assert!(v["entries"].as_u64().unwrap() >= 3);
}

#[test]
fn repeated_failed_logins_lock_the_address_out() {
    let d = Daemon::start(
        "",
        "[admin.login_limit]\nmax_failures = 3\nwindow_secs = 60\nlockout_secs = 120\n",
    );
    let admin = d.bootstrap();
    let wrong = format!("{}0", &admin[..admin.len() - 1]);
    let wrong = if wrong == admin {
        format!("{}1", &admin[..admin.len() - 1])
    } else {
        wrong
    };
    for _ in 0..3 {
        assert_eq!(d.get("/api/v1/whoami", Some(&wrong)).status, 401);
    }
    let locked = d.get("/api/v1/whoami", Some(&admin));
    assert_eq!(locked.status, 429, "{}", locked.text());
    let retry: u64 = locked.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=120).contains(&retry));
    assert_eq!(locked.json()["error"]["code"], "too_many_failures");
    // The lockout is in the audit log (read straight from the database: the API is locked).
    let conn = rusqlite::Connection::open(d.db_path()).unwrap();
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM audit_log WHERE action = 'auth.lockout'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    // Public endpoints stay reachable.
    assert_eq!(d.get("/healthz", None).status, 200);
}

#[test]
fn request_limits_are_enforced_before_the_api() {
    let d = Daemon::start(
        "max_body_bytes = 2048\nmax_header_bytes = 2048\nidle_timeout_secs = 2",
        "",
    );
    let admin = d.bootstrap();
    let big = format!(r#"{{"name":"{}","role":"operator"}}"#, "x".repeat(4000));
    let r = d.req("POST", "/api/v1/tokens", Some(&admin), Some(&big));
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "body_too_large");
    let long = vec![format!("X-Padding: {}", "y".repeat(4000))];
    let r = http(d.admin, "GET", "/healthz", &long, None);
    assert_eq!(r.status, 431);
    let r = raw_http(
        d.admin,
        b"POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 411);
    let r = raw_http(d.admin, b"GARBAGE\x00\x01\r\n\r\n");
    assert_eq!(r.status, 400);
    // A client that sends half a request and stalls is cut off with 408.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(d.admin).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert_eq!(common::parse_response(&out).status, 408);
    // Keep-alive: two pipelined requests on one connection both answered, in order.
    let r = raw_http(
        d.admin,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("ready"),
        "second response missing: {}",
        r.text()
    );
    // A spoofed peer header does not reach the API (it would dodge the lockout).
    let spoof = vec![
        "X-Vaultcall-Peer: 203.0.113.9:1".to_owned(),
        format!("Authorization: Bearer {admin}"),
    ];
    assert_eq!(
        http(d.admin, "GET", "/api/v1/whoami", &spoof, None).status,
        200
    );
}

#[test]
fn log_level_changes_at_run_time_and_is_audited() {
    let d = Daemon::start("", "");
    let admin = d.bootstrap();
    assert_eq!(
        d.get("/api/v1/log-level", Some(&admin)).json()["level"],
        "debug"
    );
    let r = d.req(
        "PUT",
        "/api/v1/log-level",
        Some(&admin),
        Some(r#"{"level":"warn"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"level": "warn", "previous": "debug"}));
    assert_eq!(
        d.get("/api/v1/status", Some(&admin)).json()["log_level"],
        "warn"
    );
    let bad = d.req(
        "PUT",
        "/api/v1/log-level",
        Some(&admin),
        Some(r#"{"level":"loud"}"#),
    );
    assert_eq!(bad.status, 400);
    let audit = d.get("/api/v1/audit", Some(&admin)).json();
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "log_level.set"),
        "{audit}"
    );
    // Debug lines stop once the level is warn.
    let before = d
        .log_text()
        .lines()
        .filter(|l| l.contains(" DEBUG "))
        .count();
    for _ in 0..5 {
        d.get("/healthz", None);
    }
    let after = d
        .log_text()
        .lines()
        .filter(|l| l.contains(" DEBUG "))
        .count();
    assert_eq!(before, after);
}

#[test]
fn reload_applies_what_it_can_and_names_the_rest() {
    let mut d = Daemon::start("", "");
    let admin = d.bootstrap();
    let text = std::fs::read_to_string(&d.config).unwrap();
    let changed = text
        .replace("level = \"debug\"", "level = \"info\"")
        .replace("[sip]\nlisten = \"127.0.0.1:0\"", "[sip]\nlisten = \"127.0.0.1:0\"\n\n[lifecycle]\nshutdown_grace_secs = 5\n\n[store]\nbusy_timeout_ms = 1234");
    assert_ne!(changed, text);
    std::fs::write(&d.config, &changed).unwrap();
    let r = d.req("POST", "/api/v1/reload", Some(&admin), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        v["applied"],
        json!(["lifecycle.shutdown_grace_secs", "log.level"])
    );
    assert_eq!(v["restart_required"], json!(["store.busy_timeout_ms"]));
    assert_eq!(
        d.get("/api/v1/log-level", Some(&admin)).json()["level"],
        "info"
    );

    // A broken file is refused and the running config stays.
    std::fs::write(&d.config, format!("{changed}\n[bogus]\n")).unwrap();
    let r = d.req("POST", "/api/v1/reload", Some(&admin), None);
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains("bogus"));

    // SIGHUP does the same and says so in the log.
    std::fs::write(
        &d.config,
        changed.replace("level = \"info\"", "level = \"debug\""),
    )
    .unwrap();
    // The API reload above logged the same line: wait for one more.
    let before = d.log_text().matches("configuration reloaded").count();
    d.signal(libc::SIGHUP);
    // Generous waits: the machine may be loaded; these are not timing assertions.
    d.wait_note("RELOADING=1", Duration::from_secs(30));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while d.log_text().matches("configuration reloaded").count() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload line:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        d.get("/api/v1/log-level", Some(&admin)).json()["level"],
        "debug"
    );
    d.stop();
}

#[test]
fn draining_refuses_changes_and_exits_cleanly() {
    let mut d = Daemon::start("", "");
    let admin = d.bootstrap();
    assert_eq!(d.get("/readyz", None).status, 200);
    // Hold a connection open and idle: drain must close it rather than wait out the grace.
    let idle = std::net::TcpStream::connect(d.admin).unwrap();
    d.stop();
    drop(idle);
    let log = d.log_text();
    assert!(log.contains("draining") && log.contains("drained"), "{log}");
    let conn = rusqlite::Connection::open(d.db_path()).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let _ = admin;
}

#[test]
fn scripts_over_the_api_roles_validation_publish_and_audit() {
    let mut d = Daemon::start("", "");
    let admin = d.bootstrap();
    let (op_id, op) = create_token(&d, &admin, "operator");
    let (_, auditor) = create_token(&d, &admin, "auditor");
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/scripts/card-repayment-reminder.toml"
    ))
    .unwrap();
    let body = json!({ "content": text }).to_string();
    // Validation without storing; an invalid script lists its problems with their nodes.
    let r = d.req(
        "POST",
        "/api/v1/scripts/validate",
        Some(&auditor),
        Some(&body),
    );
    assert_eq!(
        (r.status, r.json()["valid"].clone()),
        (200, json!(true)),
        "{}",
        r.text()
    );
    let broken = json!({ "content": text.replace("goto = \"thanks_end\"", "goto = \"nowhere\"") })
        .to_string();
    let r = d.req("POST", "/api/v1/scripts", Some(&op), Some(&broken));
    assert_eq!(r.status, 422, "{}", r.text());
    let problems = r.json()["error"]["problems"].as_array().unwrap().clone();
    assert!(
        problems
            .iter()
            .any(|p| p["kind"] == "missing_node" && p["node"] == "confirm_promise"),
        "{problems:?}"
    );
    // The auditor reads but cannot write; the operator imports but cannot publish.
    assert_eq!(
        d.req("POST", "/api/v1/scripts", Some(&auditor), Some(&body))
            .status,
        403
    );
    let r = d.req("POST", "/api/v1/scripts", Some(&op), Some(&body));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        (r.json()["version"].clone(), r.json()["status"].clone()),
        (json!(1), json!("draft"))
    );
    let sha = r.json()["sha256"].as_str().unwrap().to_owned();
    let r = d.req("POST", "/api/v1/scripts", Some(&op), Some(&body));
    assert_eq!(
        (r.status, r.json()["result"].clone()),
        (200, json!("unchanged"))
    );
    let path = "/api/v1/scripts/card-repayment-reminder/publish";
    assert_eq!(d.req("POST", path, Some(&op), None).status, 403);
    let r = d.req("POST", path, Some(&admin), None);
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("published")),
        "{}",
        r.text()
    );
    assert_eq!(
        d.req("POST", path, Some(&admin), None).status,
        409,
        "nothing left to publish"
    );
    assert_eq!(
        d.req("POST", "/api/v1/scripts/nope/publish", Some(&admin), None)
            .status,
        404
    );
    // Reading: the list, the versions, the exact content.
    let list = d.get("/api/v1/scripts", Some(&auditor)).json();
    assert_eq!(list["scripts"][0]["sha256"], json!(sha));
    let v = d
        .get(
            "/api/v1/scripts/card-repayment-reminder/versions/1",
            Some(&auditor),
        )
        .json();
    assert_eq!(v["content"], json!(text));
    assert_eq!(
        d.get(
            "/api/v1/scripts/card-repayment-reminder/versions/2",
            Some(&auditor)
        )
        .status,
        404
    );
    assert_eq!(
        d.get("/api/v1/scripts/card-repayment-reminder", Some(&op))
            .json()["versions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Both changes are audited with who did them.
    let audit = d.get("/api/v1/audit?limit=1000", Some(&admin)).json();
    let entries = audit["entries"].as_array().unwrap();
    let import = entries
        .iter()
        .find(|e| e["action"] == "script.import")
        .unwrap();
    assert_eq!(
        (import["actor"].clone(), import["role"].clone()),
        (json!(op_id), json!("operator"))
    );
    assert_eq!(import["object"], json!("script:card-repayment-reminder@1"));
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "script.publish" && e["role"] == "admin")
    );
    assert_eq!(
        d.get("/api/v1/audit/verify", Some(&admin)).json()["intact"],
        json!(true)
    );
    d.stop();
}
