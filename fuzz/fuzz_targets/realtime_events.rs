//! The realtime backend's server events (OpenAI Realtime JSON) on any text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxline::agent::realtime::protocol::ServerEvent;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ServerEvent::parse(text);
    }
});
