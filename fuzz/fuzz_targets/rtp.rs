//! RTP parser: never panics; whatever parses is rebuilt and parses back to the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaultcall::media::rtp::{parse_rtp, write_rtp};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = parse_rtp(data) {
        let mut out = Vec::new();
        write_rtp(&p.header, p.payload, &mut out).expect("a parsed header is writable");
        let q = parse_rtp(&out).expect("a written packet parses");
        assert_eq!(q.header, p.header);
        assert_eq!(q.payload, p.payload);
    }
});
