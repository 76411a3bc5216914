//! voxline hangs up: SIPp (sipp-scenarios/uac_bye_from_voxline.xml) calls a number
//! routed to an agent with `hangup_after_ms = 500`, and expects voxline's BYE within
//! 5 s of the ACK, which it answers with 200.

use crate::common;

use std::time::Duration;

use crate::media_peer::{CallSpy, wait_ended};
use common::{VoxlineProcess, scenario, sipp};

const CONFIG: &str = r#"
[[route]]
number = "byebye"
agent = "byebye"

[[agent]]
name = "byebye"
kind = "hold"
hangup_after_ms = 500
"#;

#[test]
fn voxline_sends_bye_after_hangup_after_ms() {
    let mut vox = VoxlineProcess::spawn(CONFIG);
    let target = vox.sip_addr().to_string();
    let spy = CallSpy::start(vox.http_addr());
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_bye_from_voxline.xml"),
            "-s",
            "byebye",
            "-m",
            "1",
            &target,
        ],
        Duration::from_secs(15),
    );
    run.assert_success("BYE from voxline");
    assert!(
        run.log.contains("BYE from voxline"),
        "no BYE seen\n{}",
        run.report()
    );
    // hangup_after_ms = 500: voxline's record shows it hung up itself, not before
    // its 500 ms were up.
    let id = spy.the_call(Duration::from_secs(1));
    let call = wait_ended(vox.http_addr(), id, Duration::from_secs(5));
    let lasted = call["ended_at"].as_f64().expect("ended_at")
        - call["answered_at"].as_f64().expect("answered_at");
    assert!(lasted >= 0.5, "hung up after {lasted:.3} s\ncall: {call:#}");
    assert_eq!(call["end_reason"], "LocalBye", "call: {call:#}");
    vox.assert_running();
}
