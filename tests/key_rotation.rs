//! `vaultcall keys rotate` killed midway, then run again: every key ends up wrapped by the new
//! master key, the key file is replaced (the old one kept aside), recordings still play without
//! having been re-encrypted, and a receipt signed before the rotation still verifies. While the
//! rotation is unfinished the daemon refuses to start; while the daemon runs, rotation refuses.
#![allow(clippy::disallowed_methods)] // tests drive real processes in real time

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{BIN, Daemon, close_records, records, test_config, vaultcall, vaultcall_stdin};

/// Every vault file with its bytes.
fn vault_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("vault")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn master_ids(db: &std::path::Path) -> Vec<(String, i64)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare(
            "SELECT master_key_id, count(*) FROM data_subjects WHERE wrapped_key IS NOT NULL GROUP BY 1 ORDER BY 1",
        )
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn an_interrupted_rotation_resumes_and_keeps_everything_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg_text = test_config(dir, "", "");
    let cfg_path = dir.join("vaultcall.toml");
    std::fs::write(&cfg_path, &cfg_text).unwrap();
    let cfg = cfg_path.to_str().unwrap();

    // Data under the first master key: many subjects, two recorded calls, one erasure.
    let out = vaultcall_stdin(
        &["dev", "record", "--config", cfg, "--seconds", "2"],
        "13800000001\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = records(&cfg_path);
    for i in 0..150 {
        r.ensure_subject(&r.normalize(&format!("1370000{i:04}")).unwrap())
            .unwrap();
    }
    close_records(r);
    let out = vaultcall_stdin(
        &["dev", "record", "--config", cfg, "--seconds", "1"],
        "13800000002\n",
    );
    assert!(out.status.success());
    let receipt = vaultcall_stdin(
        &[
            "erase", "--config", cfg, "--phone", "-", "--ticket", "T-1", "--reason", "test",
        ],
        "13700000000\n",
    );
    assert!(receipt.status.success());
    let receipt_file = dir.join("before.receipt.json");
    std::fs::write(&receipt_file, &receipt.stdout).unwrap();
    let key_before = vaultcall(&["keys", "show-public", "--config", cfg]).stdout;
    let old_key = std::fs::read(dir.join("master.key")).unwrap();
    let db = dir.join("vaultcall.db");
    let files_before = vault_files(dir);
    assert_eq!(
        files_before.len(),
        4,
        "two calls, audio and transcript each"
    );
    assert_eq!(master_ids(&db).len(), 1);

    // Rotate one key per transaction and kill it after a few.
    let new_key = dir.join("new.key");
    let mut child = Command::new(BIN)
        .args([
            "keys",
            "rotate",
            "--config",
            cfg,
            "--batch-size",
            "1",
            "--new-key",
        ])
        .arg(&new_key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = 0;
    for line in lines.by_ref() {
        if line.unwrap().starts_with("rewrapped ") {
            seen += 1;
            if seen == 5 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mixed = master_ids(&db);
    assert_eq!(mixed.len(), 2, "the kill must land midway: {mixed:?}");
    assert_eq!(std::fs::read(dir.join("master.key")).unwrap(), old_key);

    // Half-rotated: the daemon refuses, naming the rotation.
    let refused = Command::new(BIN)
        .args(["serve", "--config", cfg])
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("rotation"));

    // Run again: it resumes and finishes.
    let done = Command::new(BIN)
        .args(["keys", "rotate", "--config", cfg, "--new-key"])
        .arg(&new_key)
        .output()
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(String::from_utf8_lossy(&done.stdout).contains("rotation finished"));
    let ids = master_ids(&db);
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(!new_key.exists());
    assert_ne!(std::fs::read(dir.join("master.key")).unwrap(), old_key);
    let retired: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("master.key.retired-kek-")
        })
        .collect();
    assert_eq!(retired.len(), 1);
    assert_eq!(std::fs::read(retired[0].path()).unwrap(), old_key);
    // No file was re-encrypted or touched.
    assert!(vault_files(dir) == files_before);

    // Same receipt key; the receipt signed before the rotation verifies; recordings play.
    assert_eq!(
        vaultcall(&["keys", "show-public", "--config", cfg]).stdout,
        key_before
    );
    let v = vaultcall(&[
        "verify-receipt",
        receipt_file.to_str().unwrap(),
        "--config",
        cfg,
    ]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let mut d = Daemon::start_in(dir, &cfg_text);
    let admin = d.bootstrap();
    let op = d.token(&admin, "auditor");
    for call in [1, 2] {
        let list = d
            .get(&format!("/api/v1/calls/{call}/recordings"), Some(&op))
            .json();
        for rec in list["recordings"].as_array().unwrap() {
            let r = d.get(rec["content"].as_str().unwrap(), Some(&op));
            assert_eq!(r.status, 200, "call {call}: {}", r.text());
        }
    }
    // While the daemon runs, rotation refuses to start.
    let busy = Command::new(BIN)
        .args(["keys", "rotate", "--config", cfg, "--new-key"])
        .arg(dir.join("another.key"))
        .output()
        .unwrap();
    assert_eq!(busy.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("daemon is running"));
    assert!(!dir.join("another.key").exists());
    d.stop();
    let export = vaultcall(&["audit", "export", "--config", cfg, "--since", "2000-01-01"]);
    let text = String::from_utf8(export.stdout).unwrap();
    assert!(
        text.contains("\"action\":\"keys.rotate.start\"")
            && text.contains("\"action\":\"keys.rotate\"")
    );
}
