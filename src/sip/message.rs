//! SIP message framing and normalisation (RFC 3261 §7, §18.3, §20), in front of rsip.
//!
//! vaultcall parses the message structure itself — start line, folded header lines,
//! whitespace before colons, compact header names, Content-Length rules per transport, the
//! headers every request needs — and hands rsip a canonical text (full header names, one line
//! each) for the typed model. What this layer rejects gets the response RFC 3261 / RFC 4475
//! name (400 with a reason phrase, 505), built from the headers it could read; what cannot be
//! answered (a broken response, a request without a usable Via) is dropped and counted.

use super::syntax::{self, NameAddr, SyntaxError, Via};

/// Largest message accepted (RFC 3261 §18.1.1 keeps UDP messages far below this).
pub const MAX_MESSAGE_BYTES: usize = 65_535;

/// Which transport a message arrived on: it decides the Content-Length rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One message per datagram: a missing Content-Length means "the rest of the datagram";
    /// octets after the body are ignored (RFC 3261 §18.3).
    Datagram,
    /// TCP or TLS: Content-Length is mandatory and delimits the message.
    Stream,
}

/// A request method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE.
    Invite,
    /// ACK.
    Ack,
    /// BYE.
    Bye,
    /// CANCEL.
    Cancel,
    /// OPTIONS.
    Options,
    /// REGISTER.
    Register,
    /// INFO (RFC 6086).
    Info,
    /// UPDATE (RFC 3311).
    Update,
    /// PRACK (RFC 3262).
    Prack,
    /// SUBSCRIBE (RFC 6665).
    Subscribe,
    /// NOTIFY (RFC 6665).
    Notify,
    /// REFER (RFC 3515).
    Refer,
    /// MESSAGE (RFC 3428).
    Message,
    /// PUBLISH (RFC 3903).
    Publish,
    /// Any other token: answered 501.
    Extension(String),
}

impl Method {
    /// Parses a method token (case-sensitive, RFC 3261 §7.1).
    pub fn parse(s: &str) -> Option<Self> {
        if !syntax::is_token(s) {
            return None;
        }
        Some(match s {
            "INVITE" => Self::Invite,
            "ACK" => Self::Ack,
            "BYE" => Self::Bye,
            "CANCEL" => Self::Cancel,
            "OPTIONS" => Self::Options,
            "REGISTER" => Self::Register,
            "INFO" => Self::Info,
            "UPDATE" => Self::Update,
            "PRACK" => Self::Prack,
            "SUBSCRIBE" => Self::Subscribe,
            "NOTIFY" => Self::Notify,
            "REFER" => Self::Refer,
            "MESSAGE" => Self::Message,
            "PUBLISH" => Self::Publish,
            other => Self::Extension(other.to_owned()),
        })
    }

    /// The method's name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Register => "REGISTER",
            Self::Info => "INFO",
            Self::Update => "UPDATE",
            Self::Prack => "PRACK",
            Self::Subscribe => "SUBSCRIBE",
            Self::Notify => "NOTIFY",
            Self::Refer => "REFER",
            Self::Message => "MESSAGE",
            Self::Publish => "PUBLISH",
            Self::Extension(s) => s,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `Method SP Request-URI SP SIP/2.0`.
    Request {
        /// Method.
        method: Method,
        /// Request-URI as written.
        uri: String,
    },
    /// `SIP/2.0 SP Status-Code SP Reason-Phrase`.
    Response {
        /// 100–699.
        code: u16,
        /// Reason phrase (may be empty, may be UTF-8).
        reason: String,
    },
}

