//! HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616): answering 401/407 challenges
//! with MD5, MD5-sess, SHA-256 or SHA-256-sess, `qop=auth`, nonce counts and client nonces,
//! and `stale=true` retries. Sans-IO: the client nonce's randomness is an argument.
//!
//! Passwords and digest values are secrets: they never appear in `Debug` output or logs.

use std::fmt::Write as _;

use super::syntax::Cursor;

/// Digest hash algorithms (RFC 7616 §3.3; `-sess` variants hash the client nonce in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (the SIP default when absent).
    Md5,
    /// MD5-sess.
    Md5Sess,
    /// SHA-256.
    Sha256,
    /// SHA-256-sess.
    Sha256Sess,
}

impl Algorithm {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "MD5" => Self::Md5,
            "MD5-SESS" => Self::Md5Sess,
            "SHA-256" => Self::Sha256,
            "SHA-256-SESS" => Self::Sha256Sess,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
        }
    }

    fn hash(self, data: &str) -> String {
        match self {
            Self::Md5 | Self::Md5Sess => hex::encode(md5(data.as_bytes())),
            Self::Sha256 | Self::Sha256Sess => hex::encode(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                data.as_bytes(),
            )),
        }
    }

    fn sess(self) -> bool {
        matches!(self, Self::Md5Sess | Self::Sha256Sess)
    }

    /// Preference when a server offers several challenges (RFC 7616 §3.7: strongest first).
    fn rank(self) -> u8 {
        match self {
            Self::Sha256 | Self::Sha256Sess => 2,
            Self::Md5 | Self::Md5Sess => 1,
        }
    }
}

/// MD5 from AWS-LC (the crypto library already in the tree; aws-lc-rs has no safe MD5 API
/// because MD5 is only for legacy protocols such as this one).
fn md5(data: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    // SAFETY: `data` is valid for `data.len()` bytes and `out` has the 16 bytes MD5 writes.
    unsafe {
        aws_lc_sys::MD5(data.as_ptr(), data.len(), out.as_mut_ptr());
    }
    out
}

/// A parsed `WWW-Authenticate` / `Proxy-Authenticate` Digest challenge.
#[derive(Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Protection space.
    pub realm: String,
    /// Server nonce.
    pub nonce: String,
    /// Opaque value to echo.
    pub opaque: Option<String>,
    /// Hash algorithm.
    pub algorithm: Algorithm,
    /// Whether `qop=auth` is offered (else the RFC 2069 form is used).
    pub qop_auth: bool,
    /// The previous nonce was stale; retry with the same credentials.
    pub stale: bool,
}

impl std::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenge")
            .field("realm", &self.realm)
            .field("algorithm", &self.algorithm)
            .field("qop_auth", &self.qop_auth)
            .field("stale", &self.stale)
            .finish_non_exhaustive()
    }
}

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a Digest challenge, or missing realm/nonce.
    #[error("malformed Digest challenge")]
    Malformed,
    /// Only algorithms or qop values we do not implement.
    #[error("unsupported Digest algorithm or qop")]
    Unsupported,
}

/// Parses the auth-params of one challenge header value.
pub fn parse_challenge(value: &str) -> Result<Challenge, AuthError> {
    let rest = value.trim_start();
    let (scheme, params) = rest.split_once([' ', '\t']).ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(AuthError::Malformed);
    }
    let mut c = Cursor::new(params);
    let (mut realm, mut nonce, mut opaque, mut algorithm, mut qop, mut stale) =
        (None, None, None, None, None, false);
    while let Ok(name) = c.token() {
        if !c.eat('=') {
            return Err(AuthError::Malformed);
        }
        c.sws();
        let val = if c.peek() == Some('"') {
            c.quoted().map_err(|_| AuthError::Malformed)?
        } else {
            c.token().map_err(|_| AuthError::Malformed)?.to_owned()
        };
        match name.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(val),
            "nonce" => nonce = Some(val),
            "opaque" => opaque = Some(val),
            "algorithm" => algorithm = Some(Algorithm::parse(&val).ok_or(AuthError::Unsupported)?),
            "qop" => qop = Some(val),
            "stale" => stale = val.eq_ignore_ascii_case("true"),
            _ => {}
        }
        if !c.eat(',') {
            break;
        }
    }
    let qop_auth = match &qop {
        None => false,
        Some(q) if q.split(',').any(|x| x.trim().eq_ignore_ascii_case("auth")) => true,
        Some(_) => return Err(AuthError::Unsupported),
    };
    Ok(Challenge {
        realm: realm.ok_or(AuthError::Malformed)?,
        nonce: nonce.ok_or(AuthError::Malformed)?,
        opaque,
        algorithm: algorithm.unwrap_or(Algorithm::Md5),
        qop_auth,
        stale,
    })
}

