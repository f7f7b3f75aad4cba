//! The RTP shell: per-call UDP socket pairs from the configured port range, and one tokio task
//! per call that drives a [`MediaSession`] with real sockets and timers.
//!
//! **Ports.** [`PortPool`] hands out RTP/RTCP socket pairs (even port, next odd port) from
//! `media.port_min..=media.port_max`, round-robin so that a port just released is not reused at
//! once (late packets of the previous call would land in the new one). A port some other process
//! holds is skipped. Every call has its own sockets, so many calls arriving from one remote
//! address and port (SIPp sends all its calls' RTP from one port) are told apart by the local
//! port they arrive on — the kernel demultiplexes them.
//!
//! **Driving.** [`MediaEndpoint::start`] spawns the task. It waits on the two sockets, the
//! command channel and the session's next deadline (biased towards the deadline, so a flood of
//! inbound packets cannot delay sending), feeds whichever fired into the session, then drains
//! the outputs: datagrams are sent with `try_send_to` (a full socket buffer drops and counts,
//! never blocks), tap frames go to a bounded broadcast queue, events to a bounded channel.
//!
//! **Taps.** [`TapReceiver`] wraps a `tokio::sync::broadcast` receiver: a consumer that lags
//! loses its oldest frames, which are counted in `vaultcall_media_tap_dropped_total`; the media
//! task never waits for a consumer. [`record`] runs a [`RecordingSink`] as a consumer, writing
//! in half-second batches on the blocking pool.
//!
//! **Metrics.** Everything is counted (see [`MediaMetrics`]); the send-interval and send-lateness
//! histograms measure pacing as it happens.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufWriter;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::MediaConfig;
use crate::media::session::{
    Channel, MediaEvent, MediaSession, MediaStats, Negotiated, Output, Policy, Seeds, SessionError,
};
use crate::media::tap::{RecordingSink, RecordingSummary, SinkError, TapFrame, WavSink};
use crate::telemetry::metrics::{self, Counter, Family, Gauge, Histogram};
use crate::time::{Clock, SystemClock};

/// Largest datagram read; G.711 packets are 172 octets at 20 ms.
const MAX_DATAGRAM: usize = 2048;
/// Commands waiting for one call's media task.
pub const COMMAND_QUEUE: usize = 64;
/// Events waiting for the call layer; more are dropped and counted.
pub const EVENT_QUEUE: usize = 256;
/// Frames a recording writes per blocking batch (0.5 s at 20 ms).
const RECORD_BATCH: usize = 25;
/// Seconds from 1900 (NTP era 0) to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Buckets for the send interval and lateness, in seconds: fine around 20 ms.
pub const PACING_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.010, 0.015, 0.018, 0.019, 0.0195, 0.020, 0.0205, 0.021, 0.022,
    0.025, 0.030, 0.040, 0.060, 0.100, 0.250,
];

/// Why the media shell could not do something.
#[derive(Debug, thiserror::Error)]
pub enum RtpIoError {
    /// Every port pair of the range is taken.
    #[error("no free RTP port pair in media.port_min..=media.port_max ({0} pairs, all in use)")]
    PortsExhausted(usize),
    /// A socket operation failed.
    #[error("RTP socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The session refused (bad negotiation, full queue, closed).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The media task has ended.
    #[error("media task has ended")]
    Ended,
}

