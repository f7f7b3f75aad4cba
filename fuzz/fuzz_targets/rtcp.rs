//! RTCP compound parser: never panics, never returns more than its packet cap; reports it
//! accepts are rebuilt and parse back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaultcall::media::rtp::{MAX_RTCP_PACKETS, RtcpPacket, parse_rtcp, write_report};

fuzz_target!(|data: &[u8]| {
    if let Ok(packets) = parse_rtcp(data) {
        assert!(packets.len() <= MAX_RTCP_PACKETS);
        if let Some(first) = packets.first() {
            let mut out = Vec::new();
            let (ssrc, info, reports) = match first {
                RtcpPacket::SenderReport {
                    ssrc,
                    info,
                    reports,
                } => (*ssrc, Some(info), reports),
                RtcpPacket::ReceiverReport { ssrc, reports } => (*ssrc, None, reports),
                RtcpPacket::Bye { .. } | RtcpPacket::Other { .. } => return,
            };
            write_report(&mut out, ssrc, info, reports, "fuzz");
            let again = parse_rtcp(&out).expect("a written report parses");
            assert_eq!(&again[0], first);
        }
    }
});
