//! The per-call media session: one RTP stream out, one in, RTCP, DTMF and taps.
//!
//! Sans-IO, following the core contract of the crate docs: the shell calls
//! [`MediaSession::handle_rtp`], [`MediaSession::handle_rtcp`], [`MediaSession::handle_timeout`]
//! or a command, then drains [`MediaSession::poll_output`] to `None`, then sleeps until
//! [`MediaSession::poll_timeout`].
//!
//! **Pacing.** Frame `k` is due at `start + k × ptime` and carries RTP timestamp
//! `ts0 + k × samples_per_frame`: both are computed from the start instant and the index, never
//! by adding intervals to the previous send time, so a late wake-up delays one packet without
//! shifting any later one (zero drift by construction; the 30-minute test checks it). If the shell
//! wakes more than [`MAX_BURST`] frames late, the older frames are skipped (counted) instead of
//! being sent in a burst the far end would have to absorb; the timestamp stays tied to the index.
//!
//! **Continuity.** One SSRC for the whole call; the sequence number grows by one per packet;
//! the timestamp follows the frame index through prompts, silence and DTMF. Between prompts
//! the session keeps sending G.711 silence: carriers and NATs drop calls and pinholes that go
//! quiet, and `ptime` packets of silence cost nothing. The marker bit is set on the first
//! packet of the stream and on the first packet of each talkspurt (audio after silence or DTMF).
//!
//! **Symmetric RTP** (RFC 4961, "latching"): when enabled, the first valid RTP packet fixes the
//! remote RTP address to its source (a NAT in front of the peer rewrites what its SDP said);
//! from then on packets from any other source are dropped and counted. RTCP latches the same way
//! on its own socket. When disabled, packets go to the SDP address and are accepted from any
//! source.
//!
//! **Randomness** (SSRC, first sequence number, first timestamp, CNAME, RTCP interval
//! dithering) comes in through [`Seeds`]; **wall time** for the RTCP sender report comes in as
//! the NTP time of the start instant.

use core::net::SocketAddr;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::media::dtmf::{self, DtmfNotice, DtmfReceiver, DtmfSender};
use crate::media::g711::Law;
use crate::media::jitter::{FrameKind, JitterBuffer, JitterConfig, SeqTracker, SeqVerdict};
use crate::media::rtp::{self, ReportBlock, RtcpPacket, RtpHeader, SenderInfo};
use crate::media::tap::TapFrame;

/// Frames sent back to back at most when the shell wakes late; older ones are skipped.
pub const MAX_BURST: u64 = 3;
/// Largest audio payload accepted, in samples (240 ms); longer packets are dropped.
pub const MAX_PAYLOAD_SAMPLES: usize = 1920;
/// Accepted packetisation times in milliseconds.
pub const PTIMES_MS: [u32; 6] = [10, 20, 30, 40, 50, 60];

/// SDP media direction (RFC 3264 §5.1), from our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Send and receive.
    SendRecv,
    /// Send only (we put the peer on hold, or the peer said recvonly).
    SendOnly,
    /// Receive only (the peer put us on hold with sendonly).
    RecvOnly,
    /// Neither (hold with inactive).
    Inactive,
}

impl Direction {
    fn sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }
    fn receives(self) -> bool {
        matches!(self, Self::SendRecv | Self::RecvOnly)
    }
}

/// What SDP negotiation settled for this call (from the answer, RFC 3264).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's RTP address (`c=` and `m=` port).
    pub remote_rtp: SocketAddr,
    /// The peer's RTCP address (`a=rtcp`, RFC 3605); `None` means RTP port + 1.
    pub remote_rtcp: Option<SocketAddr>,
    /// The codec we send.
    pub send_law: Law,
    /// Payload type for the codec we send (0 for PCMU, 8 for PCMA, or a dynamic number).
    pub send_pt: u8,
    /// Payload types we accept, with their law (include the send codec; the peer may switch
    /// among the codecs of the answer at any packet).
    pub receive: Vec<(u8, Law)>,
    /// Payload type of telephone-event/8000 if negotiated (RFC 4733).
    pub telephone_event_pt: Option<u8>,
    /// Packetisation time in ms (`a=ptime`, default 20); one of [`PTIMES_MS`].
    pub ptime_ms: u32,
    /// Media direction from our side.
    pub direction: Direction,
}

