//! DTMF as RFC 4733 telephone events: parsing, a receiver that turns event packets into digits,
//! and a sender that turns digits into event packets.
//!
//! **Receiving** (RFC 4733 §2.5.2): all packets of one event share its start timestamp; the
//! duration grows in each update; the end packet (E bit) is sent three times. The receiver reports
//! a digit once when it starts ([`DtmfNotice::Begin`], for barge-in) and once when it ends
//! ([`DtmfNotice::End`], with the duration), however many end packets arrive. If every end
//! packet is lost, the digit ends when the next event starts or after [`END_TIMEOUT`] without
//! updates. Event packets are interleaved with audio packets of the same SSRC; the session
//! routes them here by payload type.
//!
//! **Sending** (RFC 4733 §2.5.1): one packet per frame tick while the key is "down", the first
//! with the marker bit, all with the timestamp of the frame where the event began and the
//! duration so far; the final packet has the E bit and is sent three times (§2.5.1.4), each with
//! a new sequence number. Audio is not sent during an event. Digits queue (bounded) with a pause
//! of [`INTER_DIGIT_GAP_MS`] between them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::media::rtp::RtpHeader;

/// An event without updates for this long is taken as ended (its end packets were lost).
pub const END_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between two sent digits (ITU-T Q.24 asks for at least 40 ms).
pub const INTER_DIGIT_GAP_MS: u32 = 60;
/// Digits that may wait to be sent.
pub const SEND_QUEUE_CAP: usize = 32;
/// Times the end packet is sent (RFC 4733 §2.5.1.4).
pub const END_PACKET_COPIES: u8 = 3;
/// Volume sent in event packets: −10 dBm0, a usual DTMF level.
const SEND_VOLUME: u8 = 10;

/// Why an event payload or a digit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// The payload is shorter than the 4-octet event block.
    #[error("telephone-event payload of {0} octets is shorter than 4")]
    TooShort(usize),
    /// A digit other than 0–9, *, #, A–D.
    #[error("{0:?} is not a DTMF digit (0-9, *, #, A-D)")]
    NotADigit(char),
    /// The send queue is full.
    #[error("DTMF send queue is full ({SEND_QUEUE_CAP} digits)")]
    QueueFull,
    /// Duration outside 40–5000 ms.
    #[error("DTMF duration {0} ms is outside 40 to 5000")]
    Duration(u32),
}

/// One RFC 4733 event block (§2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    /// Event code: 0–9 digits, 10 `*`, 11 `#`, 12–15 A–D, 16 flash (RFC 4733 §3.2).
    pub event: u8,
    /// E bit: this packet ends the event.
    pub end: bool,
    /// Power level, 0 to −63 dBm0 (6 bits).
    pub volume: u8,
    /// Duration so far in timestamp units.
    pub duration: u16,
}

/// Parses the first event block of a telephone-event payload (later blocks, which only RFC 2198
/// redundancy would put there, are ignored).
pub fn parse_event(payload: &[u8]) -> Result<EventPayload, DtmfError> {
    match payload {
        [event, flags, d0, d1, ..] => Ok(EventPayload {
            event: *event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([*d0, *d1]),
        }),
        _ => Err(DtmfError::TooShort(payload.len())),
    }
}

/// Writes an event block (R bit zero).
pub fn write_event(e: &EventPayload) -> [u8; 4] {
    let d = e.duration.to_be_bytes();
    [
        e.event,
        (u8::from(e.end) << 7) | (e.volume & 0x3F),
        d[0],
        d[1],
    ]
}

/// The character of a DTMF event code, if it is one.
pub fn event_digit(event: u8) -> Option<char> {
    Some(match event {
        0..=9 => char::from(b'0' + event),
        10 => '*',
        11 => '#',
        12..=15 => char::from(b'A' + event - 12),
        _ => return None,
    })
}

