//! RFC 4733 telephone events: the payload parser never panics and round-trips, and a receiver
//! fed arbitrary event packets (headers from the input too) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaultcall::media::dtmf::{DtmfReceiver, parse_event, write_event};
use vaultcall::media::rtp::RtpHeader;
use vaultcall::time::{Clock, ManualClock};

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = parse_event(data) {
        let again = parse_event(&write_event(&e)).expect("a written event parses");
        assert_eq!(again, e);
    }
    let clock = ManualClock::new(std::time::UNIX_EPOCH);
    let mut rx = DtmfReceiver::new();
    let mut out = Vec::new();
    // 10 octets per packet: 2 sequence, 4 timestamp, 4 event block.
    for chunk in data.chunks_exact(10) {
        let h = RtpHeader {
            payload_type: 101,
            marker: chunk[0] & 1 == 1,
            sequence: u16::from_be_bytes([chunk[0], chunk[1]]),
            timestamp: u32::from_be_bytes([chunk[2], chunk[3], chunk[4], chunk[5]]),
            ssrc: 1,
        };
        if let Ok(e) = parse_event(&chunk[6..]) {
            rx.on_packet(clock.mono(), &h, &e, &mut out);
        }
        clock.advance(std::time::Duration::from_millis(u64::from(chunk[1] % 64)));
        rx.on_timeout(clock.mono(), &mut out);
    }
});
