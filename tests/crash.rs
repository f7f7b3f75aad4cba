//! SIGKILL during writes, then restart: the database is consistent, every acknowledged write is
//! there, and the audit chain is intact.
#![allow(clippy::disallowed_methods)] // tests drive a real daemon in real time

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Daemon, test_config};
use serde_json::json;

#[test]
fn sigkill_during_writes_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = test_config(dir, "", "");
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut admin = None;
    for round in 0..3 {
        let mut d = Daemon::start_in(dir, &cfg);
        let token = admin.get_or_insert_with(|| d.bootstrap()).clone();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (addr, token, stop) = (d.admin, token.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut ids = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        let body = json!({"name": format!("r{round}w{w}n{i}"), "role": "auditor"})
                            .to_string();
                        let headers = [
                            format!("Authorization: Bearer {token}"),
                            "Content-Type: application/json".to_owned(),
                        ];
                        // Connection errors after the kill are expected; only 201s count.
                        let r = std::panic::catch_unwind(|| {
                            common::http(
                                addr,
                                "POST",
                                "/api/v1/tokens",
                                &headers,
                                Some(body.as_bytes()),
                            )
                        });
                        match r {
                            Ok(resp) if resp.status == 201 => {
                                ids.push(resp.json()["id"].as_str().unwrap().to_owned())
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    ids
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700 + 300 * round));
        d.kill9();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            acknowledged.extend(w.join().unwrap());
        }
    }
    assert!(
        acknowledged.len() > 20,
        "too few writes to mean anything: {}",
        acknowledged.len()
    );

    // Restart once more on the same files: SQLite recovers the WAL.
    let mut d = Daemon::start_in(dir, &cfg);
    let conn = rusqlite::Connection::open(d.db_path()).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let fk: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fk, 0);
    let mut st = conn.prepare("SELECT id FROM admin_tokens").unwrap();
    let stored: BTreeSet<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let missing: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    // Every token row has its audit entry (written in the same transaction), and the chain holds.
    let orphans: i64 = conn
        .query_row(
            "SELECT count(*) FROM admin_tokens t WHERE t.created_by != 'cli' AND NOT EXISTS
             (SELECT 1 FROM audit_log a WHERE a.action = 'token.create' AND a.object = 'token:' || t.id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
    let verdict = vaultcall::store::audit::verify(&conn).unwrap();
    assert!(verdict.is_ok(), "{verdict:?}");
    let token = admin.unwrap();
    assert_eq!(d.get("/api/v1/whoami", Some(&token)).status, 200);
    d.stop();
}
