//! Simulation tests of the media session: two sessions against each other over a seeded lossy,
//! reordering network with a manual clock, and one session against hand-made packets.

use core::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::media::dtmf::{self, DtmfNotice, EventPayload};
use crate::media::g711::Law;
use crate::media::rtp::{self, RtcpPacket, RtpHeader};
use crate::media::session::*;
use crate::media::tap::TapFrame;
use crate::media::test_instant;
use crate::media::tone;

const NTP_START: u64 = 0xE000_0000_0000_0000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn seeds(n: u32) -> Seeds {
    Seeds {
        ssrc: 0x1000 + n,
        initial_seq: 65_000 + n as u16,
        initial_ts: u32::MAX - 1000 * n,
        mix: u64::from(n) * 7919,
    }
}

fn session(start: Instant, remote: &str, n: u32, policy: Policy) -> MediaSession {
    let neg = Negotiated::g711(addr(remote), Law::Alaw, Some(101));
    MediaSession::new(start, NTP_START, neg, policy, seeds(n)).unwrap()
}

/// Everything one session put out.
#[derive(Default)]
struct Drained {
    sent: Vec<(Instant, Transmit)>,
    taps: Vec<TapFrame>,
    events: Vec<MediaEvent>,
}

fn drain(s: &mut MediaSession, now: Instant, d: &mut Drained) {
    while let Some(o) = s.poll_output() {
        match o {
            Output::Transmit(t) => d.sent.push((now, t)),
            Output::Tap(f) => d.taps.push(f),
            Output::Event(e) => d.events.push(e),
        }
    }
}

/// xorshift for the simulated network.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
}

struct Link {
    loss: u64,
    dup: u64,
    jitter_ms: u64,
    delay_ms: u64,
}

struct InFlight {
    at: Instant,
    to_b: bool,
    channel: Channel,
    from: SocketAddr,
    data: Vec<u8>,
}

/// Runs A and B against each other for `dur`, A at 10.0.0.1:20000, B at 10.0.0.2:30000.
fn simulate(
    a: &mut MediaSession,
    b: &mut MediaSession,
    start: Instant,
    dur: Duration,
    link: &Link,
    seed: u64,
) -> (Drained, Drained) {
    let a_addr = addr("10.0.0.1:20000");
    let b_addr = addr("10.0.0.2:30000");
    let mut rng = Rng(seed | 1);
    let (mut da, mut db) = (Drained::default(), Drained::default());
    let mut net: Vec<InFlight> = Vec::new();
    let mut now = start;
    let end = start + dur;
    while now < end {
        // Deliver what is due.
        let mut i = 0;
        while i < net.len() {
            if net[i].at <= now {
                let p = net.swap_remove(i);
                let (s, d) = if p.to_b {
                    (&mut *b, &mut db)
                } else {
                    (&mut *a, &mut da)
                };
                match p.channel {
                    Channel::Rtp => s.handle_rtp(now, p.from, &p.data),
                    Channel::Rtcp => s.handle_rtcp(now, p.from, &p.data),
                }
                drain(s, now, d);
            } else {
                i += 1;
            }
        }
        for a_side in [true, false] {
            let (s, d) = if a_side {
                (&mut *a, &mut da)
            } else {
                (&mut *b, &mut db)
            };
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
                let before = d.sent.len();
                drain(s, now, d);
                // What A sends goes to B and comes from A's addresses, and the other way round.
                let to_b = a_side;
                for (_, t) in &d.sent[before..] {
                    let from = match (a_side, t.channel) {
                        (true, Channel::Rtp) => a_addr,
                        (true, Channel::Rtcp) => addr("10.0.0.1:20001"),
                        (false, Channel::Rtp) => b_addr,
                        (false, Channel::Rtcp) => addr("10.0.0.2:30001"),
                    };
                    let copies = if rng.chance(link.loss) {
                        0
                    } else if rng.chance(link.dup) {
                        2
                    } else {
                        1
                    };
                    for _ in 0..copies {
                        let extra = if link.jitter_ms > 0 {
                            rng.next() % (link.jitter_ms + 1)
                        } else {
                            0
                        };
                        net.push(InFlight {
                            at: now + Duration::from_millis(link.delay_ms + extra),
                            to_b,
                            channel: t.channel,
                            from,
                            data: t.payload.clone(),
                        });
                    }
                }
            }
        }
        // Next moment anything happens.
        let mut next = end;
        for s in [&*a, &*b] {
            if let Some(t) = s.poll_timeout() {
                next = next.min(t);
            }
        }
        for p in &net {
            next = next.min(p.at);
        }
        now = next.max(now + Duration::from_micros(1)).min(end);
    }
    (da, db)
}

