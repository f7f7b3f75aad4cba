#![allow(clippy::disallowed_methods)] // the simulation needs one real Instant as its epoch
//! Simulation: two transaction layers (a caller and a callee) talk over a seeded network that
//! loses, duplicates and reorders datagrams, with a manual clock — no sleeps, no sockets.
//! For each seed the caller sends INVITE (answered 180 then 200 or 486) and, after a 200, BYE.
//! Checks: the caller learns the callee's final answer (or times out only under loss that
//! makes that unavoidable), a 2xx is acknowledged, no transaction outlives its timers, and the
//! number of retransmissions stays within RFC 3261's schedule.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vaultcall::sip::message::{Builder, Framing, Message, Method, parse};
use vaultcall::sip::transaction::{
    Target, TimerConfig, Transactions, Transport, TxEvent, TxId, TxOutput,
};

/// xorshift64*: a tiny deterministic generator for the network's dice.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Clone, Copy)]
struct NetProfile {
    loss: f64,
    dup: f64,
    /// Extra random delay up to this, which reorders datagrams.
    jitter_ms: u64,
}

struct Net {
    rng: Rng,
    p: NetProfile,
    seq: u64,
    /// (deliver at, tiebreak) → (to side, bytes, from)
    queue: BTreeMap<(Instant, u64), (usize, Vec<u8>, SocketAddr)>,
    sent: usize,
}

impl Net {
    fn send(&mut self, now: Instant, to: usize, bytes: Vec<u8>, from: SocketAddr) {
        self.sent += 1;
        if self.rng.chance(self.p.loss) {
            return;
        }
        let copies = if self.rng.chance(self.p.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = Duration::from_millis(10 + self.rng.below(self.p.jitter_ms + 1));
            self.seq += 1;
            self.queue
                .insert((now + delay, self.seq), (to, bytes.clone(), from));
        }
    }
}

const A: usize = 0;
const B: usize = 1;

fn addr(side: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, side as u8 + 1], 5060))
}

fn target(side: usize) -> Target {
    Target {
        addr: addr(side),
        transport: Transport::Udp,
    }
}

fn request(method: Method, cseq: u32, branch: &str, to_tag: Option<&str>) -> Message {
    let to = match to_tag {
        Some(t) => format!("<sip:callee@10.0.0.2>;tag={t}"),
        None => "<sip:callee@10.0.0.2>".to_owned(),
    };
    Builder::request(method.clone(), "sip:callee@10.0.0.2")
        .header("Via", &format!("SIP/2.0/UDP 10.0.0.1:5060;branch={branch}"))
        .header("Max-Forwards", "70")
        .header("From", "<sip:robot@10.0.0.1>;tag=caller1")
        .header("To", &to)
        .header("Call-ID", "sim-call@10.0.0.1")
        .header("CSeq", &format!("{cseq} {method}"))
        .build()
        .expect("valid request")
}

struct Outcome {
    final_code: Option<u16>,
    timed_out: bool,
    acked: bool,
    bye_ok: bool,
    transmissions: usize,
}

