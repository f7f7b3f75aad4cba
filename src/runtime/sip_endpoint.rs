//! The SIP endpoint task: owns the UDP socket and the transaction layer, routes messages to
//! calls by Call-ID, answers what belongs to no call, and runs each trunk's registration and
//! OPTIONS keepalive.
//!
//! ```text
//!  socket ─▶ parse ─▶ Transactions ─▶ route by Call-ID ─▶ call task (bounded channel)
//!                        ▲                    └─▶ no call: uas::out_of_dialog → respond
//!  call task ─ Command ──┘ (send request / ACK / response)
//! ```
//! Every channel is bounded; a call whose channel is full loses the message and the loss is
//! counted (`vaultcall_sip_dropped_total{reason="call_busy"}`), never blocking the endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use crate::sip::message::{Framing, Message, Method, Rejection, parse};
use crate::sip::registration::{RegEvent, RegOutput, RegStatus, Registration};
use crate::sip::transaction::{
    Target, TimerConfig, Transactions, Transport, TxEvent, TxId, TxOutput,
};
use crate::sip::{IdGen, uas};
use crate::telemetry::metrics::{self, Counter, Family, Gauge};
use crate::time::Clock;

/// Messages for a call task.
#[derive(Debug)]
pub enum ToCall {
    /// A response to one of the call's requests.
    Response(Box<Message>),
    /// An in-dialog request with its server transaction.
    Request(TxId, Box<Message>),
    /// An ACK (for our 2xx to a re-INVITE).
    Ack(Box<Message>),
    /// One of the call's requests timed out (Timer B/F).
    Timeout(Method, u32),
    /// The transport under one of the call's requests failed (TCP/TLS).
    TransportError(Method, u32),
}

/// Requests from call tasks and tools to the endpoint.
#[derive(Debug)]
pub enum Command {
    /// Route messages with this Call-ID to `events`.
    Attach {
        /// Call-ID.
        call_id: String,
        /// Where to deliver.
        events: mpsc::Sender<ToCall>,
    },
    /// Stop routing this Call-ID.
    Detach {
        /// Call-ID.
        call_id: String,
    },
    /// Send a request through a new client transaction.
    Send {
        /// Owner.
        call_id: String,
        /// Destination.
        target: Target,
        /// The request.
        message: Box<Message>,
    },
    /// Send bytes without a transaction (ACK for 2xx, 2xx retransmission).
    SendRaw {
        /// Destination.
        target: Target,
        /// The message.
        message: Box<Message>,
    },
    /// Answer through a server transaction.
    Respond {
        /// Server transaction.
        tx: TxId,
        /// Response.
        message: Box<Message>,
    },
    /// Current trunk states.
    Status(oneshot::Sender<Vec<TrunkStatus>>),
}

/// What `vaultcall trunk status` shows for a trunk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrunkStatus {
    /// Trunk name.
    pub name: String,
    /// `unregistered`, `registering`, `registered`, `failed`, or `off`.
    pub registration: String,
    /// Seconds until the binding expires (registered) or the next retry (failed).
    pub registration_secs: Option<u64>,
    /// Last failure status.
    pub registration_error: Option<u16>,
    /// Whether the last OPTIONS keepalive got an answer (None: keepalive off or not yet sent).
    pub alive: Option<bool>,
}

/// A trunk as the endpoint drives it.
pub struct TrunkRuntime {
    /// Name.
    pub name: String,
    /// Where requests go.
    pub target: Target,
    /// Request-URI host part (`host:port`).
    pub domain: String,
    /// Registration core, if the trunk registers.
    pub registration: Option<Registration>,
    /// OPTIONS interval.
    pub keepalive: Option<Duration>,
    /// TLS settings, for a TLS trunk.
    pub tls: Option<crate::runtime::sip_stream::TlsPeer>,
}

struct Keepalive {
    every: Duration,
    next: Instant,
    alive: Option<bool>,
    misses: u32,
}

