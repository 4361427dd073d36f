//! Socket.IO packets, revisions 4 and 5; what decodes re-encodes into something that decodes,
//! except a bare JSON number (a revision 4 ERROR may carry one): the wire format itself reads
//! its leading digits as (part of) an ack id.
#![no_main]

use clusterchat::socketio::packet::{decode, encode, Revision};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for revision in [Revision::V4, Revision::V5] {
        if let Ok(packet) = decode(text, revision, 10) {
            if packet.data.as_ref().is_some_and(serde_json::Value::is_number) {
                continue;
            }
            let again = encode(&packet);
            assert!(decode(&again, revision, 10).is_ok(), "{text:?} re-encoded as {again:?} does not decode");
        }
    }
});
