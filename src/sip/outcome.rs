//! Call outcomes and the status codes of Chinese outbound-call platforms.
//!
//! Every call ends with exactly one [`Outcome`]: how it ended (a final response, a timer, a
//! BYE, a command), who hung up, and its [`StatusCode`]. The mapping from SIP responses and
//! Q.850 causes (RFC 3326 `Reason`) to status codes differs between carriers, so it is a table
//! with defaults that each trunk's config may override (docs/status-codes.md).

use std::collections::BTreeMap;

/// The call status codes (呼叫状态码) operators and CRMs expect.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u8", into = "u8")]
pub enum StatusCode {
    /// 0 待呼叫: not called yet.
    Waiting = 0,
    /// 1 已接通: answered.
    Answered = 1,
    /// 2 线路故障: trunk or network failure.
    LineFault = 2,
    /// 3 拒接: the callee rejected the call.
    Rejected = 3,
    /// 4 无人接听: rang without answer.
    NoAnswer = 4,
    /// 5 空号: the number does not exist.
    EmptyNumber = 5,
    /// 6 关机: the phone is off or out of coverage.
    PoweredOff = 6,
    /// 7 停机: the line is suspended.
    Suspended = 7,
    /// 8 占线: busy.
    Busy = 8,
    /// 9 呼入限制: the callee does not accept calls (barring).
    CallInRestricted = 9,
    /// 10 欠费: arrears.
    Arrears = 10,
    /// 11 黑名单: blocked by a blacklist (ours or the carrier's).
    Blacklisted = 11,
    /// 12 呼损: lost in the network (congestion).
    CallLoss = 12,
}

impl From<StatusCode> for u8 {
    fn from(s: StatusCode) -> u8 {
        s as u8
    }
}

impl TryFrom<u8> for StatusCode {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        Ok(match v {
            0 => Self::Waiting,
            1 => Self::Answered,
            2 => Self::LineFault,
            3 => Self::Rejected,
            4 => Self::NoAnswer,
            5 => Self::EmptyNumber,
            6 => Self::PoweredOff,
            7 => Self::Suspended,
            8 => Self::Busy,
            9 => Self::CallInRestricted,
            10 => Self::Arrears,
            11 => Self::Blacklisted,
            12 => Self::CallLoss,
            other => return Err(format!("{other} is not a status code; allowed: 0 to 12")),
        })
    }
}

/// Who ended an answered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HangupBy {
    /// vaultcall (script end, max duration, command).
    Robot,
    /// The customer (BYE from the far end).
    Customer,
    /// Neither: a failure or a timer.
    System,
}

/// How a call attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// A final non-2xx response to the INVITE.
    Final {
        /// SIP status.
        code: u16,
        /// Q.850 cause from a `Reason` header, if any.
        q850: Option<u16>,
    },
    /// No response at all within Timer B.
    NoResponse,
    /// The connection to the trunk could not be made or broke (TCP/TLS).
    TransportError,
    /// We cancelled after ringing too long.
    RingTimeout,
    /// We cancelled on command (operator, shutdown).
    Cancelled,
    /// Answered, then ended by a BYE (ours or theirs) or a session-timer expiry.
    Hangup {
        /// Who.
        by: HangupBy,
        /// Why (e.g. `bye`, `session_timer`, `max_duration`, `script_end`).
        cause: &'static str,
    },
    /// Redirected more often than allowed, or to nowhere usable.
    RedirectLoop,
    /// The peer's SDP had no codec we speak.
    MediaMismatch,
    /// Authentication failed (wrong credentials).
    AuthFailed,
    /// Blocked before dialling (blacklist / suppression list).
    Blocked,
    /// An early-media announcement was recognised (空号/关机/停机/…); filled by the speech issue.
    Announcement(StatusCode),
}

/// The final record of a call attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// How it ended.
    pub ending: Ending,
    /// Its status code.
    pub status: StatusCode,
    /// Who hung up.
    pub hangup_by: HangupBy,
    /// A short cause for the record (`sip_486`, `q850_17`, `timer_b`, `bye`, …).
    pub cause: String,
}

/// The mapping table; [`OutcomeMap::default`] holds vaultcall's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeMap {
    /// SIP final status → code.
    pub sip: BTreeMap<u16, StatusCode>,
    /// Q.850 cause → code (takes precedence over the SIP status when a `Reason` is present).
    pub q850: BTreeMap<u16, StatusCode>,
}

