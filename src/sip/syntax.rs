//! RFC 3261 §25 grammar pieces the message layer checks itself: tokens, separators with
//! optional whitespace, quoted strings, name-addr / addr-spec, generic parameters, Via.
//!
//! rsip accepts some malformed values and rejects some valid ones (see
//! docs/sip-conformance.md); these scanners decide validity, rsip then gets canonical text.

/// RFC 3261 §25.1 `token` characters.
pub fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

/// A non-empty run of token characters.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// Characters allowed in a `word` (Call-ID): token characters plus `()<>:\"/[]?{}`.
pub fn is_word_char(c: char) -> bool {
    is_token_char(c) || "()<>:\\\"/[]?{}".contains(c)
}

/// Why a value did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError(pub &'static str);

type R<T> = Result<T, SyntaxError>;

/// A cursor over a header value.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// Starts at the beginning of `s`.
    pub fn new(s: &'a str) -> Self {
        Self { s, pos: 0 }
    }

    /// What is left.
    pub fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    /// Whether everything was consumed.
    pub fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    /// The next character, if any.
    pub fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// Skips spaces and tabs (the message layer has already unfolded lines).
    pub fn sws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    /// Consumes `c` (after optional whitespace) if it is next.
    pub fn eat(&mut self, c: char) -> bool {
        let save = self.pos;
        self.sws();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            self.pos = save;
            false
        }
    }

    /// A token (after optional whitespace).
    pub fn token(&mut self) -> R<&'a str> {
        self.sws();
        let start = self.pos;
        while self.peek().is_some_and(is_token_char) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(SyntaxError("expected a token"));
        }
        Ok(&self.s[start..self.pos])
    }

    /// A quoted string (RFC 3261 `quoted-string`), returned unescaped.
    pub fn quoted(&mut self) -> R<String> {
        self.sws();
        if self.bump() != Some('"') {
            return Err(SyntaxError("expected a quoted string"));
        }
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(SyntaxError("unterminated quoted string")),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some(c) if c != '\r' && c != '\n' => out.push(c),
                    _ => return Err(SyntaxError("bad escape in quoted string")),
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// A generic parameter value: a token, a host (IPv6 reference included) or a quoted string.
    fn param_value(&mut self) -> R<String> {
        self.sws();
        match self.peek() {
            Some('"') => self.quoted().map(|q| format!("\"{}\"", escape_quoted(&q))),
            Some('[') => {
                let start = self.pos;
                while let Some(c) = self.bump() {
                    if c == ']' {
                        return Ok(self.s[start..self.pos].to_owned());
                    }
                }
                Err(SyntaxError("unterminated IPv6 reference"))
            }
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|c| is_token_char(c) || c == ':') {
                    self.pos += 1;
                }
                if self.pos == start {
                    return Err(SyntaxError("empty parameter value"));
                }
                Ok(self.s[start..self.pos].to_owned())
            }
        }
    }

    /// `*( SEMI generic-param )`; stops before a `,` or at the end.
    pub fn params(&mut self) -> R<Vec<Param>> {
        let mut out = Vec::new();
        while self.eat(';') {
            let name = self
                .token()
                .map_err(|_| SyntaxError("empty or invalid parameter name"))?;
            let value = if self.eat('=') {
                Some(self.param_value()?)
            } else {
                None
            };
            out.push(Param {
                name: name.to_owned(),
                value,
            });
        }
        Ok(out)
    }
}

/// Escapes `"` and `\` for a quoted string.
pub fn escape_quoted(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A `;name[=value]` parameter; `value` keeps quotes if it was quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Name as written.
    pub name: String,
    /// Value, if any.
    pub value: Option<String>,
}

/// Finds a parameter by case-insensitive name.
pub fn param<'p>(params: &'p [Param], name: &str) -> Option<&'p Param> {
    params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

fn write_params(out: &mut String, params: &[Param]) {
    for p in params {
        out.push(';');
        out.push_str(&p.name);
        if let Some(v) = &p.value {
            out.push('=');
            out.push_str(v);
        }
    }
}

/// Checks a URI's shape: `scheme ":" rest`, no whitespace, no angle brackets; `headers_ok`
/// allows `?headers` (not in a Request-URI, RFC 3261 §19.1.1).
pub fn check_uri(uri: &str, headers_ok: bool) -> R<()> {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(SyntaxError("URI without a scheme"));
    };
    let mut sc = scheme.chars();
    if !sc.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !sc.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err(SyntaxError("invalid URI scheme"));
    }
    if rest.is_empty() || uri.contains(|c: char| c.is_whitespace() || c == '<' || c == '>') {
        return Err(SyntaxError("invalid characters in URI"));
    }
    let sip = scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips");
    if sip {
        // The user part may contain '?' and ';' (RFC 4475 intmeth, semiuri): look after '@'.
        let hostpart = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        if !headers_ok && hostpart.contains('?') {
            return Err(SyntaxError("URI headers are not allowed here"));
        }
        let host = hostpart.split([';', '?']).next().unwrap_or_default();
        if host.is_empty() {
            return Err(SyntaxError("SIP URI without a host"));
        }
    }
    Ok(())
}

