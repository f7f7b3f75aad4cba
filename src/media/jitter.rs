//! Inbound audio: RFC 3550 reception statistics and an adaptive playout (jitter) buffer.
//!
//! [`SeqTracker`] follows RFC 3550 Appendix A.1 (extended sequence numbers, wrap-around, large
//! jumps taken as a restart after two sequential packets) and adds a window over the last 128
//! sequence numbers to tell duplicates from reordered packets; it gives the loss counts of A.3 and the fraction lost of a report block.
//!
//! [`JitterBuffer`] holds decoded audio keyed by its (extended) RTP timestamp and plays it out
//! one frame per tick:
//! - packets are placed by timestamp, so reordering within the buffer depth costs nothing and a
//!   duplicate is recognised by its timestamp;
//! - a packet whose samples were all due before the playout point is *late* and dropped;
//! - a missing frame is concealed by repeating the last frame at falling level (¾, ½, ¼, then
//!   silence) — packet repetition as in G.711 Appendix I, without its pitch search;
//! - the target depth is `frame + 3 × jitter` (RFC 3550 A.8 estimate), clamped to
//!   `[min_depth, max_depth]`. The buffer *grows* by holding the playout point when it runs dry
//!   (the late packet then plays one frame later instead of being dropped), re-anchors to the
//!   target at the start of a talkspurt (marker bit, nothing pending) or when a packet lands
//!   beyond the cap, and *shrinks* by skipping a frame when it has held more than two frames
//!   above target for half a second;
//! - the number of packets held is capped; past the cap the oldest is dropped and counted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// RFC 3550 A.1: a jump of up to this many sequence numbers is a gap, not a restart.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: packets up to this far behind are reordered, not a restart.
const MAX_MISORDER: u16 = 100;
/// Pops with sustained excess depth before one frame is skipped (0.5 s at 20 ms).
const EXCESS_POPS: u32 = 25;
/// Concealment gains per consecutive missing frame, in 1/4.
const CONCEAL_GAIN_QUARTERS: [i32; 3] = [3, 2, 1];

/// What [`SeqTracker::update`] made of a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// A new packet, with its extended sequence number.
    New(u64),
    /// Seen before (within the last 128 packets).
    Duplicate,
    /// A large jump; the next packet decides whether the source restarted.
    Suspect,
    /// The source restarted its sequence (two sequential packets after a large jump): the
    /// statistics started over and this packet is the first of the new run.
    Restart(u64),
}

/// RFC 3550 A.1 sequence tracking for one source.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    started: bool,
    max_seq: u16,
    cycles: u64,
    base_seq: u64,
    bad_seq: Option<u16>,
    received: u64,
    /// Bit i set: extended sequence number `highest - i` was received.
    window: u128,
    expected_prior: u64,
    received_prior: u64,
}

