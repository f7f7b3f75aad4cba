//! RTP and RTCP packets (RFC 3550).
//!
//! RTP goes through the `rtp-rs` crate for the fixed header, CSRCs, header extension and padding;
//! this module adds the checks a telephony receiver needs on top (RFC 5761 §4: payload types
//! 72–76 on an RTP port are RTCP sent to the wrong port) and gives the rest of the media core a
//! plain struct.
//!
//! RTCP is small enough to handle here: sender and receiver reports with their report blocks
//! are built and parsed; SDES is built (CNAME, required in every compound packet, RFC 3550
//! §6.1) and skipped when received; BYE is parsed; every other packet type (APP, XR, feedback)
//! is skipped by its length. Parsers never panic on any input (fuzzed and property-tested).

use rtp_rs::{RtpPacketBuilder, RtpReader, RtpReaderError, Seq};

/// The RTP version we speak.
const VERSION: u8 = 2;
/// Largest number of packets read from one compound RTCP datagram; the rest is ignored.
pub const MAX_RTCP_PACKETS: usize = 16;

/// Why an RTP datagram was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than the 12-octet fixed header.
    #[error("RTP datagram too short ({0} octets)")]
    TooShort(usize),
    /// Version field is not 2.
    #[error("RTP version {0} is not 2")]
    Version(u8),
    /// CSRC list, header extension or padding run past the end.
    #[error("RTP header or padding runs past the end of the datagram")]
    Truncated,
    /// Payload type 72–76: an RTCP packet sent to the RTP port (RFC 5761 §4).
    #[error("payload type {0} is RTCP on the RTP port")]
    RtcpOnRtpPort(u8),
    /// Building: the payload type does not fit in 7 bits (our misuse).
    #[error("payload type {0} is not in 0..=127")]
    PayloadType(u8),
}

/// The RTP fields the media core uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Marker bit: first packet of a talkspurt for audio (RFC 3551 §4.1), first packet of an
    /// event for RFC 4733.
    pub marker: bool,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp (8 kHz for G.711 and telephone-event/8000).
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
}

/// A parsed RTP packet borrowing its payload (padding removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Header fields.
    pub header: RtpHeader,
    /// Payload octets.
    pub payload: &'a [u8],
}

/// Parses one RTP datagram.
pub fn parse_rtp(buf: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    let r = RtpReader::new(buf).map_err(|e| match e {
        RtpReaderError::BufferTooShort(n) => RtpError::TooShort(n),
        RtpReaderError::UnsupportedVersion(v) => RtpError::Version(v),
        RtpReaderError::HeadersTruncated { .. } | RtpReaderError::PaddingLengthInvalid(_) => {
            RtpError::Truncated
        }
    })?;
    let pt = r.payload_type();
    if (72..=76).contains(&pt) {
        return Err(RtpError::RtcpOnRtpPort(pt));
    }
    Ok(RtpPacket {
        header: RtpHeader {
            payload_type: pt,
            marker: r.mark(),
            sequence: u16::from(r.sequence_number()),
            timestamp: r.timestamp(),
            ssrc: r.ssrc(),
        },
        payload: r.payload(),
    })
}