/// Picks the strongest supported challenge among a response's header values.
pub fn best_challenge<'a>(values: impl Iterator<Item = &'a str>) -> Result<Challenge, AuthError> {
    let mut best: Option<Challenge> = None;
    let mut last_err = AuthError::Malformed;
    for v in values {
        match parse_challenge(v) {
            Ok(c) => {
                if best
                    .as_ref()
                    .is_none_or(|b| c.algorithm.rank() > b.algorithm.rank())
                {
                    best = Some(c);
                }
            }
            Err(e) => last_err = e,
        }
    }
    best.ok_or(last_err)
}

/// Credentials for one trunk. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Authentication user name.
    pub username: String,
    /// Password (from a 0600 file).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <password>)", self.username)
    }
}

/// The inputs of one digest response besides credentials and challenge.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// Request method.
    pub method: &'a str,
    /// Request-URI (digest-uri).
    pub uri: &'a str,
    /// Nonce count (1 for the first use of a nonce).
    pub nc: u32,
    /// Client nonce (random, from the caller).
    pub cnonce: &'a str,
}

/// The `Authorization` / `Proxy-Authorization` header value answering `ch`.
pub fn authorization(creds: &Credentials, ch: &Challenge, a: Attempt<'_>) -> String {
    let alg = ch.algorithm;
    let mut ha1 = alg.hash(&format!(
        "{}:{}:{}",
        creds.username, ch.realm, creds.password
    ));
    if alg.sess() {
        ha1 = alg.hash(&format!("{ha1}:{}:{}", ch.nonce, a.cnonce));
    }
    let ha2 = alg.hash(&format!("{}:{}", a.method, a.uri));
    let nc = format!("{:08x}", a.nc);
    let response = if ch.qop_auth {
        alg.hash(&format!("{ha1}:{}:{nc}:{}:auth:{ha2}", ch.nonce, a.cnonce))
    } else {
        alg.hash(&format!("{ha1}:{}:{ha2}", ch.nonce))
    };
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut v = format!(
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{response}\", algorithm={}",
        q(&creds.username),
        q(&ch.realm),
        q(&ch.nonce),
        q(a.uri),
        alg.name()
    );
    if ch.qop_auth {
        let _ = write!(v, ", cnonce=\"{}\", qop=auth, nc={nc}", q(a.cnonce));
    }
    if let Some(o) = &ch.opaque {
        let _ = write!(v, ", opaque=\"{}\"", q(o));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_known_answer() {
        assert_eq!(hex::encode(md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex::encode(md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn rfc2617_example() {
        // RFC 2617 §3.5.
        let ch = parse_challenge(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        let creds = Credentials {
            username: "Mufasa".into(),
            password: "Circle Of Life".into(),
        };
        let v = authorization(
            &creds,
            &ch,
            Attempt {
                method: "GET",
                uri: "/dir/index.html",
                nc: 1,
                cnonce: "0a4f113b",
            },
        );
        assert!(
            v.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{v}"
        );
        assert!(
            v.contains("nc=00000001") && v.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""),
            "{v}"
        );
    }

    #[test]
    fn rfc7616_examples() {
        // RFC 7616 §3.9.1, both algorithms.
        let base = "realm=\"http-auth@example.org\", qop=\"auth, auth-int\", nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";
        let creds = Credentials {
            username: "Mufasa".into(),
            password: "Circle of Life".into(),
        };
        let a = Attempt {
            method: "GET",
            uri: "/dir/index.html",
            nc: 1,
            cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        };
        let sha = parse_challenge(&format!("Digest {base}, algorithm=SHA-256")).unwrap();
        assert!(authorization(&creds, &sha, a).contains(
            "response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\""
        ));
        let md5 = parse_challenge(&format!("Digest {base}, algorithm=MD5")).unwrap();
        assert!(
            authorization(&creds, &md5, a)
                .contains("response=\"8ca523f5e9506fed4657c9700eebdbec\"")
        );
        let best = best_challenge(
            [
                format!("Digest {base}, algorithm=MD5"),
                format!("Digest {base}, algorithm=SHA-256"),
            ]
            .iter()
            .map(String::as_str),
        )
        .unwrap();
        assert_eq!(best.algorithm, Algorithm::Sha256);
    }

    #[test]
    fn stale_and_unsupported() {
        let c = parse_challenge("Digest realm=\"r\", nonce=\"n\", stale=TRUE").unwrap();
        assert!(c.stale && !c.qop_auth && c.algorithm == Algorithm::Md5);
        assert_eq!(
            parse_challenge("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\""),
            Err(AuthError::Unsupported)
        );
        assert_eq!(
            parse_challenge("Basic realm=\"r\""),
            Err(AuthError::Malformed)
        );
        assert!(
            !format!(
                "{:?}",
                Credentials {
                    username: "u".into(),
                    password: "secret".into()
                }
            )
            .contains("secret")
        );
    }
}
