//! Registration with a trunk's registrar (RFC 3261 §10), sans-IO: REGISTER with digest
//! authentication, refresh before expiry, `423 Interval Too Brief`, retry with exponential
//! backoff and jitter after a failure, and unregistering (`Expires: 0`) on shutdown.
//!
//! One Call-ID for the whole life of the binding and a CSeq that grows with every REGISTER
//! (§10.2.4), so the registrar sees refreshes of one binding rather than new ones.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::IdGen;
use super::auth::{self, Attempt, Credentials};
use super::message::{Builder, Message, Method};
use super::syntax;

/// What a registration needs.
#[derive(Debug, Clone)]
pub struct RegConfig {
    /// Request-URI: `sip:<registrar domain>`.
    pub registrar: String,
    /// Address of record (To and From).
    pub aor: String,
    /// Our Contact URI.
    pub contact: String,
    /// Via sent-by (`ip:port`).
    pub via_sent_by: String,
    /// Transport token for Via.
    pub via_transport: &'static str,
    /// Requested binding lifetime in seconds.
    pub expires: u32,
    /// Digest credentials.
    pub credentials: Option<Credentials>,
    /// First retry delay after a failure; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// `User-Agent` header.
    pub user_agent: String,
}

/// Where the registration stands (for `vaultcall trunk status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegStatus {
    /// Not started, or unregistered.
    Unregistered,
    /// A REGISTER is in flight.
    Registering,
    /// Bound until the instant.
    Registered {
        /// Binding expiry.
        until: Instant,
    },
    /// The last attempt failed; next try at the instant.
    Failed {
        /// SIP status of the failure (408 for a timeout).
        code: u16,
        /// Next attempt.
        retry_at: Instant,
    },
}

/// Events for the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegEvent {
    /// Bound for this many seconds.
    Registered {
        /// Granted lifetime.
        expires: u32,
    },
    /// An attempt failed with this status (408: no answer).
    Failed {
        /// Status.
        code: u16,
    },
    /// The binding was removed.
    Unregistered,
}

/// Outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegOutput {
    /// Send through a client transaction.
    Send(Box<Message>),
    /// Tell the owner.
    Event(RegEvent),
}

#[derive(Debug, Clone)]
enum State {
    Idle,
    Registering {
        cseq: u32,
        expires: u32,
        auth_tries: u8,
    },
    Registered {
        until: Instant,
        refresh_at: Instant,
    },
    Failed {
        code: u16,
        retry_at: Instant,
    },
    Unregistering {
        cseq: u32,
    },
}

/// One trunk's registration.
#[derive(Debug)]
pub struct Registration {
    cfg: RegConfig,
    ids: IdGen,
    call_id: String,
    from_tag: String,
    cseq: u32,
    state: State,
    failures: u32,
    out: VecDeque<RegOutput>,
}

impl Registration {
    /// A registration that has not started.
    pub fn new(cfg: RegConfig, seed: u64, call_id_host: &str) -> Self {
        let mut ids = IdGen::new(seed);
        let call_id = format!("reg-{}@{call_id_host}", ids.token());
        let from_tag = ids.token();
        Self {
            cfg,
            ids,
            call_id,
            from_tag,
            cseq: 0,
            state: State::Idle,
            failures: 0,
            out: VecDeque::new(),
        }
    }

    /// The Call-ID (the shell routes responses by it).
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Whether no REGISTER is in flight (shutdown waits for this after `unregister`).
    pub fn settled(&self) -> bool {
        !matches!(
            self.state,
            State::Registering { .. } | State::Unregistering { .. }
        )
    }

    /// Current status.
    pub fn status(&self) -> RegStatus {
        match &self.state {
            State::Idle | State::Unregistering { .. } => RegStatus::Unregistered,
            State::Registering { .. } => RegStatus::Registering,
            State::Registered { until, .. } => RegStatus::Registered { until: *until },
            State::Failed { code, retry_at } => RegStatus::Failed {
                code: *code,
                retry_at: *retry_at,
            },
        }
    }

    /// The next output, until `None`.
    pub fn poll_output(&mut self) -> Option<RegOutput> {
        self.out.pop_front()
    }