impl Default for OutcomeMap {
    fn default() -> Self {
        use StatusCode as S;
        let sip = [
            (402, S::Arrears),
            (403, S::CallInRestricted),
            (404, S::EmptyNumber),
            (408, S::NoAnswer),
            (410, S::EmptyNumber),
            (480, S::PoweredOff),
            (484, S::EmptyNumber),
            (486, S::Busy),
            (487, S::NoAnswer),
            (488, S::LineFault),
            (500, S::LineFault),
            (502, S::LineFault),
            (503, S::CallLoss),
            (504, S::LineFault),
            (600, S::Busy),
            (603, S::Rejected),
            (604, S::EmptyNumber),
            (606, S::LineFault),
        ]
        .into_iter()
        .collect();
        // ITU-T Q.850 cause values.
        let q850 = [
            (1, S::EmptyNumber),       // unallocated number
            (3, S::EmptyNumber),       // no route to destination
            (17, S::Busy),             // user busy
            (18, S::NoAnswer),         // no user responding
            (19, S::NoAnswer),         // no answer from user
            (20, S::PoweredOff),       // subscriber absent
            (21, S::Rejected),         // call rejected
            (22, S::EmptyNumber),      // number changed
            (27, S::PoweredOff),       // destination out of order
            (28, S::EmptyNumber),      // invalid number format
            (34, S::CallLoss),         // no circuit available
            (38, S::LineFault),        // network out of order
            (41, S::CallLoss),         // temporary failure
            (42, S::CallLoss),         // switching equipment congestion
            (44, S::CallLoss),         // requested channel not available
            (55, S::CallInRestricted), // incoming calls barred within CUG
        ]
        .into_iter()
        .collect();
        Self { sip, q850 }
    }
}

/// Reads the Q.850 cause from `Reason` header values (RFC 3326: `Q.850;cause=17;text="..."`).
pub fn q850_cause<'a>(reasons: impl Iterator<Item = &'a str>) -> Option<u16> {
    reasons.flat_map(|v| v.split(',')).find_map(|r| {
        let mut parts = r.split(';').map(str::trim);
        if !parts.next()?.eq_ignore_ascii_case("Q.850") {
            return None;
        }
        parts.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("cause")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
    })
}

impl OutcomeMap {
    /// The outcome of an ending.
    pub fn outcome(&self, ending: Ending) -> Outcome {
        use StatusCode as S;
        let (status, hangup_by, cause) = match &ending {
            Ending::Final { code, q850 } => {
                let by_q850 = q850.and_then(|c| self.q850.get(&c).copied());
                // Anything unmapped is a failure of the line, not of the callee.
                let status = by_q850
                    .or_else(|| self.sip.get(code).copied())
                    .unwrap_or(S::LineFault);
                let cause = match q850 {
                    Some(c) if by_q850.is_some() => format!("q850_{c}"),
                    _ => format!("sip_{code}"),
                };
                (status, HangupBy::System, cause)
            }
            Ending::NoResponse => (S::LineFault, HangupBy::System, "timer_b".to_owned()),
            Ending::TransportError => {
                (S::LineFault, HangupBy::System, "transport_error".to_owned())
            }
            Ending::RingTimeout => (S::NoAnswer, HangupBy::Robot, "ring_timeout".to_owned()),
            Ending::Cancelled => (S::CallLoss, HangupBy::Robot, "cancelled".to_owned()),
            Ending::Hangup { by, cause } => (S::Answered, *by, (*cause).to_owned()),
            Ending::RedirectLoop => (S::LineFault, HangupBy::System, "redirect_limit".to_owned()),
            Ending::MediaMismatch => (S::LineFault, HangupBy::Robot, "media_mismatch".to_owned()),
            Ending::AuthFailed => (S::LineFault, HangupBy::System, "auth_failed".to_owned()),
            Ending::Blocked => (S::Blacklisted, HangupBy::System, "blocked".to_owned()),
            Ending::Announcement(s) => (*s, HangupBy::Robot, "announcement".to_owned()),
        };
        Outcome {
            ending,
            status,
            hangup_by,
            cause,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_cover_the_common_answers() {
        let m = OutcomeMap::default();
        let code = |c| {
            m.outcome(Ending::Final {
                code: c,
                q850: None,
            })
            .status
        };
        assert_eq!(code(486), StatusCode::Busy);
        assert_eq!(code(603), StatusCode::Rejected);
        assert_eq!(code(404), StatusCode::EmptyNumber);
        assert_eq!(code(480), StatusCode::PoweredOff);
        assert_eq!(code(503), StatusCode::CallLoss);
        assert_eq!(code(499), StatusCode::LineFault);
        assert_eq!(m.outcome(Ending::RingTimeout).status, StatusCode::NoAnswer);
        assert_eq!(m.outcome(Ending::NoResponse).cause, "timer_b");
    }

    #[test]
    fn q850_reason_takes_precedence() {
        let m = OutcomeMap::default();
        let cause = q850_cause(
            [
                "SIP;cause=200;text=\"x\"",
                "Q.850 ; cause=17 ;text=\"User busy\"",
            ]
            .into_iter(),
        );
        assert_eq!(cause, Some(17));
        let o = m.outcome(Ending::Final {
            code: 480,
            q850: Some(17),
        });
        assert_eq!((o.status, o.cause.as_str()), (StatusCode::Busy, "q850_17"));
        let o = m.outcome(Ending::Final {
            code: 480,
            q850: Some(99),
        });
        assert_eq!(
            (o.status, o.cause.as_str()),
            (StatusCode::PoweredOff, "sip_480")
        );
    }

    #[test]
    fn status_codes_round_trip_and_reject_unknown() {
        for v in 0..=12u8 {
            assert_eq!(u8::from(StatusCode::try_from(v).unwrap()), v);
        }
        assert!(StatusCode::try_from(13).is_err());
    }
}