/// RFC 3261 §7.3.3 compact forms and the canonical spelling of common header names.
const NAMES: &[(&str, Option<&str>)] = &[
    ("Accept", None),
    ("Accept-Contact", Some("a")),
    ("Allow", None),
    ("Allow-Events", Some("u")),
    ("Authorization", None),
    ("Call-ID", Some("i")),
    ("Contact", Some("m")),
    ("Content-Encoding", Some("e")),
    ("Content-Length", Some("l")),
    ("Content-Type", Some("c")),
    ("CSeq", None),
    ("Event", Some("o")),
    ("Expires", None),
    ("From", Some("f")),
    ("Max-Forwards", None),
    ("Min-Expires", None),
    ("Min-SE", None),
    ("Proxy-Authenticate", None),
    ("Proxy-Authorization", None),
    ("Proxy-Require", None),
    ("Reason", None),
    ("Record-Route", None),
    ("Refer-To", Some("r")),
    ("Referred-By", Some("b")),
    ("Reject-Contact", Some("j")),
    ("Request-Disposition", Some("d")),
    ("Require", None),
    ("Retry-After", None),
    ("Route", None),
    ("RSeq", None),
    ("Session-Expires", Some("x")),
    ("Subject", Some("s")),
    ("Subscription-State", None),
    ("Supported", Some("k")),
    ("To", Some("t")),
    ("Unsupported", None),
    ("User-Agent", None),
    ("Via", Some("v")),
    ("Warning", None),
    ("WWW-Authenticate", None),
];

/// The canonical name of a header field, expanding compact forms; unknown names are kept.
pub fn canonical_name(name: &str) -> String {
    if name.len() == 1 {
        let lower = name.to_ascii_lowercase();
        if let Some((full, _)) = NAMES.iter().find(|(_, c)| *c == Some(lower.as_str())) {
            return (*full).to_owned();
        }
    }
    NAMES
        .iter()
        .find(|(full, _)| full.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_owned(), |(full, _)| (*full).to_owned())
}

/// A header field, name canonicalised, value unfolded and trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Canonical name.
    pub name: String,
    /// Value (one line).
    pub value: String,
}

/// The header fields every transaction needs, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Essentials {
    /// Via entries, topmost first.
    pub vias: Vec<Via>,
    /// From.
    pub from: NameAddr,
    /// To.
    pub to: NameAddr,
    /// Call-ID.
    pub call_id: String,
    /// CSeq number.
    pub cseq: u32,
    /// CSeq method.
    pub cseq_method: Method,
    /// Max-Forwards, if present.
    pub max_forwards: Option<u8>,
}

/// A parsed, checked message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// First line.
    pub start: StartLine,
    /// Header fields in order, canonical names.
    pub headers: Vec<Header>,
    /// Checked essentials.
    pub essentials: Essentials,
    /// Body (exactly Content-Length octets).
    pub body: Vec<u8>,
}

/// What to do with input that is not a usable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Answer with this status; `skeleton` holds the headers a response copies.
    Respond {
        /// 400 or 505 (or 501 for unknown methods whose other headers fail checks).
        status: u16,
        /// Reason phrase explaining what was wrong.
        reason: String,
        /// Headers for the response (RFC 3261 §8.2.6.2).
        skeleton: Box<Skeleton>,
    },
    /// Nothing can be answered (a response, or no usable Via): drop and count.
    Drop {
        /// Why, for the metric and a debug log line (never message content).
        why: &'static str,
    },
}

/// The raw header values a response to a rejected request must copy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Skeleton {
    /// Via values, in order.
    pub vias: Vec<String>,
    /// From value.
    pub from: String,
    /// To value.
    pub to: String,
    /// Call-ID value.
    pub call_id: String,
    /// CSeq value.
    pub cseq: String,
}