    fn register(&mut self, expires: u32, auth: Option<(&'static str, String)>, auth_tries: u8) {
        self.cseq += 1;
        let via = format!(
            "SIP/2.0/{} {};branch={};rport",
            self.cfg.via_transport,
            self.cfg.via_sent_by,
            self.ids.branch()
        );
        let mut b = Builder::request(Method::Register, &self.cfg.registrar)
            .header("Via", &via)
            .header("Max-Forwards", "70")
            .header("From", &format!("<{}>;tag={}", self.cfg.aor, self.from_tag))
            .header("To", &format!("<{}>", self.cfg.aor))
            .header("Call-ID", &self.call_id)
            .header("CSeq", &format!("{} REGISTER", self.cseq))
            .header("Contact", &format!("<{}>", self.cfg.contact))
            .header("Expires", &expires.to_string())
            .header("User-Agent", &self.cfg.user_agent);
        if let Some((name, value)) = auth {
            b = b.header(name, &value);
        }
        if let Ok(m) = b.build() {
            self.out.push_back(RegOutput::Send(Box::new(m)));
        }
        self.state = if expires == 0 {
            State::Unregistering { cseq: self.cseq }
        } else {
            State::Registering {
                cseq: self.cseq,
                expires,
                auth_tries,
            }
        };
    }

    /// Sends the first REGISTER.
    pub fn start(&mut self, _now: Instant) {
        self.register(self.cfg.expires, None, 0);
    }

    /// Removes the binding (shutdown).
    pub fn unregister(&mut self, _now: Instant) {
        if matches!(
            self.state,
            State::Registered { .. } | State::Registering { .. }
        ) {
            self.register(0, None, 0);
        } else {
            self.state = State::Idle;
        }
    }

    fn fail(&mut self, now: Instant, code: u16) {
        self.failures += 1;
        let exp = self.failures.saturating_sub(1).min(16);
        let base = self
            .cfg
            .min_backoff
            .saturating_mul(1 << exp)
            .min(self.cfg.max_backoff);
        // Up to 25 % jitter so that many appliances do not retry in step.
        let jitter_ms = self.ids.next_u64() % (base.as_millis() as u64 / 4 + 1);
        let retry_at = now + base + Duration::from_millis(jitter_ms);
        self.state = State::Failed { code, retry_at };
        self.out
            .push_back(RegOutput::Event(RegEvent::Failed { code }));
    }

    /// Feeds a response to one of our REGISTERs.
    pub fn handle_response(&mut self, now: Instant, resp: Message) {
        let code = resp.status().unwrap_or(0);
        if code < 200 {
            return;
        }
        match self.state.clone() {
            State::Unregistering { cseq } if cseq == resp.essentials.cseq => {
                if matches!(code, 401 | 407) {
                    if let Some(a) = self.answer(&resp, code) {
                        self.register(0, Some(a), 1);
                        return;
                    }
                }
                self.state = State::Idle;
                self.out.push_back(RegOutput::Event(RegEvent::Unregistered));
            }
            State::Registering {
                cseq,
                expires,
                auth_tries,
            } if cseq == resp.essentials.cseq => match code {
                200..=299 => {
                    let granted = self.granted(&resp).unwrap_or(expires).max(1);
                    let secs = u64::from(granted);
                    // Refresh early enough to survive a few retransmissions (Timer F).
                    let lead = if secs < 120 { secs / 2 } else { 60 };
                    self.failures = 0;
                    self.state = State::Registered {
                        until: now + Duration::from_secs(secs),
                        refresh_at: now + Duration::from_secs(secs - lead),
                    };
                    self.out
                        .push_back(RegOutput::Event(RegEvent::Registered { expires: granted }));
                }
                401 | 407 => {
                    let stale = auth::best_challenge(resp.header_values(challenge_header(code)))
                        .is_ok_and(|c| c.stale);
                    match self.answer(&resp, code) {
                        Some(a) if auth_tries == 0 || stale => {
                            self.register(expires, Some(a), auth_tries + 1)
                        }
                        _ => self.fail(now, code),
                    }
                }
                423 => {
                    // §10.2.8: retry with the registrar's minimum.
                    let min: Option<u32> = resp
                        .header("Min-Expires")
                        .and_then(|v| v.trim().parse().ok());
                    match min.filter(|m| *m > expires) {
                        Some(m) => {
                            // Later refreshes must ask for at least this much too.
                            self.cfg.expires = m;
                            self.register(m, None, 0);
                        }
                        None => self.fail(now, code),
                    }
                }
                _ => self.fail(now, code),
            },
            _ => {}
        }
    }

    fn answer(&mut self, resp: &Message, code: u16) -> Option<(&'static str, String)> {
        let creds = self.cfg.credentials.clone()?;
        let ch = auth::best_challenge(resp.header_values(challenge_header(code))).ok()?;
        let cnonce = self.ids.token();
        let uri = self.cfg.registrar.clone();
        let value = auth::authorization(
            &creds,
            &ch,
            Attempt {
                method: "REGISTER",
                uri: &uri,
                nc: 1,
                cnonce: &cnonce,
            },
        );
        Some((
            if code == 401 {
                "Authorization"
            } else {
                "Proxy-Authorization"
            },
            value,
        ))
    }

    /// The lifetime the registrar granted our contact (§10.2.4: the Contact's `expires`
    /// parameter, else the Expires header).
    fn granted(&self, resp: &Message) -> Option<u32> {
        let ours = resp
            .header_values("Contact")
            .flat_map(|v| syntax::name_addr_list(v).unwrap_or_default())
            .find(|na| same_contact(&na.uri, &self.cfg.contact))
            .and_then(|na| {
                syntax::param(&na.params, "expires").and_then(|p| p.value.as_deref()?.parse().ok())
            });
        ours.or_else(|| resp.header("Expires")?.trim().parse().ok())
    }

    /// A REGISTER got no response (Timer F).
    pub fn handle_request_timeout(&mut self, now: Instant, cseq: u32) {
        match self.state {
            State::Registering { cseq: c, .. } if c == cseq => self.fail(now, 408),
            State::Unregistering { cseq: c } if c == cseq => {
                self.state = State::Idle;
                self.out.push_back(RegOutput::Event(RegEvent::Unregistered));
            }
            _ => {}
        }
    }

    /// The next instant with work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Registered { refresh_at, .. } => Some(*refresh_at),
            State::Failed { retry_at, .. } => Some(*retry_at),
            _ => None,
        }
    }

    /// Refreshes or retries when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Registered { refresh_at, .. } if now >= refresh_at => {
                self.register(self.cfg.expires, None, 0)
            }
            State::Failed { retry_at, .. } if now >= retry_at => {
                self.register(self.cfg.expires, None, 0)
            }
            _ => {}
        }
    }
}