/// The scheme of a URI, lower-cased.
pub fn uri_scheme(uri: &str) -> String {
    uri.split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default()
}

/// A `name-addr` or `addr-spec` with header parameters (From, To, Contact, Route, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unescaped.
    pub display: Option<String>,
    /// The URI.
    pub uri: String,
    /// Header parameters (after the URI).
    pub params: Vec<Param>,
}

impl NameAddr {
    /// Canonical text: always `"display" <uri>;params` form.
    pub fn canonical(&self) -> String {
        let mut s = String::new();
        if let Some(d) = &self.display {
            s.push('"');
            s.push_str(&escape_quoted(d));
            s.push_str("\" ");
        }
        s.push('<');
        s.push_str(&self.uri);
        s.push('>');
        write_params(&mut s, &self.params);
        s
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        param(&self.params, "tag").and_then(|p| p.value.as_deref())
    }
}

/// Parses one `name-addr` / `addr-spec` followed by parameters; stops before `,`.
pub fn name_addr(c: &mut Cursor<'_>) -> R<NameAddr> {
    c.sws();
    let display = if c.peek() == Some('"') {
        let d = c.quoted()?;
        c.sws();
        if c.peek() != Some('<') {
            return Err(SyntaxError("display name must be followed by <uri>"));
        }
        Some(d)
    } else {
        // Unquoted display name: tokens separated by whitespace, then '<'. Without a '<'
        // before the first ';' or ',', this is an addr-spec.
        let rest = c.rest();
        let lt = rest.find('<');
        let cut = rest.find([';', ',']).unwrap_or(rest.len());
        match lt {
            Some(i) if i < cut || !rest[..i].contains(':') => {
                let words = rest[..i].trim();
                if !words.is_empty() && !words.split_whitespace().all(is_token) {
                    return Err(SyntaxError(
                        "display name must be tokens or a quoted string",
                    ));
                }
                c.pos += i;
                (!words.is_empty()).then(|| words.split_whitespace().collect::<Vec<_>>().join(" "))
            }
            _ => None,
        }
    };
    let uri = if c.peek() == Some('<') {
        c.pos += 1;
        let rest = c.rest();
        let end = rest.find('>').ok_or(SyntaxError("missing '>'"))?;
        let uri = &rest[..end];
        check_uri(uri, true)?;
        c.pos += end + 1;
        uri.to_owned()
    } else {
        if display.is_some() {
            return Err(SyntaxError("display name without <uri>"));
        }
        c.sws();
        let rest = c.rest();
        let end = rest.find([';', ',', ' ', '\t']).unwrap_or(rest.len());
        let uri = &rest[..end];
        // In addr-spec form, ';' starts header parameters and '?' cannot appear
        // (RFC 3261 §20.10): such a URI must be enclosed in <>.
        check_uri(uri, false)
            .map_err(|_| SyntaxError("a URI with headers or parameters must be enclosed in <>"))?;
        c.pos += end;
        uri.to_owned()
    };
    let params = c.params()?;
    Ok(NameAddr {
        display,
        uri,
        params,
    })
}

/// A comma-separated list of name-addrs (Contact, Route, Record-Route).
pub fn name_addr_list(value: &str) -> R<Vec<NameAddr>> {
    let mut c = Cursor::new(value);
    let mut out = vec![name_addr(&mut c)?];
    while c.eat(',') {
        out.push(name_addr(&mut c)?);
    }
    c.sws();
    if !c.at_end() {
        return Err(SyntaxError("unexpected characters after address"));
    }
    Ok(out)
}

/// Exactly one name-addr (From, To).
pub fn single_name_addr(value: &str) -> R<NameAddr> {
    let mut c = Cursor::new(value);
    let na = name_addr(&mut c)?;
    c.sws();
    if !c.at_end() {
        return Err(SyntaxError("unexpected characters after address"));
    }
    Ok(na)
}

/// One `via-parm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport (`UDP`, `TCP`, `TLS`, … upper-cased).
    pub transport: String,
    /// Host of `sent-by`.
    pub host: String,
    /// Port of `sent-by`.
    pub port: Option<u16>,
    /// Parameters (`branch`, `received`, `rport`, …).
    pub params: Vec<Param>,
}