/// The event code of a DTMF character (lower-case a–d accepted).
pub fn digit_event(c: char) -> Option<u8> {
    Some(match c {
        '0'..='9' => c as u8 - b'0',
        '*' => 10,
        '#' => 11,
        'A'..='D' => c as u8 - b'A' + 12,
        'a'..='d' => c as u8 - b'a' + 12,
        _ => return None,
    })
}

/// What the receiver reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfNotice {
    /// A key went down.
    Begin {
        /// The digit.
        digit: char,
    },
    /// The key came up.
    End {
        /// The digit.
        digit: char,
        /// How long it was held, from the event's own duration field.
        duration_ms: u32,
        /// True when no end packet arrived (timeout or next event).
        end_lost: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Current {
    timestamp: u32,
    event: u8,
    duration: u16,
    last_seen: Instant,
}

/// Counters of the receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DtmfReceiveStats {
    /// Digits reported (End notices).
    pub digits: u64,
    /// Event packets that repeated an ended event (retransmitted end packets, late updates).
    pub repeats: u64,
    /// Event packets with an event code that is not a DTMF digit (flash, tones): ignored.
    pub non_digit: u64,
    /// Events ended without an end packet.
    pub end_lost: u64,
}

/// Turns received RFC 4733 packets into digits.
#[derive(Debug, Default)]
pub struct DtmfReceiver {
    current: Option<Current>,
    /// Timestamp of the last event that ended (to drop its repeated end packets).
    last_ended: Option<u32>,
    stats: DtmfReceiveStats,
}

impl DtmfReceiver {
    /// A receiver with no event in progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters so far.
    pub fn stats(&self) -> DtmfReceiveStats {
        self.stats
    }

    /// Handles one event packet; notices are appended to `out`.
    pub fn on_packet(
        &mut self,
        now: Instant,
        header: &RtpHeader,
        ev: &EventPayload,
        out: &mut Vec<DtmfNotice>,
    ) {
        let Some(digit) = event_digit(ev.event) else {
            self.stats.non_digit += 1;
            return;
        };
        let ts = header.timestamp;
        if let Some(ended) = self.last_ended {
            // Same event again, or an event older than the last ended one (reordered).
            if ts == ended || (ts.wrapping_sub(ended) as i32) < 0 {
                self.stats.repeats += 1;
                return;
            }
        }
        match self.current {
            Some(c) if c.timestamp == ts => {
                let cur = self.current.as_mut().expect("matched Some above");
                cur.duration = cur.duration.max(ev.duration);
                cur.last_seen = now;
            }
            Some(c) if (ts.wrapping_sub(c.timestamp) as i32) < 0 => {
                // A late packet of an event that started before the current one.
                self.stats.repeats += 1;
                return;
            }
            _ => {
                // A new event; the previous one lost all its end packets.
                self.finish(true, out);
                self.current = Some(Current {
                    timestamp: ts,
                    event: ev.event,
                    duration: ev.duration,
                    last_seen: now,
                });
                out.push(DtmfNotice::Begin { digit });
            }
        }
        if ev.end {
            self.finish(false, out);
        }
    }

    fn finish(&mut self, end_lost: bool, out: &mut Vec<DtmfNotice>) {
        if let Some(c) = self.current.take() {
            self.last_ended = Some(c.timestamp);
            self.stats.digits += 1;
            if end_lost {
                self.stats.end_lost += 1;
            }
            if let Some(digit) = event_digit(c.event) {
                out.push(DtmfNotice::End {
                    digit,
                    duration_ms: u32::from(c.duration) / 8,
                    end_lost,
                });
            }
        }
    }

    /// Ends an event whose updates stopped; call at [`DtmfReceiver::poll_timeout`].
    pub fn on_timeout(&mut self, now: Instant, out: &mut Vec<DtmfNotice>) {
        if self
            .current
            .is_some_and(|c| now >= c.last_seen + END_TIMEOUT)
        {
            self.finish(true, out);
        }
    }

    /// When an event in progress times out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.map(|c| c.last_seen + END_TIMEOUT)
    }

    /// Forgets the event state (the remote source changed).
    pub fn reset(&mut self) {
        self.current = None;
        self.last_ended = None;
    }
}