impl SeqTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    fn init(&mut self, seq: u16) {
        self.started = true;
        self.max_seq = seq;
        self.cycles = 1 << 16; // keeps "older than the first packet" representable
        self.base_seq = self.cycles + u64::from(seq);
        self.bad_seq = None;
        self.received = 0;
        self.window = 0;
        self.expected_prior = 0;
        self.received_prior = 0;
    }

    fn highest(&self) -> u64 {
        self.cycles + u64::from(self.max_seq)
    }

    /// Classifies a sequence number and updates the counts.
    pub fn update(&mut self, seq: u16) -> SeqVerdict {
        if !self.started {
            self.init(seq);
            return self.accept_new(seq, SeqVerdict::New);
        }
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta == 0 {
            return SeqVerdict::Duplicate;
        }
        if udelta < MAX_DROPOUT {
            return self.accept_new(seq, SeqVerdict::New);
        }
        if udelta <= u16::MAX - MAX_MISORDER {
            // A large jump: a restart if the next packet follows it (A.1's bad_seq).
            if self.bad_seq == Some(seq) {
                self.init(seq);
                return self.accept_new(seq, SeqVerdict::Restart);
            }
            self.bad_seq = Some(seq.wrapping_add(1));
            return SeqVerdict::Suspect;
        }
        // Up to MAX_MISORDER behind the highest: reordered or duplicated; the window covers it.
        let behind = u64::from(self.max_seq.wrapping_sub(seq));
        let bit = 1u128 << behind;
        if self.window & bit != 0 {
            return SeqVerdict::Duplicate;
        }
        self.window |= bit;
        self.received += 1;
        SeqVerdict::New(self.highest() - behind)
    }

    fn accept_new(&mut self, seq: u16, verdict: fn(u64) -> SeqVerdict) -> SeqVerdict {
        let fresh = self.received == 0 && self.window == 0;
        if !fresh {
            let ahead = u64::from(seq.wrapping_sub(self.max_seq));
            if seq < self.max_seq {
                self.cycles += 1 << 16;
            }
            self.window = if ahead >= 128 {
                0
            } else {
                self.window << ahead
            };
        }
        self.max_seq = seq;
        self.window |= 1;
        self.bad_seq = None;
        self.received += 1;
        verdict(self.highest())
    }

    /// Extended highest sequence number received, as in a report block.
    pub fn extended_highest(&self) -> u32 {
        (self.highest() - (1 << 16)) as u32
    }

    /// Packets expected (A.3).
    pub fn expected(&self) -> u64 {
        if self.started {
            self.highest() + 1 - self.base_seq
        } else {
            0
        }
    }

    /// Distinct packets received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets lost: expected minus received, never negative here because duplicates are not
    /// counted as received.
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    /// Fraction lost since the previous call, in 1/256 (A.3), for a report block.
    pub fn take_fraction_lost(&mut self) -> u8 {
        let expected = self.expected();
        let interval_expected = expected - self.expected_prior.min(expected);
        let interval_received = self.received - self.received_prior.min(self.received);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost = interval_expected.saturating_sub(interval_received);
        if interval_expected == 0 || lost == 0 {
            0
        } else {
            ((lost << 8) / interval_expected).min(255) as u8
        }
    }
}

/// RFC 3550 A.8 interarrival jitter, in timestamp units (8 kHz).
#[derive(Debug, Clone, Default)]
pub struct JitterEstimator {
    epoch: Option<Instant>,
    last_transit: Option<i64>,
    /// Jitter × 16, as in A.8's integer form.
    jitter_q4: u64,
}

impl JitterEstimator {
    /// Updates with a packet that arrived at `now` carrying RTP timestamp `ts`.
    pub fn update(&mut self, now: Instant, ts: u32) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = (now.saturating_duration_since(epoch).as_micros() * 8 / 1000) as i64;
        // Both clocks taken modulo 2^32 so the difference survives timestamp wrap-around.
        let transit = i64::from((arrival as u32).wrapping_sub(ts) as i32);
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs();
            // J += (|D| - J) / 16, with J kept ×16.
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Current estimate in timestamp units.
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_q4 >> 4).unwrap_or(u32::MAX)
    }

    /// Starts over (new source).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Sizes of the jitter buffer, in samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Samples per output frame (ptime × 8).
    pub frame: u32,
    /// Smallest target depth.
    pub min_depth: u32,
    /// Largest target depth: the cap.
    pub max_depth: u32,
}

impl JitterConfig {
    /// From milliseconds at 8 kHz; depths are rounded up to whole frames and `max ≥ min ≥ frame`.
    pub fn from_ms(frame_ms: u32, min_ms: u32, max_ms: u32) -> Self {
        let frame = frame_ms.max(1) * 8;
        let round = |ms: u32| (ms * 8).div_ceil(frame).max(1) * frame;
        let min_depth = round(min_ms);
        Self {
            frame,
            min_depth,
            max_depth: round(max_ms).max(min_depth),
        }
    }

    /// Most packets held: enough for the cap in 10 ms packets, plus slack for reordering.
    pub fn packet_cap(&self) -> usize {
        (self.max_depth / 80) as usize + 16
    }
}

/// What happened to an inserted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored for playout.
    Stored,
    /// All its samples were due already.
    Late,
    /// A packet with the same timestamp is held.
    Duplicate,
    /// Empty payload.
    Empty,
}

