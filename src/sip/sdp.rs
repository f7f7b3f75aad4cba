//! SDP (RFC 4566) offer/answer (RFC 3264) for one audio stream: G.711 A-law and μ-law,
//! RFC 4733 telephone-event, 20 ms packets.
//!
//! vaultcall offers; the peer answers. Mid-call the peer may offer (re-INVITE: hold, unhold,
//! address change) and vaultcall answers from the same preferences.

use std::net::{IpAddr, SocketAddr};

/// An audio codec vaultcall speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// G.711 μ-law, static payload type 0.
    Pcmu,
}

impl Codec {
    /// Static RTP payload type (RFC 3551).
    pub fn payload_type(self) -> u8 {
        match self {
            Self::Pcma => 8,
            Self::Pcmu => 0,
        }
    }

    fn encoding(self) -> &'static str {
        match self {
            Self::Pcma => "PCMA",
            Self::Pcmu => "PCMU",
        }
    }

    /// Parses a config name (`pcma`, `pcmu`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "pcma" => Some(Self::Pcma),
            "pcmu" => Some(Self::Pcmu),
            _ => None,
        }
    }
}

/// Media direction (RFC 3264 §5.1, §8.4 hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways.
    SendRecv,
    /// The side that wrote it only sends.
    SendOnly,
    /// The side that wrote it only receives.
    RecvOnly,
    /// Neither.
    Inactive,
}

impl Direction {
    fn attr(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// The direction to answer with (RFC 3264 §6.1).
    pub fn answer(self) -> Self {
        match self {
            Self::SendRecv => Self::SendRecv,
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            Self::Inactive => Self::Inactive,
        }
    }
}

/// What was agreed for the audio stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Where to send RTP (`None`: the peer put the stream on hold with 0.0.0.0 or port 0).
    pub remote: Option<SocketAddr>,
    /// The codec.
    pub codec: Codec,
    /// Payload type of telephone-event, if the peer supports it.
    pub dtmf_pt: Option<u8>,
    /// Packet time in milliseconds.
    pub ptime_ms: u32,
    /// Direction from the peer's point of view.
    pub direction: Direction,
}

/// Why an SDP body was not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Not parseable as SDP.
    #[error("malformed SDP: {0}")]
    Malformed(&'static str),
    /// No audio stream with a codec we speak (answer 488).
    #[error("no acceptable audio codec")]
    NoCodec,
}

/// Parameters of our side of the session.
#[derive(Debug, Clone)]
pub struct Local {
    /// Address for `o=` and `c=`.
    pub addr: IpAddr,
    /// RTP port.
    pub port: u16,
    /// Codecs in preference order.
    pub codecs: Vec<Codec>,
    /// Payload type we use for telephone-event.
    pub dtmf_pt: u8,
    /// Session id (random, from the caller).
    pub session_id: u64,
    /// Session version; incremented on every changed offer or answer (RFC 3264 §8).
    pub version: u64,
}

fn net(addr: IpAddr) -> (&'static str, String) {
    match addr {
        IpAddr::V4(a) => ("IP4", a.to_string()),
        IpAddr::V6(a) => ("IP6", a.to_string()),
    }
}

fn body(local: &Local, codecs: &[Codec], dtmf_pt: Option<u8>, direction: Direction) -> Vec<u8> {
    let (kind, addr) = net(local.addr);
    let mut pts: Vec<String> = codecs
        .iter()
        .map(|c| c.payload_type().to_string())
        .collect();
    if let Some(pt) = dtmf_pt {
        pts.push(pt.to_string());
    }
    let mut s = format!(
        "v=0\r\no=vaultcall {} {} IN {kind} {addr}\r\ns=vaultcall\r\nc=IN {kind} {addr}\r\nt=0 0\r\nm=audio {} RTP/AVP {}\r\n",
        local.session_id,
        local.version,
        local.port,
        pts.join(" ")
    );
    for c in codecs {
        s.push_str(&format!(
            "a=rtpmap:{} {}/8000\r\n",
            c.payload_type(),
            c.encoding()
        ));
    }
    if let Some(pt) = dtmf_pt {
        s.push_str(&format!(
            "a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-16\r\n"
        ));
    }
    s.push_str(&format!("a=ptime:20\r\na={}\r\n", direction.attr()));
    s.into_bytes()
}