impl Skeleton {
    /// Builds the response text with a To tag added if the request's To had none.
    pub fn response(
        &self,
        status: u16,
        reason: &str,
        to_tag: &str,
        extra: &[(&str, &str)],
    ) -> Vec<u8> {
        let mut s = format!("SIP/2.0 {status} {reason}\r\n");
        for v in &self.vias {
            s.push_str(&format!("Via: {v}\r\n"));
        }
        let has_tag = self
            .to
            .to_ascii_lowercase()
            .replace(' ', "")
            .contains(";tag=");
        let to = if self.to.is_empty() || has_tag || status == 100 {
            self.to.clone()
        } else {
            format!("{};tag={to_tag}", self.to)
        };
        // A header missing from the request is missing from the response too (RFC 4475 insuf).
        for (name, value) in [
            ("From", &self.from),
            ("To", &to),
            ("Call-ID", &self.call_id),
            ("CSeq", &self.cseq),
        ] {
            if !value.is_empty() {
                s.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        for (k, v) in extra {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        s.into_bytes()
    }
}

fn drop(why: &'static str) -> Rejection {
    Rejection::Drop { why }
}

/// Splits off the head (start line + headers) at the first empty line.
fn split_head(buf: &[u8]) -> Option<(usize, usize)> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
}

/// Parses the start line strictly: single spaces, no leading or trailing whitespace.
fn start_line(line: &str) -> Result<StartLine, (u16, String)> {
    if let Some(rest) = line.strip_prefix("SIP/") {
        let Some(("2.0", rest)) = rest.split_once(' ') else {
            return Err((0, "bad status line".into()));
        };
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err((0, "bad status code".into()));
        }
        let code: u16 = code
            .parse()
            .map_err(|_| (0, "bad status code".to_owned()))?;
        if !(100..=699).contains(&code) {
            return Err((0, "status code out of range".into()));
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.to_owned(),
        });
    }
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err((400, "Bad Request - malformed Request-Line".into()));
    }
    let Some(method) = Method::parse(parts[0]) else {
        return Err((400, "Bad Request - invalid method".into()));
    };
    if !parts[2].starts_with("SIP/") {
        return Err((400, "Bad Request - malformed Request-Line".into()));
    }
    if parts[2] != "SIP/2.0" {
        return Err((505, "Version Not Supported".into()));
    }
    if syntax::check_uri(parts[1], false).is_err() {
        return Err((400, "Bad Request - malformed Request-URI".into()));
    }
    Ok(StartLine::Request {
        method,
        uri: parts[1].to_owned(),
    })
}

/// Unfolds continuation lines and splits `name SWS ":" value`.
fn header_lines(head: &str) -> Result<Vec<Header>, &'static str> {
    let mut out: Vec<Header> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            let last = out
                .last_mut()
                .ok_or("continuation line before any header")?;
            let cont = line.trim();
            if !cont.is_empty() {
                if !last.value.is_empty() {
                    last.value.push(' ');
                }
                last.value.push_str(cont);
            }
            continue;
        }
        let (name, value) = line.split_once(':').ok_or("header line without a colon")?;
        let name = name.trim_end_matches([' ', '\t']);
        if !syntax::is_token(name) {
            return Err("invalid header name");
        }
        out.push(Header {
            name: canonical_name(name),
            value: value.trim().to_owned(),
        });
    }
    Ok(out)
}

/// Header fields that may appear only once (RFC 3261 §7.3.1, §20).
const SINGLE: &[&str] = &[
    "To",
    "From",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Content-Length",
    "Content-Type",
    "Expires",
];

fn values<'h>(headers: &'h [Header], name: &str) -> impl Iterator<Item = &'h str> {
    headers
        .iter()
        .filter(move |h| h.name == name)
        .map(|h| h.value.as_str())
}

/// The first value of a header.
pub fn first<'h>(headers: &'h [Header], name: &str) -> Option<&'h str> {
    values(headers, name).next()
}