impl Negotiated {
    /// The usual case: G.711 `law` with its static payload type, both laws accepted,
    /// telephone-event on `te_pt`, 20 ms, send and receive.
    pub fn g711(remote_rtp: SocketAddr, law: Law, te_pt: Option<u8>) -> Self {
        Self {
            remote_rtp,
            remote_rtcp: None,
            send_law: law,
            send_pt: law.static_payload_type(),
            receive: vec![(0, Law::Ulaw), (8, Law::Alaw)],
            telephone_event_pt: te_pt,
            ptime_ms: 20,
            direction: Direction::SendRecv,
        }
    }
}

/// Local policy, from the `[media]` config section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Latch the remote address to the source of the first packet.
    pub symmetric_rtp: bool,
    /// Smallest jitter buffer depth (ms).
    pub jitter_min_ms: u32,
    /// Jitter buffer cap (ms).
    pub jitter_max_ms: u32,
    /// Report [`MediaEvent::RtpTimeout`] after this long without RTP (`None`: never).
    pub rtp_timeout: Option<Duration>,
    /// Mean RTCP report interval (RFC 3550 §6.2; dithered ×0.5–1.5).
    pub rtcp_interval: Duration,
    /// Most robot audio that may wait to be sent, in seconds.
    pub playback_queue_secs: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            symmetric_rtp: true,
            jitter_min_ms: 40,
            jitter_max_ms: 200,
            rtp_timeout: Some(Duration::from_secs(30)),
            rtcp_interval: Duration::from_secs(5),
            playback_queue_secs: 300,
        }
    }
}

impl Policy {
    /// The policy the `[media]` config section describes.
    pub fn from_config(c: &crate::config::MediaConfig) -> Self {
        Self {
            symmetric_rtp: c.symmetric_rtp,
            jitter_min_ms: c.jitter_min_ms,
            jitter_max_ms: c.jitter_max_ms,
            rtp_timeout: (c.rtp_timeout_secs > 0).then(|| Duration::from_secs(c.rtp_timeout_secs)),
            rtcp_interval: Duration::from_secs(c.rtcp_interval_secs),
            playback_queue_secs: c.playback_queue_secs,
        }
    }
}

/// Random values the session needs; from a CSPRNG in production, fixed in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeds {
    /// Our SSRC.
    pub ssrc: u32,
    /// First sequence number (RFC 3550 §5.1: random).
    pub initial_seq: u16,
    /// First timestamp (RFC 3550 §5.1: random).
    pub initial_ts: u32,
    /// Source of the CNAME and the RTCP interval dithering.
    pub mix: u64,
}

/// Why a session could not be made or a command was refused (our misuse or an SDP we should
/// not have accepted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// ptime not in [`PTIMES_MS`].
    #[error("ptime {0} ms is not supported; allowed: 10, 20, 30, 40, 50, 60")]
    Ptime(u32),
    /// A payload type outside 0..=127, or telephone-event sharing a number with a codec.
    #[error("payload type {0} is invalid or used twice")]
    PayloadType(u8),
    /// The playback queue would exceed its cap.
    #[error("playback queue is full")]
    PlaybackFull,
    /// DTMF refused.
    #[error(transparent)]
    Dtmf(#[from] dtmf::DtmfError),
    /// DTMF requested but telephone-event was not negotiated.
    #[error("telephone-event was not negotiated")]
    NoTelephoneEvent,
    /// The session is closed.
    #[error("media session is closed")]
    Closed,
}

/// Which socket a datagram uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The RTP socket (even port).
    Rtp,
    /// The RTCP socket (RTP port + 1).
    Rtcp,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Socket to send from.
    pub channel: Channel,
    /// Destination.
    pub to: SocketAddr,
    /// The datagram.
    pub payload: Vec<u8>,
    /// Frame index this RTP packet belongs to (`None` for RTCP); the shell measures pacing
    /// against it.
    pub frame: Option<u64>,
}

