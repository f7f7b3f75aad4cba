//! Erasure end to end against the real daemon: a number with calls, recordings, transcripts,
//! task variables and a cached prompt is erased through the API; afterwards no trace of the
//! number, the customer's name or what was said is found anywhere in the data directory — in
//! any encoding, in the raw database and WAL bytes included — nor the destroyed wrapped key;
//! the number cannot be recorded or dialled again; the receipt verifies offline and fails on
//! an edited byte. The shell's `vaultcall erase` does the same for a second number.
#![allow(clippy::disallowed_methods)] // tests drive a real daemon in real time

mod common;

use common::{Daemon, close_records, encodings, find_bytes, records, vaultcall, vaultcall_stdin};
use serde_json::json;
use vaultcall::records::Records;
use vaultcall::vault::stream::TranscriptLine;

const PHONE: &str = "13812345678";
const NAME: &str = "张伟先生";
const PHRASES: [&str; 3] = ["我下周三一定还款", "您本期账单金额", "逾期会影响征信"];
const AMOUNT: &str = "3280.55";
const OTHER: &str = "13900001111";

/// A customer with `calls` calls (audio + transcript with the phrases), a task number with their
/// name and amount, and a cached personalised prompt.
fn populate(r: &Records, written: &str, task: i64, calls: usize) -> Vec<i64> {
    let s = r.ensure_subject(&r.normalize(written).unwrap()).unwrap();
    r.add_task_number(task, &s, &json!({"name": NAME, "amount": AMOUNT}))
        .unwrap();
    r.put_prompt(
        &s,
        &format!("{NAME}，{}{AMOUNT}元", PHRASES[1]),
        &[100; 800],
    )
    .unwrap();
    let mut ids = Vec::new();
    for _ in 0..calls {
        let call = r.start_call(&s, Some("trunk-a")).unwrap();
        let mut t = r.start_transcript(&s, call).unwrap();
        for (i, text) in [
            format!("{NAME}您好，{}{AMOUNT}元", PHRASES[1]),
            PHRASES[0].into(),
            PHRASES[2].into(),
        ]
        .iter()
        .enumerate()
        {
            t.append_turn(
                &TranscriptLine {
                    seq: i as u32 + 1,
                    speaker: if i % 2 == 0 { "robot" } else { "customer" }.into(),
                    start_ms: i as u64 * 2000,
                    end_ms: i as u64 * 2000 + 1500,
                    text: text.clone(),
                },
                None,
            )
            .unwrap();
        }
        ids.push(t.id().0);
        t.finish().unwrap();
        let mut rec = r.start_recording(&s, call).unwrap();
        let side: Vec<i16> = (0..160).map(|i| i * 10).collect();
        for _ in 0..60 {
            rec.append_frame(&side, &side).unwrap();
        }
        ids.push(rec.id().0);
        rec.finish().unwrap();
    }
    ids
}

fn needles(wrapped: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let mut n = Vec::new();
    for p in [
        PHONE,
        "+8613812345678",
        "8613812345678",
        "138-1234-5678",
        "138 1234 5678",
        "1-3-8-1-2-3-4-5-6-7-8",
        "1 3 8 1 2 3 4 5 6 7 8",
        "１３８１２３４５６７８",
        "MTM4MTIzNDU2Nzg",        // base64 of the number
        "3133383132333435363738", // hex of the number
    ] {
        n.extend(encodings(p, p));
    }
    n.push((
        "number as BCD".into(),
        vec![0x13, 0x81, 0x23, 0x45, 0x67, 0x8F],
    ));
    n.push((
        "number as swapped BCD".into(),
        vec![0x31, 0x18, 0x32, 0x54, 0x76, 0xF8],
    ));
    n.extend(encodings("name", NAME));
    // 张伟先生 in GBK / GB18030.
    n.push((
        "name gbk".into(),
        vec![0xD5, 0xC5, 0xCE, 0xB0, 0xCF, 0xC8, 0xC9, 0xFA],
    ));
    for p in PHRASES {
        n.extend(encodings(p, p));
    }
    n.extend(encodings("amount", AMOUNT));
    n.extend(wrapped.iter().cloned());
    n
}

