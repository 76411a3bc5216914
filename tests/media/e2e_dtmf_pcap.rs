//! RFC 4733 DTMF from real captures: SIPp (sipp-scenarios/uac_pcap_dtmf.xml) plays
//! sip-tester's telephone-event recordings dtmf_2833_{1,5,9,star,pound,0}.pcap one after
//! the other into one call; voxline's API must list exactly those keys, in order.
//!
//! Each capture is ten packets of one event (start, updates, end packets repeated), so the
//! repeats must count once. All captures come from one recorded session (one SSRC):
//! `1 5 9 * #` follow each other in sequence numbers and timestamps, while `0` jumps
//! 3600 sequence numbers ahead with a timestamp *older* than `#`'s: the source restarted
//! (RFC 3550 A.1), and its key press must not be taken for a stale packet of the old
//! timeline (it was before the fix to `MediaStream`'s receiver that resets the RFC 4733
//! receiver on a new stream).

use crate::common;
use crate::media_peer;

use std::path::Path;
use std::time::Duration;

use common::{VoxlineProcess, scenario, sipp};
use media_peer::{CallSpy, wait_ended};

#[test]
fn six_recorded_key_presses_are_listed_in_order() {
    for key in ["1", "5", "9", "star", "pound", "0"] {
        let pcap = format!("/usr/share/sip-tester/dtmf_2833_{key}.pcap");
        assert!(
            Path::new(&pcap).is_file(),
            "{pcap} not found: install it with `apt-get install sip-tester`"
        );
    }
    let mut vox = VoxlineProcess::spawn("");
    let spy = CallSpy::start(vox.http_addr());
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_pcap_dtmf.xml"),
            "-s",
            "echo",
            "-m",
            "1",
            &vox.sip_addr().to_string(),
        ],
        Duration::from_secs(15),
    );
    run.assert_success("pcap DTMF call");
    let id = spy.the_call(Duration::from_secs(1));
    let call = wait_ended(vox.http_addr(), id, Duration::from_secs(5));
    assert_eq!(
        call["dtmf"],
        serde_json::json!(["1", "5", "9", "*", "#", "0"]),
        "call: {call:#}\n{}",
        run.report()
    );
    vox.assert_running();
}
