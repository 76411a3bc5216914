//! `[http] rate_limit_per_s` / `rate_limit_burst`: each client (an API token, or a source
//! address without one) gets a token bucket; beyond it the API answers 429 with
//! `Retry-After`, before any handler runs. `/health` is exempt; `0` turns the limit off.

use crate::common;

use std::time::Duration;

use common::{VoxlineProcess, http_request};

fn get(vox: &VoxlineProcess, path: &str) -> (u16, String) {
    http_request(vox.http_addr(), "GET", path, None, Duration::from_secs(5)).expect("GET")
}

#[test]
fn a_client_beyond_its_burst_gets_429_and_health_is_exempt() {
    let vox = VoxlineProcess::spawn("[http]\nrate_limit_per_s = 1\nrate_limit_burst = 3\n");
    // /health first: polled by supervisors, never limited.
    for _ in 0..10 {
        assert_eq!(get(&vox, "/health").0, 200);
    }
    let codes: Vec<u16> = (0..5).map(|_| get(&vox, "/calls").0).collect();
    assert_eq!(&codes[..3], &[200, 200, 200], "{codes:?}");
    assert!(codes[3..].iter().all(|c| *c == 429), "{codes:?}");
    let (code, body) = get(&vox, "/records");
    assert_eq!(code, 429);
    assert!(body.contains("too many requests"), "{body}");
}

#[test]
fn zero_turns_the_limit_off() {
    let vox = VoxlineProcess::spawn("[http]\nrate_limit_per_s = 0\n");
    for _ in 0..200 {
        assert_eq!(get(&vox, "/calls").0, 200);
    }
}
