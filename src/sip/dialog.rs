//! One outbound call as a SIP user agent client (RFC 3261 §12–§15), sans-IO.
//!
//! [`OutboundCall`] sends the INVITE with an SDP offer, answers digest challenges, follows
//! redirects (or not, per trunk), reports provisional responses and early media, takes the
//! first 2xx of a forked INVITE (acknowledging and hanging up any later one), cancels on ring
//! timeout or command, hangs up or is hung up, answers the peer's re-INVITEs (hold, unhold,
//! address change), runs RFC 4028 session timers, answers in-dialog OPTIONS/INFO, and
//! transfers with REFER, following the NOTIFY progress.
//!
//! It sits above the transaction layer: requests it emits go out through client
//! transactions (except ACK for 2xx, which the dialog sends itself, §13.2.2.4), responses come
//! back matched by CSeq, and in-dialog requests arrive with their server transaction.
//!
//! ```text
//! call.start(now) / call.handle_response(now, resp) / call.handle_request(now, tx, req) / call.hangup(now)
//! while let Some(out) = call.poll_output() { Send | SendAck | Respond | Event }
//! call.poll_timeout() → call.handle_timeout(now)
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::IdGen;
use super::auth::{self, Attempt, Challenge, Credentials};
use super::message::{Builder, Message, Method};
use super::outcome::{Ending, HangupBy, Outcome, OutcomeMap, q850_cause};
use super::sdp::{self, Negotiated};
use super::syntax;
use super::transaction::{TimerConfig, TxId};

/// What a call needs to know about its trunk and callee.
#[derive(Debug, Clone)]
pub struct CallConfig {
    /// Request-URI of the first INVITE (`sip:<number>@<trunk host>`).
    pub request_uri: String,
    /// To URI (usually the Request-URI).
    pub to_uri: String,
    /// From URI (the caller ID).
    pub from_uri: String,
    /// Optional From display name.
    pub from_display: Option<String>,
    /// Our Contact URI (`sip:vaultcall@<ip>:<port>;transport=udp`).
    pub contact: String,
    /// Via sent-by (`ip:port`) and transport token (`UDP`, `TCP`, `TLS`).
    pub via_sent_by: String,
    /// Transport token for Via.
    pub via_transport: &'static str,
    /// Pre-loaded Route set (outbound proxy with `;lr`), outermost first.
    pub route: Vec<String>,
    /// Digest credentials, if the trunk challenges.
    pub credentials: Option<Credentials>,
    /// Cancel after ringing this long without an answer.
    pub ring_timeout: Duration,
    /// Follow 3xx redirects up to this many times (0: a 3xx ends the call).
    pub max_redirects: u8,
    /// Requested session interval (RFC 4028), if session timers are wanted.
    pub session_expires: Option<u32>,
    /// Our SDP parameters.
    pub sdp: sdp::Local,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Transaction timers (for the CANCEL and 2xx-retransmission guards).
    pub timers: TimerConfig,
    /// Status-code mapping of this trunk.
    pub outcomes: OutcomeMap,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutput {
    /// Send a request through a new client transaction.
    Send(Box<Message>),
    /// Send an ACK for a 2xx straight to the transport (no transaction).
    SendAck(Box<Message>),
    /// Send a 2xx to a re-INVITE straight to the transport (a retransmission; the first copy
    /// goes through the server transaction with `Respond`).
    Resend(Box<Message>),
    /// Answer a request through its server transaction.
    Respond {
        /// The server transaction.
        tx: TxId,
        /// The response.
        response: Box<Message>,
    },
    /// Tell the call's owner.
    Event(CallEvent),
}

/// What happened, for the call's owner (media, script, records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// A provisional response (180 Ringing, 183 Session Progress).
    Progress {
        /// Status code.
        code: u16,
    },
    /// Early media negotiated (183 with SDP): play and record it, classify announcements.
    EarlyMedia(Negotiated),
    /// Answered: media negotiated.
    Answered(Negotiated),
    /// The peer changed the media (re-INVITE: hold, unhold, new address).
    MediaUpdated(Negotiated),
    /// A DTMF digit sent with SIP INFO (`application/dtmf-relay`).
    InfoDtmf(char),
    /// The transfer target's progress (NOTIFY with `message/sipfrag`).
    TransferProgress {
        /// Status code of the transferee's INVITE.
        code: u16,
    },
    /// The call is over; nothing more will come.
    Ended(Outcome),
}

/// Why a transfer could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Only a confirmed dialog can be transferred or re-negotiated.
    #[error("the call is not answered")]
    NotAnswered,
    /// A transfer is already in progress.
    #[error("a transfer is already in progress")]
    TransferPending,
    /// The target is not a URI.
    #[error("transfer target is not a valid URI")]
    BadTarget,
}

/// The INVITE in flight.
#[derive(Debug, Clone)]
struct Invite {
    request: Message,
    cseq: u32,
    target: String,
    auth_tries: u8,
    redirects: u8,
}

/// A confirmed dialog (RFC 3261 §12).
#[derive(Debug, Clone)]
struct Dialog {
    local_tag: String,
    remote_tag: String,
    remote_target: String,
    route_set: Vec<String>,
    to_value: String,
    local_cseq: u32,
    remote_cseq: Option<u32>,
    media: Negotiated,
    /// The ACK for our INVITE's 2xx, re-sent on every 2xx retransmission.
    ack: Message,
    timer: Option<SessionTimer>,
    /// Our 2xx to a re-INVITE, retransmitted until the ACK (§13.3.1.4).
    pending_2xx: Option<Retransmit2xx>,
    /// A target refresh we sent and await (re-INVITE for the session timer).
    refresh_cseq: Option<u32>,
    transfer: Option<u32>,
}

