//! voxline answers an out-of-dialog OPTIONS with 200 OK (RFC 3261 11), played by SIPp
//! (sipp-scenarios/uac_options.xml) against a real `voxline run`; `GET /metrics` then counts
//! it among the SIP stack's figures.

use crate::common;

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
    let (code, metrics) =
        common::http_get(vox.http_addr(), "/metrics", Duration::from_secs(5)).expect("metrics");
    assert_eq!(code, 200);
    let value = |name: &str| -> Option<u64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    assert!(
        value("voxline_sip_messages_in_total") >= Some(1),
        "{metrics}"
    );
    assert_eq!(
        value("voxline_sip_dropped_overload_total"),
        Some(0),
        "{metrics}"
    );
    assert!(
        value("voxline_sip_server_transactions").is_some(),
        "{metrics}"
    );
    vox.assert_running();
}
