//! The outbound call core against a scripted far end, both over real transaction layers and a
//! simulated network with a manual clock: answer and hang-up both ways, busy, auth challenge,
//! ring timeout with CANCEL, forking, redirect, re-INVITE (hold), session timers both ways,
//! REFER with NOTIFY, Q.850 reasons, no response at all.
#![allow(clippy::disallowed_methods)] // the simulation needs one real Instant as its epoch

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vaultcall::sip::auth::{self, Credentials};
use vaultcall::sip::dialog::{CallConfig, CallEvent, CallOutput, OutboundCall};
use vaultcall::sip::message::{Builder, Framing, Message, Method, parse};
use vaultcall::sip::outcome::{HangupBy, OutcomeMap, StatusCode};
use vaultcall::sip::sdp::{self, Codec, Direction};
use vaultcall::sip::transaction::{
    Target, TimerConfig, Transactions, Transport, TxEvent, TxId, TxOutput,
};

const UAC: usize = 0;
const UAS: usize = 1;

fn addr(side: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5060 + side as u16))
}

fn target(side: usize) -> Target {
    Target {
        addr: addr(side),
        transport: Transport::Udp,
    }
}

fn config() -> CallConfig {
    CallConfig {
        request_uri: "sip:13800000000@127.0.0.1:5061".into(),
        to_uri: "sip:13800000000@127.0.0.1:5061".into(),
        from_uri: "sip:4008001234@127.0.0.1".into(),
        from_display: Some("银行".into()),
        contact: "sip:vaultcall@127.0.0.1:5060".into(),
        via_sent_by: "127.0.0.1:5060".into(),
        via_transport: "UDP",
        route: vec![],
        credentials: Some(Credentials {
            username: "vc".into(),
            password: "s3cret".into(),
        }),
        ring_timeout: Duration::from_secs(30),
        max_redirects: 2,
        session_expires: Some(1800),
        sdp: sdp::Local {
            addr: "127.0.0.1".parse().unwrap(),
            port: 20000,
            codecs: vec![Codec::Pcma, Codec::Pcmu],
            dtmf_pt: 101,
            session_id: 7,
            version: 1,
        },
        user_agent: "vaultcall-test".into(),
        timers: TimerConfig::default(),
        outcomes: OutcomeMap::default(),
    }
}

const ANSWER_SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n";

/// What the scripted far end does with each request it gets.
type Script = Box<dyn FnMut(&mut Far, Instant, TxId, &Message)>;

/// The far end's side of things, for scripts.
struct Far {
    txs: Transactions,
    /// Responses to send later: (at, tx, response).
    later: Vec<(Instant, TxId, Message)>,
    /// Requests to send later (BYE, re-INVITE, NOTIFY): (at, request).
    requests: Vec<(Instant, Message)>,
    /// Raw datagrams to send later (2xx retransmission by the far TU).
    raw: Vec<(Instant, Vec<u8>)>,
    got: Vec<Message>,
    acks: Vec<Message>,
    invite: Option<Message>,
    invite_tx: Option<TxId>,
    cancelled: usize,
    no_acks: usize,
    cseq: u32,
}

impl Far {
    /// Answers through a server transaction; a transaction already gone (a scheduled answer
    /// after a CANCEL ended the INVITE) is skipped, as a real far end would.
    fn respond(&mut self, now: Instant, tx: TxId, m: Message) {
        let _ = self.txs.respond(now, tx, m);
    }

    /// A request from the far end inside the dialog the INVITE created.
    fn in_dialog(&mut self, method: Method, tag: &str, extra: &[(&str, &str)]) -> Message {
        let inv = self.invite.as_ref().expect("an INVITE");
        self.cseq += 1;
        let mut b = Builder::request(method.clone(), "sip:vaultcall@127.0.0.1:5060")
            .header(
                "Via",
                &format!("SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKfar{}", self.cseq),
            )
            .header("Max-Forwards", "70")
            .header("From", &format!("{};tag={tag}", inv.header("To").unwrap()))
            .header("To", inv.header("From").unwrap())
            .header("Call-ID", &inv.essentials.call_id)
            .header("CSeq", &format!("{} {method}", self.cseq))
            .header("Contact", "<sip:far@127.0.0.1:5061>");
        for (k, v) in extra {
            b = b.header(k, v);
        }
        b.build().unwrap()
    }
}