#[derive(Debug, Clone)]
struct Retransmit2xx {
    response: Message,
    at: Instant,
    interval: Duration,
    until: Instant,
}

/// RFC 4028 session timer of a confirmed dialog.
#[derive(Debug, Clone, Copy)]
struct SessionTimer {
    interval: u32,
    we_refresh: bool,
    /// When to refresh (we) or when the peer's refresh is overdue (they).
    at: Instant,
}

impl SessionTimer {
    fn new(now: Instant, interval: u32, we_refresh: bool) -> Self {
        let secs = u64::from(interval);
        // §10: the refresher refreshes at half the interval; the other side gives up at
        // interval − min(32, interval/3).
        let at = if we_refresh {
            now + Duration::from_secs(secs / 2)
        } else {
            now + Duration::from_secs(secs - (secs / 3).min(32))
        };
        Self {
            interval,
            we_refresh,
            at,
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    /// INVITE sent, no provisional response yet. A CANCEL must wait for one (RFC 3261 §9.1),
    /// so a hang-up or ring timeout here is remembered in `cancel_pending`.
    Calling {
        invite: Invite,
        ring_deadline: Instant,
        cancel_pending: Option<Ending>,
    },
    /// A provisional response arrived (possibly from several forks).
    Early {
        invite: Invite,
        ring_deadline: Instant,
    },
    /// CANCEL sent; waiting for the INVITE's final response.
    Cancelling {
        invite: Invite,
        ending: Ending,
        give_up: Instant,
    },
    /// Answered.
    Confirmed(Box<Dialog>),
    /// BYE sent; waiting for its response (or its timeout).
    Terminating {
        dialog: Box<Dialog>,
        bye_cseq: u32,
        outcome: Outcome,
    },
    /// Over.
    Ended,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            Self::Calling { .. } => "calling",
            Self::Early { .. } => "early",
            Self::Cancelling { .. } => "cancelling",
            Self::Confirmed(_) => "confirmed",
            Self::Terminating { .. } => "terminating",
            Self::Ended => "ended",
        }
    }
}

/// One outbound call.
#[derive(Debug)]
pub struct OutboundCall {
    cfg: CallConfig,
    ids: IdGen,
    call_id: String,
    local_tag: String,
    state: State,
    out: VecDeque<CallOutput>,
    answered_at: Option<Instant>,
}

const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, NOTIFY";

impl OutboundCall {
    /// A call that has not started yet. `seed` feeds tags, branches and client nonces.
    pub fn new(cfg: CallConfig, seed: u64, call_id_host: &str) -> Self {
        let mut ids = IdGen::new(seed);
        let call_id = format!("{}@{call_id_host}", ids.token());
        let local_tag = ids.token();
        Self {
            cfg,
            ids,
            call_id,
            local_tag,
            state: State::Ended,
            out: VecDeque::new(),
            answered_at: None,
        }
    }

    /// The Call-ID (the shell routes messages to this call by it).
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Whether the call is over.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    /// When the call was answered.
    pub fn answered_at(&self) -> Option<Instant> {
        self.answered_at
    }

    /// The next output, until `None`.
    pub fn poll_output(&mut self) -> Option<CallOutput> {
        self.out.pop_front()
    }

    fn transition(&mut self, to: State) {
        log::debug!(from = self.state.name(), to = to.name(); "call transition");
        self.state = to;
    }

    fn emit(&mut self, e: CallEvent) {
        self.out.push_back(CallOutput::Event(e));
    }

    fn send(&mut self, m: Message) {
        self.out.push_back(CallOutput::Send(Box::new(m)));
    }

    fn end(&mut self, outcome: Outcome) {
        self.transition(State::Ended);
        self.emit(CallEvent::Ended(outcome));
    }

    fn local_party(&self) -> String {
        let na = match &self.cfg.from_display {
            Some(d) => format!("\"{}\" <{}>", syntax::escape_quoted(d), self.cfg.from_uri),
            None => format!("<{}>", self.cfg.from_uri),
        };
        format!("{na};tag={}", self.local_tag)
    }

    fn via(&mut self) -> String {
        format!(
            "SIP/2.0/{} {};branch={};rport",
            self.cfg.via_transport,
            self.cfg.via_sent_by,
            self.ids.branch()
        )
    }

    fn build_invite(
        &mut self,
        _now: Instant,
        target: &str,
        cseq: u32,
        auth: Option<(&str, String)>,
    ) -> Option<Message> {
        let via = self.via();
        let mut b = Builder::request(Method::Invite, target)
            .header("Via", &via)
            .header("Max-Forwards", "70")
            .header("From", &self.local_party())
            .header("To", &format!("<{}>", self.cfg.to_uri))
            .header("Call-ID", &self.call_id)
            .header("CSeq", &format!("{cseq} INVITE"))
            .header("Contact", &format!("<{}>", self.cfg.contact));
        for r in &self.cfg.route {
            b = b.header("Route", r);
        }
        b = b
            .header("Allow", ALLOW)
            .header("Supported", "timer")
            .header("User-Agent", &self.cfg.user_agent);
        if let Some(se) = self.cfg.session_expires {
            b = b
                .header("Session-Expires", &se.to_string())
                .header("Min-SE", "90");
        }
        if let Some((name, value)) = auth {
            b = b.header(name, &value);
        }
        b.body("application/sdp", sdp::offer(&self.cfg.sdp))
            .build()
            .ok()
    }