/// The media shell's metrics, registered once per process.
pub struct MediaMetrics {
    /// RTP packets sent.
    pub rtp_sent: Arc<Counter>,
    /// RTP datagrams received (before any check).
    pub rtp_received: Arc<Counter>,
    /// RTCP packets sent.
    pub rtcp_sent: Arc<Counter>,
    /// RTCP datagrams received.
    pub rtcp_received: Arc<Counter>,
    /// Datagrams not sent (socket buffer full or an error).
    pub send_errors: Arc<Counter>,
    /// Socket receive errors.
    pub recv_errors: Arc<Counter>,
    /// Packets lost (from sequence numbers).
    pub lost: Arc<Counter>,
    /// Packets that arrived after their playout time.
    pub late: Arc<Counter>,
    /// Duplicated packets.
    pub duplicates: Arc<Counter>,
    /// Frames concealed.
    pub concealed: Arc<Counter>,
    /// Datagrams that were not valid RTP/RTCP or had absurd payloads.
    pub malformed: Arc<Counter>,
    /// Packets from a source other than the latched one.
    pub foreign: Arc<Counter>,
    /// Frames skipped because the task woke too late.
    pub frames_skipped: Arc<Counter>,
    /// Tap frames dropped for lagging consumers.
    pub tap_dropped: Arc<Counter>,
    /// Events dropped because the call layer did not read them.
    pub events_dropped: Arc<Counter>,
    /// Port allocations refused because the range was full.
    pub ports_exhausted: Arc<Counter>,
    /// Media sessions running.
    pub sessions: Arc<Gauge>,
    /// Port pairs in use.
    pub ports_in_use: Arc<Gauge>,
    /// Time between consecutive RTP packets of one call.
    pub send_interval: Arc<Histogram>,
    /// How long after its due time a frame went out.
    pub send_lateness: Arc<Histogram>,
}

fn counter(name: &'static str, help: &'static str) -> Arc<Counter> {
    let f: Arc<Family<Counter>> = metrics::global().counter(name, help, &[]);
    f.with(&[])
}

/// The process-wide media metrics.
pub fn media_metrics() -> &'static MediaMetrics {
    static M: OnceLock<MediaMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let r = metrics::global();
        MediaMetrics {
            rtp_sent: counter("vaultcall_rtp_packets_sent_total", "RTP packets sent."),
            rtp_received: counter(
                "vaultcall_rtp_packets_received_total",
                "RTP datagrams received.",
            ),
            rtcp_sent: counter(
                "vaultcall_rtcp_packets_sent_total",
                "RTCP compound packets sent.",
            ),
            rtcp_received: counter(
                "vaultcall_rtcp_packets_received_total",
                "RTCP datagrams received.",
            ),
            send_errors: counter(
                "vaultcall_rtp_send_errors_total",
                "RTP/RTCP datagrams not sent (socket buffer full or error).",
            ),
            recv_errors: counter(
                "vaultcall_rtp_receive_errors_total",
                "RTP/RTCP socket receive errors.",
            ),
            lost: counter(
                "vaultcall_rtp_packets_lost_total",
                "Inbound RTP packets lost (sequence gaps).",
            ),
            late: counter(
                "vaultcall_rtp_late_packets_total",
                "Inbound RTP packets that arrived after their playout time.",
            ),
            duplicates: counter(
                "vaultcall_rtp_duplicate_packets_total",
                "Inbound RTP packets duplicated.",
            ),
            concealed: counter(
                "vaultcall_rtp_concealed_frames_total",
                "Inbound frames concealed.",
            ),
            malformed: counter(
                "vaultcall_rtp_malformed_total",
                "Datagrams on media ports that were not valid RTP/RTCP.",
            ),
            foreign: counter(
                "vaultcall_rtp_foreign_source_total",
                "RTP packets from a source other than the latched one (dropped).",
            ),
            frames_skipped: counter(
                "vaultcall_rtp_frames_skipped_total",
                "Outbound frames skipped because the media task woke more than 3 frames late.",
            ),
            tap_dropped: counter(
                "vaultcall_media_tap_dropped_total",
                "Tap frames dropped because a consumer (speech, recording) fell behind.",
            ),
            events_dropped: counter(
                "vaultcall_media_events_dropped_total",
                "Media events dropped because the call layer did not read them.",
            ),
            ports_exhausted: counter(
                "vaultcall_media_ports_exhausted_total",
                "RTP port allocations refused because every pair was in use.",
            ),
            sessions: r
                .gauge("vaultcall_media_sessions", "Media sessions running.", &[])
                .with(&[]),
            ports_in_use: r
                .gauge(
                    "vaultcall_media_ports_in_use",
                    "RTP/RTCP port pairs in use.",
                    &[],
                )
                .with(&[]),
            send_interval: r
                .histogram(
                    "vaultcall_rtp_send_interval_seconds",
                    "Time between consecutive RTP packets of one call.",
                    &[],
                    PACING_BUCKETS,
                )
                .with(&[]),
            send_lateness: r
                .histogram(
                    "vaultcall_rtp_send_lateness_seconds",
                    "How long after its scheduled time an RTP packet was sent.",
                    &[],
                    PACING_BUCKETS,
                )
                .with(&[]),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Ports

#[derive(Debug)]
struct PoolState {
    next: u16,
    in_use: BTreeSet<u16>,
}

/// The RTP port range, shared by all calls.
#[derive(Debug)]
pub struct PortPool {
    ip: IpAddr,
    min: u16,
    pairs: usize,
    state: Mutex<PoolState>,
}

/// One call's RTP and RTCP sockets; the port pair returns to the pool when this (or the
/// endpoint made from it) is dropped.
#[derive(Debug)]
pub struct RtpSockets {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    lease: PortLease,
}

#[derive(Debug)]
struct PortLease {
    pool: Arc<PortPool>,
    port: u16,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut st = self.pool.state.lock().unwrap_or_else(|p| p.into_inner());
        st.in_use.remove(&self.port);
        media_metrics().ports_in_use.set(st.in_use.len() as i64);
    }
}