/// Writes one RTP packet (no CSRC, extension or padding) into `out`, replacing its contents.
pub fn write_rtp(header: &RtpHeader, payload: &[u8], out: &mut Vec<u8>) -> Result<(), RtpError> {
    if header.payload_type > 127 {
        return Err(RtpError::PayloadType(header.payload_type));
    }
    let b = RtpPacketBuilder::new()
        .payload_type(header.payload_type)
        .marked(header.marker)
        .sequence(Seq::from(header.sequence))
        .timestamp(header.timestamp)
        .ssrc(header.ssrc)
        .payload(payload);
    out.clear();
    out.resize(b.target_length(), 0);
    // The buffer has the builder's own target length and the payload type was checked above,
    // so the checked build cannot fail; map it anyway rather than trust that forever.
    let n = b
        .build_into(out)
        .map_err(|_| RtpError::PayloadType(header.payload_type))?;
    out.truncate(n);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// RTCP

/// RTCP packet types (RFC 3550 §12.1).
const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
const PT_BYE: u8 = 203;
/// SDES item CNAME (RFC 3550 §6.5.1).
const SDES_CNAME: u8 = 1;

/// Why an RTCP datagram was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    /// Shorter than one 4-octet RTCP header, or a packet shorter than its type requires.
    #[error("RTCP packet too short")]
    TooShort,
    /// Version field is not 2.
    #[error("RTCP version {0} is not 2")]
    Version(u8),
    /// The length field runs past the end of the datagram.
    #[error("RTCP length field runs past the end of the datagram")]
    Truncated,
    /// A compound packet must start with SR or RR (RFC 3550 §6.1).
    #[error("RTCP compound packet starts with type {0}, not SR or RR")]
    NotReportFirst(u8),
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Fraction lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed; duplicates can make it negative).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter, timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received from that source (0: none).
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

/// Sender information of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// NTP timestamp (64-bit fixed point, seconds since 1900).
    pub ntp: u64,
    /// RTP timestamp corresponding to `ntp`.
    pub rtp_timestamp: u32,
    /// Packets sent since the start.
    pub packet_count: u32,
    /// Payload octets sent since the start.
    pub octet_count: u32,
}

/// The RTCP packets the media core uses; the rest are reported as `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    /// Sender report.
    SenderReport {
        /// Sender's SSRC.
        ssrc: u32,
        /// Its sending statistics.
        info: SenderInfo,
        /// Its reception reports.
        reports: Vec<ReportBlock>,
    },
    /// Receiver report.
    ReceiverReport {
        /// Sender's SSRC.
        ssrc: u32,
        /// Its reception reports.
        reports: Vec<ReportBlock>,
    },
    /// The listed sources are leaving.
    Bye {
        /// SSRCs leaving.
        ssrcs: Vec<u32>,
    },
    /// SDES, APP, XR, feedback or an unknown type: accepted and ignored.
    Other {
        /// Its packet type.
        packet_type: u8,
    },
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn parse_report_blocks(body: &[u8], count: usize) -> Result<Vec<ReportBlock>, RtcpError> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let at = i * 24;
        let b = body.get(at..at + 24).ok_or(RtcpError::TooShort)?;
        let lost = u32::from_be_bytes([0, b[5], b[6], b[7]]);
        // Sign-extend the 24-bit field.
        let cumulative_lost = ((lost << 8) as i32) >> 8;
        out.push(ReportBlock {
            ssrc: be32(b, 0).ok_or(RtcpError::TooShort)?,
            fraction_lost: b[4],
            cumulative_lost,
            highest_seq: be32(b, 8).ok_or(RtcpError::TooShort)?,
            jitter: be32(b, 12).ok_or(RtcpError::TooShort)?,
            lsr: be32(b, 16).ok_or(RtcpError::TooShort)?,
            dlsr: be32(b, 20).ok_or(RtcpError::TooShort)?,
        });
    }
    Ok(out)
}

