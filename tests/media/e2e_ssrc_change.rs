//! A caller that switches SSRC mid-call (RFC 3550 §8.2; e.g. a B2BUA re-anchoring media),
//! with new sequence numbers and timestamps: the echo must keep flowing back and carry the
//! new source's audio, and voxline's API must count the change and show the new SSRC.

use crate::common;
use crate::media_peer;

use std::time::Duration;

use common::VoxlineProcess;
use media_peer::{
    CallSpy, RtpPeer, SipPeer, answer_rtp_addr, is_tone, offer, pcmu_decode, pcmu_tone_frame,
    wait_ended,
};

const OLD_SSRC: u32 = 0x1111_2222;
const NEW_SSRC: u32 = 0x7777_8888;

#[test]
fn the_echo_follows_a_new_ssrc() {
    let mut vox = VoxlineProcess::spawn("");
    let spy = CallSpy::start(vox.http_addr());
    let mut rtp = RtpPeer::bind(0);
    rtp.new_source(OLD_SSRC, 100, 50_000);
    let (mut sip, answer) = SipPeer::call(
        vox.sip_addr(),
        "echo",
        &offer(rtp.port(), 0, "PCMU", "sendrecv", 1),
    );
    let to = answer_rtp_addr(&answer);
    let id = spy.id_of(sip.call_id(), Duration::from_secs(2));

    // 1 s of 1 kHz from the first source.
    let before = rtp.stream(to, 50, |k| pcmu_tone_frame(1000.0, 8000.0, k));
    let echoed_before = before
        .iter()
        .filter(|p| is_tone(&pcmu_decode(&p.payload), 1000.0, 2000.0))
        .count();
    assert!(
        echoed_before >= 35,
        "only {echoed_before} of {} packets echo the first source",
        before.len()
    );

    // The source changes: new SSRC, sequence numbers and timestamps far from the old ones,
    // and a new tone (1.4 kHz).
    rtp.new_source(NEW_SSRC, 40_000, 3_000_000_000);
    let after = rtp.stream(to, 60, |k| pcmu_tone_frame(1400.0, 8000.0, k));
    assert!(
        after.len() >= 50,
        "only {} packets came back after the SSRC change",
        after.len()
    );
    let echoed_after = after
        .iter()
        .filter(|p| is_tone(&pcmu_decode(&p.payload), 1400.0, 2000.0))
        .count();
    assert!(
        echoed_after >= 40,
        "only {echoed_after} of {} packets after the change echo the new source",
        after.len()
    );
    assert_eq!(sip.bye(), 200, "BYE not answered with 200");

    let call = wait_ended(vox.http_addr(), id, Duration::from_secs(5));
    let media = &call["media"];
    assert!(
        media["ssrc_changes"].as_u64().unwrap_or(0) >= 1,
        "call: {call:#}"
    );
    assert_eq!(media["remote_ssrc"], NEW_SSRC, "call: {call:#}");
    vox.assert_running();
}
