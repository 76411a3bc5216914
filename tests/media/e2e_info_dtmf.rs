//! DTMF by SIP INFO, end to end: SIPp (sipp-scenarios/uac_info_dtmf.xml) sends, in an
//! established call, an INFO with `application/dtmf-relay` (`Signal=5`, `Duration=160`)
//! and one with `application/dtmf` (body `9`); each must be answered 200 and voxline's API
//! must list the keys `["5", "9"]`.

use crate::common;
use crate::media_peer;

use std::time::Duration;

use common::{VoxlineProcess, scenario, sipp};
use media_peer::{CallSpy, wait_ended};

#[test]
fn info_dtmf_relay_and_info_dtmf_are_listed() {
    let mut vox = VoxlineProcess::spawn("");
    let spy = CallSpy::start(vox.http_addr());
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_info_dtmf.xml"),
            "-s",
            "echo",
            "-m",
            "1",
            &vox.sip_addr().to_string(),
        ],
        Duration::from_secs(15),
    );
    run.assert_success("INFO DTMF call");
    for step in ["INFO dtmf-relay: 200", "INFO dtmf: 200"] {
        assert!(run.log.contains(step), "{step} missing\n{}", run.report());
    }
    let id = spy.the_call(Duration::from_secs(1));
    let call = wait_ended(vox.http_addr(), id, Duration::from_secs(5));
    assert_eq!(
        call["dtmf"],
        serde_json::json!(["5", "9"]),
        "call: {call:#}\n{}",
        run.report()
    );
    vox.assert_running();
}
