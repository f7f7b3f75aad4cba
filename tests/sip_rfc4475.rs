//! RFC 4475 (SIP Torture Test Messages) conformance: every message the RFC says to accept is
//! parsed and answered as a user agent should; every one it says to reject gets the response
//! the RFC names (or is dropped where nothing can be answered); none panics.
//! The messages are copied from the RFC into tests/data/sip/rfc4475 (SHA256SUMS alongside).

use std::path::Path;

use vaultcall::sip::message::{Framing, Rejection, parse};
use vaultcall::sip::uas::{Answer, out_of_dialog};

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Parsed; a request gets this answer from the UA (None for responses).
    Accept(Option<u16>),
    /// Rejected with this response.
    Reject(u16),
    /// Not answerable (a response, or no Via): dropped.
    Drop,
}
use Expect::*;

/// (file, RFC 4475 section, expectation). Where the RFC allows a choice, the comment says which.
const TABLE: &[(&str, &str, Expect)] = &[
    // 3.1.1 Valid messages: parsed. Requests are then answered by the UA's policy: an inbound
    // INVITE is declined (603), REGISTER/MESSAGE are not served here (405), unknown methods 501.
    ("wsinv", "3.1.1.1", Accept(Some(603))),
    ("intmeth", "3.1.1.2", Accept(Some(501))),
    ("esc01", "3.1.1.3", Accept(Some(603))),
    ("escnull", "3.1.1.4", Accept(Some(405))),
    ("esc02", "3.1.1.5", Accept(Some(501))),
    ("lwsdisp", "3.1.1.6", Accept(Some(200))),
    ("longreq", "3.1.1.7", Accept(Some(603))),
    ("dblreq", "3.1.1.8", Accept(Some(405))),
    ("semiuri", "3.1.1.9", Accept(Some(200))),
    ("transports", "3.1.1.10", Accept(Some(200))),
    ("mpart01", "3.1.1.11", Accept(Some(405))),
    ("unreason", "3.1.1.12", Accept(None)),
    ("noreason", "3.1.1.13", Accept(None)),
    // 3.1.2 Invalid messages.
    ("badinv01", "3.1.2.1", Reject(400)),
    ("clerr", "3.1.2.2", Reject(400)),
    ("ncl", "3.1.2.3", Reject(400)),
    ("scalar02", "3.1.2.4", Reject(400)),
    ("scalarlg", "3.1.2.5", Drop),
    ("quotbal", "3.1.2.6", Reject(400)),
    ("ltgtruri", "3.1.2.7", Reject(400)),
    ("lwsruri", "3.1.2.8", Reject(400)),
    ("lwsstart", "3.1.2.9", Reject(400)), // strict: the RFC allows either
    ("trws", "3.1.2.10", Reject(400)),    // strict: the RFC allows either
    ("escruri", "3.1.2.11", Reject(400)),
    ("baddate", "3.1.2.12", Reject(400)), // the RFC allows rejecting a non-GMT Date
    ("regbadct", "3.1.2.13", Reject(400)),
    ("badaspec", "3.1.2.14", Reject(400)),
    ("baddn", "3.1.2.15", Reject(400)),
    ("badvers", "3.1.2.16", Reject(505)),
    ("mismatch01", "3.1.2.17", Reject(400)),
    ("mismatch02", "3.1.2.18", Reject(501)), // the RFC prefers 501 over 400
    ("bigcode", "3.1.2.19", Drop),
    // 3.2 Transaction layer: a branch without the magic cookie is still a transaction.
    ("badbranch", "3.2.1", Accept(Some(200))),
    // 3.3 Application layer semantics.
    ("insuf", "3.3.1", Reject(400)),
    ("unkscm", "3.3.2", Accept(Some(416))),
    ("novelsc", "3.3.3", Accept(Some(416))),
    ("unksm2", "3.3.4", Accept(Some(405))),
    ("bext01", "3.3.5", Accept(Some(420))),
    ("invut", "3.3.6", Accept(Some(415))),
    ("regaut01", "3.3.7", Accept(Some(405))),
    ("multi01", "3.3.8", Reject(400)),
    ("mcl01", "3.3.9", Reject(400)),
    ("bcast", "3.3.10", Accept(None)),
    ("zeromf", "3.3.11", Accept(Some(200))),
    ("cparam01", "3.3.12", Accept(Some(405))),
    ("cparam02", "3.3.13", Accept(Some(405))),
    ("regescrt", "3.3.14", Accept(Some(405))),
    ("sdp01", "3.3.15", Accept(Some(406))),
    // 3.4 Backward compatibility.
    ("inv2543", "3.4.1", Accept(Some(603))),
    // Not in the RFC's final text (an early draft's example): no SIP version, a header without
    // a colon, no Via — nothing can be answered.
    ("test", "draft", Drop),
];

