//! SIP transactions (RFC 3261 §17, with RFC 6026's Accepted states), sans-IO.
//!
//! One [`Transactions`] holds every client and server transaction of the user agent. The
//! shell feeds it received messages and timer expiries and executes its outputs:
//!
//! ```text
//! txs.send_request(now, request, target) / txs.respond(now, tx, response) / txs.handle_received(now, msg, from)
//! while let Some(out) = txs.poll_output() { Transmit → socket, Event → transaction user }
//! txs.poll_timeout() → when to call txs.handle_timeout(now)
//! ```
//!
//! Retransmissions happen over unreliable transports only; timers that exist to absorb
//! retransmissions (D, I, J, K) are zero over reliable ones. Matching is by the top Via branch
//! and the CSeq method (§17.1.3, §17.2.3), with the RFC 2543 fallback for branches without the
//! magic cookie.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::message::{Builder, Message, Method, StartLine};

/// The magic cookie that marks an RFC 3261 branch (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// The transaction timers, named as in RFC 3261 §17 and RFC 6026.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// RFC 3261 §17.1.1.2: INVITE retransmission, T1 doubling (unreliable transports).
    A,
    /// RFC 3261 §17.1.1.2: INVITE transaction timeout, 64·T1.
    B,
    /// RFC 3261 §17.1.1.2: wait time for response retransmissions, ≥ 32 s (0 if reliable).
    D,
    /// RFC 3261 §17.1.2.2: non-INVITE retransmission, T1 doubling up to T2.
    E,
    /// RFC 3261 §17.1.2.2: non-INVITE transaction timeout, 64·T1.
    F,
    /// RFC 3261 §17.2.1: INVITE final response retransmission, T1 doubling up to T2.
    G,
    /// RFC 3261 §17.2.1: wait time for ACK receipt, 64·T1.
    H,
    /// RFC 3261 §17.2.1: wait time for ACK retransmissions, T4 (0 if reliable).
    I,
    /// RFC 3261 §17.2.2: wait time for non-INVITE request retransmissions, 64·T1 (0 if reliable).
    J,
    /// RFC 3261 §17.1.2.2: wait time for response retransmissions, T4 (0 if reliable).
    K,
    /// RFC 6026 §8.7: wait time for accepted INVITE request retransmissions, 64·T1.
    L,
    /// RFC 6026 §8.4: wait time for retransmission of 2xx to INVITE, 64·T1.
    M,
}

/// T1, T2, T4 (RFC 3261 §17.1.1.1, table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate (default 500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (default 4 s).
    pub t2: Duration,
    /// Maximum duration a message remains in the network (default 5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Transport kind of a target: decides retransmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: the transaction layer retransmits.
    Udp,
    /// TCP: reliable.
    Tcp,
    /// TLS over TCP: reliable.
    Tls,
}

impl Transport {
    /// TCP and TLS.
    pub fn reliable(self) -> bool {
        !matches!(self, Self::Udp)
    }
}

/// Where a message goes or came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    /// Peer address.
    pub addr: SocketAddr,
    /// Transport.
    pub transport: Transport,
}

/// Identifies one transaction for the transaction user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(pub u64);

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub target: Target,
    /// The message.
    pub bytes: Vec<u8>,
}

/// What the transaction user learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEvent {
    /// A response to a client transaction. For INVITE, 2xx retransmissions keep coming while
    /// the transaction is Accepted: the TU acknowledges each (RFC 6026).
    Response {
        /// Client transaction.
        tx: TxId,
        /// The response.
        response: Box<Message>,
    },
    /// Timer B or F fired: no final response (the TU treats it as 408).
    Timeout {
        /// Client transaction.
        tx: TxId,
        /// B or F.
        timer: Timer,
    },
    /// A new request: the TU answers it with [`Transactions::respond`].
    Request {
        /// Server transaction.
        tx: TxId,
        /// The request.
        request: Box<Message>,
        /// Where it came from.
        source: Target,
    },
    /// An ACK that belongs to no transaction: the ACK for a 2xx, for the dialog layer.
    Ack {
        /// The ACK.
        request: Box<Message>,
        /// Where it came from.
        source: Target,
    },
    /// A response that matches no transaction (a 2xx retransmitted after Timer M): the dialog
    /// layer may re-send its ACK.
    StrayResponse {
        /// The response.
        response: Box<Message>,
        /// Where it came from.
        source: Target,
    },
    /// A CANCEL matched this INVITE server transaction; it was answered 200. If the TU has not
    /// answered the INVITE finally, it now answers 487.
    Cancelled {
        /// The INVITE's server transaction.
        invite: TxId,
    },
    /// The transport to the peer failed (a TCP/TLS connection could not be made or broke):
    /// the client transaction is over without a final response (RFC 3261 §17.1.4).
    TransportError {
        /// Client transaction.
        tx: TxId,
    },
    /// Timer H fired: the peer never acknowledged the final response.
    NoAck {
        /// Server transaction.
        tx: TxId,
    },
    /// The transaction is gone; its id will not appear again.
    Terminated {
        /// The transaction.
        tx: TxId,
    },
}