impl PortPool {
    /// A pool over the configured range (validated by the config: `port_min` even, below
    /// `port_max`).
    pub fn new(cfg: &MediaConfig) -> Arc<Self> {
        Arc::new(Self {
            ip: cfg.bind_ip,
            min: cfg.port_min,
            pairs: cfg.port_pairs(),
            state: Mutex::new(PoolState {
                next: 0,
                in_use: BTreeSet::new(),
            }),
        })
    }

    /// Port pairs in the range.
    pub fn capacity(&self) -> usize {
        self.pairs
    }

    /// Pairs in use.
    pub fn in_use(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .in_use
            .len()
    }

    /// Binds the next free pair. Must be called inside a tokio runtime.
    pub fn allocate(self: &Arc<Self>) -> Result<RtpSockets, RtpIoError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..self.pairs {
            let i = st.next;
            st.next = ((usize::from(i) + 1) % self.pairs.max(1)) as u16;
            let port = self.min + 2 * i;
            if st.in_use.contains(&port) {
                continue;
            }
            // Another process may hold either port: skip the pair and try the next.
            let Ok(rtp) = bind(SocketAddr::new(self.ip, port)) else {
                continue;
            };
            let Ok(rtcp) = bind(SocketAddr::new(self.ip, port + 1)) else {
                continue;
            };
            st.in_use.insert(port);
            media_metrics().ports_in_use.set(st.in_use.len() as i64);
            return Ok(RtpSockets {
                rtp,
                rtcp,
                lease: PortLease {
                    pool: self.clone(),
                    port,
                },
            });
        }
        media_metrics().ports_exhausted.inc();
        Err(RtpIoError::PortsExhausted(self.pairs))
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

impl RtpSockets {
    /// The local RTP address (put its port in the SDP `m=audio` line).
    pub fn local_rtp(&self) -> SocketAddr {
        SocketAddr::new(self.lease.pool.ip, self.lease.port)
    }

