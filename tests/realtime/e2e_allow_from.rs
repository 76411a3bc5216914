//! A paid backend only answers callers the configuration allows: a caller outside the
//! realtime agent's `allow_from` (and with no trunk allowing it) gets 403 Forbidden, and the
//! backend is never contacted. The embedded default's assistant answers loopback only.

use crate::common;
use crate::realtime_e2e_support;

use std::time::Duration;

use common::status_code;
use realtime_e2e_support::{RealtimeE2e, raw_invite};
use voxline_mock_realtime::MockConfig;

#[test]
fn a_caller_outside_allow_from_gets_403_and_costs_nothing() {
    // A network the test (on loopback) is not in.
    let h = RealtimeE2e::start_allowing(MockConfig::default(), &["192.0.2.0/24"], "", "", "");
    let (_udp, resp) = raw_invite(h.vox.sip_addr(), "1000", 40002, Duration::from_secs(5));
    let resp = resp.expect("a final response");
    assert_eq!(status_code(&resp), Some(403), "{resp}");
    assert_eq!(h.mock.connections(), 0, "the backend was contacted");
    assert!(
        h.vox.output().contains("allow_from"),
        "the log does not say how to open it"
    );
}