/// One output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxOutput {
    /// Send bytes.
    Transmit(Transmit),
    /// Tell the transaction user.
    Event(TxEvent),
}

/// Why a request or response could not be handed to the layer (our misuse, not the peer's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// Too many transactions.
    #[error("transaction table full ({0})")]
    Full(usize),
    /// The request has no Via branch.
    #[error("request has no Via branch")]
    NoBranch,
    /// No such server transaction, or it cannot take this response now.
    #[error("no server transaction can take this response")]
    NoTransaction,
    /// ACK is not sent through a transaction (RFC 3261 §17.1.1.3).
    #[error("ACK for a 2xx is sent by the dialog, not a transaction")]
    Ack,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ServerKey {
    /// RFC 3261: branch, sent-by, method (ACK counts as INVITE).
    Rfc3261 {
        branch: String,
        sent_by: String,
        method: String,
    },
    /// RFC 2543 fallback: Request-URI, From tag, Call-ID, CSeq number, top Via, method.
    Rfc2543 {
        uri: String,
        from_tag: String,
        call_id: String,
        cseq: u32,
        via: String,
        method: String,
    },
}

/// A retransmission timer: when it fires next and its current interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retransmit {
    at: Instant,
    interval: Duration,
}

#[derive(Debug)]
enum InviteClient {
    Calling { a: Option<Retransmit>, b: Instant },
    Proceeding,
    Accepted { m: Instant },
    Completed { ack: Vec<u8>, d: Instant },
}

#[derive(Debug)]
enum NonInviteClient {
    Trying { e: Option<Retransmit>, f: Instant },
    Proceeding { e: Option<Retransmit>, f: Instant },
    Completed { k: Instant },
}

#[derive(Debug)]
enum ClientState {
    Invite(InviteClient),
    NonInvite(NonInviteClient),
}

#[derive(Debug)]
struct Client {
    branch: String,
    method: Method,
    request: Message,
    bytes: Vec<u8>,
    target: Target,
    state: ClientState,
}

#[derive(Debug)]
enum InviteServer {
    Proceeding {
        last: Option<Vec<u8>>,
    },
    Accepted {
        l: Instant,
    },
    Completed {
        response: Vec<u8>,
        g: Option<Retransmit>,
        h: Instant,
    },
    Confirmed {
        i: Instant,
    },
}

#[derive(Debug)]
enum NonInviteServer {
    Trying,
    Proceeding { last: Vec<u8> },
    Completed { response: Vec<u8>, j: Instant },
}

#[derive(Debug)]
enum ServerState {
    Invite(InviteServer),
    NonInvite(NonInviteServer),
}

#[derive(Debug)]
struct Server {
    key: ServerKey,
    source: Target,
    state: ServerState,
}

/// Counts for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxStats {
    /// Client transactions now.
    pub clients: usize,
    /// Server transactions now.
    pub servers: usize,
    /// Retransmissions sent so far.
    pub retransmissions: u64,
    /// Client transactions that timed out.
    pub timeouts: u64,
    /// Received messages matching nothing and dropped.
    pub unmatched: u64,
}

/// All transactions of one user agent.
#[derive(Debug)]
pub struct Transactions {
    timers: TimerConfig,
    cap: usize,
    next_id: u64,
    clients: BTreeMap<TxId, Client>,
    client_index: HashMap<(String, String), TxId>,
    servers: BTreeMap<TxId, Server>,
    server_index: HashMap<ServerKey, TxId>,
    out: VecDeque<TxOutput>,
    stats: TxStats,
}