    /// Sends the INVITE.
    pub fn start(&mut self, now: Instant) {
        let target = self.cfg.request_uri.clone();
        let Some(request) = self.build_invite(now, &target, 1, None) else {
            let o = self.cfg.outcomes.outcome(Ending::Final {
                code: 400,
                q850: None,
            });
            self.end(o);
            return;
        };
        self.send(request.clone());
        let invite = Invite {
            request,
            cseq: 1,
            target,
            auth_tries: 0,
            redirects: 0,
        };
        self.transition(State::Calling {
            invite,
            ring_deadline: now + self.cfg.ring_timeout,
            cancel_pending: None,
        });
    }

    fn invite_mut(&mut self) -> Option<&mut Invite> {
        match &mut self.state {
            State::Calling { invite, .. }
            | State::Early { invite, .. }
            | State::Cancelling { invite, .. } => Some(invite),
            _ => None,
        }
    }

    /// Feeds a response to one of this call's requests (matched by the transaction layer).
    pub fn handle_response(&mut self, now: Instant, resp: Message) {
        let method = resp.essentials.cseq_method.clone();
        match method {
            Method::Invite => self.invite_response(now, resp),
            Method::Bye => self.bye_response(resp),
            Method::Refer => self.refer_response(resp),
            // CANCEL's 200/481 says nothing the INVITE's final response will not.
            _ => {}
        }
    }

    fn invite_response(&mut self, now: Instant, resp: Message) {
        let code = resp.status().unwrap_or(0);
        let cseq = resp.essentials.cseq;
        if let State::Confirmed(d) | State::Terminating { dialog: d, .. } = &self.state
            && d.refresh_cseq == Some(cseq)
        {
            self.refresh_response(now, resp);
            return;
        }
        // A 2xx for an INVITE we no longer wait for: a fork's late answer or a retransmission.
        if (200..300).contains(&code)
            && !matches!(
                self.state,
                State::Calling { .. } | State::Early { .. } | State::Cancelling { .. }
            )
        {
            self.late_2xx(now, &resp);
            return;
        }
        let Some(inv) = self.invite_mut() else { return };
        if inv.cseq != cseq {
            return;
        }
        match code {
            100..=199 => self.provisional(now, resp),
            200..=299 => self.answered(now, resp),
            401 | 407 => self.challenged(now, resp),
            300..=399 => self.redirected(now, resp),
            422 => self.interval_too_small(now, resp),
            _ => self.failed(resp),
        }
    }

    fn provisional(&mut self, now: Instant, resp: Message) {
        let code = resp.status().unwrap_or(0);
        // Any provisional response, 100 included, allows a CANCEL that was waiting.
        if let State::Calling {
            invite,
            cancel_pending: Some(ending),
            ..
        } = &self.state
        {
            let (invite, ending) = (invite.clone(), ending.clone());
            self.cancel(now, invite, ending);
            return;
        }
        if code == 100 {
            return;
        }
        if let State::Calling {
            invite,
            ring_deadline,
            ..
        } = &self.state
        {
            let (invite, ring_deadline) = (invite.clone(), *ring_deadline);
            self.transition(State::Early {
                invite,
                ring_deadline,
            });
        }
        self.emit(CallEvent::Progress { code });
        if !resp.body.is_empty() {
            match sdp::read_answer(&self.cfg.sdp, &resp.body) {
                Ok(n) => self.emit(CallEvent::EarlyMedia(n)),
                Err(e) => log::debug!(error:% = e; "early media SDP unusable"),
            }
        }
    }

    fn ack_for(&mut self, resp: &Message, route_set: &[String], target: &str) -> Option<Message> {
        let via = self.via();
        let cseq = resp.essentials.cseq;
        let mut b = Builder::request(Method::Ack, target)
            .header("Via", &via)
            .header("Max-Forwards", "70")
            .header("From", &self.local_party())
            .header("To", resp.header("To").unwrap_or_default())
            .header("Call-ID", &self.call_id)
            .header("CSeq", &format!("{cseq} ACK"));
        for r in route_set {
            b = b.header("Route", r);
        }
        b.build().ok()
    }

    /// Target and route set from a 2xx (RFC 3261 §12.1.2): Record-Route reversed, Contact.
    fn dialog_routing(resp: &Message, fallback: &str) -> (String, Vec<String>) {
        let mut route: Vec<String> = resp
            .header_values("Record-Route")
            .flat_map(|v| syntax::name_addr_list(v).unwrap_or_default())
            .map(|na| na.canonical())
            .collect();
        route.reverse();
        let target = resp
            .header("Contact")
            .and_then(|c| syntax::name_addr_list(c).ok())
            .and_then(|l| l.into_iter().next())
            .map_or_else(|| fallback.to_owned(), |na| na.uri);
        // §12.2.1.1 strict routing: a first route without `lr` becomes the Request-URI.
        (target, route)
    }

    fn request_target(target: &str, route: &[String]) -> (String, Vec<String>) {
        let strict = route
            .first()
            .and_then(|r| syntax::name_addr_list(r).ok())
            .and_then(|l| l.into_iter().next())
            .filter(|na| !na.uri.contains(";lr"));
        match strict {
            Some(first) => {
                let mut rest: Vec<String> = route[1..].to_vec();
                rest.push(format!("<{target}>"));
                (first.uri, rest)
            }
            None => (target.to_owned(), route.to_vec()),
        }
    }