/// Parses one whole message from a datagram or a stream buffer that holds at least one
/// complete message. Returns the message and how many bytes of `buf` it used.
pub fn parse(buf: &[u8], framing: Framing) -> Result<(Message, usize), Rejection> {
    if buf.len() > MAX_MESSAGE_BYTES && framing == Framing::Datagram {
        return Err(drop("oversize"));
    }
    // In a datagram the datagram's end also ends a head that lacks its empty line; that
    // message is malformed, but it can still be answered (RFC 4475 baddn).
    let (head_end, body_start, unterminated) = match split_head(buf) {
        Some((h, b)) => (h, b, false),
        None if framing == Framing::Datagram => {
            let end = buf.strip_suffix(b"\r\n").map_or(buf.len(), <[u8]>::len);
            (end, buf.len(), true)
        }
        None => return Err(drop("no end of headers")),
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| drop("head is not UTF-8"))?;
    let (first_line, rest) = head.split_once("\r\n").unwrap_or((head, ""));
    let headers = match header_lines(rest) {
        Ok(h) => h,
        Err(why) => return Err(drop(why)),
    };
    let skeleton = Skeleton {
        vias: values(&headers, "Via").map(str::to_owned).collect(),
        from: first(&headers, "From").unwrap_or_default().to_owned(),
        to: first(&headers, "To").unwrap_or_default().to_owned(),
        call_id: first(&headers, "Call-ID").unwrap_or_default().to_owned(),
        cseq: first(&headers, "CSeq").unwrap_or_default().to_owned(),
    };
    let is_request = !first_line.starts_with("SIP/");
    // A request can be answered if it has a Via and a CSeq: the client matches the response by
    // branch and CSeq method (RFC 3261 §17.1.3). The Via is copied verbatim; when it does not
    // parse, the transport answers the packet's source address (as rport would, RFC 3581).
    let answerable = is_request && !skeleton.vias.is_empty() && !skeleton.cseq.is_empty();
    let reject = |status: u16, reason: String| {
        if answerable {
            Rejection::Respond {
                status,
                reason,
                skeleton: Box::new(skeleton.clone()),
            }
        } else if is_request {
            drop("unanswerable request")
        } else {
            drop("malformed response")
        }
    };
    let start = start_line(first_line).map_err(|(status, reason)| reject(status, reason))?;
    let bad = |what: &str| reject(400, format!("Bad Request - {what}"));
    if unterminated {
        return Err(bad("no empty line after the header fields"));
    }

    // Content-Length: one value, digits only, within the buffer (RFC 3261 §18.3, §20.14).
    let cls: Vec<&str> = values(&headers, "Content-Length").collect();
    let available = buf.len() - body_start;
    let body_len = match cls.as_slice() {
        [] if framing == Framing::Datagram => available,
        [] => return Err(bad("Content-Length is required on stream transports")),
        [v] => {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("invalid Content-Length"));
            }
            let n: usize = v.parse().map_err(|_| bad("invalid Content-Length"))?;
            if n > MAX_MESSAGE_BYTES {
                return Err(drop("oversize"));
            }
            if n > available {
                return Err(match framing {
                    Framing::Datagram => bad("Content-Length larger than the message"),
                    Framing::Stream => drop("incomplete"),
                });
            }
            n
        }
        _ => return Err(bad("multiple Content-Length values")),
    };
    for name in SINGLE {
        if values(&headers, name).count() > 1 {
            return Err(bad(&format!("multiple {name} header fields")));
        }
    }
    let required = ["Via", "From", "To", "Call-ID", "CSeq"];
    if let Some(missing) = required.iter().find(|n| first(&headers, n).is_none()) {
        return Err(bad(&format!("missing {missing}")));
    }
    let essentials = essentials(&headers).map_err(|SyntaxError(what)| bad(what))?;
    if let StartLine::Request { method, .. } = &start {
        if essentials.cseq_method != *method {
            // RFC 4475 §3.1.2.18: an unknown method is better answered 501 than 400.
            if matches!(method, Method::Extension(_)) {
                return Err(reject(501, "Not Implemented".into()));
            }
            return Err(bad("CSeq method does not match the request method"));
        }
    }
    // RFC 3261 §20.17: SIP dates are always GMT (RFC 4475 §3.1.2.12).
    if let Some(d) = first(&headers, "Date")
        && !d.ends_with(" GMT")
    {
        return Err(bad("Date must be in GMT"));
    }
    // Other headers whose syntax matters to us.
    for name in ["Contact", "Route", "Record-Route"] {
        for v in values(&headers, name) {
            if name == "Contact" && v == "*" {
                continue;
            }
            syntax::name_addr_list(v)
                .map_err(|SyntaxError(what)| bad(&format!("{name}: {what}")))?;
        }
    }
    let body = buf[body_start..body_start + body_len].to_vec();
    let used = match framing {
        Framing::Datagram => buf.len(),
        Framing::Stream => body_start + body_len,
    };
    Ok((
        Message {
            start,
            headers,
            essentials,
            body,
        },
        used,
    ))
}