fn top_branch(m: &Message) -> Option<&str> {
    m.essentials.vias.first().and_then(|v| v.branch())
}

fn sent_by(m: &Message) -> String {
    m.essentials
        .vias
        .first()
        .map(|v| format!("{}:{}", v.host.to_ascii_lowercase(), v.port.unwrap_or(5060)))
        .unwrap_or_default()
}

fn server_key(m: &Message) -> ServerKey {
    let method = match m.method() {
        Some(Method::Ack) | None => "INVITE".to_owned(),
        Some(other) => other.as_str().to_owned(),
    };
    match top_branch(m) {
        Some(b) if b.starts_with(MAGIC_COOKIE) => ServerKey::Rfc3261 {
            branch: b.to_owned(),
            sent_by: sent_by(m),
            method,
        },
        _ => ServerKey::Rfc2543 {
            uri: match &m.start {
                StartLine::Request { uri, .. } => uri.clone(),
                StartLine::Response { .. } => String::new(),
            },
            from_tag: m.essentials.from.tag().unwrap_or_default().to_owned(),
            call_id: m.essentials.call_id.clone(),
            cseq: m.essentials.cseq,
            via: m.header("Via").unwrap_or_default().to_owned(),
            method,
        },
    }
}

impl Transactions {
    /// A layer with these timers and at most `cap` transactions of each kind.
    pub fn new(timers: TimerConfig, cap: usize) -> Self {
        Self {
            timers,
            cap,
            next_id: 1,
            clients: BTreeMap::new(),
            client_index: HashMap::new(),
            servers: BTreeMap::new(),
            server_index: HashMap::new(),
            out: VecDeque::new(),
            stats: TxStats::default(),
        }
    }

    /// Current counts.
    pub fn stats(&self) -> TxStats {
        TxStats {
            clients: self.clients.len(),
            servers: self.servers.len(),
            ..self.stats
        }
    }

    fn id(&mut self) -> TxId {
        let id = TxId(self.next_id);
        self.next_id += 1;
        id
    }

    fn transmit(&mut self, target: Target, bytes: Vec<u8>) {
        self.out
            .push_back(TxOutput::Transmit(Transmit { target, bytes }));
    }

    fn event(&mut self, e: TxEvent) {
        self.out.push_back(TxOutput::Event(e));
    }

    /// The next output, until `None`.
    pub fn poll_output(&mut self) -> Option<TxOutput> {
        self.out.pop_front()
    }