    fn answered(&mut self, now: Instant, resp: Message) {
        let invite = match &self.state {
            State::Calling { invite, .. }
            | State::Early { invite, .. }
            | State::Cancelling { invite, .. } => invite.clone(),
            _ => return,
        };
        let (remote_target, route_set) = Self::dialog_routing(&resp, &invite.target);
        let (ack_uri, ack_route) = Self::request_target(&remote_target, &route_set);
        let Some(ack) = self.ack_for(&resp, &ack_route, &ack_uri) else {
            return;
        };
        self.out
            .push_back(CallOutput::SendAck(Box::new(ack.clone())));
        let remote_tag = resp.essentials.to.tag().unwrap_or_default().to_owned();
        let media = match sdp::read_answer(&self.cfg.sdp, &resp.body) {
            Ok(n) => n,
            Err(e) => {
                // §13.2.2.4: acknowledge, then end a session we cannot use.
                log::warn!(error:% = e; "answer SDP unusable; hanging up");
                let dialog =
                    self.new_dialog(&resp, remote_tag, remote_target, route_set, ack, None);
                let outcome = self.cfg.outcomes.outcome(Ending::MediaMismatch);
                self.send_bye(now, dialog, outcome);
                return;
            }
        };
        let cancelled = matches!(self.state, State::Cancelling { .. });
        let timer = self.negotiate_timer(now, &resp);
        let dialog = self.new_dialog(
            &resp,
            remote_tag,
            remote_target,
            route_set,
            ack,
            Some(media),
        );
        let mut dialog = dialog;
        dialog.timer = timer;
        if cancelled {
            // The 2xx crossed our CANCEL: the call was answered, so end it with a BYE.
            let ending = match &self.state {
                State::Cancelling { ending, .. } => ending.clone(),
                _ => Ending::Cancelled,
            };
            let outcome = self.cfg.outcomes.outcome(ending);
            self.send_bye(now, dialog, outcome);
            return;
        }
        self.answered_at = Some(now);
        self.transition(State::Confirmed(Box::new(dialog)));
        self.emit(CallEvent::Answered(media));
    }

    fn new_dialog(
        &self,
        resp: &Message,
        remote_tag: String,
        remote_target: String,
        route_set: Vec<String>,
        ack: Message,
        media: Option<Negotiated>,
    ) -> Dialog {
        let fallback = Negotiated {
            remote: None,
            codec: self
                .cfg
                .sdp
                .codecs
                .first()
                .copied()
                .unwrap_or(sdp::Codec::Pcma),
            dtmf_pt: None,
            ptime_ms: 20,
            direction: sdp::Direction::Inactive,
        };
        Dialog {
            local_tag: self.local_tag.clone(),
            remote_tag,
            remote_target,
            route_set,
            to_value: resp.header("To").unwrap_or_default().to_owned(),
            local_cseq: resp.essentials.cseq,
            remote_cseq: None,
            media: media.unwrap_or(fallback),
            ack,
            timer: None,
            pending_2xx: None,
            refresh_cseq: None,
            transfer: None,
        }
    }

    fn negotiate_timer(&self, now: Instant, resp: &Message) -> Option<SessionTimer> {
        let se = resp.header("Session-Expires")?;
        let mut parts = se.split(';').map(str::trim);
        let interval: u32 = parts.next()?.parse().ok()?;
        let refresher = parts
            .find_map(|p| p.strip_prefix("refresher="))
            .unwrap_or("uac")
            .to_ascii_lowercase();
        // RFC 4028 §7.2: without `timer` in the 2xx's Require, the UAC refreshes.
        let we_refresh = refresher == "uac";
        Some(SessionTimer::new(now, interval.max(90), we_refresh))
    }

    /// A 2xx outside the INVITE transaction's lifetime (RFC 6026) or from another fork.
    fn late_2xx(&mut self, now: Instant, resp: &Message) {
        let tag = resp.essentials.to.tag().unwrap_or_default().to_owned();
        let ours = match &self.state {
            State::Confirmed(d) | State::Terminating { dialog: d, .. } => {
                (d.remote_tag == tag).then(|| d.ack.clone())
            }
            _ => None,
        };
        match ours {
            Some(ack) => self.out.push_back(CallOutput::SendAck(Box::new(ack))),
            None => {
                // §13.2.2.4: acknowledge a second fork's 2xx and end that dialog at once.
                let (target, route) = Self::dialog_routing(resp, &self.cfg.request_uri);
                let (uri, route_hdrs) = Self::request_target(&target, &route);
                if let Some(ack) = self.ack_for(resp, &route_hdrs, &uri) {
                    self.out
                        .push_back(CallOutput::SendAck(Box::new(ack.clone())));
                    let mut d = self.new_dialog(resp, tag, target, route, ack, None);
                    d.local_cseq = d.local_cseq.max(resp.essentials.cseq) + 1;
                    if let Some(bye) = self.in_dialog(&mut d, Method::Bye, now) {
                        self.send(bye);
                    }
                }
            }
        }
    }

    fn challenged(&mut self, now: Instant, resp: Message) {
        let code = resp.status().unwrap_or(0);
        let header = if code == 401 {
            "WWW-Authenticate"
        } else {
            "Proxy-Authenticate"
        };
        let answer_name = if code == 401 {
            "Authorization"
        } else {
            "Proxy-Authorization"
        };
        let challenge = auth::best_challenge(resp.header_values(header));
        let (Some(creds), Ok(ch)) = (self.cfg.credentials.clone(), challenge) else {
            let o = self.cfg.outcomes.outcome(Ending::AuthFailed);
            self.end(o);
            return;
        };
        let Some(inv) = self.invite_mut().cloned() else {
            return;
        };
        // One try per nonce unless the server says the nonce was stale (RFC 7616 §3.3).
        if inv.auth_tries >= 2 && !ch.stale {
            let o = self.cfg.outcomes.outcome(Ending::AuthFailed);
            self.end(o);
            return;
        }
        let value = self.digest(&creds, &ch, "INVITE", &inv.target);
        self.replace_invite(now, inv.target, Some((answer_name, value)));
        if let Some(i) = self.invite_mut() {
            i.auth_tries += 1;
        }
    }