/// Something the call layer should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// DTMF from the peer.
    Dtmf(DtmfNotice),
    /// A queued prompt finished (`completed`) or was cut off by [`MediaSession::stop_playback`].
    PlaybackFinished {
        /// The id given to [`MediaSession::play`].
        id: u64,
        /// False when stopped early.
        completed: bool,
    },
    /// Symmetric RTP fixed the remote address to where the peer's packets come from.
    RemoteLatched {
        /// Which socket.
        channel: Channel,
        /// The address now used.
        addr: SocketAddr,
    },
    /// The peer's SSRC changed (e.g. from an announcement to the answered call).
    SourceChanged {
        /// The new SSRC.
        ssrc: u32,
    },
    /// No RTP for the configured time.
    RtpTimeout {
        /// Time since the last packet (or the start).
        silent_for: Duration,
    },
    /// RTP came back after a timeout.
    RtpResumed,
    /// The peer sent RTCP BYE.
    RemoteBye,
}

/// A session output; drain after every input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a datagram.
    Transmit(Transmit),
    /// One frame of both directions for the taps.
    Tap(TapFrame),
    /// Tell the call layer.
    Event(MediaEvent),
}

/// Per-call media statistics, stored with the call.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct MediaStats {
    /// RTP packets sent (audio and DTMF).
    pub packets_sent: u64,
    /// RTP payload octets sent.
    pub octets_sent: u64,
    /// Frame ticks skipped because the shell woke too late.
    pub frames_skipped: u64,
    /// Distinct RTP packets received from the current source.
    pub packets_received: u64,
    /// Packets expected from the current source's sequence numbers (RFC 3550 A.3).
    pub packets_expected: u64,
    /// Expected minus received.
    pub packets_lost: u64,
    /// Lost as a percentage of expected.
    pub loss_percent: f64,
    /// Interarrival jitter (RFC 3550 A.8) in ms.
    pub jitter_ms: f64,
    /// Packets that arrived after their playout time.
    pub late_packets: u64,
    /// Duplicated packets.
    pub duplicates: u64,
    /// Frames concealed.
    pub concealed_frames: u64,
    /// Times the jitter buffer ran dry.
    pub underruns: u64,
    /// Jitter buffer target depth in ms at the end.
    pub buffer_target_ms: f64,
    /// Datagrams on the RTP port that were not valid RTP.
    pub malformed: u64,
    /// Packets from a source other than the latched one.
    pub foreign_source: u64,
    /// Packets with a payload type that was not negotiated (comfort noise included).
    pub unknown_payload: u64,
    /// SSRC changes.
    pub source_changes: u64,
    /// Digits received.
    pub dtmf_received: u64,
    /// Digits sent.
    pub dtmf_sent: u64,
    /// RTCP reports received.
    pub rtcp_received: u64,
    /// Fraction lost the peer last reported about us (percent).
    pub remote_loss_percent: Option<f64>,
    /// Jitter the peer last reported about us (ms).
    pub remote_jitter_ms: Option<f64>,
    /// Round-trip time from the peer's last report (RFC 3550 §6.4.1).
    pub rtt_ms: Option<f64>,
}

/// Where the session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Sending and receiving.
    Active,
    /// Closed: BYE sent, nothing more happens.
    Closed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Closed => "closed",
        }
    }
}

#[derive(Debug)]
struct Prompt {
    id: u64,
    samples: Vec<i16>,
    pos: usize,
}

/// Remote source bookkeeping.
#[derive(Debug, Default)]
struct Remote {
    ssrc: Option<u32>,
    last_rtp: Option<Instant>,
    timed_out: bool,
    /// LSR and when it arrived, for DLSR in our reports.
    last_sr: Option<(u32, Instant)>,
    rtp_latched: bool,
    rtcp_latched: bool,
}

/// One call's media.
#[derive(Debug)]
pub struct MediaSession {
    state: State,
    neg: Negotiated,
    policy: Policy,
    seeds: Seeds,
    cname: String,
    start: Instant,
    ntp_start: u64,
    ptime: Duration,
    frame_samples: u32,
    next_frame: u64,
    next_rtcp: Instant,
    rng: u64,
    seq: u16,
    first_packet: bool,
    in_talkspurt: bool,
    rtp_dest: SocketAddr,
    rtcp_dest: SocketAddr,
    prompts: VecDeque<Prompt>,
    queued_samples: usize,
    queue_cap: usize,
    dtmf_tx: DtmfSender,
    dtmf_rx: DtmfReceiver,
    seq_rx: SeqTracker,
    jitter: JitterBuffer,
    remote: Remote,
    stats: MediaStats,
    outputs: VecDeque<Output>,
    scratch_enc: Vec<u8>,
    notices: Vec<DtmfNotice>,
}