/// The customer audio that carried the tone (received audio above a silence threshold).
fn customer_audio(taps: &[TapFrame]) -> Vec<i16> {
    taps.iter()
        .filter(|f| f.customer_audio && tone::rms(&f.customer) > 1000.0)
        .flat_map(|f| f.customer.iter().copied())
        .collect()
}

#[test]
fn two_sessions_exchange_tones_over_a_lossy_reordering_network() {
    let t0 = test_instant();
    // A is the robot at 10.0.0.1 and believes B is at 10.0.0.2; B the same about A.
    let policy = Policy {
        rtcp_interval: Duration::from_secs(1),
        ..Policy::default()
    };
    let mut a = session(t0, "10.0.0.2:30000", 1, policy);
    let mut b = session(t0, "10.0.0.1:20000", 2, policy);
    a.play(1, tone::sine(440.0, 3000, 8000)).unwrap();
    b.play(2, tone::sine(1000.0, 3000, 8000)).unwrap();
    let link = Link {
        loss: 20,
        dup: 20,
        jitter_ms: 30,
        delay_ms: 15,
    };
    let (da, db) = simulate(&mut a, &mut b, t0, Duration::from_secs(4), &link, 42);
    let heard_by_b = customer_audio(&db.taps);
    let heard_by_a = customer_audio(&da.taps);
    assert_eq!(
        tone::dominant_frequency(&heard_by_b, 200.0, 3400.0, 10.0),
        440.0
    );
    assert_eq!(
        tone::dominant_frequency(&heard_by_a, 200.0, 3400.0, 10.0),
        1000.0
    );
    // Roughly 3 s of audio each way minus 2 % loss.
    for heard in [&heard_by_a, &heard_by_b] {
        let ms = heard.len() / 8;
        assert!((2700..=3100).contains(&ms), "heard {ms} ms");
    }
    let sb = b.stats();
    assert!(sb.packets_received > 150, "{sb:?}");
    assert!(sb.loss_percent > 0.5 && sb.loss_percent < 5.0, "{sb:?}");
    assert!(sb.duplicates > 0, "{sb:?}");
    assert!(sb.jitter_ms > 1.0, "{sb:?}");
    assert_eq!(sb.malformed, 0);
    assert!(da.events.contains(&MediaEvent::PlaybackFinished {
        id: 1,
        completed: true
    }));
    // RTCP flowed both ways and gave an RTT of about twice the one-way delay.
    let sa = a.stats();
    assert!(sa.rtcp_received >= 1, "{sa:?}");
    let rtt = sa.rtt_ms.expect("an RTT from B's report");
    assert!((25.0..=100.0).contains(&rtt), "rtt {rtt}");
    assert!(sa.remote_loss_percent.is_some());
    // Taps are one per frame and aligned: index k holds both directions of tick k.
    assert!(db.taps.windows(2).all(|w| w[1].index == w[0].index + 1));
    assert!(
        db.taps
            .iter()
            .all(|f| f.customer.len() == 160 && f.robot.len() == 160)
    );
}