    fn digest(&mut self, creds: &Credentials, ch: &Challenge, method: &str, uri: &str) -> String {
        let cnonce = self.ids.token();
        auth::authorization(
            creds,
            ch,
            Attempt {
                method,
                uri,
                nc: 1,
                cnonce: &cnonce,
            },
        )
    }

    /// Sends a new INVITE to `target` (new branch, CSeq + 1) in place of the current one.
    fn replace_invite(&mut self, now: Instant, target: String, auth: Option<(&str, String)>) {
        let Some(cseq) = self.invite_mut().map(|i| i.cseq + 1) else {
            return;
        };
        let Some(request) = self.build_invite(now, &target, cseq, auth) else {
            return;
        };
        self.send(request.clone());
        if let Some(i) = self.invite_mut() {
            i.request = request;
            i.cseq = cseq;
            i.target = target;
        }
    }

    fn redirected(&mut self, now: Instant, resp: Message) {
        let Some(inv) = self.invite_mut().cloned() else {
            return;
        };
        let next = resp
            .header("Contact")
            .and_then(|c| syntax::name_addr_list(c).ok())
            .and_then(|l| {
                l.into_iter()
                    .map(|na| na.uri)
                    .find(|u| matches!(syntax::uri_scheme(u).as_str(), "sip" | "sips"))
            });
        let Some(next) = next.filter(|_| inv.redirects < self.cfg.max_redirects) else {
            let ending = if self.cfg.max_redirects == 0 {
                Ending::Final {
                    code: resp.status().unwrap_or(300),
                    q850: None,
                }
            } else {
                Ending::RedirectLoop
            };
            let o = self.cfg.outcomes.outcome(ending);
            self.end(o);
            return;
        };
        self.replace_invite(now, next, None);
        if let Some(i) = self.invite_mut() {
            i.redirects += 1;
            i.auth_tries = 0;
        }
    }

    fn interval_too_small(&mut self, now: Instant, resp: Message) {
        // RFC 4028 §6: retry with the peer's Min-SE.
        let min_se: Option<u32> = resp
            .header("Min-SE")
            .and_then(|v| v.split(';').next()?.trim().parse().ok());
        let Some(min_se) = min_se.filter(|m| self.cfg.session_expires.is_none_or(|se| *m > se))
        else {
            self.failed(resp);
            return;
        };
        self.cfg.session_expires = Some(min_se);
        let Some(target) = self.invite_mut().map(|i| i.target.clone()) else {
            return;
        };
        self.replace_invite(now, target, None);
    }

    fn failed(&mut self, resp: Message) {
        let code = resp.status().unwrap_or(0);
        let ending = match &self.state {
            // A 487 after our CANCEL: the ending is why we cancelled.
            State::Cancelling { ending, .. } if code == 487 => ending.clone(),
            _ => Ending::Final {
                code,
                q850: q850_cause(resp.header_values("Reason")),
            },
        };
        let o = self.cfg.outcomes.outcome(ending);
        self.end(o);
    }

    /// Builds an in-dialog request (RFC 3261 §12.2.1.1), taking the next local CSeq.
    fn in_dialog(&mut self, d: &mut Dialog, method: Method, _now: Instant) -> Option<Message> {
        d.local_cseq += 1;
        let (uri, route) = Self::request_target(&d.remote_target, &d.route_set);
        let via = self.via();
        let mut b = Builder::request(method.clone(), &uri)
            .header("Via", &via)
            .header("Max-Forwards", "70")
            .header("From", &self.local_party())
            .header("To", &d.to_value)
            .header("Call-ID", &self.call_id)
            .header("CSeq", &format!("{} {method}", d.local_cseq));
        for r in &route {
            b = b.header("Route", r);
        }
        if matches!(method, Method::Invite | Method::Refer | Method::Update) {
            b = b.header("Contact", &format!("<{}>", self.cfg.contact));
        }
        b = b.header("User-Agent", &self.cfg.user_agent);
        b.build().ok()
    }

    /// Ends the call because its session timer lapsed (RFC 4028 §10): BYE, hung up by us.
    fn end_session_timer(&mut self, now: Instant, dialog: Dialog) {
        let o = self.cfg.outcomes.outcome(Ending::Hangup {
            by: HangupBy::System,
            cause: "session_timer",
        });
        self.send_bye(now, dialog, o);
    }

    fn send_bye(&mut self, now: Instant, mut dialog: Dialog, outcome: Outcome) {
        match self.in_dialog(&mut dialog, Method::Bye, now) {
            Some(bye) => {
                let bye_cseq = bye.essentials.cseq;
                self.send(bye);
                self.transition(State::Terminating {
                    dialog: Box::new(dialog),
                    bye_cseq,
                    outcome,
                });
            }
            None => self.end(outcome),
        }
    }

    fn bye_response(&mut self, resp: Message) {
        if resp.status().is_some_and(|c| c < 200) {
            return;
        }
        if let State::Terminating {
            bye_cseq, outcome, ..
        } = &self.state
            && *bye_cseq == resp.essentials.cseq
        {
            let o = outcome.clone();
            self.end(o);
        }
    }

    /// The shell reports that the transport failed under one of this call's requests: like a
    /// timeout, but the call's outcome says `transport_error`.
    pub fn handle_transport_error(&mut self, now: Instant, method: &Method, cseq: u32) {
        let waiting_invite = matches!(&self.state, State::Calling { invite, .. } | State::Early { invite, .. } if invite.cseq == cseq);
        if *method == Method::Invite && waiting_invite {
            let o = self.cfg.outcomes.outcome(Ending::TransportError);
            self.end(o);
        } else {
            self.handle_request_timeout(now, method, cseq);
        }
    }

