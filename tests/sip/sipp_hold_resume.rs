//! Hold and resume by re-INVITE (RFC 3264 8.4), played by SIPp
//! (sipp-scenarios/uac_hold_resume.xml): after the call is up, a re-INVITE with
//! a=sendonly must be answered with a=recvonly, and a re-INVITE with a=sendrecv with
//! a=sendrecv again, each on a live audio port with PCMU.

use crate::common;

use std::time::Duration;

use common::{VoxlineProcess, scenario, sipp};

#[test]
fn reinvite_hold_gets_recvonly_and_resume_gets_sendrecv() {
    let mut vox = VoxlineProcess::spawn("");
    let target = vox.sip_addr().to_string();
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_hold_resume.xml"),
            "-s",
            "1000",
            "-m",
            "1",
            &target,
        ],
        Duration::from_secs(15),
    );
    run.assert_success("hold (sendonly -> recvonly) and resume (sendrecv -> sendrecv)");
    for step in ["call:", "hold:", "resume:"] {
        assert!(
            run.log.contains(step),
            "the {step} checks did not run\n{}",
            run.report()
        );
    }
    vox.assert_running();
}