/// Runs one call; `answer` is the callee's final response code.
fn simulate(seed: u64, p: NetProfile, answer: u16) -> Outcome {
    let t0 = Instant::now();
    let mut now = t0;
    let timers = TimerConfig::default();
    let mut ua = [Transactions::new(timers, 64), Transactions::new(timers, 64)];
    let mut net = Net {
        rng: Rng(seed | 1),
        p,
        seq: 0,
        queue: BTreeMap::new(),
        sent: 0,
    };

    let invite = request(Method::Invite, 1, "z9hG4bKinv1", None);
    let invite_tx = ua[A]
        .send_request(now, invite, target(B))
        .expect("send INVITE");
    let mut out = Outcome {
        final_code: None,
        timed_out: false,
        acked: false,
        bye_ok: false,
        transmissions: 0,
    };
    let mut bye_tx: Option<TxId> = None;
    // Callee TU state: the 2xx it retransmits until ACKed (RFC 3261 §13.3.1.4).
    let mut ok_resend: Option<(Vec<u8>, Instant, Duration, Instant)> = None;

    for _step in 0..100_000 {
        // Drain both layers' outputs.
        for side in [A, B] {
            while let Some(o) = ua[side].poll_output() {
                match o {
                    TxOutput::Transmit(t) => {
                        let to = if t.target.addr == addr(A) { A } else { B };
                        net.send(now, to, t.bytes, addr(side));
                    }
                    TxOutput::Event(e) => match (side, e) {
                        (B, TxEvent::Request { tx, request, .. }) => match request.method() {
                            Some(Method::Invite) => {
                                let ringing =
                                    Builder::response_to(&request, 180, "Ringing", Some("callee1"))
                                        .build()
                                        .unwrap();
                                ua[B].respond(now, tx, ringing).unwrap();
                                let reason = if answer == 200 { "OK" } else { "Busy Here" };
                                let fin =
                                    Builder::response_to(&request, answer, reason, Some("callee1"))
                                        .header("Contact", "<sip:callee@10.0.0.2:5060>")
                                        .build()
                                        .unwrap();
                                if answer == 200 {
                                    ok_resend = Some((
                                        fin.canonical(),
                                        now + timers.t1,
                                        timers.t1,
                                        now + 64 * timers.t1,
                                    ));
                                }
                                ua[B].respond(now, tx, fin).unwrap();
                            }
                            Some(Method::Bye) => {
                                let ok = Builder::response_to(&request, 200, "OK", None)
                                    .build()
                                    .unwrap();
                                ua[B].respond(now, tx, ok).unwrap();
                            }
                            other => panic!("callee got {other:?}"),
                        },
                        (B, TxEvent::Ack { .. }) => {
                            out.acked = true;
                            ok_resend = None;
                        }
                        (A, TxEvent::Response { tx, response }) if tx == invite_tx => {
                            let code = response.status().unwrap();
                            if code >= 200 {
                                out.final_code.get_or_insert(code);
                            }
                            if (200..300).contains(&code) {
                                send_ack(&mut net, now, &response);
                                if bye_tx.is_none() {
                                    let to_tag = response.essentials.to.tag();
                                    let bye = request(Method::Bye, 2, "z9hG4bKbye1", to_tag);
                                    bye_tx = Some(ua[A].send_request(now, bye, target(B)).unwrap());
                                }
                            }
                        }
                        (A, TxEvent::StrayResponse { response, .. }) => {
                            if response.status().is_some_and(|c| (200..300).contains(&c))
                                && response.essentials.cseq_method == Method::Invite
                            {
                                send_ack(&mut net, now, &response);
                            }
                        }
                        (A, TxEvent::Response { tx, response }) if Some(tx) == bye_tx => {
                            if response.status() == Some(200) {
                                out.bye_ok = true;
                            }
                        }
                        (A, TxEvent::Timeout { .. }) => out.timed_out = true,
                        (_, TxEvent::Terminated { .. } | TxEvent::NoAck { .. }) => {}
                        (side, e) => panic!("side {side} unexpected event {e:?}"),
                    },
                }
            }
        }
        // Next instant something happens.
        let mut next = [
            ua[A].poll_timeout(),
            ua[B].poll_timeout(),
            net.queue.keys().next().map(|k| k.0),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some((_, at, _, _)) = &ok_resend {
            next = Some(next.map_or(*at, |n| n.min(*at)));
        }
        let Some(next) = next else { break };
        now = now.max(next);
        // Callee TU: retransmit the 2xx (T1 doubling, capped at T2) until ACK or 64·T1.
        if let Some((bytes, at, interval, until)) = ok_resend.as_mut()
            && now >= *at
        {
            if now >= *until {
                ok_resend = None;
            } else {
                *interval = (*interval * 2).min(timers.t2);
                *at = now + *interval;
                let b = bytes.clone();
                net.send(now, A, b, addr(B));
            }
        }
        // Deliver everything due.
        while let Some((&(at, k), _)) = net.queue.iter().next() {
            if at > now {
                break;
            }
            let (to, bytes, from) = net.queue.remove(&(at, k)).unwrap();
            let (msg, _) =
                parse(&bytes, Framing::Datagram).expect("simulated peers send valid SIP");
            ua[to].handle_received(
                now,
                msg,
                Target {
                    addr: from,
                    transport: Transport::Udp,
                },
            );
        }
        for side in [A, B] {
            if ua[side].poll_timeout().is_some_and(|t| t <= now) {
                ua[side].handle_timeout(now);
            }
        }
        assert!(
            now - t0 < Duration::from_secs(600),
            "simulation did not settle"
        );
    }
    for side in [A, B] {
        let s = ua[side].stats();
        assert_eq!(
            (s.clients, s.servers),
            (0, 0),
            "side {side}: transactions left behind"
        );
    }
    out.transmissions = net.sent;
    out
}

fn send_ack(net: &mut Net, now: Instant, ok: &Message) {
    // ACK for a 2xx: new branch, To with the callee's tag, sent by the dialog (RFC 3261 §13.2.2.4).
    let ack = Builder::request(Method::Ack, "sip:callee@10.0.0.2:5060")
        .header("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKack1")
        .header("Max-Forwards", "70")
        .header("From", ok.header("From").unwrap())
        .header("To", ok.header("To").unwrap())
        .header("Call-ID", &ok.essentials.call_id)
        .header("CSeq", "1 ACK")
        .build()
        .unwrap();
    net.send(now, B, ack.canonical(), addr(A));
}

#[test]
fn perfect_network_completes_every_call() {
    let p = NetProfile {
        loss: 0.0,
        dup: 0.0,
        jitter_ms: 0,
    };
    let o = simulate(1, p, 200);
    assert_eq!(o.final_code, Some(200));
    assert!(o.acked && o.bye_ok && !o.timed_out);
    // INVITE, 100, 180, 200, ACK, BYE, 200: nothing retransmitted.
    assert_eq!(o.transmissions, 7);
    let o = simulate(1, p, 486);
    assert_eq!(o.final_code, Some(486));
    assert_eq!(o.transmissions, 5, "INVITE, 100, 180, 486, ACK");
}

#[test]
fn lossy_reordering_duplicating_network() {
    let p = NetProfile {
        loss: 0.25,
        dup: 0.2,
        jitter_ms: 400,
    };
    let mut completed = 0;
    for seed in 1..=300u64 {
        let answer = if seed % 3 == 0 { 486 } else { 200 };
        let o = simulate(seed * 7919, p, answer);
        match o.final_code {
            Some(code) => {
                assert_eq!(code, answer, "seed {seed}: wrong final response");
                completed += 1;
                if code == 200 {
                    assert!(o.acked, "seed {seed}: a 2xx was never acknowledged");
                }
            }
            None => assert!(o.timed_out, "seed {seed}: no final response and no timeout"),
        }
        // RFC 3261 bounds retransmissions: Timer A sends INVITE 7 times in 64·T1, E/G at most
        // ~11; a call can never cost hundreds of datagrams.
        assert!(
            o.transmissions < 80,
            "seed {seed}: {} datagrams",
            o.transmissions
        );
    }
    // With 25 % loss each way, a call fails only if all 7 INVITE copies or every answer are
    // lost; that is rare.
    assert!(completed >= 295, "only {completed} of 300 calls completed");
}

#[test]
fn a_dead_peer_times_out_with_timer_b() {
    let p = NetProfile {
        loss: 1.0,
        dup: 0.0,
        jitter_ms: 0,
    };
    let o = simulate(5, p, 200);
    assert!(o.timed_out && o.final_code.is_none());
    // Timer A: INVITE at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; Timer B at 32 s.
    assert_eq!(o.transmissions, 7);
}
