//! voxline.toml on any text: every error must be an error naming the key, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxline::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_toml_str_with_env(text, "fuzz.toml", |_| None);
    }
});