    /// Starts a client transaction: sends `request` to `target` (RFC 3261 §17.1).
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Message,
        target: Target,
    ) -> Result<TxId, TxError> {
        let method = request.method().cloned().ok_or(TxError::NoBranch)?;
        if method == Method::Ack {
            return Err(TxError::Ack);
        }
        let branch = top_branch(&request).ok_or(TxError::NoBranch)?.to_owned();
        if self.clients.len() >= self.cap {
            return Err(TxError::Full(self.cap));
        }
        let t = self.timers;
        let unreliable = !target.transport.reliable();
        let state = if method == Method::Invite {
            ClientState::Invite(InviteClient::Calling {
                a: unreliable.then(|| Retransmit {
                    at: now + t.t1,
                    interval: t.t1,
                }),
                b: now + 64 * t.t1,
            })
        } else {
            ClientState::NonInvite(NonInviteClient::Trying {
                e: unreliable.then(|| Retransmit {
                    at: now + t.t1,
                    interval: t.t1,
                }),
                f: now + 64 * t.t1,
            })
        };
        let id = self.id();
        let bytes = request.canonical();
        self.transmit(target, bytes.clone());
        log::debug!(tx = id.0, method = method.as_str(); "client transaction started");
        self.client_index
            .insert((branch.clone(), method.as_str().to_owned()), id);
        self.clients.insert(
            id,
            Client {
                branch,
                method,
                request,
                bytes,
                target,
                state,
            },
        );
        Ok(id)
    }

    /// Ends a client INVITE transaction that has no timer left (Proceeding): the TU calls this
    /// when a CANCEL got no final response for the INVITE within 64·T1 (RFC 3261 §9.1).
    pub fn abandon(&mut self, now: Instant, tx: TxId) {
        if let Some(c) = self.clients.get_mut(&tx) {
            c.state = ClientState::Invite(InviteClient::Completed {
                ack: Vec::new(),
                d: now,
            });
        }
        self.reap(now);
    }

    /// Ends every client transaction to `addr` that still waits for a final response, telling
    /// the TU of a transport error (RFC 3261 §17.1.4).
    pub fn fail_target(&mut self, now: Instant, addr: SocketAddr) {
        let mut failed = Vec::new();
        for (id, c) in &mut self.clients {
            let waiting = matches!(
                c.state,
                ClientState::Invite(InviteClient::Calling { .. } | InviteClient::Proceeding)
                    | ClientState::NonInvite(
                        NonInviteClient::Trying { .. } | NonInviteClient::Proceeding { .. }
                    )
            );
            if waiting && c.target.addr == addr {
                c.state = match c.state {
                    ClientState::Invite(_) => ClientState::Invite(InviteClient::Completed {
                        ack: Vec::new(),
                        d: now,
                    }),
                    ClientState::NonInvite(_) => {
                        ClientState::NonInvite(NonInviteClient::Completed { k: now })
                    }
                };
                failed.push(*id);
            }
        }
        for tx in failed {
            self.event(TxEvent::TransportError { tx });
        }
        self.reap(now);
    }

    /// Sends a response through server transaction `tx` (RFC 3261 §17.2).
    pub fn respond(&mut self, now: Instant, tx: TxId, response: Message) -> Result<(), TxError> {
        let code = response.status().ok_or(TxError::NoTransaction)?;
        let t = self.timers;
        let server = self.servers.get_mut(&tx).ok_or(TxError::NoTransaction)?;
        let unreliable = !server.source.transport.reliable();
        let bytes = response.canonical();
        let target = server.source;
        let next = match &mut server.state {
            ServerState::Invite(InviteServer::Proceeding { last }) => {
                if code < 200 {
                    *last = Some(bytes.clone());
                    None
                } else if code < 300 {
                    // RFC 6026 §7.1: the TU retransmits the 2xx; the transaction absorbs
                    // retransmitted INVITEs until Timer L.
                    Some(ServerState::Invite(InviteServer::Accepted {
                        l: now + 64 * t.t1,
                    }))
                } else {
                    Some(ServerState::Invite(InviteServer::Completed {
                        response: bytes.clone(),
                        g: unreliable.then(|| Retransmit {
                            at: now + t.t1,
                            interval: t.t1,
                        }),
                        h: now + 64 * t.t1,
                    }))
                }
            }
            // RFC 6026 §8.7: further 2xx from the TU go straight to the transport.
            ServerState::Invite(InviteServer::Accepted { .. }) if (200..300).contains(&code) => {
                None
            }
            ServerState::NonInvite(
                NonInviteServer::Trying | NonInviteServer::Proceeding { .. },
            ) => {
                if code < 200 {
                    Some(ServerState::NonInvite(NonInviteServer::Proceeding {
                        last: bytes.clone(),
                    }))
                } else {
                    let j = if unreliable { now + 64 * t.t1 } else { now };
                    Some(ServerState::NonInvite(NonInviteServer::Completed {
                        response: bytes.clone(),
                        j,
                    }))
                }
            }
            _ => return Err(TxError::NoTransaction),
        };
        if let Some(n) = next {
            server.state = n;
        }
        self.transmit(target, bytes);
        Ok(())
    }

    /// Feeds a received, parsed message from `source`.
    pub fn handle_received(&mut self, now: Instant, msg: Message, source: Target) {
        if msg.status().is_some() {
            self.client_response(now, msg, source);
        } else {
            self.server_request(now, msg, source);
        }
    }

    fn client_response(&mut self, now: Instant, response: Message, source: Target) {
        let code = response.status().unwrap_or(0);
        let key = (
            top_branch(&response).unwrap_or_default().to_owned(),
            response.essentials.cseq_method.as_str().to_owned(),
        );
        let Some(&id) = self.client_index.get(&key) else {
            self.stats.unmatched += 1;
            self.event(TxEvent::StrayResponse {
                response: Box::new(response),
                source,
            });
            return;
        };
        let t = self.timers;
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let reliable = c.target.transport.reliable();
        let target = c.target;
        let mut pass = false;
        let mut resend_ack = None;
        match &mut c.state {
            ClientState::Invite(s) => match s {
                InviteClient::Calling { .. } | InviteClient::Proceeding => {
                    pass = true;
                    *s = if code < 200 {
                        InviteClient::Proceeding
                    } else if code < 300 {
                        InviteClient::Accepted { m: now + 64 * t.t1 }
                    } else {
                        let ack = non_2xx_ack(&c.request, &response);
                        resend_ack = Some(ack.clone());
                        let d = if reliable {
                            now
                        } else {
                            now + Duration::from_secs(32).max(64 * t.t1)
                        };
                        InviteClient::Completed { ack, d }
                    };
                }
                InviteClient::Accepted { .. } => pass = (200..300).contains(&code),
                InviteClient::Completed { ack, .. } => {
                    if code >= 300 {
                        resend_ack = Some(ack.clone());
                    }
                }
            },
            ClientState::NonInvite(s) => match s {
                NonInviteClient::Trying { e, f } | NonInviteClient::Proceeding { e, f } => {
                    pass = true;
                    if code < 200 {
                        // §17.1.2.2: in Proceeding, retransmit at T2.
                        let e = e.map(|r| Retransmit {
                            at: r.at,
                            interval: t.t2,
                        });
                        *s = NonInviteClient::Proceeding { e, f: *f };
                    } else {
                        let k = if reliable { now } else { now + t.t4 };
                        *s = NonInviteClient::Completed { k };
                    }
                }
                NonInviteClient::Completed { .. } => {}
            },
        }
        if let Some(ack) = resend_ack {
            self.transmit(target, ack);
        }
        if pass {
            self.event(TxEvent::Response {
                tx: id,
                response: Box::new(response),
            });
        }
        self.reap(now);
    }

    fn server_request(&mut self, now: Instant, request: Message, source: Target) {
        let method = request.method().cloned().unwrap_or(Method::Ack);
        let key = server_key(&request);
        let existing = self.server_index.get(&key).copied();
        let t = self.timers;
        match (existing, &method) {
            (Some(id), Method::Ack) => {
                let Some(s) = self.servers.get_mut(&id) else {
                    return;
                };
                let reliable = s.source.transport.reliable();
                match &mut s.state {
                    ServerState::Invite(st @ InviteServer::Completed { .. }) => {
                        let i = if reliable { now } else { now + t.t4 };
                        *st = InviteServer::Confirmed { i };
                    }
                    // An ACK for a 2xx carries a new branch, so it rarely lands here; if it does
                    // (RFC 2543 peers), the dialog still needs it.
                    ServerState::Invite(InviteServer::Accepted { .. }) => {
                        self.event(TxEvent::Ack {
                            request: Box::new(request),
                            source,
                        })
                    }
                    _ => {}
                }
            }
            (None, Method::Ack) => self.event(TxEvent::Ack {
                request: Box::new(request),
                source,
            }),
            (Some(id), _) => {
                // A retransmitted request: resend the last response (§17.2.1, §17.2.2).
                let resend = match self.servers.get(&id).map(|s| &s.state) {
                    Some(ServerState::Invite(InviteServer::Proceeding { last })) => last.clone(),
                    Some(ServerState::Invite(InviteServer::Completed { response, .. })) => {
                        Some(response.clone())
                    }
                    Some(ServerState::NonInvite(NonInviteServer::Proceeding { last })) => {
                        Some(last.clone())
                    }
                    Some(ServerState::NonInvite(NonInviteServer::Completed {
                        response, ..
                    })) => Some(response.clone()),
                    _ => None,
                };
                if let (Some(bytes), Some(s)) = (resend, self.servers.get(&id)) {
                    let target = s.source;
                    self.stats.retransmissions += 1;
                    self.transmit(target, bytes);
                }
            }
            (None, Method::Cancel) => self.cancel(now, request, source),
            (None, _) => {
                if self.servers.len() >= self.cap {
                    // Overloaded: answer statelessly and let the client retry (RFC 3261 §21.5.4).
                    if let Ok(r) = Builder::response_to(&request, 503, "Service Unavailable", None)
                        .header("Retry-After", "5")
                        .build()
                    {
                        self.transmit(source, r.canonical());
                    }
                    return;
                }
                let id = self.id();
                let state = if method == Method::Invite {
                    // §17.2.1: answer 100 Trying at once so the client stops retransmitting.
                    let trying = Builder::response_to(&request, 100, "Trying", None)
                        .build()
                        .ok();
                    let last = trying.map(|m| m.canonical());
                    if let Some(b) = &last {
                        self.transmit(source, b.clone());
                    }
                    ServerState::Invite(InviteServer::Proceeding { last })
                } else {
                    ServerState::NonInvite(NonInviteServer::Trying)
                };
                log::debug!(tx = id.0, method = method.as_str(); "server transaction started");
                self.server_index.insert(key.clone(), id);
                self.servers.insert(id, Server { key, source, state });
                self.event(TxEvent::Request {
                    tx: id,
                    request: Box::new(request),
                    source,
                });
            }
        }
        self.reap(now);
    }

    /// CANCEL (RFC 3261 §9.2): its own non-INVITE server transaction, answered 200 here if it
    /// matches an INVITE server transaction still proceeding, else 481.
    fn cancel(&mut self, now: Instant, request: Message, source: Target) {
        let mut invite_key = server_key(&request);
        match &mut invite_key {
            ServerKey::Rfc3261 { method, .. } | ServerKey::Rfc2543 { method, .. } => {
                *method = "INVITE".to_owned()
            }
        }
        let invite = self.server_index.get(&invite_key).copied().filter(|id| {
            matches!(
                self.servers.get(id).map(|s| &s.state),
                Some(ServerState::Invite(InviteServer::Proceeding { .. }))
            )
        });
        let (code, reason) = if invite.is_some() {
            (200, "OK")
        } else {
            (481, "Call/Transaction Does Not Exist")
        };
        let Ok(resp) = Builder::response_to(&request, code, reason, Some("cancel")).build() else {
            return;
        };
        let id = self.id();
        let key = server_key(&request);
        self.server_index.insert(key.clone(), id);
        self.servers.insert(
            id,
            Server {
                key,
                source,
                state: ServerState::NonInvite(NonInviteServer::Trying),
            },
        );
        let _ = self.respond(now, id, resp);
        if let Some(invite) = invite {
            self.event(TxEvent::Cancelled { invite });
        }
    }

    /// The earliest instant at which [`Transactions::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let c = self.clients.values().filter_map(|c| match &c.state {
            ClientState::Invite(InviteClient::Calling { a, b }) => {
                Some(a.map_or(*b, |a| a.at.min(*b)))
            }
            ClientState::Invite(InviteClient::Proceeding) => None,
            ClientState::Invite(InviteClient::Accepted { m }) => Some(*m),
            ClientState::Invite(InviteClient::Completed { d, .. }) => Some(*d),
            ClientState::NonInvite(
                NonInviteClient::Trying { e, f } | NonInviteClient::Proceeding { e, f },
            ) => Some(e.map_or(*f, |e| e.at.min(*f))),
            ClientState::NonInvite(NonInviteClient::Completed { k }) => Some(*k),
        });
        let s = self.servers.values().filter_map(|s| match &s.state {
            ServerState::Invite(InviteServer::Proceeding { .. }) => None,
            ServerState::Invite(InviteServer::Accepted { l }) => Some(*l),
            ServerState::Invite(InviteServer::Completed { g, h, .. }) => {
                Some(g.map_or(*h, |g| g.at.min(*h)))
            }
            ServerState::Invite(InviteServer::Confirmed { i }) => Some(*i),
            ServerState::NonInvite(
                NonInviteServer::Trying | NonInviteServer::Proceeding { .. },
            ) => None,
            ServerState::NonInvite(NonInviteServer::Completed { j, .. }) => Some(*j),
        });
        c.chain(s).min()
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let t = self.timers;
        let mut sends = Vec::new();
        let mut events = Vec::new();
        for (id, c) in &mut self.clients {
            match &mut c.state {
                ClientState::Invite(InviteClient::Calling { a, b }) => {
                    if now >= *b {
                        events.push(TxEvent::Timeout {
                            tx: *id,
                            timer: Timer::B,
                        });
                        c.state = ClientState::Invite(InviteClient::Completed {
                            ack: Vec::new(),
                            d: now,
                        });
                    } else if let Some(r) = a.as_mut().filter(|r| now >= r.at) {
                        r.interval *= 2;
                        r.at = now + r.interval;
                        sends.push((c.target, c.bytes.clone()));
                    }
                }
                ClientState::NonInvite(
                    NonInviteClient::Trying { e, f } | NonInviteClient::Proceeding { e, f },
                ) => {
                    if now >= *f {
                        events.push(TxEvent::Timeout {
                            tx: *id,
                            timer: Timer::F,
                        });
                        c.state = ClientState::NonInvite(NonInviteClient::Completed { k: now });
                    } else if let Some(r) = e.as_mut().filter(|r| now >= r.at) {
                        r.interval = (r.interval * 2).min(t.t2);
                        r.at = now + r.interval;
                        sends.push((c.target, c.bytes.clone()));
                    }
                }
                _ => {}
            }
        }
        for (id, s) in &mut self.servers {
            if let ServerState::Invite(InviteServer::Completed {
                response,
                g: Some(r),
                h,
            }) = &mut s.state
                && now >= r.at
                && now < *h
            {
                r.interval = (r.interval * 2).min(t.t2);
                r.at = now + r.interval;
                sends.push((s.source, response.clone()));
            }
            if let ServerState::Invite(InviteServer::Completed { h, .. }) = &s.state
                && now >= *h
            {
                events.push(TxEvent::NoAck { tx: *id });
                s.state = ServerState::Invite(InviteServer::Confirmed { i: now });
            }
        }
        self.stats.retransmissions += sends.len() as u64;
        for (target, bytes) in sends {
            self.transmit(target, bytes);
        }
        for e in events {
            if matches!(e, TxEvent::Timeout { .. }) {
                self.stats.timeouts += 1;
            }
            self.event(e);
        }
        self.reap(now);
    }

    /// Removes transactions whose last timer has fired.
    fn reap(&mut self, now: Instant) {
        let done_clients: Vec<TxId> = self
            .clients
            .iter()
            .filter(|(_, c)| match &c.state {
                ClientState::Invite(InviteClient::Accepted { m }) => now >= *m,
                ClientState::Invite(InviteClient::Completed { d, .. }) => now >= *d,
                ClientState::NonInvite(NonInviteClient::Completed { k }) => now >= *k,
                _ => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in done_clients {
            if let Some(c) = self.clients.remove(&id) {
                self.client_index
                    .remove(&(c.branch, c.method.as_str().to_owned()));
                self.event(TxEvent::Terminated { tx: id });
            }
        }
        let done_servers: Vec<TxId> = self
            .servers
            .iter()
            .filter(|(_, s)| match &s.state {
                ServerState::Invite(InviteServer::Accepted { l }) => now >= *l,
                ServerState::Invite(InviteServer::Confirmed { i }) => now >= *i,
                ServerState::NonInvite(NonInviteServer::Completed { j, .. }) => now >= *j,
                _ => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in done_servers {
            if let Some(s) = self.servers.remove(&id) {
                self.server_index.remove(&s.key);
                self.event(TxEvent::Terminated { tx: id });
            }
        }
    }
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): same branch, Request-URI,
/// Call-ID, From and CSeq number as the INVITE, To from the response, Route from the INVITE.
pub fn non_2xx_ack(invite: &Message, response: &Message) -> Vec<u8> {
    let uri = match &invite.start {
        StartLine::Request { uri, .. } => uri.clone(),
        StartLine::Response { .. } => String::new(),
    };
    let mut b = Builder::request(Method::Ack, &uri)
        .header("Via", invite.header("Via").unwrap_or_default())
        .header("Max-Forwards", "70")
        .header("From", invite.header("From").unwrap_or_default())
        .header("To", response.header("To").unwrap_or_default())
        .header("Call-ID", &invite.essentials.call_id)
        .header("CSeq", &format!("{} ACK", invite.essentials.cseq));
    for r in invite.header_values("Route") {
        b = b.header("Route", r);
    }
    b.build().map(|m| m.canonical()).unwrap_or_default()
}
