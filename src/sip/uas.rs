//! What the user agent answers to a request that belongs to no dialog or transaction it knows
//! (RFC 3261 §8.2): method, Request-URI scheme, Require, body type and Accept are checked in
//! that order, then the method decides.
//!
//! vaultcall places calls; it does not take them. An inbound INVITE is declined (603), OPTIONS
//! is answered 200 (trunks use it as a keepalive), and in-dialog methods without a dialog get
//! 481.

use super::message::{Message, Method, StartLine};
use super::syntax;

/// Methods vaultcall accepts (inside dialogs it created, or OPTIONS anywhere).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, NOTIFY";
/// Option tags vaultcall supports (RFC 4028 session timers).
pub const SUPPORTED: &[&str] = &["timer"];
/// Body types vaultcall understands.
pub const ACCEPT: &str = "application/sdp";

/// The answer to an out-of-dialog request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Send this response.
    Respond {
        /// Status code.
        status: u16,
        /// Reason phrase.
        reason: &'static str,
        /// Extra header fields (Allow, Unsupported, Accept, Supported).
        headers: Vec<(&'static str, String)>,
    },
    /// Send nothing (ACK).
    Ignore,
}

fn respond(status: u16, reason: &'static str, headers: Vec<(&'static str, String)>) -> Answer {
    Answer::Respond {
        status,
        reason,
        headers,
    }
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn accepts_sdp(accept: &str) -> bool {
    accept
        .split(',')
        .map(media_type)
        .any(|t| t == "application/sdp" || t == "application/*" || t == "*/*")
}

/// Decides the answer to `req` (a request) that matched no transaction or dialog.
pub fn out_of_dialog(req: &Message) -> Answer {
    let StartLine::Request { method, uri } = &req.start else {
        return Answer::Ignore;
    };
    let allow = || vec![("Allow", ALLOW.to_owned())];
    match method {
        Method::Ack => return Answer::Ignore,
        Method::Extension(_) => return respond(501, "Not Implemented", allow()),
        Method::Register
        | Method::Message
        | Method::Subscribe
        | Method::Publish
        | Method::Prack
        | Method::Refer => {
            return respond(405, "Method Not Allowed", allow());
        }
        _ => {}
    }
    if !matches!(syntax::uri_scheme(uri).as_str(), "sip" | "sips" | "tel") {
        return respond(416, "Unsupported URI Scheme", vec![]);
    }
    if *method != Method::Cancel {
        let unsupported: Vec<&str> = req
            .header_values("Require")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !unsupported.is_empty() {
            return respond(
                420,
                "Bad Extension",
                vec![("Unsupported", unsupported.join(", "))],
            );
        }
    }
    if !req.body.is_empty() {
        let ct = req
            .header("Content-Type")
            .map(media_type)
            .unwrap_or_default();
        if ct != "application/sdp" {
            return respond(
                415,
                "Unsupported Media Type",
                vec![("Accept", ACCEPT.to_owned())],
            );
        }
    }
    if *method == Method::Invite
        && let Some(accept) = req.header("Accept")
        && !accepts_sdp(accept)
    {
        return respond(406, "Not Acceptable", vec![("Accept", ACCEPT.to_owned())]);
    }
    match method {
        Method::Options => respond(
            200,
            "OK",
            vec![
                ("Allow", ALLOW.to_owned()),
                ("Accept", ACCEPT.to_owned()),
                ("Supported", SUPPORTED.join(", ")),
            ],
        ),
        Method::Invite => respond(603, "Decline", vec![]),
        _ => respond(481, "Call/Transaction Does Not Exist", vec![]),
    }
}
