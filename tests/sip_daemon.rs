//! The daemon's SIP endpoint seen from a peer: OPTIONS is answered (trunks use it as a
//! keepalive), an inbound INVITE is declined, malformed requests get the RFC's error, and
//! trunk state is visible through the admin API.
#![allow(clippy::disallowed_methods)] // tests drive a real daemon in real time

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::Daemon;

fn ask(d: &Daemon, text: &str) -> String {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let me = s.local_addr().unwrap();
    s.send_to(text.replace("ME", &me.to_string()).as_bytes(), d.sip)
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut answers = Vec::new();
    // Skip provisional responses.
    loop {
        let (n, _) = s.recv_from(&mut buf).expect("an answer");
        let a = String::from_utf8_lossy(&buf[..n]).into_owned();
        let provisional = a.starts_with("SIP/2.0 1");
        answers.push(a);
        if !provisional {
            return answers.join("---\n");
        }
    }
}

const OPTIONS: &str = "OPTIONS sip:vaultcall@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP ME;branch=z9hG4bKopt1\r\nMax-Forwards: 70\r\nFrom: <sip:trunk@127.0.0.1>;tag=t1\r\nTo: <sip:vaultcall@127.0.0.1>\r\nCall-ID: opt1@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

#[test]
fn options_invite_and_garbage_get_the_right_answers() {
    let mut d = Daemon::start("", "");
    let a = ask(&d, OPTIONS);
    assert!(a.starts_with("SIP/2.0 200 OK\r\n"), "{a}");
    assert!(
        a.contains("Allow: INVITE, ACK, BYE, CANCEL, OPTIONS"),
        "{a}"
    );
    let invite = OPTIONS
        .replace("OPTIONS sip", "INVITE sip")
        .replace("1 OPTIONS", "1 INVITE")
        .replace("opt1", "inv1");
    let a = ask(&d, &invite);
    assert!(
        a.contains("SIP/2.0 100 Trying") && a.contains("SIP/2.0 603 Decline"),
        "{a}"
    );
    let bad = OPTIONS
        .replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE")
        .replace("opt1", "bad1");
    let a = ask(&d, &bad);
    assert!(
        a.starts_with("SIP/2.0 400 Bad Request - CSeq method"),
        "{a}"
    );
    let v7 = OPTIONS
        .replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia")
        .replace("opt1", "v7");
    assert!(ask(&d, &v7).starts_with("SIP/2.0 505"));
    let admin = d.bootstrap();
    let t = d.get("/api/v1/trunks", Some(&admin));
    assert_eq!(t.status, 200);
    assert_eq!(t.json()["trunks"], serde_json::json!([]));
    let m = d.get("/metrics", None).text();
    assert!(
        m.contains("vaultcall_sip_rejected_total{status=\"400\"} 1"),
        "{m}"
    );
    d.stop();
}