    /// The shell reports that a client transaction of this call timed out (Timer B or F).
    pub fn handle_request_timeout(&mut self, now: Instant, method: &Method, cseq: u32) {
        match (&self.state, method) {
            (
                State::Calling {
                    invite,
                    cancel_pending,
                    ..
                },
                Method::Invite,
            ) if invite.cseq == cseq => {
                // No response at all; a hang-up that was waiting to CANCEL keeps its reason.
                let ending = match cancel_pending {
                    Some(Ending::Cancelled) => Ending::Cancelled,
                    _ => Ending::NoResponse,
                };
                let o = self.cfg.outcomes.outcome(ending);
                self.end(o);
            }
            (State::Early { invite, .. }, Method::Invite) if invite.cseq == cseq => {
                let o = self.cfg.outcomes.outcome(Ending::NoResponse);
                self.end(o);
            }
            (State::Cancelling { invite, ending, .. }, Method::Invite) if invite.cseq == cseq => {
                let o = self.cfg.outcomes.outcome(ending.clone());
                self.end(o);
            }
            (
                State::Terminating {
                    bye_cseq, outcome, ..
                },
                Method::Bye,
            ) if *bye_cseq == cseq => {
                // §15.1.1: a BYE that gets no answer still ends the dialog.
                let o = outcome.clone();
                self.end(o);
            }
            (State::Confirmed(d), Method::Invite) if d.refresh_cseq == Some(cseq) => {
                // A session refresh that got no answer: the session is gone (RFC 4028 §10).
                let d = (**d).clone();
                self.end_session_timer(now, d);
            }
            _ => {}
        }
    }

    /// Cancels a ringing call, or hangs up an answered one.
    pub fn hangup(&mut self, now: Instant, cause: &'static str) {
        match &mut self.state {
            State::Calling { cancel_pending, .. } => *cancel_pending = Some(Ending::Cancelled),
            State::Early { invite, .. } => {
                let invite = invite.clone();
                self.cancel(now, invite, Ending::Cancelled);
            }
            State::Confirmed(d) => {
                let d = (**d).clone();
                let o = self.cfg.outcomes.outcome(Ending::Hangup {
                    by: HangupBy::Robot,
                    cause,
                });
                self.send_bye(now, d, o);
            }
            _ => {}
        }
    }

    fn cancel(&mut self, now: Instant, invite: Invite, ending: Ending) {
        // §9.1: CANCEL copies the INVITE's Request-URI, top Via (same branch), Call-ID,
        // To, From, CSeq number and Route.
        let req = &invite.request;
        let mut b = Builder::request(Method::Cancel, &invite.target)
            .header("Via", req.header("Via").unwrap_or_default())
            .header("Max-Forwards", "70")
            .header("From", req.header("From").unwrap_or_default())
            .header("To", req.header("To").unwrap_or_default())
            .header("Call-ID", &self.call_id)
            .header("CSeq", &format!("{} CANCEL", invite.cseq));
        for r in req.header_values("Route") {
            b = b.header("Route", r);
        }
        if let Ok(cancel) = b.build() {
            self.send(cancel);
        }
        let give_up = now + 64 * self.cfg.timers.t1;
        self.transition(State::Cancelling {
            invite,
            ending,
            give_up,
        });
    }

    /// Transfers the answered call to `target` (blind transfer, RFC 3515).
    pub fn transfer(&mut self, now: Instant, target: &str) -> Result<(), CallError> {
        syntax::check_uri(target, true).map_err(|_| CallError::BadTarget)?;
        let State::Confirmed(d) = &mut self.state else {
            return Err(CallError::NotAnswered);
        };
        if d.transfer.is_some() {
            return Err(CallError::TransferPending);
        }
        let mut dialog = (**d).clone();
        let Some(refer) = self.in_dialog(&mut dialog, Method::Refer, now) else {
            return Err(CallError::BadTarget);
        };
        let refer = Builder::from_message(&refer)
            .header("Refer-To", &format!("<{target}>"))
            .header("Referred-By", &format!("<{}>", self.cfg.from_uri))
            .build()
            .map_err(|_| CallError::BadTarget)?;
        dialog.transfer = Some(refer.essentials.cseq);
        self.send(refer);
        self.state = State::Confirmed(Box::new(dialog));
        Ok(())
    }

    fn refer_response(&mut self, resp: Message) {
        let code = resp.status().unwrap_or(0);
        if code < 200 {
            return;
        }
        if let State::Confirmed(d) = &mut self.state
            && d.transfer == Some(resp.essentials.cseq)
            && code >= 300
        {
            d.transfer = None;
            self.emit(CallEvent::TransferProgress { code });
        }
    }

