//! voxline answers an out-of-dialog OPTIONS with 200 OK (RFC 3261 11), played by SIPp
//! (sipp-scenarios/uac_options.xml) against a real `voxline run`.

mod common;

use std::time::Duration;

use common::{VoxlineProcess, scenario, sipp};

#[test]
fn options_is_answered_with_200() {
    let mut vox = VoxlineProcess::spawn("");
    let target = vox.sip_addr().to_string();
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_options.xml"),
            "-s",
            "voxline",
            "-m",
            "1",
            &target,
        ],
        Duration::from_secs(10),
    );
    run.assert_success("OPTIONS must get a 200 with our CSeq and a To tag");
    assert!(
        run.log.contains("OPTIONS answered"),
        "the scenario's checks did not run\n{}",
        run.report()
    );
    vox.assert_running();
}
