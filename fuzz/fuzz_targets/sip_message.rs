//! Fuzzes the SIP message layer: datagram parsing, stream framing, the canonical form's
//! round trip, the rsip conversion and the out-of-dialog answer. Must never panic; the
//! canonical text of a parsed message must parse again, to the same canonical text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaultcall::sip::message::{Framed, Framing, StreamFramer, parse};
use vaultcall::sip::uas::out_of_dialog;

fuzz_target!(|data: &[u8]| {
    if let Ok((m, _)) = parse(data, Framing::Datagram) {
        let canonical = m.canonical();
        let again = parse(&canonical, Framing::Datagram).expect("canonical form parses");
        assert_eq!(again.0.canonical(), canonical, "canonical form is a fixed point");
        assert_eq!(again.0.essentials, m.essentials);
        let _ = m.to_rsip();
        let _ = out_of_dialog(&m);
    }
    // The same bytes as a stream, fed in two pieces.
    let mut f = StreamFramer::default();
    let cut = data.len() / 2;
    f.push(&data[..cut]);
    while let Some(item) = f.next_item() {
        if let Framed::Message(m) = item {
            let _ = m.canonical();
        }
    }
    f.push(&data[cut..]);
    while f.next_item().is_some() {}
});