/// What a played frame contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Received audio (possibly with a concealed part).
    Audio,
    /// Concealment: nothing was there, the previous frame was repeated more quietly.
    Concealed,
    /// Silence: no source yet, or concealment has faded out.
    Silence,
}

/// One played frame: where it was on the sender's timeline and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Played {
    /// Kind of content.
    pub kind: FrameKind,
    /// Extended RTP timestamp of its first sample, once playing.
    pub timestamp: Option<u64>,
}

/// Counters of the buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BufferStats {
    /// Packets dropped because their playout time had passed.
    pub late: u64,
    /// Packets with a timestamp already held.
    pub duplicates: u64,
    /// Frames concealed (a gap with later audio already there, or the buffer ran dry).
    pub concealed_frames: u64,
    /// Times the buffer ran dry and held the playout point (growing by one frame).
    pub underruns: u64,
    /// Frames skipped to shrink the buffer towards its target.
    pub skipped_frames: u64,
    /// Playout re-anchored (talkspurt start, a jump past the cap, a new source).
    pub resyncs: u64,
    /// Packets dropped because the buffer held its packet cap.
    pub overflow: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Playout {
    /// Nothing received yet (or the source changed).
    Idle,
    /// Playing; `cursor` is the extended timestamp of the next sample to play.
    Playing { cursor: u64 },
}

/// The adaptive playout buffer for one inbound audio source.
#[derive(Debug)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    playout: Playout,
    packets: BTreeMap<u64, Vec<i16>>,
    /// Extended timestamp one past the newest sample held or played.
    newest_end: u64,
    /// Last timestamp and its extension, for extending the next one.
    ts_ref: Option<(u32, u64)>,
    estimator: JitterEstimator,
    last_frame: Vec<i16>,
    missing: Vec<bool>,
    concealed_run: usize,
    excess_run: u32,
    stats: BufferStats,
}

impl JitterBuffer {
    /// An idle buffer.
    pub fn new(cfg: JitterConfig) -> Self {
        Self {
            cfg,
            playout: Playout::Idle,
            packets: BTreeMap::new(),
            newest_end: 0,
            ts_ref: None,
            estimator: JitterEstimator::default(),
            last_frame: vec![0; cfg.frame as usize],
            missing: vec![false; cfg.frame as usize],
            concealed_run: CONCEAL_GAIN_QUARTERS.len(),
            excess_run: 0,
            stats: BufferStats::default(),
        }
    }

    /// The sizes it was made with.
    pub fn config(&self) -> JitterConfig {
        self.cfg
    }

    /// Counters so far.
    pub fn stats(&self) -> BufferStats {
        self.stats
    }

