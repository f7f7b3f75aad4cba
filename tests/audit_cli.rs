//! `vaultcall audit verify` and `export` on a real database: an intact chain verifies with the
//! checkpoints the daemon logged; an edited, deleted, inserted or reordered entry, a chain
//! rewritten with fresh hashes, and a log cut back at its end are each caught and located; the
//! export is JSON Lines whose hashes chain.
#![allow(clippy::disallowed_methods)] // tests drive a real daemon in real time

mod common;

use std::path::Path;

use common::{Daemon, test_config, vaultcall};
use serde_json::{Value, json};

fn checkpoints(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("audit log checkpoint"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("checkpoint="))
        })
        .map(str::to_owned)
        .collect()
}

/// A copy of the database in a new directory with its own config; returns the config path.
fn copy(src: &Path, into: &Path) -> String {
    std::fs::create_dir_all(into).unwrap();
    std::fs::copy(src.join("vaultcall.db"), into.join("vaultcall.db")).unwrap();
    let cfg = into.join("vaultcall.toml");
    std::fs::write(&cfg, test_config(into, "", "")).unwrap();
    cfg.to_str().unwrap().to_owned()
}

fn tamper(cfg: &str, sql: &str) {
    let db = Path::new(cfg).with_file_name("vaultcall.db");
    let c = rusqlite::Connection::open(db).unwrap();
    // Someone with write access to the file: triggers are theirs to drop.
    c.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")
        .unwrap();
    c.execute_batch(sql).unwrap();
}

fn verify(cfg: &str, cps: &[String]) -> (Option<i32>, String) {
    let mut args = vec!["audit", "verify", "--config", cfg];
    for c in cps {
        args.push("--checkpoint");
        args.push(c);
    }
    let o = vaultcall(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), text)
}

#[test]
fn audit_verify_locates_every_kind_of_tampering_and_export_chains() {
    let mut d = Daemon::start("", "");
    let admin = d.bootstrap();
    for i in 0..6 {
        let r = d.req(
            "POST",
            "/api/v1/tokens",
            Some(&admin),
            Some(&json!({"name": format!("t{i}"), "role": "auditor"}).to_string()),
        );
        assert_eq!(r.status, 201);
    }
    let head = d.get("/api/v1/audit/head", Some(&admin)).json();
    d.stop();
    let log = d.log_text();
    let cps = checkpoints(&log);
    assert!(cps.len() >= 2, "start and stop checkpoints: {log}");
    assert_eq!(
        cps.last(),
        head["checkpoint"].as_str().map(str::to_owned).as_ref()
    );
    let cfg = d.config.to_str().unwrap().to_owned();

    let (code, text) = verify(&cfg, &cps);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("audit log intact"), "{text}");

    // Export: one JSON object per line, hashes chained, filtered by time.
    let out = d.dir.join("audit.jsonl");
    let o = vaultcall(&[
        "audit",
        "export",
        "--config",
        &cfg,
        "--since",
        "2000-01-01",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 8);
    for w in lines.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"]);
        assert_eq!(
            w[1]["id"].as_i64().unwrap(),
            w[0]["id"].as_i64().unwrap() + 1
        );
    }
    assert_eq!(lines[0]["prev_hash"], "0".repeat(64));
    let future = vaultcall(&["audit", "export", "--config", &cfg, "--since", "2999-01-01"]);
    assert!(future.status.success() && future.stdout.is_empty());
    let bad = vaultcall(&[
        "audit",
        "export",
        "--config",
        &cfg,
        "--since",
        "last tuesday",
    ]);
    assert_eq!(bad.status.code(), Some(64));

    let cases: [(&str, &str, &str); 4] = [
        ("edit", "UPDATE audit_log SET result = 'denied' WHERE id = 4", "entry 4 does not match its hash"),
        ("delete", "DELETE FROM audit_log WHERE id = 4", "entry 4 is missing"),
        (
            "insert",
            "UPDATE audit_log SET id = id + 1000 WHERE id >= 4;
             UPDATE audit_log SET id = id - 999 WHERE id >= 1004;
             INSERT INTO audit_log (id, at_ms, actor, role, action, object, result, detail_json, prev_hash, hash)
                SELECT 4, at_ms, actor, role, 'token.revoke', object, result, detail_json, hash, hash FROM audit_log WHERE id = 3;",
            "entry 4 does not match its hash",
        ),
        (
            "reorder",
            "UPDATE audit_log SET id = 100 WHERE id = 4; UPDATE audit_log SET id = 4 WHERE id = 5; UPDATE audit_log SET id = 5 WHERE id = 100;",
            "entry 4 does not link to entry 3",
        ),
    ];
    for (name, sql, expect) in cases {
        let c = copy(&d.dir, &d.dir.join(format!("case-{name}")));
        tamper(&c, sql);
        let (code, text) = verify(&c, &[]);
        assert_eq!(code, Some(1), "{name}: {text}");
        assert!(text.contains(expect), "{name}: {text}");
    }

    // A rewrite with recomputed hashes passes the chain check; the checkpoint catches it.
    let c = copy(&d.dir, &d.dir.join("case-rewrite"));
    let db = Path::new(&c).with_file_name("vaultcall.db");
    {
        tamper(&c, "SELECT 1;");
        let conn = rusqlite::Connection::open(&db).unwrap();
        let n: i64 = conn
            .query_row("SELECT max(id) FROM audit_log", [], |r| r.get(0))
            .unwrap();
        let mut prev: Vec<u8> = conn
            .query_row("SELECT hash FROM audit_log WHERE id = 2", [], |r| r.get(0))
            .unwrap();
        for id in 3..=n {
            let e = vaultcall::store::audit::page(&conn, id - 1, 1)
                .unwrap()
                .remove(0);
            let action = if id == 3 {
                "token.revoke"
            } else {
                e.action.as_str()
            };
            let h = vaultcall::store::audit::entry_hash(
                &prev,
                id,
                e.at_ms,
                &e.actor,
                e.role.as_deref(),
                action,
                e.object.as_deref(),
                &e.result,
                &e.detail_json,
            );
            conn.execute(
                "UPDATE audit_log SET action = ?2, prev_hash = ?3, hash = ?4 WHERE id = ?1",
                rusqlite::params![id, action, prev, &h[..]],
            )
            .unwrap();
            prev = h.to_vec();
        }
    }
    assert_eq!(
        verify(&c, &[]).0,
        Some(0),
        "a consistent rewrite fools the chain alone"
    );
    let (code, text) = verify(&c, &cps);
    assert_eq!(code, Some(1), "{text} {cps:?}");
    assert!(
        text.contains("does not match: the chain was rewritten"),
        "{text}"
    );

    // Entries cut off the end: only a checkpoint shows it.
    let c = copy(&d.dir, &d.dir.join("case-cut"));
    let last: i64 = cps
        .last()
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    tamper(&c, &format!("DELETE FROM audit_log WHERE id >= {last}"));
    // (checked read-only: `audit verify` appends an entry, which would take the cut id again)
    let conn = rusqlite::Connection::open(Path::new(&c).with_file_name("vaultcall.db")).unwrap();
    assert!(vaultcall::store::audit::verify(&conn).unwrap().is_ok());
    drop(conn);
    let (code, text) = verify(&c, &cps);
    assert_eq!(code, Some(1));
    assert!(
        text.contains("no longer exists: the log was cut back"),
        "{text}"
    );
    let (code, _) = verify(&c, &["12:nothex".to_owned()]);
    assert_eq!(code, Some(64));
}