/// The handle call tasks use.
#[derive(Debug, Clone)]
pub struct EndpointHandle {
    commands: mpsc::Sender<Command>,
    local: SocketAddr,
}

impl EndpointHandle {
    /// Sends a command (waits if the endpoint's queue is full).
    pub async fn send(&self, c: Command) -> bool {
        self.commands.send(c).await.is_ok()
    }

    /// The address in Via and Contact.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Trunk states, from a thread outside the runtime (admin workers).
    pub fn status_blocking(&self) -> Vec<TrunkStatus> {
        let (tx, rx) = oneshot::channel();
        if self.commands.blocking_send(Command::Status(tx)).is_err() {
            return Vec::new();
        }
        rx.blocking_recv().unwrap_or_default()
    }

    /// Trunk states.
    pub async fn status(&self) -> Vec<TrunkStatus> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Command::Status(tx)).await {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

struct EndpointMetrics {
    received: Arc<Counter>,
    sent: Arc<Counter>,
    dropped: Arc<Family<Counter>>,
    rejected: Arc<Family<Counter>>,
    transactions: Arc<Gauge>,
    retransmissions: Arc<Gauge>,
}

impl EndpointMetrics {
    fn register() -> Self {
        let r = metrics::global();
        Self {
            received: r
                .counter(
                    "vaultcall_sip_messages_received_total",
                    "SIP messages received.",
                    &[],
                )
                .with(&[]),
            sent: r
                .counter(
                    "vaultcall_sip_messages_sent_total",
                    "SIP messages sent.",
                    &[],
                )
                .with(&[]),
            dropped: r.counter(
                "vaultcall_sip_dropped_total",
                "SIP input dropped, by reason (malformed, oversize, call_busy, unmatched).",
                &["reason"],
            ),
            rejected: r.counter(
                "vaultcall_sip_rejected_total",
                "Malformed requests answered with an error, by status.",
                &["status"],
            ),
            transactions: r
                .gauge(
                    "vaultcall_sip_transactions",
                    "SIP transactions in progress.",
                    &[],
                )
                .with(&[]),
            retransmissions: r
                .gauge(
                    "vaultcall_sip_retransmissions",
                    "SIP retransmissions sent since start.",
                    &[],
                )
                .with(&[]),
        }
    }
}

/// How the endpoint binds and behaves.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// UDP address.
    pub listen: SocketAddr,
    /// Address for Via and Contact when `listen` is a wildcard.
    pub public: Option<std::net::IpAddr>,
    /// T1, T2, T4.
    pub timers: TimerConfig,
    /// Transaction cap.
    pub max_transactions: usize,
    /// Seed for tags and branches (from the system CSPRNG in production).
    pub seed: u64,
    /// `User-Agent`.
    pub user_agent: String,
}

/// Queue bound of the endpoint's command channel.
const COMMAND_QUEUE: usize = 4096;

/// The endpoint, bound and ready to run.
pub struct SipEndpoint {
    socket: UdpSocket,
    local: SocketAddr,
    txs: Transactions,
    calls: HashMap<String, mpsc::Sender<ToCall>>,
    owners: HashMap<TxId, (String, Method, u32)>,
    trunks: Vec<TrunkRuntime>,
    keepalives: Vec<Option<Keepalive>>,
    commands: mpsc::Receiver<Command>,
    /// TCP listener on the SIP port, for peers that open connections to our Contact.
    tcp: Option<tokio::net::TcpListener>,
    /// Open stream connections by peer address (TCP or TLS), each with its write queue.
    conns: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    /// How to reach TLS peers (trunks with transport = "tls").
    tls_peers: HashMap<SocketAddr, crate::runtime::sip_stream::TlsPeer>,
    stream_tx: mpsc::Sender<crate::runtime::sip_stream::StreamEvent>,
    stream_rx: mpsc::Receiver<crate::runtime::sip_stream::StreamEvent>,
    clock: Arc<dyn Clock>,
    ids: IdGen,
    user_agent: String,
    m: EndpointMetrics,
}