fn essentials(headers: &[Header]) -> Result<Essentials, SyntaxError> {
    let mut vias = Vec::new();
    for v in values(headers, "Via") {
        vias.extend(syntax::via_list(v)?);
    }
    let from = syntax::single_name_addr(first(headers, "From").unwrap_or_default())?;
    let to = syntax::single_name_addr(first(headers, "To").unwrap_or_default())?;
    let call_id = first(headers, "Call-ID").unwrap_or_default();
    if call_id.is_empty() || !call_id.chars().all(|c| syntax::is_word_char(c) || c == '@') {
        return Err(SyntaxError("invalid Call-ID"));
    }
    let cseq = first(headers, "CSeq").unwrap_or_default();
    let mut parts = cseq.split_whitespace();
    let (Some(num), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SyntaxError("invalid CSeq"));
    };
    if !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SyntaxError("invalid CSeq"));
    }
    // RFC 3261 §8.1.1.5: the sequence number is below 2**31.
    let cseq_num = num
        .parse::<u32>()
        .ok()
        .filter(|n| *n < (1 << 31))
        .ok_or(SyntaxError("CSeq number out of range"))?;
    let cseq_method = Method::parse(method).ok_or(SyntaxError("invalid CSeq method"))?;
    let max_forwards = match first(headers, "Max-Forwards") {
        None => None,
        Some(v) => Some(
            (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse::<u8>().ok())
                .flatten()
                .ok_or(SyntaxError("Max-Forwards out of range"))?,
        ),
    };
    Ok(Essentials {
        vias,
        from,
        to,
        call_id: call_id.to_owned(),
        cseq: cseq_num,
        cseq_method,
        max_forwards,
    })
}

impl Message {
    /// The request method, if a request.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code, if a response.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// The first value of a header (canonical name).
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }

    /// All values of a header, in order.
    pub fn header_values<'m>(&'m self, name: &'m str) -> impl Iterator<Item = &'m str> + 'm {
        values(&self.headers, name)
    }

    /// Canonical text: full header names, one line each, Content-Length recomputed. This is
    /// what rsip parses and what a trace shows.
    pub fn canonical(&self) -> Vec<u8> {
        let mut s = match &self.start {
            StartLine::Request { method, uri } => format!("{method} {uri} SIP/2.0\r\n"),
            StartLine::Response { code, reason } => format!("SIP/2.0 {code} {reason}\r\n"),
        };
        for h in &self.headers {
            if h.name == "Content-Length" {
                continue;
            }
            s.push_str(&h.name);
            s.push_str(": ");
            s.push_str(&h.value);
            s.push_str("\r\n");
        }
        s.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// The typed rsip model of this message, for code that wants rsip's header types.
    pub fn to_rsip(&self) -> Result<rsip::SipMessage, rsip::Error> {
        rsip::SipMessage::try_from(self.canonical())
    }

    /// The response skeleton of a request (Via, From, To, Call-ID, CSeq as received).
    pub fn skeleton(&self) -> Skeleton {
        Skeleton {
            vias: self.header_values("Via").map(str::to_owned).collect(),
            from: self.header("From").unwrap_or_default().to_owned(),
            to: self.header("To").unwrap_or_default().to_owned(),
            call_id: self.essentials.call_id.clone(),
            cseq: self.header("CSeq").unwrap_or_default().to_owned(),
        }
    }
}

/// Builds messages field by field; `build` runs the result through the parser, so vaultcall
/// never sends what it would itself reject.
#[derive(Debug, Clone)]
pub struct Builder {
    start: StartLine,
    headers: Vec<Header>,
    body: Vec<u8>,
}