    /// Feeds an in-dialog request that arrived with server transaction `tx`.
    pub fn handle_request(&mut self, now: Instant, tx: TxId, req: Message) {
        let respond = |s: &mut Self, code: u16, reason: &str, extra: &[(&str, &str)]| {
            let mut b = Builder::response_to(&req, code, reason, Some(&s.local_tag));
            for (k, v) in extra {
                b = b.header(k, v);
            }
            if let Ok(r) = b.build() {
                s.out.push_back(CallOutput::Respond {
                    tx,
                    response: Box::new(r),
                });
            }
        };
        let dialog_ok = match &self.state {
            State::Confirmed(d) | State::Terminating { dialog: d, .. } => {
                req.essentials.to.tag() == Some(d.local_tag.as_str())
                    && req.essentials.from.tag() == Some(d.remote_tag.as_str())
            }
            _ => false,
        };
        let method = req.method().cloned().unwrap_or(Method::Ack);
        if !dialog_ok {
            // A BYE or re-INVITE before the 2xx reached us, or for a dead dialog.
            respond(self, 481, "Call/Transaction Does Not Exist", &[]);
            return;
        }
        // §12.2.2: a lower CSeq than the last one is out of order.
        if let State::Confirmed(d) = &mut self.state {
            if d.remote_cseq.is_some_and(|c| req.essentials.cseq < c) {
                respond(self, 500, "Server Internal Error", &[("Retry-After", "1")]);
                return;
            }
            d.remote_cseq = Some(req.essentials.cseq);
        }
        match method {
            Method::Bye => {
                respond(self, 200, "OK", &[]);
                let o = match &self.state {
                    State::Terminating { outcome, .. } => outcome.clone(),
                    _ => self.cfg.outcomes.outcome(Ending::Hangup {
                        by: HangupBy::Customer,
                        cause: "bye",
                    }),
                };
                self.end(o);
            }
            Method::Invite => self.reinvite(now, tx, &req),
            Method::Update => {
                // A session refresh without SDP (RFC 4028 §7.4 via UPDATE).
                let se = self.refreshed(now, &req);
                respond(
                    self,
                    200,
                    "OK",
                    &se.iter()
                        .map(|v| ("Session-Expires", v.as_str()))
                        .collect::<Vec<_>>(),
                );
            }
            Method::Options => respond(
                self,
                200,
                "OK",
                &[("Allow", ALLOW), ("Accept", "application/sdp")],
            ),
            Method::Info => {
                respond(self, 200, "OK", &[]);
                if let Some(d) = dtmf_relay(&req) {
                    self.emit(CallEvent::InfoDtmf(d));
                }
            }
            Method::Notify => {
                respond(self, 200, "OK", &[]);
                self.transfer_notify(now, &req);
            }
            _ => respond(self, 405, "Method Not Allowed", &[("Allow", ALLOW)]),
        }
    }

    /// Resets the session timer on a refresh from the peer; returns the Session-Expires to echo.
    fn refreshed(&mut self, now: Instant, req: &Message) -> Option<String> {
        let State::Confirmed(d) = &mut self.state else {
            return None;
        };
        let t = d.timer?;
        let interval = req
            .header("Session-Expires")
            .and_then(|v| v.split(';').next()?.trim().parse::<u32>().ok())
            .unwrap_or(t.interval)
            .max(90);
        d.timer = Some(SessionTimer::new(now, interval, t.we_refresh));
        Some(format!(
            "{interval};refresher={}",
            if t.we_refresh { "uas" } else { "uac" }
        ))
    }

    fn reinvite(&mut self, now: Instant, tx: TxId, req: &Message) {
        let pending = matches!(&self.state, State::Confirmed(d) if d.pending_2xx.is_some() || d.refresh_cseq.is_some());
        if pending {
            // §14.2: an offer while ours is outstanding.
            if let Ok(r) = Builder::response_to(req, 491, "Request Pending", None).build() {
                self.out.push_back(CallOutput::Respond {
                    tx,
                    response: Box::new(r),
                });
            }
            return;
        }
        let se = self.refreshed(now, req);
        let (code, reason, body, media) = if req.body.is_empty() {
            // An offerless re-INVITE: we offer in the 2xx (§14.2).
            (200, "OK", Some(sdp::offer(&self.cfg.sdp)), None)
        } else {
            match sdp::answer_offer(&self.cfg.sdp, &req.body) {
                Ok((n, body)) => (200, "OK", Some(body), Some(n)),
                Err(_) => (488, "Not Acceptable Here", None, None),
            }
        };
        let mut b = Builder::response_to(req, code, reason, None)
            .header("Contact", &format!("<{}>", self.cfg.contact));
        if let Some(se) = &se {
            b = b.header("Session-Expires", se).header("Require", "timer");
        }
        if let Some(body) = body {
            b = b.body("application/sdp", body);
        }
        let Ok(resp) = b.build() else { return };
        self.out.push_back(CallOutput::Respond {
            tx,
            response: Box::new(resp.clone()),
        });
        if code == 200 {
            let t1 = self.cfg.timers.t1;
            if let State::Confirmed(d) = &mut self.state {
                // A re-INVITE may change the remote target (§12.2.2).
                if let Some(c) = req
                    .header("Contact")
                    .and_then(|c| syntax::name_addr_list(c).ok())
                    .and_then(|l| l.into_iter().next())
                {
                    d.remote_target = c.uri;
                }
                d.pending_2xx = Some(Retransmit2xx {
                    response: resp,
                    at: now + t1,
                    interval: t1,
                    until: now + 64 * t1,
                });
                if let Some(n) = media {
                    d.media = n;
                }
            }
            if let Some(n) = media {
                self.emit(CallEvent::MediaUpdated(n));
            }
        }
    }

    /// The ACK for our 2xx to a re-INVITE (from the transaction layer's `Ack` event).
    pub fn handle_ack(&mut self, _now: Instant, ack: &Message) {
        if let State::Confirmed(d) = &mut self.state
            && d.pending_2xx
                .as_ref()
                .is_some_and(|p| p.response.essentials.cseq == ack.essentials.cseq)
        {
            d.pending_2xx = None;
        }
    }