    /// RFC 3550 interarrival jitter of the audio, in timestamp units.
    pub fn jitter(&self) -> u32 {
        self.estimator.jitter()
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether no packet is held.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// The depth the buffer aims at, in samples.
    pub fn target_depth(&self) -> u32 {
        let j = self.estimator.jitter().saturating_mul(3);
        let want = self.cfg.frame.saturating_add(j);
        let frames = want.div_ceil(self.cfg.frame);
        (frames.saturating_mul(self.cfg.frame)).clamp(self.cfg.min_depth, self.cfg.max_depth)
    }

    /// Audio held beyond the playout point, in samples.
    pub fn depth(&self) -> u32 {
        match self.playout {
            Playout::Idle => 0,
            Playout::Playing { cursor } => {
                u32::try_from(self.newest_end.saturating_sub(cursor)).unwrap_or(u32::MAX)
            }
        }
    }

    /// Forgets everything but the counters (the source changed).
    pub fn reset(&mut self) {
        if self.playout != Playout::Idle {
            self.stats.resyncs += 1;
        }
        self.playout = Playout::Idle;
        self.packets.clear();
        self.ts_ref = None;
        self.newest_end = 0;
        self.estimator.reset();
        self.excess_run = 0;
    }

    fn extend_ts(&mut self, ts: u32) -> u64 {
        let ext = match self.ts_ref {
            // Start high so that timestamps before the first one stay representable.
            None => (1u64 << 32) + u64::from(ts),
            Some((r32, rext)) => rext.saturating_add_signed(i64::from(ts.wrapping_sub(r32) as i32)),
        };
        if self.ts_ref.is_none_or(|(_, rext)| ext > rext) {
            self.ts_ref = Some((ts, ext));
        }
        ext
    }

    fn anchor(&mut self, ext: u64) {
        let mut cursor = ext.saturating_sub(u64::from(self.target_depth()));
        // Never move back in time: what was played stays played.
        if let Playout::Playing { cursor: old } = self.playout {
            cursor = cursor.max(old);
        }
        self.packets.retain(|k, v| *k + v.len() as u64 > cursor);
        self.playout = Playout::Playing { cursor };
        self.excess_run = 0;
    }

    /// Stores a decoded audio packet that arrived at `now`.
    pub fn insert(&mut self, now: Instant, ts: u32, marker: bool, samples: Vec<i16>) -> Inserted {
        if samples.is_empty() {
            return Inserted::Empty;
        }
        let ext = self.extend_ts(ts);
        let len = samples.len() as u64;
        match self.playout {
            Playout::Idle => self.anchor(ext),
            Playout::Playing { cursor } => {
                if ext + len <= cursor {
                    self.stats.late += 1;
                    return Inserted::Late;
                }
                let nothing_pending = self.newest_end <= cursor;
                let beyond_cap = ext > cursor + u64::from(self.cfg.max_depth + self.cfg.frame);
                if (marker && nothing_pending) || beyond_cap {
                    self.stats.resyncs += 1;
                    self.anchor(ext);
                }
            }
        }
        self.estimator.update(now, ts);
        if self.packets.contains_key(&ext) {
            self.stats.duplicates += 1;
            return Inserted::Duplicate;
        }
        if self.packets.len() >= self.cfg.packet_cap() {
            self.packets.pop_first();
            self.stats.overflow += 1;
        }
        self.newest_end = self.newest_end.max(ext + len);
        self.packets.insert(ext, samples);
        Inserted::Stored
    }

    /// Plays the next frame into `out` (resized to the frame length).
    pub fn pop(&mut self, out: &mut Vec<i16>) -> Played {
        let frame = self.cfg.frame as usize;
        out.clear();
        out.resize(frame, 0);
        let Playout::Playing { cursor } = self.playout else {
            return Played {
                kind: FrameKind::Silence,
                timestamp: None,
            };
        };
        let end = cursor + frame as u64;
        self.missing.clear();
        self.missing.resize(frame, true);
        let mut got = 0usize;
        for (&k, v) in self.packets.range(..end) {
            let start = k.max(cursor);
            let stop = (k + v.len() as u64).min(end);
            if start >= stop {
                continue;
            }
            let (o0, o1) = ((start - cursor) as usize, (stop - cursor) as usize);
            let (s0, s1) = ((start - k) as usize, (stop - k) as usize);
            out[o0..o1].copy_from_slice(&v[s0..s1]);
            self.missing[o0..o1].fill(false);
            got += o1 - o0;
        }
        self.packets.retain(|k, v| *k + v.len() as u64 > end);
        let pending = self.newest_end > end;
        let kind = if got == 0 && !pending {
            // Ran dry: conceal and hold the playout point, so the buffer grows by one frame
            // and the packet that is late plays instead of being dropped.
            if self.concealed_run == 0 {
                self.stats.underruns += 1;
            }
            let kind = self.conceal(out);
            self.last_frame.copy_from_slice(out);
            return Played {
                kind,
                timestamp: Some(cursor),
            };
        } else if got == 0 {
            self.conceal(out)
        } else {
            if got < frame {
                // Part of the frame missing: fill it from the previous frame, quieter.
                for (i, m) in self.missing.iter().enumerate() {
                    if *m {
                        out[i] = self.last_frame[i] / 2;
                    }
                }
            }
            self.concealed_run = 0;
            FrameKind::Audio
        };
        self.last_frame.copy_from_slice(out);
        let mut next = end;
        // Shrink: skip one frame after sustained excess, or at once past the cap.
        let depth = self.newest_end.saturating_sub(next);
        let target = u64::from(self.target_depth());
        if depth > u64::from(self.cfg.max_depth) + frame as u64 {
            self.stats.skipped_frames += (depth - target) / frame as u64;
            next = self.newest_end - target;
            self.excess_run = 0;
        } else if depth > target + 2 * frame as u64 {
            self.excess_run += 1;
            if self.excess_run >= EXCESS_POPS {
                next += frame as u64;
                self.stats.skipped_frames += 1;
                self.excess_run = 0;
            }
        } else {
            self.excess_run = 0;
        }
        if next > end {
            self.packets.retain(|k, v| *k + v.len() as u64 > next);
        }
        self.playout = Playout::Playing { cursor: next };
        Played {
            kind,
            timestamp: Some(cursor),
        }
    }

    fn conceal(&mut self, out: &mut [i16]) -> FrameKind {
        match CONCEAL_GAIN_QUARTERS.get(self.concealed_run) {
            Some(&q) => {
                for (o, l) in out.iter_mut().zip(&self.last_frame) {
                    *o = (i32::from(*l) * q / 4) as i16;
                }
                self.concealed_run += 1;
                self.stats.concealed_frames += 1;
                FrameKind::Concealed
            }
            None => FrameKind::Silence,
        }
    }
}

/// Milliseconds of `samples` at 8 kHz.
pub fn samples_to_ms(samples: u32) -> f64 {
    f64::from(samples) / 8.0
}

/// Duration of `samples` at 8 kHz.
pub fn samples_to_duration(samples: u32) -> Duration {
    Duration::from_micros(u64::from(samples) * 125)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::test_instant;
    use proptest::prelude::*;

    #[test]
    fn seq_tracker_counts_loss_wrap_duplicates_and_restart() {
        let mut t = SeqTracker::new();
        assert_eq!(t.update(65534), SeqVerdict::New(65536 + 65534));
        assert_eq!(t.update(65535), SeqVerdict::New(65536 + 65535));
        // 0 lost, 1 arrives (wrap), then 0 late.
        assert_eq!(t.update(1), SeqVerdict::New(2 * 65536 + 1));
        assert_eq!(t.update(0), SeqVerdict::New(2 * 65536));
        assert_eq!(t.update(0), SeqVerdict::Duplicate);
        assert_eq!(t.update(1), SeqVerdict::Duplicate);
        assert_eq!(t.expected(), 4);
        assert_eq!(t.received(), 4);
        assert_eq!(t.lost(), 0);
        assert_eq!(t.extended_highest(), 65536 + 1);
        // Two lost.
        t.update(4);
        assert_eq!(t.lost(), 2);
        assert_eq!(t.take_fraction_lost(), (2 * 256 / 7) as u8);
        assert_eq!(t.take_fraction_lost(), 0);
        // A jump of 20000: suspect, then confirmed by the next one: restart.
        assert_eq!(t.update(20004), SeqVerdict::Suspect);
        assert_eq!(t.update(20005), SeqVerdict::Restart(65536 + 20005));
        assert_eq!(t.expected(), 1);
        assert_eq!(t.lost(), 0);
        // A lone stray jump is not a restart.
        assert_eq!(t.update(50000), SeqVerdict::Suspect);
        assert!(matches!(t.update(20006), SeqVerdict::New(_)));
        // Reordered within MAX_MISORDER: new once, then a duplicate; further behind: a jump.
        for s in (20007..20200).filter(|s| *s != 20150) {
            t.update(s);
        }
        assert_eq!(t.update(20150), SeqVerdict::New(65536 + 20150));
        assert_eq!(t.update(20150), SeqVerdict::Duplicate);
        assert_eq!(t.update(20010), SeqVerdict::Suspect);
        assert_eq!(t.lost(), 0);
    }

    #[test]
    fn jitter_estimator_follows_rfc_3550_a8() {
        let t0 = test_instant();
        let mut j = JitterEstimator::default();
        // Perfectly regular: zero.
        for i in 0..50u32 {
            j.update(t0 + Duration::from_millis(u64::from(i) * 20), i * 160);
        }
        assert_eq!(j.jitter(), 0);
        // Alternate arrivals 10 ms early and late: |D| = 160 units each time; J → 160.
        let mut j = JitterEstimator::default();
        for i in 0..400u32 {
            let off = if i % 2 == 0 { 0 } else { 20 };
            j.update(t0 + Duration::from_millis(u64::from(i) * 20 + off), i * 160);
        }
        assert!((150..=160).contains(&j.jitter()), "{}", j.jitter());
    }

    fn cfg() -> JitterConfig {
        JitterConfig::from_ms(20, 60, 200)
    }

    fn packet(i: u32) -> Vec<i16> {
        (0..160).map(|k| (i * 160 + k) as i16).collect()
    }

    #[test]
    fn config_rounds_to_frames() {
        let c = JitterConfig::from_ms(20, 50, 30);
        assert_eq!((c.frame, c.min_depth, c.max_depth), (160, 480, 480));
    }

    #[test]
    fn in_order_stream_plays_back_exactly_after_the_target_delay() {
        let t0 = test_instant();
        let mut b = JitterBuffer::new(cfg());
        let mut out = Vec::new();
        let mut played = Vec::new();
        for i in 0..100u32 {
            let now = t0 + Duration::from_millis(u64::from(i) * 20);
            assert_eq!(
                b.insert(now, 1000 + i * 160, i == 0, packet(i)),
                Inserted::Stored
            );
            let p = b.pop(&mut out);
            if p.kind == FrameKind::Audio {
                played.extend_from_slice(&out);
            } else {
                assert!(i < 3, "only the first three pops wait for the target depth");
            }
        }
        assert_eq!(played.len(), 97 * 160);
        assert!(played.iter().enumerate().all(|(k, s)| *s == k as i16));
        assert_eq!(b.stats(), BufferStats::default());
    }

    #[test]
    fn a_lost_packet_is_concealed_and_a_late_one_dropped() {
        let t0 = test_instant();
        let mut b = JitterBuffer::new(cfg());
        let mut out = Vec::new();
        let mut kinds = Vec::new();
        for i in 0..20u32 {
            let now = t0 + Duration::from_millis(u64::from(i) * 20);
            if i != 5 {
                b.insert(now, i * 160, false, vec![1000; 160]);
            }
            kinds.push(b.pop(&mut out).kind);
            if kinds.len() == 9 {
                assert_eq!(out[0], 750, "first concealed frame at 3/4 level");
            }
        }
        assert_eq!(kinds[8], FrameKind::Concealed);
        assert_eq!(b.stats().concealed_frames, 1);
        assert_eq!(b.insert(t0, 5 * 160, false, vec![1; 160]), Inserted::Late);
        assert_eq!(
            b.insert(t0, 19 * 160, false, vec![1; 160]),
            Inserted::Duplicate
        );
        assert_eq!((b.stats().late, b.stats().duplicates), (1, 1));
    }

    #[test]
    fn running_dry_holds_the_playout_point_so_the_late_packet_still_plays() {
        let t0 = test_instant();
        let mut b = JitterBuffer::new(JitterConfig::from_ms(20, 20, 200));
        let mut out = Vec::new();
        b.insert(t0, 0, true, packet(0));
        assert_eq!(b.pop(&mut out).kind, FrameKind::Silence);
        assert_eq!(b.pop(&mut out).kind, FrameKind::Audio);
        // Packet 1 is 40 ms late: two pops find nothing and hold.
        assert_eq!(b.pop(&mut out).kind, FrameKind::Concealed);
        assert_eq!(b.pop(&mut out).kind, FrameKind::Concealed);
        assert_eq!(b.insert(t0, 160, false, packet(1)), Inserted::Stored);
        assert_eq!(b.pop(&mut out).kind, FrameKind::Audio);
        assert_eq!(out[0], 160);
        assert_eq!((b.stats().late, b.stats().underruns), (0, 1));
    }

    #[test]
    fn talkspurt_start_reanchors_and_a_jump_past_the_cap_resyncs() {
        let t0 = test_instant();
        let mut b = JitterBuffer::new(cfg());
        let mut out = Vec::new();
        for i in 0..10u32 {
            b.insert(t0, i * 160, i == 0, packet(i));
            b.pop(&mut out);
        }
        for _ in 0..10 {
            b.pop(&mut out); // the sender went quiet (DTX)
        }
        b.insert(t0, 40 * 160, true, packet(40));
        assert_eq!(b.stats().resyncs, 1);
        assert_eq!(b.depth(), 480 + 160);
        // No marker, but far beyond the cap.
        b.insert(t0, 4000 * 160, false, packet(4000));
        assert_eq!(b.stats().resyncs, 2);
    }

    #[test]
    fn sustained_excess_depth_is_shrunk_one_frame_at_a_time() {
        let t0 = test_instant();
        let mut b = JitterBuffer::new(cfg());
        let mut out = Vec::new();
        // A burst of 8 packets at once (a stalled network path), then one every 20 ms.
        for i in 0..8u32 {
            b.insert(t0, i * 160, i == 0, packet(i));
        }
        for i in 8..300u32 {
            let now = t0 + Duration::from_millis(u64::from(i - 7) * 20);
            b.insert(now, i * 160, false, packet(i));
            b.pop(&mut out);
        }
        assert!(b.stats().skipped_frames >= 1);
        assert!(
            b.depth() <= b.target_depth() + 2 * 160,
            "depth {}",
            b.depth()
        );
        assert_eq!(b.stats().late, 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert { ts: u32, marker: bool, len: usize },
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..40_000, any::<bool>(), 0usize..400).prop_map(|(ts, marker, len)| Op::Insert {
                ts,
                marker,
                len
            }),
            Just(Op::Pop),
        ]
    }

