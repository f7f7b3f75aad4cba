//! The suppression (do-not-call) list against the real daemon: added, checked and lifted
//! through the admin API with each role's rights; an added number may not be dialled and a
//! lifted one may; lifting an erased subject's entry gives them a fresh key while their old
//! files stay unreadable; every step is in the audit log under the subject hash; the number is
//! in no log line, no audit entry and no error message. The shell's `vaultcall suppression`
//! does the same.
#![allow(clippy::disallowed_methods)] // tests drive a real daemon in real time

mod common;

use common::{Daemon, close_records, records, vaultcall, vaultcall_stdin};
use serde_json::{Value, json};
use vaultcall::vault::format::{ContentType, Expected, FileCipher};
use vaultcall::vault::stream::read_header;

const PHONE: &str = "138 1234 5678";
const ERASED: &str = "13900001111";
const OTHER: &str = "13700002222";

/// Every spelling of the test numbers a log line or export could hold.
fn spellings() -> Vec<String> {
    let mut v = Vec::new();
    for n in ["13812345678", ERASED, OTHER] {
        v.push(n.to_owned());
        v.push(format!("86{n}"));
        v.push(format!("{}-{}-{}", &n[..3], &n[3..7], &n[7..]));
        v.push(format!("{} {} {}", &n[..3], &n[3..7], &n[7..]));
    }
    v
}

fn assert_no_number(what: &str, text: &str) {
    for s in spellings() {
        assert!(!text.contains(&s), "{what} contains {s}:\n{text}");
    }
}

fn post(d: &Daemon, path: &str, token: &str, body: &Value) -> common::Resp {
    d.req("POST", path, Some(token), Some(&body.to_string()))
}

fn may_dial(d: &Daemon, phone: &str) -> bool {
    let r = records(&d.config);
    let ok = r.may_dial(&r.normalize(phone).unwrap()).unwrap();
    close_records(r);
    ok
}