    fn transfer_notify(&mut self, now: Instant, req: &Message) {
        let Some(code) = std::str::from_utf8(&req.body)
            .ok()
            .and_then(|b| b.lines().next())
            .and_then(|l| l.strip_prefix("SIP/2.0 "))
            .and_then(|l| l.get(..3))
            .and_then(|c| c.parse::<u16>().ok())
        else {
            return;
        };
        self.emit(CallEvent::TransferProgress { code });
        if (200..300).contains(&code)
            && let State::Confirmed(d) = &self.state
        {
            // Transferred: the customer talks to the agent now; our leg ends.
            let d = (**d).clone();
            let o = self.cfg.outcomes.outcome(Ending::Hangup {
                by: HangupBy::Robot,
                cause: "transferred",
            });
            self.send_bye(now, d, o);
        } else if code >= 300
            && let State::Confirmed(d) = &mut self.state
        {
            d.transfer = None;
        }
    }

    fn refresh_response(&mut self, now: Instant, resp: Message) {
        let code = resp.status().unwrap_or(0);
        if code < 200 {
            return;
        }
        let ack = if (200..300).contains(&code) {
            let State::Confirmed(d) = &self.state else {
                return;
            };
            let (uri, route) = Self::request_target(&d.remote_target, &d.route_set);
            self.ack_for(&resp, &route, &uri)
        } else {
            None
        };
        if let Some(a) = ack {
            self.out.push_back(CallOutput::SendAck(Box::new(a)));
        }
        let timer = self.negotiate_timer(now, &resp);
        let State::Confirmed(d) = &mut self.state else {
            return;
        };
        d.refresh_cseq = None;
        match code {
            200..=299 => {
                if let Some(t) = timer {
                    d.timer = Some(t);
                } else if let Some(t) = d.timer {
                    d.timer = Some(SessionTimer::new(now, t.interval, t.we_refresh));
                }
            }
            // 491: glare; the peer's own re-INVITE will refresh. Others: the dialog is gone.
            491 => {}
            408 | 481 => {
                let d = (**d).clone();
                self.end_session_timer(now, d);
            }
            _ => {}
        }
    }

    /// The earliest instant at which [`OutboundCall::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Calling {
                ring_deadline,
                cancel_pending: None,
                ..
            }
            | State::Early { ring_deadline, .. } => Some(*ring_deadline),
            State::Calling { .. } => None,
            State::Cancelling { give_up, .. } => Some(*give_up),
            State::Confirmed(d) => {
                let timer = d.timer.filter(|_| d.refresh_cseq.is_none()).map(|t| t.at);
                let resend = d.pending_2xx.as_ref().map(|p| p.at.min(p.until));
                [timer, resend].into_iter().flatten().min()
            }
            State::Terminating { .. } | State::Ended => None,
        }
    }

    /// Fires what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.state {
            State::Calling {
                ring_deadline,
                cancel_pending,
                ..
            } if now >= *ring_deadline => {
                // Nothing heard yet: Timer B decides; a late provisional gets cancelled.
                cancel_pending.get_or_insert(Ending::RingTimeout);
            }
            State::Early {
                invite,
                ring_deadline,
            } if now >= *ring_deadline => {
                let invite = invite.clone();
                self.cancel(now, invite, Ending::RingTimeout);
            }
            State::Cancelling {
                ending, give_up, ..
            } if now >= *give_up => {
                // §9.1: no final response to the INVITE after CANCEL; give up on it.
                let o = self.cfg.outcomes.outcome(ending.clone());
                self.end(o);
            }
            State::Confirmed(d) => {
                let t2 = self.cfg.timers.t2;
                let mut resend = None;
                let mut no_ack = false;
                if let Some(p) = &mut d.pending_2xx {
                    if now >= p.until {
                        no_ack = true;
                    } else if now >= p.at {
                        p.interval = (p.interval * 2).min(t2);
                        p.at = now + p.interval;
                        resend = Some(p.response.clone());
                    }
                }
                if no_ack {
                    // §13.3.1.4: no ACK for our 2xx within 64·T1 — the session is dead.
                    let d = (**d).clone();
                    let o = self.cfg.outcomes.outcome(Ending::Hangup {
                        by: HangupBy::System,
                        cause: "no_ack",
                    });
                    self.send_bye(now, d, o);
                    return;
                }
                if let Some(r) = resend {
                    self.out.push_back(CallOutput::Resend(Box::new(r)));
                }
                self.session_timer(now);
            }
            _ => {}
        }
    }

    fn session_timer(&mut self, now: Instant) {
        let State::Confirmed(d) = &self.state else {
            return;
        };
        let Some(t) = d.timer.filter(|t| now >= t.at && d.refresh_cseq.is_none()) else {
            return;
        };
        let mut dialog = (**d).clone();
        if t.we_refresh {
            let Some(reinvite) = self.in_dialog(&mut dialog, Method::Invite, now) else {
                return;
            };
            let refresh = Builder::from_message(&reinvite)
                .header("Session-Expires", &format!("{};refresher=uac", t.interval))
                .header("Supported", "timer")
                .body("application/sdp", sdp::offer(&self.cfg.sdp))
                .build();
            if let Ok(r) = refresh {
                dialog.refresh_cseq = Some(r.essentials.cseq);
                self.send(r);
                self.state = State::Confirmed(Box::new(dialog));
            }
        } else {
            // RFC 4028 §10: the refresher missed its refresh; end the session.
            log::info!(interval = t.interval; "session refresh overdue; ending the call");
            self.end_session_timer(now, dialog);
        }
    }
}

/// The digit of an `application/dtmf-relay` INFO body (`Signal=5`).
fn dtmf_relay(req: &Message) -> Option<char> {
    let ct = req.header("Content-Type")?;
    if !ct
        .to_ascii_lowercase()
        .starts_with("application/dtmf-relay")
    {
        return None;
    }
    std::str::from_utf8(&req.body).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("signal") {
            return None;
        }
        v.trim()
            .chars()
            .next()
            .filter(|c| c.is_ascii_digit() || "*#ABCD".contains(*c))
    })
}