/// Parses a compound RTCP datagram: at most [`MAX_RTCP_PACKETS`] packets are returned.
pub fn parse_rtcp(buf: &[u8]) -> Result<Vec<RtcpPacket>, RtcpError> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() && out.len() < MAX_RTCP_PACKETS {
        if rest.len() < 4 {
            return Err(RtcpError::TooShort);
        }
        let version = rest[0] >> 6;
        if version != VERSION {
            return Err(RtcpError::Version(version));
        }
        let count = usize::from(rest[0] & 0x1F);
        let packet_type = rest[1];
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        let packet = rest.get(..len).ok_or(RtcpError::Truncated)?;
        if out.is_empty() && packet_type != PT_SR && packet_type != PT_RR {
            return Err(RtcpError::NotReportFirst(packet_type));
        }
        // Padding (P bit) only ever ends the last packet; report blocks never reach into it
        // because their number comes from the count field, so it needs no special handling.
        let body = &packet[4..];
        let parsed = match packet_type {
            PT_SR => {
                let ssrc = be32(body, 0).ok_or(RtcpError::TooShort)?;
                let info = SenderInfo {
                    ntp: (u64::from(be32(body, 4).ok_or(RtcpError::TooShort)?) << 32)
                        | u64::from(be32(body, 8).ok_or(RtcpError::TooShort)?),
                    rtp_timestamp: be32(body, 12).ok_or(RtcpError::TooShort)?,
                    packet_count: be32(body, 16).ok_or(RtcpError::TooShort)?,
                    octet_count: be32(body, 20).ok_or(RtcpError::TooShort)?,
                };
                let reports = parse_report_blocks(body.get(24..).unwrap_or(&[]), count)?;
                RtcpPacket::SenderReport {
                    ssrc,
                    info,
                    reports,
                }
            }
            PT_RR => {
                let ssrc = be32(body, 0).ok_or(RtcpError::TooShort)?;
                let reports = parse_report_blocks(body.get(4..).unwrap_or(&[]), count)?;
                RtcpPacket::ReceiverReport { ssrc, reports }
            }
            PT_BYE => {
                let mut ssrcs = Vec::with_capacity(count);
                for i in 0..count {
                    ssrcs.push(be32(body, i * 4).ok_or(RtcpError::TooShort)?);
                }
                RtcpPacket::Bye { ssrcs }
            }
            other => RtcpPacket::Other { packet_type: other },
        };
        out.push(parsed);
        rest = &rest[len..];
    }
    Ok(out)
}

fn push_header(out: &mut Vec<u8>, count: u8, packet_type: u8) -> usize {
    let at = out.len();
    out.extend_from_slice(&[(VERSION << 6) | (count & 0x1F), packet_type, 0, 0]);
    at
}

/// Fills in the length field of the packet that starts at `at` (in 32-bit words minus one).
fn finish_packet(out: &mut [u8], at: usize) {
    let words = (out.len() - at) / 4 - 1;
    let w = u16::try_from(words).unwrap_or(u16::MAX).to_be_bytes();
    out[at + 2] = w[0];
    out[at + 3] = w[1];
}

fn push_block(out: &mut Vec<u8>, b: &ReportBlock) {
    out.extend_from_slice(&b.ssrc.to_be_bytes());
    let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32 & 0x00FF_FFFF;
    out.push(b.fraction_lost);
    out.extend_from_slice(&lost.to_be_bytes()[1..]);
    out.extend_from_slice(&b.highest_seq.to_be_bytes());
    out.extend_from_slice(&b.jitter.to_be_bytes());
    out.extend_from_slice(&b.lsr.to_be_bytes());
    out.extend_from_slice(&b.dlsr.to_be_bytes());
}

/// Builds a compound RTCP report into `out` (replacing its contents): an SR when `sender` is
/// given, else an RR, with up to 31 report blocks, then SDES with our CNAME (RFC 3550 §6.1).
/// The CNAME must not identify a person; the session uses a random one.
pub fn write_report(
    out: &mut Vec<u8>,
    ssrc: u32,
    sender: Option<&SenderInfo>,
    reports: &[ReportBlock],
    cname: &str,
) {
    out.clear();
    let reports = &reports[..reports.len().min(31)];
    let count = reports.len() as u8; // at most 31 by the line above
    let at = match sender {
        Some(info) => {
            let at = push_header(out, count, PT_SR);
            out.extend_from_slice(&ssrc.to_be_bytes());
            out.extend_from_slice(&info.ntp.to_be_bytes());
            out.extend_from_slice(&info.rtp_timestamp.to_be_bytes());
            out.extend_from_slice(&info.packet_count.to_be_bytes());
            out.extend_from_slice(&info.octet_count.to_be_bytes());
            at
        }
        None => {
            let at = push_header(out, count, PT_RR);
            out.extend_from_slice(&ssrc.to_be_bytes());
            at
        }
    };
    for b in reports {
        push_block(out, b);
    }
    finish_packet(out, at);
    // SDES: one chunk, one CNAME item, null-terminated and padded to a word boundary.
    let at = push_header(out, 1, PT_SDES);
    out.extend_from_slice(&ssrc.to_be_bytes());
    let name = &cname.as_bytes()[..cname.len().min(255)];
    out.push(SDES_CNAME);
    out.push(name.len() as u8); // at most 255 by the line above
    out.extend_from_slice(name);
    out.push(0);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    finish_packet(out, at);
}

