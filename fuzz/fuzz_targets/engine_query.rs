//! Engine.IO query strings.
#![no_main]

use clusterchat::engineio::EngineQuery;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = EngineQuery::parse(text);
    }
});