    proptest! {
        /// Any sequence of inserts and pops: no panic, frames of the right length, the packet cap
        /// holds, and the playout point only moves forward.
        #[test]
        fn buffer_never_panics_and_stays_bounded(ops in proptest::collection::vec(op(), 0..400)) {
            let t0 = test_instant();
            let c = JitterConfig::from_ms(20, 40, 120);
            let mut b = JitterBuffer::new(c);
            let mut out = Vec::new();
            let mut last_ts: Option<u64> = None;
            for (i, o) in ops.into_iter().enumerate() {
                let now = t0 + Duration::from_millis(i as u64 * 7);
                match o {
                    Op::Insert { ts, marker, len } => {
                        b.insert(now, ts.wrapping_mul(16), marker, vec![1; len]);
                    }
                    Op::Pop => {
                        let p = b.pop(&mut out);
                        prop_assert_eq!(out.len(), 160);
                        if let (Some(ts), FrameKind::Audio) = (p.timestamp, p.kind) {
                            if let Some(l) = last_ts { prop_assert!(ts > l, "{} after {}", ts, l); }
                            last_ts = Some(ts);
                        }
                    }
                }
                prop_assert!(b.len() <= c.packet_cap());
            }
        }

        /// Packets delayed by up to two frames, in any order, with a 60 ms minimum depth: nothing
        /// is late, nothing is concealed, every sample plays exactly once and in order.
        #[test]
        fn reordering_within_the_depth_is_lossless(delays in proptest::collection::vec(0u32..3, 1..120),
                                                   ts0: u32) {
            let t0 = test_instant();
            let n = delays.len() as u32;
            let mut b = JitterBuffer::new(cfg());
            let mut out = Vec::new();
            let mut played = Vec::new();
            let mut concealed_before_end = false;
            for tick in 0..n + 12 {
                let now = t0 + Duration::from_millis(u64::from(tick) * 20);
                for (i, d) in delays.iter().enumerate() {
                    let i = i as u32;
                    if i + d == tick {
                        b.insert(now, ts0.wrapping_add(i * 160), i == 0, packet(i));
                    }
                }
                match b.pop(&mut out).kind {
                    FrameKind::Audio => {
                        prop_assert!(!concealed_before_end, "concealment before the last packet");
                        played.extend_from_slice(&out);
                    }
                    FrameKind::Concealed => concealed_before_end = played.len() < n as usize * 160,
                    FrameKind::Silence => {}
                }
            }
            let s = b.stats();
            prop_assert_eq!((s.late, s.skipped_frames, s.overflow), (0, 0, 0));
            prop_assert_eq!(played.len(), n as usize * 160);
            prop_assert!(played.iter().enumerate().all(|(k, v)| *v == k as i16));
        }
    }
}