/// Appends a BYE for `ssrc` to a compound packet built by [`write_report`] (RFC 3550 §6.6).
pub fn append_bye(out: &mut Vec<u8>, ssrc: u32) {
    let at = push_header(out, 1, PT_BYE);
    out.extend_from_slice(&ssrc.to_be_bytes());
    finish_packet(out, at);
}

/// The middle 32 bits of a 64-bit NTP timestamp, as carried in LSR (RFC 3550 §6.4.1).
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32) -> RtpHeader {
        RtpHeader {
            payload_type: pt,
            marker,
            sequence: seq,
            timestamp: ts,
            ssrc,
        }
    }

    #[test]
    fn rtp_round_trip_and_wire_layout() {
        let h = header(8, true, 0x1234, 0xDEAD_BEEF, 0x0102_0304);
        let mut out = Vec::new();
        write_rtp(&h, &[1, 2, 3], &mut out).unwrap();
        assert_eq!(
            out,
            [
                0x80, 0x88, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4, 1, 2, 3
            ]
        );
        let p = parse_rtp(&out).unwrap();
        assert_eq!(p.header, h);
        assert_eq!(p.payload, &[1, 2, 3]);
    }

    #[test]
    fn rtp_rejects_what_it_must() {
        assert_eq!(parse_rtp(&[0x80; 11]), Err(RtpError::TooShort(11)));
        let mut p = vec![0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_rtp(&p), Err(RtpError::Version(1)));
        p[0] = 0x81; // one CSRC announced, none present
        assert_eq!(parse_rtp(&p), Err(RtpError::Truncated));
        p[0] = 0x80;
        p[1] = 200; // an RTCP SR on the RTP port: marker bit + PT 72
        assert_eq!(parse_rtp(&p), Err(RtpError::RtcpOnRtpPort(72)));
        let h = header(200, false, 0, 0, 0);
        assert_eq!(
            write_rtp(&h, &[], &mut Vec::new()),
            Err(RtpError::PayloadType(200))
        );
    }

    #[test]
    fn rtp_with_csrc_extension_and_padding_gives_the_bare_payload() {
        let mut p = vec![0xB1, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]; // P, X, CC=1
        p.extend_from_slice(&[0, 0, 0, 9]); // CSRC
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 1, 2, 3, 4]); // extension, one word
        p.extend_from_slice(&[7, 7, 0, 2]); // payload 7 7, then 2 octets of padding
        let r = parse_rtp(&p).unwrap();
        assert_eq!(r.payload, &[7, 7]);
        assert_eq!(r.header.ssrc, 3);
    }

    #[test]
    fn rtcp_report_round_trip() {
        let info = SenderInfo {
            ntp: 0x0102_0304_0506_0708,
            rtp_timestamp: 160,
            packet_count: 50,
            octet_count: 8000,
        };
        let block = ReportBlock {
            ssrc: 77,
            fraction_lost: 25,
            cumulative_lost: -3,
            highest_seq: 0x1_0005,
            jitter: 40,
            lsr: ntp_middle(info.ntp),
            dlsr: 65536,
        };
        let mut out = Vec::new();
        write_report(&mut out, 5, Some(&info), &[block], "vc-1a2b");
        append_bye(&mut out, 5);
        assert_eq!(out.len() % 4, 0);
        let parsed = parse_rtcp(&out).unwrap();
        assert_eq!(
            parsed,
            vec![
                RtcpPacket::SenderReport {
                    ssrc: 5,
                    info,
                    reports: vec![block]
                },
                RtcpPacket::Other { packet_type: 202 },
                RtcpPacket::Bye { ssrcs: vec![5] },
            ]
        );
        write_report(&mut out, 6, None, &[], "x");
        assert_eq!(
            parse_rtcp(&out).unwrap()[0],
            RtcpPacket::ReceiverReport {
                ssrc: 6,
                reports: vec![]
            }
        );
    }

    #[test]
    fn rtcp_rejects_what_it_must_and_skips_the_rest() {
        assert_eq!(parse_rtcp(&[0x80, 201, 0]), Err(RtcpError::TooShort));
        assert_eq!(parse_rtcp(&[0x40, 201, 0, 0]), Err(RtcpError::Version(1)));
        assert_eq!(
            parse_rtcp(&[0x80, 201, 0, 5, 0, 0, 0, 0]),
            Err(RtcpError::Truncated)
        );
        assert_eq!(
            parse_rtcp(&[0x80, 204, 0, 0]),
            Err(RtcpError::NotReportFirst(204))
        );
        // RR claiming one block without room for it.
        assert_eq!(
            parse_rtcp(&[0x81, 201, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::TooShort)
        );
        // RR then an APP packet (type 204) and an XR (207): skipped.
        let rr_app = [
            0x80, 201, 0, 1, 0, 0, 0, 1, 0x80, 204, 0, 2, 0, 0, 0, 1, b'n', b'a', b'm', b'e', 0x80,
            207, 0, 0,
        ];
        let p = parse_rtcp(&rr_app).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[1], RtcpPacket::Other { packet_type: 204 });
    }

    proptest! {
        #[test]
        fn rtp_round_trips(pt in 0u8..=127, marker: bool, seq: u16, ts: u32, ssrc: u32,
                           payload in proptest::collection::vec(any::<u8>(), 0..400)) {
            prop_assume!(!(72..=76).contains(&pt));
            let h = header(pt, marker, seq, ts, ssrc);
            let mut out = Vec::new();
            write_rtp(&h, &payload, &mut out).unwrap();
            let p = parse_rtp(&out).unwrap();
            prop_assert_eq!(p.header, h);
            prop_assert_eq!(p.payload, &payload[..]);
        }

        #[test]
        fn rtp_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_rtp(&data);
        }

        #[test]
        fn rtcp_round_trips(ssrc: u32, ntp: u64, rtp_timestamp: u32, packet_count: u32,
                            octet_count: u32, sender: bool,
                            blocks in proptest::collection::vec(
                                (any::<u32>(), any::<u8>(), -0x80_0000i32..0x80_0000,
                                 any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()), 0..31),
                            cname in "[a-z0-9-]{1,40}") {
            let reports: Vec<ReportBlock> = blocks.iter().map(|b| ReportBlock {
                ssrc: b.0, fraction_lost: b.1, cumulative_lost: b.2, highest_seq: b.3,
                jitter: b.4, lsr: b.5, dlsr: b.6 }).collect();
            let info = SenderInfo { ntp, rtp_timestamp, packet_count, octet_count };
            let mut out = Vec::new();
            write_report(&mut out, ssrc, sender.then_some(&info), &reports, &cname);
            let p = parse_rtcp(&out).unwrap();
            let expect = if sender {
                RtcpPacket::SenderReport { ssrc, info, reports }
            } else {
                RtcpPacket::ReceiverReport { ssrc, reports }
            };
            prop_assert_eq!(&p[0], &expect);
            prop_assert_eq!(&p[1], &RtcpPacket::Other { packet_type: 202 });
        }

        #[test]
        fn rtcp_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_rtcp(&data);
        }

        #[test]
        fn rtcp_parser_never_panics_on_plausible_headers(
            words in proptest::collection::vec((0u8..32, 195u8..210, 0u16..12), 1..6),
            fill in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut data = Vec::new();
            for (count, pt, len) in words {
                data.extend_from_slice(&[0x80 | count, pt]);
                data.extend_from_slice(&len.to_be_bytes());
                data.extend(fill.iter().take(usize::from(len) * 4));
            }
            let _ = parse_rtcp(&data);
        }
    }
}