impl SipEndpoint {
    /// Binds `cfg.listen`; `cfg.public` (if set) replaces a wildcard address in Via and Contact.
    pub async fn bind(
        cfg: EndpointConfig,
        trunks: Vec<TrunkRuntime>,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<(Self, EndpointHandle)> {
        let EndpointConfig {
            listen,
            public,
            timers,
            max_transactions,
            seed,
            user_agent,
        } = cfg;
        let socket = UdpSocket::bind(listen).await?;
        let bound = socket.local_addr()?;
        // TCP on the same address and port (RFC 3261 §18.2.1: a server listens on both).
        let tcp = match tokio::net::TcpListener::bind(bound).await {
            Ok(l) => Some(l),
            Err(e) => {
                log::warn!(addr:% = bound, error:% = e; "no SIP TCP listener; TCP peers must reuse our connections");
                None
            }
        };
        let (stream_tx, stream_rx) = mpsc::channel(COMMAND_QUEUE);
        let mut local = bound;
        if let Some(ip) = public.filter(|_| local.ip().is_unspecified()) {
            local.set_ip(ip);
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let now = clock.mono();
        let keepalives = trunks
            .iter()
            .map(|t| {
                t.keepalive.map(|every| Keepalive {
                    every,
                    next: now,
                    alive: None,
                    misses: 0,
                })
            })
            .collect();
        Ok((
            Self {
                socket,
                local,
                txs: Transactions::new(timers, max_transactions),
                calls: HashMap::new(),
                owners: HashMap::new(),
                trunks,
                keepalives,
                commands: rx,
                tcp,
                conns: HashMap::new(),
                tls_peers: HashMap::new(),
                stream_tx,
                stream_rx,
                clock,
                ids: IdGen::new(seed),
                user_agent,
                m: EndpointMetrics::register(),
            },
            EndpointHandle {
                commands: tx,
                local,
            },
        ))
    }

    /// The bound (or public) address.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Registers how to reach a TLS peer before [`SipEndpoint::run`].
    pub fn add_tls_peer(&mut self, addr: SocketAddr, peer: crate::runtime::sip_stream::TlsPeer) {
        self.tls_peers.insert(addr, peer);
    }

    /// Adds trunks (registrations and keepalives) before [`SipEndpoint::run`].
    pub fn add_trunks(&mut self, trunks: Vec<TrunkRuntime>) {
        let now = self.clock.mono();
        for t in trunks {
            if let Some(p) = &t.tls {
                self.tls_peers.insert(t.target.addr, p.clone());
            }
            self.keepalives.push(t.keepalive.map(|every| Keepalive {
                every,
                next: now,
                alive: None,
                misses: 0,
            }));
            self.trunks.push(t);
        }
    }

    /// Serves until `stop` turns true; then unregisters trunks (bounded by a few seconds).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut buf = vec![0u8; crate::sip::message::MAX_MESSAGE_BYTES + 1];
        let now = self.clock.mono();
        for t in &mut self.trunks {
            if let Some(r) = &mut t.registration {
                r.start(now);
            }
        }
        self.pump().await;
        let mut stopping: Option<Instant> = None;
        loop {
            let next = self.next_timeout();
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(next));
            tokio::select! {
                                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.received(&buf[..n], from),
                    Err(e) => log::debug!(error:% = e; "SIP socket receive error"),
                },
                Some(ev) = self.stream_rx.recv() => self.stream_event(ev),
                accepted = accept(self.tcp.as_ref()) => {
                    if let Some((stream, peer)) = accepted {
                        self.adopt(stream, peer);
                    }
                }
                Some(c) = self.commands.recv() => self.command(c),
                _ = sleep => self.timeouts(),
                _ = stop.changed(), if stopping.is_none() => {
                    let now = self.clock.mono();
                    stopping = Some(now + Duration::from_secs(3));
                    for t in &mut self.trunks {
                        if let Some(r) = &mut t.registration {
                            r.unregister(now);
                        }
                    }
                }
            }
            self.pump().await;
            if let Some(deadline) = stopping {
                let pending = self
                    .trunks
                    .iter()
                    .any(|t| t.registration.as_ref().is_some_and(|r| !r.settled()));
                if !pending || self.clock.mono() >= deadline {
                    break;
                }
            }
        }
    }

    fn next_timeout(&self) -> Instant {
        let far = self.clock.mono() + Duration::from_secs(3600);
        let regs = self
            .trunks
            .iter()
            .filter_map(|t| t.registration.as_ref()?.poll_timeout());
        let kas = self.keepalives.iter().flatten().map(|k| k.next);
        [self.txs.poll_timeout()]
            .into_iter()
            .flatten()
            .chain(regs)
            .chain(kas)
            .min()
            .unwrap_or(far)
    }

    /// Runs an accepted TCP connection.
    #[allow(clippy::disallowed_methods)] // the shell spawns one task per connection
    fn adopt(&mut self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let (tx, rx) = mpsc::channel(crate::runtime::sip_stream::CONN_QUEUE);
        self.conns.insert(peer, tx);
        let events = self.stream_tx.clone();
        let _ = stream.set_nodelay(true);
        tokio::spawn(crate::runtime::sip_stream::run(
            stream,
            peer,
            Transport::Tcp,
            rx,
            events,
        ));
    }

    fn stream_event(&mut self, ev: crate::runtime::sip_stream::StreamEvent) {
        use crate::runtime::sip_stream::StreamEvent;
        let now = self.clock.mono();
        match ev {
            StreamEvent::Message {
                from,
                transport,
                message,
            } => {
                self.m.received.inc();
                self.txs.handle_received(
                    now,
                    *message,
                    Target {
                        addr: from,
                        transport,
                    },
                );
            }
            StreamEvent::Rejected { from, rejection } => match rejection {
                Rejection::Respond {
                    status,
                    reason,
                    skeleton,
                } => {
                    self.m.rejected.with(&[&status.to_string()]).inc();
                    let tag = self.ids.token();
                    let resp = skeleton.response(status, &reason, &tag, &[("Allow", uas::ALLOW)]);
                    if let Some(c) = self.conns.get(&from) {
                        let _ = c.try_send(resp);
                    }
                }
                Rejection::Drop { .. } => self.m.dropped.with(&["malformed"]).inc(),
            },
            StreamEvent::Ping { from } => {
                if let Some(c) = self.conns.get(&from) {
                    let _ = c.try_send(b"\r\n".to_vec());
                }
            }
            StreamEvent::Closed { from } => {
                self.conns.remove(&from);
                // Whatever still waits on that connection will not get an answer through it.
                self.txs.fail_target(now, from);
            }
        }
    }

    fn received(&mut self, bytes: &[u8], from: SocketAddr) {
        self.m.received.inc();
        let now = self.clock.mono();
        let source = Target {
            addr: from,
            transport: Transport::Udp,
        };
        match parse(bytes, Framing::Datagram) {
            Ok((msg, _)) => self.txs.handle_received(now, msg, source),
            Err(Rejection::Respond {
                status,
                reason,
                skeleton,
            }) => {
                self.m.rejected.with(&[&status.to_string()]).inc();
                let tag = self.ids.token();
                let resp = skeleton.response(status, &reason, &tag, &[("Allow", uas::ALLOW)]);
                // Symmetric response: a malformed Via cannot be trusted for routing.
                let _ = self.socket.try_send_to(&resp, from);
            }
            Err(Rejection::Drop { why }) => {
                self.m
                    .dropped
                    .with(&[if why == "oversize" {
                        "oversize"
                    } else {
                        "malformed"
                    }])
                    .inc();
                log::debug!(reason = why; "SIP datagram dropped");
            }
        }
    }

    fn command(&mut self, c: Command) {
        let now = self.clock.mono();
        match c {
            Command::Attach { call_id, events } => {
                self.calls.insert(call_id, events);
            }
            Command::Detach { call_id } => {
                self.calls.remove(&call_id);
            }
            Command::Send {
                call_id,
                target,
                message,
            } => {
                let key = (
                    message.method().cloned().unwrap_or(Method::Options),
                    message.essentials.cseq,
                );
                match self.txs.send_request(now, *message, target) {
                    Ok(tx) => {
                        self.owners.insert(tx, (call_id, key.0, key.1));
                    }
                    Err(e) => {
                        log::warn!(error:% = e; "SIP request not sent");
                        if let Some(ch) = self.calls.get(&call_id) {
                            let _ = ch.try_send(ToCall::Timeout(key.0, key.1));
                        }
                    }
                }
            }
            Command::SendRaw { target, message } => self.transmit(target, &message.canonical()),
            Command::Respond { tx, message } => {
                if let Err(e) = self.txs.respond(now, tx, *message) {
                    log::debug!(error:% = e; "SIP response not sent");
                }
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status(now));
            }
        }
    }

    fn status(&self, now: Instant) -> Vec<TrunkStatus> {
        self.trunks
            .iter()
            .zip(&self.keepalives)
            .map(|(t, k)| {
                let (registration, secs, err) =
                    match t.registration.as_ref().map(Registration::status) {
                        None => ("off", None, None),
                        Some(RegStatus::Unregistered) => ("unregistered", None, None),
                        Some(RegStatus::Registering) => ("registering", None, None),
                        Some(RegStatus::Registered { until }) => (
                            "registered",
                            Some(until.saturating_duration_since(now).as_secs()),
                            None,
                        ),
                        Some(RegStatus::Failed { code, retry_at }) => (
                            "failed",
                            Some(retry_at.saturating_duration_since(now).as_secs()),
                            Some(code),
                        ),
                    };
                TrunkStatus {
                    name: t.name.clone(),
                    registration: registration.to_owned(),
                    registration_secs: secs,
                    registration_error: err,
                    alive: k.as_ref().and_then(|k| k.alive),
                }
            })
            .collect()
    }

    fn timeouts(&mut self) {
        let now = self.clock.mono();
        if self.txs.poll_timeout().is_some_and(|t| t <= now) {
            self.txs.handle_timeout(now);
        }
        for t in &mut self.trunks {
            if let Some(r) = &mut t.registration
                && r.poll_timeout().is_some_and(|at| at <= now)
            {
                r.handle_timeout(now);
            }
        }
        for i in 0..self.keepalives.len() {
            let due = self.keepalives[i].as_ref().is_some_and(|k| k.next <= now);
            if due {
                self.send_keepalive(now, i);
            }
        }
    }

    fn send_keepalive(&mut self, now: Instant, i: usize) {
        let Some(k) = self.keepalives[i].as_mut() else {
            return;
        };
        k.next = now + k.every;
        let t = &self.trunks[i];
        let call_id = format!("ka-{}@{}", self.ids.token(), self.local.ip());
        let token = match t.target.transport {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        };
        let via = format!(
            "SIP/2.0/{token} {};branch={};rport",
            self.local,
            self.ids.branch()
        );
        let uri = format!("sip:{}", t.domain);
        let msg = crate::sip::message::Builder::request(Method::Options, &uri)
            .header("Via", &via)
            .header("Max-Forwards", "70")
            .header(
                "From",
                &format!("<sip:vaultcall@{}>;tag={}", self.local, self.ids.token()),
            )
            .header("To", &format!("<{uri}>"))
            .header("Call-ID", &call_id)
            .header("CSeq", "1 OPTIONS")
            .header("User-Agent", &self.user_agent)
            .build();
        if let Ok(m) = msg
            && let Ok(tx) = self.txs.send_request(now, m, t.target)
        {
            self.owners
                .insert(tx, (format!("keepalive:{i}"), Method::Options, 1));
        }
    }

    /// Executes every output of the registrations and the transaction layer, until both are
    /// quiet (a response can make a registration send again, e.g. after a challenge).
    async fn pump(&mut self) {
        let now = self.clock.mono();
        loop {
            let mut busy = false;
            for i in 0..self.trunks.len() {
                let target = self.trunks[i].target;
                while let Some(out) = self.trunks[i]
                    .registration
                    .as_mut()
                    .and_then(Registration::poll_output)
                {
                    busy = true;
                    match out {
                        RegOutput::Send(m) => {
                            let (call_id, cseq) = (m.essentials.call_id.clone(), m.essentials.cseq);
                            if let Ok(tx) = self.txs.send_request(now, *m, target) {
                                self.owners.insert(tx, (call_id, Method::Register, cseq));
                            }
                        }
                        RegOutput::Event(e) => log_reg(&self.trunks[i].name, e),
                    }
                }
            }
            while let Some(out) = self.txs.poll_output() {
                busy = true;
                match out {
                    TxOutput::Transmit(t) => self.transmit(t.target, &t.bytes),
                    TxOutput::Event(e) => self.tx_event(now, e),
                }
            }
            if !busy {
                break;
            }
        }
        let s = self.txs.stats();
        self.m.transactions.set((s.clients + s.servers) as i64);
        self.m.retransmissions.set(s.retransmissions as i64);
    }

    /// Sends over UDP, or over the peer's stream connection (opened on first use).
    #[allow(clippy::disallowed_methods)] // the shell spawns one task per connection
    fn transmit(&mut self, to: Target, bytes: &[u8]) {
        self.m.sent.inc();
        match to.transport {
            Transport::Udp => {
                if let Err(e) = self.socket.try_send_to(bytes, to.addr) {
                    log::debug!(error:% = e; "SIP send failed");
                }
            }
            Transport::Tcp | Transport::Tls => {
                if let Some(c) = self.conns.get(&to.addr) {
                    if c.try_send(bytes.to_vec()).is_err() {
                        self.m.dropped.with(&["conn_busy"]).inc();
                    }
                    return;
                }
                let tls = match to.transport {
                    Transport::Tls => match self.tls_peers.get(&to.addr) {
                        Some(p) => Some(p.clone()),
                        None => {
                            log::warn!(peer:% = to.addr; "no TLS settings for this peer; not sending");
                            return;
                        }
                    },
                    _ => None,
                };
                let (tx, rx) = mpsc::channel(crate::runtime::sip_stream::CONN_QUEUE);
                let _ = tx.try_send(bytes.to_vec());
                self.conns.insert(to.addr, tx);
                let events = self.stream_tx.clone();
                tokio::spawn(crate::runtime::sip_stream::connect(
                    to.addr, tls, rx, events,
                ));
            }
        }
    }

    fn deliver(&self, call_id: &str, msg: ToCall) -> bool {
        match self.calls.get(call_id) {
            Some(ch) => {
                if ch.try_send(msg).is_err() {
                    self.m.dropped.with(&["call_busy"]).inc();
                }
                true
            }
            None => false,
        }
    }

    fn tx_event(&mut self, now: Instant, e: TxEvent) {
        match e {
            TxEvent::Response { tx, response } => {
                let Some((owner, _, _)) = self.owners.get(&tx).cloned() else {
                    return;
                };
                self.response_for(now, &owner, response);
            }
            TxEvent::StrayResponse { response, .. } => {
                let owner = response.essentials.call_id.clone();
                if !self.deliver(&owner, ToCall::Response(response)) {
                    self.m.dropped.with(&["unmatched"]).inc();
                }
            }
            TxEvent::Timeout { tx, .. } | TxEvent::TransportError { tx } => {
                let transport_error = matches!(e, TxEvent::TransportError { .. });
                let Some((owner, method, cseq)) = self.owners.get(&tx).cloned() else {
                    return;
                };
                if let Some(i) = owner
                    .strip_prefix("keepalive:")
                    .and_then(|i| i.parse::<usize>().ok())
                {
                    self.keepalive_result(i, false);
                } else if let Some(t) = self.trunks.iter_mut().find(|t| {
                    t.registration
                        .as_ref()
                        .is_some_and(|r| r.call_id() == owner)
                }) {
                    if let Some(r) = &mut t.registration {
                        r.handle_request_timeout(now, cseq);
                    }
                } else if transport_error {
                    self.deliver(&owner, ToCall::TransportError(method, cseq));
                } else {
                    self.deliver(&owner, ToCall::Timeout(method, cseq));
                }
            }
            TxEvent::Request { tx, request, .. } => {
                let call_id = request.essentials.call_id.clone();
                if !self.deliver(&call_id, ToCall::Request(tx, request.clone())) {
                    self.answer_out_of_dialog(now, tx, &request);
                }
            }
            TxEvent::Ack { request, .. } => {
                let call_id = request.essentials.call_id.clone();
                self.deliver(&call_id, ToCall::Ack(request));
            }
            TxEvent::Terminated { tx } => {
                self.owners.remove(&tx);
            }
            TxEvent::Cancelled { .. } | TxEvent::NoAck { .. } => {}
        }
    }

    fn response_for(&mut self, now: Instant, owner: &str, response: Box<Message>) {
        if let Some(i) = owner
            .strip_prefix("keepalive:")
            .and_then(|i| i.parse::<usize>().ok())
        {
            // Any final answer, even 404 or 405, proves the trunk is there.
            if response.status().is_some_and(|c| c >= 200) {
                self.keepalive_result(i, true);
            }
            return;
        }
        if let Some(t) = self.trunks.iter_mut().find(|t| {
            t.registration
                .as_ref()
                .is_some_and(|r| r.call_id() == owner)
        }) {
            if let Some(r) = &mut t.registration {
                r.handle_response(now, *response);
            }
            return;
        }
        self.deliver(owner, ToCall::Response(response));
    }

    fn keepalive_result(&mut self, i: usize, answered: bool) {
        let name = self
            .trunks
            .get(i)
            .map(|t| t.name.clone())
            .unwrap_or_default();
        if let Some(Some(k)) = self.keepalives.get_mut(i) {
            let was = k.alive;
            if answered {
                k.misses = 0;
                k.alive = Some(true);
            } else {
                k.misses += 1;
                // Two missed keepalives in a row: the trunk is down (one may be a lost datagram).
                if k.misses >= 2 {
                    k.alive = Some(false);
                }
            }
            if was != k.alive {
                log::warn!(trunk = name.as_str(), alive = k.alive.unwrap_or(false); "trunk keepalive state changed");
            }
        }
    }

    fn answer_out_of_dialog(&mut self, now: Instant, tx: TxId, request: &Message) {
        if let uas::Answer::Respond {
            status,
            reason,
            headers,
        } = uas::out_of_dialog(request)
        {
            let tag = self.ids.token();
            let mut b =
                crate::sip::message::Builder::response_to(request, status, reason, Some(&tag));
            for (k, v) in headers {
                b = b.header(k, &v);
            }
            if let Ok(resp) = b.build() {
                let _ = self.txs.respond(now, tx, resp);
            }
        }
    }

    /// Whether trunk `i`'s keepalive says it is usable (unknown counts as usable).
    pub fn trunk_alive(&self, i: usize) -> bool {
        self.keepalives.get(i).and_then(|k| k.as_ref()?.alive) != Some(false)
    }
}

/// The next accepted TCP connection, or never when there is no listener.
async fn accept(
    l: Option<&tokio::net::TcpListener>,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await.ok(),
        None => std::future::pending().await,
    }
}

fn log_reg(trunk: &str, e: RegEvent) {
    match e {
        RegEvent::Registered { expires } => {
            log::info!(trunk = trunk, expires = expires; "trunk registered")
        }
        RegEvent::Failed { code } => {
            log::warn!(trunk = trunk, status = code; "trunk registration failed")
        }
        RegEvent::Unregistered => log::info!(trunk = trunk; "trunk unregistered"),
    }
}
