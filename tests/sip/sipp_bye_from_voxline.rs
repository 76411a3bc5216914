//! voxline hangs up: SIPp (sipp-scenarios/uac_bye_from_voxline.xml) calls a number
//! routed to an agent with `hangup_after_ms = 500`, and expects voxline's BYE within
//! 5 s of the ACK, which it answers with 200.

use crate::common;

use std::time::{Duration, Instant};

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
    let started = Instant::now();
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
    let took = started.elapsed();
    run.assert_success("BYE from voxline");
    assert!(
        run.log.contains("BYE from voxline"),
        "no BYE seen\n{}",
        run.report()
    );
    // hangup_after_ms = 500: the BYE cannot come before the agent's 500 ms are up.
    assert!(
        took >= Duration::from_millis(500),
        "call ended after {took:?}, before hangup_after_ms"
    );
    vox.assert_running();
}
