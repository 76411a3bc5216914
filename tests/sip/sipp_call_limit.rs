//! Call admission at `[limits] max_calls = 1`: while one call is up (SIPp
//! sipp-scenarios/uac_long_call.xml, held 3 s), a second INVITE is rejected at once
//! with 486 Busy Here (at_limit = "busy", uac_expect_busy.xml) or 503 with
//! "Retry-After: 30" (at_limit = "unavailable", uac_expect_unavailable.xml).
//! Once the first call has ended, a new call is answered again.

use crate::common;

use std::time::Duration;

use common::{Sipp, VoxlineProcess, scenario, sipp, wait_for_file};

/// How long the first call holds, ms: long enough for the second call to be tried.
const HOLD_MS: &str = "3000";

fn second_call_is_rejected(config: &str, reject_scenario: &str, expect_log: &str) {
    let mut vox = VoxlineProcess::spawn(config);
    let target = vox.sip_addr().to_string();

    let marker_dir = tempfile::tempdir().expect("tempdir");
    let marker = marker_dir.path().join("first-call-up");
    let marker_arg = marker.to_string_lossy().into_owned();
    let first = Sipp::spawn(
        &[
            "-sf",
            &scenario("uac_long_call.xml"),
            "-s",
            "1000",
            "-d",
            HOLD_MS,
            "-set",
            "marker",
            &marker_arg,
            "-m",
            "1",
            &target,
        ],
        Duration::from_secs(15),
    );
    if !wait_for_file(&marker, Duration::from_secs(5)) {
        let run = first.wait();
        panic!("the first call was not up within 5 s\n{}", run.report());
    }

    let second = sipp(
        &[
            "-sf",
            &scenario(reject_scenario),
            "-s",
            "1000",
            "-m",
            "1",
            &target,
        ],
        Duration::from_secs(10),
    );
    let first = first.wait();
    second.assert_success("the second call, over max_calls = 1, must be rejected");
    assert!(second.log.contains(expect_log), "{}", second.report());
    first.assert_success("the first call must be unaffected by the rejected one");

    // The slot is free again.
    let third = sipp(
        &[
            "-sf",
            &scenario("uac_inbound_call.xml"),
            "-s",
            "1000",
            "-m",
            "1",
            &target,
        ],
        Duration::from_secs(10),
    );
    third.assert_success("a call after the first one ended must be answered");
    vox.assert_running();
}

#[test]
fn call_over_the_limit_gets_486_when_busy() {
    second_call_is_rejected(
        r#"
[limits]
max_calls = 1
at_limit = "busy"
"#,
        "uac_expect_busy.xml",
        "rejected: SIP/2.0 486",
    );
}

#[test]
fn call_over_the_limit_gets_503_with_retry_after_when_unavailable() {
    second_call_is_rejected(
        r#"
[limits]
max_calls = 1
at_limit = "unavailable"
retry_after_s = 30
"#,
        "uac_expect_unavailable.xml",
        "rejected: SIP/2.0 503",
    );
}
