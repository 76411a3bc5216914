//! Load: SIPp (sipp-scenarios/uac_load.xml) places 200 calls at 100 calls per second,
//! each held 200 ms, against one `voxline run` on its default configuration. Every
//! call must succeed (answered with PCMU, BYE answered) and voxline must survive.

use crate::common;

use std::time::Duration;

use common::{VoxlineProcess, scenario, sipp};

const CALLS: u64 = 200;
const RATE: u64 = 100;

#[test]
fn two_hundred_calls_at_one_hundred_per_second_all_succeed() {
    let mut vox = VoxlineProcess::spawn("");
    let target = vox.sip_addr().to_string();
    let calls = CALLS.to_string();
    let rate = RATE.to_string();
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_load.xml"),
            "-s",
            "1000",
            "-r",
            &rate,
            "-rp",
            "1000",
            "-m",
            &calls,
            &target,
        ],
        Duration::from_secs(20),
    );
    run.assert_success("200 calls at 100 cps");
    assert_eq!(run.successful_calls(), Some(CALLS), "{}", run.report());
    assert_eq!(run.failed_calls(), Some(0), "{}", run.report());
    vox.assert_running();
}