/// One event packet to send at this frame tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventToSend {
    /// Marker bit (first packet of the event).
    pub marker: bool,
    /// RTP timestamp: the event's start.
    pub timestamp: u32,
    /// The payload.
    pub payload: EventPayload,
}

#[derive(Debug, Clone, Copy)]
struct Sending {
    event: u8,
    start_ts: u32,
    elapsed: u32,
    total: u32,
    first: bool,
    ends_sent: u8,
}

/// Turns digits into RFC 4733 packets, one per frame tick.
#[derive(Debug, Default)]
pub struct DtmfSender {
    queue: VecDeque<(u8, u32)>,
    active: Option<Sending>,
    gap_left: u32,
}

impl DtmfSender {
    /// An idle sender.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `digit` to be held for `duration_ms` (40–5000).
    pub fn enqueue(&mut self, digit: char, duration_ms: u32) -> Result<(), DtmfError> {
        let event = digit_event(digit).ok_or(DtmfError::NotADigit(digit))?;
        if !(40..=5000).contains(&duration_ms) {
            return Err(DtmfError::Duration(duration_ms));
        }
        if self.queue.len() >= SEND_QUEUE_CAP {
            return Err(DtmfError::QueueFull);
        }
        self.queue.push_back((event, duration_ms * 8));
        Ok(())
    }

    /// Whether an event is being sent or waiting.
    pub fn is_busy(&self) -> bool {
        self.active.is_some() || !self.queue.is_empty()
    }

    /// Drops queued digits (the event in progress still ends properly).
    pub fn clear_queue(&mut self) {
        self.queue.clear();
    }