fn reply(req: &Message, code: u16, tag: &str) -> Builder {
    let reason = match code {
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        _ => "Reason",
    };
    Builder::response_to(req, code, reason, Some(tag)).header("Contact", "<sip:far@127.0.0.1:5061>")
}

fn ok_with_sdp(req: &Message, tag: &str) -> Message {
    reply(req, 200, tag)
        .body("application/sdp", ANSWER_SDP.as_bytes().to_vec())
        .build()
        .unwrap()
}

struct Run {
    events: Vec<(Duration, CallEvent)>,
    far: Far,
    sent: Vec<Message>,
}

impl Run {
    fn outcome(&self) -> &vaultcall::sip::outcome::Outcome {
        match self.events.last() {
            Some((_, CallEvent::Ended(o))) => o,
            other => panic!("call did not end: last event {other:?}"),
        }
    }
    fn methods_sent(&self) -> Vec<String> {
        self.sent
            .iter()
            .map(|m| m.method().map(|m| m.to_string()).unwrap_or_default())
            .collect()
    }
}

/// Runs one call; `commands` are given to the call at offsets (`hangup`, `transfer`).
fn run(
    cfg: CallConfig,
    script: Script,
    commands: Vec<(Duration, &'static str)>,
    limit: Duration,
) -> Run {
    run_with(cfg, script, commands, limit, false)
}

/// Like [`run`]; a `deaf` far end never receives anything.
fn run_with(
    cfg: CallConfig,
    mut script: Script,
    commands: Vec<(Duration, &'static str)>,
    limit: Duration,
    deaf: bool,
) -> Run {
    let t0 = Instant::now();
    let mut now = t0;
    let timers = TimerConfig::default();
    let mut uac = Transactions::new(timers, 64);
    let mut far = Far {
        txs: Transactions::new(timers, 64),
        later: vec![],
        requests: vec![],
        raw: vec![],
        got: vec![],
        acks: vec![],
        invite: None,
        invite_tx: None,
        cancelled: 0,
        no_acks: 0,
        cseq: 100,
    };
    let mut call = OutboundCall::new(cfg, 42, "127.0.0.1");
    call.start(now);
    let mut wire: BTreeMap<(Instant, u64), (usize, Vec<u8>)> = BTreeMap::new();
    let mut seq = 0u64;
    let mut client_txs: HashMap<TxId, (Method, u32)> = HashMap::new();
    let mut events = Vec::new();
    let mut sent = Vec::new();
    let mut commands = commands;
    let latency = Duration::from_millis(5);
    loop {
        // Drain until call, caller transactions and far transactions are all quiet.
        let mut busy = true;
        while busy {
            busy = false;
            while let Some(o) = call.poll_output() {
                busy = true;
                match o {
                    CallOutput::Send(m) => {
                        sent.push((*m).clone());
                        let key = (m.method().cloned().unwrap(), m.essentials.cseq);
                        let tx = uac.send_request(now, *m, target(UAS)).expect("send");
                        client_txs.insert(tx, key);
                    }
                    CallOutput::SendAck(m) | CallOutput::Resend(m) => {
                        seq += 1;
                        wire.insert((now + latency, seq), (UAS, m.canonical()));
                    }
                    CallOutput::Respond { tx, response } => {
                        uac.respond(now, tx, *response).expect("respond")
                    }
                    CallOutput::Event(e) => events.push((now - t0, e)),
                }
            }
            // Transaction outputs on both sides.
            while let Some(o) = uac.poll_output() {
                busy = true;
                match o {
                    TxOutput::Transmit(t) => {
                        seq += 1;
                        wire.insert((now + latency, seq), (UAS, t.bytes));
                    }
                    TxOutput::Event(e) => match e {
                        TxEvent::Response { response, .. }
                        | TxEvent::StrayResponse { response, .. } => {
                            call.handle_response(now, *response)
                        }
                        TxEvent::Timeout { tx, .. } => {
                            let (m, c) = client_txs[&tx].clone();
                            call.handle_request_timeout(now, &m, c);
                        }
                        TxEvent::Request { tx, request, .. } => {
                            call.handle_request(now, tx, *request)
                        }
                        TxEvent::Ack { request, .. } => call.handle_ack(now, &request),
                        _ => {}
                    },
                }
            }
            while let Some(o) = far.txs.poll_output() {
                busy = true;
                match o {
                    TxOutput::Transmit(t) => {
                        seq += 1;
                        wire.insert((now + latency, seq), (UAC, t.bytes));
                    }
                    TxOutput::Event(TxEvent::Request { tx, request, .. }) => {
                        if request.method() == Some(&Method::Invite) && far.invite.is_none() {
                            far.invite = Some((*request).clone());
                            far.invite_tx = Some(tx);
                        }
                        far.got.push((*request).clone());
                        script(&mut far, now, tx, &request);
                    }
                    TxOutput::Event(TxEvent::Ack { request, .. }) => far.acks.push(*request),
                    // The far TU ends a cancelled INVITE with 487 (RFC 3261 §9.2).
                    TxOutput::Event(TxEvent::Cancelled { invite }) => {
                        far.cancelled += 1;
                        let inv = far.invite.clone().expect("INVITE");
                        let _ =
                            far.txs
                                .respond(now, invite, reply(&inv, 487, "far1").build().unwrap());
                    }
                    TxOutput::Event(TxEvent::NoAck { .. }) => far.no_acks += 1,
                    TxOutput::Event(_) => {}
                }
            }
        }
        // Scheduled far-end actions and commands.
        let far_later = far
            .later
            .iter()
            .map(|x| x.0)
            .chain(far.requests.iter().map(|x| x.0))
            .chain(far.raw.iter().map(|x| x.0))
            .min();
        let next = [
            call.poll_timeout(),
            uac.poll_timeout(),
            far.txs.poll_timeout(),
            wire.keys().next().map(|k| k.0),
            far_later,
            commands.first().map(|c| t0 + c.0),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { break };
        if next - t0 > limit {
            break;
        }
        now = now.max(next);
        if let Some((at, cmd)) = commands.first().copied()
            && t0 + at <= now
        {
            commands.remove(0);
            match cmd {
                "hangup" => call.hangup(now, "script_end"),
                "transfer" => call
                    .transfer(now, "sip:agent@127.0.0.1:5070")
                    .expect("transfer"),
                other => panic!("unknown command {other}"),
            }
        }
        for (at, tx, m) in std::mem::take(&mut far.later) {
            if at <= now {
                far.respond(now, tx, m)
            } else {
                far.later.push((at, tx, m))
            }
        }
        for (at, m) in std::mem::take(&mut far.requests) {
            if at <= now {
                far.txs
                    .send_request(now, m, target(UAC))
                    .expect("far request");
            } else {
                far.requests.push((at, m));
            }
        }
        for (at, b) in std::mem::take(&mut far.raw) {
            if at <= now {
                seq += 1;
                wire.insert((now + latency, seq), (UAC, b));
            } else {
                far.raw.push((at, b));
            }
        }
        while let Some((&(at, k), _)) = wire.iter().next() {
            if at > now {
                break;
            }
            let (to, bytes) = wire.remove(&(at, k)).unwrap();
            if deaf && to == UAS {
                continue;
            }
            let (m, _) = parse(&bytes, Framing::Datagram).expect("valid SIP on the wire");
            let from = target(1 - to);
            if to == UAC {
                uac.handle_received(now, m, from)
            } else {
                far.txs.handle_received(now, m, from)
            }
        }
        if call.poll_timeout().is_some_and(|t| t <= now) {
            call.handle_timeout(now);
        }
        for txs in [&mut uac, &mut far.txs] {
            if txs.poll_timeout().is_some_and(|t| t <= now) {
                txs.handle_timeout(now);
            }
        }
    }
    Run { events, far, sent }
}

fn answered_then_far_hangs_up(delay: Duration) -> Script {
    Box::new(move |far, now, tx, req| match req.method() {
        Some(Method::Invite) => {
            far.respond(now, tx, reply(req, 180, "far1").build().unwrap());
            far.later
                .push((now + Duration::from_secs(2), tx, ok_with_sdp(req, "far1")));
            let bye = far.in_dialog(Method::Bye, "far1", &[]);
            far.requests.push((now + delay, bye));
        }
        _ => far.respond(now, tx, reply(req, 200, "far1").build().unwrap()),
    })
}

#[test]
fn answered_and_hung_up_by_the_customer() {
    let r = run(
        config(),
        answered_then_far_hangs_up(Duration::from_secs(20)),
        vec![],
        Duration::from_secs(120),
    );
    let kinds: Vec<String> = r
        .events
        .iter()
        .map(|(_, e)| {
            format!("{e:?}")
                .split(['(', ' '])
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["Progress", "Answered", "Ended"], "{:?}", r.events);
    match &r.events[1].1 {
        CallEvent::Answered(n) => {
            assert_eq!(n.remote, Some("127.0.0.1:30000".parse().unwrap()));
            assert_eq!((n.codec, n.dtmf_pt), (Codec::Pcma, Some(101)));
        }
        e => panic!("{e:?}"),
    }
    let o = r.outcome();
    assert_eq!(
        (o.status, o.hangup_by, o.cause.as_str()),
        (StatusCode::Answered, HangupBy::Customer, "bye")
    );
    assert_eq!(r.far.acks.len(), 1, "exactly one ACK for the 2xx");
    // The INVITE offered SDP, asked for session timers and showed the caller ID with its name.
    let inv = r.far.invite.as_ref().unwrap();
    assert!(String::from_utf8_lossy(&inv.body).contains("m=audio 20000 RTP/AVP 8 0 101"));
    assert_eq!(inv.header("Session-Expires"), Some("1800"));
    assert!(
        inv.header("From")
            .unwrap()
            .starts_with("\"银行\" <sip:4008001234@127.0.0.1>;tag=")
    );
}

#[test]
fn robot_hangs_up_with_bye() {
    let r = run(
        config(),
        answered_then_far_hangs_up(Duration::from_secs(600)),
        vec![(Duration::from_secs(10), "hangup")],
        Duration::from_secs(120),
    );
    let o = r.outcome();
    assert_eq!(
        (o.status, o.hangup_by, o.cause.as_str()),
        (StatusCode::Answered, HangupBy::Robot, "script_end")
    );
    assert_eq!(r.methods_sent(), ["INVITE", "BYE"]);
    let bye = r
        .far
        .got
        .iter()
        .find(|m| m.method() == Some(&Method::Bye))
        .unwrap();
    assert_eq!(
        bye.start,
        vaultcall::sip::message::StartLine::Request {
            method: Method::Bye,
            uri: "sip:far@127.0.0.1:5061".into()
        },
        "BYE goes to the Contact"
    );
    assert_eq!(bye.essentials.to.tag(), Some("far1"));
}

fn final_answer(code: u16, extra: &'static [(&'static str, &'static str)]) -> Script {
    Box::new(move |far, now, tx, req| {
        if req.method() == Some(&Method::Invite) {
            let mut b = reply(req, code, "far1");
            for (k, v) in extra {
                b = b.header(k, v);
            }
            far.respond(now, tx, b.build().unwrap());
        }
    })
}

#[test]
fn busy_rejected_and_q850_reasons_map_to_status_codes() {
    for (code, extra, want) in [
        (486, &[][..], StatusCode::Busy),
        (603, &[][..], StatusCode::Rejected),
        (404, &[][..], StatusCode::EmptyNumber),
        (480, &[][..], StatusCode::PoweredOff),
        (503, &[][..], StatusCode::CallLoss),
        (
            503,
            &[("Reason", "Q.850;cause=17;text=\"User busy\"")][..],
            StatusCode::Busy,
        ),
    ] {
        let r = run(
            config(),
            final_answer(code, extra),
            vec![],
            Duration::from_secs(60),
        );
        assert_eq!(r.outcome().status, want, "{code} {extra:?}");
        // The transaction layer ACKed the non-2xx: the far end neither retransmitted its final
        // response (Timer G) nor missed the ACK (Timer H).
        assert_eq!((r.far.no_acks, r.far.txs.stats().retransmissions), (0, 0));
    }
}

#[test]
fn digest_challenge_is_answered_once() {
    let script: Script = Box::new(|far, now, tx, req| {
        if req.method() != Some(&Method::Invite) {
            far.respond(now, tx, reply(req, 200, "far1").build().unwrap());
            return;
        }
        match req.header("Proxy-Authorization") {
            None => far.respond(
                now,
                tx,
                reply(req, 407, "far1")
                    .header(
                        "Proxy-Authenticate",
                        "Digest realm=\"trunk\", nonce=\"abc123\", qop=\"auth\", algorithm=SHA-256",
                    )
                    .build()
                    .unwrap(),
            ),
            Some(a) => {
                // Verify the answer the way a registrar would.
                let get = |k: &str| {
                    a.split(", ")
                        .find_map(|p| p.strip_prefix(&format!("{k}=")))
                        .map(|v| v.trim_matches('"').to_owned())
                        .unwrap()
                };
                let ch = auth::parse_challenge(
                    "Digest realm=\"trunk\", nonce=\"abc123\", qop=\"auth\", algorithm=SHA-256",
                )
                .unwrap();
                let expect = auth::authorization(
                    &Credentials {
                        username: "vc".into(),
                        password: "s3cret".into(),
                    },
                    &ch,
                    auth::Attempt {
                        method: "INVITE",
                        uri: &get("uri"),
                        nc: 1,
                        cnonce: &get("cnonce"),
                    },
                );
                let code = if expect == a { 200 } else { 403 };
                let resp = if code == 200 {
                    ok_with_sdp(req, "far1")
                } else {
                    reply(req, 403, "far1").build().unwrap()
                };
                far.respond(now, tx, resp);
            }
        }
    });
    let r = run(
        config(),
        script,
        vec![(Duration::from_secs(5), "hangup")],
        Duration::from_secs(60),
    );
    assert_eq!(r.methods_sent(), ["INVITE", "INVITE", "BYE"]);
    assert_eq!(r.sent[1].essentials.cseq, 2);
    assert_eq!(r.outcome().status, StatusCode::Answered);

    // A server that keeps challenging (wrong password) ends the call as an auth failure.
    let r = run(
        config(),
        final_answer(
            401,
            &[("WWW-Authenticate", "Digest realm=\"t\", nonce=\"n\"")],
        ),
        vec![],
        Duration::from_secs(60),
    );
    assert_eq!(r.outcome().cause, "auth_failed");
    assert_eq!(r.methods_sent(), ["INVITE", "INVITE", "INVITE"]);
}

#[test]
fn ring_timeout_cancels_and_reports_no_answer() {
    let mut cfg = config();
    cfg.ring_timeout = Duration::from_secs(25);
    let script: Script = Box::new(|far, now, tx, req| {
        if req.method() == Some(&Method::Invite) {
            far.respond(now, tx, reply(req, 180, "far1").build().unwrap());
        }
    });
    let r = run(cfg, script, vec![], Duration::from_secs(120));
    assert_eq!(r.methods_sent(), ["INVITE", "CANCEL"]);
    assert_eq!(r.far.cancelled, 1);
    let o = r.outcome();
    assert_eq!(
        (o.status, o.cause.as_str()),
        (StatusCode::NoAnswer, "ring_timeout")
    );
    let (at, _) = r.events.last().unwrap();
    assert!(
        *at >= Duration::from_secs(25) && *at < Duration::from_secs(26),
        "{at:?}"
    );
}

#[test]
fn hangup_before_any_provisional_waits_to_cancel() {
    // RFC 3261 §9.1: no CANCEL before a provisional response; the far transaction layer's
    // 100 Trying (sent at once) is the one that allows it here.
    let script: Script = Box::new(|far, now, tx, req| {
        if req.method() == Some(&Method::Invite) {
            far.later.push((
                now + Duration::from_secs(3),
                tx,
                reply(req, 180, "far1").build().unwrap(),
            ));
        }
    });
    let r = run(
        config(),
        script,
        vec![(Duration::from_millis(1), "hangup")],
        Duration::from_secs(120),
    );
    assert_eq!(r.methods_sent(), ["INVITE", "CANCEL"]);
    let (at, _) = r.events.last().unwrap();
    assert_eq!(r.outcome().cause, "cancelled");
    assert!(*at < Duration::from_secs(1), "{at:?}");
}

#[test]
fn forked_answers_keep_the_first_and_end_the_second() {
    let script: Script = Box::new(|far, now, tx, req| {
        if req.method() == Some(&Method::Invite) {
            far.respond(now, tx, reply(req, 180, "forkA").build().unwrap());
            far.respond(now, tx, reply(req, 180, "forkB").build().unwrap());
            far.later
                .push((now + Duration::from_secs(1), tx, ok_with_sdp(req, "forkA")));
            // The second fork's 2xx, as a proxy would pass it on.
            far.raw.push((
                now + Duration::from_secs(2),
                ok_with_sdp(req, "forkB").canonical(),
            ));
        } else {
            far.respond(now, tx, reply(req, 200, "x").build().unwrap());
        }
    });
    let r = run(
        config(),
        script,
        vec![(Duration::from_secs(10), "hangup")],
        Duration::from_secs(60),
    );
    let byes: Vec<&Message> = r
        .far
        .got
        .iter()
        .filter(|m| m.method() == Some(&Method::Bye))
        .collect();
    assert_eq!(byes.len(), 2, "one BYE for the extra fork, one at hang-up");
    assert_eq!(byes[0].essentials.to.tag(), Some("forkB"));
    assert_eq!(byes[1].essentials.to.tag(), Some("forkA"));
    assert_eq!(r.far.acks.len(), 2, "both 2xx acknowledged");
    assert_eq!(r.outcome().status, StatusCode::Answered);
}

#[test]
fn redirect_is_followed() {
    let script: Script = Box::new(|far, now, tx, req| {
        if let vaultcall::sip::message::StartLine::Request {
            method: Method::Invite,
            uri,
        } = &req.start
        {
            if uri.contains("13800000000") {
                let moved = Builder::response_to(req, 302, "Moved Temporarily", Some("r"))
                    .header("Contact", "<sip:13900000000@127.0.0.1:5061>")
                    .build()
                    .unwrap();
                far.respond(now, tx, moved);
            } else {
                far.respond(now, tx, ok_with_sdp(req, "far1"));
            }
        } else {
            far.respond(now, tx, reply(req, 200, "far1").build().unwrap());
        }
    });
    let r = run(
        config(),
        script,
        vec![(Duration::from_secs(3), "hangup")],
        Duration::from_secs(60),
    );
    assert_eq!(r.methods_sent(), ["INVITE", "INVITE", "BYE"]);
    assert!(
        matches!(&r.sent[1].start, vaultcall::sip::message::StartLine::Request { uri, .. } if uri == "sip:13900000000@127.0.0.1:5061")
    );
    assert_eq!(r.outcome().status, StatusCode::Answered);
}

#[test]
fn reinvite_hold_is_answered_and_media_updated() {
    let script: Script = Box::new(|far, now, tx, req| match req.method() {
        Some(Method::Invite) if req.essentials.to.tag().is_none() => {
            far.respond(now, tx, ok_with_sdp(req, "far1"));
            let hold = far.in_dialog(Method::Invite, "far1", &[]);
            let hold = Builder::from_message(&hold)
                .body(
                    "application/sdp",
                    ANSWER_SDP
                        .replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")
                        .replace("a=ptime:20", "a=ptime:20\r\na=sendonly")
                        .into_bytes(),
                )
                .build()
                .unwrap();
            far.requests.push((now + Duration::from_secs(5), hold));
        }
        _ => far.respond(now, tx, reply(req, 200, "far1").build().unwrap()),
    });
    let r = run(
        config(),
        script,
        vec![(Duration::from_secs(90), "hangup")],
        Duration::from_secs(120),
    );
    let updated = r.events.iter().find_map(|(_, e)| match e {
        CallEvent::MediaUpdated(n) => Some(*n),
        _ => None,
    });
    let n = updated.expect("MediaUpdated");
    assert_eq!((n.remote, n.direction), (None, Direction::SendOnly));
    // The far end never ACKs its re-INVITE's 2xx in this script: we retransmit it and, after
    // 64·T1, end the call.
    let o = r.outcome();
    assert_eq!(o.cause, "no_ack");
    let (at, _) = r.events.last().unwrap();
    assert!(
        *at >= Duration::from_secs(37) && *at < Duration::from_secs(38),
        "5 s + 64·T1: {at:?}"
    );
}

#[test]
fn session_timer_we_refresh_and_they_must_refresh() {
    // We are the refresher: a re-INVITE goes out at half the interval.
    let script: Script = Box::new(|far, now, tx, req| match req.method() {
        Some(Method::Invite) => {
            let r = Builder::from_message(&ok_with_sdp(req, "far1"))
                .header("Session-Expires", "120;refresher=uac")
                .build()
                .unwrap();
            far.respond(now, tx, r);
        }
        _ => far.respond(now, tx, reply(req, 200, "far1").build().unwrap()),
    });
    let r = run(
        config(),
        script,
        vec![(Duration::from_secs(200), "hangup")],
        Duration::from_secs(300),
    );
    let invites: Vec<&Message> = r
        .sent
        .iter()
        .filter(|m| m.method() == Some(&Method::Invite))
        .collect();
    assert!(
        invites.len() >= 3,
        "refreshes at ~60 s and ~120 s: {:?}",
        r.methods_sent()
    );
    assert_eq!(r.outcome().cause, "script_end");

    // The far end is the refresher and never refreshes: we end the call at 120 − 32 s.
    let script: Script = Box::new(|far, now, tx, req| match req.method() {
        Some(Method::Invite) => {
            let r = Builder::from_message(&ok_with_sdp(req, "far1"))
                .header("Session-Expires", "120;refresher=uas")
                .build()
                .unwrap();
            far.respond(now, tx, r);
        }
        _ => far.respond(now, tx, reply(req, 200, "far1").build().unwrap()),
    });
    let r = run(config(), script, vec![], Duration::from_secs(300));
    let o = r.outcome();
    assert_eq!(
        (o.cause.as_str(), o.hangup_by),
        ("session_timer", HangupBy::System)
    );
    let (at, _) = r.events.last().unwrap();
    assert!(
        *at >= Duration::from_secs(88) && *at < Duration::from_secs(90),
        "{at:?}"
    );
}

#[test]
fn refer_transfers_and_hangs_up_after_notify_200() {
    let script: Script = Box::new(|far, now, tx, req| match req.method() {
        Some(Method::Invite) => far.respond(now, tx, ok_with_sdp(req, "far1")),
        Some(Method::Refer) => {
            assert_eq!(req.header("Refer-To"), Some("<sip:agent@127.0.0.1:5070>"));
            far.respond(now, tx, reply(req, 202, "far1").build().unwrap());
            for (i, frag) in ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"].iter().enumerate() {
                let state = if i == 0 {
                    "active;expires=60"
                } else {
                    "terminated;reason=noresource"
                };
                let n = far.in_dialog(
                    Method::Notify,
                    "far1",
                    &[("Event", "refer"), ("Subscription-State", state)],
                );
                let n = Builder::from_message(&n)
                    .body("message/sipfrag;version=2.0", frag.as_bytes().to_vec())
                    .build()
                    .unwrap();
                far.requests
                    .push((now + Duration::from_secs(1 + i as u64), n));
            }
        }
        _ => far.respond(now, tx, reply(req, 200, "far1").build().unwrap()),
    });
    let r = run(
        config(),
        script,
        vec![(Duration::from_secs(5), "transfer")],
        Duration::from_secs(60),
    );
    let progress: Vec<u16> = r
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            CallEvent::TransferProgress { code } => Some(*code),
            _ => None,
        })
        .collect();
    assert_eq!(progress, [100, 200]);
    assert_eq!(r.methods_sent(), ["INVITE", "REFER", "BYE"]);
    assert_eq!(r.outcome().cause, "transferred");
}

#[test]
fn no_response_at_all_is_a_line_fault_after_timer_b() {
    let r = run_with(
        config(),
        Box::new(|_, _, _, _| {}),
        vec![],
        Duration::from_secs(60),
        true,
    );
    let o = r.outcome();
    assert_eq!(
        (o.status, o.cause.as_str()),
        (StatusCode::LineFault, "timer_b")
    );
    let (at, _) = r.events.last().unwrap();
    assert_eq!(*at, Duration::from_secs(32), "Timer B = 64·T1");
}