fn rtcp_of(rtp: SocketAddr) -> SocketAddr {
    SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))
}

/// xorshift64*: dithering only, never security.
fn next_rand(state: &mut u64) -> u64 {
    let mut x = (*state).max(1);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn validate(neg: &Negotiated) -> Result<(), SessionError> {
    if !PTIMES_MS.contains(&neg.ptime_ms) {
        return Err(SessionError::Ptime(neg.ptime_ms));
    }
    let mut pts: Vec<u8> = neg.receive.iter().map(|(pt, _)| *pt).collect();
    pts.push(neg.send_pt);
    for pt in pts.iter().chain(neg.telephone_event_pt.iter()) {
        if *pt > 127 || (72..=76).contains(pt) {
            return Err(SessionError::PayloadType(*pt));
        }
    }
    if let Some(te) = neg.telephone_event_pt {
        if pts.contains(&te) {
            return Err(SessionError::PayloadType(te));
        }
    }
    Ok(())
}

impl MediaSession {
    /// A session starting at `start` (frame 0 is due then). `ntp_start` is the wall-clock time
    /// of `start` as a 64-bit NTP timestamp, for sender reports.
    pub fn new(
        start: Instant,
        ntp_start: u64,
        neg: Negotiated,
        policy: Policy,
        seeds: Seeds,
    ) -> Result<Self, SessionError> {
        validate(&neg)?;
        let frame_samples = neg.ptime_ms * 8;
        let jcfg = JitterConfig::from_ms(neg.ptime_ms, policy.jitter_min_ms, policy.jitter_max_ms);
        let mut rng = seeds.mix | 1;
        let cname = format!("vc-{:016x}", next_rand(&mut rng));
        let rtp_dest = neg.remote_rtp;
        let rtcp_dest = neg.remote_rtcp.unwrap_or_else(|| rtcp_of(rtp_dest));
        let mut s = Self {
            state: State::Active,
            policy,
            seeds,
            cname,
            start,
            ntp_start,
            ptime: Duration::from_millis(u64::from(neg.ptime_ms)),
            frame_samples,
            next_frame: 0,
            next_rtcp: start,
            rng,
            seq: seeds.initial_seq,
            first_packet: true,
            in_talkspurt: false,
            rtp_dest,
            rtcp_dest,
            prompts: VecDeque::new(),
            queued_samples: 0,
            queue_cap: policy.playback_queue_secs as usize * 8000,
            dtmf_tx: DtmfSender::new(),
            dtmf_rx: DtmfReceiver::new(),
            seq_rx: SeqTracker::new(),
            jitter: JitterBuffer::new(jcfg),
            remote: Remote::default(),
            stats: MediaStats::default(),
            outputs: VecDeque::new(),
            scratch_enc: Vec::with_capacity(frame_samples as usize),
            notices: Vec::new(),
            neg,
        };
        s.next_rtcp = start + s.rtcp_delay();
        log::debug!(ssrc = s.seeds.ssrc, ptime_ms = s.neg.ptime_ms; "media session created");
        Ok(s)
    }

    fn transition(&mut self, to: State) {
        log::debug!(from = self.state.name(), to = to.name(), ssrc = self.seeds.ssrc; "media session transition");
        self.state = to;
    }

    fn rtcp_delay(&mut self) -> Duration {
        // RFC 3550 §6.3.1: randomise over [0.5, 1.5] × the interval.
        let r = next_rand(&mut self.rng) % 1000;
        self.policy.rtcp_interval.mul_f64(0.5 + r as f64 / 1000.0)
    }

    /// When frame `k` is due: from the start instant and the index only.
    pub fn frame_due(&self, k: u64) -> Instant {
        self.start + Duration::from_micros(self.ptime.as_micros() as u64 * k)
    }

    /// RTP timestamp of frame `k`.
    pub fn frame_timestamp(&self, k: u64) -> u32 {
        self.seeds
            .initial_ts
            .wrapping_add((k as u32).wrapping_mul(self.frame_samples))
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.seeds.ssrc
    }

    /// Samples per frame (ptime × 8).
    pub fn frame_samples(&self) -> u32 {
        self.frame_samples
    }

    /// The negotiated parameters in force.
    pub fn negotiated(&self) -> &Negotiated {
        &self.neg
    }

    /// Where RTP goes now (after latching, the peer's real address).
    pub fn rtp_destination(&self) -> SocketAddr {
        self.rtp_dest
    }

    /// Statistics so far.
    pub fn stats(&self) -> MediaStats {
        let mut s = self.stats;
        s.packets_received = self.seq_rx.received();
        s.packets_expected = self.seq_rx.expected();
        s.packets_lost = self.seq_rx.lost();
        s.loss_percent = if s.packets_expected == 0 {
            0.0
        } else {
            s.packets_lost as f64 * 100.0 / s.packets_expected as f64
        };
        s.jitter_ms = f64::from(self.jitter.jitter()) / 8.0;
        let b = self.jitter.stats();
        s.late_packets += b.late;
        s.duplicates += b.duplicates;
        s.concealed_frames = b.concealed_frames;
        s.underruns = b.underruns;
        s.buffer_target_ms = f64::from(self.jitter.target_depth()) / 8.0;
        s.dtmf_received = self.dtmf_rx.stats().digits;
        s
    }

    /// Samples of robot audio waiting to be sent.
    pub fn queued_samples(&self) -> usize {
        self.queued_samples
    }

    /// Whether the session is closed.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    // -- commands ---------------------------------------------------------------------------

    /// Queues 8 kHz robot audio under `id`; [`MediaEvent::PlaybackFinished`] follows when its last
    /// sample has been sent.
    pub fn play(&mut self, id: u64, samples: Vec<i16>) -> Result<(), SessionError> {
        if self.state == State::Closed {
            return Err(SessionError::Closed);
        }
        if self.queued_samples + samples.len() > self.queue_cap {
            return Err(SessionError::PlaybackFull);
        }
        self.queued_samples += samples.len();
        self.prompts.push_back(Prompt {
            id,
            samples,
            pos: 0,
        });
        Ok(())
    }

    /// Drops all queued robot audio (barge-in); each dropped prompt is reported unfinished.
    pub fn stop_playback(&mut self) {
        for p in self.prompts.drain(..) {
            self.outputs
                .push_back(Output::Event(MediaEvent::PlaybackFinished {
                    id: p.id,
                    completed: false,
                }));
        }
        self.queued_samples = 0;
    }

    /// Queues a DTMF digit to send as RFC 4733 events.
    pub fn send_dtmf(&mut self, digit: char, duration_ms: u32) -> Result<(), SessionError> {
        if self.state == State::Closed {
            return Err(SessionError::Closed);
        }
        if self.neg.telephone_event_pt.is_none() {
            return Err(SessionError::NoTelephoneEvent);
        }
        self.dtmf_tx.enqueue(digit, duration_ms)?;
        self.stats.dtmf_sent += 1;
        Ok(())
    }

    /// Applies a new negotiation (re-INVITE: hold, address or codec change). The ptime of the
    /// running stream is kept (RFC 3264 makes ptime a preference; changing it mid-stream would
    /// break the frame schedule). A new remote address ends latching until the next packet.
    pub fn renegotiate(&mut self, mut neg: Negotiated) -> Result<(), SessionError> {
        neg.ptime_ms = self.neg.ptime_ms;
        validate(&neg)?;
        if neg.remote_rtp != self.neg.remote_rtp || neg.remote_rtcp != self.neg.remote_rtcp {
            self.rtp_dest = neg.remote_rtp;
            self.rtcp_dest = neg.remote_rtcp.unwrap_or_else(|| rtcp_of(neg.remote_rtp));
            self.remote.rtp_latched = false;
            self.remote.rtcp_latched = false;
        }
        self.neg = neg;
        Ok(())
    }

    /// Ends the session: a last RTCP report with BYE, then nothing.
    pub fn close(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        self.send_report(now, true);
        self.transition(State::Closed);
    }

    // -- inputs -----------------------------------------------------------------------------

    /// A datagram arrived on the RTP socket.
    pub fn handle_rtp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        let pkt = match rtp::parse_rtp(data) {
            Ok(p) => p,
            Err(e) => {
                self.stats.malformed += 1;
                log::trace!(error:% = e; "RTP datagram dropped");
                return;
            }
        };
        if !self.neg.direction.receives() {
            return;
        }
        if self.policy.symmetric_rtp {
            if !self.remote.rtp_latched {
                self.remote.rtp_latched = true;
                if from != self.rtp_dest {
                    self.rtp_dest = from;
                    if !self.remote.rtcp_latched && self.neg.remote_rtcp.is_none() {
                        self.rtcp_dest = rtcp_of(from);
                    }
                    self.event(MediaEvent::RemoteLatched {
                        channel: Channel::Rtp,
                        addr: from,
                    });
                }
            } else if from != self.rtp_dest {
                self.stats.foreign_source += 1;
                return;
            }
        }
        let h = pkt.header;
        if self.remote.ssrc != Some(h.ssrc) {
            if self.remote.ssrc.is_some() {
                self.stats.source_changes += 1;
                self.seq_rx = SeqTracker::new();
                self.jitter.reset();
                self.dtmf_rx.reset();
                self.event(MediaEvent::SourceChanged { ssrc: h.ssrc });
            }
            self.remote.ssrc = Some(h.ssrc);
        }
        match self.seq_rx.update(h.sequence) {
            SeqVerdict::New(_) => {}
            SeqVerdict::Restart(_) => self.jitter.reset(),
            SeqVerdict::Duplicate => {
                self.stats.duplicates += 1;
                return;
            }
            SeqVerdict::Suspect => return,
        }
        self.remote.last_rtp = Some(now);
        if self.remote.timed_out {
            self.remote.timed_out = false;
            self.event(MediaEvent::RtpResumed);
        }
        if Some(h.payload_type) == self.neg.telephone_event_pt {
            self.on_event_packet(now, &h, pkt.payload);
            return;
        }
        let Some(law) = self
            .neg
            .receive
            .iter()
            .find(|(pt, _)| *pt == h.payload_type)
            .map(|(_, l)| *l)
        else {
            self.stats.unknown_payload += 1;
            return;
        };
        if pkt.payload.len() > MAX_PAYLOAD_SAMPLES {
            self.stats.malformed += 1;
            return;
        }
        let mut pcm = Vec::with_capacity(pkt.payload.len());
        law.decode_into(pkt.payload, &mut pcm);
        self.jitter.insert(now, h.timestamp, h.marker, pcm);
    }

    fn on_event_packet(&mut self, now: Instant, h: &RtpHeader, payload: &[u8]) {
        match dtmf::parse_event(payload) {
            Ok(ev) => {
                let mut notices = std::mem::take(&mut self.notices);
                self.dtmf_rx.on_packet(now, h, &ev, &mut notices);
                for n in notices.drain(..) {
                    self.event(MediaEvent::Dtmf(n));
                }
                self.notices = notices;
            }
            Err(_) => self.stats.malformed += 1,
        }
    }

    /// A datagram arrived on the RTCP socket.
    pub fn handle_rtcp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        let Ok(packets) = rtp::parse_rtcp(data) else {
            self.stats.malformed += 1;
            return;
        };
        if self.policy.symmetric_rtp && !self.remote.rtcp_latched {
            self.remote.rtcp_latched = true;
            if from != self.rtcp_dest {
                self.rtcp_dest = from;
                self.event(MediaEvent::RemoteLatched {
                    channel: Channel::Rtcp,
                    addr: from,
                });
            }
        }
        self.stats.rtcp_received += 1;
        for p in packets {
            match p {
                RtcpPacket::SenderReport { info, reports, .. } => {
                    self.remote.last_sr = Some((rtp::ntp_middle(info.ntp), now));
                    self.on_report_blocks(now, &reports);
                }
                RtcpPacket::ReceiverReport { reports, .. } => self.on_report_blocks(now, &reports),
                RtcpPacket::Bye { ssrcs } => {
                    if self.remote.ssrc.is_some_and(|s| ssrcs.contains(&s)) {
                        self.event(MediaEvent::RemoteBye);
                    }
                }
                RtcpPacket::Other { .. } => {}
            }
        }
    }

    fn on_report_blocks(&mut self, now: Instant, reports: &[ReportBlock]) {
        let Some(b) = reports.iter().find(|b| b.ssrc == self.seeds.ssrc) else {
            return;
        };
        self.stats.remote_loss_percent = Some(f64::from(b.fraction_lost) * 100.0 / 256.0);
        self.stats.remote_jitter_ms = Some(f64::from(b.jitter) / 8.0);
        if b.lsr != 0 {
            // RTT = A − LSR − DLSR in 1/65536 s (RFC 3550 §6.4.1).
            let a = rtp::ntp_middle(self.ntp_at(now));
            let rtt = a.wrapping_sub(b.lsr).wrapping_sub(b.dlsr);
            if rtt < 65536 * 10 {
                self.stats.rtt_ms = Some(f64::from(rtt) * 1000.0 / 65536.0);
            }
        }
    }

    fn ntp_at(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.start);
        let frac = ((u128::from(d.subsec_nanos()) << 32) / 1_000_000_000) as u64;
        self.ntp_start
            .wrapping_add(d.as_secs() << 32)
            .wrapping_add(frac)
    }

    /// Time passed: send due frames, reports, timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if now >= self.frame_due(self.next_frame) {
            let elapsed = now.saturating_duration_since(self.start);
            let latest = (elapsed.as_micros() / self.ptime.as_micros()) as u64;
            if latest + 1 - self.next_frame > MAX_BURST {
                let first = latest + 1 - MAX_BURST;
                self.stats.frames_skipped += first - self.next_frame;
                self.next_frame = first;
            }
            while self.next_frame <= latest {
                let k = self.next_frame;
                self.tick(k);
                self.next_frame += 1;
            }
        }
        if now >= self.next_rtcp {
            self.send_report(now, false);
            self.next_rtcp = now + self.rtcp_delay();
        }
        if let Some(timeout) = self.policy.rtp_timeout {
            let since = self.remote.last_rtp.unwrap_or(self.start);
            if self.neg.direction.receives() && !self.remote.timed_out && now >= since + timeout {
                self.remote.timed_out = true;
                self.event(MediaEvent::RtpTimeout {
                    silent_for: now.saturating_duration_since(since),
                });
            }
        }
        if self.dtmf_rx.poll_timeout().is_some_and(|t| now >= t) {
            let mut notices = std::mem::take(&mut self.notices);
            self.dtmf_rx.on_timeout(now, &mut notices);
            for n in notices.drain(..) {
                self.event(MediaEvent::Dtmf(n));
            }
            self.notices = notices;
        }
    }

    fn tick(&mut self, k: u64) {
        let ts = self.frame_timestamp(k);
        let n = self.frame_samples as usize;
        let mut robot = vec![0i16; n];
        if self.neg.direction.sends() {
            let te = self.neg.telephone_event_pt;
            match (te, self.dtmf_tx.on_frame(ts, self.frame_samples)) {
                (Some(pt), Some(ev)) => {
                    self.in_talkspurt = false;
                    let payload = dtmf::write_event(&ev.payload);
                    self.send_rtp(k, pt, ev.marker, ev.timestamp, &payload);
                }
                _ => {
                    let audio = self.take_audio(&mut robot);
                    // First packet of the stream, or first audio after silence or DTMF.
                    let marker = self.first_packet || (audio && !self.in_talkspurt);
                    self.in_talkspurt = audio;
                    let mut enc = std::mem::take(&mut self.scratch_enc);
                    self.neg.send_law.encode(&robot, &mut enc);
                    self.send_rtp(k, self.neg.send_pt, marker, ts, &enc);
                    self.scratch_enc = enc;
                }
            }
        }
        let mut customer = Vec::with_capacity(n);
        let played = self.jitter.pop(&mut customer);
        self.outputs.push_back(Output::Tap(TapFrame {
            index: k,
            customer,
            robot,
            customer_audio: played.kind == FrameKind::Audio,
        }));
    }

    /// Fills `out` from the playback queue; true if any robot audio was taken.
    fn take_audio(&mut self, out: &mut [i16]) -> bool {
        let mut filled = 0;
        while filled < out.len() {
            let Some(p) = self.prompts.front_mut() else {
                break;
            };
            let take = (p.samples.len() - p.pos).min(out.len() - filled);
            out[filled..filled + take].copy_from_slice(&p.samples[p.pos..p.pos + take]);
            p.pos += take;
            filled += take;
            self.queued_samples -= take;
            if p.pos == p.samples.len() {
                let id = p.id;
                self.prompts.pop_front();
                self.event(MediaEvent::PlaybackFinished {
                    id,
                    completed: true,
                });
            }
        }
        filled > 0
    }

    fn send_rtp(&mut self, k: u64, pt: u8, marker: bool, ts: u32, payload: &[u8]) {
        let h = RtpHeader {
            payload_type: pt,
            marker,
            sequence: self.seq,
            timestamp: ts,
            ssrc: self.seeds.ssrc,
        };
        let mut out = Vec::with_capacity(12 + payload.len());
        if rtp::write_rtp(&h, payload, &mut out).is_err() {
            // Payload types were validated at creation; nothing else can fail.
            return;
        }
        self.seq = self.seq.wrapping_add(1);
        self.first_packet = false;
        self.stats.packets_sent += 1;
        self.stats.octets_sent += payload.len() as u64;
        self.outputs.push_back(Output::Transmit(Transmit {
            channel: Channel::Rtp,
            to: self.rtp_dest,
            payload: out,
            frame: Some(k),
        }));
    }

    fn send_report(&mut self, now: Instant, bye: bool) {
        let mut blocks = Vec::new();
        if let Some(ssrc) = self.remote.ssrc {
            let (lsr, dlsr) = match self.remote.last_sr {
                Some((lsr, at)) => {
                    let d = now.saturating_duration_since(at);
                    (lsr, (d.as_micros() * 65536 / 1_000_000) as u32)
                }
                None => (0, 0),
            };
            blocks.push(ReportBlock {
                ssrc,
                fraction_lost: self.seq_rx.take_fraction_lost(),
                cumulative_lost: i32::try_from(self.seq_rx.lost()).unwrap_or(0x7F_FFFF),
                highest_seq: self.seq_rx.extended_highest(),
                jitter: self.jitter.jitter(),
                lsr,
                dlsr,
            });
        }
        let sender = (self.stats.packets_sent > 0).then(|| SenderInfo {
            ntp: self.ntp_at(now),
            rtp_timestamp: self.rtp_ts_at(now),
            packet_count: self.stats.packets_sent as u32,
            octet_count: self.stats.octets_sent as u32,
        });
        let mut out = Vec::with_capacity(128);
        rtp::write_report(
            &mut out,
            self.seeds.ssrc,
            sender.as_ref(),
            &blocks,
            &self.cname,
        );
        if bye {
            rtp::append_bye(&mut out, self.seeds.ssrc);
        }
        self.outputs.push_back(Output::Transmit(Transmit {
            channel: Channel::Rtcp,
            to: self.rtcp_dest,
            payload: out,
            frame: None,
        }));
    }

    /// RTP timestamp corresponding to `now` on our sending clock.
    fn rtp_ts_at(&self, now: Instant) -> u32 {
        let us = now.saturating_duration_since(self.start).as_micros() as u64;
        self.seeds.initial_ts.wrapping_add((us * 8 / 1000) as u32)
    }

    fn event(&mut self, e: MediaEvent) {
        self.outputs.push_back(Output::Event(e));
    }

    /// The next output; call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`MediaSession::handle_timeout`] is next due (`None` once closed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        let mut t = self.frame_due(self.next_frame).min(self.next_rtcp);
        if let Some(timeout) = self.policy.rtp_timeout {
            if self.neg.direction.receives() && !self.remote.timed_out {
                t = t.min(self.remote.last_rtp.unwrap_or(self.start) + timeout);
            }
        }
        if let Some(d) = self.dtmf_rx.poll_timeout() {
            t = t.min(d);
        }
        Some(t)
    }
}
