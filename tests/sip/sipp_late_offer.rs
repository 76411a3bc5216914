//! A late offer (RFC 3261 13.2.1): SIPp (sipp-scenarios/uac_late_offer.xml) sends an
//! INVITE without a body; voxline's 200 must carry an offer (audio on a real port,
//! PCMU among the formats, telephone-event 101), and SIPp answers it in the ACK.

use crate::common;

use std::time::Duration;

use common::{VoxlineProcess, scenario, sipp};

#[test]
fn invite_without_sdp_gets_an_offer_in_the_200_and_the_answer_goes_in_the_ack() {
    let mut vox = VoxlineProcess::spawn("");
    let target = vox.sip_addr().to_string();
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_late_offer.xml"),
            "-s",
            "1000",
            "-m",
            "1",
            &target,
        ],
        Duration::from_secs(15),
    );
    run.assert_success("late offer");
    assert!(
        run.log.contains("voxline's offer"),
        "the offer checks did not run\n{}",
        run.report()
    );
    vox.assert_running();
}