#[test]
fn erasure_leaves_no_trace_and_the_number_cannot_be_dialled() {
    let mut d = Daemon::start("", "");
    let admin = d.bootstrap();
    let dpo = d.token(&admin, "compliance");
    let op = d.token(&admin, "operator");
    let r = records(&d.config);
    common::insert_task(&r, 1);
    common::insert_task(&r, 2);
    let ids = populate(&r, "+86 138-1234-5678", 1, 4);
    let other = populate(&r, OTHER, 2, 1);
    let wrapped: Vec<(String, Vec<u8>)> = r
        .store()
        .read(|c| {
            Ok(c.query_row(
                "SELECT wrapped_key, phone_enc FROM data_subjects WHERE id = 1",
                [],
                |x| {
                    Ok(vec![
                        ("wrapped data key".to_owned(), x.get(0)?),
                        ("encrypted number".to_owned(), x.get(1)?),
                    ])
                },
            )?)
        })
        .unwrap();
    close_records(r);

    // Before: the data is there and decrypts for a permitted role — but nothing is in clear.
    let t = d.get(&format!("/api/v1/recordings/{}/content", ids[0]), Some(&op));
    assert_eq!(t.status, 200);
    assert!(t.text().contains(PHRASES[0]) && t.text().contains(NAME));
    // Separation of duties: the admin runs the box but cannot listen to customers.
    assert_eq!(
        d.get(
            &format!("/api/v1/recordings/{}/content", ids[1]),
            Some(&admin)
        )
        .status,
        403
    );
    assert_eq!(d.get("/api/v1/erasure-requests", Some(&op)).status, 403);
    let a = d.get(&format!("/api/v1/recordings/{}/content", ids[1]), Some(&op));
    assert_eq!((a.status, a.body.len()), (200, 44 + 32_000 * 6 / 5));
    assert_eq!(a.header("Content-Type"), Some("audio/wav"));
    let at_rest = find_bytes(&d.dir, &needles(&[]));
    assert!(at_rest.is_empty(), "plaintext at rest: {at_rest:?}");

    // Who may erase: compliance only.
    let body = json!({"phone": "0086 138 1234 5678", "reason": "customer request under PIPL art. 47", "ticket": "DPO-2026-117"}).to_string();
    assert_eq!(
        d.req(
            "POST",
            "/api/v1/erasure-requests",
            Some(&admin),
            Some(&body)
        )
        .status,
        403
    );
    assert_eq!(
        d.req("POST", "/api/v1/erasure-requests", Some(&op), Some(&body))
            .status,
        403
    );
    let resp = d.req("POST", "/api/v1/erasure-requests", Some(&dpo), Some(&body));
    assert_eq!(resp.status, 201, "{}", resp.text());
    let v = resp.json();
    let uid = v["request_id"].as_str().unwrap().to_owned();
    // At once, with only the daemon's connections open: not even in the WAL or free pages.
    let hits = find_bytes(&d.dir, &needles(&wrapped));
    assert!(hits.is_empty(), "found right after erasure: {hits:?}");
    assert_eq!(
        v["receipt"]["receipt"]["deleted"],
        json!({"calls": 4, "turns": 12, "recordings": 4, "transcripts": 4, "task_numbers": 1, "files": 9})
    );
    // Repeating the request changes nothing and returns the same receipt.
    let again = d.req("POST", "/api/v1/erasure-requests", Some(&dpo), Some(&body));
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["receipt"], v["receipt"]);

    // The receipt verifies offline with the printed public key, and fails on any edited byte.
    let receipt = d.get(
        &format!("/api/v1/erasure-requests/{uid}/receipt"),
        Some(&dpo),
    );
    assert_eq!(receipt.status, 200);
    let rfile = d.dir.join("receipt.json");
    std::fs::write(&rfile, &receipt.body).unwrap();
    let shown = vaultcall(&[
        "keys",
        "show-public",
        "--config",
        d.config.to_str().unwrap(),
    ]);
    assert!(shown.status.success());
    let keyfile = d.dir.join("receipt-key.txt");
    std::fs::write(&keyfile, &shown.stdout).unwrap();
    let ok = vaultcall(&[
        "verify-receipt",
        rfile.to_str().unwrap(),
        "--public-key",
        keyfile.to_str().unwrap(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains(&uid));
    for i in [5, receipt.body.len() / 2, receipt.body.len() - 3] {
        let mut b = receipt.body.clone();
        b[i] ^= 0x04;
        let f = d.dir.join(format!("edited-{i}.json"));
        std::fs::write(&f, &b).unwrap();
        let bad = vaultcall(&[
            "verify-receipt",
            f.to_str().unwrap(),
            "--public-key",
            keyfile.to_str().unwrap(),
        ]);
        assert_eq!(bad.status.code(), Some(1), "edited byte {i} verified");
        std::fs::remove_file(&f).unwrap();
    }

    // The data is gone: the API has nothing, and the other customer is untouched.
    assert_eq!(
        d.get(&format!("/api/v1/recordings/{}/content", ids[1]), Some(&op))
            .status,
        404
    );
    assert_eq!(
        d.get(
            &format!("/api/v1/recordings/{}/content", other[1]),
            Some(&op)
        )
        .status,
        200
    );

    // The number can no longer be dialled or recorded, however it is written.
    let r = records(&d.config);
    for w in [PHONE, "+86 138 1234 5678", "008613812345678"] {
        assert!(!r.may_dial(&r.normalize(w).unwrap()).unwrap(), "{w}");
    }
    assert!(r.may_dial(&r.normalize(OTHER).unwrap()).unwrap());
    close_records(r);
    let cfg = d.config.to_str().unwrap().to_owned();
    let refused = vaultcall_stdin(
        &["dev", "record", "--config", &cfg, "--seconds", "1"],
        "138 1234 5678\n",
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("suppression list"));

    // The second customer is erased from the shell, number on stdin.
    let out = vaultcall_stdin(
        &[
            "erase",
            "--config",
            &cfg,
            "--phone",
            "-",
            "--ticket",
            "DPO-2026-118",
            "--reason",
            "customer request",
        ],
        &format!("{OTHER}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f2 = d.dir.join("receipt2.json");
    std::fs::write(&f2, &out.stdout).unwrap();
    let ok = vaultcall(&["verify-receipt", f2.to_str().unwrap(), "--config", &cfg]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // Nothing of the first customer anywhere in the data directory, running or stopped: not the
    // number in any spelling or encoding, not the name, not what was said, not the amount, not
    // the destroyed wrapped key or the encrypted number.
    let hits = find_bytes(&d.dir, &needles(&wrapped));
    assert!(hits.is_empty(), "found after erasure: {hits:?}");
    d.stop();
    let hits = find_bytes(&d.dir, &needles(&wrapped));
    assert!(hits.is_empty(), "found after erasure (stopped): {hits:?}");
    assert!(std::fs::read_dir(d.dir.join("vault")).unwrap().count() > 0);

    // The audit log holds the whole story and verifies.
    let audit = vaultcall(&["audit", "verify", "--config", &cfg]);
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    let export = vaultcall(&["audit", "export", "--config", &cfg, "--since", "2000-01-01"]);
    let text = String::from_utf8(export.stdout).unwrap();
    for action in [
        "erasure.request",
        "erasure.key_destroyed",
        "erasure.done",
        "erasure.receipt.read",
        "transcript.read",
        "recording.play",
    ] {
        assert!(
            text.contains(&format!("\"action\":\"{action}\"")),
            "{action} not audited"
        );
    }
}

#[test]
fn an_erasure_interrupted_by_a_stop_is_finished_at_the_next_start() {
    let mut d = Daemon::start("", "");
    let admin = d.bootstrap();
    let dpo = d.token(&admin, "compliance");
    let r = records(&d.config);
    common::insert_task(&r, 1);
    populate(&r, PHONE, 1, 2);
    // Filed and stopped after destroying the key, as a crash at that point would leave it.
    let req = vaultcall::records::ErasureRequest {
        target: vaultcall::records::ErasureTarget::Phone(r.normalize(PHONE).unwrap()),
        ticket: "DPO-9".into(),
        reason: "test".into(),
        requested_by: "cli".into(),
        role: None,
        source: "cli",
    };
    let id = r.file_erasure(&req).unwrap();
    r.erasure_step(id).unwrap();
    close_records(r);
    d.kill9();
    let mut d = Daemon::start_in(&d.dir.clone(), &std::fs::read_to_string(&d.config).unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let list = d.get("/api/v1/erasure-requests", Some(&dpo)).json();
        let req = &list["erasure_requests"][0];
        // The log line follows the state change: wait for both.
        if req["state"] == "done"
            && d.log_text()
                .contains("interrupted erasure resumed and finished")
        {
            assert_eq!(req["counts"]["calls"], 2);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not resumed (or not logged): {list}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    d.stop();
}
