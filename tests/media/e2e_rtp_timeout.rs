//! RTP inactivity timeout, end to end: with `[media] rtp_timeout_s = 2`, a call whose
//! caller (SIPp, sipp-scenarios/uac_rtp_timeout.xml) never sends RTP is hung up by voxline
//! with a BYE, not before the timeout; SIPp answers the BYE with 200.
//! The exact timing is pinned on a virtual clock (`tests/media/stream_timeout.rs`).

use crate::common;
use crate::media_peer;

use std::time::Duration;

use common::{VoxlineProcess, scenario, sipp};
use media_peer::{CallSpy, wait_ended};

const CONFIG: &str = "[media]\nrtp_timeout_s = 2\n";

#[test]
fn a_call_without_rtp_gets_a_bye_after_the_timeout() {
    let mut vox = VoxlineProcess::spawn(CONFIG);
    let spy = CallSpy::start(vox.http_addr());
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_rtp_timeout.xml"),
            "-s",
            "echo",
            "-m",
            "1",
            &vox.sip_addr().to_string(),
        ],
        Duration::from_secs(15),
    );
    run.assert_success("call hung up by the RTP timeout");
    assert!(
        run.log.contains("BYE from voxline"),
        "no BYE seen\n{}",
        run.report()
    );
    let id = spy.the_call(Duration::from_secs(1));
    let call = wait_ended(vox.http_addr(), id, Duration::from_secs(5));
    let answered = call["answered_at"].as_f64().expect("answered_at");
    let ended = call["ended_at"].as_f64().expect("ended_at");
    let lasted = ended - answered;
    assert!(
        lasted >= 1.9,
        "hung up {lasted:.2} s after the answer, before the 2 s timeout\ncall: {call:#}"
    );
    assert_eq!(call["end_reason"], "LocalBye", "call: {call:#}");
    assert_eq!(call["media"]["packets_received"], 0, "call: {call:#}");
    vox.assert_running();
}
