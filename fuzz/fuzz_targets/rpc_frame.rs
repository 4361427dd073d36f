//! RPC frames (bincode, 4 MiB limit); what decodes round-trips.
#![no_main]

use clusterchat::rpc::message::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode(data) {
        let bytes = encode(&frame).expect("a decoded frame encodes");
        assert_eq!(decode(&bytes).expect("an encoded frame decodes"), frame);
    }
});