impl Via {
    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&str> {
        param(&self.params, "branch").and_then(|p| p.value.as_deref())
    }

    /// Canonical text.
    pub fn canonical(&self) -> String {
        let mut s = format!("SIP/2.0/{} {}", self.transport, self.host);
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        write_params(&mut s, &self.params);
        s
    }
}

fn host(c: &mut Cursor<'_>) -> R<String> {
    c.sws();
    let start = c.pos;
    if c.peek() == Some('[') {
        while let Some(ch) = c.bump() {
            if ch == ']' {
                return Ok(c.s[start..c.pos].to_owned());
            }
        }
        return Err(SyntaxError("unterminated IPv6 reference"));
    }
    while c
        .peek()
        .is_some_and(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.')
    {
        c.pos += 1;
    }
    if c.pos == start {
        return Err(SyntaxError("missing host"));
    }
    Ok(c.s[start..c.pos].to_owned())
}

/// Parses a Via header value (one or more comma-separated via-parms).
pub fn via_list(value: &str) -> R<Vec<Via>> {
    let mut c = Cursor::new(value);
    let mut out = Vec::new();
    loop {
        let name = c.token()?;
        if !name.eq_ignore_ascii_case("SIP") || !c.eat('/') {
            return Err(SyntaxError("Via must start with SIP/2.0/"));
        }
        if c.token()? != "2.0" || !c.eat('/') {
            return Err(SyntaxError("Via protocol version must be 2.0"));
        }
        let transport = c.token()?.to_ascii_uppercase();
        let host = host(&mut c)?;
        let port = if c.eat(':') {
            let p = c.token()?;
            Some(
                p.parse::<u16>()
                    .map_err(|_| SyntaxError("invalid Via port"))?,
            )
        } else {
            None
        };
        let params = c.params()?;
        out.push(Via {
            transport,
            host,
            port,
            params,
        });
        if !c.eat(',') {
            break;
        }
    }
    c.sws();
    if !c.at_end() {
        return Err(SyntaxError("unexpected characters in Via"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addr_forms() {
        let a = single_name_addr(
            "\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>  ;  tag = 98asjd8",
        )
        .unwrap();
        assert_eq!(a.display.as_deref(), Some("J Rosenberg \\\""));
        assert_eq!(a.uri, "sip:jdrosen@example.com");
        assert_eq!(a.tag(), Some("98asjd8"));
        let b = single_name_addr("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(b.display.as_deref(), Some("caller"));
        let c = single_name_addr("sip:user@example.com;tag=1").unwrap();
        assert_eq!(
            (c.uri.as_str(), c.tag()),
            ("sip:user@example.com", Some("1"))
        );
        let d = single_name_addr("isbn:2983792873").unwrap();
        assert_eq!(d.uri, "isbn:2983792873");
    }

    #[test]
    fn name_addr_rejects_rfc4475_cases() {
        assert!(single_name_addr("\"Mr. J. User <sip:j.user@example.com>").is_err()); // quotbal
        assert!(single_name_addr("\"Watson, Thomas\" < sip:t.watson@example.org >").is_err()); // badaspec
        assert!(single_name_addr("Bell, Alexander <sip:a.g.bell@example.com>;tag=43").is_err()); // baddn
        assert!(name_addr_list("sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_err()); // regbadct
        assert!(name_addr_list("\"Joe\" <sip:joe@example.org>;;;;").is_err()); // badinv01
        assert!(name_addr_list("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>").is_ok()); // regescrt
    }

    #[test]
    fn via_forms() {
        let v = via_list("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(
            (v[0].transport.as_str(), v[0].host.as_str(), v[0].branch()),
            ("UDP", "192.0.2.2", Some("390skdjuw"))
        );
        let v = via_list("SIP  / 2.0  / TCP     spindle.example.com   ;   branch  =   z9hG4bK9ikj8  ,  SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].branch(), Some("z9hG4bK30239"));
        let v = via_list("SIP/2.0/UDP [2001:db8::9]:5070;rport;branch=z9hG4bKx").unwrap();
        assert_eq!(
            (v[0].host.as_str(), v[0].port),
            ("[2001:db8::9]", Some(5070))
        );
        assert!(via_list("SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
        assert!(via_list("SIP/3.0/UDP h").is_err());
    }

    #[test]
    fn uri_checks() {
        assert!(check_uri("sip:user@example.com", false).is_ok());
        assert!(check_uri("sip:user@example.com?Route=%3Csip:example.com%3E", false).is_err());
        assert!(check_uri("<sip:user@example.com>", false).is_err());
        assert!(check_uri("nobodyKnowsThisScheme:totallyopaquecontent", false).is_ok());
        assert!(check_uri("sip:", false).is_err());
    }
}
