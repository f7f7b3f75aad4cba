//! A whole media session fed arbitrary datagrams on both sockets with time moving: never
//! panics, keeps pacing, keeps its buffers bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaultcall::media::g711::Law;
use vaultcall::media::session::{MediaSession, Negotiated, Policy, Seeds};
use vaultcall::time::{Clock, ManualClock};

fuzz_target!(|data: &[u8]| {
    let clock = ManualClock::new(std::time::UNIX_EPOCH);
    let remote = "10.0.0.2:30000".parse().expect("a literal address");
    let seeds = Seeds {
        ssrc: 1,
        initial_seq: 2,
        initial_ts: 3,
        mix: 4,
    };
    let neg = Negotiated::g711(remote, Law::Alaw, Some(101));
    let mut s = MediaSession::new(clock.mono(), 0, neg, Policy::default(), seeds)
        .expect("a valid negotiation");
    // Each datagram: 1 control octet (socket, time step, source) + length octet + bytes.
    let mut rest = data;
    while let [ctl, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (dgram, next) = tail.split_at(n);
        rest = next;
        let from = if ctl & 0x40 == 0 {
            remote
        } else {
            "10.0.0.3:1".parse().expect("literal")
        };
        if ctl & 0x80 == 0 {
            s.handle_rtp(clock.mono(), from, dgram);
        } else {
            s.handle_rtcp(clock.mono(), from, dgram);
        }
        clock.advance(std::time::Duration::from_millis(u64::from(ctl & 0x3F)));
        s.handle_timeout(clock.mono());
        while s.poll_output().is_some() {}
        assert!(s.poll_timeout().is_some());
    }
});