#[test]
fn thirty_minutes_of_pacing_without_drift() {
    let t0 = test_instant();
    let mut s = session(t0, "10.0.0.2:30000", 3, Policy::default());
    let mut d = Drained::default();
    let mut rng = Rng(99);
    let mut now = t0;
    let end = t0 + Duration::from_secs(30 * 60);
    let mut wake_late_max = Duration::ZERO;
    while now < end {
        let due = s.poll_timeout().unwrap();
        // The shell wakes 0–5 ms late, at random, like a loaded timer wheel.
        let late = Duration::from_micros(rng.next() % 5000);
        wake_late_max = wake_late_max.max(late);
        now = due + late;
        s.handle_timeout(now);
        drain(&mut s, now, &mut d);
    }
    let rtp: Vec<(Instant, RtpHeader, u64)> = d
        .sent
        .iter()
        .filter(|(_, t)| t.channel == Channel::Rtp)
        .map(|(at, t)| {
            (
                *at,
                rtp::parse_rtp(&t.payload).unwrap().header,
                t.frame.unwrap(),
            )
        })
        .collect();
    // 90 000 frames in 30 minutes, every one sent, none twice.
    assert!(rtp.len() >= 90_000 && rtp.len() <= 90_001, "{}", rtp.len());
    let s0 = seeds(3);
    for (i, (at, h, k)) in rtp.iter().enumerate() {
        let k = *k;
        assert_eq!(k, i as u64);
        let due = t0 + Duration::from_millis(20 * k);
        assert_eq!(
            s.frame_due(k),
            due,
            "frame {k} due exactly at start + 20 ms × k"
        );
        // Sent no earlier than due and no later than the wake-up lateness.
        assert!(*at >= due && *at - due <= wake_late_max, "frame {k}");
        assert_eq!(h.timestamp, s0.initial_ts.wrapping_add(160 * k as u32));
        assert_eq!(h.sequence, s0.initial_seq.wrapping_add(k as u16));
        assert_eq!(h.ssrc, s0.ssrc);
    }
    // The last frame is due exactly 30 minutes after the first: zero drift by construction.
    let last = rtp.last().unwrap().2;
    assert_eq!(s.frame_due(last) - t0, Duration::from_millis(20 * last));
    assert_eq!(s.stats().frames_skipped, 0);
}

#[test]
fn a_very_late_wakeup_skips_frames_instead_of_bursting() {
    let t0 = test_instant();
    let mut s = session(t0, "10.0.0.2:30000", 4, Policy::default());
    let mut d = Drained::default();
    s.handle_timeout(t0);
    drain(&mut s, t0, &mut d);
    // The process stalls for 205 ms: frames 1..=10 are due; only the last three go out.
    let now = t0 + Duration::from_millis(205);
    s.handle_timeout(now);
    drain(&mut s, now, &mut d);
    let frames: Vec<u64> = d.sent.iter().filter_map(|(_, t)| t.frame).collect();
    assert_eq!(frames, [0, 8, 9, 10]);
    assert_eq!(s.stats().frames_skipped, 7);
    let h = rtp::parse_rtp(&d.sent.last().unwrap().1.payload)
        .unwrap()
        .header;
    assert_eq!(h.timestamp, seeds(4).initial_ts.wrapping_add(1600));
}

#[test]
fn continuity_and_marker_across_prompts_and_silence() {
    let t0 = test_instant();
    let mut s = session(t0, "10.0.0.2:30000", 5, Policy::default());
    let mut d = Drained::default();
    let mut now = t0;
    s.play(1, vec![1000; 160 * 3]).unwrap();
    let tick = |s: &mut MediaSession, d: &mut Drained, now: &mut Instant| {
        *now = s.poll_timeout().unwrap();
        s.handle_timeout(*now);
        drain(s, *now, d);
    };
    for _ in 0..6 {
        tick(&mut s, &mut d, &mut now);
    }
    s.play(2, vec![1000; 100]).unwrap(); // a short prompt: one frame, padded with silence
    s.play(3, vec![1000; 200]).unwrap(); // follows in the same talkspurt
    for _ in 0..6 {
        tick(&mut s, &mut d, &mut now);
    }
    let hs: Vec<RtpHeader> = d
        .sent
        .iter()
        .filter(|(_, t)| t.channel == Channel::Rtp)
        .map(|(_, t)| rtp::parse_rtp(&t.payload).unwrap().header)
        .collect();
    let markers: Vec<bool> = hs.iter().map(|h| h.marker).collect();
    // Prompt 1 in frames 0–2, silence 3–5, prompts 2+3 in frames 6–7, silence after.
    assert_eq!(
        markers,
        [
            true, false, false, false, false, false, true, false, false, false, false, false
        ]
    );
    for w in hs.windows(2) {
        assert_eq!(w[1].sequence, w[0].sequence.wrapping_add(1));
        assert_eq!(w[1].timestamp, w[0].timestamp.wrapping_add(160));
        assert_eq!(w[1].ssrc, w[0].ssrc);
    }
    // Silence frames carry A-law silence.
    let p = &d
        .sent
        .iter()
        .filter(|(_, t)| t.channel == Channel::Rtp)
        .nth(4)
        .unwrap()
        .1
        .payload;
    assert!(p[12..].iter().all(|&c| c == Law::Alaw.silence()));
    let finished: Vec<u64> = d
        .events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::PlaybackFinished {
                id,
                completed: true,
            } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(finished, [1, 2, 3]);
    // The robot tap shows what was sent, frame by frame.
    assert_eq!(d.taps[0].robot[0], 1000);
    assert_eq!(d.taps[3].robot[0], 0);
}