#[test]
fn suppression_through_the_api() {
    let mut d = Daemon::start("", "");
    let admin = d.bootstrap();
    let op = d.token(&admin, "operator");
    let dpo = d.token(&admin, "compliance");
    let auditor = d.token(&admin, "auditor");

    // A customer asks not to be called: an operator adds the number.
    assert!(may_dial(&d, PHONE));
    let add = json!({"phone": PHONE, "reason": "asked on the call of 2026-03-01", "source": "customer_request"});
    let r = post(&d, "/api/v1/suppression", &op, &add);
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["added"], true);
    assert_eq!(v["source"], "customer_request");
    let hash = v["subject_hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64);
    assert!(!may_dial(&d, PHONE));
    assert!(!may_dial(&d, "+86 138-1234-5678"));
    assert!(may_dial(&d, OTHER));

    // Idempotent, whatever the spelling; the first entry stays.
    let again = post(
        &d,
        "/api/v1/suppression",
        &dpo,
        &json!({"phone": "0086 13812345678", "source": "operator"}),
    );
    assert_eq!(again.status, 200, "{}", again.text());
    let a = again.json();
    assert_eq!(
        (&a["added"], &a["source"], &a["subject_hash"]),
        (&json!(false), &json!("customer_request"), &json!(hash))
    );

    // Checks: operators, auditors and compliance may look; admins may not.
    let check = json!({"phone": "+86 138 1234 5678"});
    let c = post(&d, "/api/v1/suppression/check", &auditor, &check);
    assert_eq!(c.status, 200, "{}", c.text());
    let cv = c.json();
    assert_eq!(cv["suppressed"], true);
    assert_eq!(cv["source"], "customer_request");
    assert_eq!(cv["subject_hash"], hash.as_str());
    assert!(cv["created_at"].as_str().is_some());
    let c = post(
        &d,
        "/api/v1/suppression/check",
        &op,
        &json!({"phone": OTHER}),
    );
    assert_eq!(c.json()["suppressed"], false);
    assert!(c.json().get("source").is_none());
    assert_eq!(
        post(&d, "/api/v1/suppression/check", &admin, &check).status,
        403
    );
    // Adding: operators and compliance only.
    for t in [&admin, &auditor] {
        assert_eq!(post(&d, "/api/v1/suppression", t, &add).status, 403);
    }
    // The number never travels in a URL.
    assert_eq!(d.get("/api/v1/suppression/check", Some(&op)).status, 405);

    // Bad input: 400 with a clear message that never repeats the number.
    for (body, expect) in [
        (json!({"phone": "12345"}), "phone"),
        (json!({"phone": "138-1234-567x"}), "phone"),
        (
            json!({"phone": 13812345678u64}),
            "phone must be a JSON string",
        ),
        (json!({"phone": PHONE, "source": "erasure"}), "source"),
        (json!({"phone": PHONE, "source": "script"}), "source"),
        (
            json!({"phone": PHONE, "reason": "customer 13812345678 asked"}),
            "must not contain the phone number",
        ),
        (json!({"phone": PHONE, "number": PHONE}), "unknown field"),
        (json!({"reason": "x"}), "missing field"),
    ] {
        let r = post(&d, "/api/v1/suppression", &op, &body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let e = r.json();
        assert_eq!(e["error"]["code"], "bad_request");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(expect), "{body}: {msg}");
        assert_no_number("error message", msg);
        assert!(!msg.contains("12345"), "{msg}");
    }

    // Lifting: compliance only, with the consent reference.
    let lift = json!({"phone": PHONE, "consent_ref": "CONSENT-2026-0042"});
    for t in [&op, &admin, &auditor] {
        let r = post(&d, "/api/v1/suppression/lift", t, &lift);
        assert_eq!(r.status, 403, "{}", r.text());
    }
    assert!(!may_dial(&d, PHONE));
    for empty in ["", "  "] {
        let r = post(
            &d,
            "/api/v1/suppression/lift",
            &dpo,
            &json!({"phone": PHONE, "consent_ref": empty}),
        );
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("consent_ref"));
    }
    assert_eq!(
        post(
            &d,
            "/api/v1/suppression/lift",
            &dpo,
            &json!({"phone": PHONE})
        )
        .status,
        400
    );
    let r = post(&d, "/api/v1/suppression/lift", &dpo, &lift);
    assert_eq!(r.status, 200, "{}", r.text());
    let l = r.json();
    assert_eq!(
        (&l["lifted"], &l["was"]["source"], &l["subject_hash"]),
        (&json!(true), &json!("customer_request"), &json!(hash))
    );
    assert!(may_dial(&d, PHONE));
    let r = post(&d, "/api/v1/suppression/lift", &dpo, &lift);
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "not_suppressed");

    // An erased subject: their entry can be lifted on consent, nothing comes back, and the
    // next call gets a fresh key.
    let rec = records(&d.config);
    let n = rec.normalize(ERASED).unwrap();
    let s = rec.ensure_subject(&n).unwrap();
    let old_key_id = s.data_key().id().to_owned();
    let call = rec.start_call(&s, Some("trunk-a")).unwrap();
    let mut w = rec.start_recording(&s, call).unwrap();
    w.append_frame(&[7; 160], &[9; 160]).unwrap();
    let old_rec = w.id();
    w.finish().unwrap();
    let row = rec
        .store()
        .read(move |c| vaultcall::store::calls::recording(c, old_rec))
        .unwrap()
        .unwrap();
    let backup = d.dir.join("file-backup.vcv");
    std::fs::copy(d.dir.join(&row.path), &backup).unwrap();
    drop(s);
    close_records(rec);
    let er = post(
        &d,
        "/api/v1/erasure-requests",
        &dpo,
        &json!({"phone": ERASED, "reason": "customer request", "ticket": "DPO-2026-200"}),
    );
    assert_eq!(er.status, 201, "{}", er.text());
    let c = post(
        &d,
        "/api/v1/suppression/check",
        &dpo,
        &json!({"phone": ERASED}),
    );
    assert_eq!(c.json()["source"], "erasure");
    assert!(!may_dial(&d, ERASED));
    let r = post(
        &d,
        "/api/v1/suppression/lift",
        &dpo,
        &json!({"phone": ERASED, "consent_ref": "CONSENT-2026-0099"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["was"]["source"], "erasure");
    assert!(may_dial(&d, ERASED));
    // The old recording is gone from the API …
    assert_eq!(
        d.get(
            &format!("/api/v1/recordings/{}/content", old_rec.0),
            Some(&op)
        )
        .status,
        404
    );
    // … the subject gets a fresh key on the next call, and a file-backup copy of the old
    // recording does not open with it.
    let rec = records(&d.config);
    let n = rec.normalize(ERASED).unwrap();
    let fresh = rec.ensure_subject(&n).unwrap();
    assert_ne!(fresh.data_key().id(), old_key_id);
    let header = read_header(&mut std::fs::File::open(&backup).unwrap()).unwrap();
    let file_id: [u8; 16] = row.file_id.clone().unwrap().try_into().unwrap();
    let opened = FileCipher::open(
        fresh.data_key(),
        &header,
        &Expected {
            subject: fresh.key.0,
            file_id: Some(file_id),
            content_type: ContentType::CallAudio,
        },
    );
    assert!(opened.is_err());
    let phone_enc: Option<Vec<u8>> = rec
        .store()
        .read({
            let id = fresh.id;
            move |c| Ok(vaultcall::store::subjects::by_id(c, id)?.unwrap().phone_enc)
        })
        .unwrap();
    assert!(
        phone_enc.is_some(),
        "the re-keyed subject has a new sealed number"
    );
    drop(fresh);
    close_records(rec);

    // Counts by source.
    post(
        &d,
        "/api/v1/suppression",
        &op,
        &json!({"phone": OTHER, "source": "operator"}),
    );
    let st = d.get("/api/v1/suppression/stats", Some(&auditor));
    assert_eq!(st.status, 200, "{}", st.text());
    assert_eq!(
        st.json(),
        json!({"total": 1, "by_source": {"erasure": 0, "customer_request": 0, "script": 0, "operator": 1}})
    );
    assert_eq!(d.get("/api/v1/suppression/stats", Some(&admin)).status, 403);

    // The audit log tells the story under the subject hash, with the consent reference, and
    // still verifies; the number is in no audit entry and no log line.
    let cfg = d.config.to_str().unwrap().to_owned();
    d.stop();
    let export = vaultcall(&["audit", "export", "--config", &cfg, "--since", "2000-01-01"]);
    assert!(export.status.success());
    let text = String::from_utf8(export.stdout).unwrap();
    assert_no_number("audit export", &text);
    let entries: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["action"].as_str().unwrap().starts_with("suppression."))
        .collect();
    let object = format!("subject:{hash}");
    let mine: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e["object"] == object.as_str())
        .map(|e| (e["action"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        mine,
        [
            ("suppression.add", "ok"),
            ("suppression.add", "ok"),
            ("suppression.check", "ok"),
            ("suppression.lift", "ok"),
            ("suppression.lift", "failed"),
        ]
    );
    let lifts: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "suppression.lift" && e["result"] == "ok")
        .collect();
    assert_eq!(lifts.len(), 2);
    assert_eq!(lifts[0]["detail"]["consent_ref"], "CONSENT-2026-0042");
    assert_eq!(lifts[0]["role"], "compliance");
    assert_eq!(lifts[1]["detail"]["source"], "erasure");
    assert_eq!(lifts[1]["detail"]["subject_key_destroyed"], true);
    // Denied attempts are audited too.
    assert!(text.contains("POST /api/v1/suppression/lift") && text.contains("denied"));
    let verify = vaultcall(&["audit", "verify", "--config", &cfg]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_no_number("daemon log", &d.log_text());
}

#[test]
fn suppression_from_the_shell() {
    let d = Daemon::start("", "");
    let cfg = d.config.to_str().unwrap().to_owned();
    let run = |args: &[&str], stdin: &str| {
        let mut a = vec!["suppression"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--config", &cfg]);
        let o = vaultcall_stdin(&a, stdin);
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
        assert_no_number("output", &out);
        assert_no_number("stderr", &err);
        (o.status.code(), out, err)
    };
    let line = format!("{PHONE}\n");

    let (code, out, err) = run(
        &["add", "--phone", "-", "--reason", "asked by letter"],
        &line,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("suppressed: subject "), "{out}");
    assert!(out.contains("customer_request") && out.contains("asked by letter"));
    assert!(!may_dial(&d, PHONE));
    let (code, out, _) = run(
        &["add", "--phone", "-", "--source", "operator"],
        "+86 138-1234-5678\n",
    );
    assert_eq!(code, Some(0));
    assert!(out.starts_with("already suppressed:"), "{out}");
    let (code, out, _) = run(&["check", "--phone", "-"], &line);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("suppressed:") && out.contains("customer_request"),
        "{out}"
    );
    let (code, out, _) = run(&["check", "--phone", "-"], &format!("{OTHER}\n"));
    assert_eq!(code, Some(0));
    assert!(out.starts_with("not suppressed:"), "{out}");

    // Usage errors: exit 64, one line, never the number.
    let (code, _, err) = run(&["add", "--phone", "-", "--source", "erasure"], &line);
    assert_eq!(code, Some(64), "{err}");
    let (code, _, err) = run(&["add", "--phone", "-"], "138 1234 567\n");
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("number") && !err.contains("1381234567"),
        "{err}"
    );
    let (code, _, err) = run(&["lift", "--phone", "-", "--consent-ref", " "], &line);
    assert_eq!(code, Some(64), "{err}");
    assert!(!may_dial(&d, PHONE));

    let (code, out, err) = run(
        &["lift", "--phone", "-", "--consent-ref", "CONSENT-77"],
        &line,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("lifted:") && out.contains("CONSENT-77"),
        "{out}"
    );
    assert!(may_dial(&d, PHONE));
    let (code, _, err) = run(
        &["lift", "--phone", "-", "--consent-ref", "CONSENT-77"],
        &line,
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("not on the suppression list"), "{err}");

    run(&["add", "--phone", "-"], &format!("{OTHER}\n"));
    let (code, out, _) = run(&["stats"], "");
    assert_eq!(code, Some(0));
    assert!(out.contains("customer_request  1"), "{out}");
    assert!(out.contains("total             1"), "{out}");

    // Shell actions are audited with actor `cli`.
    let export = vaultcall(&["audit", "export", "--config", &cfg, "--since", "2000-01-01"]);
    let text = String::from_utf8(export.stdout).unwrap();
    assert_no_number("audit export", &text);
    let cli: Vec<(String, String)> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| {
            e["actor"] == "cli" && e["action"].as_str().unwrap().starts_with("suppression.")
        })
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("suppression.add", "ok"),
        ("suppression.add", "ok"),
        ("suppression.check", "ok"),
        ("suppression.check", "ok"),
        ("suppression.lift", "ok"),
        ("suppression.lift", "failed"),
        ("suppression.add", "ok"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(cli, want);
}