    /// Called once per frame tick with the RTP timestamp of the frame and its length in
    /// samples; returns the event packet to send instead of audio, if any.
    pub fn on_frame(&mut self, frame_ts: u32, frame_samples: u32) -> Option<EventToSend> {
        if self.active.is_none() {
            if self.gap_left > 0 {
                self.gap_left = self.gap_left.saturating_sub(frame_samples);
                return None;
            }
            let (event, total) = self.queue.pop_front()?;
            self.active = Some(Sending {
                event,
                start_ts: frame_ts,
                elapsed: 0,
                total,
                first: true,
                ends_sent: 0,
            });
        }
        let a = self.active.as_mut().expect("set just above");
        if a.ends_sent == 0 {
            a.elapsed = (a.elapsed + frame_samples).min(a.total);
        }
        let end = a.elapsed >= a.total;
        let pkt = EventToSend {
            marker: a.first,
            timestamp: a.start_ts,
            payload: EventPayload {
                event: a.event,
                end,
                volume: SEND_VOLUME,
                duration: u16::try_from(a.elapsed).unwrap_or(u16::MAX),
            },
        };
        a.first = false;
        if end {
            a.ends_sent += 1;
            if a.ends_sent >= END_PACKET_COPIES {
                self.active = None;
                self.gap_left = INTER_DIGIT_GAP_MS * 8;
            }
        }
        Some(pkt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::test_instant as t0;
    use proptest::prelude::*;

    fn hdr(seq: u16, ts: u32, marker: bool) -> RtpHeader {
        RtpHeader {
            payload_type: 101,
            marker,
            sequence: seq,
            timestamp: ts,
            ssrc: 9,
        }
    }

    fn ev(event: u8, end: bool, duration: u16) -> EventPayload {
        EventPayload {
            event,
            end,
            volume: 10,
            duration,
        }
    }

    #[test]
    fn payload_round_trip_and_layout() {
        let e = ev(11, true, 800);
        let b = write_event(&e);
        assert_eq!(b, [11, 0x8A, 0x03, 0x20]);
        assert_eq!(parse_event(&b).unwrap(), e);
        assert_eq!(parse_event(&[1, 2, 3]), Err(DtmfError::TooShort(3)));
        // The R bit is ignored on receipt.
        assert_eq!(
            parse_event(&[5, 0x40, 0, 160]).unwrap(),
            ev(5, false, 160).with_volume(0)
        );
    }

    impl EventPayload {
        fn with_volume(mut self, v: u8) -> Self {
            self.volume = v;
            self
        }
    }

    #[test]
    fn digits_map_both_ways() {
        for (c, e) in [
            ('0', 0),
            ('9', 9),
            ('*', 10),
            ('#', 11),
            ('A', 12),
            ('D', 15),
        ] {
            assert_eq!(digit_event(c), Some(e));
            assert_eq!(event_digit(e), Some(c));
        }
        assert_eq!(digit_event('b'), Some(13));
        assert_eq!(digit_event('x'), None);
        assert_eq!(event_digit(16), None);
    }

    /// A typical sender: updates every 20 ms, then three end packets.
    fn packets_for(event: u8, ts: u32, seq0: u16, updates: u16) -> Vec<(RtpHeader, EventPayload)> {
        let mut v = Vec::new();
        for i in 1..=updates {
            v.push((hdr(seq0 + i - 1, ts, i == 1), ev(event, false, i * 160)));
        }
        for k in 0..3 {
            v.push((
                hdr(seq0 + updates + k, ts, false),
                ev(event, true, (updates + 1) * 160),
            ));
        }
        v
    }

    #[test]
    fn three_end_packets_give_one_digit_with_its_duration() {
        let t0 = t0();
        let mut r = DtmfReceiver::new();
        let mut out = Vec::new();
        for (h, e) in packets_for(5, 1000, 1, 4) {
            r.on_packet(t0, &h, &e, &mut out);
        }
        assert_eq!(
            out,
            vec![
                DtmfNotice::Begin { digit: '5' },
                DtmfNotice::End {
                    digit: '5',
                    duration_ms: 100,
                    end_lost: false
                }
            ]
        );
        assert_eq!(r.stats().repeats, 2);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn same_digit_twice_is_two_digits() {
        let t0 = t0();
        let mut r = DtmfReceiver::new();
        let mut out = Vec::new();
        for (h, e) in packets_for(1, 1000, 1, 3)
            .into_iter()
            .chain(packets_for(1, 2000, 10, 3))
        {
            r.on_packet(t0, &h, &e, &mut out);
        }
        let ends = out
            .iter()
            .filter(|n| matches!(n, DtmfNotice::End { .. }))
            .count();
        assert_eq!(ends, 2);
    }

    #[test]
    fn lost_end_packets_end_the_digit_at_the_next_event_or_timeout() {
        let t0 = t0();
        let mut r = DtmfReceiver::new();
        let mut out = Vec::new();
        r.on_packet(t0, &hdr(1, 100, true), &ev(3, false, 160), &mut out);
        r.on_packet(t0, &hdr(2, 100, false), &ev(3, false, 320), &mut out);
        r.on_packet(t0, &hdr(3, 900, true), &ev(4, false, 160), &mut out);
        assert_eq!(
            out[1],
            DtmfNotice::End {
                digit: '3',
                duration_ms: 40,
                end_lost: true
            }
        );
        assert_eq!(out[2], DtmfNotice::Begin { digit: '4' });
        out.clear();
        let due = r.poll_timeout().unwrap();
        r.on_timeout(due - Duration::from_millis(1), &mut out);
        assert!(out.is_empty());
        r.on_timeout(due, &mut out);
        assert!(matches!(
            out[0],
            DtmfNotice::End {
                digit: '4',
                end_lost: true,
                ..
            }
        ));
        assert_eq!(r.stats().end_lost, 2);
    }

    #[test]
    fn reordered_and_stale_packets_do_not_resurrect_a_digit() {
        let t0 = t0();
        let mut r = DtmfReceiver::new();
        let mut out = Vec::new();
        r.on_packet(t0, &hdr(1, 500, true), &ev(7, true, 800), &mut out);
        // An update of that event arriving after its end, then an older event.
        r.on_packet(t0, &hdr(0, 500, false), &ev(7, false, 640), &mut out);
        r.on_packet(t0, &hdr(0, 100, false), &ev(6, false, 640), &mut out);
        assert_eq!(out.len(), 2);
        r.on_packet(t0, &hdr(9, 600, true), &ev(16, false, 160), &mut out);
        assert_eq!(r.stats().non_digit, 1);
    }

    #[test]
    fn sender_makes_the_rfc_4733_packet_train() {
        let mut s = DtmfSender::new();
        s.enqueue('#', 100).unwrap();
        s.enqueue('1', 40).unwrap();
        let mut pkts = Vec::new();
        let mut ts = 8000u32;
        for _ in 0..20 {
            pkts.push((ts, s.on_frame(ts, 160)));
            ts += 160;
        }
        let first: Vec<_> = pkts.iter().take(7).map(|p| p.1.unwrap()).collect();
        assert!(first[0].marker && first[1..].iter().all(|p| !p.marker));
        assert!(
            first
                .iter()
                .all(|p| p.timestamp == 8000 && p.payload.event == 11)
        );
        let durs: Vec<u16> = first.iter().map(|p| p.payload.duration).collect();
        assert_eq!(durs, [160, 320, 480, 640, 800, 800, 800]);
        let ends: Vec<bool> = first.iter().map(|p| p.payload.end).collect();
        assert_eq!(ends, [false, false, false, false, true, true, true]);
        // The 60 ms gap takes ticks 7, 8 and 9.
        assert!(pkts[7].1.is_none() && pkts[8].1.is_none() && pkts[9].1.is_none());
        let second = pkts[10].1.unwrap();
        assert!(second.marker);
        assert_eq!(second.timestamp, pkts[10].0);
        assert_eq!(second.payload.event, 1);
        assert!(pkts[11].1.is_some());
    }

    #[test]
    fn sender_refuses_bad_requests() {
        let mut s = DtmfSender::new();
        assert_eq!(s.enqueue('x', 100), Err(DtmfError::NotADigit('x')));
        assert_eq!(s.enqueue('1', 10), Err(DtmfError::Duration(10)));
        for _ in 0..SEND_QUEUE_CAP {
            s.enqueue('1', 100).unwrap();
        }
        assert_eq!(s.enqueue('1', 100), Err(DtmfError::QueueFull));
    }

    proptest! {
        #[test]
        fn event_round_trips(event: u8, end: bool, volume in 0u8..64, duration: u16) {
            let e = EventPayload { event, end, volume, duration };
            prop_assert_eq!(parse_event(&write_event(&e)).unwrap(), e);
        }

        #[test]
        fn event_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = parse_event(&data);
        }

        /// Whatever is sent, the receiver reports each digit exactly once, in order, even with
        /// every packet duplicated and the end packets reordered among themselves.
        #[test]
        fn sender_and_receiver_agree(digits in "[0-9*#A-D]{1,8}", dur in 40u32..400) {
            let mut s = DtmfSender::new();
            for c in digits.chars() { s.enqueue(c, dur).unwrap(); }
            let t0 = t0();
            let mut r = DtmfReceiver::new();
            let mut out = Vec::new();
            let mut ts = 0u32;
            let mut seq = 0u16;
            while s.is_busy() {
                if let Some(p) = s.on_frame(ts, 160) {
                    let h = hdr(seq, p.timestamp, p.marker);
                    r.on_packet(t0, &h, &p.payload, &mut out);
                    r.on_packet(t0, &h, &p.payload, &mut out);
                    seq = seq.wrapping_add(1);
                }
                ts = ts.wrapping_add(160);
            }
            let got: String = out.iter().filter_map(|n| match n {
                DtmfNotice::End { digit, duration_ms, end_lost } => {
                    assert!(!end_lost);
                    assert_eq!(*duration_ms, dur);
                    Some(*digit)
                }
                DtmfNotice::Begin { .. } => None,
            }).collect();
            prop_assert_eq!(got, digits);
        }
    }
}