#[test]
fn barge_in_stops_playback_and_reports_it() {
    let t0 = test_instant();
    let mut s = session(t0, "10.0.0.2:30000", 6, Policy::default());
    s.play(7, vec![1; 8000]).unwrap();
    s.play(8, vec![1; 8000]).unwrap();
    assert_eq!(s.queued_samples(), 16000);
    s.stop_playback();
    let mut d = Drained::default();
    drain(&mut s, t0, &mut d);
    assert_eq!(
        d.events,
        [
            MediaEvent::PlaybackFinished {
                id: 7,
                completed: false
            },
            MediaEvent::PlaybackFinished {
                id: 8,
                completed: false
            }
        ]
    );
    assert_eq!(s.queued_samples(), 0);
    let mut small = session(
        t0,
        "10.0.0.2:30000",
        6,
        Policy {
            playback_queue_secs: 1,
            ..Policy::default()
        },
    );
    assert_eq!(
        small.play(1, vec![0; 8001]),
        Err(SessionError::PlaybackFull)
    );
}

fn rtp_packet(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let h = RtpHeader {
        payload_type: pt,
        marker,
        sequence: seq,
        timestamp: ts,
        ssrc,
    };
    rtp::write_rtp(&h, payload, &mut out).unwrap();
    out
}

#[test]
fn symmetric_rtp_latches_to_the_real_source_and_then_drops_strangers() {
    let t0 = test_instant();
    let mut s = session(t0, "192.0.2.10:4000", 7, Policy::default());
    let mut d = Drained::default();
    let nat = addr("198.51.100.7:61000");
    s.handle_rtp(t0, nat, &rtp_packet(8, 1, 0, 55, true, &[0xD5; 160]));
    drain(&mut s, t0, &mut d);
    assert_eq!(
        d.events,
        [MediaEvent::RemoteLatched {
            channel: Channel::Rtp,
            addr: nat
        }]
    );
    assert_eq!(s.rtp_destination(), nat);
    s.handle_rtp(
        t0,
        addr("203.0.113.9:5000"),
        &rtp_packet(8, 2, 160, 55, false, &[0xD5; 160]),
    );
    assert_eq!(s.stats().foreign_source, 1);
    assert_eq!(s.stats().packets_received, 1);
    let mut now = t0;
    while now < t0 + Duration::from_secs(8) {
        now = s.poll_timeout().unwrap();
        s.handle_timeout(now);
        drain(&mut s, now, &mut d);
    }
    let rtp_to: Vec<SocketAddr> = d
        .sent
        .iter()
        .filter(|(_, t)| t.channel == Channel::Rtp)
        .map(|(_, t)| t.to)
        .collect();
    assert!(rtp_to.len() > 100 && rtp_to.iter().all(|a| *a == nat));
    // RTCP goes to the latched address + 1 until RTCP itself arrives.
    let rtcp_to: Vec<SocketAddr> = d
        .sent
        .iter()
        .filter(|(_, t)| t.channel == Channel::Rtcp)
        .map(|(_, t)| t.to)
        .collect();
    assert!(!rtcp_to.is_empty(), "a report within 7.5 s");
    assert!(
        rtcp_to.iter().all(|a| *a == addr("198.51.100.7:61001")),
        "{rtcp_to:?}"
    );

    // Latching off: keep sending to the SDP address, accept from anywhere.
    let policy = Policy {
        symmetric_rtp: false,
        ..Policy::default()
    };
    let mut s = session(t0, "192.0.2.10:4000", 8, policy);
    s.handle_rtp(t0, nat, &rtp_packet(8, 1, 0, 55, false, &[0xD5; 160]));
    s.handle_rtp(
        t0,
        addr("203.0.113.9:5000"),
        &rtp_packet(8, 2, 160, 55, false, &[0xD5; 160]),
    );
    assert_eq!(s.stats().packets_received, 2);
    assert_eq!(s.rtp_destination(), addr("192.0.2.10:4000"));
}