fn load(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/sip/rfc4475")
        .join(format!("{name}.dat"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_torture_message_gets_the_rfc_answer() {
    let mut failures = Vec::new();
    for (name, section, expect) in TABLE {
        let raw = load(name);
        let got = parse(&raw, Framing::Datagram);
        let ok = match (expect, &got) {
            (Accept(want), Ok((m, _))) => {
                let answer = m.method().map(|_| out_of_dialog(m));
                match (want, answer) {
                    (None, None) => true,
                    (Some(w), Some(Answer::Respond { status, .. })) => status == *w,
                    _ => false,
                }
            }
            (Reject(want), Err(Rejection::Respond { status, .. })) => status == want,
            (Drop, Err(Rejection::Drop { .. })) => true,
            _ => false,
        };
        if !ok {
            let summary = match &got {
                Ok((m, _)) => format!("parsed; answer {:?}", m.method().map(|_| out_of_dialog(m))),
                Err(r) => format!("{r:?}").chars().take(160).collect(),
            };
            failures.push(format!(
                "{name} (§{section}): expected {expect:?}, got {summary}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        TABLE.len(),
        failures.join("\n")
    );
}

#[test]
fn the_table_covers_every_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sip/rfc4475");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".dat")
                .map(str::to_owned)
        })
        .collect();
    files.sort();
    let mut named: Vec<String> = TABLE.iter().map(|(n, _, _)| (*n).to_owned()).collect();
    named.sort();
    assert_eq!(files, named);
}

/// Accepted messages whose canonical form rsip 0.4 cannot parse (its limitations, see
/// docs/sip-conformance.md); our own layer carries them.
const RSIP_LIMITS: &[&str] = &["semiuri", "unkscm"];

#[test]
fn accepted_requests_reach_rsip_and_rejections_answer_well_formed() {
    let mut refused = Vec::new();
    for (name, _, expect) in TABLE {
        let raw = load(name);
        match (expect, parse(&raw, Framing::Datagram)) {
            (Accept(_), Ok((m, _))) => {
                // rsip cannot represent unknown methods; those are answered by our layer.
                let known = !matches!(
                    m.method(),
                    Some(vaultcall::sip::message::Method::Extension(_))
                );
                if known && m.to_rsip().is_err() {
                    refused.push(*name);
                }
            }
            (
                Reject(_),
                Err(Rejection::Respond {
                    status,
                    reason,
                    skeleton,
                }),
            ) => {
                let resp = skeleton.response(status, &reason, "t1", &[]);
                let parsed = parse(&resp, Framing::Datagram);
                // A response may itself carry the request's broken headers (copied verbatim as
                // RFC 3261 requires); it must at least have a well-formed status line and Via.
                let text = String::from_utf8_lossy(&resp);
                assert!(
                    text.starts_with(&format!("SIP/2.0 {status} ")),
                    "{name}: {text}"
                );
                assert!(text.contains("\r\nVia: "), "{name}: {text}");
                let _ = parsed;
            }
            _ => {}
        }
    }
    assert_eq!(refused, RSIP_LIMITS, "rsip's refusals changed");
}

#[test]
fn truncated_and_corrupted_messages_never_panic() {
    for (name, _, _) in TABLE {
        let raw = load(name);
        for cut in 0..raw.len() {
            let _ = parse(&raw[..cut], Framing::Datagram);
            let _ = parse(&raw[..cut], Framing::Stream);
        }
        for i in (0..raw.len()).step_by(7) {
            let mut b = raw.clone();
            b[i] ^= 0x5a;
            let _ = parse(&b, Framing::Datagram);
        }
    }
}
