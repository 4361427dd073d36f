//! Engine.IO polling bodies: v4 and v3 text, v3 binary, v3 JSONP form posts.
#![no_main]

use clusterchat::engineio::payload::{decode, decode_jsonp};
use clusterchat::engineio::ProtocolVersion;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for protocol in [ProtocolVersion::V3, ProtocolVersion::V4] {
        for binary in [false, true] {
            let _ = decode(data, protocol, binary);
        }
    }
    let _ = decode_jsonp(data);
});