fn challenge_header(code: u16) -> &'static str {
    if code == 401 {
        "WWW-Authenticate"
    } else {
        "Proxy-Authenticate"
    }
}

/// Contact URIs compare by user, host and port (registrars often add or reorder parameters).
fn same_contact(a: &str, b: &str) -> bool {
    let key = |u: &str| u.split(';').next().unwrap_or(u).to_ascii_lowercase();
    key(a) == key(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RegConfig {
        RegConfig {
            registrar: "sip:127.0.0.1".into(),
            aor: "sip:vc@127.0.0.1".into(),
            contact: "sip:vc@127.0.0.1:5060".into(),
            via_sent_by: "127.0.0.1:5060".into(),
            via_transport: "UDP",
            expires: 300,
            credentials: Some(Credentials {
                username: "vc".into(),
                password: "pw".into(),
            }),
            min_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(600),
            user_agent: "vaultcall".into(),
        }
    }

    fn sent(r: &mut Registration) -> Message {
        match r.poll_output() {
            Some(RegOutput::Send(m)) => *m,
            other => panic!("expected a REGISTER, got {other:?}"),
        }
    }

    fn reply(req: &Message, code: u16, extra: &[(&str, &str)]) -> Message {
        let mut b = Builder::response_to(req, code, "X", Some("reg"));
        for (k, v) in extra {
            b = b.header(k, v);
        }
        b.build().unwrap()
    }

    #[test]
    fn challenge_then_register_then_refresh_with_growing_cseq() {
        let t0 = crate::time::SystemClock.mono();
        let mut r = Registration::new(cfg(), 1, "h");
        r.start(t0);
        let first = sent(&mut r);
        assert_eq!(first.header("Expires"), Some("300"));
        r.handle_response(
            t0,
            reply(
                &first,
                401,
                &[(
                    "WWW-Authenticate",
                    "Digest realm=\"r\", nonce=\"n1\", qop=\"auth\"",
                )],
            ),
        );
        let second = sent(&mut r);
        assert!(
            second
                .header("Authorization")
                .unwrap()
                .starts_with("Digest username=\"vc\"")
        );
        assert_eq!(
            (second.essentials.cseq, second.essentials.call_id.as_str()),
            (2, first.essentials.call_id.as_str())
        );
        r.handle_response(
            t0,
            reply(
                &second,
                200,
                &[(
                    "Contact",
                    "<sip:vc@127.0.0.1:5060;transport=udp>;expires=120",
                )],
            ),
        );
        assert_eq!(
            r.poll_output(),
            Some(RegOutput::Event(RegEvent::Registered { expires: 120 }))
        );
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        r.handle_timeout(t0 + Duration::from_secs(60));
        assert_eq!(sent(&mut r).essentials.cseq, 3);
    }

    use crate::time::Clock;

    #[test]
    fn wrong_password_backs_off_and_retries() {
        let t0 = crate::time::SystemClock.mono();
        let mut r = Registration::new(cfg(), 2, "h");
        r.start(t0);
        let ch = [("WWW-Authenticate", "Digest realm=\"r\", nonce=\"n1\"")];
        let m = sent(&mut r);
        r.handle_response(t0, reply(&m, 401, &ch));
        let m = sent(&mut r);
        r.handle_response(t0, reply(&m, 401, &ch));
        assert_eq!(
            r.poll_output(),
            Some(RegOutput::Event(RegEvent::Failed { code: 401 }))
        );
        let RegStatus::Failed { retry_at, .. } = r.status() else {
            panic!()
        };
        let wait = retry_at - t0;
        assert!(
            wait >= Duration::from_secs(30) && wait <= Duration::from_millis(37_500),
            "{wait:?}"
        );
        r.handle_timeout(retry_at);
        let m = sent(&mut r);
        r.handle_request_timeout(retry_at, m.essentials.cseq);
        let RegStatus::Failed {
            retry_at: next,
            code,
        } = r.status()
        else {
            panic!()
        };
        assert_eq!(code, 408);
        assert!(
            next - retry_at >= Duration::from_secs(60),
            "backoff doubles"
        );
    }

    #[test]
    fn interval_too_brief_and_unregister() {
        let t0 = crate::time::SystemClock.mono();
        let mut r = Registration::new(cfg(), 3, "h");
        r.start(t0);
        let m = sent(&mut r);
        r.handle_response(t0, reply(&m, 423, &[("Min-Expires", "3600")]));
        let m = sent(&mut r);
        assert_eq!(
            m.header("Expires"),
            Some("3600"),
            "retried with the registrar's minimum"
        );
        r.handle_response(t0, reply(&m, 200, &[("Expires", "3600")]));
        assert!(matches!(
            r.poll_output(),
            Some(RegOutput::Event(RegEvent::Registered { expires: 3600 }))
        ));
        r.handle_timeout(t0 + Duration::from_secs(3540));
        assert_eq!(
            sent(&mut r).header("Expires"),
            Some("3600"),
            "refreshes keep the minimum"
        );
        r.unregister(t0);
        let m = sent(&mut r);
        assert_eq!(m.header("Expires"), Some("0"));
        r.handle_response(t0, reply(&m, 200, &[]));
        assert_eq!(
            r.poll_output(),
            Some(RegOutput::Event(RegEvent::Unregistered))
        );
        assert_eq!(r.status(), RegStatus::Unregistered);
    }
}