    /// The local RTCP address (RTP port + 1).
    pub fn local_rtcp(&self) -> SocketAddr {
        SocketAddr::new(self.lease.pool.ip, self.lease.port + 1)
    }
}

// ---------------------------------------------------------------------------------------------
// Randomness and wall time for the session

/// Random SSRC, first sequence number and timestamp from the system CSPRNG.
pub fn random_seeds() -> Seeds {
    let mut b = [0u8; 18];
    // If the system RNG fails the seeds are still unique enough per call for RTP; RTP
    // randomness is not a security property here (SRTP is not in use).
    let _ = aws_lc_rs::rand::fill(&mut b);
    Seeds {
        ssrc: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        initial_seq: u16::from_be_bytes([b[4], b[5]]),
        initial_ts: u32::from_be_bytes([b[6], b[7], b[8], b[9]]),
        mix: u64::from_be_bytes([b[10], b[11], b[12], b[13], b[14], b[15], b[16], b[17]]),
    }
}

/// A wall-clock time as a 64-bit NTP timestamp (RFC 5905 era 0).
pub fn ntp_timestamp(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

// ---------------------------------------------------------------------------------------------
// Taps

/// A consumer's view of one call's taps: frames in order; if the consumer lags by more than the
/// queue (`media.tap_queue_frames`), the oldest are dropped and counted.
pub struct TapReceiver {
    rx: broadcast::Receiver<Arc<TapFrame>>,
    dropped: u64,
}

impl TapReceiver {
    /// The next frame; `None` when the call's media has ended.
    pub async fn recv(&mut self) -> Option<Arc<TapFrame>> {
        loop {
            match self.rx.recv().await {
                Ok(f) => return Some(f),
                Err(broadcast::error::RecvError::Lagged(n)) => self.lagged(n),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The same for a consumer on its own thread (speech workers).
    pub fn blocking_recv(&mut self) -> Option<Arc<TapFrame>> {
        loop {
            match self.rx.blocking_recv() {
                Ok(f) => return Some(f),
                Err(broadcast::error::RecvError::Lagged(n)) => self.lagged(n),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    fn lagged(&mut self, n: u64) {
        self.dropped += n;
        media_metrics().tap_dropped.add(n);
        log::debug!(frames = n; "tap consumer lagged; oldest frames dropped");
    }

    /// Frames this consumer lost by lagging.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Runs `sink` as a tap consumer until the media ends, writing in half-second batches on the
/// blocking pool; returns what was recorded. Frames lost by lagging become silence in the sink
/// (it fills gaps by frame index), so the recording keeps real time.
#[allow(clippy::disallowed_methods)] // the shell spawns its tasks
pub fn record(
    mut taps: TapReceiver,
    sink: Box<dyn RecordingSink>,
) -> JoinHandle<Result<RecordingSummary, SinkError>> {
    tokio::spawn(async move {
        let mut sink = sink;
        let mut batch: Vec<Arc<TapFrame>> = Vec::with_capacity(RECORD_BATCH);
        loop {
            let frame = taps.recv().await;
            let done = frame.is_none();
            batch.extend(frame);
            if batch.len() >= RECORD_BATCH || (done && !batch.is_empty()) {
                let frames = std::mem::take(&mut batch);
                sink = write_batch(sink, frames).await?;
            }
            if done {
                break;
            }
        }
        tokio::task::spawn_blocking(move || sink.finish())
            .await
            .map_err(|e| SinkError::Io(std::io::Error::other(e)))?
    })
}

async fn write_batch(
    mut sink: Box<dyn RecordingSink>,
    frames: Vec<Arc<TapFrame>>,
) -> Result<Box<dyn RecordingSink>, SinkError> {
    tokio::task::spawn_blocking(move || {
        for f in &frames {
            sink.write_frame(f)?;
        }
        Ok(sink)
    })
    .await
    .map_err(|e| SinkError::Io(std::io::Error::other(e)))?
}

/// A stereo WAV sink on a new file of mode 0600 (recordings hold personal data). Until the vault
/// issue replaces it with an encrypted sink, this is how recordings reach disk.
pub fn wav_file_sink(path: &Path) -> std::io::Result<WavSink<BufWriter<File>>> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    WavSink::new(BufWriter::with_capacity(64 << 10, f)).map_err(|e| match e {
        SinkError::Io(e) => e,
        other => std::io::Error::other(other),
    })
}

// ---------------------------------------------------------------------------------------------
// The per-call media task

enum Command {
    Play {
        id: u64,
        samples: Vec<i16>,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    StopPlayback,
    SendDtmf {
        digit: char,
        duration_ms: u32,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    Renegotiate {
        neg: Negotiated,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    Stats {
        reply: oneshot::Sender<MediaStats>,
    },
    Close,
}

/// A call's media before it starts: subscribe the taps that must see every frame, then
/// [`MediaEndpoint::start`].
pub struct MediaEndpoint {
    sockets: RtpSockets,
    session: MediaSession,
    taps: broadcast::Sender<Arc<TapFrame>>,
}

impl MediaEndpoint {
    /// A session for the negotiated parameters on these sockets, starting at `start` (frame 0
    /// is due then). `seeds` from [`random_seeds`] in production.
    pub fn new(
        sockets: RtpSockets,
        neg: Negotiated,
        cfg: &MediaConfig,
        seeds: Seeds,
        start: Instant,
        wall: SystemTime,
    ) -> Result<Self, RtpIoError> {
        let session = MediaSession::new(
            start,
            ntp_timestamp(wall),
            neg,
            Policy::from_config(cfg),
            seeds,
        )?;
        let (taps, _) = broadcast::channel(cfg.tap_queue_frames.max(1));
        Ok(Self {
            sockets,
            session,
            taps,
        })
    }

    /// A tap consumer that will see every frame from the first.
    pub fn subscribe_taps(&self) -> TapReceiver {
        TapReceiver {
            rx: self.taps.subscribe(),
            dropped: 0,
        }
    }

    /// The local RTP address.
    pub fn local_rtp(&self) -> SocketAddr {
        self.sockets.local_rtp()
    }

    /// Spawns the media task.
    #[allow(clippy::disallowed_methods)] // the shell spawns its tasks
    pub fn start(self) -> MediaHandle {
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
        let local_rtp = self.sockets.local_rtp();
        let taps = self.taps.clone();
        let task = tokio::spawn(run(self, cmd_rx, ev_tx));
        MediaHandle {
            commands: cmd_tx,
            events: ev_rx,
            taps,
            local_rtp,
            task,
        }
    }
}

/// The call layer's handle on a running media task.
pub struct MediaHandle {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<MediaEvent>,
    taps: broadcast::Sender<Arc<TapFrame>>,
    local_rtp: SocketAddr,
    task: JoinHandle<MediaStats>,
}

impl MediaHandle {
    /// The local RTP address.
    pub fn local_rtp(&self) -> SocketAddr {
        self.local_rtp
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, RtpIoError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| RtpIoError::Ended)?;
        rx.await.map_err(|_| RtpIoError::Ended)
    }

    /// Queues 8 kHz robot audio; [`MediaEvent::PlaybackFinished`] with `id` follows.
    pub async fn play(&self, id: u64, samples: Vec<i16>) -> Result<(), RtpIoError> {
        Ok(self
            .ask(|reply| Command::Play { id, samples, reply })
            .await??)
    }

    /// Drops queued robot audio (barge-in).
    pub async fn stop_playback(&self) -> Result<(), RtpIoError> {
        self.commands
            .send(Command::StopPlayback)
            .await
            .map_err(|_| RtpIoError::Ended)
    }

    /// Sends a DTMF digit as RFC 4733 events.
    pub async fn send_dtmf(&self, digit: char, duration_ms: u32) -> Result<(), RtpIoError> {
        Ok(self
            .ask(|reply| Command::SendDtmf {
                digit,
                duration_ms,
                reply,
            })
            .await??)
    }

    /// Applies a re-negotiation (re-INVITE, or the 200 OK after early media).
    pub async fn renegotiate(&self, neg: Negotiated) -> Result<(), RtpIoError> {
        Ok(self
            .ask(|reply| Command::Renegotiate { neg, reply })
            .await??)
    }

    /// Statistics so far.
    pub async fn stats(&self) -> Result<MediaStats, RtpIoError> {
        self.ask(|reply| Command::Stats { reply }).await
    }

    /// The next media event; `None` once the task has ended.
    pub async fn next_event(&mut self) -> Option<MediaEvent> {
        self.events.recv().await
    }

    /// A tap consumer from now on.
    pub fn subscribe_taps(&self) -> TapReceiver {
        TapReceiver {
            rx: self.taps.subscribe(),
            dropped: 0,
        }
    }

    /// Ends the media (RTCP BYE), releases the ports and returns the final statistics.
    pub async fn close(self) -> Result<MediaStats, RtpIoError> {
        let _ = self.commands.send(Command::Close).await;
        drop(self.taps);
        self.task.await.map_err(|_| RtpIoError::Ended)
    }
}

/// Per-task pacing and stats bookkeeping.
struct Pacing {
    last_send: Option<Instant>,
    reported: MediaStats,
}

async fn run(
    ep: MediaEndpoint,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<MediaEvent>,
) -> MediaStats {
    let MediaEndpoint {
        sockets,
        mut session,
        taps,
    } = ep;
    let m = media_metrics();
    m.sessions.add(1);
    let clock = SystemClock;
    let mut pacing = Pacing {
        last_send: None,
        reported: MediaStats::default(),
    };
    let mut rtp_buf = vec![0u8; MAX_DATAGRAM];
    let mut rtcp_buf = vec![0u8; MAX_DATAGRAM];
    let mut next_stats = clock.mono() + Duration::from_secs(1);
    log::debug!(local_port = sockets.lease.port, ssrc = session.ssrc(); "media task started");
    loop {
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            () = sleep_until(deadline) => session.handle_timeout(clock.mono()),
            cmd = commands.recv() => match cmd {
                Some(c) => apply(&mut session, c, clock.mono()),
                None => session.close(clock.mono()),
            },
            r = sockets.rtcp.recv_from(&mut rtcp_buf) => match r {
                Ok((n, from)) => {
                    m.rtcp_received.inc();
                    session.handle_rtcp(clock.mono(), from, &rtcp_buf[..n]);
                }
                Err(e) => {
                    m.recv_errors.inc();
                    log::debug!(error:% = e; "RTCP receive error");
                }
            },
            r = sockets.rtp.recv_from(&mut rtp_buf) => match r {
                Ok((n, from)) => {
                    m.rtp_received.inc();
                    session.handle_rtp(clock.mono(), from, &rtp_buf[..n]);
                }
                Err(e) => {
                    m.recv_errors.inc();
                    log::debug!(error:% = e; "RTP receive error");
                }
            },
        }
        drain(&mut session, &sockets, &taps, &events, &clock, &mut pacing);
        let now = clock.mono();
        if now >= next_stats || session.is_closed() {
            report_stats(&session, &mut pacing);
            next_stats = now + Duration::from_secs(1);
        }
        if session.is_closed() {
            break;
        }
    }
    m.sessions.add(-1);
    let stats = session.stats();
    log::debug!(
        local_port = sockets.lease.port,
        sent = stats.packets_sent,
        received = stats.packets_received,
        lost = stats.packets_lost,
        late = stats.late_packets;
        "media task ended"
    );
    stats
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn apply(session: &mut MediaSession, cmd: Command, now: Instant) {
    match cmd {
        Command::Play { id, samples, reply } => {
            let _ = reply.send(session.play(id, samples));
        }
        Command::StopPlayback => session.stop_playback(),
        Command::SendDtmf {
            digit,
            duration_ms,
            reply,
        } => {
            let _ = reply.send(session.send_dtmf(digit, duration_ms));
        }
        Command::Renegotiate { neg, reply } => {
            let _ = reply.send(session.renegotiate(neg));
        }
        Command::Stats { reply } => {
            let _ = reply.send(session.stats());
        }
        Command::Close => session.close(now),
    }
}

fn drain(
    session: &mut MediaSession,
    sockets: &RtpSockets,
    taps: &broadcast::Sender<Arc<TapFrame>>,
    events: &mpsc::Sender<MediaEvent>,
    clock: &SystemClock,
    pacing: &mut Pacing,
) {
    let m = media_metrics();
    while let Some(out) = session.poll_output() {
        match out {
            Output::Transmit(t) => {
                let socket = match t.channel {
                    Channel::Rtp => &sockets.rtp,
                    Channel::Rtcp => &sockets.rtcp,
                };
                match socket.try_send_to(&t.payload, t.to) {
                    Ok(_) => match t.channel {
                        Channel::Rtp => {
                            m.rtp_sent.inc();
                            let now = clock.mono();
                            if let Some(k) = t.frame {
                                let late = now.saturating_duration_since(session.frame_due(k));
                                m.send_lateness.observe(late.as_secs_f64());
                            }
                            if let Some(last) = pacing.last_send {
                                m.send_interval
                                    .observe(now.saturating_duration_since(last).as_secs_f64());
                            }
                            pacing.last_send = Some(now);
                        }
                        Channel::Rtcp => m.rtcp_sent.inc(),
                    },
                    Err(e) => {
                        m.send_errors.inc();
                        log::trace!(error:% = e; "media datagram not sent");
                    }
                }
            }
            Output::Tap(frame) => {
                // No receiver is fine (no consumer yet); a lagging one loses its oldest.
                let _ = taps.send(Arc::new(frame));
            }
            Output::Event(e) => {
                if events.try_send(e).is_err() {
                    m.events_dropped.inc();
                }
            }
        }
    }
}

/// Adds what changed since the last report to the process counters.
fn report_stats(session: &MediaSession, pacing: &mut Pacing) {
    let m = media_metrics();
    let s = session.stats();
    let r = &pacing.reported;
    m.lost.add(s.packets_lost.saturating_sub(r.packets_lost));
    m.late.add(s.late_packets.saturating_sub(r.late_packets));
    m.duplicates.add(s.duplicates.saturating_sub(r.duplicates));
    m.concealed
        .add(s.concealed_frames.saturating_sub(r.concealed_frames));
    m.malformed.add(s.malformed.saturating_sub(r.malformed));
    m.foreign
        .add(s.foreign_source.saturating_sub(r.foreign_source));
    m.frames_skipped
        .add(s.frames_skipped.saturating_sub(r.frames_skipped));
    pacing.reported = s;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_timestamp_of_the_unix_epoch_is_1970_in_ntp() {
        assert_eq!(ntp_timestamp(UNIX_EPOCH), NTP_UNIX_OFFSET << 32);
        let t = UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(ntp_timestamp(t), ((NTP_UNIX_OFFSET + 1) << 32) | (1 << 31));
    }

    fn cfg(min: u16, max: u16) -> MediaConfig {
        MediaConfig {
            port_min: min,
            port_max: max,
            ..MediaConfig::default()
        }
    }

    #[tokio::test]
    async fn ports_come_in_even_odd_pairs_round_robin_and_return_on_drop() {
        // An odd-sized window high in the range makes clashes with other tests unlikely.
        let pool = PortPool::new(&cfg(47_100, 47_105));
        assert_eq!(pool.capacity(), 3);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!(a.local_rtp().port() % 2, 0);
        assert_eq!(a.local_rtcp().port(), a.local_rtp().port() + 1);
        assert_ne!(a.local_rtp(), b.local_rtp());
        assert_eq!(pool.in_use(), 2);
        let a_port = a.local_rtp().port();
        drop(a);
        assert_eq!(pool.in_use(), 1);
        // Round-robin: the next allocation takes the third pair, not the one just freed.
        let c = pool.allocate().unwrap();
        assert_ne!(c.local_rtp().port(), a_port);
        let d = pool.allocate().unwrap();
        assert_eq!(d.local_rtp().port(), a_port);
        assert!(matches!(
            pool.allocate(),
            Err(RtpIoError::PortsExhausted(3))
        ));
        drop((b, c, d));
        assert_eq!(pool.in_use(), 0);
    }

    #[tokio::test]
    async fn a_port_held_by_someone_else_is_skipped() {
        let squatter = std::net::UdpSocket::bind("127.0.0.1:47121").unwrap();
        let pool = PortPool::new(&cfg(47_120, 47_123));
        let a = pool.allocate().unwrap();
        assert_eq!(a.local_rtp().port(), 47_122);
        assert!(pool.allocate().is_err());
        drop(squatter);
    }
}