#[test]
fn dtmf_is_sent_as_rfc_4733_events_in_the_stream() {
    let t0 = test_instant();
    let mut s = session(t0, "10.0.0.2:30000", 9, Policy::default());
    let mut d = Drained::default();
    s.send_dtmf('5', 100).unwrap();
    assert_eq!(
        s.send_dtmf('x', 100),
        Err(SessionError::Dtmf(dtmf::DtmfError::NotADigit('x')))
    );
    for _ in 0..10 {
        let now = s.poll_timeout().unwrap();
        s.handle_timeout(now);
        drain(&mut s, now, &mut d);
    }
    let pkts: Vec<(RtpHeader, Vec<u8>)> = d
        .sent
        .iter()
        .filter(|(_, t)| t.channel == Channel::Rtp)
        .map(|(_, t)| {
            let p = rtp::parse_rtp(&t.payload).unwrap();
            (p.header, p.payload.to_vec())
        })
        .collect();
    let ts0 = seeds(9).initial_ts;
    let events: Vec<(bool, u32, EventPayload)> = pkts
        .iter()
        .filter(|(h, _)| h.payload_type == 101)
        .map(|(h, p)| (h.marker, h.timestamp, dtmf::parse_event(p).unwrap()))
        .collect();
    assert_eq!(
        events.len(),
        7,
        "5 updates (the last with E) and 2 more end packets"
    );
    assert!(events[0].0 && events.iter().skip(1).all(|e| !e.0));
    assert!(events.iter().all(|e| e.1 == ts0 && e.2.event == 5));
    assert_eq!(events.iter().filter(|e| e.2.end).count(), 3);
    // Audio resumes in frame 7 with the timestamp of frame 7; sequence numbers never skip.
    let (h7, _) = &pkts[7];
    assert_eq!(
        (h7.payload_type, h7.timestamp),
        (8, ts0.wrapping_add(7 * 160))
    );
    assert!(
        pkts.windows(2)
            .all(|w| w[1].0.sequence == w[0].0.sequence.wrapping_add(1))
    );
    let mut no_te = MediaSession::new(
        t0,
        NTP_START,
        Negotiated::g711(addr("10.0.0.2:30000"), Law::Ulaw, None),
        Policy::default(),
        seeds(1),
    )
    .unwrap();
    assert_eq!(
        no_te.send_dtmf('1', 100),
        Err(SessionError::NoTelephoneEvent)
    );
}

#[test]
fn dtmf_received_between_audio_packets_is_reported_once() {
    let t0 = test_instant();
    let mut s = session(t0, "10.0.0.2:30000", 10, Policy::default());
    let mut d = Drained::default();
    let from = addr("10.0.0.2:30000");
    let mut seq = 100u16;
    let mut send = |s: &mut MediaSession, pt: u8, ts: u32, marker: bool, payload: &[u8]| {
        s.handle_rtp(t0, from, &rtp_packet(pt, seq, ts, 77, marker, payload));
        seq += 1;
    };
    send(&mut s, 8, 0, true, &[0xD5; 160]);
    for (i, end) in [(1u16, false), (2, false), (3, true), (3, true), (3, true)] {
        let ev = EventPayload {
            event: 11,
            end,
            volume: 10,
            duration: i * 160,
        };
        send(&mut s, 101, 160, i == 1 && !end, &dtmf::write_event(&ev));
        send(&mut s, 8, 160 * u32::from(i), false, &[0xD5; 160]);
    }
    drain(&mut s, t0, &mut d);
    let dtmf: Vec<&MediaEvent> = d
        .events
        .iter()
        .filter(|e| matches!(e, MediaEvent::Dtmf(_)))
        .collect();
    assert_eq!(
        dtmf,
        [
            &MediaEvent::Dtmf(DtmfNotice::Begin { digit: '#' }),
            &MediaEvent::Dtmf(DtmfNotice::End {
                digit: '#',
                duration_ms: 60,
                end_lost: false
            })
        ]
    );
    assert_eq!(s.stats().dtmf_received, 1);
    assert_eq!(s.stats().packets_lost, 0);
}

