//! Engine.IO single packets: WebSocket text and binary frames, both revisions.
#![no_main]

use clusterchat::engineio::packet::{decode_binary, decode_text};
use clusterchat::engineio::ProtocolVersion;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for protocol in [ProtocolVersion::V3, ProtocolVersion::V4] {
        let _ = decode_binary(bytes::Bytes::copy_from_slice(data), protocol);
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = decode_text(text, protocol);
        }
    }
});
