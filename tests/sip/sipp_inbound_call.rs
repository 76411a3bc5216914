//! An inbound call, played by SIPp (sipp-scenarios/uac_inbound_call.xml) against a real
//! `voxline run` on its default configuration (every number answered by the built-in
//! hold agent): INVITE with an offer of PCMU + telephone-event, 100/180 (optional),
//! 200 with an SDP answer holding PCMU on a real port, ACK, BYE from SIPp, 200.

use crate::common;

use std::time::Duration;

use common::{VoxlineProcess, scenario, sipp};

fn inbound_call(transport: &str) {
    let mut vox = VoxlineProcess::spawn("");
    let target = vox.sip_addr().to_string();
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_inbound_call.xml"),
            "-s",
            "1000",
            "-t",
            transport,
            "-m",
            "1",
            &target,
        ],
        Duration::from_secs(15),
    );
    run.assert_success("inbound call INVITE/200/ACK/BYE");
    assert!(
        run.log.contains("a=rtpmap:0 PCMU/8000"),
        "the 200's SDP checks did not run\n{}",
        run.report()
    );
    assert_eq!(run.successful_calls(), Some(1), "{}", run.report());
    vox.assert_running();
}

#[test]
fn inbound_call_over_udp_is_answered_with_pcmu_and_hung_up() {
    inbound_call("u1");
}

#[test]
fn inbound_call_over_tcp_is_answered_with_pcmu_and_hung_up() {
    inbound_call("t1");
}