#[test]
fn source_change_timeout_and_bye_are_events() {
    let t0 = test_instant();
    let policy = Policy {
        rtp_timeout: Some(Duration::from_secs(2)),
        ..Policy::default()
    };
    let mut s = session(t0, "10.0.0.2:30000", 11, policy);
    let mut d = Drained::default();
    let from = addr("10.0.0.2:30000");
    s.handle_rtp(t0, from, &rtp_packet(8, 1, 0, 1, false, &[0xD5; 160]));
    s.handle_rtp(t0, from, &rtp_packet(8, 9000, 0, 2, false, &[0xD5; 160]));
    drain(&mut s, t0, &mut d);
    assert!(d.events.contains(&MediaEvent::SourceChanged { ssrc: 2 }));
    let mut now = t0;
    while now < t0 + Duration::from_secs(3) {
        now = s.poll_timeout().unwrap();
        s.handle_timeout(now);
        drain(&mut s, now, &mut d);
    }
    assert!(d.events.contains(&MediaEvent::RtpTimeout {
        silent_for: Duration::from_secs(2)
    }));
    s.handle_rtp(now, from, &rtp_packet(8, 9001, 160, 2, false, &[0xD5; 160]));
    let mut bye = Vec::new();
    rtp::write_report(&mut bye, 2, None, &[], "peer");
    rtp::append_bye(&mut bye, 2);
    s.handle_rtcp(now, addr("10.0.0.2:30001"), &bye);
    drain(&mut s, now, &mut d);
    assert!(d.events.contains(&MediaEvent::RtpResumed));
    assert!(d.events.contains(&MediaEvent::RemoteBye));
    s.close(now);
    drain(&mut s, now, &mut d);
    let last = &d.sent.last().unwrap().1;
    assert_eq!(last.channel, Channel::Rtcp);
    assert!(matches!(
        rtp::parse_rtcp(&last.payload).unwrap()[2],
        RtcpPacket::Bye { .. }
    ));
    assert_eq!(s.poll_timeout(), None);
    assert!(s.is_closed());
}

#[test]
fn bad_negotiations_are_refused() {
    let t0 = test_instant();
    let mut neg = Negotiated::g711(addr("10.0.0.2:30000"), Law::Alaw, Some(8));
    assert_eq!(
        MediaSession::new(t0, 0, neg.clone(), Policy::default(), seeds(1)).err(),
        Some(SessionError::PayloadType(8))
    );
    neg.telephone_event_pt = Some(101);
    neg.ptime_ms = 25;
    assert_eq!(
        MediaSession::new(t0, 0, neg, Policy::default(), seeds(1)).err(),
        Some(SessionError::Ptime(25))
    );
}

#[test]
fn ptime_30_paces_and_stamps_by_the_frame() {
    let t0 = test_instant();
    let mut neg = Negotiated::g711(addr("10.0.0.2:30000"), Law::Ulaw, Some(101));
    neg.ptime_ms = 30;
    let mut s = MediaSession::new(t0, 0, neg, Policy::default(), seeds(12)).unwrap();
    assert_eq!(s.frame_due(3) - t0, Duration::from_millis(90));
    assert_eq!(s.frame_timestamp(3), seeds(12).initial_ts.wrapping_add(720));
    let mut d = Drained::default();
    s.handle_timeout(t0);
    drain(&mut s, t0, &mut d);
    assert_eq!(d.sent[0].1.payload.len(), 12 + 240);
}

proptest! {
    /// Arbitrary datagrams on both sockets never panic the session and never stop its pacing.
    #[test]
    fn garbage_input_never_panics(dgrams in proptest::collection::vec(
        (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..60)) {
        let t0 = test_instant();
        let mut s = session(t0, "10.0.0.2:30000", 13, Policy::default());
        let mut d = Drained::default();
        let from = addr("10.0.0.2:30000");
        for (i, (rtcp, mut data)) in dgrams.into_iter().enumerate() {
            let now = t0 + Duration::from_millis(i as u64 * 5);
            if !rtcp && data.len() >= 12 && i % 2 == 0 {
                data[0] = 0x80; // make half of them plausible RTP
                data[1] = if i % 4 == 0 { 8 } else { 101 };
            }
            if rtcp { s.handle_rtcp(now, from, &data) } else { s.handle_rtp(now, from, &data) }
            s.handle_timeout(now);
            drain(&mut s, now, &mut d);
        }
        prop_assert!(s.poll_timeout().is_some());
    }
}

#[test]
fn the_default_config_gives_the_default_policy() {
    let c = crate::config::MediaConfig::default();
    assert_eq!(Policy::from_config(&c), Policy::default());
    let off = crate::config::MediaConfig {
        rtp_timeout_secs: 0,
        ..c
    };
    assert_eq!(Policy::from_config(&off).rtp_timeout, None);
}