/// Our offer.
pub fn offer(local: &Local) -> Vec<u8> {
    body(
        local,
        &local.codecs,
        Some(local.dtmf_pt),
        Direction::SendRecv,
    )
}

/// Parsed audio description of a peer's SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Audio {
    addr: Option<IpAddr>,
    port: u16,
    pts: Vec<u8>,
    rtpmap: Vec<(u8, String)>,
    ptime: Option<u32>,
    direction: Direction,
}

fn parse(sdp: &[u8]) -> Result<Audio, SdpError> {
    let text = std::str::from_utf8(sdp).map_err(|_| SdpError::Malformed("not UTF-8"))?;
    let mut session_addr: Option<IpAddr> = None;
    let mut session_dir = Direction::SendRecv;
    let mut audio: Option<Audio> = None;
    let mut in_audio = false;
    let mut seen_v = false;
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        let (k, v) = line
            .split_once('=')
            .ok_or(SdpError::Malformed("line without '='"))?;
        match k {
            "v" => {
                if v != "0" {
                    return Err(SdpError::Malformed("unknown SDP version"));
                }
                seen_v = true;
            }
            "c" => {
                let mut p = v.split_whitespace();
                let (Some("IN"), Some(_), Some(a)) = (p.next(), p.next(), p.next()) else {
                    return Err(SdpError::Malformed("bad c= line"));
                };
                let a: IpAddr = a
                    .split('/')
                    .next()
                    .unwrap_or(a)
                    .parse()
                    .map_err(|_| SdpError::Malformed("bad c= address"))?;
                match (&mut audio, in_audio) {
                    (Some(au), true) => au.addr = Some(a),
                    _ => session_addr = Some(a),
                }
            }
            "m" => {
                in_audio = false;
                let mut p = v.split_whitespace();
                let (Some(media), Some(port), Some(proto)) = (p.next(), p.next(), p.next()) else {
                    return Err(SdpError::Malformed("bad m= line"));
                };
                if media == "audio" && audio.is_none() && proto.starts_with("RTP/AVP") {
                    let port: u16 = port
                        .split('/')
                        .next()
                        .unwrap_or(port)
                        .parse()
                        .map_err(|_| SdpError::Malformed("bad m= port"))?;
                    let pts = p.filter_map(|x| x.parse().ok()).collect();
                    audio = Some(Audio {
                        addr: None,
                        port,
                        pts,
                        rtpmap: Vec::new(),
                        ptime: None,
                        direction: session_dir,
                    });
                    in_audio = true;
                }
            }
            "a" => {
                let (name, val) = v.split_once(':').unwrap_or((v, ""));
                let dir = match name {
                    "sendrecv" => Some(Direction::SendRecv),
                    "sendonly" => Some(Direction::SendOnly),
                    "recvonly" => Some(Direction::RecvOnly),
                    "inactive" => Some(Direction::Inactive),
                    _ => None,
                };
                match (&mut audio, in_audio) {
                    (Some(au), true) => {
                        if let Some(d) = dir {
                            au.direction = d;
                        } else if name == "rtpmap" {
                            let (pt, enc) = val
                                .split_once(' ')
                                .ok_or(SdpError::Malformed("bad rtpmap"))?;
                            if let Ok(pt) = pt.parse() {
                                au.rtpmap.push((pt, enc.trim().to_ascii_lowercase()));
                            }
                        } else if name == "ptime" {
                            au.ptime = val.trim().parse().ok();
                        }
                    }
                    _ => {
                        if let Some(d) = dir {
                            session_dir = d;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if !seen_v {
        return Err(SdpError::Malformed("no v= line"));
    }
    let mut a = audio.ok_or(SdpError::NoCodec)?;
    if a.addr.is_none() {
        a.addr = session_addr;
    }
    Ok(a)
}

fn codec_of(a: &Audio, pt: u8) -> Option<Codec> {
    let named = a
        .rtpmap
        .iter()
        .find(|(p, _)| *p == pt)
        .map(|(_, e)| e.as_str());
    match (pt, named) {
        (_, Some(e)) if e.starts_with("pcma/8000") => Some(Codec::Pcma),
        (_, Some(e)) if e.starts_with("pcmu/8000") => Some(Codec::Pcmu),
        (8, None) => Some(Codec::Pcma),
        (0, None) => Some(Codec::Pcmu),
        _ => None,
    }
}

fn dtmf_of(a: &Audio) -> Option<u8> {
    a.rtpmap
        .iter()
        .find(|(pt, e)| e.starts_with("telephone-event/8000") && a.pts.contains(pt))
        .map(|(pt, _)| *pt)
}

fn negotiated(a: &Audio, codec: Codec) -> Negotiated {
    let remote = match a.addr {
        Some(ip) if a.port != 0 && !ip.is_unspecified() => Some(SocketAddr::new(ip, a.port)),
        _ => None,
    };
    Negotiated {
        remote,
        codec,
        dtmf_pt: dtmf_of(a),
        ptime_ms: a.ptime.filter(|p| (10..=60).contains(p)).unwrap_or(20),
        direction: a.direction,
    }
}

/// Reads the peer's answer to our offer: the first payload type it lists that we offered.
pub fn read_answer(local: &Local, answer: &[u8]) -> Result<Negotiated, SdpError> {
    let a = parse(answer)?;
    let codec = a
        .pts
        .iter()
        .filter_map(|pt| codec_of(&a, *pt))
        .find(|c| local.codecs.contains(c))
        .ok_or(SdpError::NoCodec)?;
    Ok(negotiated(&a, codec))
}

/// Answers a peer's offer (re-INVITE): our most preferred codec among theirs; the direction
/// mirrors theirs (hold → we only receive… or stay inactive).
pub fn answer_offer(local: &Local, offer: &[u8]) -> Result<(Negotiated, Vec<u8>), SdpError> {
    let a = parse(offer)?;
    let theirs: Vec<Codec> = a.pts.iter().filter_map(|pt| codec_of(&a, *pt)).collect();
    let codec = local
        .codecs
        .iter()
        .copied()
        .find(|c| theirs.contains(c))
        .ok_or(SdpError::NoCodec)?;
    let n = negotiated(&a, codec);
    let body = body(local, &[codec], n.dtmf_pt, a.direction.answer());
    Ok((n, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Local {
        Local {
            addr: "192.0.2.10".parse().unwrap(),
            port: 20000,
            codecs: vec![Codec::Pcma, Codec::Pcmu],
            dtmf_pt: 101,
            session_id: 42,
            version: 1,
        }
    }

    #[test]
    fn offer_lists_codecs_and_dtmf_in_order() {
        let o = String::from_utf8(offer(&local())).unwrap();
        assert!(o.contains("m=audio 20000 RTP/AVP 8 0 101\r\n"), "{o}");
        assert!(o.contains("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"));
        assert!(o.contains("c=IN IP4 192.0.2.10\r\n") && o.contains("a=ptime:20\r\n"));
    }

    #[test]
    fn answer_with_dynamic_dtmf_pt_and_media_level_address() {
        let ans = b"v=0\r\no=- 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 96\r\nc=IN IP4 198.51.100.7\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:96 telephone-event/8000\r\na=ptime:30\r\n";
        let n = read_answer(&local(), ans).unwrap();
        assert_eq!(n.remote, Some("198.51.100.7:40000".parse().unwrap()));
        assert_eq!(
            (n.codec, n.dtmf_pt, n.ptime_ms),
            (Codec::Pcmu, Some(96), 30)
        );
    }

    #[test]
    fn hold_and_rejections() {
        let hold = b"v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 40000 RTP/AVP 8\r\na=sendonly\r\n";
        let (n, body) = answer_offer(&local(), hold).unwrap();
        assert_eq!((n.remote, n.direction), (None, Direction::SendOnly));
        assert!(String::from_utf8(body).unwrap().contains("a=recvonly\r\n"));
        assert_eq!(
            read_answer(
                &local(),
                b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 18\r\n"
            ),
            Err(SdpError::NoCodec)
        );
        assert!(read_answer(&local(), b"garbage").is_err());
        let v6 = b"v=0\r\nc=IN IP6 2001:db8::5\r\nm=audio 5004 RTP/AVP 8\r\n";
        assert_eq!(
            read_answer(&local(), v6).unwrap().remote,
            Some("[2001:db8::5]:5004".parse().unwrap())
        );
    }
}