impl Builder {
    /// A request.
    pub fn request(method: Method, uri: &str) -> Self {
        Self {
            start: StartLine::Request {
                method,
                uri: uri.to_owned(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response to `req` (RFC 3261 §8.2.6.2): Via, From, To, Call-ID and CSeq copied; a To
    /// tag added when the request's To has none (except for 100).
    pub fn response_to(req: &Message, code: u16, reason: &str, to_tag: Option<&str>) -> Self {
        let mut b = Self {
            start: StartLine::Response {
                code,
                reason: reason.to_owned(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        };
        for v in req.header_values("Via") {
            b = b.header("Via", v);
        }
        let to = req.header("To").unwrap_or_default();
        let to = match to_tag {
            Some(tag) if req.essentials.to.tag().is_none() && code != 100 => {
                format!("{to};tag={tag}")
            }
            _ => to.to_owned(),
        };
        b.header("From", req.header("From").unwrap_or_default())
            .header("To", &to)
            .header("Call-ID", &req.essentials.call_id)
            .header("CSeq", req.header("CSeq").unwrap_or_default())
    }

    /// A builder holding an existing message, to add fields to it.
    pub fn from_message(m: &Message) -> Self {
        Self {
            start: m.start.clone(),
            headers: m
                .headers
                .iter()
                .filter(|h| h.name != "Content-Length")
                .cloned()
                .collect(),
            body: m.body.clone(),
        }
    }

    /// Appends a header field.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(Header {
            name: canonical_name(name),
            value: value.to_owned(),
        });
        self
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.headers.retain(|h| h.name != "Content-Type");
        self = self.header("Content-Type", content_type);
        self.body = body;
        self
    }

    /// The message, checked by the parser.
    pub fn build(self) -> Result<Message, Rejection> {
        let mut s = match &self.start {
            StartLine::Request { method, uri } => format!("{method} {uri} SIP/2.0\r\n"),
            StartLine::Response { code, reason } => format!("SIP/2.0 {code} {reason}\r\n"),
        };
        for h in self.headers.iter().filter(|h| h.name != "Content-Length") {
            s.push_str(&format!("{}: {}\r\n", h.name, h.value));
        }
        s.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut bytes = s.into_bytes();
        bytes.extend_from_slice(&self.body);
        parse(&bytes, Framing::Datagram).map(|(m, _)| m)
    }
}

/// Splits a TCP/TLS byte stream into messages (RFC 3261 §18.3): CRLF keep-alives between
/// messages are skipped (RFC 5626 §3.5.1), a message ends after Content-Length body octets.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
}

/// One item out of a stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// A complete message.
    Message(Box<Message>),
    /// A bad message; for a stream, a framing error closes the connection after answering.
    Rejected(Rejection),
    /// A CRLF CRLF keep-alive ping (answer with CRLF).
    Ping,
}

impl StreamFramer {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next item, or `None` if more bytes are needed.
    pub fn next_item(&mut self) -> Option<Framed> {
        if self.buf.starts_with(b"\r\n\r\n") {
            self.buf.drain(..4);
            return Some(Framed::Ping);
        }
        while self.buf.starts_with(b"\r\n")
            && self.buf.len() > 2
            && !self.buf.starts_with(b"\r\n\r\n")
        {
            self.buf.drain(..2);
        }
        if split_head(&self.buf).is_none() {
            if self.buf.len() > MAX_MESSAGE_BYTES {
                self.buf.clear();
                return Some(Framed::Rejected(drop("oversize")));
            }
            return None;
        }
        match parse(&self.buf, Framing::Stream) {
            Ok((m, used)) => {
                self.buf.drain(..used);
                Some(Framed::Message(Box::new(m)))
            }
            Err(Rejection::Drop { why: "incomplete" }) => None,
            Err(r) => {
                // Without a trustworthy Content-Length the stream cannot be resynchronised.
                self.buf.clear();
                Some(Framed::Rejected(r))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &str = "OPTIONS sip:u@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:u@example.com>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn compact_names_expand() {
        assert_eq!(canonical_name("v"), "Via");
        assert_eq!(canonical_name("L"), "Content-Length");
        assert_eq!(canonical_name("cSeQ"), "CSeq");
        assert_eq!(canonical_name("X-Thing"), "X-Thing");
    }

    #[test]
    fn parses_and_canonicalises() {
        let (m, used) = parse(OPTIONS.as_bytes(), Framing::Datagram).unwrap();
        assert_eq!(used, OPTIONS.len());
        assert_eq!(m.method(), Some(&Method::Options));
        assert_eq!(m.essentials.cseq, 1);
        assert_eq!(m.essentials.vias[0].branch(), Some("z9hG4bK1"));
        assert_eq!(m.essentials.from.tag(), Some("1"));
        assert!(m.to_rsip().is_ok());
        let again = parse(&m.canonical(), Framing::Datagram).unwrap().0;
        assert_eq!(again, m);
    }

    use proptest::prelude::*;

    /// Rewrites a one-header-per-line message into an equivalent one: compact names, random
    /// case, whitespace before the colon, values folded over several lines.
    fn rewrite(msg: &str, choices: &[u8]) -> String {
        let (head, body) = msg.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let mut out = format!("{}\r\n", lines.next().unwrap());
        for (i, line) in lines.enumerate() {
            let c = choices.get(i).copied().unwrap_or(0);
            let (name, value) = line.split_once(": ").unwrap();
            let compact = NAMES.iter().find(|(f, _)| *f == name).and_then(|(_, c)| *c);
            let name = match (c % 4, compact) {
                (0, Some(short)) => short.to_owned(),
                (1, _) => name.to_ascii_lowercase(),
                (2, _) => name.to_ascii_uppercase(),
                _ => name.to_owned(),
            };
            let sep = if c & 4 != 0 { " \t: " } else { ": " };
            let value = if c & 8 != 0 {
                value.replacen(' ', "\r\n   ", 1)
            } else {
                value.to_owned()
            };
            out.push_str(&format!("{name}{sep}{value}\r\n"));
        }
        format!("{out}\r\n{body}")
    }

    proptest! {
        #[test]
        fn equivalent_spellings_parse_the_same(choices in proptest::collection::vec(any::<u8>(), 16), cseq in 0u32..(1 << 31), body in "[a-z=0-9 ]{0,40}") {
            let base = format!(
                "INVITE sip:u@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h:5060;branch=z9hG4bK1;rport\r\nFrom: \"A B\" <sip:a@h>;tag=1\r\nTo: <sip:u@example.com>\r\nCall-ID: c1@h\r\nCSeq: {cseq} INVITE\r\nContact: <sip:a@h:5060>\r\nMax-Forwards: 70\r\nSupported: timer\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let (want, _) = parse(base.as_bytes(), Framing::Datagram).unwrap();
            let spelled = rewrite(&base, &choices);
            let (got, used) = parse(spelled.as_bytes(), Framing::Datagram).unwrap();
            prop_assert_eq!(used, spelled.len());
            prop_assert_eq!(&got.essentials, &want.essentials);
            prop_assert_eq!(got.canonical(), want.canonical());
            let mut f = StreamFramer::default();
            for chunk in spelled.as_bytes().chunks(7) {
                f.push(chunk);
            }
            let framed = f.next_item();
            prop_assert!(matches!(framed, Some(Framed::Message(ref m)) if m.canonical() == want.canonical()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes, Framing::Datagram);
            let mut f = StreamFramer::default();
            f.push(&bytes);
            while f.next_item().is_some() {}
        }
    }

    #[test]
    fn stream_framing_splits_messages_and_waits_for_bodies() {
        let mut f = StreamFramer::default();
        let two = format!(
            "\r\n\r\n{OPTIONS}{}",
            OPTIONS
                .replace("Content-Length: 0", "Content-Length: 4")
                .replace("\r\n\r\n", "\r\n\r\nab")
        );
        f.push(two.as_bytes());
        assert_eq!(f.next_item(), Some(Framed::Ping));
        assert!(matches!(f.next_item(), Some(Framed::Message(_))));
        assert_eq!(f.next_item(), None, "body incomplete: 2 of 4 octets");
        f.push(b"cd");
        match f.next_item() {
            Some(Framed::Message(m)) => assert_eq!(m.body, b"abcd"),
            other => panic!("{other:?}"),
        }
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn stream_requires_content_length() {
        let no_cl = OPTIONS.replace("Content-Length: 0\r\n", "");
        let r = parse(no_cl.as_bytes(), Framing::Stream).unwrap_err();
        assert!(matches!(r, Rejection::Respond { status: 400, .. }), "{r:?}");
    }

    #[test]
    fn rejection_response_copies_headers_and_adds_a_tag() {
        let bad = OPTIONS.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
        let Err(Rejection::Respond {
            status,
            reason,
            skeleton,
        }) = parse(bad.as_bytes(), Framing::Datagram)
        else {
            panic!("expected a 400");
        };
        assert_eq!(status, 400);
        let resp = String::from_utf8(skeleton.response(status, &reason, "xyz", &[])).unwrap();
        assert!(
            resp.starts_with("SIP/2.0 400 Bad Request - CSeq method"),
            "{resp}"
        );
        assert!(
            resp.contains("To: <sip:u@example.com>;tag=xyz\r\n"),
            "{resp}"
        );
        assert!(resp.contains("Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"));
        assert!(parse(&resp.into_bytes(), Framing::Datagram).is_ok());
    }
}
