//! The caller gives up before the answer (RFC 3261 9.2): SIPp
//! (sipp-scenarios/uac_cancel.xml) calls a number routed to an agent that rings for
//! 5 s, CANCELs after the 180, and expects 200 to the CANCEL, 487 to the INVITE, and
//! the ACK of the 487 to end the transaction.

use crate::common;

use std::time::Duration;

use common::{VoxlineProcess, scenario, sipp};

const CONFIG: &str = r#"
[[route]]
number = "ring"
agent = "slow"

[[agent]]
name = "slow"
kind = "hold"
answer_after_ms = 5000
"#;

#[test]
fn cancel_before_answer_gets_200_and_487() {
    let mut vox = VoxlineProcess::spawn(CONFIG);
    let target = vox.sip_addr().to_string();
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_cancel.xml"),
            "-s",
            "ring",
            "-m",
            "1",
            &target,
        ],
        Duration::from_secs(15),
    );
    run.assert_success("CANCEL before answer");
    assert!(
        run.log.contains("INVITE ended with 487"),
        "the scenario did not see the 487\n{}",
        run.report()
    );
    vox.assert_running();
}
